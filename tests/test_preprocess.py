"""Shared CCD preprocessing: geometry use, overscan, trimming, units, variance, DQ."""

import numpy as np
import pytest
from calib_helpers import GAINS, LEVELS, RONS, SMALL, ext_header, make_raw_image, primary_header, smooth_structure, write_raw

from recipes.base import RecipeError
from recipes.algorithms.instrument import DetectorFormat
from recipes.io import CcdImage
from recipes.kernels.combine import combine_reference
from recipes.kernels.overscan import (
    grouped_median,
    histogram_u16,
    preprocess_rows,
    preprocess_rows_reference,
)
from recipes.algorithms.overscan import OverscanSpec, overscan_correction
from recipes.algorithms.preprocess import combine_frames, index_maps, prepare, preprocess_image
from recipes.algorithms.rawccd import badpix_mask, check_compatible, load_raw_ccd, load_raw_stack


def _ccd(tmp_path, fmt=SMALL, name="raw.fits", seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    header = ext_header(fmt, 1)
    image = make_raw_image(fmt, header, rng, **kwargs)
    path = write_raw(tmp_path / name, primary_header(), {1: (image, header)})
    return load_raw_ccd(path, 1)


def test_overscan_spec_parsing():
    spec = OverscanSpec.from_params({"overscan": "vpoly:10,1.01,1.0001", "ovscreject": "fit", "ovscsigma": 5,
                                     "ovscignore": 2})
    assert (spec.method, spec.order, spec.frms, spec.fchisq, spec.reject, spec.sigma, spec.ignore) == (
        "vpoly", 10, 1.01, 1.0001, "fit", 5.0, 2)
    assert OverscanSpec.from_params({"overscan": "vpoly"}).order == 15
    for bad in ("poly", "vpoly:x", "offset:3", "vpoly:1,0.5"):
        with pytest.raises(RecipeError, match="overscan"):
            OverscanSpec.from_params({"overscan": bad})
    with pytest.raises(RecipeError, match="ovscreject"):
        OverscanSpec.from_params({"ovscreject": "avsigclip"})


def test_recipes_refuse_a_malformed_overscan_when_validating():
    """The CCD recipes check ``overscan`` (and ovscsigma > 0) once, in RECIPE.validate."""
    import importlib

    for name in ("bias", "dark", "flat", "wavecal", "lsf", "twilight"):
        recipe = importlib.import_module(f"recipes.steps.{name}").RECIPE
        with pytest.raises(ValueError, match=r"parameter overscan='vpoly:x': expected vpoly:order,frms,fchisq"):
            recipe.validate({"overscan": "vpoly:x"})
        with pytest.raises(ValueError, match="ovscsigma must be > 0"):
            recipe.validate({"ovscsigma": 0})
        assert recipe.validate({"overscan": "vpoly:10,1.01"})["overscan"] == "vpoly:10,1.01"


def test_histogram_kernel_and_grouped_median():
    rng = np.random.default_rng(3)
    region = np.rint(rng.normal(1013.37, 2.5, size=(300, 400))).astype(np.uint16)
    counts = histogram_u16(region)
    np.testing.assert_array_equal(counts, np.bincount(region.ravel(), minlength=65536))
    # interpolated within the integer bin: recovers a non-integer level
    assert grouped_median(counts) == pytest.approx(1013.37, abs=0.03)
    assert abs(grouped_median(counts) - np.median(region)) <= 0.5


def test_preprocess_kernel_matches_reference(tmp_path):
    ccd = _ccd(tmp_path, structure=smooth_structure(SMALL), drift_amplitude=2.0)
    ccd.image[SMALL.prscy + 5, SMALL.prscx + 12] = 65535  # saturated, inside port 1 data
    rng = np.random.default_rng(4)
    ny, nx = ccd.shape
    maps = index_maps(ccd.quadrants)
    overscan = rng.normal(1000, 5, size=(4, ny))
    gain, var0 = np.array(GAINS), rng.uniform(4, 9, 4)
    bias = (rng.normal(0, 1, (ny, nx)).astype(np.float32), rng.uniform(0, 1, (ny, nx)).astype(np.float32),
            (rng.random((ny, nx)) < 0.05).astype(np.int32) * 256)
    static = (rng.random((ny, nx)) < 0.05).astype(np.int32) * 8192
    for poisson in (False, True):
        y0, nrows = 7, 50
        out = (np.empty((nrows, nx), np.float32), np.empty((nrows, nx), np.int32), np.empty((nrows, nx), np.float32))
        preprocess_rows(ccd.image, maps, overscan, gain, var0, poisson, 0.5, y0, out, bias, static)
        ref = preprocess_rows_reference(ccd.image, maps, overscan, gain, var0, poisson, 0.5, y0, nrows, bias, static)
        np.testing.assert_allclose(out[0], ref[0], rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(out[1], ref[1])
        np.testing.assert_allclose(out[2], ref[2], rtol=1e-6)
    full = preprocess_image(prepare(ccd, OverscanSpec(method="none"), "adu"))
    assert full.dq[5, 12] & (1 << 12) and (full.dq != 0).sum() == 1


def test_trim_uses_header_geometry_not_fixed_sizes(tmp_path):
    fmt = DetectorFormat(nx=40, ny=30, prscx=5, prscy=6, ovscx=7, ovscy=4)
    ccd = _ccd(tmp_path, fmt=fmt, rons=(0, 0, 0, 0), structure=np.arange(60 * 80).reshape(60, 80) % 97)
    image = preprocess_image(prepare(ccd, OverscanSpec(method="none"), "adu"))
    assert image.data.shape == (60, 80)
    expected = (np.arange(60 * 80).reshape(60, 80) % 97).astype(float)
    for q, level in zip(ccd.quadrants, LEVELS):
        np.testing.assert_allclose(image.data[q.trimmed], np.rint(expected[q.trimmed] + level), atol=0)


def test_vpoly_removes_overscan_drift_offset_and_none(tmp_path):
    ccd = _ccd(tmp_path, rons=(0.5,) * 4, gains=(1.0,) * 4, drift_amplitude=6.0)
    vpoly = preprocess_image(prepare(ccd, OverscanSpec(method="vpoly"), "adu"))
    # level and drift gone: residual is noise + rounding only
    assert abs(float(np.median(vpoly.data))) < 0.1
    assert np.abs(vpoly.data.mean(axis=1)).max() < 0.5
    result = overscan_correction(ccd, OverscanSpec(method="vpoly"))
    assert (result.ncoeff >= 2).all()
    offset_ref = (result.mean - 5.0, result.stdev)
    offset = overscan_correction(ccd, OverscanSpec(method="offset"), offset_ref)
    for p, q in enumerate(ccd.quadrants):
        assert np.allclose(offset.correction[p, q.trimmed[0]], 5.0)
    with pytest.raises(RecipeError, match="overscan level of port 1"):
        overscan_correction(ccd, OverscanSpec(method="none", sigma=3.0), (result.mean + 50, result.stdev))


@pytest.mark.parametrize("reject", ["dcr", "fit", "none"])
def test_overscan_statistics_reject_outliers(tmp_path, reject):
    ccd = _ccd(tmp_path, rons=(2.0,) * 4, gains=(1.0,) * 4)
    q = ccd.quadrants[0]
    rows, cols = q.overscan_x
    ccd.image[rows.start + 3, cols.stop - 1] = 60000  # a hot pixel in the overscan
    res = overscan_correction(ccd, OverscanSpec(method="offset", reject=reject, sigma=5.0))
    if reject == "none":
        assert res.mean[0] > LEVELS[0] + 2
    else:
        assert res.mean[0] == pytest.approx(LEVELS[0], abs=0.3)
        assert res.stdev[0] == pytest.approx(2.0, rel=0.2)


def test_gain_conversion_variance_and_badpix(tmp_path):
    signal = np.full(SMALL.trimmed_shape, 400.0)  # electrons
    ccd = _ccd(tmp_path, signal_e=signal)
    # 1-based raw coordinates: trimmed (y=2, x=3) and a prescan pixel
    xpos, ypos = np.array([SMALL.prscx + 4, 1]), np.array([SMALL.prscy + 3, 1])
    static = badpix_mask(ccd.quadrants, xpos, ypos, np.array([1 << 13, 1 << 13]))
    assert static[2, 3] == 1 << 13 and static.sum() == 1 << 13
    prep = prepare(ccd, OverscanSpec(method="vpoly"), "count")
    image = preprocess_image(prep, static_dq=static)
    for q, gain, ron in zip(ccd.quadrants, GAINS, RONS):
        data, stat = image.data[q.trimmed], image.stat[q.trimmed]
        assert np.median(data) == pytest.approx(400.0, rel=0.03)  # count = electrons
        assert np.median(stat) == pytest.approx(ron**2 + 400.0, rel=0.03)
        assert data.var() == pytest.approx(ron**2 + 400.0, rel=0.15)
    assert image.dq[2, 3] == 1 << 13


def test_check_compatible_names_the_odd_file(tmp_path):
    a = _ccd(tmp_path, name="a.fits")
    b = _ccd(tmp_path, fmt=DetectorFormat(nx=64, ny=48, prscx=8, prscy=8, ovscx=10, ovscy=8), name="b.fits")
    with pytest.raises(RecipeError, match=r"b.fits\[CHAN01\]: detector setup"):
        check_compatible([a, b])
    c = _ccd(tmp_path, name="c.fits")
    c.primary["HIERARCH ESO INS MODE"] = "NFM-AO-N"
    with pytest.raises(RecipeError, match="c.fits: INS MODE"):
        check_compatible([a, c])


@pytest.mark.parametrize("method", ["sigclip", "average", "median", "minmax"])
def test_fused_combine_matches_preprocess_then_numpy_combine(tmp_path, method):
    rng = np.random.default_rng(9)
    paths = []
    for i in range(5):
        header = ext_header(SMALL, 1)
        signal = rng.uniform(0, 300, SMALL.trimmed_shape)
        image = make_raw_image(SMALL, header, rng, structure=smooth_structure(SMALL), signal_e=signal)
        image[SMALL.prscy + 3 + i, SMALL.prscx + 5] = 65535  # saturated, one frame each
        image[SMALL.prscy + 10, SMALL.prscx + 10] = 65535  # saturated in every frame
        paths.append(write_raw(tmp_path / f"f{i}.fits", primary_header(index=i), {1: (image, header)}))
    primaries = [primary_header(index=i) for i in range(5)]
    stacked = load_raw_stack(paths, 1, primaries)
    single = [load_raw_ccd(p, 1) for p in paths]
    shape = stacked[0].shape
    bias = CcdImage(rng.normal(0, 1, shape).astype(np.float32), (rng.random(shape) < 0.02).astype(np.int32) * 256,
                    np.full(shape, 0.1, np.float32), None)
    static = (rng.random(shape) < 0.02).astype(np.int32) * 8192
    preps = [prepare(c, OverscanSpec(), "count", scale=1.0 + 0.1 * i) for i, c in enumerate(stacked)]
    fused = combine_frames(preps, method, bias=bias, static_dq=static)
    frames = [preprocess_image(p, bias=bias, static_dq=static) for p in preps]
    ref = combine_reference(np.stack([f.data for f in frames]), np.stack([f.dq for f in frames]),
                            np.stack([f.stat for f in frames]), method)
    np.testing.assert_allclose(fused.data, ref[0], rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(fused.dq, ref[1])
    np.testing.assert_allclose(fused.stat, ref[2], rtol=1e-5)
    assert fused.dq[10, 10] & (1 << 12)
    # separately loaded images (no shared stack) give the same result
    preps_single = [prepare(c, OverscanSpec(), "count", scale=1.0 + 0.1 * i) for i, c in enumerate(single)]
    again = combine_frames(preps_single, method, bias=bias, static_dq=static)
    np.testing.assert_array_equal(again.data, fused.data)
    wrong = CcdImage(np.zeros((5, 5), np.float32), np.zeros((5, 5), np.int32), np.zeros((5, 5), np.float32), None)
    with pytest.raises(RecipeError, match="MASTER_BIAS is"):
        combine_frames(preps, "average", bias=wrong)


def test_decode_kernel_matches_reference():
    from recipes.kernels.overscan import decode_bzero16, decode_bzero16_reference

    rng = np.random.default_rng(5)
    values = rng.integers(-32768, 32768, size=(37, 53)).astype(">i2")
    values[0, :4] = [-32768, -1, 0, 32767]
    out = np.empty(values.shape, np.uint16)
    decode_bzero16(values, out)
    np.testing.assert_array_equal(out, decode_bzero16_reference(values))
    assert list(out[0, :4]) == [0, 32767, 32768, 65535]
    native = values.astype("<i2")  # also accepts native-endian storage
    np.testing.assert_array_equal(decode_bzero16(native, np.empty_like(out)), out)


def test_raw_stack_memory_bound(tmp_path):
    paths = [write_raw(tmp_path / f"s{i}.fits", primary_header(index=i),
                       {1: (make_raw_image(SMALL, ext_header(SMALL, 1), np.random.default_rng(i)), ext_header(SMALL, 1))})
             for i in range(3)]
    primaries = [primary_header(index=i) for i in range(3)]
    ccds = load_raw_stack(paths, 1, primaries)
    assert ccds[2].image.base is ccds[0].image.base and ccds[0].image.base.shape[0] == 3
    with pytest.raises(RecipeError, match="3 raw frames of CHAN01 need"):
        load_raw_stack(paths, 1, primaries, max_bytes=100_000)
