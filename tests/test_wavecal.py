"""Wavelength calibration (recipes.algorithms.wavesolution, linematch, wavefit, recipes.kernels.arclines) on
synthetic arcs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy.special import ndtr

from recipes.base import RecipeError
from recipes.kernels.arclines import fit_lines_across, fit_peaks, gauss_fit, gauss_fit_reference
from recipes.algorithms.tracing import Trace
from recipes.algorithms.linecatalog import LineCatalog
from recipes.algorithms.linematch import centre_spectrum, detect_lines, identify
from recipes.algorithms.wavefit import fit_2d
from recipes.algorithms.wavesolution import WaveParams, calibrate_slice, evaluate_2d, line_fwhm_angstrom

NY = 1100
SLICE_WIDTH = 30.0
NSLICE = 4
LSF_SIGMA_A = 1.1  # Å, Gaussian LSF (FWHM 2.6 Å)


# --------------------------------------------------------------------------------------
# Synthetic data


def make_catalog(seed: int = 11, lo: float = 5800.0, hi: float = 7300.0) -> LineCatalog:
    """Three lamps of random lines: Ne ~45, Xe ~30, HgCd ~12, a few blends and faint lines."""
    rng = np.random.default_rng(seed)
    rows = []
    for ion, n in (("NeI", 45), ("XeI", 30), ("HgI", 8), ("CdI", 4)):
        lam = np.sort(rng.uniform(lo, hi, n))
        lam = lam[np.concatenate(([True], np.diff(lam) > 9.0))]  # isolated lines
        flux = 10 ** rng.uniform(3.3, 4.8, lam.size)
        for lm, fl in zip(lam, flux):
            rows.append((lm, fl, ion, 3))
        # One close pair (a multiplet member, quality 2) per ion.
        rows.append((lam[len(lam) // 2] + 3.0, flux[len(lam) // 2] * 0.5, ion, 2))
        # A line too faint to be detected, flagged for pattern matching only.
        rows.append((rng.uniform(lo, hi), 20.0, ion, 1))
    rows.sort()
    lam, flux, ion, quality = zip(*rows)
    return LineCatalog(np.array(lam), np.array(flux), np.array(ion), np.array(quality))


def truth_wavelength(slice_index: int, x1: np.ndarray, y1: np.ndarray, shift: float = 0.0, stretch: float = 1.0) -> np.ndarray:
    """λ(x, y) (Å) of slice ``slice_index``, 1-based coordinates: curved lines, cubic dispersion."""
    xc = 20.0 + slice_index * (SLICE_WIDTH + 6.0) + SLICE_WIDTH / 2
    u = (x1 - xc) / (SLICE_WIDTH / 2)
    t = (y1 - 550.0) / 550.0
    lam0 = 5830.0 + 4.0 * slice_index + shift
    return lam0 + stretch * (1.25 * (y1 - 1) + 6.0 * t**2 - 2.0 * t**3) + 0.8 * u + 0.6 * u**2 + 0.2 * u * t


def slice_edges(slice_index: int) -> tuple[float, float]:
    left = 20.0 + slice_index * (SLICE_WIDTH + 6.0)
    return left, left + SLICE_WIDTH


def make_trace() -> Trace:
    """Straight vertical slices (1-based coefficients, order 1)."""
    left = np.array([[slice_edges(s)[0], 0.0] for s in range(NSLICE)])
    right = np.array([[slice_edges(s)[1], 0.0] for s in range(NSLICE)])
    return Trace(
        centre=0.5 * (left + right), left=left, right=right, mse=np.zeros((NSLICE, 3)),
        width=np.full(NSLICE, SLICE_WIDTH), samples=None,  # type: ignore[arg-type]
    )


def render_arc(
    catalog: LineCatalog, lamp: str, seed: int, shift: float = 0.0, stretch: float = 1.0, noise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Arc image (count) of one lamp with pixel-integrated Gaussian lines, and its variance."""
    rng = np.random.default_rng(seed)
    nx = int(slice_edges(NSLICE - 1)[1]) + 20
    image = np.zeros((NY, nx))
    y1 = np.arange(NY)[:, None] + 1.0
    lines = catalog.for_lamp(lamp)
    for s in range(NSLICE):
        lo, hi = slice_edges(s)
        cols = np.arange(int(np.ceil(lo)), int(hi))  # 0-based columns inside
        x1 = cols[None, :] + 1.0
        lam_lo = truth_wavelength(s, x1, y1 - 0.5, shift, stretch)
        lam_hi = truth_wavelength(s, x1, y1 + 0.5, shift, stretch)
        block = np.zeros((NY, cols.size))
        for lam, flux in zip(lines.lam, lines.flux):
            block += flux * (ndtr((lam_hi - lam) / LSF_SIGMA_A) - ndtr((lam_lo - lam) / LSF_SIGMA_A))
        image[:, cols] = block + 5.0  # a faint continuum
    var = image + 3.0**2
    if noise:
        image = rng.poisson(image).astype(float) + rng.normal(0, 3.0, image.shape)
    return image, var


