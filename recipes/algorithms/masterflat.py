"""Master-flat analysis of muse_flat: QC statistics, bad pixels inside the slices and
the QC of the slice trace (recipes.md §3.3).

Images are one IFU's trimmed CCD (0-based ``[y, x]``, DATA in count, Euro3D DQ bits);
traces are :class:`recipes.algorithms.tracing.Trace` polynomials in 1-based pixels.
Robust σ = 1.4826 · MAD (the median absolute deviation expressed as a Gaussian σ).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from recipes.base import RecipeError
from recipes.algorithms.preprocess import DQ_DARKPIXEL, DQ_HOTPIXEL, Preparation, preprocess_image
from recipes.algorithms.rawccd import RawCcd
from recipes.algorithms.tracing import Trace, slice_bands
from recipes.io import CcdImage
from recipes.kernels.overscan import SATURATION_LIMIT

QcCards = list[tuple[str, object, str]]

DQ_BADOTHER = 1 << 14
_MAD = 1.482602218505602
# Rows around the CCD centre used for the per-slice QC (half height).
SLICE_QC_HALFROWS = 16
# Slices whose widths the DRS reports as QC (the four corners of the IFU).
QC_WIDTH_SLICES = (3, 10, 39, 46)
# Rows of the running median the bad-pixel search compares each pixel with.
BADPIX_MEDIAN = 7


def image_stats(values: np.ndarray) -> tuple[float, float, float, float, float]:
    """median, mean, stdev, min, max (float64 sums)."""
    return (
        float(np.median(values)),
        float(values.mean(dtype=np.float64)),
        float(values.std(dtype=np.float64)),
        float(values.min()),
        float(values.max()),
    )


def input_qc(ccds: list[RawCcd], preps: list[Preparation], bias: CcdImage, static_dq: np.ndarray | None) -> QcCards:
    """QC FLAT INPUTi: statistics (count) of each preprocessed input's unflagged pixels
    and its saturated raw pixels. Each input is preprocessed on its own here, once,
    only for these values (the master is combined from the raw stack)."""
    qc: QcCards = []
    quadrants = ccds[0].quadrants
    for i, (c, prep) in enumerate(zip(ccds, preps), start=1):
        single = preprocess_image(prep, bias=bias, static_dq=static_dq)
        good = single.data[single.dq == 0]
        for stat, value in zip(("MEDIAN", "MEAN", "STDEV", "MIN", "MAX"), image_stats(good)):
            qc.append((f"ESO QC FLAT INPUT{i} {stat}", value, f"[count] input {i} {stat.lower()}"))
        nsat = int(sum((c.image[q.data] > SATURATION_LIMIT).sum() for q in quadrants))
        qc.append((f"ESO QC FLAT INPUT{i} NSATURATED", nsat, "saturated pixels in raw input"))
        del single, good
    return qc


def master_qc(master: CcdImage) -> QcCards:
    """QC FLAT MASTER statistics (count) of the unflagged pixels before normalisation,
    INTFLUX (sum over the whole CCD) and NSATURATED."""
    qc: QcCards = []
    good = master.dq == 0
    values = master.data[good] if good.any() else master.data.ravel()
    for stat, value in zip(("MEDIAN", "MEAN", "STDEV", "MIN", "MAX"), image_stats(values)):
        qc.append((f"ESO QC FLAT MASTER {stat}", value, f"[count] master {stat.lower()}"))
    qc.append(("ESO QC FLAT MASTER INTFLUX", float(master.data.sum(dtype=np.float64)), "[count] CCD sum"))
    qc.append(("ESO QC FLAT MASTER NSATURATED", int(((master.dq & (1 << 12)) != 0).sum()), "saturated pixels"))
    return qc


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
    return ndark, nbright, flag_nonpositive(master)


def flag_nonpositive(master: CcdImage) -> int:
    """Give every pixel that is not > 0 (the inter-slice gaps among them) the BADOTHER bit;
    returns their number."""
    nonpos = ~(master.data > 0)
    master.dq[nonpos] |= DQ_BADOTHER
    return int(nonpos.sum())


def slice_qc(master: CcdImage, mask: np.ndarray, nslice: int) -> QcCards:
    """QC FLAT MASTER SLICEj MEAN/STDEV (count): unflagged pixels of each slice in the
    2·SLICE_QC_HALFROWS rows around the CCD centre (``mask`` from
    :func:`recipes.algorithms.tracing.slice_mask`, slices 1..nslice)."""
    qc: QcCards = []
    ny = master.data.shape[0]
    rows = slice(max(ny // 2 - SLICE_QC_HALFROWS, 0), ny // 2 + SLICE_QC_HALFROWS)
    for s in range(1, nslice + 1):
        sel = (mask[rows] == s) & (master.dq[rows] == 0)
        vals = master.data[rows][sel]
        mean = float(vals.mean(dtype=np.float64)) if vals.size else 0.0
        stdev = float(vals.std(dtype=np.float64)) if vals.size else 0.0
        qc.append((f"ESO QC FLAT MASTER SLICE{s} MEAN", mean, "[count]"))
        qc.append((f"ESO QC FLAT MASTER SLICE{s} STDEV", stdev, "[count]"))
    return qc


def normalize_flat(master: CcdImage, where: str) -> None:
    """Divide DATA by the mean of the whole CCD, gaps included (STAT by its square), as
    the DRS does; RecipeError naming ``where`` when that mean is not positive."""
    mean = float(master.data.mean(dtype=np.float64))
    if not mean > 0:
        raise RecipeError(f"{where}: master flat mean is {mean}, cannot normalise")
    master.data /= np.float32(mean)
    master.stat /= np.float32(mean * mean)


def trace_qc(trace: Trace, shape: tuple[int, int]) -> QcCards:
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
    qc: QcCards = []
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
