"""muse_exp_align: relative coordinate offsets of exposures from their IMAGE_FOV (recipes.md §3.11).

The recipe reads as its steps:

1. read the IMAGE_FOV inputs (primary header with DATE-OBS and MJD-OBS, a ``DATA`` image
   with a TAN WCS, as :func:`recipes.algorithms.cube.write_image_fov` writes them); keep those of
   the filter named by ``filter`` (header ``ESO DRS MUSE FILTER NAME``; a musered
   parameter, the settings block's ``filt``), one per exposure, sorted by MJD-OBS; the
   first is the reference. At least two exposures with distinct MJD-OBS are required
   (:func:`recipes.algorithms.fov.select_fovs`);
2. per image: background, point sources with the adaptive threshold, shape and
   bad-pixel cuts (:mod:`recipes.algorithms.sourcedetect`); pixel positions to RA/Dec by the WCS
   (:func:`recipes.algorithms.alignment.align_images`);
3. offsets (:mod:`recipes.algorithms.offsets_fit`), in the tangent plane of the reference [arcsec]:
   for every pair of exposures, the first pair displacement is the one most of their
   source separations (within ±``rsearch[0]``) agree on to half a bin of the DRS's 2-D
   histogram (``rsearch[0]``/``nbins``; mean of those separations); a global weighted
   least-squares solution gives per-exposure offsets with the reference fixed at 0; then
   for each following radius of ``rsearch``, sources are matched pairwise (nearest neighbour
   within the radius after removing the current solution), the pair displacement is the
   mean of the matched separations (weighted by √(flux_i flux_j) with ``weight``), and
   the global solution is recomputed (pair weights: number of matches). Exposures that
   never match the reference's group keep offset 0 and count in QC NOMATCH;
4. write OFFSET_LIST, one SOURCE_LIST_nnnn per exposure and PREVIEW_FOV (the images,
   corrected, nearest-neighbour on a north-up TAN grid with the reference's spaxel size;
   pixels covered by several exposures are averaged: :func:`recipes.algorithms.fov.mosaic`).

Sign convention (checked against the ESO DRS 2.8.7 on the same images, and what
muse_scipost_make_cube / exp_combine apply): ``RA_OFFSET``/``DEC_OFFSET`` [deg] are the
apparent displacement of the exposure's sources relative to the reference exposure, so
the corrected coordinates are ``RA_CORR = RA − RA_OFFSET`` and ``DEC_CORR = DEC −
DEC_OFFSET``; RA_OFFSET is a pure difference of RA (not multiplied by cos δ). As the DRS,
``FLUX_SCALE`` is written as NaN (no flux scaling; consumers treat non-finite as 1).

SOURCE_LIST columns: Id, X, Y (FITS 1-based pixels), Flux, Sharpness, Roundness, RA, DEC,
RA_CORR, DEC_CORR [deg].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.base import Param, ParamValue, Product, Recipe, RecipeError, format_param
from recipes.algorithms.alignment import AlignResult, align_images
from recipes.algorithms.fov import mosaic, select_fovs
from recipes.provenance import add_qc, product_header

RECIPE_NAME = "muse_exp_align"
#: the parameters that are keyword arguments of recipes.algorithms.sourcedetect.detect_sources
DETECTION = ("fwhm", "threshold", "bkgignore", "bkgfraction", "step", "iterations", "srcmin", "srcmax",
             "roundmin", "roundmax", "sharpmin", "sharpmax", "bpixdistance")  # fmt: skip

PARAMS = (
    Param("rsearch", tuple, "30.,4.,2.,0.8", "search radius (in arcsec) for each iteration of the offset computation",
          item=float),
    Param("nbins", int, 60, "number of bins of the 2D histogram of the first iteration", minimum=2),
    Param("weight", bool, True, "use weighting"),
    Param("fwhm", float, 5.0, "FWHM in pixels of the convolution filter", minimum=0.5),
    Param("threshold", float, 15.0, "initial detection threshold: > 0 absolute level above the background, "
          "<= 0 that many MADs above the median background"),
    Param("bkgignore", float, 0.05, "fraction of the image to be ignored", minimum=0.0, maximum=1.0),
    Param("bkgfraction", float, 0.1, "fraction of the image (without the ignored part) taken as background",
          minimum=0.0, maximum=1.0),
    Param("step", float, 0.5, "increment/decrement of the threshold between detection iterations", minimum=0.0),
    Param("iterations", int, 100000, "maximum number of detection iterations", minimum=1),
    Param("srcmin", int, 5, "minimum number of sources which must be found", minimum=1),
    Param("srcmax", int, 80, "maximum number of sources which may be found", minimum=1),
    Param("roundmin", float, -1.0, "lower limit of the point-source roundness"),
    Param("roundmax", float, 1.0, "upper limit of the point-source roundness"),
    Param("sharpmin", float, 0.2, "lower limit of the point-source sharpness"),
    Param("sharpmax", float, 1.0, "upper limit of the point-source sharpness"),
    Param("expmap", bool, False, "write EXPOSURE_MAP (exposure time per pixel of the combined field)"),
    Param("bpixdistance", float, 5.0, "minimum distance [pix] of a source to the closest bad pixel", minimum=0.0),
    Param("override_detection", bool, False, "use the input SOURCE_LIST catalogues instead of detection"),
    Param("filter", str, "white", "musered: IMAGE_FOV filter to align on (ESO DRS MUSE FILTER NAME)"),
)


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter rules: ``rsearch`` lists positive radii [arcsec], ``filter`` names
    one filter, ``override_detection`` (input catalogues) is not supported."""
    radii = params["rsearch"]
    if not radii or min(radii) <= 0:
        raise ValueError(f"parameter rsearch must list positive radii [arcsec], not {format_param(radii)!r}")
    if not params["filter"].strip() or "," in params["filter"]:
        raise ValueError(f"parameter filter names the one IMAGE_FOV filter to align on, not {params['filter']!r}")
    if params["override_detection"]:
        raise ValueError("override_detection=true (input SOURCE_LIST catalogues) is not supported by musered")