@pytest.fixture(scope="module")
def catalog() -> LineCatalog:
    return make_catalog()


@pytest.fixture(scope="module")
def arcs(catalog: LineCatalog):
    return {lamp: render_arc(catalog, lamp, seed) for seed, lamp in enumerate(("Ne", "Xe", "HgCd"))}


def lamp_catalogs(catalog: LineCatalog) -> dict[str, LineCatalog]:
    return {lamp: catalog.for_lamp(lamp) for lamp in ("Ne", "Xe", "HgCd")}


def check_solution(solution, slice_index: int, shift: float = 0.0, stretch: float = 1.0) -> tuple[float, float]:
    """RMS and max |λ_fit - λ_true| (Å) over the slice pixels, rows 20..NY-20."""
    lo, hi = slice_edges(slice_index)
    x1 = np.arange(int(np.ceil(lo)), int(hi))[None, :] + 1.0
    y1 = np.arange(20, NY - 20)[:, None] + 1.0
    err = solution.wavelength(x1, y1) - truth_wavelength(slice_index, x1, y1, shift, stretch)
    return float(np.sqrt(np.mean(err**2))), float(np.abs(err).max())


# --------------------------------------------------------------------------------------
# Kernels


def test_gauss_fit_matches_reference_and_truth() -> None:
    rng = np.random.default_rng(0)
    i = np.arange(40.0)
    for _ in range(30):
        mu, sig, flux = rng.uniform(18, 22), rng.uniform(0.6, 1.2), rng.uniform(500, 50000)
        model = 20 + flux * (ndtr((i + 0.5 - mu) / sig) - ndtr((i - 0.5 - mu) / sig))
        var = model + 9
        data = model + rng.normal(0, np.sqrt(var))
        guess = mu + rng.uniform(-1, 1)
        fast = gauss_fit(data, var, guess, 5, 0.9)
        slow = gauss_fit_reference(data, var, guess, 5, 0.9)
        assert np.allclose(fast, slow, rtol=1e-6, atol=1e-6)
        assert abs(fast[0] - mu) < 5 * fast[1]


