"""Cubes of several exposures already on one grid, combined voxel by voxel (MPDAF
``CubeList.combine``; the work of :mod:`recipes.steps.mpdaf_combine`).

:func:`combine_cubes` opens the DATACUBE_FINAL (memory-mapped), checks that they share the
shape and the WCS of the first one (RecipeError naming the file that differs), and for
each slab of wavelength planes reads DATA and STAT of every cube and combines them with
:func:`recipes.kernels.cubecombine.combine_slab` (sigma-clipped mean or median). The next
slab is read (in a thread) while the kernel works on the current one, into two buffers
allocated once that together hold at most ``max_voxels`` input voxels. Plain float32
extensions are read with ``pread`` straight into the buffer (no memory map, no converting
copy; other encodings go through astropy); the kernel swaps the bytes to native order
block by block and writes into the output cubes.

Arrays are ``[z, y, x]`` (0-based); wavelengths in Å. The output cubes are held in memory
(DATA + STAT float32 + EXPMAP int16, 10 bytes per voxel); the inputs are streamed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.io import fits

from recipes.base import ParamValue, RecipeError
from recipes.algorithms.cube import FLUX_UNIT, CubeGrid
from recipes.io import HduInfo, fits_index
from recipes.kernels.cubecombine import combine_slab

#: the slabs hold FITS (big-endian) bytes; the kernel swaps them on little-endian machines
SWAP_BYTES = sys.byteorder == "little"
MAX_VOXELS = 64_000_000  # input voxels of all cubes together per slab (≈ 512 MB for DATA + STAT)


class CombinedCubes(NamedTuple):
    """The combination: DATA (mean) and variance float32, EXPMAP int16 (exposures kept per
    voxel), all ``[z, y, x]`` on ``grid``; per input cube its finite voxels (``nvalid``) and
    those kept (``nselected``); the first cube's primary header and DATA unit."""

    grid: CubeGrid
    data: np.ndarray
    var: np.ndarray
    expmap: np.ndarray
    nvalid: np.ndarray
    nselected: np.ndarray
    primary: fits.Header
    bunit: str


def clip_limits(nclip: Sequence[float]) -> tuple[float, float]:
    """``nclip`` [σ] as (low, high): one value for both sides, or low and high."""
    return (nclip[0], nclip[0]) if len(nclip) == 1 else (nclip[0], nclip[1])


def grid_of(header: fits.Header, shape: tuple[int, int, int], where: str) -> CubeGrid:
    """The :class:`~recipes.algorithms.cube.CubeGrid` of a DATACUBE_FINAL DATA header."""
    def num(key, default=None):
        value = header.get(key, default)
        if value is None:
            raise RecipeError(f"{where}: DATA header lacks {key}")
        return float(value)

    if "CD1_1" in header or "CD2_2" in header:
        cd = (num("CD1_1", 0.0), num("CD1_2", 0.0), num("CD2_1", 0.0), num("CD2_2", 0.0))
    else:
        c1, c2 = num("CDELT1", 1.0), num("CDELT2", 1.0)
        cd = (c1, 0.0, 0.0, c2)
    cd3 = num("CD3_3", header.get("CDELT3"))
    celestial = str(header.get("CTYPE1", "")).upper().startswith("RA")
    spectral = "AWAV-LOG" if str(header.get("CTYPE3", "")).upper() == "AWAV-LOG" else "AWAV"
    nz, ny, nx = shape
    return CubeGrid(nx, ny, nz, num("CRPIX1"), num("CRPIX2"), num("CRVAL1"), num("CRVAL2"), cd,
                    num("CRPIX3", 1.0), num("CRVAL3"), cd3, celestial, spectral)  # fmt: skip


def _same_grid(a: CubeGrid, b: CubeGrid) -> bool:
    fa = np.array([a.crpix1, a.crpix2, a.crval1, a.crval2, *a.cd, a.crpix3, a.crval3, a.cd3])
    fb = np.array([b.crpix1, b.crpix2, b.crval1, b.crval2, *b.cd, b.crpix3, b.crval3, b.cd3])
    return a.shape == b.shape and a.spectral == b.spectral and bool(np.allclose(fa, fb, rtol=1e-9, atol=1e-10))


def _raw_offset(hdu: HduInfo) -> int | None:
    """File offset of the HDU's pixels if they are plain big-endian float32 (BITPIX −32,
    not scaled, not compressed) and can be read straight into a buffer; else None."""
    plain = not hdu.compressed and hdu.bitpix == -32 and hdu.bscale == 1.0 and hdu.bzero == 0.0
    return hdu.data_offset if plain else None


