"""Voxel-by-voxel combination of cubes on one grid (MPDAF ``CubeList.combine`` semantics).

The inputs are stacks ``[n, m]`` (n cubes, m voxels of one slab) of data and variance
(float32, NaN = no data). For each voxel the finite values ``v_i = d_i·scale_i + offset_i``
(variance ``var_i·scale_i²``) of the cubes are combined:

* ``sigclip`` (MPDAF ``mpdaf_mean_sigma_clip``): take the mean μ and the population
  standard deviation σ (ddof = 0) and the median M of the current set; count the values
  strictly inside (M − nclip_low·σ, M + nclip_up·σ); if fewer than ``nstop`` or all of
  them are inside, stop; otherwise keep those inside and repeat, at most ``nmax`` times.
  The result is the mean of the final set; with one value, that value. With ``mad``, σ is
  1.4826 · median |v − M| instead (MPDAF ``mad=True``).
* ``median``: the median of the finite values (mean of the two middle ones for an even
  count).

``expmap`` is the number of values in the final set (0: NaN output). The variance ``var``
(``var_mode``): 0 ``propagate`` Σvar_i/k² over the final set (k = 1: var_1; for the
median, times π/2, the asymptotic efficiency of the median for Gaussian noise, when
k ≥ 3); 1 ``stat_mean`` σ²/(k − 1) of the final set; 2 ``stat_one`` σ²; both NaN when
k ≤ 1 (as MPDAF). Per cube, ``nvalid`` counts its finite voxels and ``nselected`` those
kept in the final sets (MPDAF's STATPIX table: NPIX_NAN = m − nvalid, NPIX_REJECTED =
nvalid − nselected).

:func:`combine_slab` runs the numba kernel, parallel over blocks of voxels. Within a block
the sums over the cubes (count, Σv, min, max, Σ(v − mean)², Σvar) run with the voxel index
innermost, which the compiler vectorises; a voxel whose first clipping round would keep
every value (max − min below the clip width; as max − min ≤ √(2n)·σ, always so for up to
12 cubes at 5σ) is finished from
those sums, the others by the per-voxel general path, with the same sums in the same order,
so the result does not depend on the path (the per-block kernel:
:mod:`recipes.kernels.cubecombine_voxel`). :func:`combine_reference` is the plain
per-voxel numpy twin used by the tests. Memory bounding is the caller's job (slabs of
planes, see :func:`recipes.algorithms.cubelist.combine_cubes`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from recipes.kernels.cubecombine_voxel import MAD_TO_SIGMA, MEDIAN_VAR_FACTOR, METHODS, VAR_MODES, combine_block

_BLOCK = 4096  # voxels per parallel task


@njit(cache=True, inline="always")
def _swap_bytes(words):
    """Reverse the 4 bytes of every uint32 of ``words`` in place (big ↔ little endian)."""
    for q in range(words.size):
        w = words[q]
        words[q] = ((w & 0xFF) << 24) | ((w & 0xFF00) << 8) | ((w >> 8) & 0xFF00) | (w >> 24)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _combine_parallel(data, var, data_bits, var_bits, swap, scale, offset, method, nmax, nclip_low, nclip_up, nstop,
                      var_mode, use_var, mad, out_data, out_var, out_exp, valid_blocks, selected_blocks):  # fmt: skip
    m = data.shape[1]
    nblocks = valid_blocks.shape[0]
    for b in prange(nblocks):
        start = b * _BLOCK
        stop = min(m, start + _BLOCK)
        if swap:  # byte order of the file → native, block by block while it is in cache
            for i in range(data.shape[0]):
                _swap_bytes(data_bits[i, start:stop])
                if use_var:
                    _swap_bytes(var_bits[i, start:stop])
        combine_block(data, var, scale, offset, start, stop, method, nmax, nclip_low, nclip_up, nstop,
                       var_mode, use_var, mad, out_data, out_var, out_exp, valid_blocks[b],
                       selected_blocks[b])  # fmt: skip


def _check(data: np.ndarray, var: np.ndarray | None, scale, offset, method: str, var_mode: str):
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if var_mode not in VAR_MODES:
        raise ValueError(f"var must be one of {', '.join(VAR_MODES)}, not {var_mode!r}")
    if data.ndim != 2:
        raise ValueError("data must be a stack [ncubes, nvoxels]")
    if var is not None and var.shape != data.shape:
        raise ValueError(f"var shape {var.shape} differs from data shape {data.shape}")
    n = data.shape[0]
    scale = np.ones(n) if scale is None else np.asarray(scale, dtype=np.float64).reshape(-1)
    offset = np.zeros(n) if offset is None else np.asarray(offset, dtype=np.float64).reshape(-1)
    if scale.size != n or offset.size != n:
        raise ValueError(f"need one scale and one offset per cube ({n})")
    return scale, offset


def combine_slab(
    data: np.ndarray,
    var: np.ndarray | None,
    scale: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    method: str = "sigclip",
    nmax: int = 2,
    nclip_low: float = 5.0,
    nclip_up: float = 5.0,
    nstop: int = 2,
    var_mode: str = "propagate",
    mad: bool = False,
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    swap_bytes: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Combine a stack ``[n, m]`` (numba, parallel); see the module docstring.

    ``swap_bytes``: ``data`` and ``var`` are contiguous float32 buffers holding the bytes
    of the other byte order (big-endian FITS pixels read as they are on a little-endian
    machine); the kernel swaps them in place, block by block, before combining (so the
    buffers hold native values afterwards).

    ``var`` may be None (then ``var_mode`` propagate gives NaN). ``out``: optional
    contiguous arrays ``(data float32 [m], var float32 [m], expmap int16 or int32 [m])`` to
    fill (e.g. views of the output cube: no temporaries). Returns ``(data float32 [m],
    var float32 [m], expmap int32 [m] (or ``out``'s), nvalid int64 [n], nselected int64 [n])``.
    """
    scale, offset = _check(data, var, scale, offset, method, var_mode)
    n, m = data.shape
    use_var = var is not None
    if swap_bytes and not (data.dtype == np.float32 and data.flags.c_contiguous and data.flags.writeable
                           and (not use_var or (var.dtype == np.float32 and var.flags.c_contiguous
                                                and var.flags.writeable))):  # fmt: skip
        raise ValueError("swap_bytes needs writeable contiguous float32 data and var buffers")
    data = np.ascontiguousarray(data, dtype=np.float32)
    var = np.ascontiguousarray(var, dtype=np.float32) if use_var else np.zeros((n, 0), dtype=np.float32)
    if out is None:
        out_data = np.empty(m, dtype=np.float32)
        out_var = np.empty(m, dtype=np.float32)
        out_exp = np.empty(m, dtype=np.int32)
    else:
        out_data, out_var, out_exp = out
        ok = (out_data.dtype == np.float32 and out_var.dtype == np.float32 and out_exp.dtype in (np.int16, np.int32)
              and all(a.shape == (m,) and a.flags.c_contiguous for a in out))  # fmt: skip
        if not ok:
            raise ValueError(f"out must be contiguous float32, float32, int16/int32 arrays of {m} voxels")
    nblocks = (m + _BLOCK - 1) // _BLOCK
    valid = np.zeros((nblocks, n), dtype=np.int64)
    selected = np.zeros((nblocks, n), dtype=np.int64)
    if m:
        _combine_parallel(data, var, data.view(np.uint32), var.view(np.uint32), bool(swap_bytes), scale, offset,
                          METHODS.index(method), int(nmax), float(nclip_low),
                          float(nclip_up), int(nstop), VAR_MODES.index(var_mode), use_var, bool(mad),
                          out_data, out_var, out_exp, valid, selected)  # fmt: skip
    return out_data, out_var, out_exp, valid.sum(axis=0), selected.sum(axis=0)


