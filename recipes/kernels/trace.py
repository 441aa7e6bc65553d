"""Slice-edge finding along horizontal cuts of a flat field (numba, with a numpy twin).

Conventions: arrays are 0-based; a cut is a 1-D profile along x (the average of ``nsum``
CCD rows); pixel ``i`` covers ``[i - 0.5, i + 0.5]`` so positions are pixel centres.

An edge is where the intrinsic (blurred, before pixel integration) profile crosses
``B + edgefrac * (L - B)``: ``L`` is the slice plateau extrapolated to the edge by a
straight-line fit to the plateau pixels just inside (so that an illumination slope across
the slice does not bias the edge) and ``B = 0`` as in the DRS definition ("edgefrac of
the plateau": bias-subtracted lamp flats have dark gaps, whose light is the wings of the
two edges). The profile is normalised to the step ``S = p / L``; a coarse 50 % crossing
(linear interpolation) is refined by a least-squares fit of a pixel-integrated
Gaussian-blurred step (edge and blur width free) to the pixels around it, stopping
before the gap's lowest pixel so that a narrow gap does not let the neighbouring slice
in. Linear or cubic interpolation of the crossing alone is biased by up to 0.04 px for
sharp or wide blurs. A flagged (NaN) pixel drops out of the fit; next to the crossing it
would leave the blur width degenerate, so there the blur is fixed to the typical one. For ``edgefrac`` other than 0.5 the edge
is ``e ± s * z(edgefrac)`` with the fitted blur width ``s``.

``edge_walk`` follows each slice from the central cut to the top and bottom cuts, using
the previous cut's edges as the guess (slices are tilted and curved by a few pixels).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Pixels between the guessed edge and the first plateau pixel used for the level fit,
# and the number of plateau pixels fitted; the edge blur is ~1 px, so 3 px clear it.
PLATEAU_OFFSET = 3
PLATEAU_LENGTH = 8
# Half-width (pix) of the window searched for the crossing around the guess.
SEARCH_HALFWIDTH = 5
# Half-width (pix) of the window of the step fit around the coarse crossing.
FIT_HALFWIDTH = 3
SQRT2 = math.sqrt(2.0)
SQRT2PI = math.sqrt(2.0 * math.pi)


@njit(cache=True)
def _plateau_fit(profile: np.ndarray, start: int, stop: int) -> tuple[float, float]:
    """Straight-line least-squares fit to profile[start:stop]: (intercept at 0, slope)."""
    n = 0
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    sxy = 0.0
    for i in range(max(start, 0), min(stop, profile.shape[0])):
        v = profile[i]
        if not np.isfinite(v):
            continue
        n += 1
        sx += i
        sy += v
        sxx += i * i
        sxy += i * v
    if n == 0:
        return np.nan, 0.0
    if n < 3:
        return sy / n, 0.0
    det = n * sxx - sx * sx
    slope = (n * sxy - sx * sy) / det
    return (sy - slope * sx) / n, slope


@njit(cache=True)
def find_edge(profile: np.ndarray, guess: float, rising: bool, zfrac: float, plateau_len: int, blur: float) -> float:
    """Sub-pixel position of the slice edge nearest ``guess``; NaN when not found.

    ``rising`` is True for a left edge (gap on the left, slice on the right). ``zfrac`` is
    the standard-normal quantile of ``edgefrac`` (0 for the default 0.5).
    ``plateau_len`` is the number of plateau pixels fitted for the level (at most
    ``PLATEAU_LENGTH``; less for narrow slices). The measurement is repeated once from
    the first result, so that the plateau pixels start a fixed distance from the edge
    whatever the guess. ``blur`` (px) is the edge blur assumed when a flagged (NaN) pixel
    sits next to the crossing, where a fit with a free blur is degenerate; ≤ 0 keeps the
    blur free always.
    """
    edge, _ = _edge_once(profile, guess, rising, zfrac, plateau_len, blur)
    if np.isfinite(edge):
        edge, _ = _edge_once(profile, edge, rising, zfrac, plateau_len, blur)
    return edge


@njit(cache=True)
def edge_blur(profile: np.ndarray, guess: float, rising: bool, plateau_len: int) -> float:
    """Fitted Gaussian blur (px) of the edge nearest ``guess`` (NaN when not found)."""
    edge, sig = _edge_once(profile, guess, rising, 0.0, plateau_len, 0.0)
    if np.isfinite(edge):
        edge, sig = _edge_once(profile, edge, rising, 0.0, plateau_len, 0.0)
    return sig


@njit(cache=True)
def _edge_once(
    profile: np.ndarray, guess: float, rising: bool, zfrac: float, plateau_len: int, blur: float
) -> tuple[float, float]:
    n = profile.shape[0]
    g = int(np.floor(guess + 0.5))
    npl = max(min(plateau_len, PLATEAU_LENGTH), 2)
    if rising:
        p0 = int(np.ceil(guess + PLATEAU_OFFSET + 0.5))
        icpt, slope = _plateau_fit(profile, p0, p0 + npl)
    else:
        p1 = int(np.floor(guess - PLATEAU_OFFSET - 0.5))
        icpt, slope = _plateau_fit(profile, p1 - npl + 1, p1 + 1)
    if not np.isfinite(icpt):
        return np.nan, np.nan
    # The gap's lowest pixel bounds the fit window on the gap side.
    gapmin = np.inf
    gmin = -1
    if rising:
        glo, ghi = g - SEARCH_HALFWIDTH - 2, g
    else:
        glo, ghi = g + 1, g + SEARCH_HALFWIDTH + 3
    for i in range(max(glo, 0), min(ghi, n)):
        v = profile[i]
        if np.isfinite(v) and v < gapmin:
            gapmin = v
            gmin = i
    if gmin < 0:
        return np.nan, np.nan
    level = icpt + slope * guess
    # As in the DRS, an edge is where the flux falls to edgefrac of the plateau: the
    # background is zero (bias-subtracted lamp flats have dark gaps; the light in a
    # 3-8 px gap is the wings of its two edges, so its minimum is no pedestal).
    back = 0.0
    if not (gapmin < 0.5 * level):
        return np.nan, np.nan
    # Coarse 50 % crossing nearest the guess, on the normalised step.
    best = np.nan
    bestdist = np.inf
    for i in range(max(g - SEARCH_HALFWIDTH, 0), min(g + SEARCH_HALFWIDTH, n - 1)):
        # A flagged (NaN) pixel is stepped over: compare with the next good one.
        j = i + 1
        if not np.isfinite(profile[j]) and j + 1 < n:
            j += 1
        a = (profile[i] - back) / (icpt + slope * i - back)
        b = (profile[j] - back) / (icpt + slope * j - back)
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        if rising:
            crosses = a < 0.5 and b >= 0.5
        else:
            crosses = a >= 0.5 and b < 0.5
        if crosses:
            pos = i + (j - i) * (0.5 - a) / (b - a)
            if abs(pos - guess) < bestdist:
                bestdist = abs(pos - guess)
                best = pos
    if not np.isfinite(best):
        return np.nan, np.nan
    # Refine with a least-squares fit of the pixel-integrated blurred step (Gauss-Newton
    # on edge and blur width) to the normalised profile. On the gap side the window stops
    # before the gap's lowest pixel, so a narrow gap does not let the next slice in.
    c = int(np.floor(best + 0.5))
    if rising:
        lo = max(c - FIT_HALFWIDTH, gmin + 1)
        hi = c + FIT_HALFWIDTH
    else:
        lo = c - FIT_HALFWIDTH
        hi = min(c + FIT_HALFWIDTH, gmin - 1)
    if lo < 0 or hi >= n or hi - lo < 3:
        return np.nan, np.nan
    fixed = 0.0
    if blur > 0.0:
        for i in range(c - 1, c + 2):
            if not np.isfinite(profile[i]):
                fixed = blur
    return _fit_step(profile, lo, hi, back, icpt, slope, rising, best, zfrac, fixed)


@njit(cache=True)
def _phi(z: float) -> float:
    return np.exp(-0.5 * z * z) / SQRT2PI


@njit(cache=True)
def _cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / SQRT2))


@njit(cache=True)
def _fit_step(
    profile: np.ndarray,
    lo: int,
    hi: int,
    back: float,
    icpt: float,
    slope: float,
    rising: bool,
    e0: float,
    zfrac: float,
    fixed: float,
) -> tuple[float, float]:
    """Gauss-Newton fit of S(i) = sigma [A(z+) - A(z-)], A(z) = z Phi(z) + phi(z),
    z± = ±(i ± 1/2 - e)/sigma, to the normalised pixels lo..hi (sigma = ``fixed`` when
    > 0); returns (e + sigma*zfrac (rising) or e - sigma*zfrac (falling), sigma), NaNs
    if the fit does not converge."""
    e = e0
    sig = fixed if fixed > 0.0 else 0.8
    sign = 1.0 if rising else -1.0
    for _ in range(30):
        h11 = 0.0
        h12 = 0.0
        h22 = 0.0
        g1 = 0.0
        g2 = 0.0
        for i in range(lo, hi + 1):
            r = (profile[i] - back) / (icpt + slope * i - back)
            if not np.isfinite(r):
                continue  # flagged pixels simply drop out of the fit
            # For a falling edge mirror the axis: S(x) = rising step in u = -x at -e.
            zp = sign * (i - e) / sig + 0.5 / sig
            zm = sign * (i - e) / sig - 0.5 / sig
            model = sig * (zp * _cdf(zp) + _phi(zp) - zm * _cdf(zm) - _phi(zm))
            de = -sign * (_cdf(zp) - _cdf(zm))
            ds = _phi(zp) - _phi(zm)
            res = r - model
            h11 += de * de
            h12 += de * ds
            h22 += ds * ds
            g1 += de * res
            g2 += ds * res
        if fixed > 0.0:
            if h11 <= 0.0:
                return np.nan, np.nan
            step_e = g1 / h11
            step_s = 0.0
        else:
            det = h11 * h22 - h12 * h12
            if det <= 0.0:
                return np.nan, np.nan
            step_e = (h22 * g1 - h12 * g2) / det
            step_s = (h11 * g2 - h12 * g1) / det
        e += step_e
        sig = min(max(sig + step_s, 0.05), 5.0)
        if abs(step_e) < 1e-7 and abs(step_s) < 1e-7:
            break
    if abs(e - e0) > 2.0:
        return np.nan, np.nan
    return (e + sig * zfrac if rising else e - sig * zfrac), sig


@njit(cache=True, parallel=True)
def edge_walk(
    cuts: np.ndarray, left0: np.ndarray, right0: np.ndarray, start: int, zfrac: float, blur: float
) -> tuple[np.ndarray, np.ndarray]:
    """Left and right edges (ncut, nslice) of every slice in every cut (NaN when lost).

    ``cuts`` is (ncut, nx); ``left0``/``right0`` are the edges found on cut ``start``.
    Each slice is followed from ``start`` upwards and downwards, the guess being the last
    good position; a slice lost on one cut keeps the last good guess for the next.
    """
    ncut = cuts.shape[0]
    nslice = left0.shape[0]
    left = np.full((ncut, nslice), np.nan)
    right = np.full((ncut, nslice), np.nan)
    for s in prange(nslice):
        for direction in (1, -1):
            gl = left0[s]
            gr = right0[s]
            k = start if direction == 1 else start - 1
            while 0 <= k < ncut:
                # Plateau pixels must stay clear of the opposite edge's blur too.
                npl = int(gr - gl) - 2 * PLATEAU_OFFSET - 2
                le = find_edge(cuts[k], gl, True, zfrac, npl, blur)
                ri = find_edge(cuts[k], gr, False, zfrac, npl, blur)
                left[k, s] = le
                right[k, s] = ri
                # Only move the guess when the pair is plausible (width kept within 5 px).
                if np.isfinite(le) and np.isfinite(ri) and abs((ri - le) - (gr - gl)) < 5.0:
                    gl = le
                    gr = ri
                k += direction
    return left, right


# --------------------------------------------------------------------------------------
# numpy reference (readable, slow) used by the tests to check the kernel.

from scipy.optimize import least_squares  # noqa: E402
from scipy.stats import norm  # noqa: E402


def find_edge_reference(
    profile: np.ndarray, guess: float, rising: bool, zfrac: float, plateau_len: int, blur: float
) -> float:
    """Pure-numpy twin of :func:`find_edge`."""
    edge = _edge_once_reference(profile, guess, rising, zfrac, plateau_len, blur)
    return _edge_once_reference(profile, edge, rising, zfrac, plateau_len, blur) if np.isfinite(edge) else edge


def _edge_once_reference(
    profile: np.ndarray, guess: float, rising: bool, zfrac: float, plateau_len: int, blur: float
) -> float:
    n = profile.size
    g = int(np.floor(guess + 0.5))
    npl = max(min(plateau_len, PLATEAU_LENGTH), 2)
    if rising:
        p0 = int(np.ceil(guess + PLATEAU_OFFSET + 0.5))
        idx = np.arange(p0, p0 + npl)
        gap = np.arange(g - SEARCH_HALFWIDTH - 2, g)
    else:
        p1 = int(np.floor(guess - PLATEAU_OFFSET - 0.5))
        idx = np.arange(p1 - npl + 1, p1 + 1)
        gap = np.arange(g + 1, g + SEARCH_HALFWIDTH + 3)
    idx = idx[(idx >= 0) & (idx < n)]
    idx = idx[np.isfinite(profile[idx])]
    if idx.size == 0:
        return np.nan
    slope, icpt = np.polyfit(idx, profile[idx], 1) if idx.size >= 3 else (0.0, profile[idx].mean())
    gap = gap[(gap >= 0) & (gap < n)]
    gap = gap[np.isfinite(profile[gap])]
    if gap.size == 0:
        return np.nan
    gmin = gap[np.argmin(profile[gap])]
    level = icpt + slope * guess
    back = 0.0
    if not profile[gmin] < 0.5 * level:
        return np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        step = (profile - back) / (icpt + slope * np.arange(n) - back)
    best, bestdist = np.nan, np.inf
    for i in range(max(g - SEARCH_HALFWIDTH, 0), min(g + SEARCH_HALFWIDTH, n - 1)):
        j = i + 2 if (not np.isfinite(step[i + 1]) and i + 2 < n) else i + 1
        a, b = step[i], step[j]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        if (a < 0.5 <= b) if rising else (a >= 0.5 > b):
            pos = i + (j - i) * (0.5 - a) / (b - a)
            if abs(pos - guess) < bestdist:
                best, bestdist = pos, abs(pos - guess)
    if not np.isfinite(best):
        return np.nan
    c = int(np.floor(best + 0.5))
    lo = max(c - FIT_HALFWIDTH, gmin + 1) if rising else c - FIT_HALFWIDTH
    hi = c + FIT_HALFWIDTH if rising else min(c + FIT_HALFWIDTH, gmin - 1)
    if lo < 0 or hi >= n or hi - lo < 3:
        return np.nan
    i = np.arange(lo, hi + 1, dtype=float)
    vals = step[lo : hi + 1]
    finite = np.isfinite(vals)
    i, vals = i[finite], vals[finite]
    sign = 1.0 if rising else -1.0

    fixed = blur if blur > 0 and not np.all(np.isfinite(profile[c - 1 : c + 2])) else 0.0

    def residuals(par: np.ndarray) -> np.ndarray:
        e, sig = (par[0], fixed) if fixed > 0 else par
        zp = (sign * (i - e) + 0.5) / sig
        zm = (sign * (i - e) - 0.5) / sig
        antider = lambda z: z * norm.cdf(z) + norm.pdf(z)  # noqa: E731
        return vals - sig * (antider(zp) - antider(zm))

    if fixed > 0:
        fit = least_squares(residuals, [best], bounds=([best - 3], [best + 3]), xtol=1e-12, ftol=1e-14)
        e, sig = fit.x[0], fixed
    else:
        fit = least_squares(residuals, [best, 0.8], bounds=([best - 3, 0.05], [best + 3, 5.0]), xtol=1e-12, ftol=1e-14)
        e, sig = fit.x
    if abs(e - best) > 2.0:
        return np.nan
    return float(e + sig * zfrac if rising else e - sig * zfrac)
