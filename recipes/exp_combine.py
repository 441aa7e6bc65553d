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
   weights when absent). The resampler multiplies its kernel weights by this column, so
   DATA = Σ w·k·d / Σ w·k;
3. OFFSET_LIST (optional; matched by MJD-OBS, else DATE-OBS):
   :func:`recipes.make_cube.apply_offsets` subtracts RA_OFFSET/DEC_OFFSET [deg] from each
   exposure's reference and scales data (variance) by FLUX_SCALE (its square); recorded
   as ``ESO DRS MUSE OFFSETi DATE-OBS/DRA/DDEC`` and ``ESO DRS MUSE FLUX SCALEi``;
4. concatenate the tables on the first exposure's reference (positioned), recording the
   rows of exposure i (1-based) as ``ESO DRS MUSE PIXTABLE EXPi FIRST/LAST`` (0-based rows, inclusive)
   and ``ESO DRS MUSE PIXTABLE COMBINED`` = number of exposures; with ``save`` containing
   ``combined`` this table is written as PIXTABLE_COMBINED;
5. resample as muse_scipost_make_cube does (:func:`recipes.cube.make_cube`) onto the
   OUTPUT_WCS grid when given, else a grid fitted to all the exposures, with cosmic-ray
   rejection over all exposures at once (``crtype``, ``crsigma`` — default 10 here) and
   drizzle ``pixfrac`` 0.6,0.6 by default → DATACUBE_FINAL;
6. IMAGE_FOV per ``filter`` (FILTER_LIST, or the built-in ``white``), and EXPMAP: per
   spaxel, the summed EXPTIME [s] of the exposures with usable rows falling on it.

Conventions: wavelengths in Å (air), positions in degrees, arrays 0-based ``[z, y, x]``.
Euro3D formats are not produced (``format`` accepts Cube and xCube).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

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
from .cubeqc import fwhm_qc, product_qc
from .io import hkey
from .make_cube import apply_offsets, merge_tables, read_offsets, resample_options, resample_params
from .pixtable import PixTable, pkey
from .provenance import add_qc, product_header
from .registry import register

logger = logging.getLogger(__name__)

INPUT_TAG = "PIXTABLE_REDUCED"
WEIGHTS = ("exptime", "fwhm", "header", "none")
SEEING_KEYS = (("ESO TEL AMBI FWHM START", "ESO TEL AMBI FWHM END"), ("ESO TEL IA FWHM",), ("ESO TEL IA FWHMLINOBS",))
_CHUNK = 4_000_000

PARAMS = (
    Param("save", str, "cube",
          "products: cube (DATACUBE_FINAL, IMAGE_FOV, EXPMAP) and/or combined (PIXTABLE_COMBINED)"),
    *resample_params(crsigma=10.0, pixfrac="0.6,0.6"),
    Param("weight", str, "exptime", "exposure weighting: exptime, fwhm, header or none (keep the weight column)",
          choices=WEIGHTS),
    Param("filter", str, "white", "comma-separated filter names (EXTNAMEs of FILTER_LIST) for IMAGE_FOV"),
    Param("lambdamin", float, 4000.0, "cut off the data below this wavelength [Angstrom] after loading"),
    Param("lambdamax", float, 10000.0, "cut off the data above this wavelength [Angstrom] after loading"),
)  # fmt: skip


def parse_save(text: str) -> set[str]:
    """``save``: comma-separated subset of cube, combined (RecipeError otherwise)."""
    items = {s.strip().lower() for s in str(text).split(",") if s.strip()}
    bad = items - {"cube", "combined"}
    if not items or bad:
        raise RecipeError(f"save must list cube and/or combined, not {text!r}")
    return items


def _number(header: fits.Header, key: str, where: Path) -> float | None:
    value = header.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: {key} is not a number ({value!r})") from None


def exptime_of(header: fits.Header, where: Path) -> float:
    """EXPTIME [s] (RecipeError naming the file if missing or not positive)."""
    value = _number(header, "EXPTIME", where)
    if value is None or not value > 0:
        raise RecipeError(f"{where}: EXPTIME missing or not positive, needed for the exposure weights")
    return value


