"""muse_scipost_make_cube: resample pixel tables onto a cube (recipes.md §3.10).

The recipe reads as its steps:

1. read the input pixel tables (PIXTABLE_REDUCED, or any PIXTABLE_OBJECT/POSITIONED/
   COMBINED), check they share one instrument mode, cut them to [lambdamin, lambdamax];
2. apply OFFSET_LIST (matched by MJD-OBS, else DATE-OBS): the RA/DEC offsets [deg] are
   subtracted from each exposure's reference position and the data (variance) multiplied
   by FLUX_SCALE (its square); the applied values are recorded as
   ``ESO DRS MUSE OFFSETi DRA/DDEC/DATE-OBS`` and ``ESO DRS MUSE FLUX SCALEi``;
3. merge the tables (several celestial tables are put on the first one's reference);
4. the output grid: OUTPUT_WCS when given (RecipeError if it misses the data), else fitted
   to the data with ``dx``/``dy`` (0 → 0.2″ WFM, 0.025″ NFM, 1 pix for pixel tables) and
   ``dlambda`` (0 → 1.25 Å);
5. resample (``resample``, ``pixfrac``, ``ld``, ``rc``, ``crtype``, ``crsigma``) →
   DATACUBE_FINAL (DATA + STAT, NaN where empty);
6. one IMAGE_FOV per ``filter`` (FILTER_LIST, or the built-in ``white``); with
   ``format=xCube`` the images are also appended to the cube as extensions named after the
   filters; with ``stacked=true`` OBJECT_RESAMPLED, the rows binned by CCD column
   (IFU, slice, x) and wavelength plane (x pseudo-spatial, y wavelength).

Euro3D output formats are not produced (``format`` accepts Cube and xCube).

ASTROMETRY_WCS is associated as MuseRed does (its make_cube is muse_scipost on the reduced
tables) but not applied: the tables muse_scipost reduced are already projected with it,
and a table still in pixel units is resampled in pixel units (both logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from astropy.io import fits

from recipes.calibs import ASTROMETRY_WCS, FILTER_LIST, OFFSET_LIST, OUTPUT_WCS
from recipes.base import Param, ParamValue, Product, Recipe, RecipeError
from recipes.algorithms.combination import merge_tables
from recipes.algorithms.cube import collapse, filter_extensions, load_filter, primary_from, write_datacube
from recipes.algorithms.cube import write_image_fov, write_stacked_image
from recipes.io import hkey
from recipes.algorithms.offsets import apply_offsets, read_offsets, record_offset
from recipes.algorithms.pixtable import WCS_PIXEL, PixTable
from recipes.algorithms.resampling import (
    check_lambda_range,
    check_resample,
    grid_from_header,
    grid_from_pixtable,
    make_cube,
    read_output_wcs,
    resample_options,
    resample_params,
    stacked_image,
)
from recipes.provenance import product_header

logger = logging.getLogger(__name__)

INPUT_TAGS = ("PIXTABLE_REDUCED", "PIXTABLE_OBJECT", "PIXTABLE_POSITIONED", "PIXTABLE_COMBINED")

PARAMS = (
    Param("lambdamin", float, 4000.0, "cut off the data below this wavelength [Angstrom] after loading"),
    Param("lambdamax", float, 10000.0, "cut off the data above this wavelength [Angstrom] after loading"),
    *resample_params(crsigma=15.0, pixfrac="0.8,0.8"),
    Param("stacked", bool, False, "also write the stacked 2D image OBJECT_RESAMPLED"),
    Param("filter", tuple, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
)  # fmt: skip


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter rules: lambdamin < lambdamax, 1 to 3 pixfrac values."""
    check_lambda_range(params)
    check_resample(params)


