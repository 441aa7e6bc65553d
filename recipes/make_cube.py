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
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .base import Calib, Param, Product, Recipe, RecipeError
from .cube import (
    collapse,
    grid_from_header,
    grid_from_pixtable,
    load_filter,
    make_cube,
    primary_from,
    read_output_wcs,
    write_datacube,
    write_image_fov,
)
from .io import hkey
from .kernels.resample import METHODS, ResampleOptions, parse_pixfrac
from .pixtable import (
    WCS_PIXEL,
    WCS_POSITIONED,
    PixTable,
    set_wcs_state,
    unpack_origin,
)
from .provenance import product_header
from .registry import register

INPUT_TAGS = ("PIXTABLE_REDUCED", "PIXTABLE_OBJECT", "PIXTABLE_POSITIONED", "PIXTABLE_COMBINED")

def resample_params(crsigma: float, pixfrac: str) -> tuple[Param, ...]:
    """The resampling parameters shared by muse_scipost_make_cube, muse_scipost and
    muse_exp_combine, in the DRS order; the DRS gives them different crsigma and pixfrac
    defaults (15 and 0.8,0.8 for the first two, 10 and 0.6,0.6 for exp_combine)."""
    return (
        Param("resample", str, "drizzle", "resampling kernel for the output cube", choices=METHODS),
        Param("dx", float, 0.0, "spaxel size in x [arcsec, or pix]; 0: 0.2 WFM, 0.025 NFM, 1 pix", minimum=0.0),
        Param("dy", float, 0.0, "spaxel size in y [arcsec, or pix]; 0: as for dx", minimum=0.0),
        Param("dlambda", float, 0.0, "wavelength step [Angstrom]; 0: natural sampling 1.25", minimum=0.0),
        Param("crtype", str, "median", "statistics for cosmic-ray rejection during resampling",
              choices=("iraf", "mean", "median")),
        Param("crsigma", float, crsigma, "cosmic-ray rejection threshold [sigma] during resampling; <= 0 disables"),
        Param("rc", float, 1.25, "critical radius for renka weighting [voxels]", minimum=1e-6),
        Param("pixfrac", str, pixfrac,
              "drizzle pixel down-scaling: 1 value (all axes), 2 (spatial,spectral) or 3 (x,y,lambda)"),
        Param("ld", int, 1, "loop distance: neighbouring voxels searched on each axis (not for nearest)", minimum=1),
        Param("format", str, "Cube", "output format: Cube, or xCube with the filter images as extensions",
              choices=("Cube", "xCube")),
    )  # fmt: skip