def seeing_of(header: fits.Header, where: Path) -> float:
    """Seeing FWHM [arcsec] from the header (see the module docstring for the keys)."""
    for keys in SEEING_KEYS:
        values = [_number(header, k, where) for k in keys]
        values = [v for v in values if v is not None and v > 0]
        if len(values) == len(keys):
            return float(np.mean(values))
    raise RecipeError(f"{where}: no seeing FWHM in the header (ESO TEL AMBI FWHM START/END, ESO TEL IA FWHM), "
                      "needed by weight=fwhm")


def exposure_weights(headers: list[fits.Header], paths: list[Path], kind: str) -> list[float] | None:
    """Relative weights of the exposures (first = EXPTIME-normalised 1), None for ``none``."""
    if kind == "none":
        return None
    exptimes = [exptime_of(h, p) for h, p in zip(headers, paths)]
    rel = [e / exptimes[0] for e in exptimes]
    if kind == "exptime":
        return rel
    if kind == "fwhm":
        fwhm = [seeing_of(h, p) for h, p in zip(headers, paths)]
        return [r * (fwhm[0] / f) ** 2 for r, f in zip(rel, fwhm)]
    weights = []
    for h, p, r in zip(headers, paths, rel):
        w = _number(h, "ESO DRS MUSE WEIGHT", p)
        if w is None or w < 0:
            raise RecipeError(f"{p}: ESO DRS MUSE WEIGHT missing or negative, needed by weight=header")
        weights.append(w * r)
    return weights


def exposure_map(pt: PixTable, bounds: list[tuple[int, int]], exptimes: list[float], grid) -> np.ndarray:
    """Summed EXPTIME [s] per spaxel of the exposures with usable rows on it, ``[y, x]``."""
    image = np.zeros((grid.ny, grid.nx), dtype=np.float64)
    for (first, last), exptime in zip(bounds, exptimes):
        covered = np.zeros(grid.ny * grid.nx, dtype=bool)
        for s in range(first, last + 1, _CHUNK):
            rows = slice(s, min(last + 1, s + _CHUNK))
            usable = (pt.dq[rows] == 0) & np.isfinite(pt.data[rows])
            ra, dec = pt.celestial(rows)
            px, py = grid.world_to_pixel(ra[usable], dec[usable])
            ix, iy = np.floor(px + 0.5).astype(np.int64), np.floor(py + 0.5).astype(np.int64)
            inside = (ix >= 0) & (ix < grid.nx) & (iy >= 0) & (iy < grid.ny)
            covered[iy[inside] * grid.nx + ix[inside]] = True
        image += exptime * covered.reshape(grid.ny, grid.nx)
    return image.astype(np.float32)


