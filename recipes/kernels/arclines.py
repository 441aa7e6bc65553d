"""Arc-line centring: Gaussian fits along CCD columns (numba, with a numpy twin).

Conventions: arrays are 0-based ``[y, x]``; pixel ``i`` covers ``[i - 1/2, i + 1/2]``.
The line model is a pixel-integrated Gaussian on a constant background,

    m_i = bg + flux * [Phi((i + 1/2 - mu) / s) - Phi((i - 1/2 - mu) / s)],

fitted by Levenberg-Marquardt with weights 1/variance over ``2 * halfwin + 1`` pixels
around the guess. Integrating over the pixel keeps the fitted width free of the pixel
(so the FWHM of the LSF is right) and the centre unbiased for lines between pixels.

A fit is accepted with the limits of the DRS (recipes.md §1): centring error ≤ 1.25 px,
FWHM between 1 and 5 px, flux ≥ 50 (count), and the centre within the window.

``fit_lines_across`` follows each line from the slice-centre column to both slice edges,
one column at a time, starting each fit from the previous column's centre (arc lines are
curved by a few pixels across a slice).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

SQRT2 = math.sqrt(2.0)
SQRT2PI = math.sqrt(2.0 * math.pi)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# DRS acceptance limits for a line fit (recipes.md §1).
MAX_CENTRE_ERROR = 1.25  # px
MIN_FWHM = 1.0  # px
MAX_FWHM = 5.0  # px
MIN_FLUX = 50.0  # count
# Output columns of a fit: centre, centre error, sigma, flux, background, chi2/dof.
NFIT = 6


@njit(cache=True)
def _cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / SQRT2))


@njit(cache=True)
def _pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / SQRT2PI


@njit(cache=True)
def _model(i: int, mu: float, sig: float, flux: float, bg: float, grad: np.ndarray) -> float:
    zp = (i + 0.5 - mu) / sig
    zm = (i - 0.5 - mu) / sig
    cp = _cdf(zp)
    cm = _cdf(zm)
    pp = _pdf(zp)
    pm = _pdf(zm)
    grad[0] = -flux / sig * (pp - pm)  # d/dmu
    grad[1] = -flux / sig * (zp * pp - zm * pm)  # d/dsigma
    grad[2] = cp - cm  # d/dflux
    grad[3] = 1.0  # d/dbg
    return bg + flux * (cp - cm)


@njit(cache=True)
def _solve4(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """Solve the 4x4 system a x = b by Gaussian elimination with partial pivoting."""
    m = np.empty((4, 5))
    for r in range(4):
        for c in range(4):
            m[r, c] = a[r, c]
        m[r, 4] = b[r]
    for c in range(4):
        piv = c
        for r in range(c + 1, 4):
            if abs(m[r, c]) > abs(m[piv, c]):
                piv = r
        if m[piv, c] == 0.0:
            return False
        if piv != c:
            for k in range(5):
                tmp = m[c, k]
                m[c, k] = m[piv, k]
                m[piv, k] = tmp
        for r in range(c + 1, 4):
            f = m[r, c] / m[c, c]
            for k in range(c, 5):
                m[r, k] -= f * m[c, k]
    for r in range(3, -1, -1):
        acc = m[r, 4]
        for k in range(r + 1, 4):
            acc -= m[r, k] * out[k]
        out[r] = acc / m[r, r]
    return True


@njit(cache=True)
def _invert_diag0(a: np.ndarray) -> float:
    """Element [0, 0] of the inverse of the 4x4 matrix a (NaN if singular)."""
    e0 = np.zeros(4)
    e0[0] = 1.0
    col = np.zeros(4)
    if not _solve4(a, e0, col):
        return np.nan
    return col[0]


@njit(cache=True)
def gauss_fit(data: np.ndarray, var: np.ndarray, guess: float, halfwin: int, sigma0: float) -> np.ndarray:
    """Fit one line in the 1-D array ``data`` (variance ``var``) around index ``guess``.

    Returns [centre, centre error, sigma, flux, background, reduced chi2] (pixels and
    data units); all NaN when the window leaves the array, the fit fails or breaks the
    DRS limits.
    """
    out = np.full(NFIT, np.nan)
    n = data.shape[0]
    c = int(math.floor(guess + 0.5))
    lo = c - halfwin
    hi = c + halfwin
    if lo < 0 or hi >= n:
        return out
    npix = hi - lo + 1
    w = np.empty(npix)
    for k in range(npix):
        v = var[lo + k]
        if not (v > 0.0) or not math.isfinite(data[lo + k]):
            return out
        w[k] = 1.0 / v
    # Starting values: background from the window ends, flux from the sum above it.
    bg = min(data[lo], data[hi])
    flux = 0.0
    for k in range(npix):
        flux += data[lo + k] - bg
    if flux <= 0.0:
        return out
    par = np.array([guess, sigma0, flux, bg])
    grad = np.zeros(4)
    jtj = np.zeros((4, 4))
    jtr = np.zeros(4)
    step = np.zeros(4)
    trial = np.zeros(4)
    lam = 1e-3

    def chi2_of(p):  # noqa: ANN001 - closure compiled by numba
        g = np.zeros(4)
        s = 0.0
        for k in range(npix):
            r = data[lo + k] - _model(lo + k, p[0], p[1], p[2], p[3], g)
            s += w[k] * r * r
        return s

    chi2 = chi2_of(par)
    for _ in range(50):
        jtj[:, :] = 0.0
        jtr[:] = 0.0
        for k in range(npix):
            r = data[lo + k] - _model(lo + k, par[0], par[1], par[2], par[3], grad)
            for a in range(4):
                jtr[a] += w[k] * grad[a] * r
                for b in range(4):
                    jtj[a, b] += w[k] * grad[a] * grad[b]
        improved = False
        for _inner in range(10):
            damped = jtj.copy()
            for a in range(4):
                damped[a, a] *= 1.0 + lam
            if not _solve4(damped, jtr, step):
                return out
            for a in range(4):
                trial[a] = par[a] + step[a]
            if trial[1] <= 0.05 or trial[1] > 10.0:
                lam *= 10.0
                continue
            c2 = chi2_of(trial)
            if c2 <= chi2:
                par[:] = trial
                done = chi2 - c2 < 1e-10 * (1.0 + chi2)
                chi2 = c2
                lam = max(lam * 0.1, 1e-12)
                improved = True
                break
            lam *= 10.0
        if not improved or done:
            break
    # Covariance from the undamped normal matrix at the solution.
    jtj[:, :] = 0.0
    for k in range(npix):
        _model(lo + k, par[0], par[1], par[2], par[3], grad)
        for a in range(4):
            for b in range(4):
                jtj[a, b] += w[k] * grad[a] * grad[b]
    dof = max(npix - 4, 1)
    redchi = chi2 / dof
    var_mu = _invert_diag0(jtj)
    if not (var_mu > 0.0):
        return out
    # Scale by the reduced chi2 when the fit is worse than the variance says.
    cerr = math.sqrt(var_mu * max(redchi, 1.0))
    fwhm = par[1] * FWHM_PER_SIGMA
    if (
        cerr > MAX_CENTRE_ERROR
        or fwhm < MIN_FWHM
        or fwhm > MAX_FWHM
        or par[2] < MIN_FLUX
        or par[0] < lo
        or par[0] > hi
    ):
        return out
    out[0] = par[0]
    out[1] = cerr
    out[2] = par[1]
    out[3] = par[2]
    out[4] = par[3]
    out[5] = redchi
    return out


@njit(cache=True, parallel=True)
def fit_lines_across(
    image: np.ndarray,
    var: np.ndarray,
    columns: np.ndarray,
    start: int,
    yguess: np.ndarray,
    halfwin: int,
    sigma0: float,
) -> np.ndarray:
    """Fit every line in every column of a slice: array (nline, ncol, NFIT), NaN = no fit.

    ``columns`` are the 0-based CCD columns of the slice (increasing), ``start`` the index
    in ``columns`` of the centre column, ``yguess`` the 0-based row of each line there.
    Each line is followed outwards from the centre; the guess for a column is the last
    accepted centre, so one failed column does not lose the line.
    """
    nline = yguess.shape[0]
    ncol = columns.shape[0]
    out = np.full((nline, ncol, NFIT), np.nan)
    for li in prange(nline):
        for direction in (1, -1):
            guess = yguess[li]
            k = start if direction == 1 else start - 1
            while 0 <= k < ncol:
                col = columns[k]
                res = gauss_fit(image[:, col], var[:, col], guess, halfwin, sigma0)
                if math.isfinite(res[0]) and abs(res[0] - guess) < 1.5:
                    for a in range(NFIT):
                        out[li, k, a] = res[a]
                    guess = res[0]
                k += direction
    return out


@njit(cache=True, parallel=True)
def fit_peaks(data: np.ndarray, var: np.ndarray, guesses: np.ndarray, halfwin: int, sigma0: float) -> np.ndarray:
    """:func:`gauss_fit` of every guess in a 1-D spectrum: array (n, NFIT), NaN = rejected."""
    out = np.full((guesses.shape[0], NFIT), np.nan)
    for k in prange(guesses.shape[0]):
        out[k] = gauss_fit(data, var, guesses[k], halfwin, sigma0)
    return out


# --------------------------------------------------------------------------------------
# numpy reference (readable, slow) used by the tests to check the kernels.


def gauss_fit_reference(data: np.ndarray, var: np.ndarray, guess: float, halfwin: int, sigma0: float) -> np.ndarray:
    """Pure numpy/scipy twin of :func:`gauss_fit`."""
    from scipy.optimize import least_squares
    from scipy.special import ndtr

    out = np.full(NFIT, np.nan)
    c = int(np.floor(guess + 0.5))
    lo, hi = c - halfwin, c + halfwin
    if lo < 0 or hi >= data.size:
        return out
    i = np.arange(lo, hi + 1, dtype=float)
    d, v = data[lo : hi + 1], var[lo : hi + 1]
    if not (np.all(v > 0) and np.all(np.isfinite(d))):
        return out
    bg = min(d[0], d[-1])
    flux = (d - bg).sum()
    if flux <= 0:
        return out

    def model(p: np.ndarray) -> np.ndarray:
        mu, sig, f, b = p
        return b + f * (ndtr((i + 0.5 - mu) / sig) - ndtr((i - 0.5 - mu) / sig))

    fit = least_squares(
        lambda p: (d - model(p)) / np.sqrt(v),
        [guess, sigma0, flux, bg],
        bounds=([-np.inf, 0.05, -np.inf, -np.inf], [np.inf, 10.0, np.inf, np.inf]),
        xtol=1e-12,
        ftol=1e-14,
        gtol=1e-14,
    )
    mu, sig, f, b = fit.x
    jac = fit.jac
    dof = max(i.size - 4, 1)
    redchi = 2 * fit.cost / dof
    cov = np.linalg.inv(jac.T @ jac)
    cerr = np.sqrt(cov[0, 0] * max(redchi, 1.0))
    fwhm = sig * FWHM_PER_SIGMA
    if cerr > MAX_CENTRE_ERROR or not MIN_FWHM <= fwhm <= MAX_FWHM or f < MIN_FLUX or not lo <= mu <= hi:
        return out
    return np.array([mu, cerr, sig, f, b, redchi])
