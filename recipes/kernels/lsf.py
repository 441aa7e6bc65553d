"""Local regression of the line spread function on a Δλ grid (numba), with a numpy twin.

The input is the cloud of normalised arc-line samples of one slice: for every pixel near
an arc line its offset ``dlam`` = λ(pixel) − λ(line) in Å, the line's scaled wavelength
``t`` in [−1, 1], the flux-normalised value (1/Å) and a weight. For every grid offset
δ_k, the points with |dlam − δ_k| < ``halfwidth`` are fitted by weighted least squares
with the model

    v ≈ Σ_{j≤2} Σ_{m≤lorder} a_jm · u^j · t^m,     u = (dlam − δ_k) / halfwidth,

(a local quadratic in the offset, a polynomial of ``lorder`` in the line wavelength),
with tricube weights (1 − |u|³)³ times the point weights. The profile at δ_k is then the
u = 0 term, Σ_m a_0m t^m, so the kernel returns the coefficients ``a_0m`` per grid
point. The local quadratic (not linear) keeps the peak unbiased to second order.

A grid point whose normal matrix is singular (too few points or lines in the window)
gets NaN coefficients; the caller fills those.
"""

from __future__ import annotations

import numba
import numpy as np

#: Order of the local polynomial along the offset axis.
LOCAL_ORDER = 2
#: Relative pivot below which a normal matrix counts as singular.
PIVOT_EPS = 1e-12


@numba.njit(cache=True)
def _solve_inplace(a, b):  # pragma: no cover - numba
    """Solve a x = b by Gaussian elimination with partial pivoting; False if singular."""
    n = a.shape[0]
    scale = 0.0
    for i in range(n):
        scale = max(scale, abs(a[i, i]))
    if scale <= 0.0:
        return False
    for col in range(n):
        piv = col
        for r in range(col + 1, n):
            if abs(a[r, col]) > abs(a[piv, col]):
                piv = r
        if abs(a[piv, col]) <= PIVOT_EPS * scale:
            return False
        if piv != col:
            for c in range(n):
                tmp = a[col, c]
                a[col, c] = a[piv, c]
                a[piv, c] = tmp
            tmp = b[col]
            b[col] = b[piv]
            b[piv] = tmp
        for r in range(col + 1, n):
            f = a[r, col] / a[col, col]
            if f != 0.0:
                for c in range(col, n):
                    a[r, c] -= f * a[col, c]
                b[r] -= f * b[col]
    for r in range(n - 1, -1, -1):
        s = b[r]
        for c in range(r + 1, n):
            s -= a[r, c] * b[c]
        b[r] = s / a[r, r]
    return True


@numba.njit(cache=True, parallel=True)
def _local_fit_kernel(dlam, t, values, weights, grid, halfwidth, lorder, out, npts):  # pragma: no cover
    # The normal matrix of the basis u^j t^m only depends on the moment sums
    # S[a, b] = Σ w u^a t^b (a ≤ 2·LOCAL_ORDER, b ≤ 2·lorder), so those are accumulated
    # instead of the full outer product (about half the work for lorder = 4).
    nk = grid.shape[0]
    n = dlam.shape[0]
    nu = LOCAL_ORDER + 1
    nt = lorder + 1
    nbasis = nu * nt
    tp = np.empty((n, 2 * lorder + 1))
    for i in range(n):
        v = 1.0
        for b in range(2 * lorder + 1):
            tp[i, b] = v
            v *= t[i]
    for k in numba.prange(nk):
        g = grid[k]
        lo = np.searchsorted(dlam, g - halfwidth)
        hi = np.searchsorted(dlam, g + halfwidth)
        mom = np.zeros((2 * LOCAL_ORDER + 1, 2 * lorder + 1))
        rhs = np.zeros((nu, nt))
        up = np.empty(2 * LOCAL_ORDER + 1)
        count = 0
        for i in range(lo, hi):
            u = (dlam[i] - g) / halfwidth
            au = abs(u)
            if au >= 1.0 or weights[i] <= 0.0:
                continue
            c = 1.0 - au * au * au
            w = c * c * c * weights[i]
            up[0] = w
            for a in range(1, 2 * LOCAL_ORDER + 1):
                up[a] = up[a - 1] * u
            for a in range(2 * LOCAL_ORDER + 1):
                for b in range(2 * lorder + 1):
                    mom[a, b] += up[a] * tp[i, b]
            wv = values[i]
            for j in range(nu):
                for m in range(nt):
                    rhs[j, m] += up[j] * tp[i, m] * wv
            count += 1
        npts[k] = count
        a_mat = np.empty((nbasis, nbasis))
        b_vec = np.empty(nbasis)
        for j in range(nu):
            for m in range(nt):
                p = j * nt + m
                b_vec[p] = rhs[j, m]
                for j2 in range(nu):
                    for m2 in range(nt):
                        a_mat[p, j2 * nt + m2] = mom[j + j2, m + m2]
        if count >= nbasis and _solve_inplace(a_mat, b_vec):
            for m in range(nt):
                out[k, m] = b_vec[m]
        else:
            for m in range(nt):
                out[k, m] = np.nan


