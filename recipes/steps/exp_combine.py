"""muse_exp_combine: combine the reduced pixel tables of several exposures into one cube
(recipes.md §3.12).

The recipe reads as its steps:

1. read the PIXTABLE_REDUCED of every exposure (≥ 2, one instrument mode), sort them by
   MJD-OBS and cut each to [``lambdamin``, ``lambdamax``] Å;
2. exposure weights (``weight``), relative to the first exposure, written to the ``weight``
   column (``ESO DRS MUSE PIXTABLE WEIGHTED = T``):
   ``exptime`` w = EXPTIME/EXPTIME₀; ``fwhm`` w = (EXPTIME/EXPTIME₀)·(FWHM₀/FWHM)², the
   seeing FWHM from the header (the mean of ``ESO TEL AMBI FWHM START/END``, else
   ``ESO TEL IA FWHM``, else ``ESO TEL IA FWHMLINOBS``); ``header`` w = ``ESO DRS MUSE
   WEIGHT``·EXPTIME/EXPTIME₀; ``none`` keeps the tables' own ``weight`` column (equal
   weights when absent) (:func:`recipes.algorithms.cubelist_exposures.exposure_weights`).
   The resampler multiplies its kernel weights by this column, so DATA = Σ w·k·d / Σ w·k;
3. OFFSET_LIST (optional; matched by MJD-OBS, else DATE-OBS):
   :func:`recipes.algorithms.offsets.apply_offsets` subtracts RA_OFFSET/DEC_OFFSET [deg] from each
   exposure's reference and scales data (variance) by FLUX_SCALE (its square); recorded
   as ``ESO DRS MUSE OFFSETi DATE-OBS/DRA/DDEC`` and ``ESO DRS MUSE FLUX SCALEi``;
4. concatenate the tables on the first exposure's reference (positioned), recording the
   rows of exposure i (1-based) as ``ESO DRS MUSE PIXTABLE EXPi FIRST/LAST`` (0-based rows, inclusive)
   and ``ESO DRS MUSE PIXTABLE COMBINED`` = number of exposures; with ``save`` containing
   ``combined`` this table is written as PIXTABLE_COMBINED;
5. resample as muse_scipost_make_cube does (:func:`recipes.algorithms.resampling.make_cube`) onto the
   OUTPUT_WCS grid when given, else a grid fitted to all the exposures, with cosmic-ray
   rejection over all exposures at once (``crtype``, ``crsigma`` — default 10 here) and
   drizzle ``pixfrac`` 0.6,0.6 by default → DATACUBE_FINAL;
6. IMAGE_FOV per ``filter`` (FILTER_LIST, or the built-in ``white``), and EXPMAP: per
   spaxel, the summed EXPTIME [s] of the exposures with usable rows falling on it
   (:func:`recipes.algorithms.cubelist_exposures.exposure_map`).

Conventions: wavelengths in Å (air), positions in degrees, arrays 0-based ``[z, y, x]``.
Euro3D formats are not produced (``format`` accepts Cube and xCube).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.calibs import FILTER_LIST, OFFSET_LIST, OUTPUT_WCS
from recipes.base import Param, ParamValue, Product, Recipe, RecipeError
from recipes.algorithms.combination import merge_tables
from recipes.algorithms.cube import CubeGrid, collapse, load_filter, primary_from, write_datacube, write_image_fov
from recipes.algorithms.cubelist_exposures import WEIGHTS, exposure_map, exposure_weights, header_number
from recipes.algorithms.cubeqc import fwhm_qc, product_qc
from recipes.algorithms.offsets import apply_offsets, read_offsets
from recipes.algorithms.pixtable import PixTable, pkey
from recipes.algorithms.resampling import (
    check_lambda_range,
    check_resample,
    grid_from_header,
    grid_from_pixtable,
    make_cube,
    read_output_wcs,
    resample_options,
    resample_params,
)
from recipes.io import hkey
from recipes.provenance import add_qc, product_header

logger = logging.getLogger(__name__)

INPUT_TAG = "PIXTABLE_REDUCED"

PARAMS = (
    Param("save", tuple, "cube",
          "products: cube (DATACUBE_FINAL, IMAGE_FOV, EXPMAP) and/or combined (PIXTABLE_COMBINED)",
          choices=("cube", "combined")),
    *resample_params(crsigma=10.0, pixfrac="0.6,0.6"),
    Param("weight", str, "exptime", "exposure weighting: exptime, fwhm, header or none (keep the weight column)",
          choices=WEIGHTS),
    Param("filter", tuple, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
    Param("lambdamin", float, 4000.0, "cut off the data below this wavelength [Angstrom] after loading"),
    Param("lambdamax", float, 10000.0, "cut off the data above this wavelength [Angstrom] after loading"),
)  # fmt: skip


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter rules: something to save, lambdamin < lambdamax, 1 to 3 pixfrac values."""
    if not params["save"]:
        raise ValueError("parameter save must list cube and/or combined")
    check_lambda_range(params)
    check_resample(params)


