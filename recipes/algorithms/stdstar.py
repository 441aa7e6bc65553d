"""The standard star in its exposure: cube, detection, extraction and DAR drift (muse_standard).

* :func:`load_exposure` and :func:`build_cube` — the exposure's IFU tables merged (with
  their flat-field spectra, as muse_scipost does), projected with the default astrometry
  (DAR about ``lambdaref`` for WFM) and resampled (drizzle, 0.2″, 1.25 Å);
* :func:`detect_sources` on the median image (:func:`white_image`);
* :func:`extract` — the flux per plane with a ``profile`` (:mod:`recipes.algorithms.psffit`);
* :func:`dar_drift` and :func:`shift_rows` — ``darcheck``: the star's smoothed centroid
  drift with λ and its removal from the rows;
* :func:`cube_qc`, :func:`response_qc` and :func:`write_std_fluxes` — the products' QC
  and STD_FLUXES.

Positions are 0-based cube pixels inside (1-based in QC and header keywords), FWHM in
pixels inside and arcsec in QC; wavelengths in Å (air).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from recipes.algorithms import fluxcal
from recipes.base import RecipeError
from recipes.io import hkey
from recipes.kernels.resample import ResampleOptions, ResampleResult
from recipes.algorithms.astrometry import project_to_sky, read_astrometry
from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.pixtable import WCS_PROJECTED, PixTable
from recipes.algorithms.postprocess import check_mode, merge_ifus
from recipes.algorithms.psffit import Fit, aperture_flux, binned_fit, cutout_box, fit_planes, smooth_in_lambda
from recipes.algorithms.psffit import smoothed_moffat
from recipes.algorithms.resampling import grid_from_pixtable, make_cube

#: Aperture radius (circle) or half-size (square) in units of the white-light FWHM.
APERTURE_FWHM = 3.0
#: Detection threshold above the background of the white image [sigma].
DETECTION_SIGMA = 5.0
#: smoffat: planes averaged for the first Moffat fits whose parameters are then smoothed.
SMOFFAT_BIN = 8
#: At most this many sources are integrated (the brightest ones).
MAX_SOURCES = 20
ZP_FILTERS = {"Johnson_V": "V", "Cousins_R": "R", "Cousins_I": "I"}


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
# extraction
# --------------------------------------------------------------------------------------


def extract(cube: np.ndarray, stat: np.ndarray, source: Source, profile: str, fwhm0: float) -> Fit:
    """The flux per plane of ``source`` with ``profile`` (not ``auto``); positions in the
    returned Fit are 0-based pixels of the whole cube. ``fwhm0``: starting FWHM [pix]."""
    half = max(6.0, 4.0 * fwhm0)
    if profile in ("circle", "square"):
        half = max(half, 1.6 * APERTURE_FWHM * fwhm0)
    sy, sx = cutout_box((source.x, source.y), half, cube.shape[1:])
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
    sy, sx = cutout_box((source.x, source.y), 12, image.shape)
    cut = image[sy, sx][None]
    fit = fit_planes(cut, np.ones_like(cut), (source.x - sx.start, source.y - sy.start, 4.0), "moffat")
    value = float(fit.fwhm[0])
    return value if np.isfinite(value) and 0.5 < value < 50 else 5.0


# --------------------------------------------------------------------------------------
# the exposure's cube and the DAR check
# --------------------------------------------------------------------------------------


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


def build_cube(pt: PixTable, lambdaref: float, where: str,
               grid: CubeGrid | None = None) -> tuple[CubeGrid, ResampleResult]:
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
    dx, dy = smooth_in_lambda(fit.x0, order=2), smooth_in_lambda(fit.y0, order=2)
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


# --------------------------------------------------------------------------------------
# products
# --------------------------------------------------------------------------------------


def cube_qc(sources: list[Source], fits_: list[Fit], grid: CubeGrid) -> dict[str, tuple]:
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


def response_qc(name: str, lam, resp, data_range, zp_filters: dict) -> dict[str, tuple]:
    qc: dict[str, tuple] = {"ESO QC STANDARD STARNAME": (name, "name of the standard star")}
    for centre, value in fluxcal.qc_throughputs(lam, resp, data_range).items():
        qc[f"ESO QC STANDARD THRU{centre:04d}"] = (round(value, 5), f"throughput at {centre} +/- 100 Angstrom")
    for band, flt in zp_filters.items():
        zp = fluxcal.zeropoint_ab(lam, resp, flt.lam, flt.throughput)
        if np.isfinite(zp):
            qc[f"ESO QC STANDARD ZP {band}"] = (round(float(zp), 4), f"[mag] AB zeropoint in {band}")
    return qc


def write_std_fluxes(path: Path, primary: fits.Header, grid: CubeGrid, sources: list[Source], fits_: list[Fit]) -> Path:
    """STD_FLUXES: per detected source its position (``ESO DRS MUSE FLUX OBJk X/Y`` 1-based
    cube pixels, ``RA/DEC`` [deg]) and integrated flux [count] in ``primary``, the spectra
    ``DATA`` [count] and ``STAT`` [count²] as images (x: λ on ``grid``'s planes, y: source)."""
    h = primary
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
    spec["CRPIX1"], spec["CRVAL1"], spec["CDELT1"] = 1.0, float(grid.wavelengths()[0]), float(grid.cd3)
    spec["CTYPE2"], spec["CRPIX2"], spec["CRVAL2"], spec["CDELT2"] = "PIXEL", 1.0, 1.0, 1.0
    spec["BUNIT"] = "count"
    fluxes = np.array([f.flux for f in fits_], dtype=np.float32)
    variances = np.array([f.var for f in fits_], dtype=np.float32)
    stat_h = spec.copy()
    stat_h["BUNIT"] = "count**2"
    fits.HDUList([fits.PrimaryHDU(header=h), fits.ImageHDU(fluxes, header=spec, name="DATA"),
                  fits.ImageHDU(variances, header=stat_h, name="STAT")]).writeto(
        path, overwrite=True, output_verify="silentfix")  # fmt: skip
    return Path(path)


def select_standard(sources: list[Source], fits_: list[Fit], how: str, grid: CubeGrid,
                    reference: tuple[float, float]) -> int:  # fmt: skip
    """Index of the standard among ``sources``: ``flux`` the largest integrated flux,
    ``distance`` the detection nearest to the ``reference`` (RA, Dec) [deg]."""
    if how == "flux":
        return int(np.argmax([np.nansum(f.flux) for f in fits_]))
    rx, ry = grid.world_to_pixel(np.array([reference[0]]), np.array([reference[1]]))
    return int(np.argmin([math.hypot(s.x - rx[0], s.y - ry[0]) for s in sources]))
