"""Flux calibration: the standard-star response, telluric correction and their tables.

Pure functions shared by muse_standard (which derives STD_RESPONSE and STD_TELLURIC) and
muse_scipost (which applies them, :func:`apply_response`), and the reading and writing of
those two tables (formats: recipes.md §4.9); the static inputs (STD_FLUX_TABLE,
EXTINCT_TABLE, TELLURIC_REGIONS) are read by :mod:`recipes.algorithms.fluxcal_tables`.

Conventions
-----------
Wavelengths in Å (air), arrays 0-based, tables written with DRS column names.

*Response* (the DRS unit string ``2.5*log10((count/s/Angstrom)/(erg/s/cm**2/Angstrom))``)::

    R(λ) = 2.5 log10( C(λ) / (EXPTIME · 1.25 Å) · 10**(0.4 k(λ) X) / F_ref(λ) )

with C the star's counts per CCD pixel along λ (the cube plane sum, flat-field spectrum
applied), 1.25 Å the nominal MUSE sampling the DRS divides by, k the extinction
[mag/airmass], X the airmass and F_ref the tabulated flux [erg/s/cm²/Å]. So
``10**(0.4 R)`` is the detected count/s/Å per erg/s/cm²/Å above the atmosphere, and
:func:`apply_response` inverts exactly this (result in 1e-20 erg/s/cm²/Å).

*Telluric correction* ``ftelluric`` ≤ 1: inside each telluric band, observed over
interpolated response (assumes a smooth stellar spectrum), 1 outside the bands. As the DRS
writes it, it is normalised to airmass 1: the band's optical depth is taken to scale
as X**0.58 (saturated molecular bands grow slower than linearly), so
``ftelluric = T_obs ** (1 / X**0.58)`` and :func:`telluric_at_airmass` gives T at X.

*Throughput* (QC): ``10**(0.4 R) · h c / λ / A_VLT`` with A_VLT = 483250.7 cm².
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.algorithms.fluxcal_tables import ReferenceSpectrum, sorted_columns

#: kMuseSpectralSamplingA: the pixel width in λ [Å] the DRS flux calibration divides by.
SPECTRAL_SAMPLING = 1.25
#: Most extreme wavelengths on a MUSE CCD [Å]: the response is extrapolated to these.
LAMBDA_MIN_EXTREME, LAMBDA_MAX_EXTREME = 4150.0, 9800.0
#: Exponent of the airmass dependence of the telluric optical depth.
TELLURIC_AIRMASS_EXPONENT = 0.58
VLT_AREA_CM2 = 483250.7
H_CGS, C_CGS = 6.62607015e-27, 2.99792458e10
RESPONSE_UNIT = "2.5*log10((count/s/Angstrom)/(erg/s/cm**2/Angstrom))"

#: Built-in telluric bands [Å]: (lmin, lmax, bgmin, bgmax) — the absorbed range and the
#: range whose outer parts (outside [lmin, lmax]) anchor the interpolation: O2 γ, O2 B,
#: H2O, O2 A, H2O, H2O. Same columns as a TELLURIC_REGIONS table.
DEFAULT_TELLURIC_REGIONS = np.array([
    [6273.90, 6320.10, 6213.00, 6380.00],
    [6864.00, 6967.65, 6830.00, 7000.00],
    [7168.00, 7325.00, 7100.00, 7400.00],
    [7590.00, 7710.00, 7550.00, 7750.00],
    [8105.00, 8390.00, 8050.00, 8450.00],
    [8915.00, 9810.00, 8850.00, 9850.00],
])  # fmt: skip

#: Smoothing scales of the DRS [Å]: ppoly pieces (fit over 2× this) and the half-width
#: of the median and sliding-mean filters.
PPOLY_PIECE = 150.0
SMOOTH_HALFWIDTH = 15.0


# --------------------------------------------------------------------------------------
# response
# --------------------------------------------------------------------------------------


def sensitivity(
    lam, counts, variance, exptime: float, airmass: float,
    extinction: tuple[np.ndarray, np.ndarray], reference: ReferenceSpectrum,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Unsmoothed response R [mag] and its error at ``lam`` (formula in the module doc).

    ``counts``/``variance``: the star's counts per CCD pixel and their variance per
    wavelength. Non-positive or non-finite values give NaN. RecipeError when the reference
    table does not cover ``lam`` (with a 5 Å tolerance at each end).
    """
    lam = np.asarray(lam, dtype=np.float64)
    lo, hi = float(reference.lam[0]), float(reference.lam[-1])
    if lo > lam.min() + 5.0 or hi < lam.max() - 5.0:
        raise RecipeError(f"STD_FLUX_TABLE {reference.name} covers {lo:.0f}-{hi:.0f} Angstrom, "
                          f"not the data range {lam.min():.0f}-{lam.max():.0f}")  # fmt: skip
    if exptime <= 0:
        raise RecipeError(f"EXPTIME {exptime} must be positive")
    ref, referr = reference.at(np.clip(lam, lo, hi))
    k = np.interp(lam, extinction[0], extinction[1])
    rate = np.asarray(counts, dtype=np.float64) / (exptime * SPECTRAL_SAMPLING) * 10.0 ** (0.4 * k * airmass)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = rate / ref
        resp = np.where((ratio > 0) & np.isfinite(ratio), 2.5 * np.log10(ratio), np.nan)
        rel = np.sqrt(np.asarray(variance, dtype=np.float64)) / np.abs(np.asarray(counts, dtype=np.float64))
        rel = np.hypot(rel, referr / ref)
    err = 2.5 / np.log(10.0) * rel
    return resp, np.where(np.isfinite(resp), err, np.nan)


