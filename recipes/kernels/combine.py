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
:func:`combine_reference` is a vectorised numpy twin used by the tests. Both return ``(data float32, dq int32, stat
float32)`` of shape ``[y, x]``. Memory bounding is the caller's job: they are called on
row blocks (see :func:`recipes.preprocess.combine_frames`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

METHODS = ("average", "median", "minmax", "sigclip")
_METHOD_CODE = {name: i for i, name in enumerate(METHODS)}
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
def _combine_pixel(vals, vars_, work, k, method, nlow, nhigh, nkeep, lsigma, hsigma):
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
            value, var = _combine_pixel(vals, vars_, work, k, method, nlow, nhigh, nkeep, lsigma, hsigma)
            out_data[y, x] = value
            out_stat[y, x] = var
            out_dq[y, x] = outflag


def _check(data: np.ndarray, dq: np.ndarray, stat: np.ndarray, method: str) -> None:
    if method not in _METHOD_CODE:
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
    :func:`recipes.preprocess.combine_frames` does, in bounded row blocks).
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
    if method not in _METHOD_CODE:
        raise ValueError(f"unknown combine method {method!r}; valid: {', '.join(METHODS)}")
    if data.ndim != 3 or dq.shape != data.shape or stat.shape != data.shape or data.shape[2] < 1:
        raise ValueError("data, dq and stat must be non-empty stacks of the same shape [y, x, n]")
    shape = data.shape[:2]
    if out is None:
        out = (np.empty(shape, np.float32), np.empty(shape, np.int32), np.empty(shape, np.float32))
    _combine_kernel(
        data, dq, stat, _METHOD_CODE[method], int(nlow), int(nhigh), int(max(nkeep, 1)),
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


# --------------------------------------------------------------------------------------
# Preprocessing fused with combination: raw uint16 stack in, combined image out
# --------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _raw_combine_kernel(
    raws, rowmap, seg_raw0, seg_x0, seg_n, qrow, qindex, overscan, gain, var0, poisson, scale,
    bias_data, bias_stat, bias_dq, has_bias, static_dq, has_static,
    method, nlow, nhigh, nkeep, lsigma, hsigma, out_data, out_dq, out_stat,
):  # fmt: skip
    n = raws.shape[0]
    ny, nx = out_data.shape
    for y in prange(ny):
        # one corrected row per frame (contiguous, vectorisable), then combine per pixel
        rd = np.empty((n, nx), np.float64)
        rs = np.empty((n, nx), np.float64)
        rf = np.empty((n, nx), np.int32)
        vals = np.empty(n, np.float64)
        vars_ = np.empty(n, np.float64)
        work = np.empty(n, np.float64)
        ry = rowmap[y]
        hr = qrow[y]
        for i in range(n):
            c = scale[i]
            for h in range(2):
                q = qindex[hr, h]
                g = gain[i, q]
                off = overscan[i, q, y]
                gc = g * c
                g2c2 = gc * gc
                v0 = var0[i, q] * g2c2
                c0 = seg_raw0[h]
                x0 = seg_x0[h]
                for t in range(seg_n[h]):
                    v = raws[i, ry, c0 + t]
                    x = x0 + t
                    d = (np.float64(v) - off) * gc
                    sv = v0
                    f = np.int32(0)
                    if v > _SATURATION_LIMIT:
                        f = _DQ_SATURATED
                    if has_bias:
                        d -= bias_data[y, x] * gc
                        sv += bias_stat[y, x] * g2c2
                        f |= bias_dq[y, x]
                    if has_static:
                        f |= static_dq[y, x]
                    if poisson and d > 0.0:
                        sv += d * c  # electrons (d/c) times c² for the scaled variance
                    rd[i, x] = d
                    rs[i, x] = sv
                    rf[i, x] = f
        for x in range(nx):
            k = 0
            flags = np.int32(0)
            for i in range(n):
                f = rf[i, x]
                if f == 0:
                    vals[k] = rd[i, x]
                    vars_[k] = rs[i, x]
                    k += 1
                else:
                    flags |= f
            outflag = np.int32(0)
            if k == 0:
                for i in range(n):
                    vals[i] = rd[i, x]
                    vars_[i] = rs[i, x]
                k = n
                outflag = flags
            value, var = _combine_pixel(vals, vars_, work, k, method, nlow, nhigh, nkeep, lsigma, hsigma)
            out_data[y, x] = value
            out_stat[y, x] = var
            out_dq[y, x] = outflag


_SATURATION_LIMIT = 65500
_DQ_SATURATED = np.int32(1 << 12)
_NO_F = np.zeros((1, 1), np.float32)
_NO_I = np.zeros((1, 1), np.int32)


def combine_raw(
    raws: np.ndarray,
    maps: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    overscan: np.ndarray,
    gain: np.ndarray,
    var0: np.ndarray,
    poisson: bool,
    scale: np.ndarray,
    method: str = "sigclip",
    nlow: int = 1,
    nhigh: int = 1,
    nkeep: int = 1,
    lsigma: float = 3.0,
    hsigma: float = 3.0,
    bias: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    static_dq: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preprocess and combine a raw uint16 stack ``[n, NAXIS2, ≥NAXIS1]`` in one pass.

    Per frame i and port q this is exactly :func:`recipes.kernels.overscan.preprocess_rows`
    (``overscan[i, q, y]``, ``gain[i, q]``, ``var0[i, q]``, ``scale[i]``) followed by
    :func:`combine`, without materialising the preprocessed stack: memory is the raw
    stack plus the three output images. ``maps`` as in kernels.overscan.
    """
    if method not in _METHOD_CODE:
        raise ValueError(f"unknown combine method {method!r}; valid: {', '.join(METHODS)}")
    rowmap, colmap, qrow, qcol, qindex = maps
    shape = (rowmap.size, colmap.size)
    # the two column halves (left/right ports) are contiguous runs of raw columns
    nleft = int((qcol == 0).sum())
    if nleft in (0, colmap.size) or not (
        np.all(np.diff(colmap[:nleft]) == 1) and np.all(np.diff(colmap[nleft:]) == 1) and np.all(qcol[:nleft] == 0)
    ):
        raise ValueError("combine_raw needs a left and a right port half of contiguous raw columns")
    seg_raw0 = np.array([colmap[0], colmap[nleft]], dtype=np.int64)
    seg_x0 = np.array([0, nleft], dtype=np.int64)
    seg_n = np.array([nleft, colmap.size - nleft], dtype=np.int64)
    if np.any(np.asarray(scale) <= 0):
        raise ValueError("combine_raw needs positive scale factors")
    out = (np.empty(shape, np.float32), np.empty(shape, np.int32), np.empty(shape, np.float32))
    bd, bs, bq = bias if bias is not None else (_NO_F, _NO_F, _NO_I)
    _raw_combine_kernel(
        raws, rowmap, seg_raw0, seg_x0, seg_n, qrow, qindex,
        np.ascontiguousarray(overscan, dtype=np.float64), np.ascontiguousarray(gain, dtype=np.float64),
        np.ascontiguousarray(var0, dtype=np.float64), bool(poisson), np.ascontiguousarray(scale, dtype=np.float64),
        bd, bs, bq, bias is not None, static_dq if static_dq is not None else _NO_I, static_dq is not None,
        _METHOD_CODE[method], int(nlow), int(nhigh), int(max(nkeep, 1)), float(lsigma), float(hsigma),
        out[0], out[1], out[2],
    )  # fmt: skip
    return out
