"""Resampling, cosmic-ray rejection (numba) on the cell-sorted rows of one slab.

For each cell, the values of its rows and of the rows in the neighbouring cells ±1 in λ
and ±1 along the slice direction (``crdir``: ``x``, ``y`` or ``none``) form a sample of n
values; with n ≥ 3, rows *of the cell* above ``centre + crsigma·σ`` are rejected.
``median``: centre = median, σ = 1.4826·MAD; ``mean``: mean and standard deviation;
``iraf``: centre = median, σ = √stat of the row. σ = 0 rejects nothing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CRTYPES = ("iraf", "mean", "median")  # codes 0, 1, 2 of cr_reject's crtype
CRDIRS = ("x", "y", "none")           # codes 0, 1, 2 of cr_reject's crdir
MAD_TO_SIGMA = 1.482602218505602


@njit(cache=True, inline="always")
def _sorted_median(buf, n):
    # insertion sort of buf[:n] in place (n is small: the rows of 9 cells), then the median
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    h = n // 2
    return buf[h] if n % 2 else 0.5 * (buf[h - 1] + buf[h])


@njit(cache=True, inline="always")
def _mad_sorted(buf, n, centre):
    # median of |buf - centre| for sorted buf[:n]: the deviations below the centre grow
    # leftwards and those above grow rightwards, so merge the two runs up to the middle
    lo = -1
    hi = 0
    while hi < n and buf[hi] < centre:
        hi += 1
    lo = hi - 1
    h = n // 2
    prev = 0.0
    cur = 0.0
    for k in range(h + 1):
        dl = centre - buf[lo] if lo >= 0 else np.inf
        dh = buf[hi] - centre if hi < n else np.inf
        prev = cur
        if dl <= dh:
            cur = dl
            lo -= 1
        else:
            cur = dh
            hi += 1
    return cur if n % 2 else 0.5 * (prev + cur)


@njit(cache=True, parallel=True)
def cr_reject(start, nxp, nyp, nzext, zfirst, zstop, data, stat, crtype, crsigma, crdir):
    """Boolean reject flag per row, for cells in planes ``zfirst .. zstop-1``.

    Rows are in cell order: the rows of cell c are ``start[c]:start[c+1]``.
    """
    reject = np.zeros(data.size, dtype=np.bool_)
    maxcount = 0
    for c in range(start.size - 1):
        maxcount = max(maxcount, start[c + 1] - start[c])
    if maxcount == 0:
        return reject
    sx = 1 if crdir == 0 else 0
    sy = 1 if crdir == 1 else 0
    cap = maxcount * 9
    for cz in prange(zfirst, zstop):
        vals = np.empty(cap, dtype=np.float64)
        for cy in range(nyp):
            for cx in range(nxp):
                c = (cz * nyp + cy) * nxp + cx
                if start[c + 1] == start[c]:
                    continue
                n = 0
                for dz in range(-1, 2):
                    z = cz + dz
                    if z < 0 or z >= nzext:
                        continue
                    for ds in range(-1, 2):
                        if sx == 0 and sy == 0 and ds != 0:
                            continue
                        x = cx + ds * sx
                        y = cy + ds * sy
                        if x < 0 or x >= nxp or y < 0 or y >= nyp:
                            continue
                        cc = (z * nyp + y) * nxp + x
                        for p in range(start[cc], start[cc + 1]):
                            vals[n] = data[p]
                            n += 1
                if n < 3:
                    continue
                if crtype == 1:  # mean
                    centre = 0.0
                    for i in range(n):
                        centre += vals[i]
                    centre /= n
                    var = 0.0
                    for i in range(n):
                        var += (vals[i] - centre) ** 2
                    sigma = math.sqrt(var / (n - 1))
                else:
                    centre = _sorted_median(vals, n)
                    sigma = 0.0
                    if crtype == 2:  # median / MAD
                        top = data[start[c]]
                        for p in range(start[c] + 1, start[c + 1]):
                            top = max(top, data[p])
                        if top <= centre:
                            continue  # nothing of this cell lies above the centre
                        sigma = MAD_TO_SIGMA * _mad_sorted(vals, n, centre)
                for p in range(start[c], start[c + 1]):
                    s = math.sqrt(max(stat[p], 0.0)) if crtype == 0 else sigma
                    if s > 0 and data[p] > centre + crsigma * s:
                        reject[p] = True
    return reject