def _first(frames: Mapping[str, list[Path]], tag: str) -> Path | None:
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write DATACUBE_FINAL, IMAGE_FOV_nnnn, EXPMAP (and PIXTABLE_COMBINED) in ``outdir``."""
    outdir = Path(outdir)
    paths = [Path(p) for p in frames.get(INPUT_TAG, [])]
    if len(paths) < 2:
        raise RecipeError(f"{RECIPE.name} needs at least 2 {INPUT_TAG} (one per exposure), got {len(paths)}")
    save = parse_save(params.get("save", "cube"))
    lmin, lmax = float(params["lambdamin"]), float(params["lambdamax"])
    if lmin >= lmax:
        raise RecipeError(f"lambdamin ({lmin}) must be below lambdamax ({lmax})")
    options = resample_options(params)
    filters = [f.strip() for f in str(params.get("filter", "white")).split(",") if f.strip()]
    filter_list = _first(frames, "FILTER_LIST")
    loaded_filters = [load_filter(name, filter_list) for name in filters] if "cube" in save else []
    output_wcs = _first(frames, "OUTPUT_WCS")
    wcs_header = read_output_wcs(output_wcs) if output_wcs is not None else None
    offset_list = _first(frames, "OFFSET_LIST")
    offsets = read_offsets(offset_list) if offset_list is not None else None

    # 1. read, check the mode, sort by exposure time stamp, cut in wavelength
    tables: list[tuple[float, str, Path, PixTable]] = []
    for path in paths:
        pt = PixTable.read(path)
        mjd = _number(pt.header, "MJD-OBS", path)
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

    # 2. weights, 3. offsets
    headers = [pt.header for pt in pts]
    exptimes = [_number(h, "EXPTIME", p) or 0.0 for h, p in zip(headers, paths)]
    weights = exposure_weights(headers, paths, str(params["weight"]))
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

    # 4. one combined table
    bounds, start = [], 0
    for pt in pts:
        bounds.append((start, start + pt.nrows - 1))
        start += pt.nrows
    pt = merge_tables(pts)
    del pts
    pt.header[hkey(pkey("COMBINED"))] = (len(paths), "number of combined exposures")
    for i, (first, last) in enumerate(bounds):
        pt.header[hkey(pkey(f"EXP{i + 1} FIRST"))] = first  # 0-based rows, inclusive
        pt.header[hkey(pkey(f"EXP{i + 1} LAST"))] = last

    calibs = [(p, tag) for tag in ("OUTPUT_WCS", "OFFSET_LIST", "FILTER_LIST") if (p := _first(frames, tag))]
    raws = [(p, INPUT_TAG) for p in paths]
    base = primary_from(pt.header)
    bunit = pt.default_units()["data"]
    products: list[Product] = []
    written: list[Path] = []

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

    try:
        if "combined" in save:
            for card in header_for("PIXTABLE_COMBINED").cards:  # the product keywords on the table
                if card.keyword.startswith(("ESO PRO", "ESO QC")):
                    pt.header[hkey(card.keyword)] = card.value
            path = pt.write(outdir / "PIXTABLE_COMBINED.fits")
            written.append(path)
            products.append(Product(path, "PIXTABLE_COMBINED"))
        if "cube" in save:
            if wcs_header is not None:
                grid = grid_from_header(wcs_header, pt, float(params["dlambda"]), where=str(output_wcs))
            else:
                grid = grid_from_pixtable(pt, float(params["dx"]), float(params["dy"]), float(params["dlambda"]))
            result = make_cube(pt, grid, options)
            expmap = exposure_map(pt, bounds, exptimes, grid)
            qc = [("ESO QC EXPCOMB NEXP", len(paths), "number of exposures combined"),
                  ("ESO QC EXPCOMB NREJECTED", int(result.n_rejected), "pixels rejected as cosmic rays")]  # fmt: skip
            qc += fwhm_qc(result.data, grid, "ESO QC EXPCOMB")  # NDET, LAMBDA, POSk, FWHMk, FWHM MEDIAN ...
            del pt
            images = []
            for i, flt in enumerate(loaded_filters, start=1):
                image, fraction = collapse(result.data, grid, flt)
                path = write_image_fov(outdir / f"IMAGE_FOV_{i:04d}.fits", header_for("IMAGE_FOV"), grid, image,
                                       flt, fraction, bunit)  # fmt: skip
                written.append(path)
                products.append(Product(path, "IMAGE_FOV", (), {"FILTER": flt.name, "FRACTION": round(fraction, 4)}))
                images.append((flt.name, image))
            extra = []
            if params.get("format") == "xCube":
                for name, image in images:
                    hdu = fits.ImageHDU(image, header=grid.header(2), name=name)
                    hdu.header["BUNIT"] = bunit
                    extra.append(hdu)
            path = write_datacube(outdir / "DATACUBE_FINAL.fits", header_for("DATACUBE_FINAL", qc), grid,
                                  result.data, result.stat, bunit, extra)  # fmt: skip
            written.append(path)
            products.insert(0, Product(path, "DATACUBE_FINAL", (), product_qc(qc, "ESO QC EXPCOMB")))
            h = header_for("EXPMAP")
            ext = grid.header(2)
            ext["BUNIT"] = "s"
            path = outdir / "EXPMAP.fits"
            fits.HDUList([fits.PrimaryHDU(header=h), fits.ImageHDU(expmap, header=ext, name="DATA")]).writeto(
                path, overwrite=True, output_verify="silentfix")  # fmt: skip
            written.append(path)
            products.append(Product(path, "EXPMAP", (), {"EXPTIME MAX": float(expmap.max())}))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    return products


RECIPE = register(
    Recipe(
        name="muse_exp_combine",
        inputs=(INPUT_TAG,),
        calibs=(
            Calib("OFFSET_LIST", required=False),
            Calib("OUTPUT_WCS", required=False),
            Calib("FILTER_LIST", required=False),
        ),
        outputs=("DATACUBE_FINAL", "IMAGE_FOV", "EXPMAP", "PIXTABLE_COMBINED"),
        params=PARAMS,
        run=run,
        target="dataset",
        min_inputs=2,
        description="Combine the reduced pixel tables of several exposures into one cube.",
        summary_qc=(("exposures", "NEXP"), ("CR rejected", "NREJECTED")),
    )
)
