"""mpdaf_combine: combine the cubes of several exposures already on one grid (MPDAF's role).

This is the ``mpdaf`` method of ``musered exp-combine``: the per-exposure DATACUBE_FINAL of
muse_scipost_make_cube, all resampled on the same OUTPUT_WCS, are combined voxel by voxel
with a sigma-clipped mean (:mod:`recipes.kernels.cubecombine`, the semantics of
``mpdaf.obj.CubeList.combine``: ``nmax``, ``nclip``, ``nstop``, ``var``, ``mad``), or a
median (``method=median``). The recipe reads as its steps:

1. combine the cubes slab by slab after checking that they share one grid
   (:func:`recipes.algorithms.cubelist.combine_cubes`);
2. write DATACUBE_FINAL (DATA = combined mean, STAT = variance per ``var``),
   EXPMAP_CUBE (number of exposures kept per voxel, int16), EXPMAP_IMAGE (the mean over
   wavelength of EXPMAP_CUBE: the effective number of exposures per spaxel), STATPIX (per
   input: FILENAME, NPIX_NAN, NPIX_REJECTED, as MPDAF's table) and one IMAGE_FOV per
   ``filter`` (the filter-weighted mean over wavelength of the combined cube).

Arrays are ``[z, y, x]`` (0-based); wavelengths in Å.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.calibs import FILTER_LIST
from recipes.base import Param, ParamValue, Product, Recipe, RecipeError, format_param
from recipes.algorithms.cube import collapse, load_filter, write_datacube, write_image_fov
from recipes.algorithms.cubelist import combine_cubes
from recipes.io import hkey
from recipes.kernels.cubecombine import METHODS, VAR_MODES
from recipes.provenance import add_qc, product_header

PARAMS = (
    Param("method", str, "sigclip", "sigclip: sigma-clipped mean (MPDAF CubeList.combine); median", choices=METHODS),
    Param("nmax", int, 2, "maximum number of clipping iterations", minimum=0),
    Param("nclip", tuple, "5.0", "clipping threshold [sigma]: one value, or 'low,high'", item=float),
    Param("nstop", int, 2, "stop clipping when fewer than nstop values would remain", minimum=1),
    Param("var", str, "propagate", "variance: propagate (from STAT), stat_mean (scatter/(n-1)), stat_one (scatter)",
          choices=VAR_MODES),
    Param("mad", bool, False, "use the median absolute deviation instead of the standard deviation"),
    Param("filter", tuple, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
    Param("version", str, "", "free label recorded in the products (MUSERED VERSION)"),
)  # fmt: skip


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter rule: ``nclip`` is one positive value [σ] or two (low, high)."""
    nclip = params["nclip"]
    if not 1 <= len(nclip) <= 2 or min(nclip) <= 0:
        raise ValueError(f"parameter nclip must be one positive number or 'low,high', not {format_param(nclip)!r}")


