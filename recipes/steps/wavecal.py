"""muse_wavecal: wavelength solution per slice from arc exposures (recipes.md §3.4).

The recipe reads as its steps:

1. LINE_CATALOG (``VERSION = 3``; ``lambda``, ``flux``, ``ion``, ``quality``,
   :mod:`recipes.algorithms.linecatalog`) and the lamp of every ARC from ``ESO INS LAMPi
   NAME/ST`` and ``ESO INS SHUTi ST`` (lamp on, shutter open, :mod:`recipes.algorithms.arcs`).
   An unknown lamp, a frame with no or several arc lamps, or a lamp without catalogue
   lines is an error before any pixel is read (the DRS 2.8.7 spins instead);
2. per IFU and lamp (``lampwise=true``, :func:`recipes.algorithms.arcs.reduce_arcs`):
   overscan correction, trim, MASTER_BIAS, adu → count, variance RON² + Poisson, combine
   (default sigclip); optional MASTER_DARK and MASTER_FLAT; flagged pixels get zero weight;
3. per slice of the TRACE_TABLE: detect, identify, centre and fit
   (:func:`recipes.algorithms.wavesolution.calibrate_slice`: ``sigma``, ``dres``, ``tolerance``,
   ``xorder``, ``linesigma``, ``yorder``, ``fitsigma``, ``fitweighting``);
4. write WAVECAL_TABLE (one ``CHANnn`` table per IFU, 48 rows ``SliceNo``, ``wlcIJ``,
   ``MSE``; λ(x, y) in Å for absolute 1-based trimmed-CCD x, y,
   :mod:`recipes.algorithms.calibtables`) with the QC WAVECAL keywords in each table
   header; with ``residuals=true`` WAVECAL_RESIDUALS, with ``saveimages=true`` one
   ARC_RED_LAMP file per lamp, with ``wavemap=true`` WAVE_MAP.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import Param, Product, Recipe, RecipeError
from recipes.calibs import BADPIX_TABLE, LINE_CATALOG, MASTER_BIAS, MASTER_DARK, MASTER_FLAT, TRACE_TABLE
from recipes.io import CcdImage, ProductWriter, chan_name, read_primary_header
from recipes.provenance import add_qc, product_header
from recipes.algorithms.arcs import ArcGroups, fit_inputs, group_by_lamp, reduce_arcs
from recipes.algorithms.calibtables import read_trace, residuals_table, wavecal_table
from recipes.algorithms.ccdinputs import (
    COMBINE_PARAMS,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    check_modes,
    optional_calib,
    raw_inputs,
    select_ifus,
)
from recipes.algorithms.linecatalog import LineCatalog, merged_catalog, read_line_catalog
from recipes.algorithms.overscan import check_bias_overscan, check_overscan_params
from recipes.algorithms.tracing import Trace
from recipes.algorithms.wavesolution import SliceSolution, WaveParams, calibrate_slice, slice_qc, wave_map


def wave_params(params: Mapping) -> WaveParams:
    """The algorithm parameters; ``linesigma``/``fitsigma`` < 0 mean the DRS defaults."""
    return WaveParams(
        sigma=params["sigma"],
        dres=params["dres"],
        tolerance=params["tolerance"],
        xorder=params["xorder"],
        yorder=params["yorder"],
        linesigma=params["linesigma"] if params["linesigma"] > 0 else 2.5,
        fitsigma=params["fitsigma"] if params["fitsigma"] > 0 else 3.0,
        fitweighting=params["fitweighting"],
    )


def wavecal_ifu(
    groups: ArcGroups,
    catalogs: Mapping[str, LineCatalog],
    ifu: int,
    params: Mapping,
    calibs: Mapping[str, Path | None],
) -> tuple[list[SliceSolution], list[tuple[str, object, str]], dict[str, CcdImage], Trace]:
    """Slice solutions, QC and the reduced arc images of one IFU."""
    images, qc = reduce_arcs(
        groups, ifu, params, calibs["MASTER_BIAS"], calibs["MASTER_DARK"], calibs["MASTER_FLAT"], calibs["BADPIX_TABLE"]
    )  # fmt: skip
    trace = read_trace(calibs["TRACE_TABLE"], ifu)
    arcs = {lamp: fit_inputs(img) for lamp, img in images.items()}
    shape = next(iter(images.values())).data.shape
    wp = wave_params(params)
    lamp_numbers = {lamp: n for n, lamp in enumerate(groups, start=1)}
    solutions = []
    for k in range(trace.nslice):
        try:
            sol = calibrate_slice(arcs, catalogs, trace, k, wp)
        except RecipeError as exc:
            first = next(iter(groups.values()))[0][0]
            raise RecipeError(f"{first.name}[{chan_name(ifu)}]: {exc}") from None
        solutions.append(sol)
        qc += slice_qc(sol, trace, shape[0], lamp_numbers)
    return solutions, qc, images, trace


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Build WAVECAL_TABLE.fits (and the optional products) in ``outdir`` from ``frames["ARC"]``."""
    paths = raw_inputs(frames, "ARC", RECIPE.name, RECIPE.min_inputs)
    calibs: dict[str, Path | None] = {
        tag: optional_calib(frames, tag)
        for tag in ("MASTER_BIAS", "MASTER_DARK", "MASTER_FLAT", "TRACE_TABLE", "LINE_CATALOG", "BADPIX_TABLE")
    }
    for tag in ("MASTER_BIAS", "TRACE_TABLE", "LINE_CATALOG"):
        if calibs[tag] is None:
            raise RecipeError(f"muse_wavecal needs a {tag} calibration, none was given")
    check_bias_overscan(calibs["MASTER_BIAS"], params)
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    # Lamps and catalogue first: fail at once on an unknown lamp or an empty catalogue.
    catalog = read_line_catalog(calibs["LINE_CATALOG"])
    groups = group_by_lamp(paths, primaries)
    catalogs = {lamp: catalog.for_lamp(lamp, str(calibs["LINE_CATALOG"])) for lamp in groups}
    if not params["lampwise"]:
        groups = {"+".join(groups): [m for members in groups.values() for m in members]}
        catalogs = {next(iter(groups)): merged_catalog(catalogs)}
    ifus = select_ifus(paths, params["nifu"])
    raws = [(p, "ARC") for p in paths]
    cal_list = [(p, tag) for tag, p in calibs.items() if p is not None]
    outdir = Path(outdir)
    outputs = {"WAVECAL_TABLE": outdir / "WAVECAL_TABLE.fits"}
    if params["residuals"]:
        outputs["WAVECAL_RESIDUALS"] = outdir / "WAVECAL_RESIDUALS.fits"
    if params["wavemap"]:
        outputs["WAVE_MAP"] = outdir / "WAVE_MAP.fits"
    lamp_files = {lamp: outdir / f"ARC_RED_LAMP-{lamp}.fits" for lamp in groups} if params["saveimages"] else {}
    qc_table: dict[str, float | int | str] = {}
    writers = {
        tag: ProductWriter(path, product_header(tag, RECIPE.name, params, raws, cal_list, primaries[0]))
        for tag, path in outputs.items()
    }
    lamp_writers = {}
    for lamp, path in lamp_files.items():
        members = groups[lamp]
        lamp_raws = [(p, "ARC") for p, _ in members]
        header = product_header("ARC_RED_LAMP", RECIPE.name, params, lamp_raws, cal_list, members[0][1])
        lamp_writers[lamp] = ProductWriter(path, header)
    for ifu in ifus:
        solutions, qc, images, trace = wavecal_ifu(groups, catalogs, ifu, params, calibs)
        header = fits.Header()
        add_qc(header, qc)
        table = wavecal_table(solutions, params["xorder"], params["yorder"])
        writers["WAVECAL_TABLE"].add_table(ifu, table, header)
        for key, value, _ in qc:
            qc_table[f"{chan_name(ifu)} {key[4:]}"] = value
        if "WAVECAL_RESIDUALS" in writers:
            writers["WAVECAL_RESIDUALS"].add_table(ifu, residuals_table(solutions))
        if "WAVE_MAP" in writers:
            shape = next(iter(images.values())).data.shape
            lam = wave_map(solutions, trace, shape)
            writers["WAVE_MAP"].add_image(
                ifu, CcdImage(lam, np.zeros(shape, np.int32), np.zeros(shape, np.float32), fits.Header()),
                "Angstrom", "Angstrom**2",
            )  # fmt: skip
        for lamp, writer in lamp_writers.items():
            writer.add_image(ifu, images[lamp], "count", "(count)**2")
        del images
    products = [Product(outputs["WAVECAL_TABLE"], "WAVECAL_TABLE", tuple(ifus), qc_table)]
    for tag in ("WAVECAL_RESIDUALS", "WAVE_MAP"):
        if tag in outputs:
            products.append(Product(outputs[tag], tag, tuple(ifus), {}))
    products += [Product(path, "ARC_RED_LAMP", tuple(ifus), {}) for path in lamp_files.values()]
    return products