def _linear_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted straight line (coefficients for np.polyval); a constant for < 2 points."""
    if x.size >= 2 and np.ptp(x) > 0:
        return np.polyfit(x, y, 1, w=np.sqrt(w))
    return np.array([0.0, float(np.average(y, weights=w)) if x.size else np.nan])


def telluric_correction(
    lam, response, resperr, regions: np.ndarray, airmass: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Interpolate the response across telluric bands and measure the absorption.

    For each band (lmin, lmax, bgmin, bgmax) overlapping ``lam``, a straight line is
    fitted (weights 1/err²) to the response in [bgmin, lmin) and (lmax, bgmax] and
    replaces it inside [lmin, lmax]. Returns (response with the bands interpolated,
    its error, ``ftelluric`` normalised to airmass 1 (≤ 1; 1 outside the bands) and its
    error). Bands without anchor points on either side are left as observed
    (ftelluric 1), as the DRS skips regions it cannot fit.
    """
    lam = np.asarray(lam, dtype=np.float64)
    resp = np.array(response, dtype=np.float64)
    err = np.array(resperr, dtype=np.float64)
    ftell = np.ones_like(resp)
    ftellerr = np.zeros_like(resp)
    valid = np.isfinite(resp) & np.isfinite(err) & (err > 0)
    for lmin, lmax, bgmin, bgmax in np.asarray(regions, dtype=np.float64).reshape(-1, 4):
        inband = (lam >= lmin) & (lam <= lmax)
        if not inband.any():
            continue
        anchors = valid & (((lam >= bgmin) & (lam < lmin)) | ((lam > lmax) & (lam <= bgmax)))
        if anchors.sum() < 3:
            continue
        coef = _linear_fit(lam[anchors], resp[anchors], 1.0 / err[anchors] ** 2)
        smooth = np.polyval(coef, lam[inband])
        scatter = float(np.std(resp[anchors] - np.polyval(coef, lam[anchors]))) / np.sqrt(anchors.sum())
        observed = resp[inband]
        with np.errstate(invalid="ignore", over="ignore"):
            t_obs = np.where(np.isfinite(observed), 10.0 ** (0.4 * (observed - smooth)), 1.0)
        t_obs = np.clip(t_obs, 1e-6, 1.0)
        t1 = t_obs ** (1.0 / max(airmass, 1e-6) ** TELLURIC_AIRMASS_EXPONENT)
        ftell[inband] = t1
        ftellerr[inband] = np.log(10.0) / 2.5 * t1 * np.hypot(np.nan_to_num(err[inband]), scatter)
        resp[inband] = smooth
        err[inband] = np.hypot(scatter, np.nanmedian(err[anchors]))
    return resp, err, ftell, ftellerr


