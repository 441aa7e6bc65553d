"""Differential atmospheric refraction: the model correction and the empirical check.

*Model* (:func:`dar_offsets`, applied by :func:`recipes.algorithms.astrometry.project_to_sky`):
the image at λ is displaced towards the zenith by ΔR(λ) = R(λ) − R(λref),
R = 206265″·(n(λ) − 1)·tan z, with n the refractive index of moist air (Filippenko 1982,
:func:`refractive_index_minus_one`) and a plane-parallel atmosphere; the correction moves
every row by −ΔR along the parallactic angle q (zenith direction, from north through east,
:func:`parallactic_angle`): Δξ = −ΔR sin q, Δη = −ΔR cos q.

*Check* (muse_scipost ``darcheck``, :func:`check_dar`): the centroid of the brightest
source in wavelength bands of a projected table (:func:`centroid_drift`), and with
``correct`` a polynomial in λ removed from the rows.

Wavelengths in Å (air); offsets in arcsec east (ξ) and north (η) unless a name says rad.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import hkey
from recipes.algorithms.pixtable import WCS_PROJECTED, PixTable, pkey
from recipes.algorithms.postprocess import header_airmass

ARCSEC_PER_RAD = 206264.80624709636


# --------------------------------------------------------------------------------------
# the refraction model
# --------------------------------------------------------------------------------------


def refractive_index_minus_one(lam, temperature_c: float, pressure_hpa: float, humidity_pct: float) -> np.ndarray:
    """(n − 1) of moist air at air wavelength ``lam`` [Å] (Filippenko 1982, PASP 94, 715).

    Edlén's dry-air formula at 15 °C, 760 mmHg, scaled to temperature and pressure, minus
    the water-vapour term (partial pressure from the relative humidity, Magnus formula).
    """
    sigma2 = (1e4 / np.asarray(lam, dtype=np.float64)) ** 2  # (1/λ[µm])²
    p_mmhg = pressure_hpa * 0.750061683
    t = temperature_c
    n15 = 64.328 + 29498.1 / (146.0 - sigma2) + 255.4 / (41.0 - sigma2)
    ntp = n15 * p_mmhg * (1.0 + (1.049 - 0.0157 * t) * 1e-6 * p_mmhg) / (720.883 * (1.0 + 0.003661 * t))
    e_hpa = humidity_pct / 100.0 * 6.1094 * math.exp(17.625 * t / (t + 243.04))
    f_mmhg = e_hpa * 0.750061683
    water = (0.0624 - 0.000680 * sigma2) / (1.0 + 0.003661 * t) * f_mmhg
    return (ntp - water) * 1e-6


def parallactic_angle(header: fits.Header, where: str = "pixel table") -> float:
    """Parallactic angle [deg] (zenith direction from north through east) of the pointing.

    ``ESO TEL PARANG START/END`` when present, else from RA, DEC, LST [s] and
    ``ESO TEL GEOLAT``.
    """
    values = [float(header[k]) for k in ("ESO TEL PARANG START", "ESO TEL PARANG END") if k in header]
    if values:
        return float(np.mean(values))
    try:
        ra, dec = float(header["RA"]), float(header["DEC"])
        lst = float(header["LST"]) / 240.0  # s → deg
        lat = float(header.get("ESO TEL GEOLAT", -24.627222))
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks RA/DEC/LST (or ESO TEL PARANG) for the DAR correction") from None
    ha, d, phi = map(math.radians, (lst - ra, dec, lat))
    return math.degrees(math.atan2(math.sin(ha), math.tan(phi) * math.cos(d) - math.sin(d) * math.cos(ha)))


def dar_offsets(
    lam, lambdaref: float, header: fits.Header, where: str = "pixel table"
) -> tuple[np.ndarray, np.ndarray]:
    """DAR corrections (Δξ east, Δη north) [arcsec] to add to positions at ``lam`` [Å].

    Atmosphere from ``ESO TEL AMBI TEMP`` [°C], ``… RHUM`` [%], ``… PRES START/END``
    [hPa]; zenith distance from the airmass (sec z); direction from
    :func:`parallactic_angle`. Zero shift at ``lambdaref``.
    """
    temp = float(header.get("ESO TEL AMBI TEMP", 11.5))
    rhum = float(header.get("ESO TEL AMBI RHUM", 14.5))
    pres = [float(header[k]) for k in ("ESO TEL AMBI PRES START", "ESO TEL AMBI PRES END") if k in header]
    pressure = float(np.mean(pres)) if pres else 743.0
    airmass = header_airmass(header, where)
    tanz = math.sqrt(max(airmass * airmass - 1.0, 0.0))
    n = refractive_index_minus_one(lam, temp, pressure, rhum)
    nref = refractive_index_minus_one(np.array([lambdaref]), temp, pressure, rhum)[0]
    shift = ARCSEC_PER_RAD * (n - nref) * tanz  # towards the zenith [arcsec]
    q = math.radians(parallactic_angle(header, where))
    return -shift * math.sin(q), -shift * math.cos(q)


# --------------------------------------------------------------------------------------
# empirical DAR check (darcheck)
# --------------------------------------------------------------------------------------


def tangent_offsets(pt: PixTable) -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane offsets (ξ east, η north) [rad] of a projected table's rows."""
    phi = pt.xpos.astype(np.float64)
    r = np.tan(-pt.ypos.astype(np.float64))
    return r * np.sin(phi), -r * np.cos(phi)