def run(frames: Mapping[str, list[Path]], params: Mapping[str, ParamValue | None], outdir: Path) -> list[Product]:
    """Write OFFSET_LIST.fits, SOURCE_LIST_nnnn.fits, PREVIEW_FOV.fits (+ EXPOSURE_MAP.fits)."""
    paths = list(frames.get("IMAGE_FOV", []))
    if len(paths) < 2:
        raise RecipeError(f"{RECIPE_NAME} needs at least 2 IMAGE_FOV, got {len(paths)}")
    images = select_fovs(paths, params["filter"].strip(), RECIPE_NAME)                 # step 1
    result = align_images(images, params["rsearch"], params["nbins"], params["weight"],  # steps 2-3
                          **{key: params[key] for key in DETECTION})
    raws = [(im.path, "IMAGE_FOV") for im in images]                                     # step 4
    sources = [write_source_list(outdir / f"SOURCE_LIST_{k:04d}.fits", k, result, params, raws[k - 1])
               for k in range(1, len(images) + 1)]
    products = [write_offset_list(outdir / "OFFSET_LIST.fits", result, params, raws), *sources]
    preview, expmap, wcs_header = mosaic(images, result.ra_offset, result.dec_offset)
    template = images[0].header
    header = product_header("PREVIEW_FOV", RECIPE_NAME, params, raws, template=template)
    path = outdir / "PREVIEW_FOV.fits"
    _write_image(path, header, preview, wcs_header, "DATA", template.get("BUNIT"))
    products.append(Product(path, "PREVIEW_FOV"))
    if params["expmap"]:
        header = product_header("EXPOSURE_MAP", RECIPE_NAME, params, raws, template=template)
        covered = expmap[expmap > 0]
        add_qc(header, [
            ("ESO QC EXPALIGN EXPTIME MIN", float(covered.min()) if covered.size else 0.0, "[s]"),
            ("ESO QC EXPALIGN EXPTIME MAX", float(expmap.max()), "[s]"),
            ("ESO QC EXPALIGN EXPTIME AVG", float(covered.mean()) if covered.size else 0.0, "[s]"),
            ("ESO QC EXPALIGN EXPTIME MED", float(np.median(covered)) if covered.size else 0.0, "[s]"),
        ])
        path = outdir / "EXPOSURE_MAP.fits"
        _write_image(path, header, expmap, wcs_header, "EXPMAP", "s")
        products.append(Product(path, "EXPOSURE_MAP"))
    return products


