"""muse_scibasic: CCD-level science reduction → pixel tables (recipes.md §3.7).

Per raw exposure (OBJECT, STD, SKY or ASTROMETRY) and IFU, the recipe reads as its steps:

1. basic processing (:mod:`recipes.preprocess`): overscan (the MASTER_BIAS levels are the
   reference), trim, MASTER_BIAS subtraction, adu → count with each port's GAIN, variance
   RON² + Poisson, BADPIX_TABLE and saturation into DQ; optional ``cr=dcr`` cosmic-ray
   flagging (:func:`flag_cosmics`); optional MASTER_DARK (scaled to EXPTIME); division by
   MASTER_FLAT (variance propagated, its DQ OR-ed in); with ``saveimage`` the result is
   ``<TAG>_RED`` (count);
2. the pixel table (:func:`recipes.pixtable_build.pixtable_for_ifu`): TRACE_TABLE edges,
   WAVECAL_TABLE λ(x, y), GEOMETRY_TABLE positions, origin bit-packing;
3. sky-line zero point (``skylines``, ``skyhalfwidth``, ``skybinsize``, ``skyreject``):
   Gaussian fits to a finely binned spectrum around each line, the weighted mean offset
   is added to ``lambda`` and recorded as ``ESO QC SCIBASIC LAMBDA SHIFT`` [Å];
4. ``crop``: keep the useful range of the instrument mode (and flag the NaD notch of the
   AO modes with NOTCH_NAD);
5. ILLUM (optional): divide each slice by its normalised median flux in the attached
   flat (``ESO DRS MUSE PIXTABLE ILLUMnn``);
6. TWILIGHT_CUBE (optional): divide every pixel by the twilight cube at (xpos, ypos, λ);
7. attach PIXTABLE_FLAT_FIELD (mean master-flat spectrum on a 1.25 Å grid) and write
   ``PIXTABLE_<TAG>_nnnn-ii.fits`` (one file per exposure nnnn and IFU ii, the DRS layout).

Units: data count, stat count², λ Å (air), xpos/ypos field pixels (0.2").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from .base import Calib, Param, Product, Recipe, RecipeError
from .dark import bias_reference, check_bias_overscan
from .flat import exposure_factors, subtract_dark, trace_from_table
from .io import (
    CcdImage,
    ProductWriter,
    chan_name,
    hkey,
    prefetch_raw_ifu,
    read_badpix_table,
    read_image_product,
    read_primary_header,
    read_table_product,
)
from .kernels.flatfield import divide_flat as divide_flat_kernel
from .kernels.pixtable_build import compact_rows, gather_pixels, good_lambda_range, rows_near, shift_lambda
from .lsfmodel import read_wavecal_table
from .pixtable import PixTable, pkey, unpack_origin
from .pixtable_build import IfuGeometry, flat_field_spectrum, pixtable_for_ifu, read_geometry, slice_xoffsets
from .preprocess import (
    COMBINE_PARAMS,
    DQ_SATURATED,
    MERGE_PARAM,
    NIFU_PARAM,
    OVERSCAN_PARAMS,
    OverscanSpec,
    badpix_mask,
    check_modes,
    combine_frames,
    combine_options,
    load_raw_ccd,
    optional_calib,
    prepare,
    preprocess_image,
    select_ifus,
)
from .provenance import add_qc, product_header
from .registry import register
from .tracing import Trace, slice_mask

logger = logging.getLogger(__name__)

RAW_TAGS = ("OBJECT", "STD", "SKY", "ASTROMETRY")
DQ_COSMICRAY = 1 << 5
DQ_BADOTHER = 1 << 14
DQ_NOTCH_NAD = 1 << 27
_MAD = 1.482602218505602
#: A sky-line fit counts only when its amplitude exceeds this many standard errors.
MIN_LINE_SIGNIFICANCE = 10.0

#: Useful wavelength range per instrument mode (Å), recipes.md §3.7 ``crop``.
CROP_NOMINAL = (4750.0, 9350.0)
CROP_AO_NOMINAL = (4700.0, 9350.0)
CROP_EXTENDED = (4600.0, 9350.0)
#: Range blocked by the sodium notch filter of the AO modes (Å), flagged NOTCH_NAD.
#: Values of the DRS constants as we recall them (kMuseNa2LambdaMin/Max for WFM-AO and
#: the NFM notch); not verified against a DRS run (recipes.md §7).
NAD_NOTCH_WFM = (5755.0, 6008.0)
NAD_NOTCH_NFM = (5780.0, 6050.0)


# --------------------------------------------------------------------------------------
# Parameters and inputs


def crop_range(mode: str) -> tuple[float, float]:
    """Useful λ range of an ``ESO INS MODE`` (WFM-NOAO-N, WFM-AO-E, NFM-AO-N ...)."""
    m = mode.strip().upper()
    if m.endswith("-E"):
        return CROP_EXTENDED
    if m.startswith("WFM-AO"):
        return CROP_AO_NOMINAL
    return CROP_NOMINAL


def notch_range(mode: str) -> tuple[float, float] | None:
    """NaD notch range of the AO modes, None otherwise."""
    m = mode.strip().upper()
    if m.startswith("NFM"):
        return NAD_NOTCH_NFM
    if m.startswith("WFM-AO"):
        return NAD_NOTCH_WFM
    return None


def parse_skylines(text: str) -> list[float]:
    """``"5577.339,6300.304"`` → wavelengths (Å); ``"none"`` or empty → []."""
    t = str(text).strip()
    if not t or t.lower() == "none":
        return []
    try:
        values = [float(v) for v in t.split(",") if v.strip()]
    except ValueError:
        raise RecipeError(
            f"parameter skylines={text!r}: must be comma-separated wavelengths in Angstrom or none"
        ) from None
    if any(not v > 0 for v in values):
        raise RecipeError(f"parameter skylines={text!r}: wavelengths must be positive")
    return values


def parse_skyreject(text: str) -> tuple[float, float, int]:
    """``"hi,lo,niter"`` → (hi, lo, niter) sigma clipping of the sky-line spectrum."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        hi, lo = float(parts[0]), float(parts[1])
        niter = int(float(parts[2])) if len(parts) > 2 and parts[2] else 1
    except (ValueError, IndexError):
        raise RecipeError(f"parameter skyreject={text!r}: must be 'hi,lo,niter', e.g. 15.,15.,1") from None
    if hi <= 0 or lo <= 0 or niter < 0 or len(parts) > 3:
        raise RecipeError(f"parameter skyreject={text!r}: sigmas must be > 0 and niter >= 0")
    return hi, lo, niter