def _set_tangent(pt: PixTable, xi: np.ndarray, eta: np.ndarray) -> None:
    pt.columns["xpos"] = np.arctan2(xi, -eta).astype(np.float32)
    pt.columns["ypos"] = (-np.arctan(np.hypot(xi, eta))).astype(np.float32)


def centroid_drift(
    pt: PixTable, nbands: int = 8, radius_arcsec: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (ξ, η) [arcsec] of the brightest source in ``nbands`` wavelength bands.

    The source is the brightest 0.2″ spaxel of the white image (a 3×3 box sum); each
    band's centroid uses the background-subtracted (band median) positive flux within
    ``radius_arcsec``. Returns (band centre λ [Å], ξ, η); NaN where a band has no flux.
    """
    if pt.wcs_state != WCS_PROJECTED:
        raise RecipeError("darcheck needs a projected pixel table")
    xi, eta = (a * ARCSEC_PER_RAD for a in tangent_offsets(pt))
    good = (pt.dq == 0) & np.isfinite(pt.data)
    ix = np.floor(xi / 0.2 + 0.5).astype(np.int64)
    iy = np.floor(eta / 0.2 + 0.5).astype(np.int64)
    x0, y0 = ix[good].min(), iy[good].min()
    nx, ny = ix[good].max() - x0 + 1, iy[good].max() - y0 + 1
    flat = (iy[good] - y0) * nx + (ix[good] - x0)
    total = np.bincount(flat, weights=pt.data[good].astype(np.float64), minlength=nx * ny)
    count = np.bincount(flat, minlength=nx * ny)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(count > 0, total / np.maximum(count, 1), np.nan).reshape(ny, nx)
    padded = np.nan_to_num(np.pad(image, 1), nan=0.0)
    box = sum(padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    py, px = np.unravel_index(int(np.argmax(box)), box.shape)
    cx, cy = (px + x0) * 0.2, (py + y0) * 0.2
    lam = pt.lam
    edges = np.linspace(float(lam[good].min()), float(lam[good].max()), nbands + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    out_x = np.full(nbands, np.nan)
    out_y = np.full(nbands, np.nan)
    near = good & ((xi - cx) ** 2 + (eta - cy) ** 2 < radius_arcsec**2)
    for b in range(nbands):
        band = good & (lam >= edges[b]) & (lam <= edges[b + 1])
        if not band.any():
            continue
        bg = float(np.median(pt.data[band]))
        sel = near & band
        w = np.clip(pt.data[sel].astype(np.float64) - bg, 0.0, None)
        if w.sum() > 0:
            out_x[b] = float(np.sum(w * xi[sel]) / w.sum())
            out_y[b] = float(np.sum(w * eta[sel]) / w.sum())
    return centres, out_x, out_y


def check_dar(pt: PixTable, correct: bool = False, order: int = 2) -> float:
    """``darcheck``: the maximum centroid drift [arcsec] of the brightest source with λ.

    Records ``ESO DRS MUSE PIXTABLE DAR CHECK`` (the drift); with ``correct`` a polynomial
    of ``order`` in λ fitted to the band centroids (relative to their mean) is removed
    from every row and the remaining drift is recorded as ``… DAR CORRECT RESIDUAL``.
    """
    lam, cx, cy = centroid_drift(pt)
    ok = np.isfinite(cx) & np.isfinite(cy)
    if ok.sum() < 3:
        raise RecipeError("darcheck: no source bright enough to measure the DAR drift")
    dx, dy = cx[ok] - cx[ok].mean(), cy[ok] - cy[ok].mean()
    drift = float(np.max(np.hypot(dx, dy)))
    pt.header[hkey(pkey("DAR CHECK"))] = (drift, "[arcsec] max centroid drift with wavelength")
    if correct:
        deg = min(order, int(ok.sum()) - 1)
        px = np.polyfit(lam[ok], dx, deg)
        py = np.polyfit(lam[ok], dy, deg)
        xi, eta = tangent_offsets(pt)
        lam_rows = pt.lam.astype(np.float64)
        xi -= np.polyval(px, lam_rows) / ARCSEC_PER_RAD
        eta -= np.polyval(py, lam_rows) / ARCSEC_PER_RAD
        _set_tangent(pt, xi, eta)
        lam2, cx2, cy2 = centroid_drift(pt)
        ok2 = np.isfinite(cx2) & np.isfinite(cy2)
        residual = float(np.max(np.hypot(cx2[ok2] - cx2[ok2].mean(), cy2[ok2] - cy2[ok2].mean())))
        pt.header[hkey(pkey("DAR CORRECT RESIDUAL"))] = (residual, "[arcsec] drift after the correction")
        pt.update_limits()
    return drift