def _check(dlam, t, values, weights, grid, halfwidth, lorder):
    dlam = np.ascontiguousarray(dlam, dtype=np.float64)
    if dlam.size > 1 and np.any(np.diff(dlam) < 0):
        raise ValueError("dlam must be sorted in increasing order")
    t = np.ascontiguousarray(t, dtype=np.float64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if not (t.shape == values.shape == weights.shape == dlam.shape):
        raise ValueError("dlam, t, values and weights must have the same length")
    if halfwidth <= 0 or lorder < 0:
        raise ValueError("halfwidth must be > 0 and lorder >= 0")
    return dlam, t, values, weights, np.ascontiguousarray(grid, dtype=np.float64)


def local_profile_fit(
    dlam: np.ndarray,
    t: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    grid: np.ndarray,
    halfwidth: float,
    lorder: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the profile at every grid offset (numba, parallel over grid points).

    ``dlam`` (Å) must be sorted ascending; ``t`` is the scaled line wavelength,
    ``values`` the normalised samples (1/Å), ``weights`` ≥ 0. Returns
    ``(coeffs[len(grid), lorder + 1], npoints[len(grid)])``: the profile at grid[k] and
    scaled wavelength t is ``Σ_m coeffs[k, m] t^m`` (NaN where the fit was singular).
    """
    dlam, t, values, weights, grid = _check(dlam, t, values, weights, grid, halfwidth, lorder)
    out = np.empty((grid.size, lorder + 1))
    npts = np.zeros(grid.size, dtype=np.int64)
    _local_fit_kernel(dlam, t, values, weights, grid, float(halfwidth), int(lorder), out, npts)
    return out, npts


def local_profile_fit_reference(
    dlam: np.ndarray,
    t: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    grid: np.ndarray,
    halfwidth: float,
    lorder: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pure-numpy twin of :func:`local_profile_fit` (same arguments, same result)."""
    dlam, t, values, weights, grid = _check(dlam, t, values, weights, grid, halfwidth, lorder)
    nbasis = (LOCAL_ORDER + 1) * (lorder + 1)
    out = np.full((grid.size, lorder + 1), np.nan)
    npts = np.zeros(grid.size, dtype=np.int64)
    for k, g in enumerate(grid):
        u = (dlam - g) / halfwidth
        sel = (np.abs(u) < 1.0) & (weights > 0)
        npts[k] = int(sel.sum())
        if npts[k] < nbasis:
            continue
        w = (1.0 - np.abs(u[sel]) ** 3) ** 3 * weights[sel]
        powers = [(j, m) for j in range(LOCAL_ORDER + 1) for m in range(lorder + 1)]
        design = np.stack([u[sel] ** j * t[sel] ** m for j, m in powers], axis=1)
        normal = design.T @ (design * w[:, None])
        if np.linalg.cond(normal) > 1.0 / PIVOT_EPS:
            continue
        out[k] = np.linalg.solve(normal, design.T @ (w * values[sel]))[: lorder + 1]
    return out, npts
