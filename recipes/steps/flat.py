"""muse_flat: combine lamp flats into MASTER_FLAT and trace the slices (recipes.md §3.3).

Per IFU, the recipe reads as its steps:

1. read the N raw flats once and check they share mode and detector setup;
2. overscan correction (the MASTER_BIAS overscan levels are the reference), trim,
   subtract the MASTER_BIAS, adu → count with each port's GAIN, variance RON² + Poisson,
   scaled to the exposure time of the first flat (``scale=true``); per-input QC;
3. combine (default sigclip) in bounded row blocks; subtract an optional MASTER_DARK;
4. QC of the master before normalisation (``QC FLAT MASTER INTFLUX`` = sum over the CCD);
5. trace the 48 slices (:func:`recipes.algorithms.tracing.trace_image`: ``nsum``, ``order``,
   ``edgefrac``) with the flagged pixels left out;
6. dark/bright pixels inside the slices (:func:`recipes.algorithms.masterflat.flag_bad_pixels`):
   the ratio of the master to its running median over 7 rows, below 1 − ``losigmabadpix`` σ
   → DARKPIXEL, above 1 + ``hisigmabadpix`` σ → HOTPIXEL (σ = 1.4826 MAD of the ratio in
   each slice); non-positive pixels, the inter-slice gaps among them, get BADOTHER;
7. ``normalize=true``: divide by the mean of the whole CCD, gaps included (STAT by its
   square), as the DRS does;
8. write MASTER_FLAT (``CHANnn.DATA/DQ/STAT``), TRACE_TABLE (one ``CHANnn`` table per IFU,
   48 rows, 1-based coefficients, :mod:`recipes.algorithms.calibtables`) and with
   ``samples=true`` TRACE_SAMPLES.

Units: MASTER_FLAT DATA in count (dimensionless after normalisation, BUNIT kept as the
DRS keeps it), STAT its square; TRACE_TABLE in pixels of the trimmed CCD, 1-based.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import Param, Product, Recipe, RecipeError
from recipes.calibs import BADPIX_TABLE, MASTER_BIAS, MASTER_DARK
from recipes.io import CcdImage, ProductWriter, chan_name, read_badpix_table, read_image_product, read_primary_header
from recipes.provenance import add_qc, product_header
from recipes.algorithms.calibtables import samples_table, trace_table
from recipes.algorithms.ccdinputs import (
    COMBINE_PARAMS,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    check_modes,
    combine_options,
    exposure_factors,
    optional_calib,
    raw_inputs,
    select_ifus,
)
from recipes.algorithms.masterflat import (
    QcCards,
    flag_bad_pixels,
    flag_nonpositive,
    input_qc,
    master_qc,
    normalize_flat,
    slice_qc,
    trace_qc,
)
from recipes.algorithms.overscan import OverscanSpec, bias_reference, check_bias_overscan, check_overscan_params
from recipes.algorithms.preprocess import combine_frames, prepare, subtract_dark
from recipes.algorithms.rawccd import badpix_mask, check_compatible, load_raw_ccd
from recipes.algorithms.tracing import Trace, slice_mask, trace_image


def master_flat_ifu(
    paths: list[Path],
    primaries: list[fits.Header],
    ifu: int,
    params: Mapping,
    bias_path: Path,
    dark_path: Path | None,
    badpix: Path | None,
) -> tuple[CcdImage, Trace | None, QcCards]:
    """Master flat (QC in its header), trace (or None) and the TRACE_TABLE QC of one IFU."""
    where = f"{paths[0].name}[{chan_name(ifu)}]"
    spec = OverscanSpec.from_params(params)
    ccds = [load_raw_ccd(p, ifu, h) for p, h in zip(paths, primaries)]
    check_compatible(ccds)
    quadrants = ccds[0].quadrants
    bias = read_image_product(bias_path, ifu)
    reference = bias_reference(bias, quadrants, bias_path, spec)
    static_dq = badpix_mask(quadrants, *read_badpix_table(badpix, ifu)) if badpix is not None else None
    factors = exposure_factors(paths, primaries, params["scale"])
    preps = [
        prepare(c, spec, "count", reference=reference, reference_name=bias_path.name, scale=f)
        for c, f in zip(ccds, factors)
    ]
    qc = input_qc(ccds, preps, bias, static_dq)
    master = combine_frames(preps, bias=bias, static_dq=static_dq, **combine_options(params))
    del bias, preps, ccds
    if dark_path is not None:
        subtract_dark(master, dark_path, ifu, float(primaries[0].get("EXPTIME", 0.0)))
    qc += master_qc(master)

    trace = None
    trace_qcs: QcCards = []
    if params["trace"]:
        image = np.where(master.dq == 0, master.data, np.nan).astype(np.float64)
        try:
            trace = trace_image(image, params["nsum"], params["order"], params["edgefrac"])
        except RecipeError as exc:
            raise RecipeError(f"{where}: tracing failed: {exc}") from None
        mask = slice_mask(trace, master.data.shape)
        ndark, nbright, nnonpos = flag_bad_pixels(master, trace, mask, params["losigmabadpix"],
                                                  params["hisigmabadpix"])  # fmt: skip
        qc.append(("ESO QC FLAT MASTER NDARK", ndark, "dark pixels in slices"))
        qc.append(("ESO QC FLAT MASTER NBRIGHT", nbright, "bright pixels in slices"))
        qc.append(("ESO QC FLAT MASTER NNONPOS", nnonpos, "non-positive pixels"))
        qc += slice_qc(master, mask, trace.nslice)
        trace_qcs = trace_qc(trace, master.data.shape)
    else:
        flag_nonpositive(master)

    if params["normalize"]:
        normalize_flat(master, where)
    add_qc(master.header, qc)
    return master, trace, trace_qcs


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Build MASTER_FLAT.fits and TRACE_TABLE.fits (and TRACE_SAMPLES.fits with
    ``samples=true``) in ``outdir`` from ``frames["FLAT"]`` (≥ 3) and a MASTER_BIAS."""
    paths = raw_inputs(frames, "FLAT", RECIPE.name, RECIPE.min_inputs)
    bias_path = optional_calib(frames, "MASTER_BIAS")
    if bias_path is None:
        raise RecipeError("muse_flat needs a MASTER_BIAS calibration, none was given")
    dark_path = optional_calib(frames, "MASTER_DARK")
    badpix = optional_calib(frames, "BADPIX_TABLE")
    check_bias_overscan(bias_path, params)
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    ifus = select_ifus(paths, params["nifu"])
    calibs = [(bias_path, "MASTER_BIAS")]
    calibs += [(dark_path, "MASTER_DARK")] if dark_path else []
    calibs += [(badpix, "BADPIX_TABLE")] if badpix else []
    raws = [(p, "FLAT") for p in paths]
    outdir = Path(outdir)
    out_flat = outdir / "MASTER_FLAT.fits"
    out_trace = outdir / "TRACE_TABLE.fits"
    out_samples = outdir / "TRACE_SAMPLES.fits"
    want_trace = params["trace"]
    want_samples = want_trace and params["samples"]

    def writer(path: Path, tag: str) -> ProductWriter:
        return ProductWriter(path, product_header(tag, RECIPE.name, params, raws, calibs, primaries[0]))

    flat_writer = writer(out_flat, "MASTER_FLAT")
    trace_writer = writer(out_trace, "TRACE_TABLE") if want_trace else None
    samples_writer = writer(out_samples, "TRACE_SAMPLES") if want_samples else None
    qc_flat: dict[str, float | int | str] = {}
    qc_trace: dict[str, float | int | str] = {}
    for ifu in ifus:
        master, trace, tqc = master_flat_ifu(paths, primaries, ifu, params, bias_path, dark_path, badpix)
        flat_writer.add_image(ifu, master, "count", "(count)**2")
        for card in master.header.cards:
            if card.keyword.startswith("ESO QC "):
                qc_flat[f"{chan_name(ifu)} {card.keyword[4:]}"] = card.value
        if trace_writer is not None and trace is not None:
            header = fits.Header()
            add_qc(header, tqc)
            trace_writer.add_table(ifu, trace_table(trace), header)
            for key, value, _ in tqc:
                qc_trace[f"{chan_name(ifu)} {key[4:]}"] = value
            if samples_writer is not None:
                samples_writer.add_table(ifu, samples_table(trace))
        del master  # one IFU in memory at a time
    products = [Product(out_flat, "MASTER_FLAT", tuple(ifus), qc_flat)]
    if want_trace:
        products.append(Product(out_trace, "TRACE_TABLE", tuple(ifus), qc_trace))
    if want_samples:
        products.append(Product(out_samples, "TRACE_SAMPLES", tuple(ifus), {}))
    return products