def read_exposures(paths: list[Path], lmin: float, lmax: float) -> tuple[list[Path], list[PixTable]]:
    """Step 1: the tables in time order (MJD-OBS, then DATE-OBS and path), of one
    instrument mode, cut to [lmin, lmax] Å; RecipeError naming a file of another mode or
    one without rows in the range."""
    tables: list[tuple[float, str, Path, PixTable]] = []
    for path in paths:
        pt = PixTable.read(path)
        mjd = header_number(pt.header, "MJD-OBS", path)
        tables.append((mjd if mjd is not None else np.inf, str(pt.header.get("DATE-OBS", "")), path, pt))
    tables.sort(key=lambda t: (t[0], t[1], str(t[2])))
    mode = tables[0][3].header.get("ESO INS MODE")
    # every exposure's table has the same file name: name them by DATE-OBS (else folder/file)
    logger.info("combining %d exposures: %s", len(tables),
                ", ".join(t[1] or f"{t[2].parent.name}/{t[2].name}" for t in tables))
    for _, _, path, pt in tables:
        if pt.header.get("ESO INS MODE") != mode:
            raise RecipeError(f"{path}: INS MODE {pt.header.get('ESO INS MODE')!r} differs from {mode!r} "
                              f"of {tables[0][2].name}")  # fmt: skip
    paths = [t[2] for t in tables]
    pts = [t[3].cut_lambda(lmin, lmax, inplace=True) for t in tables]
    del tables
    empty = [p.name for p, pt in zip(paths, pts) if pt.nrows == 0]
    if empty:
        raise RecipeError(f"{empty[0]}: no rows between lambdamin={lmin} and lambdamax={lmax} Angstrom")
    return paths, pts


def weight_and_shift(paths: list[Path], pts: list[PixTable], weights: list[float] | None,
                     offsets) -> list[tuple[str, float, float, float]]:  # fmt: skip
    """Steps 2-3, in place: each table's ``weight`` column (unless ``weights`` is None) and
    its OFFSET_LIST correction (``offsets``: the table or None). Returns the corrections
    applied, as (DATE-OBS, dRA [deg], dDEC [deg], flux scale)."""
    applied = []
    for i, (path, pt) in enumerate(zip(paths, pts)):
        if weights is not None:
            pt.columns["weight"] = np.full(pt.nrows, weights[i], dtype=np.float32)
            pt.header[hkey(pkey("WEIGHTED"))] = (True, "exposure weights applied")
        if offsets is not None:
            shift = apply_offsets(pt, offsets, path)
            if shift is not None:
                applied.append((str(pt.header.get("DATE-OBS", "")), *shift))
            else:
                logger.warning("%s: no OFFSET_LIST row for MJD-OBS %s / DATE-OBS %s, position not corrected",
                               path.name, pt.header.get("MJD-OBS"), pt.header.get("DATE-OBS"))
    if weights is None and len({pt.weight is None for pt in pts}) > 1:
        raise RecipeError("weight=none: some pixel tables have a weight column and others not")
    return applied


