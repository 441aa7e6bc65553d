"""muse_lsf (recipes.steps.lsf, recipes.algorithms.lsffit and lsfmodel, recipes.kernels.lsf): the LSF
from arc frames.

* the regression kernel against its numpy twin;
* the algorithm on a synthetic arc image with a known Gaussian LSF and known λ(x, y);
* the whole recipe on the simulator's mini profile (ARC frames only, the truth geometry
  written as TRACE_TABLE / WAVECAL_TABLE) against the injected LSF: FWHM within 2 % at
  5 wavelengths in every slice, profile integral 1 ± 1 %;
* bad input: empty catalogue, no line in range, unknown lamp, unsupported method.

The simulator integrates a Gaussian LSF over each pixel, and so does a real CCD: the
measured profile is the Gaussian convolved with the pixel width in λ (module doc of
recipes.algorithms.lsfmodel), so the expected FWHM is that of Gaussian ⊗ box.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.special import ndtr

from recipes.base import RecipeError
from recipes.io import CcdImage, ProductWriter
from recipes.kernels.lsf import local_profile_fit, local_profile_fit_reference
from recipes.algorithms.linecatalog import LineCatalog
from recipes.algorithms.lsffit import LineSamples, collect_slice_samples, fit_slice_profile, select_lines
from recipes.algorithms.lsfmodel import (
    ProfileGrid,
    box_gauss_fwhm,
    evaluate_lsf,
    gaussian_fwhm,
    profile_fwhm,
    read_lsf_profile,
)
from recipes.algorithms.tracing import Trace
from recipes.algorithms.wavesolution import evaluate_2d

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


# --------------------------------------------------------------------------------------
# Kernel


def test_box_gauss_fwhm_and_its_inverse():
    # numeric FWHM of the analytic Gaussian ⊗ box on a fine grid
    d = np.linspace(-10, 10, 200001)
    sig = 2.5 / FWHM_PER_SIGMA
    p = ndtr((d + 0.625) / sig) - ndtr((d - 0.625) / sig)
    assert box_gauss_fwhm(2.5, 1.25) == pytest.approx(profile_fwhm(d, p), abs=1e-4)
    assert box_gauss_fwhm(2.5, 0.0) == 2.5
    assert gaussian_fwhm(box_gauss_fwhm(2.7, 1.3), 1.3) == pytest.approx(2.7, rel=1e-8)
    assert np.isnan(gaussian_fwhm(1.0, 1.25))


def test_kernel_matches_numpy_reference():
    rng = np.random.default_rng(3)
    n = 3000
    dlam = np.sort(rng.uniform(-7.5, 7.5, n))
    t = rng.uniform(-1, 1, n)
    values = np.exp(-0.5 * dlam**2 / (1.1 + 0.1 * t) ** 2) + rng.normal(0, 0.01, n)
    weights = rng.uniform(0.5, 2.0, n)
    weights[::17] = 0.0
    grid = np.linspace(-7.5, 7.5, 61)
    for lorder in (0, 2, 4):
        fast, nfast = local_profile_fit(dlam, t, values, weights, grid, 0.7, lorder)
        ref, nref = local_profile_fit_reference(dlam, t, values, weights, grid, 0.7, lorder)
        np.testing.assert_array_equal(nfast, nref)
        np.testing.assert_allclose(fast, ref, rtol=1e-8, atol=1e-10)
    # a window without enough points gives NaN in both
    sparse = np.array([-5.0, 0.0, 0.1, 5.0])
    f, _ = local_profile_fit(sparse, np.zeros(4), np.ones(4), np.ones(4), np.array([0.0, 3.0]), 0.5, 0)
    r, _ = local_profile_fit_reference(sparse, np.zeros(4), np.ones(4), np.ones(4), np.array([0.0, 3.0]), 0.5, 0)
    assert np.isnan(f).all() and np.isnan(r).all()


def test_kernel_recovers_quadratic_exactly():
    dlam = np.linspace(-3, 3, 400)
    t = np.tile([-1.0, 0.0, 1.0, 0.5], 100)
    values = 2.0 + 0.3 * dlam - 0.2 * dlam**2 + 0.5 * t - 0.1 * t**2
    coeffs, _ = local_profile_fit(dlam, t, values, np.ones(400), np.array([0.0, 1.0]), 0.8, 2)
    np.testing.assert_allclose(coeffs[0], [2.0, 0.5, -0.1], atol=1e-9)
    np.testing.assert_allclose(coeffs[1], [2.0 + 0.3 - 0.2, 0.5, -0.1], atol=1e-9)


def test_kernel_rejects_unsorted_input():
    with pytest.raises(ValueError, match="sorted"):
        local_profile_fit(np.array([1.0, 0.0]), np.zeros(2), np.zeros(2), np.ones(2), np.zeros(1), 0.7, 0)


# --------------------------------------------------------------------------------------
# Algorithm on a synthetic arc

NY, NSLICE, WIDTH = 800, 2, 20.0


def _edges(s: int) -> tuple[float, float]:
    left = 10.0 + s * (WIDTH + 6.0)
    return left, left + WIDTH


def _wlc(s: int) -> np.ndarray:
    """λ = λ0 + 1.25 (y − 1) + 2e-5 y² + 0.8 u + 0.5 u², u = (x − xc)/(W/2): curved lines."""
    left, right = _edges(s)
    xc, hw = 0.5 * (left + right), WIDTH / 2
    wlc = np.zeros((3, 3))
    wlc[0] = [5950.0 + 2 * s - 1.25 - 0.8 * xc / hw + 0.5 * xc**2 / hw**2, 1.25, 2e-5]
    wlc[1, 0] = 0.8 / hw - xc / hw**2
    wlc[2, 0] = 0.5 / hw**2
    return wlc


def _fwhm(lam):
    return 2.5 + 0.2 * (np.asarray(lam) - 6400.0) / 500.0


def _trace() -> Trace:
    left = np.array([[_edges(s)[0], 0.0] for s in range(NSLICE)])
    right = np.array([[_edges(s)[1], 0.0] for s in range(NSLICE)])
    return Trace(centre=0.5 * (left + right), left=left, right=right, mse=np.zeros((NSLICE, 3)),
                 width=np.full(NSLICE, WIDTH), samples=None)  # type: ignore[arg-type]  # fmt: skip


def _render(lines, flux, rng, background=20.0):
    nx = int(_edges(NSLICE - 1)[1] + 12)
    y = np.arange(NY)[:, None] + 1.0
    x = np.arange(nx)[None, :] + 1.0
    img = np.zeros((NY, nx))
    for s in range(NSLICE):
        left, right = _edges(s)
        inside = (x >= left) & (x <= right)
        lo, hi = evaluate_2d(_wlc(s), x, y - 0.5), evaluate_2d(_wlc(s), x, y + 0.5)
        for lam, f in zip(lines, flux):
            sig = _fwhm(lam) / FWHM_PER_SIGMA
            img += np.where(inside, f * (ndtr((hi - lam) / sig) - ndtr((lo - lam) / sig)), 0.0)
    img += background
    var = img + 9.0
    return rng.normal(img, np.sqrt(var)), var


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(1)
    lines = np.arange(5990.0, 6900.0, 37.3) + rng.uniform(-3, 3, 25)
    flux = rng.uniform(5e3, 5e4, lines.size)
    img, var = _render(lines, flux, rng)
    return img, var, lines


def test_synthetic_profile_fwhm_and_integral(synthetic):
    img, var, lines = synthetic
    dq = np.zeros(img.shape, dtype=np.int32)
    trace = _trace()
    grid = ProfileGrid.make(7.5, 150, 30, (5950.0, 6950.0))
    for s in range(NSLICE):
        samples = collect_slice_samples(img, var, dq, trace, _wlc(s), s, lines, 7.5)
        assert samples.lines.size == lines.size
        prof = fit_slice_profile(samples, grid, 0.7)
        for n in (3, 9, 15, 21, 27):
            lam = grid.lam[n]
            ys = np.arange(1.0, NY + 1.0)
            xc = 0.5 * sum(_edges(s))
            y = np.interp(lam, evaluate_2d(_wlc(s), xc, ys), ys)
            width = float(evaluate_2d(_wlc(s), xc, y + 0.5) - evaluate_2d(_wlc(s), xc, y - 0.5))
            expected = box_gauss_fwhm(float(_fwhm(lam)), width)
            assert profile_fwhm(grid.dlam, prof.image[n]) == pytest.approx(expected, rel=0.01)
            assert np.trapezoid(prof.image[n], grid.dlam) == pytest.approx(1.0, abs=0.005)
            # centroid bias < 0.02 Å
            centroid = np.sum(grid.dlam * prof.image[n]) / np.sum(prof.image[n])
            assert abs(centroid) < 0.02


def test_flagged_pixels_drop_their_column(synthetic):
    img, var, lines = synthetic
    trace = _trace()
    dq = np.zeros(img.shape, dtype=np.int32)
    clean = collect_slice_samples(img, var, dq, trace, _wlc(0), 0, lines[:1], 7.5)
    # flag one pixel in the window of the first line, at the slice centre column
    yc = int(np.argmin(np.abs(evaluate_2d(_wlc(0), 20.0, np.arange(NY) + 1.0) - lines[0])))
    dq[yc, 19] = 1 << 5
    img2 = img.copy()
    img2[yc, 19] = 1e6  # a cosmic ray that would ruin the normalisation
    flagged = collect_slice_samples(img2, var, dq, trace, _wlc(0), 0, lines[:1], 7.5)
    assert len(np.unique(flagged.group)) == len(np.unique(clean.group)) - 1
    assert flagged.value.max() < 1.0


def test_select_lines_keeps_bright_isolated_lines():
    cat = LineCatalog(
        lam=np.array([6000.0, 6010.0, 6100.0, 6200.0, 6204.0, 6300.0]),
        flux=np.array([1000.0, 5.0, 1000.0, 1000.0, 1000.0, 1000.0]),
        ion=np.array(["NeI", "NeI", "NeI", "NeI", "NeI", "XeI"]),
        quality=np.array([5, 1, 2, 3, 0, 5]),
    )
    # 6000: faint neighbour below 1 % → kept; 6100 quality 2 < 3; 6200 blended with 6204;
    # 6300 is Xe
    np.testing.assert_array_equal(select_lines(cat, ("NeI", "NeII"), 3, 7.5), [6000.0])
    np.testing.assert_array_equal(select_lines(cat, ("XeI",), 3, 7.5), [6300.0])


def test_no_samples_is_an_error():
    grid = ProfileGrid.make(7.5, 150, 30)
    with pytest.raises(ValueError, match="no arc-line samples"):
        fit_slice_profile(LineSamples.concatenate([]), grid, 0.7)


# --------------------------------------------------------------------------------------
# The recipe on the simulator's mini profile


def _write_master_bias(path, ny, nx):
    header = fits.Header()
    writer = ProductWriter(path, header)
    zero = np.zeros((ny, nx), np.float32)
    writer.add_image(1, CcdImage(zero, np.zeros((ny, nx), np.int32), zero.copy(), fits.Header()), "adu", "(adu)**2")


def _write_truth_tables(truth_slices, trace_path, wavecal_path):
    trace = Table()
    trace["SliceNo"] = np.arange(1, 49, dtype=np.int32)
    trace["Width"] = np.full(48, 18.5, dtype=np.float32)
    for k, name in enumerate(("centre", "left", "right")):
        coeffs = np.array([getattr(s, name) for s in truth_slices])
        for j in range(coeffs.shape[1]):
            trace[f"tc{k}_{j:02d}"] = coeffs[:, j]
        trace[f"MSE{k}"] = np.zeros(48)
    wave = Table()
    wave["SliceNo"] = np.arange(1, 49, dtype=np.int32)
    wlc = np.array([s.wlc for s in truth_slices])
    for i in range(wlc.shape[1]):
        for j in range(wlc.shape[2]):
            wave[f"wlc{i}{j}"] = wlc[:, i, j]
    wave["MSE"] = np.zeros(48)
    for table, path in ((trace, trace_path), (wave, wavecal_path)):
        writer = ProductWriter(path, fits.Header())
        writer.add_table(1, table)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """ARC frames of the mini profile (1 IFU) and the calibrations made from the truth."""
    from musered.simulate import simulate
    from musered.simulate.truth import load_truth

    root = tmp_path_factory.mktemp("lsf_mini")
    res = simulate(root / "sim", profile="mini", kinds={"ARC"}, ifus=1, exposures=0)
    truth = load_truth(root / "sim")
    ny, nx = truth.data["trimmed_shape"]
    slices = truth.slices(1)
    calib = root / "calib"
    calib.mkdir()
    _write_master_bias(calib / "MASTER_BIAS.fits", ny, nx)
    _write_truth_tables(slices, calib / "TRACE_TABLE.fits", calib / "WAVECAL_TABLE.fits")
    frames = {
        "ARC": sorted(res.raw_files),
        "MASTER_BIAS": [calib / "MASTER_BIAS.fits"],
        "TRACE_TABLE": [calib / "TRACE_TABLE.fits"],
        "WAVECAL_TABLE": [calib / "WAVECAL_TABLE.fits"],
        "LINE_CATALOG": [root / "sim" / "muse-calib" / "line_catalog.fits"],
    }
    return root, frames, slices


def test_mini_profile_against_truth(mini):
    from recipes.steps import lsf

    root, frames, slices = mini
    outdir = root / "out"
    outdir.mkdir()
    params = lsf.RECIPE.validate()
    (product,) = lsf.RECIPE.run(frames, params, outdir)
    assert product.tag == "LSF_PROFILE" and product.ifus == (1,)
    with fits.open(product.path) as hdul:
        assert hdul[0].header["ESO PRO CATG"] == "LSF_PROFILE"
        ext = hdul["CHAN01.LSF_PROFILE"]
        assert ext.data.shape == (48, 30, 150)
        # the WCS as the DRS 2.8.7 writes it
        assert (ext.header["CTYPE1"], ext.header["CTYPE2"], ext.header["WCSAXES"]) == ("PARAM", "AWAV", 2)
        assert ext.header["CRVAL1"] == -7.5 and ext.header["CD1_1"] == pytest.approx(15.0 / 149)
        assert ext.header["CRVAL2"] == 4650.0 and ext.header["CD2_2"] == pytest.approx(4650.0 / 29)
    profile = read_lsf_profile(product.path)
    cube = profile[1]
    wavelengths = np.linspace(6150.0, 6850.0, 5)
    worst = 0.0
    for sl in slices:
        s = sl.slice_ccd
        centre_x = np.polynomial.polynomial.polyval(400.0, sl.centre)
        for lam in wavelengths:
            # pixel width in λ at the slice centre where the line falls
            ys = np.arange(1.0, 801.0)
            y = np.interp(lam, sl.wavelength(centre_x, ys), ys)
            width = float(sl.wavelength(centre_x, y + 0.5) - sl.wavelength(centre_x, y - 0.5))
            expected = box_gauss_fwhm(float(sl.lsf_fwhm(lam)), width)
            row = evaluate_lsf(profile, 1, s, lam, cube.grid.dlam)
            measured = profile_fwhm(cube.grid.dlam, row)
            worst = max(worst, abs(measured / expected - 1))
            assert measured == pytest.approx(expected, rel=0.02), f"slice {s} at {lam} A"
            # the injected Gaussian FWHM itself, once the pixel width is taken out
            assert gaussian_fwhm(measured, width) == pytest.approx(float(sl.lsf_fwhm(lam)), rel=0.02)
            assert np.trapezoid(row, cube.grid.dlam) == pytest.approx(1.0, abs=0.01), f"slice {s} at {lam} A"
    # QC: mean FWHM over the nodes of the lines' range, close to the expected mid-range value
    sl = slices[0]
    mid = box_gauss_fwhm(float(sl.lsf_fwhm(6450.0)), 1.25)
    assert product.qc["CHAN01 QC LSF SLICE1 FWHM MEAN"] == pytest.approx(mid, rel=0.03)
    assert product.qc["CHAN01 QC LSF SLICE1 FWHM MIN"] <= product.qc["CHAN01 QC LSF SLICE1 FWHM MAX"]
    print(f"worst FWHM deviation over 48 slices x 5 wavelengths: {worst:.4f}")


def test_evaluate_lsf_interpolates_the_cube(tmp_path):
    grid = ProfileGrid.make(7.5, 151, 11, (6000.0, 7000.0))
    cube = np.zeros((48, 11, 151))
    # profile value = a + b·λ + c·Δλ: bilinear interpolation reproduces it exactly
    cube[:] = (1.0 + 1e-3 * (grid.lam[:, None] - 6000.0) + 0.01 * grid.dlam[None, :])[None]
    cube[4] *= 2.0
    from recipes.algorithms.lsfmodel import cube_hdu

    fits.HDUList([fits.PrimaryHDU(), cube_hdu(3, cube, grid)]).writeto(tmp_path / "LSF.fits")
    profile = read_lsf_profile(tmp_path / "LSF.fits")
    lam = np.array([6000.0, 6333.3, 6999.0, 7500.0])
    dl = np.array([0.0, -3.21, 7.4, 1.0])
    expected = 1.0 + 1e-3 * (np.minimum(lam, 7000.0) - 6000.0) + 0.01 * dl
    np.testing.assert_allclose(evaluate_lsf(profile, 3, 1, lam, dl), expected, rtol=1e-6)
    np.testing.assert_allclose(evaluate_lsf(profile, 3, 5, lam, dl), 2 * expected, rtol=1e-6)
    assert evaluate_lsf(profile, 3, 1, 6500.0, 7.6) == 0.0
    # the DRS single-IFU layout (primary EXTNAME = CHAN03, cube in extension LSF_PROFILE)
    hdu = cube_hdu(3, cube, grid)
    hdu.header["EXTNAME"] = "LSF_PROFILE"
    primary = fits.PrimaryHDU()
    primary.header["EXTNAME"] = "CHAN03"
    fits.HDUList([primary, hdu]).writeto(tmp_path / "LSF_PROFILE-03.fits")
    single = read_lsf_profile(tmp_path / "LSF_PROFILE-03.fits")
    np.testing.assert_allclose(evaluate_lsf(single, 3, 1, lam, dl), expected, rtol=1e-6)
    with pytest.raises(RecipeError, match="no IFU 4"):
        evaluate_lsf(profile, 4, 1, 6500.0, 0.0)
    with pytest.raises(RecipeError, match="no slice 49"):
        evaluate_lsf(profile, 3, 49, 6500.0, 0.0)


# --------------------------------------------------------------------------------------
# Bad input


def _catalog_file(path, lam, ions, quality, version=3):
    cols = [
        fits.Column("lambda", "E", array=np.asarray(lam, np.float32)),
        fits.Column("flux", "E", array=np.full(len(lam), 1000.0, np.float32)),
        fits.Column("ion", "20A", array=np.asarray(ions)),
        fits.Column("quality", "J", array=np.asarray(quality, np.int32)),
    ]
    primary = fits.PrimaryHDU()
    primary.header["VERSION"] = version
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="LINE_CATALOG")]).writeto(path, overwrite=True)
    return path


def _run_expecting(mini, tmp_path, message, **overrides):
    from recipes.steps import lsf

    _, frames, _ = mini
    frames = {**frames, **{k: v for k, v in overrides.items() if k.isupper()}}
    params = lsf.RECIPE.validate({k: v for k, v in overrides.items() if not k.isupper()})
    with pytest.raises(RecipeError, match=message) as info:
        lsf.RECIPE.run(frames, params, tmp_path)
    assert "\n" not in str(info.value)


def _refused_at_validation(message, **params):
    from recipes.steps import lsf

    with pytest.raises(ValueError, match=message) as info:
        lsf.RECIPE.validate(params)
    assert "\n" not in str(info.value)


def test_empty_catalogue_fails_at_once(mini, tmp_path):
    cat = _catalog_file(tmp_path / "empty.fits", [], [], [])
    _run_expecting(mini, tmp_path, "empty", LINE_CATALOG=[cat])


def test_no_line_in_range_fails(mini, tmp_path):
    cat = _catalog_file(tmp_path / "blue.fits", [4800.0, 4900.0, 5000.0], ["NeI", "XeI", "HgI"], [5, 5, 5])
    _run_expecting(mini, tmp_path, "no isolated line of quality >= 3", LINE_CATALOG=[cat])


def test_lamp_without_catalogue_lines_fails(mini, tmp_path):
    cat = _catalog_file(tmp_path / "neon.fits", [6402.0], ["NeI"], [5])
    _run_expecting(mini, tmp_path, r"no lines of lamp (Xe|HgCd)", LINE_CATALOG=[cat])


def test_wrong_catalogue_version_fails(mini, tmp_path):
    cat = _catalog_file(tmp_path / "v2.fits", [6402.0], ["NeI"], [5], version=2)
    _run_expecting(mini, tmp_path, "VERSION", LINE_CATALOG=[cat])


def test_missing_calibration_and_unsupported_options(mini, tmp_path):
    _run_expecting(mini, tmp_path, "needs a WAVECAL_TABLE", WAVECAL_TABLE=[])
    _refused_at_validation("hermit is not implemented", method="hermit")
    _refused_at_validation("save_subtracted", save_subtracted=True)
    _refused_at_validation("lsf_regression_window .* must be smaller than lsf_range", lsf_regression_window=8.0)


def test_unknown_lamp_fails(mini, tmp_path):
    _, frames, _ = mini
    src = frames["ARC"][0]
    with fits.open(src) as hdul:
        header = hdul[0].header
        lit = [i for i in range(1, 10) if header.get(f"ESO INS LAMP{i} ST") is True]
        header[f"ESO INS LAMP{lit[0]} NAME"] = "CU-LAMP9"  # a lamp nobody knows
        hdul.writeto(tmp_path / "odd.fits")
    _run_expecting(mini, tmp_path, "unknown arc lamp", ARC=[tmp_path / "odd.fits", *frames["ARC"][1:]])
