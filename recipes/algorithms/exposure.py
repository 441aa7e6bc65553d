"""Basic CCD processing of a science-like exposure, one IFU at a time (muse_scibasic step 1,
shared with muse_twilight).

:func:`reduce_exposure`: overscan (the MASTER_BIAS levels are the reference), trim,
MASTER_BIAS subtraction, adu → count with each port's GAIN, variance RON² + Poisson,
BADPIX_TABLE and saturation into DQ (:mod:`recipes.algorithms.preprocess`); with
``combine`` ≠ none several exposures combined; optional ``cr=dcr`` cosmic-ray flagging
(:func:`flag_cosmics`); optional MASTER_DARK (scaled to EXPTIME); division by MASTER_FLAT
(:func:`divide_flat`, variance propagated, its DQ OR-ed in). :func:`check_calib_modes`
refuses calibrations of another instrument mode.

Units: data count, stat count²; arrays ``[y, x]`` 0-based on the trimmed CCD.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import CcdImage, read_badpix_table, read_image_product, read_primary_header
from recipes.kernels.flatfield import divide_flat as divide_flat_kernel
from recipes.algorithms.ccdinputs import combine_options, exposure_factors
from recipes.algorithms.overscan import OverscanSpec, bias_reference
from recipes.algorithms.preprocess import DQ_SATURATED, combine_frames, prepare, preprocess_image, subtract_dark
from recipes.algorithms.rawccd import badpix_mask, load_raw_ccd

DQ_COSMICRAY = 1 << 5
DQ_BADOTHER = 1 << 14
_MAD = 1.482602218505602


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
    MASTER_FLAT when the caller has read it already (read here otherwise).

    ``params`` are the typed parameters of the calling recipe: the overscan and combine
    ones, and optionally ``scale`` (default true) and ``cr`` with ``xbox``, ``ybox``,
    ``passes``, ``thres`` (muse_scibasic only)."""
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
        ncr = flag_cosmics(image, params["xbox"], params["ybox"], params["passes"], params["thres"])
        qc.append(("ESO QC SCIBASIC NCR", ncr, "pixels flagged as cosmic rays (cr=dcr)"))
    if calibs.get("MASTER_DARK") is not None:
        subtract_dark(image, calibs["MASTER_DARK"], ifu, float(primaries[0].get("EXPTIME", 0.0)))
    if flat is None:
        flat = read_image_product(calibs["MASTER_FLAT"], ifu)
    divide_flat(image, flat, ccds[0].where)
    image.header = ccds[0].header.copy()
    return image, qc