def combine_tables(pts: list[PixTable]) -> tuple[PixTable, list[tuple[int, int]]]:
    """Step 4: one table, and the rows (first, last; 0-based, inclusive) of each exposure,
    recorded as ``ESO DRS MUSE PIXTABLE EXPi FIRST/LAST`` and ``... COMBINED``."""
    bounds, start = [], 0
    for pt in pts:
        bounds.append((start, start + pt.nrows - 1))
        start += pt.nrows
    pt = merge_tables(pts)
    pt.header[hkey(pkey("COMBINED"))] = (len(pts), "number of combined exposures")
    for i, (first, last) in enumerate(bounds):
        pt.header[hkey(pkey(f"EXP{i + 1} FIRST"))] = first  # 0-based rows, inclusive
        pt.header[hkey(pkey(f"EXP{i + 1} LAST"))] = last
    return pt, bounds


def run(frames: Mapping[str, list[Path]], params: Mapping[str, ParamValue | None], outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL, IMAGE_FOV_nnnn, EXPMAP (and PIXTABLE_COMBINED) in ``outdir``."""
    outdir = Path(outdir)
    paths = [Path(p) for p in frames.get(INPUT_TAG, [])]
    if len(paths) < 2:
        raise RecipeError(f"{RECIPE.name} needs at least 2 {INPUT_TAG} (one per exposure), got {len(paths)}")
    save = params["save"]
    options = resample_options(params)
    filter_list = _first(frames, "FILTER_LIST")
    loaded_filters = [load_filter(name, filter_list) for name in params["filter"]] if "cube" in save else []
    output_wcs = _first(frames, "OUTPUT_WCS")
    wcs_header = read_output_wcs(output_wcs) if output_wcs is not None else None
    offset_list = _first(frames, "OFFSET_LIST")
    offsets = read_offsets(offset_list) if offset_list is not None else None

    paths, pts = read_exposures(paths, params["lambdamin"], params["lambdamax"])     # 1.
    headers = [pt.header for pt in pts]
    exptimes = [header_number(h, "EXPTIME", p) or 0.0 for h, p in zip(headers, paths)]
    weights = exposure_weights(headers, paths, params["weight"])                       # 2.
    applied = weight_and_shift(paths, pts, weights, offsets)                           # 2.-3.
    pt, bounds = combine_tables(pts)                                                   # 4.
    del pts

    calibs = [(p, tag) for tag in ("OUTPUT_WCS", "OFFSET_LIST", "FILTER_LIST") if (p := _first(frames, tag))]
    raws = [(p, INPUT_TAG) for p in paths]
    base = primary_from(pt.header)
    bunit = pt.default_units()["data"]

    def header_for(catg: str, extra_qc=()) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, calibs, template=base)
        h[hkey("ESO DRS MUSE PIXTABLE COMBINED")] = (len(paths), "number of combined exposures")
        for i, (date, dra, ddec, scale) in enumerate(applied, start=1):
            h[hkey(f"ESO DRS MUSE OFFSET{i} DATE-OBS")] = date
            h[hkey(f"ESO DRS MUSE OFFSET{i} DRA")] = (dra, "[deg] RA offset")
            h[hkey(f"ESO DRS MUSE OFFSET{i} DDEC")] = (ddec, "[deg] DEC offset")
            # OFFSET_LIST writes NaN for "no flux scaling" (as the DRS does); FITS cannot hold NaN.
            if np.isfinite(scale):
                h[hkey(f"ESO DRS MUSE FLUX SCALE{i}")] = (scale, "flux scale")
        if weights is not None:
            for i, w in enumerate(weights, start=1):
                h[hkey(f"ESO DRS MUSE WEIGHT{i}")] = (round(float(w), 6), "relative exposure weight")
        add_qc(h, extra_qc)
        return h

    products: list[Product] = []
    if "combined" in save:
        for card in header_for("PIXTABLE_COMBINED").cards:  # the product keywords on the table
            if card.keyword.startswith(("ESO PRO", "ESO QC")):
                pt.header[hkey(card.keyword)] = card.value
        path = pt.write(outdir / "PIXTABLE_COMBINED.fits")
        products.append(Product(path, "PIXTABLE_COMBINED"))
    if "cube" not in save:
        return products
    if wcs_header is not None:                                                         # 5.
        grid = grid_from_header(wcs_header, pt, params["dlambda"], where=str(output_wcs))
    else:
        grid = grid_from_pixtable(pt, params["dx"], params["dy"], params["dlambda"])
    result = make_cube(pt, grid, options)
    expmap = exposure_map(pt, bounds, exptimes, grid)                                  # 6.
    qc = [("ESO QC EXPCOMB NEXP", len(paths), "number of exposures combined"),
          ("ESO QC EXPCOMB NREJECTED", int(result.n_rejected), "pixels rejected as cosmic rays")]  # fmt: skip
    qc += fwhm_qc(result.data, grid, "ESO QC EXPCOMB")  # NDET, LAMBDA, POSk, FWHMk, FWHM MEDIAN ...
    del pt
    images = []
    for i, flt in enumerate(loaded_filters, start=1):
        image, fraction = collapse(result.data, grid, flt)
        path = write_image_fov(outdir / f"IMAGE_FOV_{i:04d}.fits", header_for("IMAGE_FOV"), grid, image,
                               flt, fraction, bunit)  # fmt: skip
        products.append(Product(path, "IMAGE_FOV", (), {"FILTER": flt.name, "FRACTION": round(fraction, 4)}))
        images.append((flt.name, image))
    extra = []
    if params["format"] == "xCube":
        for name, image in images:
            hdu = fits.ImageHDU(image, header=grid.header(2), name=name)
            hdu.header["BUNIT"] = bunit
            extra.append(hdu)
    path = write_datacube(outdir / "DATACUBE_FINAL.fits", header_for("DATACUBE_FINAL", qc), grid,
                          result.data, result.stat, bunit, extra)  # fmt: skip
    products.insert(0, Product(path, "DATACUBE_FINAL", (), product_qc(qc, "ESO QC EXPCOMB")))
    products.append(write_expmap(outdir / "EXPMAP.fits", header_for("EXPMAP"), grid, expmap))
    return products


def write_expmap(path: Path, primary: fits.Header, grid: CubeGrid, expmap: np.ndarray) -> Product:
    """EXPMAP: the exposure map [s] as a ``DATA`` image on the cube's spatial grid."""
    ext = grid.header(2)
    ext["BUNIT"] = "s"
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(expmap, header=ext, name="DATA")]).writeto(
        path, overwrite=True, output_verify="silentfix")  # fmt: skip
    return Product(path, "EXPMAP", (), {"EXPTIME MAX": float(expmap.max())})


def _first(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


RECIPE = Recipe(
    name="muse_exp_combine",
    inputs=(INPUT_TAG,),
    calibs=(
        OFFSET_LIST,
        OUTPUT_WCS,
        FILTER_LIST,
    ),
    outputs=("DATACUBE_FINAL", "IMAGE_FOV", "EXPMAP", "PIXTABLE_COMBINED"),
    params=PARAMS,
    run=run,
    group="dataset",
    command="exp-combine",
    step="drs",
    from_recipe="muse_scipost",
    output_dir="exp_combine",
    min_inputs=2,
    check=check,
    description="Combine the reduced pixel tables of several exposures into one cube.",
    summary_qc=(("exposures", "NEXP"), ("CR rejected", "NREJECTED")),
)