def run(frames: Mapping[str, list[Path]], params: Mapping[str, ParamValue | None], outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL, EXPMAP_CUBE, EXPMAP_IMAGE, STATPIX and IMAGE_FOV_nnnn in ``outdir``."""
    outdir = Path(outdir)
    paths = [Path(p) for p in frames.get("DATACUBE_FINAL", [])]
    if len(paths) < 2:
        raise RecipeError(f"{RECIPE.name} needs at least 2 DATACUBE_FINAL cubes on one grid, got {len(paths)}")
    filter_list = (frames.get("FILTER_LIST") or [None])[0]
    loaded = [load_filter(name, Path(filter_list) if filter_list else None) for name in params["filter"]]

    grid, data, var, expmap, nvalid, nselected, first, bunit = combine_cubes(paths, params)  # 1.
    nvox = int(np.prod(grid.shape))
    raws = [(p, "DATACUBE_FINAL") for p in paths]
    calibs = [(Path(filter_list), "FILTER_LIST")] if filter_list else []
    base = fits.Header([c for c in first.cards if not c.keyword.startswith(("ESO PRO", "ESO QC"))])

    def header_for(catg: str) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, calibs, template=base)
        if params["version"]:
            h[hkey("MUSERED VERSION")] = (str(params["version"]), "label of this combination")
        add_qc(h, [("ESO QC EXPCOMB NEXP", len(paths), "number of cubes combined"),
                   ("ESO QC EXPCOMB EXPMAP MAX", int(expmap.max()), "most exposures in a voxel"),
                   ("ESO QC EXPCOMB EXPMAP MEAN", float(expmap.mean()), "mean exposures per voxel")])  # fmt: skip
        for i, (path, valid, sel) in enumerate(zip(paths, nvalid, nselected), start=1):
            h[hkey(f"ESO DRS MUSE COMBINE{i} NAME")] = path.name
            h[hkey(f"ESO DRS MUSE COMBINE{i} NREJ")] = (int(valid - sel), "voxels rejected")
        return h

    products: list[Product] = []  # 2.
    image_map = expmap.mean(axis=0, dtype=np.float64).astype(np.float32)
    qc = {"NEXP": len(paths), "NREJECTED": int((nvalid - nselected).sum())}
    path = write_datacube(outdir / "DATACUBE_FINAL.fits", header_for("DATACUBE_FINAL"), grid, data, var, bunit)
    products.append(Product(path, "DATACUBE_FINAL", (), qc))
    del var
    wcs3 = grid.header(3)
    path = outdir / "EXPMAP_CUBE.fits"
    fits.HDUList([fits.PrimaryHDU(header=header_for("EXPMAP_CUBE")),
                  fits.ImageHDU(expmap, header=wcs3, name="DATA")]).writeto(
        path, overwrite=True, output_verify="silentfix")  # fmt: skip
    products.append(Product(path, "EXPMAP_CUBE"))
    path = outdir / "EXPMAP_IMAGE.fits"
    fits.HDUList([fits.PrimaryHDU(header=header_for("EXPMAP_IMAGE")),
                  fits.ImageHDU(image_map, header=grid.header(2), name="DATA")]).writeto(
        path, overwrite=True, output_verify="silentfix")  # fmt: skip
    products.append(Product(path, "EXPMAP_IMAGE"))
    statpix = Table({"FILENAME": [p.name for p in paths], "NPIX_NAN": (nvox - nvalid).astype(np.int64),
                     "NPIX_REJECTED": (nvalid - nselected).astype(np.int64)})  # fmt: skip
    path = outdir / "STATPIX.fits"
    fits.HDUList([fits.PrimaryHDU(header=header_for("STATPIX")),
                  fits.BinTableHDU(statpix, name="STATPIX")]).writeto(
        path, overwrite=True, output_verify="silentfix")  # fmt: skip
    products.append(Product(path, "STATPIX"))
    for i, flt in enumerate(loaded, start=1):
        image, fraction = collapse(data, grid, flt)
        path = write_image_fov(outdir / f"IMAGE_FOV_{i:04d}.fits", header_for("IMAGE_FOV"), grid, image, flt,
                               fraction, bunit)  # fmt: skip
        products.append(Product(path, "IMAGE_FOV", (), {"FILTER": flt.name, "FRACTION": round(fraction, 4)}))
    return products


RECIPE = Recipe(
    name="mpdaf_combine",
    inputs=("DATACUBE_FINAL",),
    calibs=(FILTER_LIST,),
    outputs=("DATACUBE_FINAL", "EXPMAP_CUBE", "EXPMAP_IMAGE", "STATPIX", "IMAGE_FOV"),
    params=PARAMS,
    run=run,
    group="dataset",
    command="exp-combine",
    step="mpdaf",
    from_recipe="muse_scipost_make_cube",
    output_dir="exp_combine",
    min_inputs=2,
    check=check,
    description="Combine cubes already on one grid with a sigma-clipped mean (MPDAF CubeList.combine).",
    summary_qc=(("rejected", "NREJECTED"),),
)