def test_fit_peaks_is_gauss_fit_for_each_guess() -> None:
    rng = np.random.default_rng(4)
    i = np.arange(200.0)
    centres = np.array([30.3, 71.8, 120.1, 160.6])
    model = 15 + sum(f * (ndtr((i + 0.5 - c) / 0.85) - ndtr((i - 0.5 - c) / 0.85)) for c, f in zip(centres, (900, 4000, 300, 20)))
    data = model + rng.normal(0, np.sqrt(model + 9))
    guesses = np.array([30.0, 72.0, 120.0, 161.0, 3.0, 100.0])
    fits = fit_peaks(data, model + 9, guesses, 5, 0.9)
    for k, g in enumerate(guesses):
        assert np.allclose(fits[k], gauss_fit_reference(data, model + 9, g, 5, 0.9), rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.isfinite(fits[:3, 0]).all() and np.isnan(fits[3:, 0]).all()  # 20 count < MIN_FLUX, no line, edge


def test_gauss_fit_limits() -> None:
    i = np.arange(40.0)
    wide = 1000 * (ndtr((i + 0.5 - 20) / 3.0) - ndtr((i - 0.5 - 20) / 3.0))  # FWHM 7 px
    faint = 30 * (ndtr((i + 0.5 - 20) / 0.9) - ndtr((i - 0.5 - 20) / 0.9))  # flux 30 < 50
    for data in (wide, faint):
        assert np.isnan(gauss_fit(data, np.ones(40), 20.0, 5, 0.9)[0])
        assert np.isnan(gauss_fit_reference(data, np.ones(40), 20.0, 5, 0.9)[0])
    assert np.isnan(gauss_fit(wide, np.ones(40), 2.0, 5, 0.9)[0])  # window off the array


def test_fit_lines_across_follows_curved_lines() -> None:
    ny, ncol = 60, 25
    cols = np.arange(ncol)
    centre = 30.0 + 0.01 * (cols - 12) ** 2  # a line bowed by 1.4 px
    rows = np.arange(ny)[:, None]
    image = 5000 * (ndtr((rows + 0.5 - centre) / 0.9) - ndtr((rows - 0.5 - centre) / 0.9)) + 10
    fits = fit_lines_across(image, image + 9, cols, 12, np.array([30.2]), 5, 0.9)
    assert np.allclose(fits[0, :, 0], centre, atol=1e-6)
    for k in (0, 12, 24):
        assert np.allclose(fits[0, k], gauss_fit_reference(image[:, k], image[:, k] + 9, fits[0, k, 0], 5, 0.9), rtol=1e-5)


# --------------------------------------------------------------------------------------
# Algorithm pieces


def test_fit_2d_recovers_polynomial_in_absolute_coordinates() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(3000, 3030, 2000)
    y = rng.uniform(1, 4112, 2000)
    wlc = np.zeros((3, 7))
    wlc[0, :4] = [4200.0, 1.25, 2e-6, -1e-10]
    wlc[1, 0], wlc[2, 0] = 0.05, 1e-4
    lam = evaluate_2d(wlc, x, y)
    lam[:10] += 5.0  # outliers
    fitted, kept, rms, log = fit_2d(x, y, lam, np.ones_like(x), 2, 6, 3.0)
    assert not kept[:10].any() and kept[10:].all()
    assert rms < 1e-8
    assert np.abs(evaluate_2d(fitted, x, y) - evaluate_2d(wlc, x, y)).max() < 1e-6
    assert len(log) >= 2 and log[0][0] == 1


def test_detect_and_identify_on_a_centre_spectrum(catalog: LineCatalog, arcs) -> None:
    image, var = arcs["Ne"]
    ne = catalog.for_lamp("Ne")
    col = 35  # inside slice 1
    det = detect_lines(image[:, col], var[:, col], 1.0)
    match, coef = identify(det[:, 0] + 1.0, ne.lam, WaveParams())
    ok = match >= 0
    truth = truth_wavelength(0, col + 1.0, det[:, 0] + 1.0)
    # Every identification is right (the nearest catalogue line to the true λ).
    assert np.all(np.abs(ne.lam[match[ok]] - truth[ok]) < 0.5)
    bright = ne.lam[(ne.flux > 1000) & (ne.lam > truth.min()) & (ne.lam < truth.max())]
    assert ok.sum() >= 0.9 * bright.size


@pytest.mark.parametrize("shift, stretch", [(0.0, 1.0), (20.0, 1.0), (-20.0, 1.0), (0.0, 1.03), (0.0, 0.97)])
def test_identification_survives_first_guess_errors(catalog: LineCatalog, shift: float, stretch: float) -> None:
    ne = catalog.for_lamp("Ne")
    image, var = render_arc(catalog, "Ne", 7, shift=shift, stretch=stretch)
    col = 35
    det = detect_lines(image[:, col], var[:, col], 1.0)
    match, _ = identify(det[:, 0] + 1.0, ne.lam, WaveParams())
    ok = match >= 0
    truth = truth_wavelength(0, col + 1.0, det[:, 0] + 1.0, shift, stretch)
    assert ok.sum() >= 15
    assert np.all(np.abs(ne.lam[match[ok]] - truth[ok]) < 0.5)


def test_slice_solution_matches_truth(catalog: LineCatalog, arcs) -> None:
    trace = make_trace()
    cats = lamp_catalogs(catalog)
    for s in range(NSLICE):
        sol = calibrate_slice(arcs, cats, trace, s, WaveParams())
        rms, worst = check_solution(sol, s)
        assert rms < 0.01, f"slice {s + 1}: rms {rms:.4f} Å"
        assert worst < 0.05, f"slice {s + 1}: max {worst:.4f} Å"
        assert sol.rms < 0.05
        # ≥ 90 % of the detectable catalogue lines of the slice are identified: bright
        # (> 1000 count) and resolved (no other line of the lamp within 2 FWHM).
        lam_range = truth_wavelength(s, np.array([slice_edges(s)[0] + 15]), np.array([10.0, NY - 10.0]))
        n_expected = sum(
            sum(
                1
                for lam, flux in zip(c.lam, c.flux)
                if lam_range[0] < lam < lam_range[1] and flux > 1000 and (np.abs(c.lam - lam) < 5.2).sum() == 1
            )
            for c in cats.values()
        )
        assert sol.nid >= 0.9 * n_expected
        assert sol.wlc.shape == (3, 7)
        fwhm = line_fwhm_angstrom(sol)
        assert np.median(fwhm) == pytest.approx(LSF_SIGMA_A * 2.3548, rel=0.03)


def test_a_dead_column_through_the_slice_centre_is_left_out(catalog: LineCatalog, arcs) -> None:
    """A flagged column (infinite variance, as fit_inputs gives it) among the centre
    columns must cost signal-to-noise only: it once made every row's variance infinite and
    the whole slice lineless (demo --seed 1)."""
    trace = make_trace()
    cats = lamp_catalogs(catalog)
    left, right = slice_edges(1)
    dead = int(0.5 * (left + right))  # 0-based column at the slice centre
    flagged = {}
    for lamp, (image, var) in arcs.items():
        image, var = image.copy(), var.copy()
        image[:, dead], var[:, dead] = 0.0, np.inf
        flagged[lamp] = (image, var)
    spec, svar = centre_spectrum(*flagged["Ne"], trace, 1)
    clean, _ = centre_spectrum(*arcs["Ne"], trace, 1)
    assert np.all(np.isfinite(svar)) and np.corrcoef(spec, clean)[0, 1] > 0.99
    sol = calibrate_slice(flagged, cats, trace, 1, WaveParams())
    rms, worst = check_solution(sol, 1)
    assert rms < 0.01 and worst < 0.05


def test_unknown_lamp_or_empty_catalogue_fail_at_once(catalog: LineCatalog) -> None:
    with pytest.raises(RecipeError, match="unknown arc lamp 'Ar'"):
        catalog.for_lamp("Ar")
    empty = LineCatalog(np.zeros(0), np.zeros(0), np.zeros(0, dtype=str), np.zeros(0, dtype=int))
    with pytest.raises(RecipeError, match="no usable lines"):
        empty.for_lamp("Ne")


def test_a_slice_without_lines_is_a_clear_error(catalog: LineCatalog) -> None:
    flat = np.full((NY, 200), 100.0)
    with pytest.raises(RecipeError, match="slice 1: no lamp.s arc lines match LINE_CATALOG"):
        calibrate_slice({"Ne": (flat, flat.copy())}, lamp_catalogs(catalog), make_trace(), 0, WaveParams())


# --------------------------------------------------------------------------------------
# muse_wavecal on the simulator's mini profile, against its truth


def simulated_calibrations(tmp_path_factory) -> tuple[Path, Path]:
    """Mini-profile BIAS/FLAT/ARC frames (1 IFU) and their MASTER_BIAS, made once per session.

    Returns (simulation folder, MASTER_BIAS path). Same cache as tests/test_flat.py.
    """
    from musered.simulate.run import simulate
    from recipes.steps import bias

    base = tmp_path_factory.getbasetemp() / "spectral-mini"
    if not (base / "truth" / "truth.json").exists():
        simulate(base, profile="mini", kinds={"BIAS", "FLAT", "ARC"}, exposures=0, ifus=1)
    master_bias = base / "bias" / "MASTER_BIAS.fits"
    if not master_bias.exists():
        (base / "bias").mkdir(exist_ok=True)
        bias.RECIPE.run({"BIAS": raw_of(base, "BIAS")}, bias.RECIPE.validate(), base / "bias")
    return base, master_bias


def raw_of(base: Path, dpr_type: str) -> list[Path]:
    return [p for p in sorted((base / "raw").glob("*.fits")) if fits.getheader(p)["HIERARCH ESO DPR TYPE"] == dpr_type]


def truth_trace_table(base: Path, path: Path) -> Path:
    """A TRACE_TABLE made from the simulator's true slice edges (wavecal tested on its own)."""
    from musered.simulate.truth import load_truth
    from recipes.algorithms.calibtables import trace_table
    from recipes.io import ProductWriter

    slices = load_truth(base).slices(1)
    left = np.array([s.left for s in slices])
    right = np.array([s.right for s in slices])
    trace = Trace(
        centre=0.5 * (left + right), left=left, right=right, mse=np.zeros((48, 3)),
        width=np.array([np.polyval(s.right[::-1], 400) - np.polyval(s.left[::-1], 400) for s in slices]),
        samples=None,  # type: ignore[arg-type]
    )
    header = fits.Header()
    header["HIERARCH ESO PRO CATG"] = "TRACE_TABLE"
    ProductWriter(path, header).add_table(1, trace_table(trace))
    return path


@pytest.fixture(scope="module")
def wavecal_run(tmp_path_factory):
    from recipes.steps.wavecal import RECIPE

    base, master_bias = simulated_calibrations(tmp_path_factory)
    out = tmp_path_factory.mktemp("wavecal")
    frames = {
        "ARC": raw_of(base, "WAVE"),
        "MASTER_BIAS": [master_bias],
        "TRACE_TABLE": [truth_trace_table(base, out / "TRACE_TABLE_truth.fits")],
        "LINE_CATALOG": [base / "muse-calib" / "line_catalog.fits"],
        "BADPIX_TABLE": [base / "muse-calib" / "badpix_table.fits"],
    }
    run_dir = out / "run"
    run_dir.mkdir()
    products = RECIPE.run(frames, RECIPE.validate({"residuals": True, "saveimages": True}), run_dir)
    return base, frames, products


def solution_errors(base: Path, wlc_of, shift_rows: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per slice RMS and max |λ - truth| (Å) over the pixels inside the true slice edges."""
    from musered.simulate.truth import load_truth
    from recipes.algorithms.instrument import polyval_y, wavecal_eval

    truth = load_truth(base)
    ny, nx = truth.data["trimmed_shape"]
    rms, worst = [], []
    for s, geom in enumerate(truth.slices(1)):
        wlc = wlc_of(s)
        if wlc is None:
            continue
        y = np.arange(1, ny + 1, dtype=float)[:, None]
        x = np.arange(1, nx + 1, dtype=float)[None, :]
        inside = (x >= polyval_y(geom.left, y) + 0.5) & (x <= polyval_y(geom.right, y) - 0.5)
        yy, xx = np.broadcast_to(y, inside.shape)[inside], np.broadcast_to(x, inside.shape)[inside]
        err = evaluate_2d(wlc, xx, yy) - wavecal_eval(geom.wlc, xx, yy - shift_rows)
        rms.append(np.sqrt(np.mean(err**2)))
        worst.append(np.abs(err).max())
    return np.array(rms), np.array(worst)


def test_wavecal_recipe_declaration_follows_the_drs() -> None:
    from recipes.registry import get_recipe

    recipe = get_recipe("muse_wavecal")
    # The parameters of `esorex --params muse_wavecal` (DRS 2.8.7), in the same order.
    assert [p.name for p in recipe.params] == [
        "nifu", "overscan", "ovscreject", "ovscsigma", "ovscignore", "combine", "lampwise", "sigma", "dres",
        "tolerance", "xorder", "yorder", "linesigma", "residuals", "fitsigma", "fitweighting", "saveimages",
        "resample", "wavemap", "merge",
    ]  # fmt: skip
    d = recipe.defaults()
    assert (d["xorder"], d["yorder"], d["sigma"], d["dres"], d["tolerance"]) == (2, 6, 1.0, 0.05, 0.1)
    assert (d["linesigma"], d["fitsigma"], d["fitweighting"], d["lampwise"]) == (-1.0, -1.0, "cerrscatter", True)
    assert set(recipe.required_calibs) == {"MASTER_BIAS", "TRACE_TABLE", "LINE_CATALOG"}
    with pytest.raises(ValueError, match="fitweighting"):
        recipe.validate({"fitweighting": "bogus"})


def test_wavelengths_match_simulated_truth(wavecal_run) -> None:
    from musered.simulate.truth import load_truth
    from recipes.io import read_table_product
    from recipes.algorithms.linecatalog import read_line_catalog

    base, frames, products = wavecal_run
    assert [p.tag for p in products] == ["WAVECAL_TABLE", "WAVECAL_RESIDUALS"] + ["ARC_RED_LAMP"] * 3
    table, header = read_table_product(products[0].path, 1)
    names = ["SliceNo"] + [f"wlc{i}{j}" for i in range(3) for j in range(7)] + ["MSE"]
    assert table.colnames == names and len(table) == 48
    rms, worst = solution_errors(base, lambda s: np.array([[table[f"wlc{i}{j}"][s] for j in range(7)] for i in range(3)]))
    assert rms.size == 48
    assert np.sqrt(np.mean(rms**2)) < 0.01
    assert worst.max() < 0.05
    # ≥ 90 % of the catalogue lines (quality ≥ 1) inside each slice's range are identified.
    catalog = read_line_catalog(frames["LINE_CATALOG"][0])
    truth = load_truth(base)
    ny = truth.data["trimmed_shape"][0]
    for s, geom in enumerate(truth.slices(1)):
        j = s + 1
        xc = np.polyval(geom.centre[::-1], [6.0, ny - 5.0])
        lo, hi = geom.wavelength(xc, np.array([6.0, ny - 5.0]))
        expected = ((catalog.lam > lo) & (catalog.lam < hi) & (catalog.quality >= 1)).sum()
        assert header[f"HIERARCH ESO QC WAVECAL SLICE{j} LINES NID"] >= 0.9 * expected
        assert header[f"HIERARCH ESO QC WAVECAL SLICE{j} FIT RMS"] < 0.05
        fwhm = header[f"HIERARCH ESO QC WAVECAL SLICE{j} LINES FWHM MEAN"]
        assert fwhm == pytest.approx(geom.lsf_fwhm(header[f"HIERARCH ESO QC WAVECAL SLICE{j} WLEN"]), rel=0.03)
    resid, _ = read_table_product(products[1].path, 1)
    assert resid.colnames == ["slice", "iteration", "x", "y", "lambda", "residual", "rejlimit"]
    assert set(np.unique(resid["slice"])) == set(range(1, 49))


@pytest.mark.parametrize("shift_rows, dispersion", [(16, 1.25), (-16, 1.25), (0, 1.25 * 1.03), (0, 1.25 * 0.97)])
def test_solution_survives_first_guess_errors(wavecal_run, shift_rows: int, dispersion: float) -> None:
    """λ0 ± 20 Å (the arcs moved by ∓16 rows) and a dispersion first guess off by ± 3 %."""
    from recipes.algorithms.calibtables import trace_from_table
    from recipes.io import read_image_product, read_table_product
    from recipes.algorithms.arcs import fit_inputs
    from recipes.algorithms.linecatalog import read_line_catalog

    base, frames, products = wavecal_run
    catalog = read_line_catalog(frames["LINE_CATALOG"][0])
    trace = trace_from_table(read_table_product(frames["TRACE_TABLE"][0], 1)[0], "TRACE_TABLE")
    arcs, cats = {}, {}
    for p in products[2:]:
        lamp = p.path.stem.split("-")[1]
        data, var = fit_inputs(read_image_product(p.path, 1))
        data, var = np.roll(data, shift_rows, axis=0), np.roll(var, shift_rows, axis=0)
        if shift_rows > 0:
            var[:shift_rows] = np.inf
        elif shift_rows < 0:
            var[shift_rows:] = np.inf
        arcs[lamp], cats[lamp] = (data, var), catalog.for_lamp(lamp)
    solutions = {s: calibrate_slice(arcs, cats, trace, s, WaveParams(dispersion=dispersion)) for s in (0, 23, 47)}
    rms, worst = solution_errors(base, lambda s: solutions[s].wlc if s in solutions else None, shift_rows)
    assert rms.max() < 0.01 and worst.max() < 0.1


def test_unknown_lamp_or_empty_catalogue_fail_before_reading_pixels(wavecal_run, tmp_path) -> None:
    import shutil

    from recipes.steps.wavecal import RECIPE

    _, frames, _ = wavecal_run
    odd = tmp_path / "odd_arc.fits"
    shutil.copy(frames["ARC"][0], odd)
    header = fits.getheader(odd)
    lit = [i for i in range(1, 10) if header.get(f"HIERARCH ESO INS LAMP{i} ST")][0]
    fits.setval(odd, f"HIERARCH ESO INS LAMP{lit} NAME", value="CU-LAMP9")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RecipeError, match="unknown arc lamp 'CU-LAMP9'"):
        RECIPE.run({**frames, "ARC": [odd]}, RECIPE.validate(), out)
    empty = tmp_path / "empty_catalog.fits"
    cols = [fits.Column("lambda", "E", array=np.zeros(0, np.float32)), fits.Column("flux", "E", array=np.zeros(0, np.float32)),
            fits.Column("ion", "20A", array=np.zeros(0, "U20")), fits.Column("quality", "J", array=np.zeros(0, np.int32))]
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"VERSION": 3})), fits.BinTableHDU.from_columns(cols)]).writeto(empty)
    with pytest.raises(RecipeError, match="LINE_CATALOG is empty"):
        RECIPE.run({**frames, "LINE_CATALOG": [empty]}, RECIPE.validate(), out)
    neon_only = tmp_path / "neon_catalog.fits"
    cols = [fits.Column("lambda", "E", array=np.array([6402.2, 6506.5], np.float32)),
            fits.Column("flux", "E", array=np.ones(2, np.float32)),
            fits.Column("ion", "20A", array=np.array(["NeI", "NeI"])), fits.Column("quality", "J", array=np.array([5, 5]))]
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"VERSION": 3})), fits.BinTableHDU.from_columns(cols)]).writeto(neon_only)
    with pytest.raises(RecipeError, match="no usable lines .* for lamp Xe"):
        RECIPE.run({**frames, "LINE_CATALOG": [neon_only]}, RECIPE.validate(), out)
    assert not list(out.iterdir())
