"""Profile fits and aperture sums of a point source in a cube cut-out, plane by plane
(muse_standard ``profile``, recipes.md §3.8 step 4).

* :func:`fit_planes` — a Moffat (A (1 + r²/α²)^(−β) + b) or Gaussian (A exp(−r²/2σ²) + b)
  plus constant background fitted to every plane (``moffat``, ``gaussian``);
* :func:`binned_fit` and :func:`smoothed_moffat` — ``smoffat``: Moffat fits to means of
  a few planes, centre/width/β smoothed in λ (:func:`smooth_in_lambda`), then amplitude
  and background refitted per plane by linear least squares;
* :func:`aperture_flux` — ``circle``/``square``: background-subtracted aperture sums.

Positions are 0-based pixels of the cut-out (x along the second array axis, y along the
first), widths in pixels; fluxes in data value × pixel² (the plane integral), variances
from the fit covariance. Cut-outs are ``[z, y, x]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares


def moffat_model(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A (1 + r²/α²)^(−β) + b with p = (A, x0, y0, α, β, b), positions in pixels."""
    a, x0, y0, alpha, beta, b = p
    return a * (1.0 + ((x - x0) ** 2 + (y - y0) ** 2) / alpha**2) ** (-beta) + b


def moffat_flux(amplitude: float | np.ndarray, alpha: float | np.ndarray,
                beta: float | np.ndarray) -> float | np.ndarray:
    """Integral of the Moffat over the plane: A π α² / (β − 1) [value × pixel²]."""
    return amplitude * np.pi * alpha**2 / (beta - 1.0)


def moffat_fwhm(alpha: float | np.ndarray, beta: float | np.ndarray) -> float | np.ndarray:
    """FWHM [pixels] of a Moffat of width α [pixels] and index β: 2α √(2^(1/β) − 1)."""
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


def cutout_box(source_xy: tuple[float, float], half: float, shape: tuple[int, int]) -> tuple[slice, slice]:
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


def smooth_in_lambda(values: np.ndarray, order: int = 3, clip: float = 3.0, at: np.ndarray | None = None,
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
        return smooth_in_lambda(values, at=at, where=planes)

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