def check(params: Mapping) -> None:
    """Rules beyond single-parameter bounds: a well-formed ``overscan``, and an edge level
    strictly inside (0, 1) (the declaration's bounds are inclusive)."""
    check_overscan_params(params)
    if not 0.0 < params["edgefrac"] < 1.0:
        raise ValueError(f"parameter edgefrac must lie strictly between 0 and 1, not {params['edgefrac']}")


RECIPE = Recipe(
    name="muse_flat",
    inputs=("FLAT",),
    calibs=(
        MASTER_BIAS,
        MASTER_DARK,
        BADPIX_TABLE,
    ),
    outputs=("MASTER_FLAT", "TRACE_TABLE", "TRACE_SAMPLES"),
    params=(
        NIFU_PARAM,
        *OVERSCAN_PARAMS,
        *COMBINE_PARAMS,
        Param("scale", bool, True, "scale the individual images to a common exposure time before combining"),
        Param("normalize", bool, True, "normalize the master flat to the mean of the whole CCD (gaps included)"),
        Param("trace", bool, True, "trace the slice positions on the master flat (TRACE_TABLE)"),
        Param("nsum", int, 32, "number of CCD rows averaged per trace point", minimum=1),
        Param("order", int, 5, "polynomial order of the trace fits (centre, left and right edge)",
              minimum=0, maximum=10),
        Param("edgefrac", float, 0.5, "fractional flux level of the slice plateau defining an edge",
              minimum=0.0, maximum=1.0),
        Param("losigmabadpix", float, 5.0, "low sigma to find dark pixels inside the slices", minimum=0.0),
        Param("hisigmabadpix", float, 5.0, "high sigma to find bright pixels inside the slices", minimum=0.0),
        Param("samples", bool, False, "also save all measured trace points (TRACE_SAMPLES)"),
        MERGE_PARAM,
    ),  # fmt: skip
    run=run,
    group="sequence",
    step="flat",
    min_inputs=3,
    check=check,
    description="Combine lamp flats into a normalised master flat and trace the 48 slices of each IFU.",
    summary_qc=(
        ("flat median", "CHAN?? QC FLAT MASTER MEDIAN"),
        ("slice width", "CHAN?? QC TRACE WIDTHS MEDIAN"),
        ("gap", "CHAN?? QC TRACE GAPS MEDIAN"),
    ),
)