def telluric_at_airmass(ftelluric, airmass: float) -> np.ndarray:
    """Telluric transmission at ``airmass`` from ``ftelluric`` (normalised to airmass 1)."""
    return np.asarray(ftelluric, dtype=np.float64) ** (max(airmass, 0.0) ** TELLURIC_AIRMASS_EXPONENT)


def fill_gaps(lam, response, resperr) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation over non-finite response values (their error: the largest
    finite one). RecipeError when fewer than 2 finite values remain."""
    lam = np.asarray(lam, dtype=np.float64)
    good = np.isfinite(response) & np.isfinite(resperr)
    if good.sum() < 2:
        raise RecipeError("the standard star's spectrum has fewer than 2 usable wavelengths")
    resp = np.interp(lam, lam[good], np.asarray(response)[good])
    err = np.where(good, resperr, np.nanmax(np.asarray(resperr)[good]))
    return resp, err


def extrapolate(
    lam, response, resperr, lmin: float = LAMBDA_MIN_EXTREME, lmax: float = LAMBDA_MAX_EXTREME,
    width: float = PPOLY_PIECE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Extend the response linearly to [lmin, lmax] at the same step.

    Each end gets the weighted straight line through the last ``width`` Å of data; the
    error of an extrapolated point grows with the distance as the line's error does.
    Returns (lambda, response, resperr).
    """
    lam = np.asarray(lam, dtype=np.float64)
    step = float(np.median(np.diff(lam))) if lam.size > 1 else SPECTRAL_SAMPLING
    nblue = int(max(0.0, np.floor((lam[0] - lmin) / step)))
    nred = int(max(0.0, np.floor((lmax - lam[-1]) / step)))
    blue = lam[0] - step * np.arange(nblue, 0, -1)
    red = lam[-1] + step * np.arange(1, nred + 1)
    out_r, out_e = [], []
    for side, new in (("blue", blue), ("red", red)):
        if new.size == 0:
            out_r.append(np.zeros(0))
            out_e.append(np.zeros(0))
            continue
        sel = lam <= lam[0] + width if side == "blue" else lam >= lam[-1] - width
        w = 1.0 / np.maximum(np.asarray(resperr)[sel], 1e-6) ** 2
        coef = _linear_fit(lam[sel], np.asarray(response)[sel], w)
        resid = np.asarray(response)[sel] - np.polyval(coef, lam[sel])
        sigma = float(np.sqrt(np.mean(resid**2))) if resid.size else 0.0
        edge = lam[0] if side == "blue" else lam[-1]
        out_r.append(np.polyval(coef, new))
        out_e.append(np.hypot(sigma, sigma * np.abs(new - edge) / max(width, step)))
    return (np.concatenate([blue, lam, red]), np.concatenate([out_r[0], response, out_r[1]]),
            np.concatenate([out_e[0], resperr, out_e[1]]))  # fmt: skip


def _running(values: np.ndarray, halfwidth: int, how: str) -> np.ndarray:
    out = np.empty_like(values)
    n = values.size
    for i in range(n):
        window = values[max(0, i - halfwidth): min(n, i + halfwidth + 1)]
        out[i] = np.median(window) if how == "median" else np.mean(window)
    return out