def check(params: Mapping) -> None:
    """Rules beyond single-parameter bounds: a well-formed ``overscan``; ``resample=true``
    (ARC_RESAMPLED) is refused, not implemented in musered."""
    check_overscan_params(params)
    if params["resample"]:
        raise ValueError("parameter resample=true (ARC_RESAMPLED) is not implemented in musered; use resample=false")


RECIPE = Recipe(
    name="muse_wavecal",
    inputs=("ARC",),
    calibs=(
        MASTER_BIAS,
        TRACE_TABLE,
        LINE_CATALOG,
        MASTER_DARK,
        MASTER_FLAT.optional(default_excluded=True),
        BADPIX_TABLE,
    ),
    outputs=("WAVECAL_TABLE", "WAVECAL_RESIDUALS", "ARC_RED_LAMP", "WAVE_MAP"),
    params=(
        NIFU_PARAM,
        *OVERSCAN_PARAMS,
        # The DRS exposes only the method here (nlow/nhigh/nkeep/lsigma/hsigma keep
        # their defaults, as in its own lampwise combination).
        COMBINE_PARAMS[0],
        Param("lampwise", bool, True, "identify and measure the lines on a separate combined image per lamp"),
        Param("sigma", float, 1.0, "detection threshold (sigma above the median) in the S/N spectrum of the "
              "slice centre", minimum=0.0),
        Param("dres", float, 0.05, "allowed relative deviation from the nominal 1.25 A/pix dispersion in "
              "pattern matching", minimum=0.0, maximum=0.5),
        Param("tolerance", float, 0.1, "tolerance of the pattern matching (difference of line-spacing ratios)",
              minimum=0.0, maximum=1.0),
        Param("xorder", int, 2, "polynomial order across the slice (x): per-line curvature fits and final "
              "2D fit", minimum=0, maximum=6),
        Param("yorder", int, 6, "polynomial order along the dispersion (y) in the final 2D fit",
              minimum=1, maximum=10),
        Param("linesigma", float, -1.0, "rejection sigma of the per-line x-polynomial fits; < 0: 2.5"),
        Param("residuals", bool, False, "save the WAVECAL_RESIDUALS table (all line positions and residuals)"),
        Param("fitsigma", float, -1.0, "rejection sigma of the final 2D fit; < 0: 3.0"),
        Param("fitweighting", str, "cerrscatter", "weights of the final 2D fit: uniform, cerr (centring "
              "error), scatter (per-line scatter) or cerrscatter (both)",
              choices=("uniform", "cerr", "scatter", "cerrscatter")),
        Param("saveimages", bool, False, "save the reduced combined arc image of each lamp (ARC_RED_LAMP)"),
        Param("resample", bool, False, "save the arc resampled to 2D (not implemented in musered: true is "
              "refused)"),
        Param("wavemap", bool, False, "save a wavelength map of the CCD (WAVE_MAP)"),
        MERGE_PARAM,
    ),  # fmt: skip
    run=run,
    group="sequence",
    step="wavecal",
    min_inputs=1,
    check=check,
    description="Wavelength solution λ(x, y) per slice from arc exposures of the Ne, Xe and HgCd lamps.",
    summary_qc=(
        ("fit RMS", "CHAN?? QC WAVECAL SLICE* FIT RMS"),
        ("lines", "CHAN?? QC WAVECAL SLICE* LINES NID"),
        ("FWHM", "CHAN?? QC WAVECAL SLICE* LINES FWHM MEAN"),
    ),
)
