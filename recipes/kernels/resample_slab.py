"""Resampling, slab layout (numba): which rows feed which output planes, and the rows of
one slab gathered and sorted by cell.

Coordinates are output voxel coordinates (see :mod:`recipes.kernels.resample`): the cell
of a row is ``floor(f + 0.5)`` on each axis. :func:`plane_counts` counts the usable rows
(``dq == 0``, finite data and stat) per cell plane and stores each row's plane, so that
:func:`select_rows` picks a slab's rows with integer comparisons; :func:`spectral_coords`
maps their wavelengths to fractional planes (``SPECTRAL_LINEAR`` AWAV or ``SPECTRAL_LOG``
AWAV-LOG, FITS paper III); :func:`build_grid` sorts them by cell (counting sort on a
grid padded by the loop distance) and :func:`gather_slab` puts their values in that
order, so that neighbouring cells are neighbours in memory for the kernels of
:mod:`recipes.kernels.resample_crreject` and :mod:`recipes.kernels.resample_weights`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

SPECTRAL_LINEAR, SPECTRAL_LOG = 0, 1


@njit(cache=True, inline="always")
def cell_of(f):
    """The cell (nearest voxel index) of a fractional voxel coordinate: floor(f + 0.5)."""
    return int(math.floor(f + 0.5))


@njit(cache=True, inline="always")
def _spectral_f(lam, kind, crval, cd, crpix):
    # 0-based fractional plane of a wavelength: linear AWAV or AWAV-LOG (FITS paper III)
    if kind == SPECTRAL_LOG:
        return crpix - 1.0 + crval / cd * math.log(lam / crval)
    return (lam - crval) / cd + crpix - 1.0


@njit(cache=True, inline="always")
def _usable(dq, data, stat):
    return dq == 0 and math.isfinite(data) and math.isfinite(stat)


@njit(cache=True, parallel=True)
def plane_counts(lam, dq, data, stat, kind, crval, cd, crpix, zlo, nz, cellz):
    """Usable rows per cell plane ``zlo .. zlo+nz-1`` (int64 array of length nz).

    Also stores each row's cell plane minus ``zlo`` in ``cellz`` (int16 or int32), or −1
    for rows that are unusable or outside these planes, so that slabs select rows with an
    integer comparison instead of re-evaluating the spectral mapping.
    """
    n = lam.size
    nchunk = max(1, min(64, n // 65536 + 1))
    partial = np.zeros((nchunk, nz), dtype=np.int64)
    step = (n + nchunk - 1) // nchunk
    for c in prange(nchunk):
        for i in range(c * step, min(n, (c + 1) * step)):
            iz = -1
            if _usable(dq[i], data[i], stat[i]):
                iz = cell_of(_spectral_f(lam[i], kind, crval, cd, crpix)) - zlo
                if 0 <= iz < nz:
                    partial[c, iz] += 1
                else:
                    iz = -1
            cellz[i] = iz
    return partial.sum(axis=0)


@njit(cache=True, parallel=True)
def select_rows(cellz, first, stop):
    """Indices (ascending, int64) of rows whose ``cellz`` is in [first, stop)."""
    n = cellz.size
    nchunk = max(1, min(64, n // 65536 + 1))
    step = (n + nchunk - 1) // nchunk
    counts = np.zeros(nchunk, dtype=np.int64)
    for c in prange(nchunk):
        k = 0
        for i in range(c * step, min(n, (c + 1) * step)):
            if first <= cellz[i] < stop:
                k += 1
        counts[c] = k
    offsets = np.zeros(nchunk + 1, dtype=np.int64)
    for c in range(nchunk):
        offsets[c + 1] = offsets[c] + counts[c]
    out = np.empty(offsets[nchunk], dtype=np.int64)
    for c in prange(nchunk):
        k = offsets[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            if first <= cellz[i] < stop:
                out[k] = i
                k += 1
    return out


@njit(cache=True, parallel=True)
def spectral_coords(lam, idx, kind, crval, cd, crpix):
    """0-based fractional planes (float64) of rows ``idx``."""
    out = np.empty(idx.size, dtype=np.float64)
    for k in prange(idx.size):
        out[k] = _spectral_f(lam[idx[k]], kind, crval, cd, crpix)
    return out


@njit(cache=True, parallel=True)
def gather_slab(order, idx, fx, fy, fz, data, stat, weight):
    """A slab's rows in cell order: ``fx/fy/fz[order]`` and ``data/stat/weight[idx[order]]``
    as float64 (``weight`` empty: none), in one parallel pass instead of six numpy gathers."""
    n = order.size
    ofx = np.empty(n, dtype=np.float64)
    ofy = np.empty(n, dtype=np.float64)
    ofz = np.empty(n, dtype=np.float64)
    od = np.empty(n, dtype=np.float64)
    ost = np.empty(n, dtype=np.float64)
    use_w = weight.size > 0
    ow = np.empty(n if use_w else 0, dtype=np.float64)
    for k in prange(n):
        j = order[k]
        ofx[k] = fx[j]
        ofy[k] = fy[j]
        ofz[k] = fz[j]
        r = idx[j]
        od[k] = data[r]
        ost[k] = stat[r]
        if use_w:
            ow[k] = weight[r]
    return ofx, ofy, ofz, od, ost, ow


# --------------------------------------------------------------------------------------
# pixel grid of one slab (counting sort by cell)
# --------------------------------------------------------------------------------------


@njit(cache=True)
def build_grid(fx, fy, fz, nx, ny, pad, zlo, nzext):
    """Counting sort of rows by cell on a grid padded by ``pad`` cells spatially.

    Cell planes ``zlo .. zlo+nzext-1``. Returns ``(order, start)``: rows of cell c are
    ``order[start[c]:start[c+1]]`` in ascending row order; rows outside the grid are dropped.
    Cell index c = (cz·NY + cy)·NX + cx with NX = nx + 2·pad, NY = ny + 2·pad.
    """
    nxp = nx + 2 * pad
    nyp = ny + 2 * pad
    ncell = nxp * nyp * nzext
    n = fx.size
    cell = np.empty(n, dtype=np.int64)
    start = np.zeros(ncell + 1, dtype=np.int64)
    for k in range(n):
        cx = cell_of(fx[k]) + pad
        cy = cell_of(fy[k]) + pad
        cz = cell_of(fz[k]) - zlo
        if 0 <= cx < nxp and 0 <= cy < nyp and 0 <= cz < nzext:
            c = (cz * nyp + cy) * nxp + cx
            cell[k] = c
            start[c + 1] += 1
        else:
            cell[k] = -1
    for c in range(ncell):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(start[ncell], dtype=np.int64)
    for k in range(n):
        c = cell[k]
        if c >= 0:
            order[fill[c]] = k
            fill[c] += 1
    return order, start
