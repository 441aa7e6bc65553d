"""mpdaf_combine: combine the cubes of several exposures already on one grid (MPDAF's role).

This is the ``mpdaf`` method of ``musered exp-combine``: the per-exposure DATACUBE_FINAL of
muse_scipost_make_cube, all resampled on the same OUTPUT_WCS, are combined voxel by voxel
with a sigma-clipped mean (:mod:`recipes.kernels.cubecombine`, the semantics of
``mpdaf.obj.CubeList.combine``: ``nmax``, ``nclip``, ``nstop``, ``var``, ``mad``), or a
median (``method=median``). The recipe reads as its steps:

1. open the cubes (memory-mapped) and check that they share the shape and the WCS of the
   first one (RecipeError naming the file that differs);
2. for each slab of wavelength planes, read DATA and STAT of every cube and combine them;
   the next slab is read (in a thread) while the kernel works on the current one, into
   two buffers allocated once that together hold at most ``max_voxels`` input voxels.
   Plain float32 extensions are read with ``pread`` straight into the buffer (no
   memory map, no converting copy; other encodings go through astropy); the kernel
   swaps the bytes to native order block by block and writes into the output cubes;
3. write DATACUBE_FINAL (DATA = combined mean, STAT = variance per ``var``),
   EXPMAP_CUBE (number of exposures kept per voxel, int16), EXPMAP_IMAGE (the mean over
   wavelength of EXPMAP_CUBE: the effective number of exposures per spaxel), STATPIX (per
   input: FILENAME, NPIX_NAN, NPIX_REJECTED, as MPDAF's table) and one IMAGE_FOV per
   ``filter`` (the filter-weighted mean over wavelength of the combined cube).

Arrays are ``[z, y, x]`` (0-based); wavelengths in Å. The output cubes are held in memory
(DATA + STAT float32 + EXPMAP int16, 10 bytes per voxel); the inputs are streamed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .base import Calib, Param, Product, Recipe, RecipeError
from .cube import FLUX_UNIT, CubeGrid, collapse, load_filter, write_datacube, write_image_fov
from .io import HduInfo, fits_index, hkey
from .kernels.cubecombine import METHODS, VAR_MODES, combine_slab
from .provenance import add_qc, product_header
from .registry import register

#: the slabs hold FITS (big-endian) bytes; the kernel swaps them on little-endian machines
SWAP_BYTES = sys.byteorder == "little"
MAX_VOXELS = 64_000_000  # input voxels of all cubes together per slab (≈ 512 MB for DATA + STAT)

PARAMS = (
    Param("method", str, "sigclip", "sigclip: sigma-clipped mean (MPDAF CubeList.combine); median", choices=METHODS),
    Param("nmax", int, 2, "maximum number of clipping iterations", minimum=0),
    Param("nclip", str, "5.0", "clipping threshold [sigma]: one value, or 'low,high'"),
    Param("nstop", int, 2, "stop clipping when fewer than nstop values would remain", minimum=1),
    Param("var", str, "propagate", "variance: propagate (from STAT), stat_mean (scatter/(n-1)), stat_one (scatter)",
          choices=VAR_MODES),
    Param("mad", bool, False, "use the median absolute deviation instead of the standard deviation"),
    Param("filter", str, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
    Param("version", str, "", "free label recorded in the products (MUSERED VERSION)"),
)  # fmt: skip


def parse_nclip(text: str | float) -> tuple[float, float]:
    """``nclip``: ``"5"`` → (5, 5); ``"3,4"`` → (low 3, high 4). RecipeError otherwise."""
    try:
        parts = [float(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise RecipeError(f"nclip must be one positive number or 'low,high', not {text!r}")
    return parts[0], parts[1]


def grid_of(header: fits.Header, shape: tuple[int, int, int], where: str) -> CubeGrid:
    """The :class:`~recipes.cube.CubeGrid` of a DATACUBE_FINAL DATA header."""
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


def combine_cubes(paths: list[Path], params: Mapping, max_voxels: int = MAX_VOXELS):
    """Combine the cubes in ``paths`` slab by slab.

    Returns ``(grid, data, var, expmap, nvalid, nselected, first_primary_header, data_bunit)``
    with ``data``/``var`` float32 and ``expmap`` int16 arrays ``[z, y, x]``.
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
        var_mode = str(params.get("var", "propagate"))
        if var_mode == "propagate":
            missing = [r.path.name for r in readers if r.stat is None]
            if missing:
                raise RecipeError(f"{missing[0]}: no STAT extension, needed by var=propagate")
        low, high = parse_nclip(params.get("nclip", "5.0"))
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
                    stack, vstack, method=str(params.get("method", "sigclip")), nmax=int(params.get("nmax", 2)),
                    nclip_low=low, nclip_up=high, nstop=int(params.get("nstop", 2)), var_mode=var_mode,
                    mad=bool(params.get("mad", False)), out=out, swap_bytes=SWAP_BYTES,
                )  # fmt: skip
                nvalid += valid
                nselected += sel
        bunit = str(ref.data.header.get("BUNIT", FLUX_UNIT))
        return ref.grid, out_data, out_var, expmap, nvalid, nselected, ref.primary.copy(), bunit
    finally:
        for r in readers:
            r.close()


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL, EXPMAP_CUBE, EXPMAP_IMAGE, STATPIX and IMAGE_FOV_nnnn in ``outdir``."""
    outdir = Path(outdir)
    paths = [Path(p) for p in frames.get("DATACUBE_FINAL", [])]
    if len(paths) < 2:
        raise RecipeError(f"{RECIPE.name} needs at least 2 DATACUBE_FINAL cubes on one grid, got {len(paths)}")
    filters = [f.strip() for f in str(params.get("filter", "white")).split(",") if f.strip()]
    filter_list = (frames.get("FILTER_LIST") or [None])[0]
    loaded = [load_filter(name, Path(filter_list) if filter_list else None) for name in filters]
    parse_nclip(params.get("nclip", "5.0"))  # fail before reading anything

    grid, data, var, expmap, nvalid, nselected, first, bunit = combine_cubes(paths, params)
    nvox = int(np.prod(grid.shape))
    raws = [(p, "DATACUBE_FINAL") for p in paths]
    calibs = [(Path(filter_list), "FILTER_LIST")] if filter_list else []
    base = fits.Header([c for c in first.cards if not c.keyword.startswith(("ESO PRO", "ESO QC"))])

    def header_for(catg: str) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, calibs, template=base)
        if params.get("version"):
            h[hkey("MUSERED VERSION")] = (str(params["version"]), "label of this combination")
        add_qc(h, [("ESO QC EXPCOMB NEXP", len(paths), "number of cubes combined"),
                   ("ESO QC EXPCOMB EXPMAP MAX", int(expmap.max()), "most exposures in a voxel"),
                   ("ESO QC EXPCOMB EXPMAP MEAN", float(expmap.mean()), "mean exposures per voxel")])  # fmt: skip
        for i, (path, valid, sel) in enumerate(zip(paths, nvalid, nselected), start=1):
            h[hkey(f"ESO DRS MUSE COMBINE{i} NAME")] = path.name
            h[hkey(f"ESO DRS MUSE COMBINE{i} NREJ")] = (int(valid - sel), "voxels rejected")
        return h

    products: list[Product] = []
    written: list[Path] = []
    try:
        image_map = expmap.mean(axis=0, dtype=np.float64).astype(np.float32)
        qc = {"NEXP": len(paths), "NREJECTED": int((nvalid - nselected).sum())}
        path = write_datacube(outdir / "DATACUBE_FINAL.fits", header_for("DATACUBE_FINAL"), grid, data, var, bunit)
        written.append(path)
        products.append(Product(path, "DATACUBE_FINAL", (), qc))
        del var
        wcs3 = grid.header(3)
        path = outdir / "EXPMAP_CUBE.fits"
        fits.HDUList([fits.PrimaryHDU(header=header_for("EXPMAP_CUBE")),
                      fits.ImageHDU(expmap, header=wcs3, name="DATA")]).writeto(path, overwrite=True,
                                                                              output_verify="silentfix")  # fmt: skip
        written.append(path)
        products.append(Product(path, "EXPMAP_CUBE"))
        path = outdir / "EXPMAP_IMAGE.fits"
        fits.HDUList([fits.PrimaryHDU(header=header_for("EXPMAP_IMAGE")),
                      fits.ImageHDU(image_map, header=grid.header(2), name="DATA")]).writeto(
            path, overwrite=True, output_verify="silentfix")  # fmt: skip
        written.append(path)
        products.append(Product(path, "EXPMAP_IMAGE"))
        statpix = Table({"FILENAME": [p.name for p in paths], "NPIX_NAN": (nvox - nvalid).astype(np.int64),
                         "NPIX_REJECTED": (nvalid - nselected).astype(np.int64)})  # fmt: skip
        path = outdir / "STATPIX.fits"
        fits.HDUList([fits.PrimaryHDU(header=header_for("STATPIX")),
                      fits.BinTableHDU(statpix, name="STATPIX")]).writeto(path, overwrite=True,
                                                                          output_verify="silentfix")  # fmt: skip
        written.append(path)
        products.append(Product(path, "STATPIX"))
        for i, flt in enumerate(loaded, start=1):
            image, fraction = collapse(data, grid, flt)
            path = write_image_fov(outdir / f"IMAGE_FOV_{i:04d}.fits", header_for("IMAGE_FOV"), grid, image, flt,
                                   fraction, bunit)  # fmt: skip
            written.append(path)
            products.append(Product(path, "IMAGE_FOV", (), {"FILTER": flt.name, "FRACTION": round(fraction, 4)}))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    return products


RECIPE = register(
    Recipe(
        name="mpdaf_combine",
        inputs=("DATACUBE_FINAL",),
        calibs=(Calib("FILTER_LIST", required=False),),
        outputs=("DATACUBE_FINAL", "EXPMAP_CUBE", "EXPMAP_IMAGE", "STATPIX", "IMAGE_FOV"),
        params=PARAMS,
        run=run,
        target="dataset",
        min_inputs=2,
        description="Combine cubes already on one grid with a sigma-clipped mean (MPDAF CubeList.combine).",
        summary_qc=(("rejected", "NREJECTED"),),
    )
)
