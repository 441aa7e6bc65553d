"""Resampling, weighted accumulation (numba): the output planes of one slab from its
cell-sorted rows.

Weights, with d = (fx − ix, fy − iy, fz − iz) in voxel units and r = |d| (floored at
1e-10, so that a row at a voxel centre dominates instead of dividing by zero), over rows
whose cell lies within ±``ld`` of the voxel on every axis: ``nearest``: only the closest
row of the voxel's own cell (ties: the first row); ``linear``: 1/r; ``quadratic``: 1/r²;
``renka``: ((R − r)/(R·r))² for r < R, else 0 (R in voxels); ``drizzle``: the overlap
volume of the row's footprint (``pixfrac``/2 = ``hx, hy, hz`` half-widths) with the voxel
(overlaps ≤ 1e-10 voxel count as none); ``lanczos``: Π sinc(d)·sinc(d/ld) over the axes
(|d| < ld). Weights are multiplied by the table's ``weight`` column when given. DATA =
Σwd/Σw, STAT = Σw²σ²/(Σw)², WEIGHT = Σw; NaN where Σw = 0.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from recipes.kernels.resample_slab import cell_of

METHODS = ("nearest", "linear", "quadratic", "renka", "drizzle", "lanczos")
NEAREST, LINEAR, QUADRATIC, RENKA, DRIZZLE, LANCZOS = range(len(METHODS))  # the method codes
RMIN = 1e-10
MIN_OVERLAP = 1e-10


@njit(cache=True, inline="always")
def _overlap(d, half):
    # overlaps below 1e-10 voxel are rounding noise of footprints that only touch the voxel
    # edge; counting them would fill otherwise empty voxels (the DRS leaves those empty)
    lo = max(d - half, -0.5)
    hi = min(d + half, 0.5)
    return hi - lo if hi - lo > MIN_OVERLAP else 0.0


@njit(cache=True, inline="always")
def _lanczos1(d, a):
    ad = abs(d)
    if ad >= a:
        return 0.0
    if ad < 1e-12:
        return 1.0
    x = math.pi * d
    return a * math.sin(x) * math.sin(x / a) / (x * x)


@njit(cache=True, inline="always")
def _weight(method, dx, dy, dz, hx, hy, hz, rc, ld):
    if method == DRIZZLE:
        return _overlap(dx, hx) * _overlap(dy, hy) * _overlap(dz, hz)
    if method == LANCZOS:
        return _lanczos1(dx, ld) * _lanczos1(dy, ld) * _lanczos1(dz, ld)
    r2 = dx * dx + dy * dy + dz * dz
    r = max(math.sqrt(r2), RMIN)
    if method == LINEAR:
        return 1.0 / r
    if method == QUADRATIC:
        return 1.0 / (r * r)
    # renka
    if r >= rc:
        return 0.0
    q = (rc - r) / (rc * r)
    return q * q


@njit(cache=True, parallel=True)
def resample_slab(
    start, nx, ny, pad, zoff, nzout, fx, fy, fz, data, stat, wcol, reject,
    method, hx, hy, hz, rc, ld, out_data, out_stat, out_weight, zout0,
):  # fmt: skip
    """Fill output planes ``zout0 .. zout0+nzout-1``; cell plane of output plane z is z + zoff.

    Rows are in cell order (rows of cell c: ``start[c]:start[c+1]``), so the neighbouring
    cells of a voxel are close in memory. ``wcol`` is the per-row exposure weight (empty
    array: none). Writes DATA/STAT/WEIGHT in place (``out_weight`` may be an empty 3-D
    array: not wanted).
    """
    nxp = nx + 2 * pad
    nyp = ny + 2 * pad
    nzext = (start.size - 1) // (nxp * nyp)
    use_w = wcol.size > 0
    keep_w = out_weight.size > 0
    for zl in prange(nzout):
        z = zout0 + zl
        cz = z + zoff
        if method == NEAREST:
            _nearest_plane(start, nx, ny, pad, nxp, nyp, z, cz, fx, fy, fz, data, stat, reject,
                           out_data, out_stat, out_weight, keep_w)  # fmt: skip
            continue
        # scatter: every row of the cell planes cz-ld .. cz+ld adds to the voxels of plane z
        # within ±ld of its cell. Rows are visited in ascending (cell) order, so each voxel
        # sums its contributions in the same order as a per-voxel gather would.
        sw = np.zeros((ny, nx), dtype=np.float64)
        swd = np.zeros((ny, nx), dtype=np.float64)
        sw2s = np.zeros((ny, nx), dtype=np.float64)
        zz0 = max(cz - ld, 0)
        zz1 = min(cz + ld, nzext - 1)
        wx = np.empty(2 * ld + 1, dtype=np.float64)
        for p in range(start[zz0 * nyp * nxp], start[(zz1 + 1) * nyp * nxp]):
            if reject[p]:
                continue
            dz = fz[p] - z
            rcx = cell_of(fx[p])
            rcy = cell_of(fy[p])
            ix0 = max(rcx - ld, 0)
            ix1 = min(rcx + ld, nx - 1)
            iy0 = max(rcy - ld, 0)
            iy1 = min(rcy + ld, ny - 1)
            if ix0 > ix1 or iy0 > iy1:
                continue
            wrow = wcol[p] if use_w else 1.0
            if method == DRIZZLE:
                # separable overlap: skip zero factors before the inner loop
                oz = _overlap(dz, hz)
                if oz == 0.0:
                    continue
                for ix in range(ix0, ix1 + 1):
                    wx[ix - ix0] = _overlap(fx[p] - ix, hx)
                for iy in range(iy0, iy1 + 1):
                    oy = _overlap(fy[p] - iy, hy)
                    if oy == 0.0:
                        continue
                    for ix in range(ix0, ix1 + 1):
                        ox = wx[ix - ix0]
                        if ox == 0.0:
                            continue
                        w = ox * oy * oz * wrow  # the product order of _weight, then the weight
                        sw[iy, ix] += w
                        swd[iy, ix] += w * data[p]
                        sw2s[iy, ix] += w * w * stat[p]
            else:
                for iy in range(iy0, iy1 + 1):
                    for ix in range(ix0, ix1 + 1):
                        w = _weight(method, fx[p] - ix, fy[p] - iy, dz, hx, hy, hz, rc, ld)
                        if w == 0.0:
                            continue
                        w *= wrow
                        sw[iy, ix] += w
                        swd[iy, ix] += w * data[p]
                        sw2s[iy, ix] += w * w * stat[p]
        for iy in range(ny):
            for ix in range(nx):
                t = sw[iy, ix]
                if t != 0.0:
                    out_data[z, iy, ix] = swd[iy, ix] / t
                    out_stat[z, iy, ix] = sw2s[iy, ix] / (t * t)
                else:
                    out_data[z, iy, ix] = np.nan
                    out_stat[z, iy, ix] = np.nan
                if keep_w:
                    out_weight[z, iy, ix] = t


@njit(cache=True)
def _nearest_plane(start, nx, ny, pad, nxp, nyp, z, cz, fx, fy, fz, data, stat, reject,
                   out_data, out_stat, out_weight, keep_w):  # fmt: skip
    # per voxel: the closest unrejected row of its own cell (first one on ties)
    for iy in range(ny):
        for ix in range(nx):
            c = (cz * nyp + iy + pad) * nxp + ix + pad
            best = -1
            bestr = 0.0
            for p in range(start[c], start[c + 1]):
                if reject[p]:
                    continue
                dx = fx[p] - ix
                dy = fy[p] - iy
                dz = fz[p] - z
                r2 = dx * dx + dy * dy + dz * dz
                if best < 0 or r2 < bestr:
                    best = p
                    bestr = r2
            if best >= 0:
                out_data[z, iy, ix] = data[best]
                out_stat[z, iy, ix] = stat[best]
            else:
                out_data[z, iy, ix] = np.nan
                out_stat[z, iy, ix] = np.nan
            if keep_w:
                out_weight[z, iy, ix] = 1.0 if best >= 0 else 0.0
