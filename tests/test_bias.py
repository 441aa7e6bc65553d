"""muse_bias on small synthetic raw biases with known levels, structure, drift and RON."""

import numpy as np
import pytest
from astropy.io import fits
from calib_helpers import GAINS, LEVELS, RONS, SMALL, ext_header, make_raw_image, primary_header, smooth_structure, write_raw

from recipes.base import RecipeError
from recipes.steps.bias import RECIPE
from recipes.algorithms.instrument import DetectorFormat
from recipes.registry import get_recipe

N_BIAS = 7
# For the overscan accuracy test: an overscan as wide as the real one (29 usable columns),
# so the fitted level is known to ~0.02 adu as on a full-size CCD.
WIDE = DetectorFormat(nx=64, ny=96, prscx=8, prscy=8, ovscx=32, ovscy=8)
HOT_COL, DARK_COL = 20, 40  # trimmed columns in port 1


def _biases(tmp_path, structure=None, drift=0.0, n=N_BIAS, ifus=(1,), seed=0, columns=False, mode="WFM-NOAO-N",
            fmt=SMALL):
    rng = np.random.default_rng(seed)
    extra = np.zeros(fmt.trimmed_shape) if structure is None else structure.copy()
    if columns:
        extra[: SMALL.ny, HOT_COL] += 8.0
        extra[: SMALL.ny, DARK_COL] -= 100.0
    paths = []
    for k in range(n):
        images = {}
        for ifu in ifus:
            header = ext_header(fmt, ifu)
            images[ifu] = (make_raw_image(fmt, header, rng, structure=extra, drift_amplitude=drift), header)
        paths.append(write_raw(tmp_path / f"MUSE.bias{k}.fits", primary_header(index=k, mode=mode), images))
    return paths


def _run(tmp_path, paths, **params):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (product,) = RECIPE.run({"BIAS": paths}, RECIPE.validate(params), out)
    return product


def test_declaration_matches_the_drs():
    recipe = get_recipe("muse_bias")
    assert recipe is RECIPE and recipe.min_inputs == 3
    assert recipe.inputs == ("BIAS",) and recipe.outputs == ("MASTER_BIAS",)
    assert [c.tag for c in recipe.calibs] == ["BADPIX_TABLE"] and not recipe.calibs[0].required
    assert recipe.defaults() == {
        "nifu": 0, "overscan": "vpoly", "ovscreject": "dcr", "ovscsigma": 30.0, "ovscignore": 3,
        "combine": "sigclip", "nlow": 1, "nhigh": 1, "nkeep": 1, "lsigma": 3.0, "hsigma": 3.0,
        "losigmabadpix": 30.0, "hisigmabadpix": 3.0, "merge": False,
    }  # fmt: skip


def test_levels_ron_and_stat(tmp_path):
    product = _run(tmp_path, _biases(tmp_path))
    qc = product.qc
    master = fits.open(product.path)
    for n, (level, ron, gain) in enumerate(zip(LEVELS, RONS, GAINS), start=1):
        assert abs(qc[f"CHAN01 QC BIAS LEVEL{n} MEDIAN"] - level) < 0.1
        assert qc[f"CHAN01 QC BIAS MASTER{n} RON"] == pytest.approx(ron, rel=0.03)
        q = (slice(0, SMALL.ny), slice(0, SMALL.nx)) if n == 1 else None
        if q is not None:
            stat = master["CHAN01.STAT"].data[q]
            assert np.median(stat) == pytest.approx((ron / gain) ** 2 / N_BIAS, rel=0.05)
    assert master["CHAN01.DATA"].header["BUNIT"] == "adu"
    assert master["CHAN01.STAT"].header["BUNIT"] == "(adu)**2"
    prim = master[0].header
    assert prim["ESO PRO CATG"] == "MASTER_BIAS" and prim["ESO PRO DATANCOM"] == N_BIAS
    assert prim["ESO PRO REC1 RAW7 NAME"] == "MUSE.bias6.fits"
    assert master["CHAN01.DATA"].header["ESO QC BIAS MASTER3 RON"] == pytest.approx(qc["CHAN01 QC BIAS MASTER3 RON"])
    assert product.ifus == (1,)


