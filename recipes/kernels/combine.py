"""Per-pixel image combination (the DRS ``muse_combine``) as a numba kernel.

One kernel serves bias, dark, flat, twilight and arcs. Inputs are stacks ``[n, y, x]``
of data (float32), DQ (int32 Euro3D bits) and variance (float32). For every pixel:

* values whose DQ is non-zero are excluded; when every value of a pixel is flagged, all
  of them are combined and the output DQ is the OR of their flags (so the pixel stays
  marked), otherwise the output DQ is 0;
* ``average``: mean of the k values, variance Σvar/k²;
* ``median``: median (mean of the two middle values for even k); variance
  Σvar/k² · π/2 for k ≥ 3 (the asymptotic efficiency of the median for Gaussian noise),
  Σvar/k² otherwise;
* ``minmax``: reject the ``nlow`` lowest and ``nhigh`` highest values, rejecting fewer
  (first from the high end, then the low end) when fewer than ``nkeep`` would remain;
  mean of the rest, variance Σvar/m²;
* ``sigclip``: centre = median, σ = max(1.4826 · MAD, √(mean input variance)); keep
  values within [centre − lsigma·σ, centre + hsigma·σ] (all values when σ = 0); mean of the
  kept values, variance Σvar/m². The noise-model floor on σ matters for small stacks:
  the MAD of 7 values is so noisy that MAD alone rejects good values often enough to
  inflate the variance by ~6 % (3.5 % for 11); with the floor the inflation is < 0.5 %
  while real outliers (cosmic rays, many σ away) are still rejected. Fewer than 3
  values fall back to the average, as the DRS needs ≥ 3.

:func:`combine_pixel_major` runs the numba kernel (parallel over rows) on a pixel-major
stack ``[y, x, n]``; :func:`combine` accepts a frame-major ``[n, y, x]`` stack (copied);
:func:`combine_reference` is a vectorised numpy twin used by the tests
(:func:`recipes.kernels.combine_raw.combine_raw` fuses the preprocessing of raw frames
with the same per-pixel combination). Both return ``(data float32, dq int32, stat
float32)`` of shape ``[y, x]``. Memory bounding is the caller's job: they are called on
row blocks (see :func:`recipes.algorithms.preprocess.combine_frames`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

METHODS = ("average", "median", "minmax", "sigclip")
METHOD_CODE = {name: i for i, name in enumerate(METHODS)}
_MAD_TO_SIGMA = 1.482602218505602
_MEDIAN_VAR_FACTOR = math.pi / 2


@njit(cache=True, inline="always")
def _sort_pairs(vals, vars_, k):
    # insertion sort of the first k values, carrying the variances; k is small (< ~100)
    for i in range(1, k):
        v = vals[i]
        s = vars_[i]
        j = i - 1
        while j >= 0 and vals[j] > v:
            vals[j + 1] = vals[j]
            vars_[j + 1] = vars_[j]
            j -= 1
        vals[j + 1] = v
        vars_[j + 1] = s


@njit(cache=True, inline="always")
def _median_sorted(vals, k):
    h = k // 2
    if k % 2 == 1:
        return vals[h]
    return 0.5 * (vals[h - 1] + vals[h])


@njit(cache=True, inline="always")
def _sort_values(work, k):
    # insertion sort of the first k values (k small); branch-light enough for n ~ 10
    for i in range(1, k):
        v = work[i]
        j = i - 1
        while j >= 0 and work[j] > v:
            work[j + 1] = work[j]
            j -= 1
        work[j + 1] = v


@njit(cache=True, inline="always")
def combine_pixel(vals, vars_, work, k, method, nlow, nhigh, nkeep, lsigma, hsigma):
    """Combine the first k values (and variances) of one pixel with the method code
    ``method`` (index into METHODS); returns (value, variance). ``work``: scratch of size ≥ k.
    Shared with :mod:`recipes.kernels.combine_raw`."""
    s = 0.0
    sv = 0.0
    for i in range(k):
        s += vals[i]
        sv += vars_[i]
    if method == 0 or (method == 3 and k < 3):
        return s / k, sv / (k * k)
    if method == 2:
        _sort_pairs(vals, vars_, k)
        lo = nlow
        hi = nhigh
        while k - lo - hi < nkeep and (lo > 0 or hi > 0):
            if hi >= lo and hi > 0:
                hi -= 1
            else:
                lo -= 1
        m = k - lo - hi
        s = 0.0
        sv = 0.0
        for i in range(lo, k - hi):
            s += vals[i]
            sv += vars_[i]
        return s / m, sv / (m * m)
    if method == 3:
        # Fast path without sorting. σ >= floor, so nothing is rejected when
        # min >= median − lsigma·floor and max <= median + hsigma·floor. For odd k the median
        # is the ((k+1)/2)-th smallest value, and both conditions are monotonic in the
        # value, so they hold for the median iff they hold for at least (k+1)/2 values:
        # two branch-free counts decide exactly what the sorted test would.
        floor0 = math.sqrt(max(sv / k, 0.0))
        lo_v = vals[0]
        hi_v = vals[0]
        for i in range(k):
            lo_v = min(lo_v, vals[i])
            hi_v = max(hi_v, vals[i])
        if k % 2 == 1:
            n_lo = 0
            n_hi = 0
            for i in range(k):
                n_lo += lo_v >= vals[i] - lsigma * floor0
                n_hi += hi_v <= vals[i] + hsigma * floor0
            if 2 * n_lo >= k + 1 and 2 * n_hi >= k + 1:
                return s / k, sv / (k * k)
        else:
            # even k: |median − mean| <= standard deviation bounds the median instead
            mean = s / k
            ss = 0.0
            for i in range(k):
                d = vals[i] - mean
                ss += d * d
            sd = math.sqrt(ss / k)
            if hi_v <= mean - sd + hsigma * floor0 and lo_v >= mean + sd - lsigma * floor0:
                return mean, sv / (k * k)
    # median and sigclip only need the sorted values, not the variances with them
    for i in range(k):
        work[i] = vals[i]
    _sort_values(work, k)
    centre = _median_sorted(work, k)
    if method == 1:
        var = sv / (k * k)
        if k >= 3:
            var *= _MEDIAN_VAR_FACTOR
        return centre, var
    floor = math.sqrt(max(sv / k, 0.0))
    # σ >= floor, so when every value lies within the floor-based limits nothing can be
    # rejected and the MAD is not needed (the common case; it saves a second sort)
    if work[0] >= centre - lsigma * floor and work[k - 1] <= centre + hsigma * floor:
        return s / k, sv / (k * k)
    for i in range(k):
        work[i] = abs(vals[i] - centre)
    _sort_values(work, k)
    sigma = _MAD_TO_SIGMA * _median_sorted(work, k)
    if floor > sigma:
        sigma = floor
    lo_cut = centre - lsigma * sigma
    hi_cut = centre + hsigma * sigma
    s = 0.0
    sv = 0.0
    m = 0
    for i in range(k):
        if sigma == 0.0 or (vals[i] >= lo_cut and vals[i] <= hi_cut):
            s += vals[i]
            sv += vars_[i]
            m += 1
    return s / m, sv / (m * m)


@njit(parallel=True, cache=True)
def _combine_kernel(data, dq, stat, method, nlow, nhigh, nkeep, lsigma, hsigma, out_data, out_dq, out_stat):
    # pixel-major stacks [y, x, n]: the n values of a pixel are adjacent in memory (a
    # frame-major [n, y, x] stack makes 3n strided streams whose addresses collide in the
    # cache and is several times slower)
    ny, nx, n = data.shape
    for y in prange(ny):
        vals = np.empty(n, np.float64)
        vars_ = np.empty(n, np.float64)
        work = np.empty(n, np.float64)
        for x in range(nx):
            k = 0
            flags = 0
            for i in range(n):
                f = dq[y, x, i]
                if f == 0:
                    vals[k] = data[y, x, i]
                    vars_[k] = stat[y, x, i]
                    k += 1
                else:
                    flags |= f
            outflag = 0
            if k == 0:
                for i in range(n):
                    vals[i] = data[y, x, i]
                    vars_[i] = stat[y, x, i]
                k = n
                outflag = flags
            value, var = combine_pixel(vals, vars_, work, k, method, nlow, nhigh, nkeep, lsigma, hsigma)
            out_data[y, x] = value
            out_stat[y, x] = var
            out_dq[y, x] = outflag


def _check(data: np.ndarray, dq: np.ndarray, stat: np.ndarray, method: str) -> None:
    if method not in METHOD_CODE:
        raise ValueError(f"unknown combine method {method!r}; valid: {', '.join(METHODS)}")
    if data.ndim != 3 or dq.shape != data.shape or stat.shape != data.shape:
        raise ValueError("data, dq and stat must be stacks of the same shape [n, y, x]")
    if data.shape[0] < 1:
        raise ValueError("nothing to combine")


def combine(
    data: np.ndarray,
    dq: np.ndarray,
    stat: np.ndarray,
    method: str = "sigclip",
    nlow: int = 1,
    nhigh: int = 1,
    nkeep: int = 1,
    lsigma: float = 3.0,
    hsigma: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine a frame-major stack ``[n, y, x]`` pixel by pixel (numba, parallel over rows).

    Copies the stack into pixel-major order first; large stacks should be built
    pixel-major and passed to :func:`combine_pixel_major` (as
    :func:`recipes.algorithms.preprocess.combine_frames` does, in bounded row blocks).
    """
    _check(data, dq, stat, method)
    return combine_pixel_major(
        np.ascontiguousarray(np.moveaxis(data, 0, -1)), np.ascontiguousarray(np.moveaxis(dq, 0, -1)),
        np.ascontiguousarray(np.moveaxis(stat, 0, -1)), method, nlow, nhigh, nkeep, lsigma, hsigma,
    )  # fmt: skip


