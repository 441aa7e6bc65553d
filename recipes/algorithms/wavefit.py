"""The 2-D wavelength polynomial of one slice (muse_wavecal step 4): an iteratively
clipped, weighted tensor polynomial λ(x, y) = Σ wlc[I, J] x^I y^J, fitted in coordinates
scaled to [-1, 1] and returned as raw powers of absolute 1-based trimmed-CCD x, y
(the WAVECAL_TABLE convention; Å in air).
"""

from __future__ import annotations

from math import comb

import numpy as np

REJECT_FLOOR = 1e-4  # Å, smallest rejection limit of the 2-D fit


def _raw_matrix(order: int, offset: float, scale: float) -> np.ndarray:
    """M with raw = M @ scaled for a 1-D polynomial in t = (v - offset) / scale."""
    m = np.zeros((order + 1, order + 1))
    for k in range(order + 1):
        for p in range(k + 1):
            m[p, k] = comb(k, p) * (-offset) ** (k - p) / scale**k
    return m


def _weighted_lsq(design: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares through the normal equations.

    The design columns are powers of coordinates scaled to [-1, 1], so the normal matrix
    is well conditioned; this is ~50x faster than an SVD-based lstsq for the ~2000 x 21
    systems of a slice, and the accuracy (tested) is far below 1e-6 Å.
    """
    wd = design * weights[:, None]
    # einsum, not BLAS matmul: OpenBLAS threads spin against numba's worker threads and
    # made these tiny products 100x slower on a loaded machine.
    return np.linalg.solve(np.einsum("ki,kj->ij", wd, design), np.einsum("ki,k->i", wd, values))


def fit_2d(
    x: np.ndarray,
    y: np.ndarray,
    lam: np.ndarray,
    weights: np.ndarray,
    xorder: int,
    yorder: int,
    fitsigma: float,
    max_iter: int = 20,
) -> tuple[np.ndarray, np.ndarray, float, list[tuple[int, np.ndarray, np.ndarray, float]]]:
    """Iteratively clipped weighted tensor polynomial λ(x, y), raw powers of x and y.

    Each pass rejects the points beyond ``fitsigma`` times the RMS of the kept residuals
    (the DRS rejects in Å), until none goes. The terms x^I y^J with I ≥ 1 (the change of
    the line curvature along the slice) go up to a y order chosen between 0 and
    ``yorder`` by the Bayesian information criterion, the I = 0 terms always to
    ``yorder``: the DRS always fits the full tensor, whose high-order cross terms are
    unconstrained beyond the first and last lines and there moved λ by up to 0.08 Å on
    the simulated mini CCD (0.026 Å with the selection). Unused coefficients are zero.
    Returns (wlc[xorder+1, yorder+1], kept mask, RMS of the kept residuals in Å,
    per-iteration log for WAVECAL_RESIDUALS).
    """
    xc, xs = 0.5 * (x.min() + x.max()), max(0.5 * (x.max() - x.min()), 1.0)
    yc, ys = 0.5 * (y.min() + y.max()), max(0.5 * (y.max() - y.min()), 1.0)
    u = (x - xc) / xs
    v = (y - yc) / ys
    good = np.isfinite(lam) & np.isfinite(weights) & (weights > 0)
    if not good.any():
        raise ValueError("no line positions to fit")
    sw = weights / np.median(weights[good])
    full_terms = [(i, j) for i in range(xorder + 1) for j in range(yorder + 1)]
    full_design = np.stack([u**i * v**j for i, j in full_terms], axis=1)
    best = None
    for cross in range(yorder + 1) if xorder > 0 else (0,):
        terms = [(i, j) for i, j in full_terms if i == 0 or j <= cross]
        columns = [full_terms.index(t) for t in terms]
        result = _clipped_fit(full_design[:, columns], lam, sw, good, fitsigma, max_iter)
        if best is None or result[4] < best[4]:
            best = result + (terms,)
    coeffs, kept, rms, log, _, terms = best
    scaled = np.zeros((xorder + 1, yorder + 1))
    for (i, j), c in zip(terms, coeffs):
        scaled[i, j] = c
    wlc = _raw_matrix(xorder, xc, xs) @ scaled @ _raw_matrix(yorder, yc, ys).T
    return wlc, kept, rms, log


def _clipped_fit(
    design: np.ndarray,
    lam: np.ndarray,
    sw: np.ndarray,
    good: np.ndarray,
    fitsigma: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, float, list, float]:
    """One clipped fit of the design columns (first column constant): (coeffs, kept, rms, log, BIC)."""
    nterms = design.shape[1]
    kept = good.copy()
    lam_ref = float(np.median(lam[kept]))
    log = []
    coeffs = np.zeros(nterms)
    rms = np.nan
    resid = np.zeros_like(lam)
    for iteration in range(1, max_iter + 1):
        if kept.sum() <= nterms:
            raise ValueError(f"{kept.sum()} line positions cannot fit {nterms} coefficients")
        coeffs = _weighted_lsq(design[kept], lam[kept] - lam_ref, sw[kept])
        coeffs[0] += lam_ref
        resid = lam - design @ coeffs
        rms = float(np.sqrt(np.mean(resid[kept] ** 2)))
        # The floor keeps an exact (noise-free) fit from clipping round-off.
        limit = max(fitsigma * rms, REJECT_FLOOR)
        idx = np.flatnonzero(kept)
        log.append((iteration, idx, resid[idx], limit))
        newkept = kept & (np.abs(resid) <= limit)
        if newkept.sum() == kept.sum():
            break
        kept = newkept
    n = int(kept.sum())
    rss = float(np.sum(sw[kept] * resid[kept] ** 2))
    bic = n * np.log(max(rss, 1e-300) / n) + nterms * np.log(n)
    return coeffs, kept, rms, log, bic