PARAMS = (
    Param("lambdamin", float, 4000.0, "cut off the data below this wavelength [Angstrom] after loading"),
    Param("lambdamax", float, 10000.0, "cut off the data above this wavelength [Angstrom] after loading"),
    *resample_params(crsigma=15.0, pixfrac="0.8,0.8"),
    Param("stacked", bool, False, "also write the stacked 2D image OBJECT_RESAMPLED"),
    Param("filter", str, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
)  # fmt: skip


def resample_options(params: Mapping) -> ResampleOptions:
    """ResampleOptions from recipe parameters (RecipeError for a malformed pixfrac)."""
    try:
        pixfrac = parse_pixfrac(params.get("pixfrac", "0.8,0.8"))
        return ResampleOptions(
            method=str(params.get("resample", "drizzle")),
            pixfrac=pixfrac,
            ld=int(params.get("ld", 1)),
            rc=float(params.get("rc", 1.25)),
            crtype=str(params.get("crtype", "median")),
            crsigma=float(params.get("crsigma", 15.0)),
        )
    except ValueError as exc:
        raise RecipeError(f"bad resampling parameter: {exc}") from None


def read_offsets(path: Path) -> Table:
    """OFFSET_LIST rows (DATE_OBS, MJD_OBS, RA_OFFSET, DEC_OFFSET [deg], FLUX_SCALE)."""
    try:
        table = Table.read(path, hdu=1)
    except (OSError, ValueError, IndexError) as exc:
        raise RecipeError(f"{path}: cannot read OFFSET_LIST ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("RA_OFFSET", "DEC_OFFSET") if c not in table.colnames]
    if missing or not ({"MJD_OBS", "DATE_OBS"} & set(table.colnames)):
        raise RecipeError(f"{path}: OFFSET_LIST needs RA_OFFSET, DEC_OFFSET and MJD_OBS or DATE_OBS")
    return table


def apply_offsets(pt: PixTable, table: Table, where: Path) -> tuple[float, float, float] | None:
    """Shift ``pt``'s celestial reference by its OFFSET_LIST row; scale data; None if no row."""
    row = None
    mjd = pt.header.get("MJD-OBS")
    if "MJD_OBS" in table.colnames and mjd is not None:
        hits = np.flatnonzero(np.abs(np.asarray(table["MJD_OBS"], dtype=float) - float(mjd)) < 1e-6)
        row = table[int(hits[0])] if hits.size else None
    if row is None and "DATE_OBS" in table.colnames and "DATE-OBS" in pt.header:
        hits = [i for i, d in enumerate(table["DATE_OBS"]) if str(d).strip() == str(pt.header["DATE-OBS"]).strip()]
        row = table[hits[0]] if hits else None
    if row is None:
        return None
    if pt.wcs_state == WCS_PIXEL:
        raise RecipeError(f"{where}: OFFSET_LIST cannot be applied to a pixel table in pixel units")
    dra, ddec = float(row["RA_OFFSET"]), float(row["DEC_OFFSET"])
    # A missing FLUX_SCALE means 1 (DRS); muse_exp_align writes NaN, which astropy reads
    # back as a masked value.
    scale = table["FLUX_SCALE"][row.index] if "FLUX_SCALE" in table.colnames else 1.0
    scale = 1.0 if np.ma.is_masked(scale) or not np.isfinite(float(scale)) else float(scale)
    ra, dec = pt.reference()
    set_wcs_state(pt.header, pt.wcs_state, (ra - dra, dec - ddec))
    if np.isfinite(scale) and scale != 1.0:
        pt.columns["data"] *= np.float32(scale)
        pt.columns["stat"] *= np.float32(scale * scale)
    return dra, ddec, scale


def to_positioned(pt: PixTable, reference: tuple[float, float], chunk: int = 4_000_000) -> PixTable:
    """``pt`` with positioned coordinates (deg offsets) about ``reference`` (RA, Dec) [deg].

    Converted in chunks of rows, so no float64 copy of whole columns is made.
    """
    xpos = np.empty(pt.nrows, dtype=np.float32)
    ypos = np.empty(pt.nrows, dtype=np.float32)
    for s in range(0, pt.nrows, chunk):
        ra, dec = pt.celestial(slice(s, s + chunk))
        xpos[s : s + chunk] = ra - reference[0]
        ypos[s : s + chunk] = dec - reference[1]
    cols = dict(pt.columns)
    cols["xpos"], cols["ypos"] = xpos, ypos
    header = pt.header.copy()
    set_wcs_state(header, WCS_POSITIONED, reference)
    units = dict(pt.units)
    units["xpos"] = units["ypos"] = "deg"
    return PixTable(header, cols, pt.flat_field, units)


def merge_tables(tables: list[PixTable]) -> PixTable:
    """One table from several: celestial ones on the first one's reference (positioned)."""
    if len(tables) == 1:
        return tables[0]
    states = {t.wcs_state for t in tables}
    if WCS_PIXEL in states and len(states) > 1:
        raise RecipeError("cannot merge pixel tables in pixel units with celestial ones")
    if WCS_PIXEL not in states:
        reference = tables[0].reference()
        tables = [to_positioned(t, reference) for t in tables]
    return PixTable.concatenate(tables, consume=True)


def stacked_image(pt: PixTable, grid) -> np.ndarray:
    """OBJECT_RESAMPLED: mean of usable rows per (CCD column, wavelength plane) [plane, column].

    Columns are the distinct (IFU, slice, x − XOFFSET) triples in ascending order.
    """
    ifu, slice_, xs, _ = unpack_origin(pt.origin)
    key = (ifu.astype(np.int64) * 64 + slice_) * 256 + xs
    columns, col = np.unique(key, return_inverse=True)
    plane = np.floor(grid.plane_of(pt.lam) + 0.5).astype(np.int64)
    good = (pt.dq == 0) & np.isfinite(pt.data) & (plane >= 0) & (plane < grid.nz)
    flat = plane[good] * columns.size + col[good]
    total = np.bincount(flat, weights=pt.data[good].astype(np.float64), minlength=grid.nz * columns.size)
    count = np.bincount(flat, minlength=grid.nz * columns.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return image.reshape(grid.nz, columns.size).astype(np.float32)


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL.fits, IMAGE_FOV_nnnn.fits (and OBJECT_RESAMPLED.fits) in ``outdir``."""
    outdir = Path(outdir)
    paths = [Path(p) for tag in INPUT_TAGS for p in frames.get(tag, [])]
    if not paths:
        raise RecipeError(f"{RECIPE.name} needs at least one pixel table ({', '.join(INPUT_TAGS)})")
    tags = {Path(p): tag for tag in INPUT_TAGS for p in frames.get(tag, [])}
    lmin, lmax = float(params["lambdamin"]), float(params["lambdamax"])
    if lmin >= lmax:
        raise RecipeError(f"lambdamin ({lmin}) must be below lambdamax ({lmax})")
    options = resample_options(params)
    filters = [f.strip() for f in str(params.get("filter", "white")).split(",") if f.strip()]
    filter_list = _first(frames, "FILTER_LIST")
    loaded_filters = [load_filter(name, filter_list) for name in filters]  # fail early on a bad name
    output_wcs = _first(frames, "OUTPUT_WCS")
    offset_list = _first(frames, "OFFSET_LIST")
    offsets = read_offsets(offset_list) if offset_list is not None else None

    tables = []
    mode = None
    applied = []
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
                applied.append((str(pt.header.get("DATE-OBS", "")), *shift))
        if pt.nrows:
            tables.append(pt)
    if not tables:
        raise RecipeError(f"no pixel-table rows between lambdamin={lmin} and lambdamax={lmax} Angstrom")
    pt = merge_tables(tables)
    del tables

    if output_wcs is not None:
        grid = grid_from_header(read_output_wcs(output_wcs), pt, float(params["dlambda"]), where=str(output_wcs))
    else:
        grid = grid_from_pixtable(pt, float(params["dx"]), float(params["dy"]), float(params["dlambda"]))
    result = make_cube(pt, grid, options)

    calibs = [(p, tag) for tag in ("OUTPUT_WCS", "OFFSET_LIST", "FILTER_LIST") if (p := _first(frames, tag))]
    raws = [(p, tags[p]) for p in paths]
    base = primary_from(pt.header)
    bunit = pt.default_units()["data"]
    products: list[Product] = []
    qc = {"NREJECTED": result.n_rejected}

    def header_for(catg: str) -> fits.Header:
        h = product_header(catg, RECIPE.name, params, raws, calibs, template=base)
        h[hkey("ESO DRS MUSE RESAMPLE NREJECTED")] = (result.n_rejected, "pixels rejected as cosmic rays")
        for i, (date, dra, ddec, scale) in enumerate(applied, start=1):
            h[hkey(f"ESO DRS MUSE OFFSET{i} DATE-OBS")] = date
            h[hkey(f"ESO DRS MUSE OFFSET{i} DRA")] = (dra, "[deg] RA offset")
            h[hkey(f"ESO DRS MUSE OFFSET{i} DDEC")] = (ddec, "[deg] DEC offset")
            h[hkey(f"ESO DRS MUSE FLUX SCALE{i}")] = (scale, "flux scale")
        return h

    images = []
    written: list[Path] = []
    try:
        for i, flt in enumerate(loaded_filters, start=1):
            image, fraction = collapse(result.data, grid, flt)
            path = write_image_fov(outdir / f"IMAGE_FOV_{i:04d}.fits", header_for("IMAGE_FOV"), grid, image, flt,
                                   fraction, bunit)  # fmt: skip
            written.append(path)
            products.append(Product(path, "IMAGE_FOV", (), {"FILTER": flt.name, "FRACTION": round(fraction, 4)}))
            images.append((flt.name, image))
        extra = []
        if params.get("format") == "xCube":
            for name, image in images:
                hdu = fits.ImageHDU(image, header=grid.header(2), name=name)
                hdu.header["BUNIT"] = bunit
                extra.append(hdu)
        cube_path = write_datacube(outdir / "DATACUBE_FINAL.fits", header_for("DATACUBE_FINAL"), grid,
                                   result.data, result.stat, bunit, extra)  # fmt: skip
        written.append(cube_path)
        products.insert(0, Product(cube_path, "DATACUBE_FINAL", (), qc))
        if params.get("stacked"):
            image = stacked_image(pt, grid)
            h = header_for("OBJECT_RESAMPLED")
            spec = fits.Header()
            spec["CTYPE1"], spec["CRPIX1"], spec["CRVAL1"], spec["CDELT1"] = "PIXEL", 1.0, 1.0, 1.0
            spec["CTYPE2"], spec["CUNIT2"] = grid.spectral, "Angstrom"
            spec["CRPIX2"], spec["CRVAL2"], spec["CDELT2"] = grid.crpix3, grid.crval3, grid.cd3
            spec["BUNIT"] = bunit
            path = outdir / "OBJECT_RESAMPLED.fits"
            fits.HDUList([fits.PrimaryHDU(header=h), fits.ImageHDU(image, header=spec, name="DATA")]).writeto(
                path, overwrite=True, output_verify="silentfix"
            )
            written.append(path)
            products.append(Product(path, "OBJECT_RESAMPLED"))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    return products


def _first(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


RECIPE = register(
    Recipe(
        name="muse_scipost_make_cube",
        inputs=("PIXTABLE_REDUCED",),
        calibs=(
            Calib("OUTPUT_WCS", required=False),
            Calib("OFFSET_LIST", required=False),
            Calib("FILTER_LIST", required=False),
        ),
        outputs=("DATACUBE_FINAL", "IMAGE_FOV", "OBJECT_RESAMPLED"),
        params=PARAMS,
        run=run,
        target="exposure",
        min_inputs=1,
        description="Resample a reduced pixel table onto a cube (optionally onto a given OUTPUT_WCS).",
        summary_qc=(("CR rejected", "NREJECTED"),),
    )
)
