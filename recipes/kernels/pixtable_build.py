"""Pixel-table construction kernel: one reduced CCD image of one IFU → pixel-table columns.

For every slice ``s`` and every CCD row ``y`` (1-based) the pixels whose centres lie
between the traced left and right edges, ``left_s(y) <= x <= right_s(y)`` (1-based,
clipped to the CCD), become one row each (the convention of
:func:`recipes.algorithms.tracing.slice_mask`). Rows are ordered slice by slice, then by CCD row,
then by x. For each pixel:

* ``lambda`` = Σ wlc[I, J] x^I y^J (Å; x, y 1-based absolute trimmed-CCD coordinates),
  evaluated in float64 with the Horner order of :func:`recipes.algorithms.wavesolution.evaluate_2d`
  and rounded once to float32;
* ``xpos``/``ypos`` (field pixels, 0.2" spaxels): the slice centre (gx, gy) of the
  GEOMETRY_TABLE plus the offset along the slice, ``(0.5 − frac) · width`` with
  ``frac = (x − left)/(right − left)`` (the CCD x is mirrored on the sky,
  :func:`recipes.algorithms.instrument.ccd_to_field_x`), rotated by the geometry angle:
  ``xpos = gx + off·cos(angle)``, ``ypos = gy + off·sin(angle)``;
* ``data``, ``dq``, ``stat`` copied from the image;
* ``origin`` = ``(x − xoffset_s) << 24 | y << 11 | ifu << 6 | slice`` (DRS bit layout,
  :func:`recipes.algorithms.pixtable.pack_origin`).

:func:`build_pixels` is the numba version (two passes, parallel over slices: count, then
fill at prefix-sum offsets); :func:`build_pixels_reference` the plain numpy twin used by
the tests. Both return ``(xpos, ypos, lambda, data, dq, stat, origin)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from recipes.algorithms.instrument import ccd_to_field_x


@njit(cache=True, inline="always")
def _poly(c, y):
    out = 0.0
    for k in range(c.shape[0] - 1, -1, -1):
        out = out * y + c[k]
    return out


@njit(cache=True, inline="always")
def _row_span(left, right, s, y1, nx):
    xl = _poly(left[s], y1)
    xr = _poly(right[s], y1)
    lo = int(np.ceil(xl))
    hi = int(np.floor(xr))
    if lo < 1:
        lo = 1
    if hi > nx:
        hi = nx
    return xl, xr, lo, hi


@njit(cache=True, parallel=True)
def _count(left, right, ny, nx):
    ns = left.shape[0]
    counts = np.zeros((ns, ny), dtype=np.int64)
    for s in prange(ns):
        for y in range(ny):
            _, _, lo, hi = _row_span(left, right, s, float(y + 1), nx)
            if hi >= lo:
                counts[s, y] = hi - lo + 1
    return counts


@njit(cache=True, parallel=True)
def _fill(data, dq, stat, left, right, wlc, gx, gy, gcos, gsin, gwidth, slice_no, ifu, xoffset, starts,
          o_xpos, o_ypos, o_lam, o_data, o_dq, o_stat, o_origin):
    ny, nx = data.shape
    ns = left.shape[0]
    ni = wlc.shape[1]
    nj = wlc.shape[2]
    for s in prange(ns):
        rows = np.empty(ni)  # the y polynomials of the λ solution, one per power of x
        for y in range(ny):
            y1 = float(y + 1)
            xl, xr, lo, hi = _row_span(left, right, s, y1, nx)
            k = starts[s, y]
            base = (np.int64(y + 1) << 11) | (np.int64(ifu) << 6) | np.int64(slice_no[s])
            width = xr - xl
            # they depend on the CCD row only: evaluated once per row, not per pixel (the
            # same operations in the same order, so λ is unchanged to the last bit)
            for i in range(ni):
                row = 0.0
                for j in range(nj - 1, -1, -1):
                    row = row * y1 + wlc[s, i, j]
                rows[i] = row
            for x1 in range(lo, hi + 1):
                xf = float(x1)
                lam = 0.0
                for i in range(ni - 1, -1, -1):
                    lam = lam * xf + rows[i]
                off = (0.5 - (xf - xl) / width) * gwidth[s]
                o_xpos[k] = gx[s] + off * gcos[s]
                o_ypos[k] = gy[s] + off * gsin[s]
                o_lam[k] = lam
                o_data[k] = data[y, x1 - 1]
                o_dq[k] = dq[y, x1 - 1]
                o_stat[k] = stat[y, x1 - 1]
                o_origin[k] = np.uint32(((np.int64(x1) - xoffset[s]) << 24) | base)
                k += 1


def _outputs(n: int):
    return (
        np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32),
        np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, np.uint32),
    )  # fmt: skip


def build_pixels(data, dq, stat, left, right, wlc, gx, gy, angle, gwidth, slice_no, ifu, xoffset):
    """Pixel-table columns of one IFU (numba, parallel over slices).

    ``data``/``dq``/``stat``: the reduced image [y, x] (float32, int32, float32);
    ``left``/``right``: (nslice, ncoef) edge polynomials x(y), 1-based; ``wlc``:
    (nslice, nI, nJ) wavelength coefficients; ``gx``, ``gy``, ``angle`` [deg], ``gwidth``:
    geometry of each slice (field pixels); ``slice_no``: 1-based CCD slice numbers;
    ``xoffset``: per-slice origin x offsets (1-based x − xoffset must fit 0..255).
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    dq = np.ascontiguousarray(dq, dtype=np.int32)
    stat = np.ascontiguousarray(stat, dtype=np.float32)
    left = np.ascontiguousarray(left, dtype=np.float64)
    right = np.ascontiguousarray(right, dtype=np.float64)
    wlc = np.ascontiguousarray(wlc, dtype=np.float64)
    ny, nx = data.shape
    counts = _count(left, right, ny, nx)
    flat = counts.ravel()
    starts = (np.cumsum(flat) - flat).reshape(counts.shape)
    out = _outputs(int(flat.sum()))
    rad = np.deg2rad(np.asarray(angle, dtype=np.float64))
    _fill(
        data, dq, stat, left, right, wlc,
        np.asarray(gx, np.float64), np.asarray(gy, np.float64), np.cos(rad), np.sin(rad),
        np.asarray(gwidth, np.float64), np.asarray(slice_no, np.int64), int(ifu),
        np.asarray(xoffset, np.int64), starts, *out,
    )  # fmt: skip
    return out