def write_source_list(path: Path, k: int, result: AlignResult, params: Mapping[str, ParamValue | None],
                      raw: tuple[Path, str]) -> Product:  # fmt: skip
    """SOURCE_LIST of exposure ``k`` (1-based): the columns of the module docstring."""
    im, det = result.images[k - 1], result.detections[k - 1]
    s = det.sources
    ra, dec = im.pixel_to_world(s.x, s.y)
    table = Table()
    table["Id"] = np.arange(1, len(s) + 1, dtype=np.int32)
    table["X"] = s.x + 1.0
    table["Y"] = s.y + 1.0
    table["Flux"] = s.flux
    table["Sharpness"] = s.sharpness
    table["Roundness"] = s.roundness
    table["RA"] = ra
    table["DEC"] = dec
    table["RA_CORR"] = ra - result.ra_offset[k - 1]
    table["DEC_CORR"] = dec - result.dec_offset[k - 1]
    for col, unit in (("X", "pix"), ("Y", "pix"), ("RA", "deg"), ("DEC", "deg"), ("RA_CORR", "deg"),
                      ("DEC_CORR", "deg")):
        table[col].unit = unit
    header = product_header("SOURCE_LIST", RECIPE_NAME, params, [raw], template=im.header)
    add_qc(header, [
        ("ESO QC EXPALIGN SRC POSITIONS", "detection", "origin of positions"),
        ("ESO QC EXPALIGN NDET", len(s), "Number of detected sources"),
        ("ESO QC EXPALIGN BKG MEDIAN", det.background.median, "background median"),
        ("ESO QC EXPALIGN BKG MAD", det.background.mad, "background MAD"),
        ("ESO QC EXPALIGN THRESHOLD", det.threshold, "detection level"),
    ])
    fits.HDUList([fits.PrimaryHDU(header=header), fits.table_to_hdu(table)]).writeto(path, overwrite=True)
    return Product(path, "SOURCE_LIST", (), {"NDET": len(s)})


def write_offset_list(path: Path, result: AlignResult, params: Mapping[str, ParamValue | None],
                      raws: Sequence[tuple[Path, str]]) -> Product:  # fmt: skip
    """OFFSET_LIST (one row per exposure, offsets [deg]) with the alignment QC [arcsec]."""
    images = result.images
    table = Table()
    table["DATE_OBS"] = [im.date_obs for im in images]
    table["MJD_OBS"] = np.array([im.mjd_obs for im in images])
    table["RA_OFFSET"] = result.ra_offset
    table["DEC_OFFSET"] = result.dec_offset
    table["FLUX_SCALE"] = np.full(len(images), np.nan)   # the DRS writes no flux scale
    table["RA_OFFSET"].unit = table["DEC_OFFSET"].unit = "deg"
    header = product_header("OFFSET_LIST", RECIPE_NAME, params, raws, template=images[0].header)
    dra = result.ra_offset * 3600.0 * np.cos(np.deg2rad(float(images[0].wcs.wcs.crval[1])))
    ddec = result.dec_offset * 3600.0
    qc: list[tuple[str, object, str]] = []
    for k, det in enumerate(result.detections, start=1):
        qc.append((f"ESO QC EXPALIGN NDET{k}", len(det.sources), "detected sources"))
        qc.append((f"ESO QC EXPALIGN NMATCH{k}", int(result.nmatch[k - 1]), "median matches"))
    qc += [
        ("ESO QC EXPALIGN NMATCH MIN", int(result.nmatch.min()), "min of NMATCHi"),
        ("ESO QC EXPALIGN NOMATCH", int((~result.matched).sum()), "images without match"),
    ]
    for axis, values in (("RA", dra), ("DEC", ddec)):
        qc += [
            (f"ESO QC EXPALIGN OFFSET {axis} MIN", float(values.min()), "[arcsec]"),
            (f"ESO QC EXPALIGN OFFSET {axis} MAX", float(values.max()), "[arcsec]"),
            (f"ESO QC EXPALIGN OFFSET {axis} MEAN", float(values.mean()), "[arcsec]"),
            (f"ESO QC EXPALIGN OFFSET {axis} STDEV", float(values.std(ddof=1)), "[arcsec]"),
        ]
    add_qc(header, qc)
    fits.HDUList([fits.PrimaryHDU(header=header), fits.table_to_hdu(table)]).writeto(path, overwrite=True)
    return Product(path, "OFFSET_LIST", (), {k.removeprefix("ESO QC EXPALIGN "): v for k, v, _ in qc})


def _write_image(path: Path, primary: fits.Header, data: np.ndarray, wcs: fits.Header, extname: str,
                 bunit: str | None) -> None:  # fmt: skip
    ext = fits.Header()
    ext["EXTNAME"] = extname
    if bunit:
        ext["BUNIT"] = bunit
    ext.extend(wcs.cards)
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(data, header=ext)]).writeto(path, overwrite=True)


RECIPE = Recipe(
    name=RECIPE_NAME,
    inputs=("IMAGE_FOV",),
    calibs=(),
    outputs=("OFFSET_LIST", "SOURCE_LIST", "PREVIEW_FOV", "EXPOSURE_MAP"),
    params=PARAMS,
    run=run,
    group="dataset",
    command="exp-align",
    step="drs",
    from_recipe="muse_scipost",
    min_inputs=2,
    check=check,
    description="Create a coordinate offset table to align exposures (OFFSET_LIST) from their IMAGE_FOV.",
    summary_qc=(("NMATCH MIN", "NMATCH MIN"), ("NOMATCH", "NOMATCH")),
)