def combine_reference(
    data: np.ndarray,
    var: np.ndarray | None,
    scale: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    method: str = "sigclip",
    nmax: int = 2,
    nclip_low: float = 5.0,
    nclip_up: float = 5.0,
    nstop: int = 2,
    var_mode: str = "propagate",
    mad: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Plain numpy twin of :func:`combine_slab` (a loop over voxels; small inputs only)."""
    scale, offset = _check(data, var, scale, offset, method, var_mode)
    n, m = data.shape
    out_data = np.full(m, np.nan, dtype=np.float32)
    out_var = np.full(m, np.nan, dtype=np.float32)
    out_exp = np.zeros(m, dtype=np.int32)
    valid = np.zeros(n, dtype=np.int64)
    selected = np.zeros(n, dtype=np.int64)
    for p in range(m):
        d = data[:, p].astype(np.float64)
        ids = np.flatnonzero(~np.isnan(d))
        valid[ids] += 1
        if ids.size == 0:
            continue
        vals = d[ids] * scale[ids] + offset[ids]
        vv = (var[ids, p].astype(np.float64) * scale[ids] ** 2) if var is not None else None
        if method == "median":
            centre = float(np.median(vals))
        else:
            for _ in range(int(nmax) + 1):
                if vals.size == 1:
                    break
                med, sigma = np.median(vals), vals.std()
                if mad:
                    sigma = MAD_TO_SIGMA * np.median(np.abs(vals - med))
                keep = (vals > med - nclip_low * sigma) & (vals < med + nclip_up * sigma)
                if keep.sum() < nstop or keep.all():
                    break
                if _ == int(nmax):  # nmax clipping rounds done
                    break
                vals, ids = vals[keep], ids[keep]
                vv = vv[keep] if vv is not None else None
            centre = float(vals.mean())
        k = vals.size
        out_data[p] = centre
        out_exp[p] = k
        selected[ids] += 1
        if method == "median":
            sigma2 = float(((vals - centre) ** 2).mean())
        elif mad and k > 1:
            sigma2 = float((MAD_TO_SIGMA * np.median(np.abs(vals - np.median(vals)))) ** 2)
        else:
            sigma2 = float(vals.var())
        if var_mode == "propagate":
            if vv is not None:
                out_var[p] = vv.sum() / k**2 * (MEDIAN_VAR_FACTOR if method == "median" and k >= 3 else 1.0)
        elif k > 1:
            out_var[p] = sigma2 / (k - 1) if var_mode == "stat_mean" else sigma2
    return out_data, out_var, out_exp, valid, selected