def combine_pixel_major(
    data: np.ndarray,
    dq: np.ndarray,
    stat: np.ndarray,
    method: str = "sigclip",
    nlow: int = 1,
    nhigh: int = 1,
    nkeep: int = 1,
    lsigma: float = 3.0,
    hsigma: float = 3.0,
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine a pixel-major stack ``[y, x, n]`` (float32 / int32 / float32).

    ``out`` may give preallocated ``(data float32, dq int32, stat float32)`` arrays of
    shape ``[y, x]`` to fill (used for row blocks of a larger image).
    """
    if method not in METHOD_CODE:
        raise ValueError(f"unknown combine method {method!r}; valid: {', '.join(METHODS)}")
    if data.ndim != 3 or dq.shape != data.shape or stat.shape != data.shape or data.shape[2] < 1:
        raise ValueError("data, dq and stat must be non-empty stacks of the same shape [y, x, n]")
    shape = data.shape[:2]
    if out is None:
        out = (np.empty(shape, np.float32), np.empty(shape, np.int32), np.empty(shape, np.float32))
    _combine_kernel(
        data, dq, stat, METHOD_CODE[method], int(nlow), int(nhigh), int(max(nkeep, 1)),
        float(lsigma), float(hsigma), out[0], out[1], out[2],
    )  # fmt: skip
    return out


def combine_reference(
    data: np.ndarray,
    dq: np.ndarray,
    stat: np.ndarray,
    method: str = "sigclip",
    nlow: int = 1,
    nhigh: int = 1,
    nkeep: int = 1,
    lsigma: float = 3.0,
    hsigma: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pure-numpy twin of :func:`combine` (same semantics; slow, for tests)."""
    _check(data, dq, stat, method)
    nkeep = max(nkeep, 1)
    good = dq == 0
    none_good = ~good.any(axis=0)
    use = good | none_good[None]
    out_dq = np.where(none_good, np.bitwise_or.reduce(dq, axis=0), 0).astype(np.int32)
    v = np.where(use, data.astype(np.float64), np.nan)
    s = np.where(use, stat.astype(np.float64), np.nan)
    k = use.sum(axis=0)
    if method == "average":
        value = np.nanmean(v, axis=0)
        var = np.nansum(s, axis=0) / k**2
    elif method == "median":
        value = np.nanmedian(v, axis=0)
        var = np.nansum(s, axis=0) / k**2 * np.where(k >= 3, _MEDIAN_VAR_FACTOR, 1.0)
    elif method == "minmax":
        order = np.argsort(np.where(use, v, np.inf), axis=0, kind="stable")
        vs = np.take_along_axis(v, order, axis=0)
        ss = np.take_along_axis(s, order, axis=0)
        lo = np.full(k.shape, nlow)
        hi = np.full(k.shape, nhigh)
        for _ in range(nlow + nhigh):
            short = (k - lo - hi < nkeep) & ((lo > 0) | (hi > 0))
            drop_hi = short & (hi >= lo) & (hi > 0)
            hi = np.where(drop_hi, hi - 1, hi)
            lo = np.where(short & ~drop_hi, lo - 1, lo)
        rank = np.arange(data.shape[0])[:, None, None]
        keep = (rank >= lo) & (rank < k - hi)
        m = keep.sum(axis=0)
        value = np.where(keep, vs, 0).sum(axis=0) / m
        var = np.where(keep, ss, 0).sum(axis=0) / m**2
    else:  # sigclip
        centre = np.nanmedian(v, axis=0)
        sigma = _MAD_TO_SIGMA * np.nanmedian(np.abs(v - centre), axis=0)
        sigma = np.maximum(sigma, np.sqrt(np.maximum(np.nanmean(s, axis=0), 0.0)))
        keep = use & ((sigma == 0) | ((v >= centre - lsigma * sigma) & (v <= centre + hsigma * sigma)))
        keep = np.where(k < 3, use, keep)
        m = keep.sum(axis=0)
        value = np.where(keep, v, 0).sum(axis=0) / m
        var = np.where(keep, s, 0).sum(axis=0) / m**2
    return value.astype(np.float32), out_dq, var.astype(np.float32)
