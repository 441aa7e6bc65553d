"""Voxel-by-voxel combination, the per-block numba kernel of :mod:`recipes.kernels.cubecombine`.

:func:`combine_block` combines voxels ``[start, stop)`` of a stack ``[n, m]`` with the
semantics defined in :mod:`recipes.kernels.cubecombine` (method codes: index into
``METHODS``; variance codes: index into ``VAR_MODES``): the sums over the cubes run with
the voxel index innermost (vectorised), the voxels whose first clipping round keeps every
value are finished from them, the others by the general per-voxel path
(:func:`_combine_voxel`), with the same sums in the same order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

METHODS = ("sigclip", "median")
VAR_MODES = ("propagate", "stat_mean", "stat_one")
MEDIAN_VAR_FACTOR = math.pi / 2
MAD_TO_SIGMA = 1.4826  # the constant MPDAF uses
_RANK_MAX = 12  # up to this many values, the median counts ranks without branches


@njit(cache=True, inline="always")
def _median(vals, work, k):
    """Median of ``vals[:k]`` (mean of the two middle values for even k); ``vals`` is kept.

    Up to ``_RANK_MAX`` values: the ranks are counted without branches (the values of a
    voxel are random, so a sort's branches would mostly be mispredicted); more: an
    insertion sort of a copy in ``work``.
    """
    m0 = (k - 1) // 2
    m1 = k // 2
    if k <= _RANK_MAX:
        a = 0.0
        b = 0.0
        for i in range(k):
            vi = vals[i]
            r = 0
            for j in range(k):
                vj = vals[j]
                r += (vj < vi) | ((vj == vi) & (j < i))
            a = vi if r == m0 else a
            b = vi if r == m1 else b
        return 0.5 * (a + b)
    for i in range(k):
        work[i] = vals[i]
    for i in range(1, k):
        v = work[i]
        j = i - 1
        while j >= 0 and work[j] > v:
            work[j + 1] = work[j]
            j -= 1
        work[j + 1] = v
    return 0.5 * (work[m0] + work[m1])


@njit(cache=True, inline="always")
def _store_var(out_var, p, var_mode, use_var, method, k, vsum, sigma):
    """Output variance of a final set of ``k`` values whose scaled variances sum to ``vsum``
    and whose population σ is ``sigma`` (see the module docstring)."""
    if var_mode == 0:
        if use_var:
            t = vsum / (k * k)
            if method == 1 and k >= 3:
                t *= MEDIAN_VAR_FACTOR
            out_var[p] = t
        else:
            out_var[p] = np.nan
    elif k > 1:
        out_var[p] = sigma * sigma / (k - 1) if var_mode == 1 else sigma * sigma
    else:
        out_var[p] = np.nan


@njit(cache=True, error_model="numpy")
def _combine_voxel(data, var, scale, offset, p, method, nmax, nclip_low, nclip_up, nstop, var_mode, use_var, mad,
                   out_data, out_var, out_exp, selected, vals, vvar, ids, work, work2):  # fmt: skip
    """Voxel ``p``, the general path (clipping, median, MAD): adds the cubes kept in its
    final set to ``selected`` (counting ``nvalid`` is the caller's job)."""
    n = data.shape[0]
    k = 0
    for i in range(n):
        d = data[i, p]
        if not math.isnan(d):
            vals[k] = d * scale[i] + offset[i]
            vvar[k] = var[i, p] * scale[i] * scale[i] if use_var else 0.0
            ids[k] = i
            k += 1
    if k == 0:
        out_data[p] = np.nan
        out_var[p] = np.nan
        out_exp[p] = 0
        return
    mean = 0.0
    sigma = 0.0
    if method == 1:  # median
        mean = _median(vals, work, k)
        s = 0.0
        for i in range(k):
            s += (vals[i] - mean) * (vals[i] - mean)
        sigma = math.sqrt(s / k)
    else:
        iterations = nmax
        narrow = min(nclip_low, nclip_up) * (1.0 - 1e-9)
        while True:
            mean = 0.0
            vmin = vals[0]
            vmax = vals[0]
            for i in range(k):
                mean += vals[i]
                vmin = min(vmin, vals[i])
                vmax = max(vmax, vals[i])
            mean /= k
            s = 0.0
            for i in range(k):
                s += (vals[i] - mean) * (vals[i] - mean)
            sigma = math.sqrt(s / k)
            if k == 1:
                break
            # The median M lies in [min, max], so every value is within (max − min) of
            # it: when that is below the narrower clip width all values are inside and
            # the median need not be computed (the common case for few exposures).
            if not mad and vmax - vmin < narrow * sigma:
                break
            med = _median(vals, work, k)
            if mad:  # MPDAF mad=True: σ = 1.4826 · median |v − M|
                for i in range(k):
                    work2[i] = abs(vals[i] - med)
                sigma = MAD_TO_SIGMA * _median(work2, work, k)
            lo = med - nclip_low * sigma
            hi = med + nclip_up * sigma
            inside = 0
            for i in range(k):
                if vals[i] < hi and vals[i] > lo:
                    inside += 1
            if inside < nstop or inside == k or iterations <= 0:
                break
            m = 0
            for i in range(k):
                if vals[i] < hi and vals[i] > lo:
                    vals[m] = vals[i]
                    vvar[m] = vvar[i]
                    ids[m] = ids[i]
                    m += 1
            k = m
            iterations -= 1
    out_data[p] = mean
    out_exp[p] = k
    vsum = 0.0
    for i in range(k):
        selected[ids[i]] += 1
        vsum += vvar[i]
    _store_var(out_var, p, var_mode, use_var, method, k, vsum, sigma)


@njit(cache=True, error_model="numpy")
def combine_block(data, var, scale, offset, start, stop, method, nmax, nclip_low, nclip_up, nstop,
                   var_mode, use_var, mad, out_data, out_var, out_exp, valid, selected):  # fmt: skip
    """Voxels [start, stop) in two steps.

    1. Per-voxel sums over the cubes (count, Σv, min, max, then Σ(v − mean)² and Σvar),
       with the voxel index innermost: contiguous loads that the compiler vectorises.
    2. A voxel whose first clipping round keeps everything (k = 1, or max − min below the
       narrower clip width × σ, without ``mad``) is finished from those sums: the common
       case for a few exposures. The others (outliers, ``median``, ``mad``) go through
       :func:`_combine_voxel`. The sums run over the cubes in the same order as there, so
       both paths give identical numbers.
    """
    n = data.shape[0]
    b = stop - start
    count = np.zeros(b, dtype=np.int64)
    total = np.zeros(b)
    vmin = np.full(b, np.inf)
    vmax = np.full(b, -np.inf)
    for i in range(n):
        sc = scale[i]
        of = offset[i]
        nvalid = 0
        row = data[i, start:stop]  # 1-D views: simpler addressing, the loops vectorise
        for q in range(b):
            d = row[q]
            ok = d == d  # not NaN
            v = d * sc + of
            count[q] += 1 if ok else 0
            total[q] += v if ok else 0.0
            vmin[q] = min(vmin[q], v) if ok else vmin[q]
            vmax[q] = max(vmax[q], v) if ok else vmax[q]
            nvalid += 1 if ok else 0
        valid[i] += nvalid
        selected[i] += nvalid  # provisional: the general path takes its voxels back
    mean = np.empty(b)
    for q in range(b):
        mean[q] = total[q] / count[q]  # NaN for k = 0: not used
    squares = np.zeros(b)
    vsum = np.zeros(b)
    for i in range(n):
        sc = scale[i]
        of = offset[i]
        if use_var:
            row = data[i, start:stop]
            vrow = var[i, start:stop]
            for q in range(b):
                d = row[q]
                ok = d == d
                dv = (d * sc + of) - mean[q]
                squares[q] += dv * dv if ok else 0.0
                vsum[q] += vrow[q] * sc * sc if ok else 0.0
        else:
            row = data[i, start:stop]
            for q in range(b):
                d = row[q]
                dv = (d * sc + of) - mean[q]
                squares[q] += dv * dv if d == d else 0.0
    # Every voxel finished as if its first round kept all values (k = 0 gives NaN through
    # 0/0); the voxels for which that is wrong are redone below.
    narrow = min(nclip_low, nclip_up) * (1.0 - 1e-9)
    only_one = method == 1 or mad  # there, only k <= 1 is simple
    simple = np.empty(b, dtype=np.bool_)
    sigma = np.empty(b)
    od = out_data[start:stop]
    ov = out_var[start:stop]
    oe = out_exp[start:stop]
    for q in range(b):  # branch-free, one loop per case: vectorised
        k = count[q]
        sigma[q] = math.sqrt(squares[q] / k)
        simple[q] = (k <= 1) | ((not only_one) & (vmax[q] - vmin[q] < narrow * sigma[q]))
        od[q] = total[q] / k
        oe[q] = k
    if var_mode == 0:
        if use_var:
            for q in range(b):
                ov[q] = vsum[q] / (count[q] * count[q])
        else:
            ov[:] = np.nan
    elif var_mode == 1:
        for q in range(b):
            ov[q] = sigma[q] * sigma[q] / (count[q] - 1) if count[q] > 1 else np.nan
    else:
        for q in range(b):
            ov[q] = sigma[q] * sigma[q] if count[q] > 1 else np.nan
    vals = np.empty(n, dtype=np.float64)
    vvar = np.empty(n, dtype=np.float64)
    ids = np.empty(n, dtype=np.int64)
    work = np.empty(n, dtype=np.float64)
    work2 = np.empty(n, dtype=np.float64)
    for q in range(b):
        if simple[q]:
            continue
        p = start + q
        for i in range(n):
            if not math.isnan(data[i, p]):
                selected[i] -= 1
        _combine_voxel(data, var, scale, offset, p, method, nmax, nclip_low, nclip_up, nstop, var_mode, use_var,
                       mad, out_data, out_var, out_exp, selected, vals, vvar, ids, work, work2)  # fmt: skip
