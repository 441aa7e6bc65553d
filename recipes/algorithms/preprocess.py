"""Shared CCD preprocessing (the DRS ``muse_basicproc`` chain, up to combination).

For one IFU of one raw exposure (:class:`recipes.algorithms.rawccd.RawCcd`, read once as
uint16, with its port geometry and the BADPIX_TABLE as a DQ map):

1. overscan statistics and correction per port (:mod:`recipes.algorithms.overscan`);
2. saturation (raw > 65500 adu → bit 12) into DQ; trimming to the active area,
   subtraction of a MASTER_BIAS (adu), conversion adu → count with the per-port
   ``ESO DET OUTn GAIN`` (when the result is wanted in count), variance ``RON²``
   (+ Poisson term in count²) and an exposure-time scale (:func:`prepare`,
   :func:`preprocess_image`);
3. after the combination, an optional MASTER_DARK scaled to the exposure time
   (:func:`subtract_dark`).

Step 2 runs in one numba pass (:mod:`recipes.kernels.overscan` for one image;
:func:`recipes.kernels.combine.combine_raw` for a stack), so a stack of N exposures is
never held as float images: :func:`combine_frames` corrects each raw value inside the
combination kernel, and memory is the uint16 raw stack plus the outputs.
Units: adu and adu² before gain conversion, count (= e-) and count² after. Arrays 0-based
``[y, x]`` in the trimmed image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recipes.base import RecipeError
from recipes.algorithms.instrument import Quadrant, trimmed_shape
from recipes.algorithms.overscan import OverscanResult, OverscanSpec, overscan_correction
from recipes.algorithms.rawccd import STACK_PAD, RawCcd
from recipes.io import CcdImage, read_image_product, read_primary_header
from recipes.kernels.combine_raw import combine_raw
from recipes.kernels.overscan import preprocess_rows
from recipes.provenance import recorded_params

#: Euro3D DQ bits used here (muse_quality.h).
DQ_HOTPIXEL = 1 << 8
DQ_DARKPIXEL = 1 << 9
DQ_SATURATED = 1 << 12


# --------------------------------------------------------------------------------------
# Trimming, bias, gain, variance; combination fused with them
# --------------------------------------------------------------------------------------


def index_maps(quadrants: list[Quadrant]) -> tuple[np.ndarray, ...]:
    """``(rowmap, colmap, qrow, qcol, qindex)`` of the trimmed image (see kernels.overscan)."""
    ny, nx = trimmed_shape(quadrants)
    rowmap = np.full(ny, -1, dtype=np.int64)
    colmap = np.full(nx, -1, dtype=np.int64)
    qrow = np.zeros(ny, dtype=np.int64)
    qcol = np.zeros(nx, dtype=np.int64)
    qindex = np.zeros((2, 2), dtype=np.int64)
    for i, q in enumerate(quadrants):
        rows, cols = q.trimmed
        raw_rows = np.arange(q.data[0].start, q.data[0].stop)
        raw_cols = np.arange(q.data[1].start, q.data[1].stop)
        # ports in one column (row) of the CCD must read the same raw columns (rows)
        for target, index, values in ((rowmap, rows, raw_rows), (colmap, cols, raw_cols)):
            if np.any((target[index] >= 0) & (target[index] != values)):
                raise RecipeError(f"port {q.out}: data section does not line up with the other ports")
            target[index] = values
        qrow[rows] = int(q.y_flip)
        qcol[cols] = int(q.x_flip)
        qindex[int(q.y_flip), int(q.x_flip)] = i
    return rowmap, colmap, qrow, qcol, qindex


@dataclass
class Preparation:
    """How to turn one :class:`RawCcd` into a trimmed image.

    ``gain`` per port (1 for a result in adu, GAIN count/adu for count), ``var0`` the
    read-noise variance per port in adu², ``poisson`` adds the photon noise (count only),
    ``scale`` multiplies the result (e.g. exposure-time normalisation).
    """

    ccd: RawCcd
    overscan: OverscanResult
    gain: np.ndarray
    var0: np.ndarray
    poisson: bool = False
    scale: float = 1.0


def header_gain_ron(ccd: RawCcd) -> tuple[np.ndarray, np.ndarray]:
    """Per port ``ESO DET OUTn GAIN`` (count/adu) and ``RON`` (e-); RecipeError without
    GAIN; a missing RON counts as 1 e- (as the DRS assumes)."""
    gains = np.array([q.gain for q in ccd.quadrants], dtype=np.float64)
    rons = np.array([q.ron for q in ccd.quadrants], dtype=np.float64)
    bad = [q.out for q, g in zip(ccd.quadrants, gains) if not np.isfinite(g) or g <= 0]
    if bad:
        raise RecipeError(f"{ccd.where}: ESO DET OUT{bad[0]} GAIN is missing or not positive")
    rons = np.where(np.isfinite(rons) & (rons > 0), rons, 1.0)
    return gains, rons


def prepare(
    ccd: RawCcd,
    spec: OverscanSpec,
    unit: str,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    reference_name: str = "the first input",
    ron_adu: np.ndarray | None = None,
    scale: float = 1.0,
    overscan: OverscanResult | None = None,
) -> Preparation:
    """Overscan correction plus the conversion settings of one exposure.

    ``unit`` is ``"adu"`` (no gain conversion, no Poisson term: biases) or ``"count"``.
    ``ron_adu`` overrides the header read noise (per port, adu), e.g. the RON measured
    by muse_bias. ``overscan`` reuses an already computed correction.
    """
    if unit not in ("adu", "count"):
        raise ValueError(f"unit must be adu or count, not {unit!r}")
    if overscan is None:
        overscan = overscan_correction(ccd, spec, reference, reference_name)
    nq = len(ccd.quadrants)
    if unit == "count" or ron_adu is None:
        gains, rons = header_gain_ron(ccd)
    else:
        gains, rons = np.ones(nq), np.ones(nq)
    var0 = (np.asarray(ron_adu, dtype=np.float64) if ron_adu is not None else rons / gains) ** 2
    return Preparation(
        ccd=ccd, overscan=overscan, gain=gains if unit == "count" else np.ones(nq),
        var0=var0, poisson=unit == "count", scale=float(scale),
    )  # fmt: skip


def _bias_arrays(bias: CcdImage | None, shape: tuple[int, int], name: str):
    if bias is None:
        return None
    if bias.data.shape != shape:
        raise RecipeError(f"{name}: MASTER_BIAS is {bias.data.shape[::-1]} pixels, raw data trim to {shape[::-1]}")
    return (
        np.ascontiguousarray(bias.data, dtype=np.float32),
        np.ascontiguousarray(bias.stat, dtype=np.float32),
        np.ascontiguousarray(bias.dq, dtype=np.int32),
    )


def preprocess_image(
    prep: Preparation,
    bias: CcdImage | None = None,
    static_dq: np.ndarray | None = None,
) -> CcdImage:
    """The whole trimmed, corrected image of one exposure (float32/int32/float32)."""
    ccd = prep.ccd
    shape = ccd.shape
    out = (np.empty(shape, np.float32), np.empty(shape, np.int32), np.empty(shape, np.float32))
    preprocess_rows(
        ccd.image, index_maps(ccd.quadrants), prep.overscan.correction, prep.gain, prep.var0,
        prep.poisson, prep.scale, 0, out, _bias_arrays(bias, shape, ccd.where), static_dq,
    )  # fmt: skip
    return CcdImage(out[0], out[1], out[2], ccd.header.copy())


def _raw_stack(preps: list[Preparation]) -> np.ndarray:
    """The ``[n, NAXIS2, NAXIS1 + pad]`` uint16 stack behind the inputs' images: the one
    :func:`recipes.algorithms.rawccd.load_raw_stack` filled when they are its planes,
    else a new padded copy."""
    images = [p.ccd.image for p in preps]
    base = images[0].base
    if (
        isinstance(base, np.ndarray) and base.ndim == 3 and base.shape[0] == len(images)
        and base.dtype == np.uint16
        and all(img.base is base and np.shares_memory(img, base[i]) for i, img in enumerate(images))
    ):  # fmt: skip
        return base
    ny, nx = images[0].shape
    stack = np.empty((len(images), ny, nx + STACK_PAD), dtype=np.uint16)
    for i, img in enumerate(images):
        stack[i, :, :nx] = img
    return stack


def combine_frames(
    preps: list[Preparation],
    method: str,
    nlow: int = 1,
    nhigh: int = 1,
    nkeep: int = 1,
    lsigma: float = 3.0,
    hsigma: float = 3.0,
    bias: CcdImage | None = None,
    static_dq: np.ndarray | None = None,
) -> CcdImage:
    """Preprocess and combine N exposures of one IFU (numba, one pass, parallel over rows).

    Each raw pixel is corrected (overscan, bias, gain, scale; variance and DQ as in
    :func:`preprocess_image`) inside the combination kernel, so no float copy of the
    stack is ever made: memory is the uint16 raw stack (read once, see
    :func:`recipes.algorithms.rawccd.load_raw_stack`) plus the three output images,
    whatever the image size.
    Returns the combined image with the header of the first input.
    """
    if not preps:
        raise ValueError("nothing to combine")
    first = preps[0].ccd
    shape = first.shape
    for prep in preps[1:]:
        if prep.ccd.shape != shape or prep.ccd.image.shape != first.image.shape:
            raise RecipeError(f"{prep.ccd.where}: image size differs from {first.where}")
    maps = index_maps(first.quadrants)
    out = combine_raw(
        _raw_stack(preps), maps,
        np.stack([p.overscan.correction for p in preps]), np.stack([p.gain for p in preps]),
        np.stack([p.var0 for p in preps]), preps[0].poisson, np.array([p.scale for p in preps]),
        method, nlow, nhigh, nkeep, lsigma, hsigma, _bias_arrays(bias, shape, first.where), static_dq,
    )  # fmt: skip
    return CcdImage(out[0], out[1], out[2], first.header.copy())


# --------------------------------------------------------------------------------------
# MASTER_DARK on a combined image
# --------------------------------------------------------------------------------------


def subtract_dark(master: CcdImage, dark_path: Path, ifu: int, exptime: float) -> None:
    """Subtract a MASTER_DARK (count per its ``normalize`` seconds) scaled to ``exptime`` [s],
    in place: DATA (count), STAT (count²) and DQ of ``master`` (one IFU, trimmed).

    The unit is the ``normalize`` recorded in the dark's provenance (3600 s when absent
    or not positive); RecipeError naming the dark when its shape differs."""
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