def read_tables(paths: list[Path], lmin: float, lmax: float, offsets) -> tuple[list[PixTable], list]:
    """Step 1-2: the tables of one instrument mode cut to [lmin, lmax] Å, with the OFFSET_LIST
    rows applied; returns the non-empty tables and the applied (DATE-OBS, dRA, dDEC, scale)."""
    tables, applied, mode = [], [], None
    for path in paths:
        pt = PixTable.read(path)
        this_mode = pt.header.get("ESO INS MODE")
        if mode is None:
            mode = this_mode
        elif this_mode != mode:
            raise RecipeError(f"{path}: INS MODE {this_mode!r} differs from {mode!r} of {paths[0].name}")
        pt = pt.cut_lambda(lmin, lmax, inplace=True)
        if offsets is not None:
            shift = apply_offsets(pt, offsets, path)
            if shift is not None:
                applied.append((str(pt.header.get("DATE-OBS", "")), shift))
        if pt.nrows:
            tables.append(pt)
    if not tables:
        raise RecipeError(f"no pixel-table rows between lambdamin={lmin} and lambdamax={lmax} Angstrom")
    return tables, applied


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL.fits, IMAGE_FOV_nnnn.fits (and OBJECT_RESAMPLED.fits) in ``outdir``."""
    outdir = Path(outdir)
    paths = [Path(p) for tag in INPUT_TAGS for p in frames.get(tag, [])]
    if not paths:
        raise RecipeError(f"{RECIPE.name} needs at least one pixel table ({', '.join(INPUT_TAGS)})")
    tags = {Path(p): tag for tag in INPUT_TAGS for p in frames.get(tag, [])}
    options = resample_options(params)
    filters = [load_filter(name, _first(frames, "FILTER_LIST")) for name in params["filter"]]  # bad names fail early
    output_wcs = _first(frames, "OUTPUT_WCS")
    offset_list = _first(frames, "OFFSET_LIST")
    offsets = read_offsets(offset_list) if offset_list is not None else None

    tables, applied = read_tables(paths, params["lambdamin"], params["lambdamax"], offsets)
    if (astrometry := _first(frames, "ASTROMETRY_WCS")) is not None:
        pixel = [t for t in tables if t.wcs_state == WCS_PIXEL]
        logger.log(logging.WARNING if pixel else logging.INFO, "ASTROMETRY_WCS %s not applied: %s", astrometry.name,
                   f"{len(pixel)} table(s) in pixel units are resampled in pixel units" if pixel
                   else "the tables are already projected")  # fmt: skip
    pt = merge_tables(tables)  # 3.
    del tables
    if output_wcs is not None:  # 4.
        grid = grid_from_header(read_output_wcs(output_wcs), pt, params["dlambda"], where=str(output_wcs))
    else:
        grid = grid_from_pixtable(pt, params["dx"], params["dy"], params["dlambda"])
    result = make_cube(pt, grid, options)  # 5.

    calibs = [(p, tag) for tag in ("OUTPUT_WCS", "OFFSET_LIST", "FILTER_LIST") if (p := _first(frames, tag))]
    raws = [(p, tags[p]) for p in paths]
    base = primary_from(pt.header)
    bunit = pt.default_units()["data"]

    def header_for(catg: str) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, calibs, template=base)
        h[hkey("ESO DRS MUSE RESAMPLE NREJECTED")] = (result.n_rejected, "pixels rejected as cosmic rays")
        for i, (date, shift) in enumerate(applied, start=1):
            record_offset(h, i, date, shift)
        return h

    # 6. the filter images, the cube (with them as extensions for xCube), the stacked image
    products: list[Product] = []
    images = []
    for i, flt in enumerate(filters, start=1):
        image, fraction = collapse(result.data, grid, flt)
        path = write_image_fov(outdir / f"IMAGE_FOV_{i:04d}.fits", header_for("IMAGE_FOV"), grid, image, flt,
                               fraction, bunit)  # fmt: skip
        products.append(Product(path, "IMAGE_FOV", (), {"FILTER": flt.name, "FRACTION": round(fraction, 4)}))
        images.append((flt.name, image))
    extra = filter_extensions(images, grid, bunit) if params["format"] == "xCube" else []
    cube_path = write_datacube(outdir / "DATACUBE_FINAL.fits", header_for("DATACUBE_FINAL"), grid,
                               result.data, result.stat, bunit, extra)  # fmt: skip
    products.insert(0, Product(cube_path, "DATACUBE_FINAL", (), {"NREJECTED": result.n_rejected}))
    if params["stacked"]:
        path = write_stacked_image(outdir / "OBJECT_RESAMPLED.fits", header_for("OBJECT_RESAMPLED"), grid,
                                   stacked_image(pt, grid), bunit)  # fmt: skip
        products.append(Product(path, "OBJECT_RESAMPLED"))
    return products


def _first(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


RECIPE = Recipe(
    name="muse_scipost_make_cube",
    inputs=("PIXTABLE_REDUCED",),
    calibs=(
        OUTPUT_WCS,
        OFFSET_LIST,
        FILTER_LIST,
        ASTROMETRY_WCS,
    ),
    outputs=("DATACUBE_FINAL", "IMAGE_FOV", "OBJECT_RESAMPLED"),
    params=PARAMS,
    run=run,
    group="exposure",
    step="makecube",
    by_default=False,
    from_recipe="muse_scipost",
    min_inputs=1,
    check=check,
    description="Resample a reduced pixel table onto a cube (optionally onto a given OUTPUT_WCS).",
    summary_qc=(("CR rejected", "NREJECTED"),),
)