def build_pixels_reference(data, dq, stat, left, right, wlc, gx, gy, angle, gwidth, slice_no, ifu, xoffset):
    """Plain numpy twin of :func:`build_pixels` (same arguments, same row order)."""
    from recipes.algorithms.wavesolution import evaluate_2d

    ny, nx = np.shape(data)
    y1 = np.arange(1, ny + 1, dtype=np.float64)
    cols: list[list[np.ndarray]] = [[] for _ in range(7)]
    rad = np.deg2rad(np.asarray(angle, dtype=np.float64))
    for s in range(len(left)):
        xl = np.polynomial.polynomial.polyval(y1, left[s])
        xr = np.polynomial.polynomial.polyval(y1, right[s])
        lo = np.maximum(np.ceil(xl), 1).astype(np.int64)
        hi = np.minimum(np.floor(xr), nx).astype(np.int64)
        n = np.maximum(hi - lo + 1, 0)
        rows = np.repeat(np.arange(ny), n)
        x1 = np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi)]) if n.sum() else np.zeros(0, np.int64)
        yy = rows + 1.0
        frac = (x1 - xl[rows]) / (xr[rows] - xl[rows])
        off = ccd_to_field_x(frac) * gwidth[s]
        cols[0].append((gx[s] + off * np.cos(rad[s])).astype(np.float32))
        cols[1].append((gy[s] + off * np.sin(rad[s])).astype(np.float32))
        cols[2].append(evaluate_2d(wlc[s], x1.astype(np.float64), yy).astype(np.float32))
        cols[3].append(np.asarray(data)[rows, x1 - 1].astype(np.float32))
        cols[4].append(np.asarray(dq)[rows, x1 - 1].astype(np.int32))
        cols[5].append(np.asarray(stat)[rows, x1 - 1].astype(np.float32))
        origin = ((x1 - int(xoffset[s])) << 24) | ((rows + 1) << 11) | (int(ifu) << 6) | int(slice_no[s])
        cols[6].append(origin.astype(np.uint32))
    return tuple(np.concatenate(c) if c else np.zeros(0) for c in cols)