def check_calib_modes(raw: Path, primary: fits.Header, calibs: Mapping[str, Path | None]) -> None:
    """Mode-dependent calibrations must come from the raw data's ``ESO INS MODE``."""
    mode = primary.get("ESO INS MODE")
    if mode is None:
        return
    for tag in ("MASTER_FLAT", "TRACE_TABLE", "WAVECAL_TABLE", "TWILIGHT_CUBE", "ILLUM"):
        path = calibs.get(tag)
        if path is None:
            continue
        other = read_primary_header(path).get("ESO INS MODE")
        if other is not None and str(other).strip() != str(mode).strip():
            raise RecipeError(
                f"{path}: {tag} is for INS MODE {other!r}, but {raw.name} was taken in {mode!r}"
            )


# --------------------------------------------------------------------------------------
# CCD-level steps


def divide_flat(image: CcdImage, flat: CcdImage, where: str) -> None:
    """``image / flat`` in place; var = (var + d²·var_f/f²)/f²; pixels with a non-positive
    flat become 0 and BADOTHER; the flat's DQ is OR-ed in."""
    if flat.data.shape != image.data.shape:
        raise RecipeError(f"{where}: MASTER_FLAT is {flat.data.shape[::-1]} pixels, the data {image.data.shape[::-1]}")
    pairs = ((image.data, np.float32), (image.dq, np.int32), (image.stat, np.float32),
             (flat.data, np.float32), (flat.dq, np.int32), (flat.stat, np.float32))  # fmt: skip
    arrays = [np.ascontiguousarray(a, dtype=t) for a, t in pairs]
    # one parallel pass in place (recipes.kernels.flatfield): no full-size temporaries
    divide_flat_kernel(*arrays, DQ_BADOTHER)
    image.data, image.dq, image.stat = arrays[:3]


