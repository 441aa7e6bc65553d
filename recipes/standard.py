"""muse_standard: response curve and telluric correction from a standard star (recipes.md §3.8).

The recipe reads as its steps (one exposure per run):

1. read the exposure's PIXTABLE_STD tables (one per IFU), check they share the exposure
   and the instrument mode, multiply each IFU by its flat-field spectrum and merge them
   (:func:`recipes.postprocess.merge_ifus`, as muse_scipost does, so that the response fits
   the data it is applied to); cut to [``lambdamin``, ``lambdamax``];
2. project to the sky with the default astrometric solution of the mode, with the DAR
   correction about ``lambdaref`` for WFM (``lambdaref`` < 0 or NFM: none);
3. resample to DATACUBE_STD (drizzle, 0.2″ spaxels, 1.25 Å planes; recipes.md §3.10);
4. detect the sources on the median (white) image (:func:`detect_sources`) and integrate
   each one per wavelength plane with ``profile`` (:func:`extract`): ``moffat`` and
   ``gaussian`` fit the profile plus a constant background in every plane; ``smoffat``
   fits the Moffat to means of ``SMOFFAT_BIN`` planes, smooths its centre, width and β in
   λ (cubic polynomials, σ-clipped) and refits only amplitude and background per plane; ``circle``/``square`` sum an aperture of radius / half-size
   3 × FWHM minus the median of the surrounding annulus; ``auto`` is smoffat for WFM and
   circle for NFM; the spectra go to STD_FLUXES;
5. pick the standard (``select``: ``distance`` = the detection nearest to the star's
   STD_FLUX_TABLE position, ``flux`` = the brightest); the STD_FLUX_TABLE extension is
   chosen by the exposure's pointing (or its OBS TARG NAME);
6. sensitivity, telluric bands, extrapolation and smoothing (:mod:`recipes.fluxcal`):
   STD_RESPONSE (``lambda``, ``response``, ``resperr``) and STD_TELLURIC (``lambda``,
   ``ftelluric``, ``ftellerr`` on the cube's wavelength grid, 1 outside the bands);
7. ``darcheck``: ``check`` measures the star's centroid drift over λ and records it
   (``ESO DRS MUSE DAR CHECK MAX`` [arcsec]); ``correct`` also removes it from the rows
   and resamples and extracts again.

QC (primary headers): DATACUBE_STD ``ESO QC STANDARD NDET``, ``LAMBDA``, ``POSk X/Y``
(1-based cube pixels), ``FWHMk X/Y`` [arcsec], ``FWHM NVALID/MEDIAN/MAD``;
STD_RESPONSE ``ESO QC STANDARD STARNAME``, ``THRUnnnn`` (only where the ±100 Å window
was measured, not extrapolated) and ``ZP V/R/I`` (AB zeropoint, when FILTER_LIST has
Johnson_V, Cousins_R, Cousins_I). The collapsed ``filter`` images are appended to
DATACUBE_STD as extensions named after the filters.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage
from scipy.optimize import least_squares

from . import fluxcal
from .base import Calib, Param, Product, Recipe, RecipeError
from .cube import CubeGrid, collapse, grid_from_pixtable, load_filter, make_cube, primary_from, write_datacube
from .io import hkey
from .kernels.resample import ResampleOptions
from .pixtable import WCS_PROJECTED, PixTable
from .postprocess import check_mode, header_airmass, merge_ifus, project_to_sky, read_astrometry
from .provenance import add_qc, product_header
from .registry import register

logger = logging.getLogger(__name__)

PROFILES = ("gaussian", "moffat", "smoffat", "circle", "square", "auto")
#: Aperture radius (circle) or half-size (square) in units of the white-light FWHM.
APERTURE_FWHM = 3.0
#: Detection threshold above the background of the white image [sigma].
DETECTION_SIGMA = 5.0
#: smoffat: planes averaged for the first Moffat fits whose parameters are then smoothed.
SMOFFAT_BIN = 8
#: At most this many sources are integrated (the brightest ones).
MAX_SOURCES = 20
ZP_FILTERS = {"Johnson_V": "V", "Cousins_R": "R", "Cousins_I": "I"}

PARAMS = (
    Param("profile", str, "auto", "flux integration: gaussian, moffat, smoffat (profile fits), circle, square "
          "(apertures); auto = smoffat for WFM, circle for NFM", choices=PROFILES),
    Param("select", str, "distance", "standard star: flux (brightest) or distance (nearest to the reference "
          "position)", choices=("flux", "distance")),
    Param("smooth", str, "ppoly", "response smoothing: none, median (15 A half-width), ppoly (piecewise cubic "
          "over 2x150 A + 15 A sliding mean)", choices=("none", "median", "ppoly")),
    Param("lambdamin", float, 4000.0, "cut off the data below this wavelength [Angstrom] after loading"),
    Param("lambdamax", float, 10000.0, "cut off the data above this wavelength [Angstrom] after loading"),
    Param("lambdaref", float, 7000.0, "reference wavelength [Angstrom] of the DAR correction; < 0 disables"),
    Param("darcheck", str, "none", "check the DAR correction by centroiding (check) and also correct it "
          "empirically (correct)", choices=("none", "check", "correct")),
    Param("filter", str, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for the images "
          "appended to DATACUBE_STD; add Johnson_V,Cousins_R,Cousins_I for the zeropoint QC"),
)  # fmt: skip


# --------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A detection on the white image: 0-based cube pixel position and peak above background."""

    x: float
    y: float
    peak: float


