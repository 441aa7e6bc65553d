"""Preprocessing fused with combination: a raw uint16 stack in, one combined image out.

:func:`combine_raw` does, per frame i and port q, exactly what
:func:`recipes.kernels.overscan.preprocess_rows` does (overscan level, gain, read-noise
variance, optional MASTER_BIAS subtraction, saturation and static bad pixels into DQ,
optional Poisson variance, scale) and then the per-pixel combination of
:mod:`recipes.kernels.combine` (same methods and semantics), row by row in parallel,
without materialising the preprocessed stack: memory is the raw stack plus the three
output images. Units: the raw values in adu; outputs in count (adu × gain × scale), the
variance in count².
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from recipes.kernels.combine import METHOD_CODE, METHODS, combine_pixel

_SATURATION_LIMIT = 65500  # raw values [adu] above this are saturated ...
_DQ_SATURATED = np.int32(1 << 12)  # ... and get this Euro3D bit
# stand-ins for an absent MASTER_BIAS / static DQ: the kernel's signature is fixed
_NO_F = np.zeros((1, 1), np.float32)
_NO_I = np.zeros((1, 1), np.int32)


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
            value, var = combine_pixel(vals, vars_, work, k, method, nlow, nhigh, nkeep, lsigma, hsigma)
            out_data[y, x] = value
            out_stat[y, x] = var
            out_dq[y, x] = outflag


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
    if method not in METHOD_CODE:
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
        METHOD_CODE[method], int(nlow), int(nhigh), int(max(nkeep, 1)), float(lsigma), float(hsigma),
        out[0], out[1], out[2],
    )  # fmt: skip
    return out