def flag_cosmics(image: CcdImage, xbox: int, ybox: int, passes: int, thres: float) -> int:
    """Quick-look cosmic-ray flagging (``cr=dcr``), returns the number of pixels flagged.

    A cosmic ray is sharper than both the spectral LSF (along y) and the slice profile
    (along x): its excess over the larger of the 3-pixel median along x and the 5-pixel
    median along y, in units of the pixel's noise (√STAT), exceeds ``thres`` times the
    robust σ (at least 1) of that normalised excess in its ``xbox`` × ``ybox`` box. Flagged pixels get
    COSMICRAY and their median replaces them for the next of ``passes`` passes (as DCR
    does); the data keep their values.
    """
    from scipy.ndimage import median_filter

    work = np.where(image.dq == 0, image.data, np.nan).astype(np.float32)
    noise = np.sqrt(np.maximum(image.stat, 1e-12)).astype(np.float32)
    ny, nx = work.shape
    total = 0
    for _ in range(max(passes, 1)):
        valid = np.isfinite(work)
        filled = np.where(valid, work, 0.0)
        mx = median_filter(filled, size=(1, 3), mode="nearest")
        my = median_filter(filled, size=(5, 1), mode="nearest")
        model = np.maximum(mx, my)
        z = (filled - model) / noise
        sigma = np.full_like(z, np.inf)
        for y0 in range(0, ny, ybox):
            for x0 in range(0, nx, xbox):
                box = (slice(y0, y0 + ybox), slice(x0, x0 + xbox))
                # pixels that are their own median give z = 0 exactly; they would
                # shrink the MAD to nothing, so the noise is taken from the others
                vals = z[box][valid[box] & (z[box] != 0)]
                if vals.size >= 5:
                    med = np.median(vals)
                    sigma[box] = max(_MAD * float(np.median(np.abs(vals - med))), 1.0)
        hits = valid & (z > thres * sigma)
        n = int(hits.sum())
        if n == 0:
            break
        image.dq[hits] |= DQ_COSMICRAY
        work[hits] = model[hits]
        total += n
    return total


def reduce_exposure(
    paths: list[Path],
    primaries: list[fits.Header],
    ifu: int,
    params: Mapping,
    calibs: Mapping[str, Path | None],
    flat: CcdImage | None = None,
) -> tuple[CcdImage, list[tuple[str, object, str]]]:
    """Basic processing of one exposure (or, with ``combine`` ≠ none, several combined)
    of one IFU: the flat-fielded image (count) and its QC. ``flat``: this IFU of
    MASTER_FLAT when the caller has read it already (read here otherwise)."""
    spec = OverscanSpec.from_params(params)
    bias_path = calibs["MASTER_BIAS"]
    ccds = [load_raw_ccd(p, ifu, h) for p, h in zip(paths, primaries)]
    quadrants = ccds[0].quadrants
    bias = read_image_product(bias_path, ifu)
    reference = bias_reference(bias, quadrants, bias_path, spec)
    badpix = calibs.get("BADPIX_TABLE")
    static_dq = badpix_mask(quadrants, *read_badpix_table(badpix, ifu)) if badpix is not None else None
    if bias.data.shape != ccds[0].shape:
        raise RecipeError(
            f"{ccds[0].where}: raw data trim to {ccds[0].shape[::-1]} pixels but MASTER_BIAS "
            f"{bias_path.name} is {bias.data.shape[::-1]}; wrong detector geometry?"
        )
    factors = np.ones(len(ccds))
    if len(ccds) > 1 and params.get("scale", True):
        factors = exposure_factors(paths, primaries, True)
    preps = [
        prepare(c, spec, "count", reference=reference, reference_name=bias_path.name, scale=f)
        for c, f in zip(ccds, factors)
    ]
    if len(preps) == 1:
        image = preprocess_image(preps[0], bias=bias, static_dq=static_dq)
    else:
        image = combine_frames(preps, bias=bias, static_dq=static_dq, **combine_options(params))
    qc: list[tuple[str, object, str]] = [
        ("ESO QC SCIBASIC NSATURATED", int(((image.dq & DQ_SATURATED) != 0).sum()), "saturated pixels")
    ]
    if params.get("cr") == "dcr":
        ncr = flag_cosmics(
            image, int(params["xbox"]), int(params["ybox"]), int(params["passes"]), float(params["thres"])
        )
        qc.append(("ESO QC SCIBASIC NCR", ncr, "pixels flagged as cosmic rays (cr=dcr)"))
    if calibs.get("MASTER_DARK") is not None:
        subtract_dark(image, calibs["MASTER_DARK"], ifu, float(primaries[0].get("EXPTIME", 0.0)))
    if flat is None:
        flat = read_image_product(calibs["MASTER_FLAT"], ifu)
    divide_flat(image, flat, ccds[0].where)
    image.header = ccds[0].header.copy()
    return image, qc