def smooth_response(lam, response, resperr, method: str = "ppoly") -> tuple[np.ndarray, np.ndarray]:
    """Smooth the response as the DRS ``smooth`` parameter says.

    ``median``: running median of ±15 Å. ``ppoly``: the curve is cut into 150 Å pieces;
    each piece takes the weighted cubic fitted over the 300 Å centred on it; then a
    running mean of ±15 Å removes the steps between pieces. ``none``: unchanged. The
    error becomes the rms of (unsmoothed − smoothed) over ±150 Å combined with the
    formal error divided by √(points per window).
    """
    lam = np.asarray(lam, dtype=np.float64)
    resp = np.asarray(response, dtype=np.float64)
    err = np.asarray(resperr, dtype=np.float64)
    if method == "none":
        return resp.copy(), err.copy()
    step = float(np.median(np.diff(lam))) if lam.size > 1 else SPECTRAL_SAMPLING
    half = max(1, int(round(SMOOTH_HALFWIDTH / step)))
    if method == "median":
        smooth = _running(resp, half, "median")
        nwin = 2 * half + 1
    elif method == "ppoly":
        smooth = np.empty_like(resp)
        w = 1.0 / np.maximum(err, 1e-6) ** 2
        start = lam[0]
        while start <= lam[-1]:
            piece = (lam >= start) & (lam < start + PPOLY_PIECE)
            centre = start + PPOLY_PIECE / 2
            window = np.abs(lam - centre) <= PPOLY_PIECE
            x = (lam[window] - centre) / PPOLY_PIECE
            deg = min(3, int(window.sum()) - 1)
            coef = np.polyfit(x, resp[window], deg, w=np.sqrt(w[window]))
            smooth[piece] = np.polyval(coef, (lam[piece] - centre) / PPOLY_PIECE)
            start += PPOLY_PIECE
        smooth = _running(smooth, half, "mean")
        nwin = max(1, int(round(2 * PPOLY_PIECE / step)))
    else:
        raise RecipeError(f"unknown response smoothing {method!r} (none, median, ppoly)")
    wide = max(1, int(round(PPOLY_PIECE / step)))
    scatter = np.sqrt(_running((resp - smooth) ** 2, wide, "mean"))
    return smooth, np.hypot(err / np.sqrt(nwin), scatter / np.sqrt(nwin))


# --------------------------------------------------------------------------------------
# applying it, and QC
# --------------------------------------------------------------------------------------