def white_image(data: np.ndarray) -> np.ndarray:
    """Median over wavelength of the finite voxels of each spaxel (NaN where none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN spaxels
        return np.nanmedian(data, axis=0)


def detect_sources(image: np.ndarray, nsigma: float = DETECTION_SIGMA) -> list[Source]:
    """Local maxima of the (σ = 1 pix) smoothed image above background + ``nsigma`` σ.

    Background and σ are the median and 1.4826 MAD of the finite pixels; a peak must also
    exceed 1 % of the background level (a standard star is bright against the sky).
    Sources are sorted by decreasing peak; positions are intensity-weighted centroids in
    the 3 × 3 pixels around the maximum.
    """
    finite = np.isfinite(image)
    if finite.sum() < 9:
        return []
    bkg = float(np.median(image[finite]))
    filled = np.where(finite, image, bkg)
    smooth = ndimage.gaussian_filter(filled, 1.0, mode="nearest")
    sigma = 1.482602218505602 * float(np.median(np.abs(smooth[finite] - np.median(smooth[finite]))))
    level = max(nsigma * sigma, 0.01 * abs(bkg), 1e-12)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=5, mode="nearest")) & finite & (smooth - bkg > level)
    out = []
    ny, nx = image.shape
    for y, x in zip(*np.nonzero(peaks)):
        y0, y1, x0, x1 = max(0, y - 1), min(ny, y + 2), max(0, x - 1), min(nx, x + 2)
        w = np.clip(filled[y0:y1, x0:x1] - bkg, 0, None)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        total = w.sum()
        cx, cy = (float((w * xx).sum() / total), float((w * yy).sum() / total)) if total > 0 else (float(x), float(y))
        out.append(Source(cx, cy, float(smooth[y, x] - bkg)))
    return sorted(out, key=lambda s: -s.peak)


# --------------------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------------------


def moffat_model(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A (1 + r²/α²)^(−β) + b with p = (A, x0, y0, α, β, b), positions in pixels."""
    a, x0, y0, alpha, beta, b = p
    return a * (1.0 + ((x - x0) ** 2 + (y - y0) ** 2) / alpha**2) ** (-beta) + b


def moffat_flux(amplitude, alpha, beta):
    """Integral of the Moffat over the plane: A π α² / (β − 1) [value × pixel²]."""
    return amplitude * np.pi * alpha**2 / (beta - 1.0)


def moffat_fwhm(alpha, beta):
    return 2.0 * alpha * np.sqrt(2.0 ** (1.0 / beta) - 1.0)