# --------------------------------------------------------------------------------------
# Pixel-table steps


def _gauss(x, amp, centre, sigma, bg):
    return amp * np.exp(-0.5 * ((x - centre) / sigma) ** 2) + bg


def fit_sky_line(
    lam: np.ndarray, data: np.ndarray, line: float, halfwidth: float, binsize: float, reject: tuple[float, float, int]
) -> tuple[float, float] | None:
    """Centre (Å) and its error of one sky line in pixel-table rows (good rows only), or None.

    The rows within ±``halfwidth`` form a spectrum in ``binsize`` bins (bin mean after
    ``reject`` = (hi, lo, niter) σ-clipping within each bin); a Gaussian plus constant is
    fitted to it.
    """
    from scipy.optimize import curve_fit

    lo_edge = line - halfwidth
    sel = np.abs(lam - line) < halfwidth
    if sel.sum() < 20:
        return None
    lsel = lam[sel].astype(np.float64)
    dsel = data[sel].astype(np.float64)
    nbin = int(np.ceil(2 * halfwidth / binsize))
    idx = np.clip(((lsel - lo_edge) / binsize).astype(np.int64), 0, nbin - 1)
    keep = np.ones(idx.size, dtype=bool)
    hi, lo, niter = reject
    for _ in range(niter + 1):
        n = np.bincount(idx[keep], minlength=nbin)
        s1 = np.bincount(idx[keep], weights=dsel[keep], minlength=nbin)
        s2 = np.bincount(idx[keep], weights=dsel[keep] ** 2, minlength=nbin)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        if _ == niter:
            break
        dev = dsel - mean[idx]
        new = keep & (dev <= hi * std[idx]) & (dev >= -lo * std[idx])
        if new.sum() == keep.sum():
            break
        keep = new
    good = n > 0
    if good.sum() < 10:
        return None
    x = lo_edge + (np.arange(nbin) + 0.5) * binsize
    x, y = x[good], mean[good]
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(n[good] > 1, std[good] / np.sqrt(n[good]), np.nan)
    err = np.where(np.isfinite(err) & (err > 0), err, np.nanmedian(err) if np.isfinite(err).any() else 1.0)
    bg0 = float(np.median(y))
    central = np.abs(x - line) < 0.5 * halfwidth
    peak = int(np.argmax(np.where(central, y, -np.inf)))
    p0 = (float(y[peak] - bg0), float(x[peak]), 1.0, bg0)
    try:
        popt, pcov = curve_fit(_gauss, x, y, p0=p0, sigma=err, absolute_sigma=False, maxfev=2000)
    except (RuntimeError, ValueError):
        return None
    amp, centre, sigma, _ = popt
    errs = np.sqrt(np.diag(pcov)) if np.all(np.isfinite(pcov)) else np.full(4, np.inf)
    cerr = float(errs[1])
    # a line, not a noise bump: significant amplitude, width of an LSF, near the catalogue
    plausible = amp > MIN_LINE_SIGNIFICANCE * errs[0] and abs(centre - line) < 0.5 * halfwidth
    plausible = plausible and 0.1 < abs(sigma) < 0.5 * halfwidth
    if not (plausible and np.isfinite(cerr) and cerr > 0):
        return None
    return float(centre), cerr


