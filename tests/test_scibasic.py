"""muse_scibasic on the simulator's mini profile (1 IFU), against its truth.

:func:`simulated_night` simulates a night (BIAS, FLAT, ARC, OBJECT, ILLUM, SKYFLAT) once per
session and runs muse_bias, muse_flat and muse_wavecal on it; the module fixture runs
muse_scibasic on the OBJECT exposure and the tests check the pixel table against the
calibrations and the truth (issue 6 tolerances).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from recipes.base import RecipeError

pytestmark = pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")


def _raw_of(base: Path, dpr_type: str) -> list[Path]:
    return [p for p in sorted((base / "raw").glob("*.fits")) if fits.getheader(p)["HIERARCH ESO DPR TYPE"] == dpr_type]


def simulated_night(tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    """A mini night (1 IFU: BIAS, FLAT, ARC, OBJECT, ILLUM, SKYFLAT) and its MASTER_BIAS,
    MASTER_FLAT, TRACE_TABLE and WAVECAL_TABLE from the calibration recipes, made once per
    test session (tests/test_twilight.py uses it too). Returns (folder, calibration frames)."""
    from musered.simulate.run import simulate
    from recipes.steps import bias
    from recipes.steps import flat
    from recipes.steps import wavecal

    base = tmp_path_factory.getbasetemp() / "scibasic-night"
    done = base / "calibs-done"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        simulate(base, profile="mini", kinds={"BIAS", "FLAT", "ARC", "OBJECT", "ILLUM", "SKYFLAT"}, exposures=1,
                 ifus=1)  # fmt: skip
        for name in ("bias", "flat", "wavecal"):
            (base / name).mkdir()
        bias.RECIPE.run({"BIAS": _raw_of(base, "BIAS")}, bias.RECIPE.validate(), base / "bias")
        mb = base / "bias" / "MASTER_BIAS.fits"
        flat.RECIPE.run({"FLAT": _raw_of(base, "FLAT,LAMP"), "MASTER_BIAS": [mb]}, flat.RECIPE.validate(),
                        base / "flat")  # fmt: skip
        wavecal.RECIPE.run(
            {"ARC": _raw_of(base, "WAVE"), "MASTER_BIAS": [mb], "TRACE_TABLE": [base / "flat" / "TRACE_TABLE.fits"],
             "LINE_CATALOG": [base / "muse-calib" / "line_catalog.fits"]},
            wavecal.RECIPE.validate(), base / "wavecal",
        )  # fmt: skip
        done.touch()
    calibs = {
        "MASTER_BIAS": [base / "bias" / "MASTER_BIAS.fits"], "MASTER_FLAT": [base / "flat" / "MASTER_FLAT.fits"],
        "TRACE_TABLE": [base / "flat" / "TRACE_TABLE.fits"], "WAVECAL_TABLE": [base / "wavecal" / "WAVECAL_TABLE.fits"],
        "GEOMETRY_TABLE": [base / "muse-calib" / "geometry_table.fits"],
        "BADPIX_TABLE": [base / "muse-calib" / "badpix_table.fits"],
    }  # fmt: skip
    return base, calibs


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """(base folder, calibration frames dict, OBJECT raw, ILLUM raw)."""
    base, calibs = simulated_night(tmp_path_factory)
    return base, calibs, _raw_of(base, "OBJECT")[0], _raw_of(base, "FLAT,LAMP,ILLUM")[0]


def _run(base: Path, name: str, frames: dict, **params):
    from recipes.steps.scibasic import RECIPE

    out = base / name
    out.mkdir()
    return RECIPE.run(frames, RECIPE.validate(params), out)


@pytest.fixture(scope="module")
def object_run(night):
    base, calibs, obj, _ = night
    products = _run(base, "object", {"OBJECT": [obj], **calibs})
    return products


def _pixtable(products, tag="PIXTABLE_OBJECT"):
    from recipes.algorithms.pixtable import PixTable

    (p,) = [p for p in products if p.tag == tag]
    return PixTable.read(p.path), p


def test_products_and_drs_layout(object_run):
    tags = [p.tag for p in object_run]
    assert tags == ["PIXTABLE_OBJECT", "OBJECT_RED"]
    path = object_run[0].path
    assert path.name == "PIXTABLE_OBJECT_0001-01.fits"
    with fits.open(path) as hdul:
        names = [h.name.lower() for h in hdul]
        assert names[1:8] == ["xpos", "ypos", "lambda", "data", "dq", "stat", "origin"]
        assert hdul["data"].data.shape[1] == 1 and hdul["origin"].data.dtype.kind == "i"
        assert names[-1] == "pixtable_flat_field"
        h = hdul[0].header
        assert h["ESO PRO CATG"] == "PIXTABLE_OBJECT"
        assert h["ESO DRS MUSE PIXTABLE TYPE"] == "GEOFULL"
        assert "ESO QC SCIBASIC LAMBDA SHIFT" in h and "ESO QC SCIBASIC NSATURATED" in h
        assert h["ESO DRS MUSE PIXTABLE LIMITS IFU LOW"] == 1
        # what DRS consumers read from a single-IFU table (issue 14)
        assert h["EXTNAME"] == "CHAN01" and h["ESO PRO SCIENCE"] is True
        assert h["ESO DET OUT1 X"] == 1 and "ESO DET OUT4 GAIN" in h and "ESO DET CHIP NX" in h
        assert "ESO DET OUT1 PRSCX" not in h
        assert h["ESO DRS MUSE FLAT FLUX LAMP"] > 0
        assert h["ESO PRO ANCESTOR"] == h["ARCFILE"] and h["DATE"] != h["DATE-OBS"]
        ff = hdul["PIXTABLE_FLAT_FIELD"].data
        assert np.all(np.diff(ff["lambda"]) > 0) and abs(np.median(ff["data"]) - 1) < 0.3


def test_origin_round_trip_reproduces_the_ccd_pixels(night, object_run):
    from recipes.algorithms.calibtables import trace_from_table
    from recipes.io import read_image_product, read_table_product
    from recipes.algorithms.origin import origin_to_ccd
    from recipes.algorithms.tracing import slice_mask

    base, calibs, _, _ = night
    pt, _ = _pixtable(object_run)
    ifu, sl, x, y = origin_to_ccd(pt.origin, pt.header)
    assert np.all(ifu == 1)
    red = read_image_product(object_run[1].path, 1)
    # every pixel of the reduced image inside a traced slice appears exactly once ...
    trace = trace_from_table(read_table_product(calibs["TRACE_TABLE"][0], 1)[0], "TRACE_TABLE")
    mask = slice_mask(trace, red.data.shape)
    assert pt.nrows == int((mask > 0).sum())
    assert np.unique(y.astype(np.int64) * 4096 + x).size == pt.nrows
    # ... with the slice it lies in and its own value
    np.testing.assert_array_equal(mask[y - 1, x - 1], sl)
    np.testing.assert_array_equal(pt.data, red.data[y - 1, x - 1])
    np.testing.assert_array_equal(pt.stat, red.stat[y - 1, x - 1])
    np.testing.assert_array_equal(pt.dq, red.dq[y - 1, x - 1])


def test_positions_follow_the_geometry_and_the_true_slices(night, object_run):
    from musered.simulate.truth import load_truth
    from recipes.algorithms.origin import origin_to_ccd
    from recipes.algorithms.pixtable_build import read_geometry

    base, calibs, _, _ = night
    truth = load_truth(base)
    pt, _ = _pixtable(object_run)
    _, sl, x, y = origin_to_ccd(pt.origin, pt.header)
    geom = read_geometry(calibs["GEOMETRY_TABLE"][0], 1)
    slices = truth.slices(1)
    for s in (1, 17, 48):
        rows = sl == s
        g = slices[s - 1]
        left, right = g.edges_at(y[rows].astype(float))
        # pixel centres inside the true 50 % edges (traced edges agree to a fraction of a pixel)
        assert np.all((x[rows] >= left - 0.3) & (x[rows] <= right + 0.3))
        np.testing.assert_allclose(pt.ypos[rows], geom.y[s - 1])
        # mirrored: xpos falls with CCD x, spans the slice length on the sky
        frac = (x[rows] - left) / (right - left)
        expect = geom.x[s - 1] + (0.5 - frac) * geom.width[s - 1]
        assert np.max(np.abs(pt.xpos[rows] - expect)) < 0.05 * geom.width[s - 1]


def test_lambda_equals_the_wavecal_polynomial(night, object_run):
    from recipes.algorithms.calibtables import read_wavecal_table
    from recipes.algorithms.origin import origin_to_ccd
    from recipes.algorithms.wavesolution import evaluate_2d

    base, calibs, obj, _ = night
    plain = _run(base, "noskylines", {"OBJECT": [obj], **calibs}, skylines="none", saveimage=False)
    pt, prod = _pixtable(plain)
    assert prod.qc["CHAN01 QC SCIBASIC LAMBDA SHIFT"] == 0.0
    wlc = read_wavecal_table(calibs["WAVECAL_TABLE"][0], 1)
    _, sl, x, y = origin_to_ccd(pt.origin, pt.header)
    exact = np.empty(pt.nrows)
    for s in range(1, 49):
        rows = sl == s
        exact[rows] = evaluate_2d(wlc[s], x[rows].astype(float), y[rows].astype(float))
    # the column is float32, as in the DRS: it holds the polynomial rounded once
    assert np.max(np.abs(pt.lam - exact.astype(np.float32))) <= 1e-4
    assert np.max(np.abs(pt.lam - exact) / np.spacing(np.float32(exact))) <= 0.5
    # the default run adds the measured sky-line zero point and nothing else
    shifted, prod0 = _pixtable(object_run)
    shift = prod0.qc["CHAN01 QC SCIBASIC LAMBDA SHIFT"]
    assert np.max(np.abs(shifted.lam - (exact + shift))) <= np.spacing(np.float32(7000.0))


def test_injected_sky_line_offset_is_measured(night, object_run, tmp_path):
    base, calibs, obj, _ = night
    injected = 0.35  # Å added to every wavelength solution
    wave = tmp_path / "WAVECAL_TABLE_shifted.fits"
    shutil.copy(calibs["WAVECAL_TABLE"][0], wave)
    with fits.open(wave, mode="update") as hdul:
        hdul["CHAN01"].data["wlc00"] += injected
    shifted = _run(base, "skyshift", {"OBJECT": [obj], **calibs, "WAVECAL_TABLE": [wave]}, saveimage=False)
    s0 = object_run[0].qc["CHAN01 QC SCIBASIC LAMBDA SHIFT"]
    s1 = shifted[0].qc["CHAN01 QC SCIBASIC LAMBDA SHIFT"]
    assert abs((s1 - s0) + injected) < 0.02
    # the wavecal zero point itself agrees with the sky (6300.304 Å) and the truth
    assert abs(s0) < 0.05
    pt0, _ = _pixtable(object_run)
    pt1, _ = _pixtable(shifted)
    assert np.max(np.abs(pt1.lam - pt0.lam)) < 0.02 + 1e-3


def test_flat_fielded_lamp_exposure_is_flat(night):
    """The ILLUM lamp flat divided by the master flat: flat across slices and wavelength,
    and its scatter matches the propagated variance."""
    from recipes.algorithms.origin import unpack_origin

    base, calibs, _, illum = night
    products = _run(base, "lamp", {"SKY": [illum], **calibs}, skylines="none", saveimage=False)
    pt, _ = _pixtable(products, "PIXTABLE_SKY")
    good = pt.dq == 0
    level = float(np.median(pt.data[good]))
    _, sl, _, _ = unpack_origin(pt.origin)
    per_slice = np.array([np.median(pt.data[good & (sl == s)]) for s in range(1, 49)]) / level
    assert np.max(np.abs(per_slice - 1)) < 0.005
    edges = np.linspace(pt.lam.min(), pt.lam.max(), 9)
    idx = np.digitize(pt.lam, edges[1:-1])
    per_lambda = np.array([np.median(pt.data[good & (idx == k)]) for k in range(8)]) / level
    assert np.max(np.abs(per_lambda - 1)) < 0.005
    # normalised residuals: unit scatter (the propagated variance is right)
    z = (pt.data[good] - level) / np.sqrt(pt.stat[good])
    core = np.abs(z) < 10
    assert 0.9 < float(np.std(z[core])) < 1.15


def test_illum_and_twilight_corrections(night, object_run, tmp_path):
    from recipes.algorithms.origin import unpack_origin

    base, calibs, obj, illum = night
    ref, _ = _pixtable(object_run)
    # a twilight cube of 2.0 at the blue end rising to 4.0 at the red end (pixel axes)
    lo, hi = float(ref.lam.min()) - 1, float(ref.lam.max()) + 1
    nz = 5
    cube = np.linspace(2.0, 4.0, nz)[:, None, None] * np.ones((nz, 200, 200), np.float32)
    header = fits.Header()
    for key, value in (("CTYPE1", "PIXEL"), ("CTYPE2", "PIXEL"), ("CRPIX1", 100.0), ("CRPIX2", 100.0),
                       ("CRVAL1", 0.0), ("CRVAL2", 0.0), ("CD1_1", 1.0), ("CD2_2", 1.0), ("CTYPE3", "AWAV"),
                       ("CRPIX3", 1.0), ("CRVAL3", lo), ("CD3_3", (hi - lo) / (nz - 1))):  # fmt: skip
        header[key] = value
    twi = tmp_path / "TWILIGHT_CUBE.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube.astype(np.float32), header, name="DATA")]).writeto(twi)
    products = _run(base, "corrected", {"OBJECT": [obj], "ILLUM": [illum], "TWILIGHT_CUBE": [twi], **calibs},
                    saveimage=False)  # fmt: skip
    pt, _ = _pixtable(products)
    assert pt.nrows == ref.nrows
    _, sl, _, _ = unpack_origin(pt.origin)
    factors = np.array([pt.header[f"ESO DRS MUSE PIXTABLE ILLUM{s}"] for s in range(1, 49)])
    # the attached flat is a lamp flat like the master flat: relative illumination ~ 1
    assert np.max(np.abs(factors - 1)) < 0.01 and abs(np.mean(factors) - 1) < 1e-9
    twilight = 2.0 + 2.0 * (ref.lam.astype(np.float64) - lo) / (hi - lo)
    expect = ref.data / factors[sl - 1] / twilight
    np.testing.assert_allclose(pt.data, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pt.stat, ref.stat / (factors[sl - 1] * twilight) ** 2, rtol=1e-5, atol=1e-8)


def test_numba_kernel_agrees_with_numpy_reference(night, object_run):
    from recipes.algorithms.calibtables import trace_from_table
    from recipes.io import read_image_product, read_table_product
    from recipes.kernels.pixtable_build import build_pixels, build_pixels_reference
    from recipes.algorithms.calibtables import read_wavecal_table
    from recipes.algorithms.pixtable_build import read_geometry, slice_xoffsets

    base, calibs, _, _ = night
    red = read_image_product(object_run[1].path, 1)
    trace = trace_from_table(read_table_product(calibs["TRACE_TABLE"][0], 1)[0], "TRACE_TABLE")
    wave = read_wavecal_table(calibs["WAVECAL_TABLE"][0], 1)
    wlc = np.stack([wave[s] for s in range(1, 49)])
    geom = read_geometry(calibs["GEOMETRY_TABLE"][0], 1)
    angle = np.linspace(-3.0, 3.0, 48)  # exercise the rotation as well
    args = (red.data, red.dq, red.stat, trace.left, trace.right, wlc, geom.x, geom.y, angle, geom.width,
            np.arange(1, 49), 1, slice_xoffsets(trace, red.data.shape))  # fmt: skip
    fast = build_pixels(*args)
    slow = build_pixels_reference(*args)
    for name, a, b in zip(("xpos", "ypos", "lambda", "data", "dq", "stat", "origin"), fast, slow):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if name in ("xpos", "ypos"):
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=name)
        elif name == "lambda":
            assert np.max(np.abs(a - b)) <= np.spacing(np.float32(b.max())), name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_cosmic_ray_flagging_finds_the_injected_hits(night):
    from musered.simulate.truth import load_truth

    base, calibs, obj, _ = night
    products = _run(base, "dcr", {"OBJECT": [obj], **calibs}, cr="dcr", skylines="none")
    from recipes.io import read_image_product

    red = read_image_product(products[1].path, 1)
    flagged = (red.dq & (1 << 5)) != 0
    with fits.open(base / "truth" / "cosmics.fits") as hdul:
        t = hdul[1].data
        sel = (t["frame"] == obj.name) & (t["ifu"] == 1) & (t["electrons"] > 300)
        ys, xs = t["y"][sel] - 1, t["x"][sel] - 1
    usable = (red.dq[ys, xs] & ~(1 << 5)) == 0  # not in a gap or a known bad pixel
    ys, xs = ys[usable], xs[usable]
    assert ys.size > 10
    assert flagged[ys, xs].mean() > 0.8
    truth_mask = np.zeros_like(flagged)
    truth_mask[t["y"][t["frame"] == obj.name] - 1, t["x"][t["frame"] == obj.name] - 1] = True
    assert (flagged & ~truth_mask).sum() < 1e-4 * flagged.size
    assert load_truth(base).frames[obj.name]["kind"] == "OBJECT"


def test_crop_ranges_by_instrument_mode():
    from recipes.algorithms.scibasic_steps import crop_range, notch_range

    assert crop_range("WFM-NOAO-N") == (4750.0, 9350.0)
    assert crop_range("NFM-AO-N") == (4750.0, 9350.0)
    assert crop_range("WFM-AO-N") == (4700.0, 9350.0)
    assert crop_range("WFM-NOAO-E") == (4600.0, 9350.0)
    assert notch_range("WFM-NOAO-N") is None and notch_range("WFM-AO-E") is not None


def test_missing_calibration_is_a_one_line_error(night, tmp_path):
    base, calibs, obj, _ = night
    frames = {"OBJECT": [obj], **calibs}
    del frames["TRACE_TABLE"]
    with pytest.raises(RecipeError, match="needs a TRACE_TABLE"):
        _run(base, "notrace", frames)
    assert not any((base / "notrace").iterdir())


def test_calibration_of_another_instrument_mode_is_refused(night, tmp_path):
    base, calibs, obj, _ = night
    flat = tmp_path / "MASTER_FLAT_nfm.fits"
    shutil.copy(calibs["MASTER_FLAT"][0], flat)
    with fits.open(flat, mode="update") as hdul:
        hdul[0].header["HIERARCH ESO INS MODE"] = "NFM-AO-N"
    with pytest.raises(RecipeError, match="MASTER_FLAT is for INS MODE 'NFM-AO-N'"):
        _run(base, "nfm", {"OBJECT": [obj], **calibs, "MASTER_FLAT": [flat]})


def test_raw_with_wrong_geometry_is_refused(night, tmp_path):
    from calib_helpers import SMALL, ext_header, make_raw_image, primary_header, write_raw

    base, calibs, obj, _ = night
    primary = primary_header("OBJECT", 60.0)
    primary["HIERARCH ESO DPR CATG"] = "SCIENCE"
    primary["HIERARCH ESO INS MODE"] = fits.getval(obj, "HIERARCH ESO INS MODE")
    header = ext_header(SMALL, 1)
    raw = write_raw(tmp_path / "small.fits", primary,
                    {1: (make_raw_image(SMALL, header, np.random.default_rng(1)), header)})  # fmt: skip
    with pytest.raises(RecipeError, match="wrong detector geometry"):
        _run(base, "small", {"OBJECT": [raw], **calibs})


@pytest.mark.parametrize(
    "params, match",
    [({"skylines": "5577,abc"}, "skylines"), ({"skylines": "5577,-1"}, "skylines"), ({"skyreject": "15"}, "skyreject"),
     ({"skyreject": "15,15,1.5"}, "skyreject"), ({"resample": True}, "resample")],
)  # fmt: skip
def test_bad_parameters(params, match):
    """Refused when the parameters are validated, before any data is read."""
    from recipes.steps.scibasic import RECIPE

    with pytest.raises(ValueError, match=match) as err:
        RECIPE.validate(params)
    assert "\n" not in str(err.value)


def test_typed_sky_line_parameters():
    from recipes.steps.scibasic import RECIPE

    defaults = RECIPE.defaults()
    assert defaults["skylines"] == (5577.339, 6300.304) and defaults["skyreject"] == (15.0, 15.0, 1.0)
    assert RECIPE.validate({"skylines": "none"})["skylines"] == ()
    assert RECIPE.validate({"skylines": "NONE"})["skylines"] == ()
    assert RECIPE.validate({"skylines": 5577.339})["skylines"] == (5577.339,)


def _catalog_frames(base: Path, obj: Path, illum: Path, calibs: dict, with_trace: bool):
    """Raw rows of the OBJECT and ILLUM frames and product rows of the calibrations, as
    ``musered update-db`` and the calibration steps would have recorded them."""
    import datetime as dt

    from musered.nights import night_of
    from musered.catalog import ProductFrame, raw_frame

    def raw(path: Path):
        h = fits.getheader(path)
        date = dt.datetime.fromisoformat(h["DATE-OBS"])
        return raw_frame(path=str(path), name=h["DATE-OBS"], night=night_of(date, dt.time(12)), DATE_OBS=date,
                         DPR_TYPE=h["HIERARCH ESO DPR TYPE"], DPR_CATG=h["HIERARCH ESO DPR CATG"],
                         TPL_START=h["HIERARCH ESO TPL START"], INS_MODE=h["HIERARCH ESO INS MODE"],
                         OBJECT=h.get("OBJECT"), INS_TEMP7_VAL=h.get("HIERARCH ESO INS TEMP7 VAL"))  # fmt: skip

    raws = [raw(obj), raw(illum)]
    products = []
    for tag in ("MASTER_BIAS", "MASTER_FLAT", "TRACE_TABLE", "WAVECAL_TABLE"):
        if tag == "TRACE_TABLE" and not with_trace:
            continue
        path = calibs[tag][0]
        h = fits.getheader(path)
        date = dt.datetime.fromisoformat(h["DATE-OBS"])
        products.append(ProductFrame(path=path, recipe_name=path.parent.name, name=h["HIERARCH ESO TPL START"],
                                     PRO_CATG=tag, night=raws[0].night, DATE_OBS=date,
                                     INS_MODE=h.get("HIERARCH ESO INS MODE"),
                                     OBJECT=h.get("OBJECT"), TPL_START=h["HIERARCH ESO TPL START"],
                                     output_dir=path.parent.name, date_run=dt.datetime(2026, 1, 1)))  # fmt: skip
    return raws, products


def test_association_feeds_the_recipe_and_reports_a_missing_trace_table(night):
    """What the runner does for one exposure: associate, then run with the frames found
    (GEOMETRY_TABLE from muse_calib_path, the ILLUM raw of the night); without any
    TRACE_TABLE the exposure fails with a one-line reason naming the tag."""
    from musered.association import associate
    from musered.errors import MuseredError
    from musered.settings import settings_from_dict
    from musered.catalog import Catalog
    from musered.targets import discover_targets
    from recipes.steps.scibasic import RECIPE

    base, calibs, obj, illum = night
    st = settings_from_dict({"workdir": str(base), "muse_calib_path": str(base / "muse-calib")}, base_dir=base)
    for with_trace in (True, False):
        raws, products = _catalog_frames(base, obj, illum, calibs, with_trace)
        catalog = Catalog.build(raws, products, [], st)
        targets, _ = discover_targets(RECIPE, catalog, st, st.recipe_block(RECIPE.name))
        assert len(targets) == 1 and list(targets[0].inputs) == ["OBJECT"]
        if with_trace:
            assoc = associate(RECIPE, targets[0], catalog, st, st.recipe_block(RECIPE.name))
            assert assoc.frames["ILLUM"] == [illum]
            assert assoc.frames["GEOMETRY_TABLE"][0].parent == base / "muse-calib"
            products_run = _run(base, "associated", {k: list(v) for k, v in assoc.frames.items()}, saveimage=False)
            pt, _ = _pixtable(products_run)
            assert "ESO DRS MUSE PIXTABLE ILLUM1" in pt.header
        else:
            with pytest.raises(MuseredError) as err:
                associate(RECIPE, targets[0], catalog, st, st.recipe_block(RECIPE.name))
            message = str(err.value)
            assert "no TRACE_TABLE for muse_scibasic" in message and "\n" not in message
            assert "no GEOMETRY_TABLE" not in message and "no MASTER_FLAT" not in message


def test_expert_combination_of_repeated_inputs(night, object_run):
    """combine=average on the same exposure given twice: one pixel table, the values of
    the single exposure and half its detector variance."""
    base, calibs, obj, _ = night
    products = _run(base, "combined", {"OBJECT": [obj, obj], **calibs}, combine="average", saveimage=False)
    assert [p.path.name for p in products] == ["PIXTABLE_OBJECT_0001-01.fits"]
    pt, _ = _pixtable(products)
    ref, _ = _pixtable(object_run)
    np.testing.assert_allclose(pt.data, ref.data, rtol=1e-5, atol=1e-4)
    # the detector variance halves; the master flat's own variance term does not
    good = ref.stat > 0
    ratio = pt.stat[good] / ref.stat[good]
    assert np.all((ratio > 0.5 - 1e-4) & (ratio <= 1.0 + 1e-4)) and abs(np.median(ratio) - 0.5) < 0.005


def test_sky_line_fit_finds_lines_and_ignores_noise():
    from recipes.algorithms.skyline_shift import fit_sky_line

    rng = np.random.default_rng(3)
    lam = rng.uniform(6290.0, 6310.0, 200_000)
    noise = rng.normal(0.0, 10.0, lam.size)
    assert fit_sky_line(lam, 100 + noise, 6300.304, 5.0, 0.1, (15.0, 15.0, 1)) is None
    line = 100 + 50 * np.exp(-0.5 * ((lam - 6300.5) / 1.1) ** 2) + noise
    centre, err = fit_sky_line(lam, line, 6300.304, 5.0, 0.1, (15.0, 15.0, 1))
    assert abs(centre - 6300.5) < 5 * err < 0.05


def test_twilight_division_is_the_same_in_blocks():
    from recipes.algorithms.cube import CubeGrid
    from recipes.algorithms.pixtable import make_pixtable
    from recipes.algorithms.illumination import apply_twilight

    rng = np.random.default_rng(5)
    n = 5000
    cols = {"xpos": rng.uniform(-40, 40, n), "ypos": rng.uniform(-6, 6, n), "lambda": rng.uniform(6000, 6900, n),
            "data": rng.uniform(1, 2, n), "dq": np.zeros(n), "stat": np.ones(n), "origin": np.full(n, 65)}  # fmt: skip
    grid = CubeGrid(80, 12, 4, 40.5, 6.5, 0.0, 0.0, (1.0, 0.0, 0.0, 1.0), 1.0, 6000.0, 300.0, celestial=False)
    cube = rng.uniform(0.5, 1.5, grid.shape).astype(np.float32)
    cube[:, 0:6, 0:10] = -1.0  # not positive: those rows stay as they are
    one, blocks = make_pixtable(cols), make_pixtable(cols)
    nbad = apply_twilight(one, cube, grid)
    assert 0 < nbad < n
    assert apply_twilight(blocks, cube, grid, chunk=333) == nbad
    np.testing.assert_array_equal(one.data, blocks.data)
    np.testing.assert_array_equal(one.stat, blocks.stat)
    assert int((one.data != cols["data"].astype(np.float32)).sum()) == n - nbad


def test_flat_division_kernel_agrees_with_numpy_reference():
    from recipes.kernels.flatfield import divide_flat, divide_flat_reference

    rng = np.random.default_rng(5)
    shape = (37, 23)
    data = rng.normal(100.0, 30.0, shape).astype(np.float32)
    stat = rng.uniform(1.0, 50.0, shape).astype(np.float32)
    dq = rng.integers(0, 4, shape).astype(np.int32)
    fdata = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    fdata[0, :5] = (0.0, -1.0, np.nan, 1e-30, np.inf)  # not positive / not finite / tiny
    fstat = rng.uniform(0.0, 1e-3, shape).astype(np.float32)
    fdq = rng.integers(0, 2, shape).astype(np.int32) << 3
    fast = [a.copy() for a in (data, dq, stat)]
    slow = [a.copy() for a in (data, dq, stat)]
    with np.errstate(invalid="ignore", over="ignore"):
        divide_flat(*fast, fdata, fdq, fstat, 1 << 14)
        divide_flat_reference(*slow, fdata, fdq, fstat, 1 << 14)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)  # bit-identical, including the non-positive flats
    assert fast[0][0, 0] == 0 and fast[1][0, 2] & (1 << 14) and not fast[1][0, 3] & (1 << 14)


def test_gather_equals_a_second_table_build_and_compact_equals_mask(night, object_run):
    """The flat at the table's pixels (gather by origin) is what a second build of the
    pixel table on the flat gave; the in-place crop equals boolean selection."""
    from recipes.algorithms.calibtables import trace_from_table
    from recipes.io import read_image_product, read_table_product
    from recipes.kernels.pixtable_build import (
        build_pixels,
        compact_rows,
        gather_pixels,
        gather_pixels_reference,
    )
    from recipes.algorithms.calibtables import read_wavecal_table
    from recipes.algorithms.pixtable_build import read_geometry, slice_xoffsets

    base, calibs, _, _ = night
    red = read_image_product(object_run[1].path, 1)
    flat = read_image_product(calibs["MASTER_FLAT"][0], 1)
    trace = trace_from_table(read_table_product(calibs["TRACE_TABLE"][0], 1)[0], "TRACE_TABLE")
    wave = read_wavecal_table(calibs["WAVECAL_TABLE"][0], 1)
    wlc = np.stack([wave[s] for s in range(1, 49)])
    geom = read_geometry(calibs["GEOMETRY_TABLE"][0], 1)
    xoff = slice_xoffsets(trace, red.data.shape)
    common = (trace.left, trace.right, wlc, geom.x, geom.y, geom.angle, geom.width, np.arange(1, 49), 1, xoff)
    table = build_pixels(red.data, red.dq, red.stat, *common)
    again = build_pixels(flat.data, flat.dq, flat.stat, *common)
    origin = table[6]
    fdata, fdq = gather_pixels(flat.data, flat.dq, origin, xoff)
    np.testing.assert_array_equal(fdata, again[3])
    np.testing.assert_array_equal(fdq, again[4])
    rdata, rdq = gather_pixels_reference(flat.data, flat.dq, origin, xoff)
    np.testing.assert_array_equal(fdata, rdata)
    np.testing.assert_array_equal(fdq, rdq)
    keep = (table[2] >= 6100.0) & (table[2] <= 6800.0)
    assert 0 < keep.sum() < keep.size
    for col in table:
        expect = col[keep]
        np.testing.assert_array_equal(compact_rows(keep, col.copy()), expect)
    with pytest.raises(ValueError, match="contiguous 1-D"):
        compact_rows(keep[:-1], table[0].copy())


def test_flat_field_spectrum_unchanged_by_gather(night, object_run):
    """PIXTABLE_FLAT_FIELD equals the spectrum of a full second table build on the flat
    (the former way), cropped to the rows kept in the science table."""
    from recipes.io import read_image_product
    from recipes.algorithms.pixtable_build import build_columns, flat_field_spectrum
    from recipes.algorithms.pixtable_build import ifu_tables

    base, calibs, _, _ = night
    pt, _ = _pixtable(object_run)
    flat = read_image_product(calibs["MASTER_FLAT"][0], 1)
    cal = {k: v[0] for k, v in calibs.items()}
    cols, _ = build_columns(flat, 1, *ifu_tables(cal, 1))
    keep = (cols["lambda"] >= 4750.0) & (cols["lambda"] <= 9350.0)  # nominal crop (no shift in the mini range)
    expect = flat_field_spectrum(cols["lambda"][keep], cols["data"][keep], cols["dq"][keep])
    got = pt.flat_field
    assert got is not None and len(got) == len(expect) > 100
    np.testing.assert_array_equal(np.asarray(got["lambda"]), np.asarray(expect["lambda"]))
    np.testing.assert_allclose(np.asarray(got["data"]), np.asarray(expect["data"]), rtol=1e-12)


def test_flat_sum_and_shift_kernels_agree_with_numpy_reference():
    from recipes.kernels.pixtable_build import binned_flat_sums, binned_flat_sums_reference, shift_lambda

    rng = np.random.default_rng(8)
    n = 50_000
    lam = rng.uniform(4751.3, 9349.9, n).astype(np.float32)
    flat = rng.uniform(0.2, 2.0, n).astype(np.float32)
    flat[::97] = np.nan
    dq = (rng.random(n) < 0.05).astype(np.int32) << 2
    fast = binned_flat_sums(lam, flat, dq, 1.25)
    slow = binned_flat_sums_reference(lam, flat, dq, 1.25)
    assert fast[0] == slow[0] and np.asarray(fast[0]).dtype == np.asarray(slow[0]).dtype
    np.testing.assert_array_equal(fast[1], slow[1])  # same summation order: bit-identical
    np.testing.assert_array_equal(fast[2], slow[2])
    assert binned_flat_sums(lam, flat, np.ones(n, np.int32), 1.25) is None
    assert binned_flat_sums_reference(lam, flat, np.ones(n, np.int32), 1.25) is None
    shifted = lam.copy()
    shift_lambda(shifted, 0.0123456789)
    np.testing.assert_array_equal(shifted, (lam.astype(np.float64) + 0.0123456789).astype(np.float32))


def test_sky_line_row_selection_agrees_with_numpy_reference():
    from recipes.kernels.pixtable_build import good_lambda_range, rows_near, rows_near_reference

    rng = np.random.default_rng(9)
    n = 40_000
    lam = rng.uniform(5500.0, 6400.0, n).astype(np.float32)
    lam[:4] = np.float32(5577.339) + np.float32(5.0) * np.array([-1, 1, -0.99999, 0.99999], np.float32)  # edges
    data = rng.normal(10.0, 3.0, n).astype(np.float32)
    data[::50] = np.inf
    dq = (rng.random(n) < 0.1).astype(np.int32)
    for line in (5577.339, 6300.304):
        fast = rows_near(lam, data, dq, line, 5.0)
        slow = rows_near_reference(lam, data, dq, line, 5.0)
        assert fast[0].size > 100
        np.testing.assert_array_equal(fast[0], slow[0])
        np.testing.assert_array_equal(fast[1], slow[1])
    good = (dq == 0) & np.isfinite(data)
    assert good_lambda_range(lam, data, dq) == (int(good.sum()), float(lam[good].min()), float(lam[good].max()))
    assert good_lambda_range(lam, data, np.ones(n, np.int32))[0] == 0
