"""muse_scibasic: CCD-level science reduction → pixel tables (recipes.md §3.7).

Per raw exposure (OBJECT, STD, SKY or ASTROMETRY) and IFU, the recipe reads as its steps:

1. basic processing (:func:`recipes.algorithms.exposure.reduce_exposure`): overscan (the
   MASTER_BIAS levels are the reference), trim, MASTER_BIAS subtraction, adu → count with
   each port's GAIN, variance RON² + Poisson, BADPIX_TABLE and saturation into DQ;
   optional ``cr=dcr`` cosmic-ray flagging; optional MASTER_DARK (scaled to EXPTIME);
   division by MASTER_FLAT (variance propagated, its DQ OR-ed in); with ``saveimage`` the
   result is ``<TAG>_RED`` (count);

steps 2-7 for each IFU (:func:`recipes.algorithms.scibasic_steps.pixtable_steps`):

2. the pixel table (:func:`recipes.algorithms.pixtable_build.pixtable_for_ifu`): TRACE_TABLE
   edges, WAVECAL_TABLE λ(x, y), GEOMETRY_TABLE positions, origin bit-packing;
3. sky-line zero point (``skylines``, ``skyhalfwidth``, ``skybinsize``, ``skyreject``;
   :mod:`recipes.algorithms.skyline_shift`): Gaussian fits to a finely binned spectrum
   around each line, the weighted mean offset is added to ``lambda`` and recorded as
   ``ESO QC SCIBASIC LAMBDA SHIFT`` [Å];
4. ``crop``: keep the useful range of the instrument mode (and flag the NaD notch of the
   AO modes with NOTCH_NAD);
5. ILLUM (optional): divide each slice by its normalised median flux in the attached
   flat (``ESO DRS MUSE PIXTABLE ILLUMn``, n = 1..48; :mod:`recipes.algorithms.illumination`);
6. TWILIGHT_CUBE (optional): divide every pixel by the twilight cube at (xpos, ypos, λ);
7. attach PIXTABLE_FLAT_FIELD (mean master-flat spectrum on a 1.25 Å grid) and write
   ``PIXTABLE_<TAG>_nnnn-ii.fits`` (one file per exposure nnnn and IFU ii, the DRS layout;
   its primary header names the IFU, ``EXTNAME = CHANii``, and carries the raw
   ``ESO DET CHIP/OUTn`` keywords and ``ESO DRS MUSE FLAT FLUX LAMP/SKY``:
   :func:`recipes.provenance.set_ifu_keywords`).

Units: data count, stat count², λ Å (air), xpos/ypos field pixels (0.2").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recipes.calibs import BADPIX_TABLE, GEOMETRY_TABLE, ILLUM, MASTER_BIAS, MASTER_DARK, MASTER_FLAT, TRACE_TABLE, TWILIGHT_CUBE, WAVECAL_TABLE
from recipes.base import Param, ParamValue, Product, Recipe, RecipeError
from recipes.algorithms.overscan import check_bias_overscan, check_overscan_params
from recipes.io import ProductWriter, chan_name, prefetch_raw_ifu, read_image_product, read_primary_header
from recipes.algorithms.ccdinputs import (
    COMBINE_PARAMS,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    check_modes,
    optional_calib,
    select_ifus,
)
from recipes.algorithms.exposure import check_calib_modes, reduce_exposure
from recipes.algorithms.illumination import read_twilight_cube
from recipes.algorithms.pixtable_build import ifu_tables
from recipes.algorithms.scibasic_steps import pixtable_steps
from recipes.provenance import add_qc, product_header, set_ifu_keywords

RAW_TAGS = ("OBJECT", "STD", "SKY", "ASTROMETRY")
CALIB_TAGS = ("MASTER_BIAS", "MASTER_DARK", "MASTER_FLAT", "TRACE_TABLE", "WAVECAL_TABLE", "GEOMETRY_TABLE",
              "TWILIGHT_CUBE", "BADPIX_TABLE", "ILLUM")  # fmt: skip


class ListOrNone(Param):
    """A list parameter that the DRS switches off with the word ``none``: that (any case)
    becomes the empty tuple, anything else converts as a tuple of ``item``."""

    def convert(self, value: Any) -> ParamValue | None:
        if isinstance(value, str) and value.strip().lower() == "none":
            return ()
        return super().convert(value)


def check(params: Mapping[str, ParamValue | None]) -> None:
    """Cross-parameter and structure rules, run when the parameters are validated."""
    check_overscan_params(params)
    if any(not line > 0 for line in params["skylines"]):
        raise ValueError(f"parameter skylines: wavelengths must be positive, not {params['skylines']!r}")
    reject = params["skyreject"]
    if len(reject) != 3 or reject[0] <= 0 or reject[1] <= 0 or reject[2] < 0 or reject[2] != int(reject[2]):
        raise ValueError(f"parameter skyreject must be 'hi,lo,niter' with sigmas > 0 and an integer niter >= 0 "
                         f"(e.g. 15.,15.,1), not {params['skyreject']!r}")  # fmt: skip
    if params["resample"]:
        raise ValueError("muse_scibasic: resample=true (<TAG>_RESAMPLED) is not implemented in musered; use false")


def _inputs(frames: Mapping[str, list[Path]]) -> list[tuple[Path, str]]:
    out = []
    for tag in RAW_TAGS:
        out += [(Path(p), tag) for p in frames.get(tag, []) or []]
    if not out:
        raise RecipeError(f"muse_scibasic needs at least one raw frame tagged {', '.join(RAW_TAGS)}; got none")
    for path, _ in out:
        if not path.exists():
            raise RecipeError(f"{path}: raw file does not exist (deleted since ingestion?)")
    return out


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write ``PIXTABLE_<TAG>_nnnn-ii.fits`` (and with ``saveimage`` ``<TAG>_RED_nnnn.fits``)
    in ``outdir`` for every raw OBJECT/STD/SKY/ASTROMETRY frame of ``frames``."""
    inputs = _inputs(frames)
    calibs: dict[str, Path | None] = {tag: optional_calib(frames, tag) for tag in CALIB_TAGS}
    for tag in RECIPE.required_calibs:
        if calibs[tag] is None:
            raise RecipeError(f"muse_scibasic needs a {tag} calibration, none was given")
    check_bias_overscan(calibs["MASTER_BIAS"], params)
    paths = [p for p, _ in inputs]
    primaries = [read_primary_header(p) for p in paths]
    for (path, _), primary in zip(inputs, primaries):
        check_calib_modes(path, primary, calibs)
    ifus = select_ifus(paths, params["nifu"])
    # one group per exposure; with combine != none, one group per tag
    if params["combine"] != "none":
        groups = {}
        for (path, tag), primary in zip(inputs, primaries):
            groups.setdefault(tag, []).append((path, primary))
        units = [(tag, members) for tag, members in groups.items()]
        for tag, members in units:
            check_modes([m[0] for m in members], [m[1] for m in members])
    else:
        units = [(tag, [(path, primary)]) for (path, tag), primary in zip(inputs, primaries)]
    cal_list = [(p, tag) for tag, p in calibs.items() if p is not None and tag != "ILLUM"]
    illum_path = calibs["ILLUM"]
    illum_primary = read_primary_header(illum_path) if illum_path is not None else None
    twilight = read_twilight_cube(calibs["TWILIGHT_CUBE"]) if calibs["TWILIGHT_CUBE"] is not None else None
    twilight_primary = read_primary_header(calibs["TWILIGHT_CUBE"]) if twilight is not None else None
    flat_primary = read_primary_header(calibs["MASTER_FLAT"])
    outdir = Path(outdir)
    products: list[Product] = []
    for number, (tag, members) in enumerate(units, start=1):
        mpaths = [m[0] for m in members]
        mprims = [m[1] for m in members]
        raws = [(p, tag) for p in mpaths] + ([(illum_path, "ILLUM")] if illum_path is not None else [])
        red_writer = None
        if params["saveimage"]:
            red_header = product_header(f"{tag}_RED", RECIPE.name, params, raws, cal_list, mprims[0])
            red_writer = ProductWriter(outdir / f"{tag}_RED_{number:04d}.fits", red_header)
        for k, ifu in enumerate(ifus):
            if k + 1 < len(ifus):  # disk reads of the next IFU overlap with this one's work
                for src in [*mpaths, calibs["MASTER_BIAS"], calibs["MASTER_FLAT"]]:
                    prefetch_raw_ifu(src, ifus[k + 1])
            flat = read_image_product(calibs["MASTER_FLAT"], ifu)  # once per IFU, for all steps
            image, qc = reduce_exposure(mpaths, mprims, ifu, params, calibs, flat)  # 1.
            if red_writer is not None:
                add_qc(image.header, qc)
                red_writer.add_image(ifu, image, "count", "(count)**2")
            illum = None
            if illum_path is not None:
                illum, _ = reduce_exposure([illum_path], [illum_primary], ifu, params, calibs, flat)
            header = product_header(f"PIXTABLE_{tag}", RECIPE.name, params, raws, cal_list, mprims[0])
            set_ifu_keywords(header, ifu, image.header, flat.header, twilight_primary, flat_primary)
            pt, pqc = pixtable_steps(image, ifu, params, header, ifu_tables(calibs, ifu), flat, illum, twilight)
            add_qc(pt.header, qc)
            del image, illum, flat
            path = pt.write(outdir / f"PIXTABLE_{tag}_{number:04d}-{ifu:02d}.fits")  # 7.
            qcd = {f"{chan_name(ifu)} {k[4:]}": v for k, v, _ in qc + pqc}
            products.append(Product(path, f"PIXTABLE_{tag}", (ifu,), qcd))
            del pt
        if red_writer is not None:
            products.append(Product(red_writer.path, f"{tag}_RED", tuple(ifus), {}))
    return products