def lambda_shift(pt: PixTable, lines: list[float], halfwidth: float, binsize: float,
                 reject: tuple[float, float, int]) -> tuple[float, list[tuple[float, float, float]]]:  # fmt: skip
    """Weighted mean offset catalogue − measured (Å) of the sky lines inside the table's
    range, and per line (catalogue λ, offset, error). 0 when no line could be measured."""
    # one pass per line over the columns (numba), no 13 M-row masks or copies per IFU
    ngood, lmin, lmax = good_lambda_range(pt.lam, pt.data, pt.dq)
    if ngood == 0:
        return 0.0, []
    found = []
    for line in lines:
        if line - halfwidth < lmin or line + halfwidth > lmax:
            continue
        fit = fit_sky_line(*rows_near(pt.lam, pt.data, pt.dq, line, halfwidth), line, halfwidth, binsize, reject)
        if fit is not None:
            found.append((line, line - fit[0], fit[1]))
    if not found:
        return 0.0, []
    w = np.array([1.0 / f[2] ** 2 for f in found])
    shift = float(np.sum(w * np.array([f[1] for f in found])) / w.sum())
    return shift, found


def slice_illumination(illum: CcdImage, trace: Trace) -> np.ndarray:
    """Per-slice median of the flat-fielded ILLUM exposure, normalised to their mean (48,)."""
    mask = slice_mask(trace, illum.data.shape)
    good = illum.dq == 0
    med = np.array([
        float(np.median(illum.data[(mask == s) & good])) if ((mask == s) & good).any() else np.nan
        for s in range(1, trace.nslice + 1)
    ])  # fmt: skip
    mean = np.nanmean(med)
    if not np.isfinite(mean) or mean <= 0:
        raise RecipeError("ILLUM exposure has no positive flux inside the slices")
    return med / mean


def apply_per_slice(pt: PixTable, factors: np.ndarray) -> None:
    """Divide data (and stat by the square) of each slice by ``factors[slice − 1]``."""
    _, slice_, _, _ = unpack_origin(pt.origin)
    f = np.asarray(factors, dtype=np.float64)
    f = np.where(np.isfinite(f) & (f > 0), f, 1.0).astype(np.float32)[slice_ - 1]
    pt.data[...] = pt.data / f
    pt.stat[...] = pt.stat / (f * f)


def read_twilight_cube(path: Path):
    """``(cube [z, y, x] float32, CubeGrid)`` of a TWILIGHT_CUBE (first 3-D image, its WCS
    in field pixels: CTYPE1/2 PIXEL, CD or CDELT, linear λ axis)."""
    from .cube import CubeGrid

    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if h.data is not None and h.data.ndim == 3), None)
            if hdu is None:
                raise RecipeError(f"{path}: TWILIGHT_CUBE has no 3-D image")
            h = hdu.header
            cube = np.array(hdu.data, dtype=np.float32)

            def cd(i, j):
                key = f"CD{i}_{j}"
                if key in h:
                    return float(h[key])
                return float(h.get(f"CDELT{i}", 1.0)) if i == j else 0.0

            nz, ny, nx = cube.shape
            grid = CubeGrid(
                nx, ny, nz, float(h.get("CRPIX1", 1.0)), float(h.get("CRPIX2", 1.0)),
                float(h.get("CRVAL1", 0.0)), float(h.get("CRVAL2", 0.0)), (cd(1, 1), cd(1, 2), cd(2, 1), cd(2, 2)),
                float(h.get("CRPIX3", 1.0)), float(h["CRVAL3"]), cd(3, 3), celestial=False,
            )  # fmt: skip
    except RecipeError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RecipeError(f"{path}: cannot read TWILIGHT_CUBE ({str(exc).splitlines()[0]})") from None
    if str(h.get("CTYPE1", "PIXEL")).startswith(("RA", "DEC")):
        raise RecipeError(f"{path}: TWILIGHT_CUBE must have pixel axes (CTYPE1 PIXEL), not {h['CTYPE1']}")
    return cube, grid