def apply_response(
    lam, data, stat, exptime: float, airmass: float,
    response: tuple[np.ndarray, np.ndarray], extinction: tuple[np.ndarray, np.ndarray],
    telluric: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """count per pixel → 1e-20 erg/s/cm²/Å (new float32 arrays; formula in the module doc)::

        f = data / (EXPTIME · 1.25) / 10**(0.4 R(λ)) · 10**(0.4 k(λ) X) / T(λ, X) · 1e20

    ``response``/``extinction``/``telluric`` are (lambda, values) pairs; ``telluric``
    holds ``ftelluric`` at airmass 1 (1 outside its table), scaled to X by
    :func:`telluric_at_airmass`. The variance gets the square of the factor.
    """
    if exptime <= 0:
        raise RecipeError(f"EXPTIME {exptime} must be positive for flux calibration")
    lam = np.asarray(lam, dtype=np.float64)
    mag = np.interp(lam, response[0], response[1]) - np.interp(lam, extinction[0], extinction[1]) * airmass
    factor = 1e20 / (exptime * SPECTRAL_SAMPLING) * 10.0 ** (-0.4 * mag)
    if telluric is not None:
        t = telluric_at_airmass(np.interp(lam, telluric[0], telluric[1], left=1.0, right=1.0), airmass)
        factor /= np.where(t > 0, t, 1.0)
    f32 = factor.astype(np.float32)
    return (np.asarray(data, dtype=np.float32) * f32, np.asarray(stat, dtype=np.float32) * f32 * f32)


def throughput(lam, response) -> np.ndarray:
    """End-to-end efficiency (atmosphere excluded) from the response [mag], VLT area."""
    lam = np.asarray(lam, dtype=np.float64)
    photon_erg = H_CGS * C_CGS / (lam * 1e-8)
    return 10.0 ** (0.4 * np.asarray(response, dtype=np.float64)) * photon_erg / VLT_AREA_CM2


def qc_throughputs(lam, response, data_range: tuple[float, float]) -> dict[int, float]:
    """Mean throughput within ±100 Å of 5000, 7000, 8000 and 9000 Å, for the wavelengths
    whose whole ±100 Å window lies inside ``data_range`` (measured, not extrapolated)."""
    lam = np.asarray(lam, dtype=np.float64)
    thr = throughput(lam, response)
    out = {}
    for centre in (5000, 7000, 8000, 9000):
        if data_range[0] <= centre - 100 and centre + 100 <= data_range[1]:
            sel = np.abs(lam - centre) <= 100
            out[centre] = float(np.mean(thr[sel]))
    return out


def zeropoint_ab(lam, response, filter_lam, filter_throughput) -> float:
    """AB magnitude of a source giving 1 count/s through the filter (the instrument's
    zeropoint), from the response [mag]; NaN when the filter misses the response range."""
    lam = np.asarray(lam, dtype=np.float64)
    t = np.interp(lam, filter_lam, filter_throughput, left=0.0, right=0.0)
    if not np.any(t > 0):
        return float("nan")
    f_ab = 3631e-23 * C_CGS * 1e8 / lam**2  # erg/s/cm²/Å of a 0 mag AB source
    rate = float(np.trapezoid(10.0 ** (0.4 * np.asarray(response)) * t * f_ab, lam))
    return 2.5 * np.log10(rate) if rate > 0 else float("nan")


# --------------------------------------------------------------------------------------
# STD_RESPONSE and STD_TELLURIC
# --------------------------------------------------------------------------------------


def read_response(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STD_RESPONSE: ``lambda`` [Å], ``response`` [mag], ``resperr`` [mag] (0 when absent)."""
    lam, resp, err = sorted_columns(path, "STD_RESPONSE", ("lambda", "response"), ("resperr",))
    return lam, resp, np.zeros_like(resp) if err is None else err


def read_telluric(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STD_TELLURIC: ``lambda`` [Å], ``ftelluric`` (airmass 1), ``ftellerr`` (0 when absent)."""
    lam, ftell, err = sorted_columns(path, "STD_TELLURIC", ("lambda", "ftelluric"), ("ftellerr",))
    return lam, ftell, np.zeros_like(ftell) if err is None else err


def _write_table(path: Path, header: fits.Header, extname: str, columns: list[fits.Column]) -> Path:
    hdu = fits.BinTableHDU.from_columns(columns, name=extname)
    fits.HDUList([fits.PrimaryHDU(header=header), hdu]).writeto(path, overwrite=True, output_verify="silentfix")
    return Path(path)


def write_response(path: Path, header: fits.Header, lam, response, resperr) -> Path:
    """STD_RESPONSE: primary ``header`` + table ``lambda`` [Å], ``response``, ``resperr`` [mag]."""
    return _write_table(path, header, "STD_RESPONSE", [
        fits.Column("lambda", "D", unit="Angstrom", array=np.asarray(lam, float)),
        fits.Column("response", "D", unit=RESPONSE_UNIT, array=np.asarray(response, float)),
        fits.Column("resperr", "D", unit=RESPONSE_UNIT, array=np.asarray(resperr, float)),
    ])  # fmt: skip


def write_telluric(path: Path, header: fits.Header, lam, ftelluric, ftellerr) -> Path:
    """STD_TELLURIC: primary ``header`` + table ``lambda`` [Å], ``ftelluric``, ``ftellerr``."""
    return _write_table(path, header, "STD_TELLURIC", [
        fits.Column("lambda", "D", unit="Angstrom", array=np.asarray(lam, float)),
        fits.Column("ftelluric", "D", array=np.asarray(ftelluric, float)),
        fits.Column("ftellerr", "D", array=np.asarray(ftellerr, float)),
    ])  # fmt: skip
