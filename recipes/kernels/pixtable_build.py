"""Pixel-table construction kernel: one reduced CCD image of one IFU → pixel-table columns.

For every slice ``s`` and every CCD row ``y`` (1-based) the pixels whose centres lie
between the traced left and right edges, ``left_s(y) <= x <= right_s(y)`` (1-based,
clipped to the CCD), become one row each (the convention of
:func:`recipes.tracing.slice_mask`). Rows are ordered slice by slice, then by CCD row,
then by x. For each pixel:

* ``lambda`` = Σ wlc[I, J] x^I y^J (Å; x, y 1-based absolute trimmed-CCD coordinates),
  evaluated in float64 with the Horner order of :func:`recipes.wavesolution.evaluate_2d`
  and rounded once to float32;
* ``xpos``/``ypos`` (field pixels, 0.2" spaxels): the slice centre (gx, gy) of the
  GEOMETRY_TABLE plus the offset along the slice, ``(0.5 − frac) · width`` with
  ``frac = (x − left)/(right − left)`` (the CCD x is mirrored on the sky,
  :func:`recipes.instrument.ccd_to_field_x`), rotated by the geometry angle:
  ``xpos = gx + off·cos(angle)``, ``ypos = gy + off·sin(angle)``;
* ``data``, ``dq``, ``stat`` copied from the image;
* ``origin`` = ``(x − xoffset_s) << 24 | y << 11 | ifu << 6 | slice`` (DRS bit layout,
  :func:`recipes.pixtable.pack_origin`).

:func:`build_pixels` is the numba version (two passes, parallel over slices: count, then
fill at prefix-sum offsets); :func:`build_pixels_reference` the plain numpy twin used by
the tests. Both return ``(xpos, ypos, lambda, data, dq, stat, origin)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..instrument import ccd_to_field_x


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
    from ..wavesolution import evaluate_2d

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