def apply_twilight(pt: PixTable, cube: np.ndarray, grid, chunk: int = 4_000_000) -> int:
    """Divide each row by the twilight cube at its (xpos, ypos) (nearest spaxel, clipped to
    the cube) and λ (linear between planes). Rows where the cube is not positive are left
    unchanged and counted (returned). Works in blocks of ``chunk`` rows (bounded memory)."""
    nbad = 0
    for start in range(0, pt.nrows, chunk):
        rows = slice(start, min(start + chunk, pt.nrows))
        px, py = grid.world_to_pixel(pt.xpos[rows], pt.ypos[rows])
        ix = np.clip(np.rint(px), 0, grid.nx - 1).astype(np.int64)
        iy = np.clip(np.rint(py), 0, grid.ny - 1).astype(np.int64)
        z = np.clip(grid.plane_of(pt.lam[rows]), 0, grid.nz - 1)
        z0 = np.floor(z).astype(np.int64)
        z1 = np.minimum(z0 + 1, grid.nz - 1)
        t = (z - z0).astype(np.float32)
        value = (1 - t) * cube[z0, iy, ix] + t * cube[z1, iy, ix]
        ok = np.isfinite(value) & (value > 0)
        f = np.where(ok, value, 1.0).astype(np.float32)
        pt.data[rows] /= f
        pt.stat[rows] /= f * f
        nbad += int((~ok).sum())
    return nbad


def pixtable_steps(
    image: CcdImage,
    ifu: int,
    params: Mapping,
    header: fits.Header,
    tables: tuple[Trace, dict[int, np.ndarray], IfuGeometry],
    flat: CcdImage,
    illum: CcdImage | None,
    twilight,
) -> tuple[PixTable, list[tuple[str, object, str]]]:
    """Steps 2–7 for one IFU: the finished pixel table and its QC."""
    trace, wavecal, geometry = tables
    pt = pixtable_for_ifu(image, ifu, trace, wavecal, geometry, header)
    # the flat at the table's pixels, for its spectrum (step 7): same trace, so the same
    # rows; λ before the sky-line shift, as the flat has no sky lines
    if flat.data.shape != image.data.shape:
        raise RecipeError(
            f"IFU {ifu}: MASTER_FLAT is {flat.data.shape[::-1]} pixels, the data {image.data.shape[::-1]}"
        )
    flat_data, flat_dq = gather_pixels(flat.data, flat.dq, pt.origin, slice_xoffsets(trace, image.data.shape))
    flat_lam = pt.lam
    qc: list[tuple[str, object, str]] = []
    # 3. sky-line zero point
    lines = parse_skylines(str(params["skylines"]))
    shift = 0.0
    if lines:
        shift, found = lambda_shift(pt, lines, float(params["skyhalfwidth"]), float(params["skybinsize"]),
                                    parse_skyreject(str(params["skyreject"])))  # fmt: skip
        for line, off, err in found:
            logger.info("IFU %d: sky line %.3f A offset %+.4f +- %.4f A", ifu, line, off, err)
        if not found:
            logger.warning("IFU %d: none of the sky lines %s could be measured; no wavelength shift", ifu, lines)
        if shift != 0.0:
            flat_lam = pt.lam.copy()
            shift_lambda(pt.lam, shift)  # in float64, rounded once to float32
    qc.append(("ESO QC SCIBASIC LAMBDA SHIFT", float(shift), "[Angstrom]"))
    # 4. crop by instrument mode
    mode = str(header.get("ESO INS MODE", "WFM-NOAO-N"))
    flat_cols = {"lambda": flat_lam, "data": flat_data, "dq": flat_dq}  # all the spectrum needs
    if params["crop"]:
        lo, hi = crop_range(mode)
        keep = (pt.lam >= lo) & (pt.lam <= hi)
        if not keep.all():
            # in place, column by column: no second full-size table (13 M rows per IFU)
            same = flat_lam is pt.lam
            for name in list(pt.columns):
                pt.columns[name] = compact_rows(keep, pt.columns[name])
            flat_cols = {k: (pt.lam if k == "lambda" and same else compact_rows(keep, v)) for k, v in flat_cols.items()}
        notch = notch_range(mode)
        if notch is not None:
            pt.dq[(pt.lam >= notch[0]) & (pt.lam <= notch[1])] |= DQ_NOTCH_NAD
        logger.info("IFU %d: %s mode, cropped to %.1f...%.1f A", ifu, mode, lo, hi)
    if pt.nrows == 0:
        raise RecipeError(f"IFU {ifu}: no pixel left after cropping to the {mode} range")
    # 5. ILLUM
    if illum is not None:
        factors = slice_illumination(illum, trace)
        apply_per_slice(pt, factors)
        for s, f in enumerate(factors, start=1):
            pt.header[hkey(pkey(f"ILLUM{s:02d}"))] = float(f)
        pt.header[hkey(pkey("ILLUM MEAN"))] = float(np.nanmean(factors))
        pt.header[hkey(pkey("ILLUM STDEV"))] = float(np.nanstd(factors))
    # 6. TWILIGHT_CUBE
    if twilight is not None:
        nbad = apply_twilight(pt, *twilight)
        if nbad:
            logger.warning("IFU %d: %d pixels outside the positive TWILIGHT_CUBE were not corrected", ifu, nbad)
    # 7. flat-field spectrum
    pt.flat_field = flat_field_spectrum(flat_cols["lambda"], flat_cols["data"], flat_cols["dq"])
    pt.update_limits()
    add_qc(pt.header, qc)
    return pt, qc