class _CubeReader:
    """DATA and STAT of one DATACUBE_FINAL, memory-mapped, read by slabs of planes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.hdul = fits.open(self.path, memmap=True)
            names = [str(h.header.get("EXTNAME", "")).upper() for h in self.hdul]
            i_data = names.index("DATA") if "DATA" in names else (1 if len(self.hdul) > 1 else 0)
            self.data = self.hdul[i_data]
            self.stat = self.hdul[names.index("STAT")] if "STAT" in names else None
            shape = self.data.shape
        except (OSError, ValueError, IndexError) as exc:
            raise RecipeError(f"{self.path}: cannot read cube ({str(exc).splitlines()[0]})") from None
        if len(shape) != 3:
            raise RecipeError(f"{self.path}: DATA is not a cube (shape {shape})")
        self.shape = tuple(int(s) for s in shape)
        self.grid = grid_of(self.data.header, self.shape, str(self.path))
        self.primary = self.hdul[0].header
        self.fd = os.open(self.path, os.O_RDONLY)
        index = fits_index(self.path)
        self.raw = {id(h): _raw_offset(index[self.hdul.index(h)]) for h in (self.data, self.stat) if h is not None}

    def _read_planes(self, hdu, z0: int, z1: int, out: np.ndarray) -> None:
        nz, ny, nx = self.shape
        offset = self.raw[id(hdu)]
        if offset is None:  # any other encoding: astropy converts, then to big-endian like the rest
            out.reshape(z1 - z0, ny, nx)[...] = hdu.data[z0:z1]
            if SWAP_BYTES:
                out.byteswap(inplace=True)
            return
        # pread straight into the buffer: no memory map to fault in and no converting copy
        # (astropy's path, the slowest part of a large combination); the kernel swaps bytes
        view = memoryview(out).cast("B")
        start, done = offset + z0 * ny * nx * 4, 0
        while done < view.nbytes:
            got = os.preadv(self.fd, [view[done:]], start + done)
            if got <= 0:
                raise RecipeError(f"{self.path}: file ends inside {hdu.name} (truncated?)")
            done += got

    def read_into(self, z0: int, z1: int, data_out: np.ndarray, stat_out: np.ndarray | None) -> None:
        """Planes [z0, z1) of DATA (and STAT) into flat contiguous float32 buffers, as
        big-endian bytes (FITS order; pass ``swap_bytes=SWAP_BYTES`` to the kernel)."""
        self._read_planes(self.data, z0, z1, data_out)
        if stat_out is not None:
            self._read_planes(self.stat, z0, z1, stat_out)

    def close(self) -> None:
        os.close(self.fd)
        self.hdul.close()


def combine_cubes(paths: list[Path], params: Mapping[str, ParamValue | None],
                  max_voxels: int = MAX_VOXELS) -> CombinedCubes:  # fmt: skip
    """Combine the cubes in ``paths`` slab by slab (see the module docstring).

    ``params``: the typed parameters of mpdaf_combine (``method``, ``nmax``, ``nclip`` (one
    value, or low and high) [σ], ``nstop``, ``var``, ``mad``); ``max_voxels``: input voxels
    of all cubes together per slab. RecipeError naming the cube whose grid differs, which
    lacks STAT for ``var=propagate`` or which is truncated.
    """
    readers = [_CubeReader(p) for p in paths]
    try:
        ref = readers[0]
        for r in readers[1:]:
            if r.shape != ref.shape:
                raise RecipeError(f"{r.path}: cube shape {r.shape} differs from {ref.shape} of {ref.path.name}; "
                                  "the mpdaf method needs cubes on one grid (same OUTPUT_WCS)")
            if not _same_grid(r.grid, ref.grid):
                raise RecipeError(f"{r.path}: WCS differs from that of {ref.path.name}; "
                                  "the mpdaf method needs cubes on one grid (same OUTPUT_WCS)")
        var_mode = params["var"]
        if var_mode == "propagate":
            missing = [r.path.name for r in readers if r.stat is None]
            if missing:
                raise RecipeError(f"{missing[0]}: no STAT extension, needed by var=propagate")
        low, high = clip_limits(params["nclip"])
        nz, ny, nx = ref.shape
        n = len(readers)
        out_data = np.empty(ref.shape, dtype=np.float32)
        out_var = np.empty(ref.shape, dtype=np.float32)
        expmap = np.empty(ref.shape, dtype=np.int16)
        nvalid = np.zeros(n, dtype=np.int64)
        nselected = np.zeros(n, dtype=np.int64)
        planes = max(1, int(max_voxels) // max(1, 2 * n * ny * nx))  # two slabs in flight
        slabs = [(z0, min(nz, z0 + planes)) for z0 in range(0, nz, planes)]
        with_var = var_mode == "propagate"
        # two reused buffer pairs: the reader fills one while the kernel combines the other
        size = n * planes * ny * nx
        buffers = [(np.empty(size, dtype=np.float32), np.empty(size if with_var else 0, dtype=np.float32))
                   for _ in range(min(2, len(slabs)))]  # fmt: skip

        def read(k: int):
            z0, z1 = slabs[k]
            m = (z1 - z0) * ny * nx
            data, var = buffers[k % 2]
            stack = data[: n * m].reshape(n, m)  # contiguous also for the shorter last slab
            vstack = var[: n * m].reshape(n, m) if with_var else None
            for i, r in enumerate(readers):
                r.read_into(z0, z1, stack[i], vstack[i] if with_var else None)
            return stack, vstack

        # the next slab is read while the kernel (which releases the GIL) combines this one
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read, 0)
            for k, (z0, z1) in enumerate(slabs):
                stack, vstack = pending.result()
                if k + 1 < len(slabs):
                    pending = pool.submit(read, k + 1)
                out = (out_data[z0:z1].reshape(-1), out_var[z0:z1].reshape(-1), expmap[z0:z1].reshape(-1))
                _, _, _, valid, sel = combine_slab(
                    stack, vstack, method=params["method"], nmax=params["nmax"], nclip_low=low, nclip_up=high,
                    nstop=params["nstop"], var_mode=var_mode, mad=params["mad"], out=out, swap_bytes=SWAP_BYTES,
                )  # fmt: skip
                nvalid += valid
                nselected += sel
        bunit = str(ref.data.header.get("BUNIT", FLUX_UNIT))
        return CombinedCubes(ref.grid, out_data, out_var, expmap, nvalid, nselected, ref.primary.copy(), bunit)
    finally:
        for r in readers:
            r.close()