# --------------------------------------------------------------------------------------
# IFU and slice ranges of a table's origin words (the LIMITS header keys)
# --------------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _origin_ranges(origin):
    n = origin.size
    nchunk = max(1, min(64, n // 65536 + 1))
    step = (n + nchunk - 1) // nchunk
    part = np.empty((nchunk, 4), dtype=np.int64)
    for c in prange(nchunk):
        ilo, ihi, slo, shi = 1 << 30, -1, 1 << 30, -1
        for i in range(c * step, min(n, (c + 1) * step)):
            o = np.int64(origin[i])
            ifu = (o >> 6) & 0x1F
            sl = o & 0x3F
            ilo = min(ilo, ifu)
            ihi = max(ihi, ifu)
            slo = min(slo, sl)
            shi = max(shi, sl)
        part[c, 0], part[c, 1], part[c, 2], part[c, 3] = ilo, ihi, slo, shi
    return part[:, 0].min(), part[:, 1].max(), part[:, 2].min(), part[:, 3].max()


def origin_ranges(origin: np.ndarray) -> tuple[int, int, int, int]:
    """``(ifu_min, ifu_max, slice_min, slice_max)`` of non-empty origin words (uint32 or
    int32, DRS bit layout: slice in bits 0-5, IFU in bits 6-10), in one parallel pass
    without the temporaries of unpacking every field."""
    if origin.size == 0:
        raise ValueError("origin_ranges needs at least one row")
    return tuple(int(v) for v in _origin_ranges(np.ascontiguousarray(origin)))  # type: ignore[return-value]


def origin_ranges_reference(origin: np.ndarray) -> tuple[int, int, int, int]:
    """Plain numpy twin of :func:`origin_ranges`."""
    o = np.asarray(origin).astype(np.int64) & 0xFFFFFFFF
    ifu, sl = (o >> 6) & 0x1F, o & 0x3F
    return int(ifu.min()), int(ifu.max()), int(sl.min()), int(sl.max())


@njit(cache=True, parallel=True)
def _gather(data, dq, origin, xoffset, o_data, o_dq):
    for k in prange(origin.size):
        o = np.int64(origin[k]) & 0xFFFFFFFF
        s = o & 0x3F
        y = (o >> 11) & 0x1FFF
        x = ((o >> 24) & 0xFF) + xoffset[s - 1]
        o_data[k] = data[y - 1, x - 1]
        o_dq[k] = dq[y - 1, x - 1]


def gather_pixels(data, dq, origin, xoffset):
    """Values of another image of the same IFU at the pixels of a pixel table:
    ``(data[y, x], dq[y, x])`` per row (float32, int32), located by the ``origin`` words
    (1-based x = xslice + ``xoffset[slice − 1]``, y). numba, parallel over rows.

    Used for the master flat: the same pixels as the science table, without
    re-evaluating the wavelengths and positions. Twin: :func:`gather_pixels_reference`.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    dq = np.ascontiguousarray(dq, dtype=np.int32)
    o_data = np.empty(origin.size, np.float32)
    o_dq = np.empty(origin.size, np.int32)
    _gather(data, dq, np.ascontiguousarray(origin), np.asarray(xoffset, np.int64), o_data, o_dq)
    return o_data, o_dq


def gather_pixels_reference(data, dq, origin, xoffset):
    """Numpy twin of :func:`gather_pixels`."""
    o = np.asarray(origin).astype(np.int64) & 0xFFFFFFFF
    s = o & 0x3F
    y = (o >> 11) & 0x1FFF
    x = ((o >> 24) & 0xFF) + np.asarray(xoffset, np.int64)[s - 1]
    return np.asarray(data, np.float32)[y - 1, x - 1], np.asarray(dq, np.int32)[y - 1, x - 1]


@njit(cache=True)
def _compact(keep, col):
    n = 0
    for k in range(keep.size):
        if keep[k]:
            col[n] = col[k]
            n += 1
    return n


def compact_rows(keep: np.ndarray, col: np.ndarray) -> np.ndarray:
    """``col[keep]`` computed in place, without a second full-size array: the kept rows
    are moved to the front of ``col`` (which is overwritten) and that view is returned.
    One sequential pass (numba). Twin: ``col[keep]``."""
    if keep.shape != col.shape or col.ndim != 1 or not col.flags.c_contiguous:
        raise ValueError("compact_rows needs a contiguous 1-D column and a mask of its length")
    n = _compact(keep, col)
    return col[:n]


@njit(cache=True, parallel=True)
def _shift(lam, shift):
    for k in prange(lam.size):
        lam[k] = np.float32(np.float64(lam[k]) + shift)


def shift_lambda(lam: np.ndarray, shift: float) -> None:
    """``lam += shift`` in place, added in float64 and rounded once to float32 (numba,
    parallel). Twin: ``(lam.astype(np.float64) + shift).astype(np.float32)``."""
    _shift(lam, float(shift))


@njit(cache=True)
def _good_range(lam, flat, dq):
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    n = 0
    for k in range(lam.size):
        if dq[k] == 0 and np.isfinite(flat[k]):
            n += 1
            if lam[k] < lo:
                lo = lam[k]
            if lam[k] > hi:
                hi = lam[k]
    return n, lo, hi


@njit(cache=True)
def _bin_sums(lam, flat, dq, lmin, step, sums, counts):
    # sequential, in row order: the float64 sums are those of np.bincount to the last bit
    for k in range(lam.size):
        if dq[k] == 0 and np.isfinite(flat[k]):
            i = np.int64((lam[k] - lmin) / step)
            sums[i] += np.float64(flat[k])
            counts[i] += 1


def binned_flat_sums(lam: np.ndarray, flat: np.ndarray, dq: np.ndarray, step: float):
    """Sums and counts of the good flat values (``dq == 0``, finite) in ``step`` Å bins of
    ``lam`` from ``lmin`` = ``floor(min(λ_good)/step)·step`` (float32 arithmetic, as numpy
    does it on float32 columns): ``(lmin, sums float64, counts int64)``, or None when no
    row is good. Two passes, no temporaries (numba). Twin: :func:`binned_flat_sums_reference`.
    """
    lam = np.ascontiguousarray(lam, np.float32)
    n, lo, hi = _good_range(lam, np.ascontiguousarray(flat, np.float32), np.ascontiguousarray(dq, np.int32))
    if n == 0:
        return None
    step32 = np.float32(step)
    lmin = np.float32(np.floor(np.float32(lo) / step32) * step32)
    nbin = int((np.float32(hi) - lmin) / step32) + 1
    sums = np.zeros(nbin, np.float64)
    counts = np.zeros(nbin, np.int64)
    _bin_sums(lam, np.ascontiguousarray(flat, np.float32), np.ascontiguousarray(dq, np.int32), lmin, step32,
              sums, counts)  # fmt: skip
    return lmin, sums, counts


def binned_flat_sums_reference(lam: np.ndarray, flat: np.ndarray, dq: np.ndarray, step: float):
    """Numpy twin of :func:`binned_flat_sums`."""
    good = (dq == 0) & np.isfinite(flat)
    if not good.any():
        return None
    lmin = np.floor(lam[good].min() / step) * step
    idx = ((lam[good] - lmin) / step).astype(np.int64)
    nbin = int(idx.max()) + 1
    sums = np.bincount(idx, weights=flat[good].astype(np.float64), minlength=nbin)
    return lmin, sums, np.bincount(idx, minlength=nbin)


@njit(cache=True)
def _near(lam, values, dq, centre, halfwidth, out_lam, out_values):
    n = 0
    for k in range(lam.size):
        if dq[k] == 0 and np.isfinite(values[k]) and abs(lam[k] - centre) < halfwidth:
            if out_lam.size:
                out_lam[n] = lam[k]
                out_values[n] = values[k]
            n += 1
    return n


def good_lambda_range(lam: np.ndarray, values: np.ndarray, dq: np.ndarray) -> tuple[int, float, float]:
    """``(n, min λ, max λ)`` of the good rows (``dq == 0`` and finite ``values``) in one
    pass without temporaries (numba); min/max are ±inf when n = 0."""
    n, lo, hi = _good_range(np.ascontiguousarray(lam, np.float32), np.ascontiguousarray(values, np.float32),
                            np.ascontiguousarray(dq, np.int32))  # fmt: skip
    return int(n), float(lo), float(hi)


def rows_near(lam: np.ndarray, values: np.ndarray, dq: np.ndarray, centre: float, halfwidth: float):
    """``(lam[sel], values[sel])`` for the good rows (``dq == 0``, finite ``values``) with
    ``|lam − centre| < halfwidth``, in row order, evaluated in float32 as numpy does on a
    float32 column; two sequential passes (numba), no full-size temporaries.
    Twin: :func:`rows_near_reference`."""
    args = (np.ascontiguousarray(lam, np.float32), np.ascontiguousarray(values, np.float32),
            np.ascontiguousarray(dq, np.int32), np.float32(centre), np.float32(halfwidth))  # fmt: skip
    n = _near(*args, np.empty(0, np.float32), np.empty(0, np.float32))
    out_lam, out_values = np.empty(n, np.float32), np.empty(n, np.float32)
    _near(*args, out_lam, out_values)
    return out_lam, out_values


def rows_near_reference(lam: np.ndarray, values: np.ndarray, dq: np.ndarray, centre: float, halfwidth: float):
    """Numpy twin of :func:`rows_near` (float32 columns)."""
    sel = (dq == 0) & np.isfinite(values) & (np.abs(lam - centre) < halfwidth)
    return lam[sel], values[sel]