# --------------------------------------------------------------------------------------
# The recipe


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


def ifu_tables(calibs: Mapping[str, Path | None], ifu: int) -> tuple[Trace, dict[int, np.ndarray], IfuGeometry]:
    """The TRACE_TABLE, WAVECAL_TABLE and GEOMETRY_TABLE rows of one IFU."""
    trace_path = calibs["TRACE_TABLE"]
    table, _ = read_table_product(trace_path, ifu)
    trace = trace_from_table(table, f"{trace_path}[{chan_name(ifu)}]")
    wavecal = read_wavecal_table(calibs["WAVECAL_TABLE"], ifu)
    geometry = read_geometry(calibs["GEOMETRY_TABLE"], ifu, trace.nslice)
    return trace, wavecal, geometry


def run(frames: Mapping[str, list[Path]], params: Mapping, outdir: Path) -> list[Product]:
    """Write ``PIXTABLE_<TAG>_nnnn-ii.fits`` (and with ``saveimage`` ``<TAG>_RED_nnnn.fits``)
    in ``outdir`` for every raw OBJECT/STD/SKY/ASTROMETRY frame of ``frames``."""
    inputs = _inputs(frames)
    calibs: dict[str, Path | None] = {
        tag: optional_calib(frames, tag)
        for tag in ("MASTER_BIAS", "MASTER_DARK", "MASTER_FLAT", "TRACE_TABLE", "WAVECAL_TABLE", "GEOMETRY_TABLE",
                    "TWILIGHT_CUBE", "BADPIX_TABLE", "ILLUM")
    }  # fmt: skip
    for tag in RECIPE.required_calibs:
        if calibs[tag] is None:
            raise RecipeError(f"muse_scibasic needs a {tag} calibration, none was given")
    if params.get("resample"):
        raise RecipeError("muse_scibasic: resample=true (<TAG>_RESAMPLED) is not implemented in musered; use false")
    OverscanSpec.from_params(params)
    parse_skylines(str(params["skylines"]))
    parse_skyreject(str(params["skyreject"]))
    check_bias_overscan(calibs["MASTER_BIAS"], params)
    paths = [p for p, _ in inputs]
    primaries = [read_primary_header(p) for p in paths]
    for (path, _), primary in zip(inputs, primaries):
        check_calib_modes(path, primary, calibs)
    ifus = select_ifus(paths, int(params.get("nifu", 0)))
    # one group per exposure; with combine != none, one group per tag
    if params.get("combine", "none") != "none":
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
    outdir = Path(outdir)
    products: list[Product] = []
    written: list[Path] = []
    try:
        for number, (tag, members) in enumerate(units, start=1):
            mpaths = [m[0] for m in members]
            mprims = [m[1] for m in members]
            raws = [(p, tag) for p in mpaths] + ([(illum_path, "ILLUM")] if illum_path is not None else [])
            red_writer = None
            if params["saveimage"]:
                red_path = outdir / f"{tag}_RED_{number:04d}.fits"
                written.append(red_path)
                red_header = product_header(f"{tag}_RED", RECIPE.name, params, raws, cal_list, mprims[0])
                red_writer = ProductWriter(red_path, red_header)
            for k, ifu in enumerate(ifus):
                if k + 1 < len(ifus):  # disk reads of the next IFU overlap with this one's work
                    for src in [*mpaths, calibs["MASTER_BIAS"], calibs["MASTER_FLAT"]]:
                        prefetch_raw_ifu(src, ifus[k + 1])
                flat = read_image_product(calibs["MASTER_FLAT"], ifu)  # once per IFU, for all steps
                image, qc = reduce_exposure(mpaths, mprims, ifu, params, calibs, flat)
                if red_writer is not None:
                    add_qc(image.header, qc)
                    red_writer.add_image(ifu, image, "count", "(count)**2")
                illum = None
                if illum_path is not None:
                    illum, _ = reduce_exposure([illum_path], [illum_primary], ifu, params, calibs, flat)
                header = product_header(f"PIXTABLE_{tag}", RECIPE.name, params, raws, cal_list, mprims[0])
                pt, pqc = pixtable_steps(image, ifu, params, header, ifu_tables(calibs, ifu), flat, illum, twilight)
                add_qc(pt.header, qc)
                del image, illum, flat
                path = outdir / f"PIXTABLE_{tag}_{number:04d}-{ifu:02d}.fits"
                written.append(path)
                pt.write(path)
                qcd = {f"{chan_name(ifu)} {k[4:]}": v for k, v, _ in qc + pqc}
                products.append(Product(path, f"PIXTABLE_{tag}", (ifu,), qcd))
                del pt
            if red_writer is not None:
                products.append(Product(red_writer.path, f"{tag}_RED", tuple(ifus), {}))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    return products