def gaussian_model(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A exp(−r²/2σ²) + b with p = (A, x0, y0, σ, b)."""
    a, x0, y0, s, b = p
    return a * np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / s**2) + b


def _moffat_jac(p, x, y, w):
    a, x0, y0, alpha, beta, _ = p
    q = 1.0 + ((x - x0) ** 2 + (y - y0) ** 2) / alpha**2
    f = q ** (-beta)
    dq = -beta * a * q ** (-beta - 1.0)
    jac = np.empty((x.size, 6))
    jac[:, 0] = f
    jac[:, 1] = dq * (-2.0 * (x - x0) / alpha**2)
    jac[:, 2] = dq * (-2.0 * (y - y0) / alpha**2)
    jac[:, 3] = dq * (-2.0 * ((x - x0) ** 2 + (y - y0) ** 2) / alpha**3)
    jac[:, 4] = -a * f * np.log(q)
    jac[:, 5] = 1.0
    return -jac * w[:, None]


@dataclass
class Fit:
    """Per-plane profile fit of one source: flux [value × pixel²], its variance and the
    shape (x0, y0 0-based cube pixels; fwhm [pixels]; beta for Moffat), NaN where failed."""

    flux: np.ndarray
    var: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    fwhm: np.ndarray
    beta: np.ndarray


def _box(source_xy: tuple[float, float], half: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    x, y = source_xy
    h = int(math.ceil(half))
    return (slice(max(0, int(round(y)) - h), min(shape[0], int(round(y)) + h + 1)),
            slice(max(0, int(round(x)) - h), min(shape[1], int(round(x)) + h + 1)))  # fmt: skip


def fit_planes(data: np.ndarray, stat: np.ndarray, start: tuple[float, float, float], kind: str) -> Fit:
    """Fit ``kind`` (moffat or gaussian) + constant background to every plane of the cut-out
    cube ``data``/``stat`` (z, y, x); ``start`` = (x0, y0, fwhm) in cut-out pixels."""
    nz, ny, nx = data.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    out = Fit(*(np.full(nz, np.nan) for _ in range(6)))
    x0, y0, fwhm = start
    beta0 = 2.5
    prev = None
    for z in range(nz):
        d = data[z].astype(np.float64)
        s = stat[z].astype(np.float64)
        good = np.isfinite(d) & np.isfinite(s) & (s > 0)
        if good.sum() < 12:
            continue
        x, y, v = xx[good], yy[good], d[good]
        w = 1.0 / np.sqrt(s[good])
        bkg0 = float(np.percentile(v, 10))
        peak = float(v.max() - bkg0)
        if peak <= 0:
            continue
        try:
            if kind == "moffat":
                alpha0 = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta0) - 1.0))
                p0 = prev if prev is not None else np.array([peak, x0, y0, alpha0, beta0, bkg0])
                p0 = np.array(p0, dtype=np.float64)
                p0[0], p0[5] = peak, bkg0
                lo = [0.0, -1.0, -1.0, 0.2, 1.05, -np.inf]
                hi = [np.inf, nx, ny, 3.0 * max(nx, ny), 20.0, np.inf]
                p0 = np.clip(p0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
                res = least_squares(lambda p: (v - moffat_model(p, x, y)) * w, p0, bounds=(lo, hi),
                                    jac=lambda p: _moffat_jac(p, x, y, w), x_scale="jac", max_nfev=200)
                p = res.x
                flux = moffat_flux(p[0], p[3], p[4])
                # variance of the flux from the covariance (J^T J)^-1 of (A, α, β)
                g = np.array([flux / p[0], 0.0, 0.0, 2.0 * flux / p[3], -flux / (p[4] - 1.0), 0.0])
                fwhm_p, beta_p = moffat_fwhm(p[3], p[4]), p[4]
            else:
                sig0 = fwhm / 2.3548
                p0 = np.array([peak, x0, y0, sig0, bkg0]) if prev is None else np.array(prev, dtype=np.float64)
                p0[0], p0[4] = peak, bkg0
                lo = [0.0, -1.0, -1.0, 0.2, -np.inf]
                hi = [np.inf, nx, ny, 3.0 * max(nx, ny), np.inf]
                p0 = np.clip(p0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
                res = least_squares(lambda p: (v - gaussian_model(p, x, y)) * w, p0, bounds=(lo, hi),
                                    x_scale="jac", max_nfev=200)
                p = res.x
                flux = 2.0 * np.pi * p[3] ** 2 * p[0]
                g = np.array([flux / p[0], 0.0, 0.0, 2.0 * flux / p[3], 0.0])
                fwhm_p, beta_p = 2.3548 * p[3], np.nan
        except (ValueError, np.linalg.LinAlgError):
            continue
        if not res.success or not np.all(np.isfinite(res.x)):
            continue
        try:
            cov = np.linalg.pinv(res.jac.T @ res.jac)
            var = float(g @ cov @ g)
        except np.linalg.LinAlgError:
            var = np.nan
        prev = p
        out.flux[z], out.var[z] = flux, var
        out.x0[z], out.y0[z], out.fwhm[z], out.beta[z] = p[1], p[2], fwhm_p, beta_p
    return out


def _smooth_in_lambda(values: np.ndarray, order: int = 3, clip: float = 3.0, at: np.ndarray | None = None,
                      where: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Polynomial of ``order`` in plane index fitted with iterative σ-clipping (NaN-safe).

    ``where``: plane index of each value (default 0..n-1); ``at``: planes to evaluate it
    at (default ``where``).
    """
    z = np.arange(values.size, dtype=np.float64) if where is None else np.asarray(where, dtype=np.float64)
    at = z if at is None else np.asarray(at, dtype=np.float64)
    good = np.isfinite(values)
    if good.sum() <= order + 1:
        return np.full(at.shape, np.nanmedian(values) if good.any() else np.nan)
    centre, scale = z.mean(), max(1.0, np.ptp(z) / 2)
    t = (z - centre) / scale
    keep = good.copy()
    coef = None
    for _ in range(5):
        coef = np.polyfit(t[keep], values[keep], order)
        resid = values - np.polyval(coef, t)
        s = 1.4826 * np.median(np.abs(resid[keep])) + 1e-12
        new = good & (np.abs(resid) < clip * s)
        if new.sum() <= order + 1 or np.array_equal(new, keep):
            break
        keep = new
    return np.polyval(coef, (at - centre) / scale)


def binned_fit(
    data: np.ndarray, stat: np.ndarray, start: tuple[float, float, float], nbin: int
) -> tuple[Fit, np.ndarray]:
    """Moffat fits to the means of ``nbin`` consecutive planes; returns the fits and the
    (fractional) plane index of each bin centre. Shape parameters vary slowly with λ, so
    this is what smoffat smooths, at 1/``nbin`` of the cost of fitting every plane."""
    nz = data.shape[0]
    edges = np.arange(0, nz + nbin, nbin).clip(max=nz)
    edges = np.unique(edges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d = np.array([np.nanmean(data[a:b], axis=0) for a, b in zip(edges[:-1], edges[1:])])
        n = np.array([np.isfinite(stat[a:b]).sum(axis=0) for a, b in zip(edges[:-1], edges[1:])])
        s = np.array([np.nansum(stat[a:b], axis=0) for a, b in zip(edges[:-1], edges[1:])]) / np.maximum(n, 1) ** 2
    s = np.where(n > 0, s, np.nan)
    centres = 0.5 * (edges[:-1] + edges[1:] - 1)
    return fit_planes(d, s, start, "moffat"), centres


def smoothed_moffat(data: np.ndarray, stat: np.ndarray, fit: Fit, planes: np.ndarray | None = None) -> Fit:
    """Refit amplitude and background per plane with the Moffat centre, width and β smoothed
    in λ (the DRS ``smoffat``); ``planes``: plane index of each entry of ``fit`` (default
    one entry per plane). Flux variance from the linear least squares."""
    nz, ny, nx = data.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    at = np.arange(nz, dtype=np.float64)

    def smooth(values):
        return _smooth_in_lambda(values, at=at, where=planes)

    x0, y0 = smooth(fit.x0), smooth(fit.y0)
    beta = np.clip(smooth(fit.beta), 1.05, 20.0)
    fwhm = np.clip(smooth(fit.fwhm), 0.3, None)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    out = Fit(np.full(nz, np.nan), np.full(nz, np.nan), x0, y0, fwhm, beta)
    for z in range(nz):
        if not np.isfinite(x0[z] + alpha[z] + beta[z]):
            continue
        d = data[z].astype(np.float64)
        s = stat[z].astype(np.float64)
        good = np.isfinite(d) & np.isfinite(s) & (s > 0)
        if good.sum() < 4:
            continue
        prof = (1.0 + ((xx[good] - x0[z]) ** 2 + (yy[good] - y0[z]) ** 2) / alpha[z] ** 2) ** (-beta[z])
        w = 1.0 / s[good]
        a = np.column_stack([prof, np.ones_like(prof)])
        ata = a.T @ (a * w[:, None])
        try:
            cov = np.linalg.inv(ata)
        except np.linalg.LinAlgError:
            continue
        amp = (cov @ (a.T @ (w * d[good])))[0]
        norm = moffat_flux(1.0, alpha[z], beta[z])
        out.flux[z], out.var[z] = amp * norm, cov[0, 0] * norm**2
    return out


def aperture_flux(data: np.ndarray, stat: np.ndarray, centre: tuple[float, float], size: float,
                  shape: str) -> Fit:  # fmt: skip
    """Background-subtracted sum in a circle (radius ``size``) or square (half-size
    ``size``) [pixels] per plane; background: median of the ring out to 1.5 × size (or, if
    it has fewer than 8 pixels in the cut-out, of all pixels outside the aperture).
    Missing voxels inside the aperture are replaced by the mean of the good ones."""
    nz, ny, nx = data.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    dx, dy = xx - centre[0], yy - centre[1]
    if shape == "circle":
        r = np.hypot(dx, dy)
    else:
        r = np.maximum(np.abs(dx), np.abs(dy))
    inside = r <= size
    ring = (r > size) & (r <= 1.5 * size)
    if ring.sum() < 8:
        ring = ~inside
    npix = inside.sum()
    d = data.reshape(nz, -1).astype(np.float64)
    s = stat.reshape(nz, -1).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bkg = np.nanmedian(d[:, ring.ravel()], axis=1) if ring.any() else np.zeros(nz)
        ins = d[:, inside.ravel()] - bkg[:, None]
        ngood = np.isfinite(ins).sum(axis=1)
        flux = np.nanmean(ins, axis=1) * npix
        var = np.nansum(s[:, inside.ravel()], axis=1) * (npix / np.maximum(ngood, 1)) ** 2
    flux = np.where(ngood > 0.5 * npix, flux, np.nan)
    const = np.full(nz, np.nan)
    return Fit(flux, var, const + centre[0], const + centre[1], const, const)


def extract(cube: np.ndarray, stat: np.ndarray, source: Source, profile: str, fwhm0: float) -> Fit:
    """The flux per plane of ``source`` with ``profile`` (not ``auto``); positions in the
    returned Fit are 0-based pixels of the whole cube. ``fwhm0``: starting FWHM [pix]."""
    half = max(6.0, 4.0 * fwhm0)
    if profile in ("circle", "square"):
        half = max(half, 1.6 * APERTURE_FWHM * fwhm0)
    sy, sx = _box((source.x, source.y), half, cube.shape[1:])
    d, s = cube[:, sy, sx], stat[:, sy, sx]
    cx, cy = source.x - sx.start, source.y - sy.start
    if profile in ("circle", "square"):
        fit = aperture_flux(d, s, (cx, cy), APERTURE_FWHM * fwhm0, profile)
    elif profile == "smoffat":
        first, planes = binned_fit(d, s, (cx, cy, fwhm0), SMOFFAT_BIN)
        fit = smoothed_moffat(d, s, first, planes)
    else:
        fit = fit_planes(d, s, (cx, cy, fwhm0), "gaussian" if profile == "gaussian" else "moffat")
    fit.x0 = fit.x0 + sx.start
    fit.y0 = fit.y0 + sy.start
    return fit


def position(source: Source, fit: Fit) -> tuple[float, float]:
    """0-based cube position of a source: the median fitted centre over the planes, or
    the detection centroid for aperture extractions."""
    if np.isfinite(fit.x0).any() and np.isfinite(fit.y0).any():
        return float(np.nanmedian(fit.x0)), float(np.nanmedian(fit.y0))
    return source.x, source.y


def white_fwhm(image: np.ndarray, source: Source) -> float:
    """FWHM [pix] of a Moffat fitted to the white image around ``source`` (5 pix if it fails)."""
    sy, sx = _box((source.x, source.y), 12, image.shape)
    cut = image[sy, sx][None]
    fit = fit_planes(cut, np.ones_like(cut), (source.x - sx.start, source.y - sy.start, 4.0), "moffat")
    value = float(fit.fwhm[0])
    return value if np.isfinite(value) and 0.5 < value < 50 else 5.0


# --------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------


def _first(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


def load_exposure(paths: list[Path], lmin: float, lmax: float) -> PixTable:
    """The merged, flat-field-spectrum corrected, λ-cut pixel table of one exposure."""
    tables, mode = [], None
    for path in paths:
        pt = PixTable.read(path)
        mode = check_mode(pt, mode, str(path))
        tables.append(pt)
    pt = merge_ifus(tables, [str(p) for p in paths])
    pt = pt.cut_lambda(lmin, lmax, inplace=True)
    if pt.nrows == 0:
        raise RecipeError(f"{paths[0]}: no pixel-table rows between lambdamin={lmin} and lambdamax={lmax} Angstrom")
    return pt


def build_cube(pt: PixTable, lambdaref: float, where: str, grid: CubeGrid | None = None):
    """Project (default astrometry, DAR about ``lambdaref`` for WFM) and resample onto
    ``grid`` (default: fitted to the data); returns (grid, ResampleResult)."""
    mode = str(pt.header.get("ESO INS MODE", "WFM"))
    if pt.wcs_state != WCS_PROJECTED:
        cd, crpix = read_astrometry(None, mode)
        dar = lambdaref if (lambdaref > 0 and not mode.upper().startswith("NFM")) else -1.0
        project_to_sky(pt, cd, crpix, dar, where)
    grid = grid or grid_from_pixtable(pt)
    result = make_cube(pt, grid, ResampleOptions())
    return grid, result


def dar_drift(fit: Fit, grid: CubeGrid, lambdaref: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Smoothed centroid offsets (dx, dy) [pix] per plane relative to ``lambdaref`` (the
    middle plane when < 0) and their largest size [arcsec]."""
    dx, dy = _smooth_in_lambda(fit.x0, order=2), _smooth_in_lambda(fit.y0, order=2)
    if not (np.isfinite(dx).all() and np.isfinite(dy).all()):
        return np.zeros(grid.nz), np.zeros(grid.nz), float("nan")
    lam = grid.wavelengths()
    ref = lambdaref if lambdaref > 0 else float(np.median(lam))
    dx = dx - np.interp(ref, lam, dx)
    dy = dy - np.interp(ref, lam, dy)
    scale = math.hypot(grid.cd[0], grid.cd[2]) * 3600.0
    return dx, dy, float(np.max(np.hypot(dx, dy)) * scale)


def shift_rows(pt: PixTable, grid: CubeGrid, dx: np.ndarray, dy: np.ndarray, chunk: int = 4_000_000) -> None:
    """Move projected rows by −(dx, dy)(λ) cube pixels (the empirical DAR correction)."""
    lam = grid.wavelengths()
    a, b, c, d = grid.cd
    for s in range(0, pt.nrows, chunk):
        sel = slice(s, s + chunk)
        phi = pt.xpos[sel].astype(np.float64)
        theta = pt.ypos[sel].astype(np.float64)
        rho = np.tan(-theta)  # tangent-plane radius [rad], as projected tables store it
        xi, eta = rho * np.sin(phi), -rho * np.cos(phi)
        px = np.interp(pt.lam[sel], lam, dx)
        py = np.interp(pt.lam[sel], lam, dy)
        xi -= np.radians(a * px + b * py)
        eta -= np.radians(c * px + d * py)
        pt.columns["xpos"][sel] = np.arctan2(xi, -eta)
        pt.columns["ypos"][sel] = -np.arctan(np.hypot(xi, eta))


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_STD.fits, STD_FLUXES.fits, STD_RESPONSE.fits, STD_TELLURIC.fits."""
    outdir = Path(outdir)
    paths = [Path(p) for p in frames.get("PIXTABLE_STD", [])]
    if not paths:
        raise RecipeError("muse_standard needs the PIXTABLE_STD tables of one standard-star exposure")
    for tag in ("EXTINCT_TABLE", "STD_FLUX_TABLE"):
        if _first(frames, tag) is None:
            raise RecipeError(f"muse_standard needs a {tag}")
    lmin, lmax = float(params["lambdamin"]), float(params["lambdamax"])
    if lmin >= lmax:
        raise RecipeError(f"lambdamin ({lmin}) must be below lambdamax ({lmax})")
    lambdaref = float(params["lambdaref"])
    filter_list = _first(frames, "FILTER_LIST")
    names = [f.strip() for f in str(params["filter"]).split(",") if f.strip()]
    filters = [load_filter(name, filter_list) for name in names]  # fail early on an unknown name
    # zeropoint QC only for the V, R, I filters asked for, as the DRS does
    zp_filters = {ZP_FILTERS[f.name]: f for f in filters if f.name in ZP_FILTERS}
    extinction = fluxcal.read_extinction(frames["EXTINCT_TABLE"][0])
    regions = (fluxcal.read_telluric_regions(p) if (p := _first(frames, "TELLURIC_REGIONS"))
               else fluxcal.DEFAULT_TELLURIC_REGIONS)  # fmt: skip

    pt = load_exposure(paths, lmin, lmax)
    where = str(paths[0])
    header = pt.header
    try:
        exptime = float(header["EXPTIME"])
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks a numeric EXPTIME") from None
    airmass = header_airmass(header, where)
    try:
        pointing = (float(header["RA"]), float(header["DEC"]))
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks a numeric RA/DEC pointing") from None
    reference = fluxcal.read_std_flux_table(frames["STD_FLUX_TABLE"][0], *pointing,
                                            name=str(header.get("ESO OBS TARG NAME", "")) or None)  # fmt: skip
    mode = str(header.get("ESO INS MODE", "WFM"))
    profile = str(params["profile"])
    if profile == "auto":
        profile = "circle" if mode.upper().startswith("NFM") else "smoffat"

    grid, cube = build_cube(pt, lambdaref, where)
    white = white_image(cube.data)
    sources = detect_sources(white)[:MAX_SOURCES]
    if not sources:
        raise RecipeError(f"{where}: no source detected in the standard-star cube (threshold "
                          f"{DETECTION_SIGMA:g} sigma above the background)")  # fmt: skip
    ref_pos = (reference.ra, reference.dec) if reference.ra is not None else pointing
    fwhm0 = white_fwhm(white, sources[0])
    fits_ = [extract(cube.data, cube.stat, src, profile, fwhm0) for src in sources]
    if params["select"] == "flux":
        selected = int(np.argmax([np.nansum(f.flux) for f in fits_]))
    else:
        rx, ry = grid.world_to_pixel(np.array([ref_pos[0]]), np.array([ref_pos[1]]))
        selected = int(np.argmin([math.hypot(s.x - rx[0], s.y - ry[0]) for s in sources]))
    star = fits_[selected]

    dar_max = None
    if params["darcheck"] != "none":
        shape_fit = star if profile in ("moffat", "smoffat", "gaussian") else extract(
            cube.data, cube.stat, sources[selected], "moffat", fwhm0)  # aperture sums carry no centroid
        dx, dy, dar_max = dar_drift(shape_fit, grid, lambdaref)
        logger.info("DAR check: largest centroid drift %.3f arcsec", dar_max)
        if params["darcheck"] == "correct" and np.isfinite(dar_max):
            shift_rows(pt, grid, dx, dy)
            grid, cube = build_cube(pt, lambdaref, where, grid)  # same grid: positions stay valid
            fits_[selected] = star = extract(cube.data, cube.stat, sources[selected], profile, fwhm0)

    lam = grid.wavelengths()
    resp, err = fluxcal.sensitivity(lam, star.flux, star.var, exptime, airmass, extinction, reference)
    resp, err = fluxcal.fill_gaps(lam, resp, err)
    resp_t, err_t, ftell, ftellerr = fluxcal.telluric_correction(lam, resp, err, regions, airmass)
    lam_x, resp_x, err_x = fluxcal.extrapolate(lam, resp_t, err_t)
    resp_s, err_s = fluxcal.smooth_response(lam_x, resp_x, err_x, str(params["smooth"]))

    # -- products ------------------------------------------------------------------
    raws = [(p, "PIXTABLE_STD") for p in paths]
    calibs = [(p, tag) for tag in ("EXTINCT_TABLE", "STD_FLUX_TABLE", "TELLURIC_REGIONS", "FILTER_LIST")
              if (p := _first(frames, tag))]  # fmt: skip
    base = primary_from(header)

    def header_for(catg: str) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, calibs, template=base)
        h[hkey("ESO DRS MUSE FLUX NOBJ")] = (len(sources), "number of detected sources")
        h[hkey("ESO DRS MUSE FLUX NSEL")] = (selected + 1, "source selected as the standard star")
        if dar_max is not None:
            h[hkey("ESO DRS MUSE DAR CHECK MAX")] = (round(dar_max, 4), "[arcsec] largest centroid drift")
        return h

    cube_qc = _cube_qc(sources, fits_, grid)
    resp_qc = _response_qc(reference.name, lam_x, resp_s, (float(lam[0]), float(lam[-1])), zp_filters)
    written: list[Path] = []
    try:
        h = header_for("DATACUBE_STD")
        add_qc(h, [(k, v, c) for k, (v, c) in cube_qc.items()])
        extra = []
        for flt in filters:
            image, fraction = collapse(cube.data, grid, flt)
            hdu = fits.ImageHDU(image, header=grid.header(2), name=flt.name)
            hdu.header["BUNIT"] = "count"
            hdu.header[hkey("ESO DRS MUSE FILTER FRACTION")] = (round(fraction, 4), "[%] fraction of filter covered")
            extra.append(hdu)
        written.append(write_datacube(outdir / "DATACUBE_STD.fits", h, grid, cube.data, cube.stat, "count", extra))

        h = header_for("STD_FLUXES")
        for k, (src, f) in enumerate(zip(sources, fits_), start=1):
            px, py = position(src, f)
            ra, dec = grid.pixel_to_world(np.array([px]), np.array([py]))
            h[hkey(f"ESO DRS MUSE FLUX OBJ{k} X")] = (round(px + 1, 3), "[pix] x in cube")
            h[hkey(f"ESO DRS MUSE FLUX OBJ{k} Y")] = (round(py + 1, 3), "[pix] y in cube")
            h[hkey(f"ESO DRS MUSE FLUX OBJ{k} RA")] = (round(float(ra[0]), 7), "[deg] RA")
            h[hkey(f"ESO DRS MUSE FLUX OBJ{k} DEC")] = (round(float(dec[0]), 7), "[deg] DEC")
            h[hkey(f"ESO DRS MUSE FLUX OBJ{k} INTFLUX")] = (float(np.nansum(f.flux)), "[count] flux")
        spec = fits.Header()
        spec["CTYPE1"], spec["CUNIT1"] = "AWAV", "Angstrom"
        spec["CRPIX1"], spec["CRVAL1"], spec["CDELT1"] = 1.0, float(lam[0]), float(grid.cd3)
        spec["CTYPE2"], spec["CRPIX2"], spec["CRVAL2"], spec["CDELT2"] = "PIXEL", 1.0, 1.0, 1.0
        spec["BUNIT"] = "count"
        fluxes = np.array([f.flux for f in fits_], dtype=np.float32)
        variances = np.array([f.var for f in fits_], dtype=np.float32)
        path = outdir / "STD_FLUXES.fits"
        stat_h = spec.copy()
        stat_h["BUNIT"] = "count**2"
        fits.HDUList([fits.PrimaryHDU(header=h), fits.ImageHDU(fluxes, header=spec, name="DATA"),
                      fits.ImageHDU(variances, header=stat_h, name="STAT")]).writeto(
            path, overwrite=True, output_verify="silentfix")  # fmt: skip
        written.append(path)

        h = header_for("STD_RESPONSE")
        add_qc(h, [(k, v, c) for k, (v, c) in resp_qc.items()])
        written.append(fluxcal.write_response(outdir / "STD_RESPONSE.fits", h, lam_x, resp_s, err_s))
        h = header_for("STD_TELLURIC")
        written.append(fluxcal.write_telluric(outdir / "STD_TELLURIC.fits", h, lam, ftell, ftellerr))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    strip = lambda qc: {k.removeprefix("ESO "): v for k, (v, _) in qc.items()}  # noqa: E731
    return [
        Product(written[0], "DATACUBE_STD", (), strip(cube_qc)),
        Product(written[1], "STD_FLUXES"),
        Product(written[2], "STD_RESPONSE", (), strip(resp_qc)),
        Product(written[3], "STD_TELLURIC"),
    ]


def _cube_qc(sources: list[Source], fits_: list[Fit], grid: CubeGrid) -> dict[str, tuple]:
    """ESO QC STANDARD keys of DATACUBE_STD (positions 1-based pixels, FWHM in arcsec)."""
    scale = math.hypot(grid.cd[0], grid.cd[2]) * 3600.0
    qc: dict[str, tuple] = {
        "ESO QC STANDARD NDET": (len(sources), "number of detected sources"),
        "ESO QC STANDARD LAMBDA": (round(float(np.median(grid.wavelengths())), 3), "[Angstrom] detection wavelength"),
    }
    fwhms = []
    for k, (src, f) in enumerate(zip(sources, fits_), start=1):
        px, py = position(src, f)
        qc[f"ESO QC STANDARD POS{k} X"] = (round(px + 1, 3), "[pix] position in x")
        qc[f"ESO QC STANDARD POS{k} Y"] = (round(py + 1, 3), "[pix] position in y")
        fw = float(np.nanmedian(f.fwhm)) * scale if np.isfinite(f.fwhm).any() else float("nan")
        if np.isfinite(fw):
            qc[f"ESO QC STANDARD FWHM{k} X"] = (round(fw, 4), "[arcsec] FWHM in x")
            qc[f"ESO QC STANDARD FWHM{k} Y"] = (round(fw, 4), "[arcsec] FWHM in y")
            fwhms.append(fw)
    qc["ESO QC STANDARD FWHM NVALID"] = (len(fwhms), "sources with a valid FWHM")
    if fwhms:
        med = float(np.median(fwhms))
        qc["ESO QC STANDARD FWHM MEDIAN"] = (round(med, 4), "[arcsec] median FWHM")
        qc["ESO QC STANDARD FWHM MAD"] = (round(float(np.median(np.abs(np.array(fwhms) - med))), 4),
                                          "[arcsec] MAD of the FWHM")  # fmt: skip
    return qc


def _response_qc(name: str, lam, resp, data_range, zp_filters: dict) -> dict[str, tuple]:
    qc: dict[str, tuple] = {"ESO QC STANDARD STARNAME": (name, "name of the standard star")}
    for centre, value in fluxcal.qc_throughputs(lam, resp, data_range).items():
        qc[f"ESO QC STANDARD THRU{centre:04d}"] = (round(value, 5), f"throughput at {centre} +/- 100 Angstrom")
    for band, flt in zp_filters.items():
        zp = fluxcal.zeropoint_ab(lam, resp, flt.lam, flt.throughput)
        if np.isfinite(zp):
            qc[f"ESO QC STANDARD ZP {band}"] = (round(float(zp), 4), f"[mag] AB zeropoint in {band}")
    return qc


RECIPE = register(
    Recipe(
        name="muse_standard",
        inputs=("PIXTABLE_STD",),
        calibs=(
            Calib("EXTINCT_TABLE"),
            Calib("STD_FLUX_TABLE"),
            Calib("TELLURIC_REGIONS", required=False),
            Calib("FILTER_LIST", required=False),
        ),
        outputs=("DATACUBE_STD", "STD_FLUXES", "STD_RESPONSE", "STD_TELLURIC"),
        params=PARAMS,
        run=run,
        target="exposure",
        min_inputs=1,
        description="Response curve and telluric correction from a standard-star exposure.",
        summary_qc=(("FWHM", "QC STANDARD FWHM MEDIAN"),),
    )
)
