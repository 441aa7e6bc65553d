"""Raw-CCD kernels: quadrant levels and trimming with overscan, bias and gain correction.

* :func:`histogram_u16` counts the values of a uint16 region (numba; twin ``np.bincount``),
  and :func:`grouped_median` turns such a histogram into a median that is interpolated
  inside the integer bin (the "grouped median"), so that a level of 1013.37 adu read
  through integer counts with a few adu of noise comes out to ~0.01 adu, not rounded to
  an integer. Used for the raw quadrant levels of muse_bias (QC BIAS LEVELn).
* :func:`preprocess_rows` turns trimmed rows ``[y0, y0 + nrows)`` of one raw uint16 image
  into DATA/DQ/STAT (numba, parallel over rows; twin :func:`preprocess_rows_reference`):

  ``d = (raw − overscan[q, y] − bias) · gain[q] · scale``
  ``v = (var0[q] + bias_var) · gain[q]² · scale² (+ max(d/scale, 0) · scale² if poisson)``
  ``dq = static_dq | bias_dq | SATURATED (raw > 65500)``

  with ``q`` the read-out port of the pixel. ``overscan`` is per port and per trimmed row
  (adu), ``var0`` the read-noise variance in adu², ``gain`` 1 for results in adu or
  ``ESO DET OUTn GAIN`` (count/adu) for results in count, where the Poisson term
  (count = electrons) applies.

Index maps (all 0-based): ``rowmap[y]``/``colmap[x]`` give the raw row/column of trimmed
pixel ``(y, x)``; ``qrow[y]``/``qcol[x]`` its half (0 = bottom/left, 1 = top/right) and
``qindex[qrow, qcol]`` the port index into the per-port arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Raw values above this are saturated (adu), kMuseSaturationLimit of the DRS.
SATURATION_LIMIT = 65500
#: Euro3D DQ bit for saturated pixels (bit 12).
DQ_SATURATED = 1 << 12


@njit(cache=True)
def _histogram_kernel(region, counts):
    ny, nx = region.shape
    for y in range(ny):
        for x in range(nx):
            counts[region[y, x]] += 1


def histogram_u16(region: np.ndarray) -> np.ndarray:
    """Counts of each value 0..65535 in a uint16 array (int64, length 65536)."""
    counts = np.zeros(65536, dtype=np.int64)
    region = np.asarray(region)
    if region.dtype != np.uint16:
        raise TypeError("histogram_u16 needs a uint16 array")
    if region.ndim == 1:
        region = region[None, :]
    _histogram_kernel(region, counts)
    return counts


def grouped_median(counts: np.ndarray) -> float:
    """Median of integer data interpolated within its bin (bin v spans [v − ½, v + ½])."""
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    cumulative = np.cumsum(counts)
    half = total / 2.0
    b = int(np.searchsorted(cumulative, half, side="left"))
    below = cumulative[b - 1] if b > 0 else 0
    return b - 0.5 + (half - below) / counts[b]


@njit(parallel=True, cache=True)
def _preprocess_kernel(
    raw, rowmap, colmap, qrow, qcol, qindex, overscan, gain, var0, poisson, scale,
    bias_data, bias_stat, bias_dq, has_bias, static_dq, has_static, y0,
    out_data, out_dq, out_stat,
):  # fmt: skip
    nrows, nx = out_data.shape
    for j in prange(nrows):
        y = y0 + j
        ry = rowmap[y]
        hr = qrow[y]
        for x in range(nx):
            q = qindex[hr, qcol[x]]
            v = raw[ry, colmap[x]]
            flag = np.int32(0)
            if v > SATURATION_LIMIT:
                flag = np.int32(DQ_SATURATED)
            d = np.float64(v) - overscan[q, y]
            s = var0[q]
            if has_static:
                flag |= static_dq[y, x]
            if has_bias:
                d -= bias_data[y, x]
                s += bias_stat[y, x]
                flag |= bias_dq[y, x]
            g = gain[q]
            d *= g
            s *= g * g
            if poisson and d > 0.0:
                s += d
            out_data[j, x] = d * scale
            out_stat[j, x] = s * scale * scale
            out_dq[j, x] = flag


_EMPTY_F = np.zeros((1, 1), np.float32)
_EMPTY_I = np.zeros((1, 1), np.int32)


def preprocess_rows(
    raw: np.ndarray,
    maps: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    overscan: np.ndarray,
    gain: np.ndarray,
    var0: np.ndarray,
    poisson: bool,
    scale: float,
    y0: int,
    out: tuple[np.ndarray, np.ndarray, np.ndarray],
    bias: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    static_dq: np.ndarray | None = None,
) -> None:
    """Fill ``out = (data float32, dq int32, stat float32)`` of shape ``[nrows, nx]`` with
    trimmed rows ``y0 .. y0 + nrows`` (see the module docstring for the arithmetic).

    ``maps = (rowmap, colmap, qrow, qcol, qindex)``; ``bias = (data, stat, dq)`` of the
    full trimmed master bias (adu, adu²) or None; ``static_dq`` a full trimmed int32 mask
    or None.
    """
    rowmap, colmap, qrow, qcol, qindex = maps
    bd, bs, bq = bias if bias is not None else (_EMPTY_F, _EMPTY_F, _EMPTY_I)
    sdq = static_dq if static_dq is not None else _EMPTY_I
    _preprocess_kernel(
        raw, rowmap, colmap, qrow, qcol, qindex,
        np.ascontiguousarray(overscan, dtype=np.float64), np.asarray(gain, dtype=np.float64),
        np.asarray(var0, dtype=np.float64), bool(poisson), float(scale),
        bd, bs, bq, bias is not None, sdq, static_dq is not None, int(y0),
        out[0], out[1], out[2],
    )  # fmt: skip


def preprocess_rows_reference(
    raw, maps, overscan, gain, var0, poisson, scale, y0, nrows, bias=None, static_dq=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pure-numpy twin of :func:`preprocess_rows`; returns ``(data, dq, stat)``."""
    rowmap, colmap, qrow, qcol, qindex = maps
    ys = np.arange(y0, y0 + nrows)
    q = qindex[qrow[ys][:, None], qcol[None, :]]
    v = raw[np.ix_(rowmap[ys], colmap)].astype(np.float64)
    dq = np.where(v > SATURATION_LIMIT, DQ_SATURATED, 0).astype(np.int32)
    d = v - np.asarray(overscan, dtype=np.float64)[q, ys[:, None]]
    s = np.asarray(var0, dtype=np.float64)[q]
    if static_dq is not None:
        dq |= static_dq[ys]
    if bias is not None:
        d = d - bias[0][ys]
        s = s + bias[1][ys]
        dq |= bias[2][ys]
    g = np.asarray(gain, dtype=np.float64)[q]
    d = d * g
    s = s * g * g
    if poisson:
        s = s + np.maximum(d, 0.0)
    return (d * scale).astype(np.float32), dq, (s * scale * scale).astype(np.float32)


@njit(parallel=True, cache=True)
def _decode_kernel(swapped, out):
    ny, nx = swapped.shape
    for y in prange(ny):
        for x in range(nx):
            v = np.uint32(swapped[y, x])
            out[y, x] = np.uint16((((v >> 8) | (v << 8)) & 0xFFFF) ^ 0x8000)


def decode_bzero16(stored: np.ndarray, out: np.ndarray) -> np.ndarray:
    """FITS 16-bit data with BZERO=32768 (big-endian signed storage) → native uint16.

    ``stored`` is the big-endian int16 array as stored (e.g. an astropy memmap read with
    ``do_not_scale_image_data=True``); the bytes are swapped and the sign bit flipped in
    one parallel pass. Twin: :func:`decode_bzero16_reference`.
    """
    # the kernel swaps bytes, so hand it the big-endian bytes seen as native uint16
    swapped = stored.view(np.uint16) if stored.dtype.byteorder == ">" else stored.byteswap().view(np.uint16)
    _decode_kernel(swapped, out)
    return out


def decode_bzero16_reference(stored: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`decode_bzero16`: the unsigned value is stored + 32768."""
    return (stored.astype(np.int32) + 32768).astype(np.uint16)
