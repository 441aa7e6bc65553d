"""muse_flat: combine lamp flats into MASTER_FLAT and trace the slices (recipes.md §3.3).

Per IFU, the recipe reads as its steps:

1. read the N raw flats once and check they share mode and detector setup;
2. overscan correction (the MASTER_BIAS overscan levels are the reference), trim,
   subtract the MASTER_BIAS, adu → count with each port's GAIN, variance RON² + Poisson,
   scaled to the exposure time of the first flat (``scale=true``); per-input QC;
3. combine (default sigclip) in bounded row blocks; subtract an optional MASTER_DARK;
4. QC of the master before normalisation (``QC FLAT MASTER INTFLUX`` = sum over the CCD);
5. trace the 48 slices (:func:`recipes.tracing.trace_image`: ``nsum``, ``order``,
   ``edgefrac``) with the flagged pixels left out;
6. dark/bright pixels inside the slices: the ratio of the master to its running median
   over 7 rows, below 1 − ``losigmabadpix`` σ → DARKPIXEL, above 1 + ``hisigmabadpix`` σ →
   HOTPIXEL (σ = 1.4826 MAD of the ratio in each slice); non-positive pixels, the
   inter-slice gaps among them, get BADOTHER;
7. ``normalize=true``: divide by the mean of the whole CCD, gaps included (STAT by its
   square), as the DRS does;
8. write MASTER_FLAT (``CHANnn.DATA/DQ/STAT``), TRACE_TABLE (one ``CHANnn`` table per IFU,
   48 rows, 1-based coefficients) and with ``samples=true`` TRACE_SAMPLES.

Units: MASTER_FLAT DATA in count (dimensionless after normalisation, BUNIT kept as the
DRS keeps it), STAT its square; TRACE_TABLE in pixels of the trimmed CCD, 1-based.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.ndimage import median_filter

from .base import Calib, Param, Product, Recipe, RecipeError
from .dark import bias_reference, check_bias_overscan
from .io import (
    CcdImage,
    ProductWriter,
    chan_name,
    read_badpix_table,
    read_image_product,
    read_primary_header,
    read_table_product,
)
from .kernels.overscan import SATURATION_LIMIT
from .preprocess import (
    COMBINE_PARAMS,
    DQ_DARKPIXEL,
    DQ_HOTPIXEL,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    OverscanSpec,
    badpix_mask,
    check_compatible,
    check_modes,
    combine_frames,
    combine_options,
    exposure_times,
    load_raw_ccd,
    optional_calib,
    prepare,
    preprocess_image,
    raw_inputs,
    select_ifus,
)
from .provenance import add_qc, product_header, recorded_params
from .registry import register
from .tracing import Trace, slice_bands, slice_mask, trace_image

DQ_BADOTHER = 1 << 14
_MAD = 1.482602218505602
# Rows around the CCD centre used for the per-slice QC (half height).
SLICE_QC_HALFROWS = 16
# Slices whose widths the DRS reports as QC (the four corners of the IFU).
QC_WIDTH_SLICES = (3, 10, 39, 46)
# Rows of the running median the bad-pixel search compares each pixel with.
BADPIX_MEDIAN = 7


# --------------------------------------------------------------------------------------
# Trace table I/O (DRS layout, recipes.md §4.2)


def trace_table(trace: Trace) -> Table:
    """TRACE_TABLE rows of one IFU: SliceNo, Width, tc0_* (centre), MSE0, tc1_* (left),
    MSE1, tc2_* (right), MSE2; coefficients of raw powers of the 1-based row y."""
    table = Table()
    table["SliceNo"] = np.arange(1, trace.nslice + 1, dtype=np.int32)
    table["Width"] = trace.width.astype(np.float32)
    table["Width"].unit = "pix"
    for k, coeffs in enumerate((trace.centre, trace.left, trace.right)):
        for j in range(coeffs.shape[1]):
            table[f"tc{k}_{j:02d}"] = coeffs[:, j].astype(np.float64)
            table[f"tc{k}_{j:02d}"].unit = "pix"
        table[f"MSE{k}"] = trace.mse[:, k].astype(np.float64)
        table[f"MSE{k}"].unit = "pix"
    return table


def trace_from_table(table: Table, where: str) -> Trace:
    """A :class:`Trace` (coefficients only) from TRACE_TABLE rows; the order is recovered
    from the number of ``tc0_*`` columns, as the DRS does."""
    names = table.colnames
    ncoef = sum(1 for n in names if n.startswith("tc0_"))
    needed = [f"tc{k}_{j:02d}" for k in range(3) for j in range(ncoef)] + ["SliceNo"]
    missing = [n for n in needed if n not in names]
    if ncoef == 0 or missing:
        raise RecipeError(f"{where}: not a TRACE_TABLE (missing column {missing[0] if missing else 'tc0_00'})")
    order = np.argsort(np.asarray(table["SliceNo"]))
    coeffs = [np.stack([np.asarray(table[f"tc{k}_{j:02d}"], dtype=np.float64)[order] for j in range(ncoef)], axis=1)
              for k in range(3)]  # fmt: skip
    mse = np.stack([np.asarray(table[f"MSE{k}"], dtype=np.float64)[order] if f"MSE{k}" in names
                    else np.zeros(len(table)) for k in range(3)], axis=1)  # fmt: skip
    width = np.asarray(table["Width"], dtype=np.float64)[order] if "Width" in names else np.zeros(len(table))
    return Trace(centre=coeffs[0], left=coeffs[1], right=coeffs[2], mse=mse, width=width, samples=None)


def read_trace(path: Path, ifu: int) -> Trace:
    """The TRACE_TABLE of one IFU: merged form (table extension ``CHANnn``) or the DRS
    single-IFU form (primary ``EXTNAME = CHANnn``, table in the first extension)."""
    path = Path(path)
    where = f"{path}[{chan_name(ifu)}]"
    try:
        with fits.open(path) as hdul:
            names = [str(h.header.get("EXTNAME", "")).strip() for h in hdul]
            if names[0] == chan_name(ifu) and len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU):
                return trace_from_table(Table(hdul[1].data), where)
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read TRACE_TABLE ({str(exc).splitlines()[0]})") from None
    table, _ = read_table_product(path, ifu)
    return trace_from_table(table, where)


def samples_table(trace: Trace) -> Table:
    """TRACE_SAMPLES rows: slice, y, mid, left, right (float32, 1-based pix), all trace points."""
    s = trace.samples
    ncut, nslice = s.left.shape
    table = Table()
    table["slice"] = np.repeat(np.arange(1, nslice + 1, dtype=np.int32), ncut)
    table["y"] = np.tile(s.y, nslice).astype(np.float32)
    table["mid"] = s.centre.T.ravel().astype(np.float32)
    table["left"] = s.left.T.ravel().astype(np.float32)
    table["right"] = s.right.T.ravel().astype(np.float32)
    return table


# --------------------------------------------------------------------------------------
# Steps


def exposure_factors(paths: list[Path], primaries: list[fits.Header], scale: bool) -> np.ndarray:
    """Factors bringing every flat to the exposure time of the first (ones if not ``scale``)."""
    if not scale:
        return np.ones(len(paths))
    times = exposure_times(paths, primaries, "lamp flat")
    return times[0] / times


def subtract_dark(master: CcdImage, dark_path: Path, ifu: int, exptime: float) -> None:
    """Subtract a MASTER_DARK (count per its ``normalize`` seconds) scaled to ``exptime``."""
    dark = read_image_product(dark_path, ifu)
    if dark.data.shape != master.data.shape:
        raise RecipeError(f"{dark_path}: MASTER_DARK shape {dark.data.shape[::-1]} differs from the flats")
    unit = float(recorded_params(read_primary_header(dark_path)).get("normalize", "3600") or 3600)
    if unit <= 0:
        unit = 3600.0
    f = np.float32(exptime / unit)
    master.data -= f * dark.data
    master.stat += f * f * dark.stat
    master.dq |= dark.dq


def image_stats(values: np.ndarray) -> tuple[float, float, float, float, float]:
    """median, mean, stdev, min, max (float64 sums)."""
    return (
        float(np.median(values)),
        float(values.mean(dtype=np.float64)),
        float(values.std(dtype=np.float64)),
        float(values.min()),
        float(values.max()),
    )


def flag_bad_pixels(
    master: CcdImage, trace: Trace, mask: np.ndarray, losigma: float, hisigma: float
) -> tuple[int, int, int]:
    """Dark and bright pixels inside the slices, non-positive pixels anywhere (DQ bits).

    Returns the numbers of dark, bright and non-positive pixels flagged.
    """
    data = master.data
    # Running median along y only: the lamp flat is smooth along the dispersion, while
    # along x the slice edges would make a 2-D median flag pixels next to them.
    model = median_filter(data, size=(BADPIX_MEDIAN, 1), mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(model > 0, data / model, np.nan)
    ndark = nbright = 0
    for s, band in slice_bands(trace, mask.shape):
        sel = mask[:, band] == s
        r = ratio[:, band]
        inside = sel & np.isfinite(r) & (master.dq[:, band] == 0)
        if inside.sum() < 10:
            continue
        vals = r[inside]
        med = float(np.median(vals))
        sig = _MAD * float(np.median(np.abs(vals - med)))
        if not sig > 0:
            continue
        dark = sel & (r < med - losigma * sig)
        bright = sel & (r > med + hisigma * sig)
        dq = master.dq[:, band]
        dq[dark] |= DQ_DARKPIXEL
        dq[bright] |= DQ_HOTPIXEL
        ndark += int(dark.sum())
        nbright += int(bright.sum())
    nonpos = ~(data > 0)
    master.dq[nonpos] |= DQ_BADOTHER
    return ndark, nbright, int(nonpos.sum())


def trace_qc(trace: Trace, shape: tuple[int, int]) -> list[tuple[str, object, str]]:
    """QC TRACE keywords (recipes.md §3.3): corner slices, slopes, widths and gaps."""
    ny = shape[0]
    ymid = 0.5 * (ny + 1)
    y1 = np.arange(1, ny + 1, dtype=np.float64)
    centre = trace.evaluate("centre", y1)
    left_mid = trace.evaluate("left", ymid)
    right_mid = trace.evaluate("right", ymid)
    widths = right_mid - left_mid
    gaps = left_mid[1:] - right_mid[:-1]
    slopes = np.abs(np.diff(centre, axis=1)).max(axis=1)
    qc: list[tuple[str, object, str]] = []
    for label, s in (("SLICE_L", 0), ("SLICE_R", trace.nslice - 1)):
        tilt = float(np.degrees(np.arctan2(centre[s, -1] - centre[s, 0], ny - 1)))
        qc.append((f"ESO QC TRACE {label} XPOS", float(centre[s, ny // 2]), "[pix] slice midpoint"))
        qc.append((f"ESO QC TRACE {label} TILT", tilt, "[deg] slice tilt"))
    for s in range(trace.nslice):
        qc.append((f"ESO QC TRACE SLICE{s + 1} MAXSLOPE", float(slopes[s]), "max slope of centre"))
    for s in QC_WIDTH_SLICES:
        if s <= trace.nslice:
            qc.append((f"ESO QC TRACE SLICE{s} WIDTH", float(widths[s - 1]), "[pix] at CCD centre"))
    for label, vals in (("WIDTHS", widths), ("GAPS", gaps)):
        for stat, value in zip(("MEDIAN", "MEAN", "STDEV", "MIN", "MAX"), image_stats(vals)):
            qc.append((f"ESO QC TRACE {label} {stat}", value, "[pix] at CCD centre"))
    return qc


def master_flat_ifu(
    paths: list[Path],
    primaries: list[fits.Header],
    ifu: int,
    params: Mapping,
    bias_path: Path,
    dark_path: Path | None,
    badpix: Path | None,
) -> tuple[CcdImage, Trace | None, list[tuple[str, object, str]]]:
    """Master flat (QC in its header), trace (or None) and the TRACE_TABLE QC of one IFU."""
    spec = OverscanSpec.from_params(params)
    ccds = [load_raw_ccd(p, ifu, h) for p, h in zip(paths, primaries)]
    check_compatible(ccds)
    quadrants = ccds[0].quadrants
    bias = read_image_product(bias_path, ifu)
    reference = bias_reference(bias, quadrants, bias_path, spec)
    static_dq = badpix_mask(quadrants, *read_badpix_table(badpix, ifu)) if badpix is not None else None
    factors = exposure_factors(paths, primaries, bool(params["scale"]))
    preps = [
        prepare(c, spec, "count", reference=reference, reference_name=bias_path.name, scale=f)
        for c, f in zip(ccds, factors)
    ]
    qc: list[tuple[str, object, str]] = []
    for i, (c, prep) in enumerate(zip(ccds, preps), start=1):
        single = preprocess_image(prep, bias=bias, static_dq=static_dq)
        good = single.data[single.dq == 0]
        for stat, value in zip(("MEDIAN", "MEAN", "STDEV", "MIN", "MAX"), image_stats(good)):
            qc.append((f"ESO QC FLAT INPUT{i} {stat}", value, f"[count] input {i} {stat.lower()}"))
        nsat = int(sum((c.image[q.data] > SATURATION_LIMIT).sum() for q in quadrants))
        qc.append((f"ESO QC FLAT INPUT{i} NSATURATED", nsat, "saturated pixels in raw input"))
        del single, good
    master = combine_frames(preps, bias=bias, static_dq=static_dq, **combine_options(params))
    del bias, preps, ccds
    if dark_path is not None:
        exptime = float(primaries[0].get("EXPTIME", 0.0))
        subtract_dark(master, dark_path, ifu, exptime)
    good = master.dq == 0
    values = master.data[good] if good.any() else master.data.ravel()
    for stat, value in zip(("MEDIAN", "MEAN", "STDEV", "MIN", "MAX"), image_stats(values)):
        qc.append((f"ESO QC FLAT MASTER {stat}", value, f"[count] master {stat.lower()}"))
    qc.append(("ESO QC FLAT MASTER INTFLUX", float(master.data.sum(dtype=np.float64)), "[count] CCD sum"))
    qc.append(("ESO QC FLAT MASTER NSATURATED", int(((master.dq & (1 << 12)) != 0).sum()), "saturated pixels"))

    trace = None
    trace_qcs: list[tuple[str, object, str]] = []
    if params["trace"]:
        image = np.where(master.dq == 0, master.data, np.nan).astype(np.float64)
        try:
            trace = trace_image(image, int(params["nsum"]), int(params["order"]), float(params["edgefrac"]))
        except RecipeError as exc:
            raise RecipeError(f"{paths[0].name}[{chan_name(ifu)}]: tracing failed: {exc}") from None
        mask = slice_mask(trace, master.data.shape)
        ndark, nbright, nnonpos = flag_bad_pixels(
            master, trace, mask, float(params["losigmabadpix"]), float(params["hisigmabadpix"])
        )
        qc.append(("ESO QC FLAT MASTER NDARK", ndark, "dark pixels in slices"))
        qc.append(("ESO QC FLAT MASTER NBRIGHT", nbright, "bright pixels in slices"))
        qc.append(("ESO QC FLAT MASTER NNONPOS", nnonpos, "non-positive pixels"))
        ny = master.data.shape[0]
        rows = slice(max(ny // 2 - SLICE_QC_HALFROWS, 0), ny // 2 + SLICE_QC_HALFROWS)
        for s in range(1, trace.nslice + 1):
            sel = (mask[rows] == s) & (master.dq[rows] == 0)
            vals = master.data[rows][sel]
            mean = float(vals.mean(dtype=np.float64)) if vals.size else 0.0
            stdev = float(vals.std(dtype=np.float64)) if vals.size else 0.0
            qc.append((f"ESO QC FLAT MASTER SLICE{s} MEAN", mean, "[count]"))
            qc.append((f"ESO QC FLAT MASTER SLICE{s} STDEV", stdev, "[count]"))
        trace_qcs = trace_qc(trace, master.data.shape)
    else:
        master.dq[~(master.data > 0)] |= DQ_BADOTHER

    if params["normalize"]:
        mean = float(master.data.mean(dtype=np.float64))
        if not mean > 0:
            raise RecipeError(f"{paths[0].name}[{chan_name(ifu)}]: master flat mean is {mean}, cannot normalise")
        master.data /= np.float32(mean)
        master.stat /= np.float32(mean * mean)
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
    OverscanSpec.from_params(params)
    check_bias_overscan(bias_path, params)
    if not 0.0 < float(params["edgefrac"]) < 1.0:
        raise RecipeError(f"muse_flat: edgefrac must lie between 0 and 1, not {params['edgefrac']}")
    primaries = [read_primary_header(p) for p in paths]
    check_modes(paths, primaries)
    ifus = select_ifus(paths, int(params.get("nifu", 0)))
    calibs = [(bias_path, "MASTER_BIAS")]
    calibs += [(dark_path, "MASTER_DARK")] if dark_path else []
    calibs += [(badpix, "BADPIX_TABLE")] if badpix else []
    raws = [(p, "FLAT") for p in paths]
    outdir = Path(outdir)
    out_flat = outdir / "MASTER_FLAT.fits"
    out_trace = outdir / "TRACE_TABLE.fits"
    out_samples = outdir / "TRACE_SAMPLES.fits"
    want_trace = bool(params["trace"])
    want_samples = want_trace and bool(params["samples"])
    qc_flat: dict[str, float | int | str] = {}
    qc_trace: dict[str, float | int | str] = {}
    written = [out_flat] + ([out_trace] if want_trace else []) + ([out_samples] if want_samples else [])
    try:
        flat_header = product_header("MASTER_FLAT", RECIPE.name, params, raws, calibs, primaries[0])
        flat_writer = ProductWriter(out_flat, flat_header)
        trace_writer = (
            ProductWriter(out_trace, product_header("TRACE_TABLE", RECIPE.name, params, raws, calibs, primaries[0]))
            if want_trace else None
        )  # fmt: skip
        samples_writer = (
            ProductWriter(out_samples, product_header("TRACE_SAMPLES", RECIPE.name, params, raws, calibs, primaries[0]))
            if want_samples else None
        )  # fmt: skip
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
            del master
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    products = [Product(out_flat, "MASTER_FLAT", tuple(ifus), qc_flat)]
    if want_trace:
        products.append(Product(out_trace, "TRACE_TABLE", tuple(ifus), qc_trace))
    if want_samples:
        products.append(Product(out_samples, "TRACE_SAMPLES", tuple(ifus), {}))
    return products


RECIPE = register(
    Recipe(
        name="muse_flat",
        inputs=("FLAT",),
        calibs=(
            Calib("MASTER_BIAS"),
            Calib("MASTER_DARK", required=False, default_excluded=True),
            Calib("BADPIX_TABLE", required=False),
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
        min_inputs=3,
        description="Combine lamp flats into a normalised master flat and trace the 48 slices of each IFU.",
        summary_qc=(
            ("flat median", "CHAN?? QC FLAT MASTER MEDIAN"),
            ("slice width", "CHAN?? QC TRACE WIDTHS MEDIAN"),
            ("gap", "CHAN?? QC TRACE GAPS MEDIAN"),
        ),
    )
)
