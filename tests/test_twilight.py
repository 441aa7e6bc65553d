"""muse_twilight on the simulator's mini profile (1 IFU), against its truth illumination.

The simulator lights each slice of the sky differently from the lamp: factor a + b·s along
the slice (s in [−0.5, 0.5], ``truth.illumination(ifu)``, ~2 % slice to slice). The
flat-fielded skyflat cube must show exactly that; TWILIGHT_CUBE is its smooth version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from test_scibasic import _raw_of, simulated_night

from recipes.base import RecipeError

pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")


@pytest.fixture(scope="module")
def twilight_run(tmp_path_factory):
    from recipes.steps.twilight import RECIPE

    base, calibs = simulated_night(tmp_path_factory)
    out = tmp_path_factory.mktemp("twilight")
    frames = {"SKYFLAT": _raw_of(base, "FLAT,SKY"), **calibs}
    products = RECIPE.run(frames, RECIPE.validate(), out)
    return base, calibs, frames, products


def truth_map(base: Path, calibs: dict, header: fits.Header) -> tuple[np.ndarray, np.ndarray]:
    """The true relative illumination on the cube's spaxel grid and the mask of spaxels
    well inside a slice (|s| < 0.42, away from the drizzled slice ends)."""
    from musered.simulate.truth import load_truth
    from recipes.algorithms.pixtable_build import read_geometry

    illum = load_truth(base).illumination(1)
    geom = read_geometry(calibs["GEOMETRY_TABLE"][0], 1)
    nx, ny = header["NAXIS1"], header["NAXIS2"]
    x = (np.arange(nx) + 1 - header["CRPIX1"]) * header["CD1_1"] + header["CRVAL1"]
    y = (np.arange(ny) + 1 - header["CRPIX2"]) * header["CD2_2"] + header["CRVAL2"]
    truth = np.full((ny, nx), np.nan)
    inner = np.zeros((ny, nx), dtype=bool)
    for k in range(48):
        row = int(np.argmin(np.abs(y - geom.y[k])))
        assert abs(y[row] - geom.y[k]) < 1e-3  # one cube row per sky slice
        s = (x - geom.x[k]) / geom.width[k]
        on = np.abs(s) <= 0.5
        truth[row, on] = illum[k, 0] + illum[k, 1] * s[on]
        inner[row, np.abs(s) < 0.42] = True
    return truth, inner


def test_products_layout(twilight_run):
    _, _, frames, products = twilight_run
    assert [p.tag for p in products] == ["DATACUBE_SKYFLAT", "TWILIGHT_CUBE"]
    with fits.open(products[0].path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "STAT", "WHITE"]
        h = hdul["DATA"].header
        assert h["CTYPE1"] == "PIXEL" and h["CTYPE3"] == "AWAV" and h["CD3_3"] == 250.0
        assert hdul[0].header["ESO PRO CATG"] == "DATACUBE_SKYFLAT"
        assert hdul[0].header["ESO DRS MUSE FLAT FLUX SKY1"] > 0
        assert "ESO DRS MUSE FLAT FLUX SKY01" not in hdul[0].header  # the DRS spelling only
        assert np.isfinite(hdul["DATA"].data).any(axis=(1, 2)).all()  # no empty plane
    assert products[0].qc["QC TWILIGHT1 INTFLUX"] > 0
    assert fits.getval(products[1].path, "HIERARCH ESO PRO CATG") == "TWILIGHT_CUBE"
    data = fits.getheader(products[1].path, "DATA")
    assert (data["BUNIT"], data["HDUCLASS"], data["HDUCLAS1"], data["HDUCLAS2"]) == ("count", "ESO", "IMAGE", "DATA")
    # The combined skyflat's statistics describe the illuminated slices, not the gaps
    # between them (where the flat-fielded values were ±10⁸ count).
    qc = products[0].qc
    median = qc["QC TWILIGHT1 MASTER MEDIAN"]
    assert median > 0 and qc["QC TWILIGHT1 MASTER STDEV"] < median
    assert 0 <= qc["QC TWILIGHT1 MASTER MIN"] and qc["QC TWILIGHT1 MASTER MAX"] < 5 * median


def test_skyflat_cube_shows_the_true_illumination(twilight_run):
    base, calibs, _, products = twilight_run
    with fits.open(products[0].path) as hdul:
        white = hdul["WHITE"].data
        cube = hdul["DATA"].data
        header = hdul["DATA"].header
    truth, inner = truth_map(base, calibs, header)
    expect = truth / np.median(truth[inner])
    assert np.std(expect[inner]) > 0.01  # the injected structure is well above the tolerance
    rms = np.sqrt(np.mean((white / np.median(white[inner]) - expect)[inner] ** 2))
    assert rms < 0.005
    for plane in cube:
        rms = np.sqrt(np.mean((plane / np.median(plane[inner]) - expect)[inner] ** 2))
        assert rms < 0.005


def test_twilight_cube_is_the_smooth_illumination(twilight_run):
    from recipes.algorithms.twilightcube import poly2d_fit

    base, calibs, _, products = twilight_run
    with fits.open(products[1].path) as hdul:
        cube = hdul["DATA"].data
        header = hdul["DATA"].header
    truth, inner = truth_map(base, calibs, header)
    on = np.isfinite(truth)
    smooth_truth = poly2d_fit(np.where(on, truth, 0.0), on, 2, 2)
    smooth_truth /= smooth_truth[on].mean()
    for plane in cube:
        # each plane is a normalised 2x2 polynomial ...
        assert abs(plane[on].mean() - 1) < 0.01
        np.testing.assert_allclose(poly2d_fit(plane, on, 2, 2), plane, atol=1e-4)
        # ... close to the smooth part of the true illumination (the 5x7 median filter
        # before the fit, as in the DRS, moves it by a few 0.1 %)
        assert np.sqrt(np.mean((plane - smooth_truth)[inner] ** 2)) < 0.01


def test_scibasic_applies_the_twilight_cube(twilight_run, tmp_path_factory):
    """A skyflat reduced by muse_scibasic with the TWILIGHT_CUBE is divided by it."""
    from recipes.algorithms.pixtable import PixTable
    from recipes.steps.scibasic import RECIPE

    base, calibs, frames, products = twilight_run
    sky = frames["SKYFLAT"][0]
    params = RECIPE.validate({"skylines": "none", "saveimage": False})
    out = tmp_path_factory.mktemp("twilight-applied")
    (out / "plain").mkdir()
    (out / "corrected").mkdir()
    plain = RECIPE.run({"SKY": [sky], **calibs}, params, out / "plain")
    ref = PixTable.read(plain[0].path)
    corrected = RECIPE.run({"SKY": [sky], "TWILIGHT_CUBE": [products[1].path], **calibs}, params, out / "corrected")
    pt = PixTable.read(corrected[0].path)
    good = (ref.dq == 0) & (pt.data != 0)
    ratio = ref.data[good] / pt.data[good]
    with fits.open(products[1].path) as hdul:
        cube = hdul["DATA"].data
    assert cube.min() * 0.999 <= np.min(ratio) and np.max(ratio) <= cube.max() * 1.001
    assert np.std(ratio) > 1e-3


def test_too_few_skyflats_and_missing_geometry(twilight_run, tmp_path):
    from recipes.steps.twilight import RECIPE

    _, calibs, frames, _ = twilight_run
    with pytest.raises(RecipeError, match="at least 3 SKYFLAT"):
        RECIPE.run({**frames, "SKYFLAT": frames["SKYFLAT"][:2]}, RECIPE.validate(), tmp_path)
    without = {k: v for k, v in frames.items() if k != "GEOMETRY_TABLE"}
    with pytest.raises(RecipeError, match="needs a GEOMETRY_TABLE"):
        RECIPE.run(without, RECIPE.validate(), tmp_path)
    with pytest.raises(ValueError, match="lambdamin .* must be below lambdamax"):
        RECIPE.validate({"lambdamin": 9000, "lambdamax": 5000})
    assert not any(tmp_path.iterdir())