def test_vpoly_leaves_the_2d_structure(tmp_path):
    structure = smooth_structure(WIDE)
    product = _run(tmp_path, _biases(tmp_path, structure=structure, drift=4.0, fmt=WIDE))
    data = fits.getdata(product.path, "CHAN01.DATA")
    stat = fits.getdata(product.path, "CHAN01.STAT")
    for n, (ron, gain) in enumerate(zip(RONS, GAINS), start=1):
        rows = slice(0, WIDE.ny) if n in (1, 2) else slice(WIDE.ny, 2 * WIDE.ny)
        cols = slice(0, WIDE.nx) if n in (1, 4) else slice(WIDE.nx, 2 * WIDE.nx)
        resid = data[rows, cols] - structure[rows, cols]
        assert abs(resid.mean()) < 0.05
        # pixel rms ≈ RON/(g√N); sigclip keeps nearly all values
        assert resid.std() == pytest.approx(ron / gain / np.sqrt(N_BIAS), rel=0.1)
        assert np.median(stat[rows, cols]) == pytest.approx((ron / gain) ** 2 / N_BIAS, rel=0.05)


def test_overscan_none_keeps_the_level(tmp_path):
    structure = smooth_structure(SMALL)
    product = _run(tmp_path, _biases(tmp_path, structure=structure), overscan="none", combine="average")
    data = fits.getdata(product.path, "CHAN01.DATA")
    assert abs((data[: SMALL.ny, : SMALL.nx] - structure[: SMALL.ny, : SMALL.nx]).mean() - LEVELS[0]) < 0.05
    assert fits.getheader(product.path)["ESO PRO REC1 PARAM2 VALUE"] == "none"


def test_bad_columns_are_flagged(tmp_path):
    product = _run(tmp_path, _biases(tmp_path, columns=True))
    dq = fits.getdata(product.path, "CHAN01.DQ")
    port = dq[: SMALL.ny, : SMALL.nx]
    assert ((port[:, HOT_COL] & 256) != 0).mean() > 0.9
    assert ((port[:, DARK_COL] & 512) != 0).all()
    others = np.delete(port, [HOT_COL, DARK_COL], axis=1)
    assert ((others & (256 | 512)) != 0).mean() < 0.002
    assert product.qc["CHAN01 QC BIAS MASTER NBADPIX"] == int(((dq & (256 | 512)) != 0).sum())


def test_nifu_selects_one_ifu(tmp_path):
    product = _run(tmp_path, _biases(tmp_path, n=3, ifus=(1, 2)), nifu=2)
    with fits.open(product.path) as hdul:
        assert [h.name for h in hdul][1:] == ["CHAN02.DATA", "CHAN02.DQ", "CHAN02.STAT"]
    assert product.ifus == (2,)


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    paths = _biases(tmp_path, n=3)
    with pytest.raises(RecipeError, match=r"at least 3 BIAS frames, got 2 \(MUSE.bias0.fits, MUSE.bias1.fits\)"):
        _run(tmp_path, paths[:2])
    odd = _biases(tmp_path / "..", n=1, mode="NFM-AO-N", seed=5)
    odd_path = odd[0].rename(tmp_path / "MUSE.nfm.fits")
    with pytest.raises(RecipeError, match="MUSE.nfm.fits: INS MODE"):
        _run(tmp_path, paths + [odd_path])
    missing = tmp_path / "MUSE.gone.fits"
    with pytest.raises(RecipeError, match="MUSE.gone.fits: raw file does not exist"):
        _run(tmp_path, paths + [missing])
    corrupt = tmp_path / "MUSE.corrupt.fits"
    corrupt.write_bytes(paths[0].read_bytes()[:-2880 * 3])
    with pytest.raises(RecipeError, match="MUSE.corrupt.fits") as info:
        _run(tmp_path, paths + [corrupt])
    assert "\n" not in str(info.value)
    with pytest.raises(RecipeError, match="MUSE.bias0.fits: no extension CHAN05"):
        _run(tmp_path, paths, nifu=5)
    with pytest.raises(ValueError, match="combine must be one of"):
        RECIPE.validate({"combine": "mode"})


def test_docs_render_the_declaration():
    from recipes.docs import render_recipe, render_recipes

    text = render_recipe(RECIPE)
    assert text.startswith("## muse_bias")
    # the wording after the count and after "optional" belongs to recipes.docs (e.g. "raw files")
    assert "`BIAS` (at least 3" in text and "`BADPIX_TABLE` (optional" in text and "`MASTER_BIAS`" in text
    assert "| `combine` | str | `sigclip` | `average`, `median`, `minmax`, `sigclip` |" in text
    assert "| `merge` | bool | `false` |" in text
    assert "| `ovscignore` | int | `3` | ≥ 0 |" in text
    doc = render_recipes([RECIPE])
    assert doc.startswith("# Recipes") and "## muse_bias" in doc