RECIPE = register(
    Recipe(
        name="muse_scibasic",
        inputs=RAW_TAGS,
        calibs=(
            Calib("MASTER_BIAS"),
            Calib("MASTER_FLAT"),
            Calib("TRACE_TABLE"),
            Calib("WAVECAL_TABLE"),
            Calib("GEOMETRY_TABLE"),
            Calib("MASTER_DARK", required=False, default_excluded=True),
            Calib("TWILIGHT_CUBE", required=False),
            Calib("BADPIX_TABLE", required=False),
            Calib("ILLUM", required=False),
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
            Param("skylines", str, "5577.339,6300.304", "sky lines [Angstrom] for the wavelength zero-point "
                  "correction (comma-separated); none disables it"),
            Param("skyhalfwidth", float, 5.0, "half-width [Angstrom] of the window around each sky line",
                  minimum=0.1),
            Param("skybinsize", float, 0.1, "bin size [Angstrom] of the spectrum fitted around each sky line",
                  minimum=0.001),
            Param("skyreject", str, "15.,15.,1", "sigma clipping 'hi,lo,niter' of the sky-line spectrum"),
            Param("resample", bool, False, "also save a resampled 2D image (<TAG>_RESAMPLED; not implemented in "
                  "musered: true is refused)"),
            Param("dlambda", float, 1.25, "wavelength step [Angstrom] of the resampled 2D image", minimum=0.001),
            MERGE_PARAM,
        ),  # fmt: skip
        run=run,
        target="exposure",
        min_inputs=1,
        description="Remove the CCD signature of science exposures and turn each IFU into a pixel table.",
        summary_qc=(("lambda shift", "CHAN?? QC SCIBASIC LAMBDA SHIFT"),),
    )
)