RECIPE = Recipe(
    name="muse_scibasic",
    inputs=RAW_TAGS,
    calibs=(
        MASTER_BIAS,
        MASTER_FLAT,
        TRACE_TABLE,
        WAVECAL_TABLE,
        GEOMETRY_TABLE,
        MASTER_DARK,
        TWILIGHT_CUBE.optional(),
        BADPIX_TABLE,
        ILLUM,
    ),
    outputs=(
        "PIXTABLE_OBJECT", "PIXTABLE_STD", "PIXTABLE_SKY", "PIXTABLE_ASTROMETRY",
        "OBJECT_RED", "STD_RED", "SKY_RED", "ASTROMETRY_RED",
    ),  # fmt: skip
    params=(
        NIFU_PARAM,
        *OVERSCAN_PARAMS,
        Param("crop", bool, True, "crop the pixel tables to the useful wavelength range of the instrument "
              "mode (4750-9350 nominal/NFM, 4700-9350 AO-N, 4600-9350 extended)"),
        Param("cr", str, "none", "CCD-level cosmic-ray flagging: none or dcr (quick look only; cosmic rays "
              "are normally rejected while building the cube)", choices=("none", "dcr")),
        Param("xbox", int, 15, "cr=dcr: box size in x for the local noise estimate", minimum=1),
        Param("ybox", int, 40, "cr=dcr: box size in y for the local noise estimate", minimum=1),
        Param("passes", int, 2, "cr=dcr: maximum number of passes", minimum=1),
        Param("thres", float, 5.8, "cr=dcr: detection threshold (sigma)", minimum=0.0),
        Param("combine", str, "none", "(expert) combine the raw inputs of each tag before building the pixel "
              "table: none, average, median, minmax or sigclip; keep none for science",
              choices=("none", "average", "median", "minmax", "sigclip")),
        *COMBINE_PARAMS[1:],
        Param("scale", bool, True, "(expert) scale the inputs to the exposure time of the first before "
              "combining (combine != none)"),
        Param("saveimage", bool, True, "save the pre-reduced CCD image (<TAG>_RED)"),
        ListOrNone("skylines", tuple, "5577.339,6300.304", "sky lines [Angstrom] for the wavelength zero-point "
                   "correction (comma-separated); none disables it", item=float),
        Param("skyhalfwidth", float, 5.0, "half-width [Angstrom] of the window around each sky line",
              minimum=0.1),
        Param("skybinsize", float, 0.1, "bin size [Angstrom] of the spectrum fitted around each sky line",
              minimum=0.001),
        Param("skyreject", tuple, "15.,15.,1", "sigma clipping 'hi,lo,niter' of the sky-line spectrum",
              item=float),
        Param("resample", bool, False, "also save a resampled 2D image (<TAG>_RESAMPLED; not implemented in "
              "musered: true is refused)"),
        Param("dlambda", float, 1.25, "wavelength step [Angstrom] of the resampled 2D image", minimum=0.001),
        MERGE_PARAM,
    ),  # fmt: skip
    run=run,
    group="exposure",
    step="scibasic",
    min_inputs=1,
    check=check,
    description="Remove the CCD signature of science exposures and turn each IFU into a pixel table.",
    summary_qc=(("lambda shift", "CHAN?? QC SCIBASIC LAMBDA SHIFT"),),
)
