"""Shared CCD preprocessing (the DRS ``muse_basicproc`` chain, up to combination).

For one IFU of one raw exposure (:class:`RawCcd`, read once as uint16):

1. geometry of the four read-out ports from ``ESO DET OUTn ...``
   (:func:`recipes.instrument.detector_geometry`; never a hard-coded size);
2. known bad pixels (BADPIX_TABLE, raw 1-based coordinates) and saturation
   (raw > 65500 adu → bit 12) into DQ;
3. overscan statistics per port (``ovscreject`` = ``dcr``/``fit``/``none``, ``ovscignore``
   columns/rows next to the data excluded) and correction (``overscan`` =
   ``none``/``offset``/``vpoly[:order,frms,fchisq]``, see :func:`overscan_correction`);
4. trimming to the active area, subtraction of a MASTER_BIAS (adu), conversion
   adu → count with the per-port ``ESO DET OUTn GAIN`` (when the result is wanted in
   count), variance ``RON²`` (+ Poisson term in count²) and an exposure-time scale.

Steps 2–4 run in one numba pass (:mod:`recipes.kernels.overscan` for one image;
:func:`recipes.kernels.combine.combine_raw` for a stack), so a stack of N exposures is
never held as float images: :func:`combine_frames` corrects each raw value inside the
combination kernel, and memory is the uint16 raw stack plus the outputs.
Units: adu and adu² before gain conversion, count (= e-) and count² after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from .base import Param, RecipeError
from .instrument import Quadrant, detector_geometry, trimmed_shape
from .io import CcdImage, chan_name, list_ifus, read_primary_header, read_raw_ifu
from .kernels.combine import combine_raw
from .kernels.overscan import preprocess_rows
from .provenance import recorded_params

#: Euro3D DQ bits used here (muse_quality.h).
DQ_HOTPIXEL = 1 << 8
DQ_DARKPIXEL = 1 << 9
DQ_SATURATED = 1 << 12

OVERSCAN_METHODS = ("none", "offset", "vpoly")
OVSCREJECT_METHODS = ("dcr", "fit", "none")
#: vpoly defaults of the DRS (debug log): maximum order, RMS and chi² improvement factors.
VPOLY_DEFAULTS = (15, 1.00001, 1.00001)


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverscanSpec:
    """The overscan parameters: ``overscan`` (parsed), ``ovscreject``, ``ovscsigma``,
    ``ovscignore``. ``order``/``frms``/``fchisq`` only matter for ``vpoly``."""

    method: str = "vpoly"
    order: int = VPOLY_DEFAULTS[0]
    frms: float = VPOLY_DEFAULTS[1]
    fchisq: float = VPOLY_DEFAULTS[2]
    reject: str = "dcr"
    sigma: float = 30.0
    ignore: int = 3

    @classmethod
    def from_params(cls, params) -> OverscanSpec:
        """Build from recipe parameters; RecipeError with a one-line reason if malformed."""
        text = str(params.get("overscan", "vpoly")).strip()
        method, _, suffix = text.partition(":")
        method = method.strip().lower()
        if method not in OVERSCAN_METHODS:
            raise RecipeError(f"parameter overscan={text!r}: must be none, offset or vpoly[:order,frms,fchisq]")
        order, frms, fchisq = VPOLY_DEFAULTS
        if suffix:
            if method != "vpoly":
                raise RecipeError(f"parameter overscan={text!r}: only vpoly takes ':order,frms,fchisq'")
            parts = [p.strip() for p in suffix.split(",")]
            try:
                if len(parts) > 3 or not parts[0]:
                    raise ValueError
                order = int(parts[0])
                frms = float(parts[1]) if len(parts) > 1 else frms
                fchisq = float(parts[2]) if len(parts) > 2 else fchisq
            except ValueError:
                raise RecipeError(f"parameter overscan={text!r}: expected vpoly:order,frms,fchisq") from None
            if order < 0 or frms < 1 or fchisq < 1:
                raise RecipeError(f"parameter overscan={text!r}: order must be >= 0, frms and fchisq >= 1")
        reject = str(params.get("ovscreject", "dcr")).strip().lower()
        if reject not in OVSCREJECT_METHODS:
            raise RecipeError(f"parameter ovscreject={reject!r}: must be dcr, fit or none")
        sigma = float(params.get("ovscsigma", 30.0))
        ignore = int(params.get("ovscignore", 3))
        if sigma <= 0 or ignore < 0:
            raise RecipeError("parameters ovscsigma must be > 0 and ovscignore >= 0")
        return cls(method, order, frms, fchisq, reject, sigma, ignore)


# --------------------------------------------------------------------------------------
# Raw input
# --------------------------------------------------------------------------------------


@dataclass
class RawCcd:
    """One IFU of one raw exposure: the uint16 image (adu) and its headers and geometry."""

    path: Path
    ifu: int
    image: np.ndarray
    header: fits.Header
    primary: fits.Header
    quadrants: list[Quadrant]

    @property
    def where(self) -> str:
        return f"{self.path.name}[{chan_name(self.ifu)}]"

    @property
    def shape(self) -> tuple[int, int]:
        """Trimmed shape ``(ny, nx)``."""
        return trimmed_shape(self.quadrants)

    def setup(self) -> tuple:
        """What must agree between inputs combined together: port layout and read mode."""
        ports = tuple(
            (q.out, q.data, q.trimmed, q.overscan_x, q.overscan_y) for q in self.quadrants
        )
        return (self.image.shape, ports, str(self.primary.get("ESO DET READ CURID", "")))


def load_raw_ccd(
    path: Path, ifu: int, primary: fits.Header | None = None, out: np.ndarray | None = None
) -> RawCcd:
    """Read one IFU of a raw file and its geometry (RecipeError naming the file).

    ``out`` receives the uint16 image (see :func:`load_raw_stack`)."""
    path = Path(path)
    image, header = read_raw_ifu(path, ifu, out)
    if primary is None:
        primary = read_primary_header(path)
    quadrants = detector_geometry(header, where=f"{path}[{chan_name(ifu)}]")
    return RawCcd(path, ifu, image, header, primary, quadrants)


#: Extra columns of padding per plane of a raw stack: planes a multiple of 4 KiB apart
#: alias in the CPU caches when a kernel reads the same pixel of every plane.
STACK_PAD = 32


#: Largest raw stack (bytes) :func:`load_raw_stack` accepts: with the three outputs and
#: the per-thread row buffers this bounds the memory of one IFU's combination.
MAX_STACK_BYTES = 6 * 1024**3


def load_raw_stack(
    paths: list[Path], ifu: int, primaries: list[fits.Header], max_bytes: int = MAX_STACK_BYTES
) -> list[RawCcd]:
    """Read one IFU of several raw files into one uint16 stack (read once, no copies).

    The images are views ``stack[i, :, :NAXIS1]`` of a ``[n, NAXIS2, NAXIS1 + pad]``
    array, the layout :func:`combine_frames` reads fastest (11 full-size frames: 0.4 GB).
    RecipeError naming the file when an image does not have the size of the first one,
    or when the stack would exceed ``max_bytes``.
    """
    first_image, first_header = read_raw_ifu(paths[0], ifu)
    ny, nx = first_image.shape
    need = len(paths) * ny * (nx + STACK_PAD) * 2
    if need > max_bytes:
        raise RecipeError(
            f"{Path(paths[0]).name}...: {len(paths)} raw frames of {chan_name(ifu)} need {need / 1024**3:.1f} GB, "
            f"more than the {max_bytes / 1024**3:.1f} GB allowed for one stack; combine fewer frames"
        )
    stack = np.empty((len(paths), ny, nx + STACK_PAD), dtype=np.uint16)
    stack[0, :, :nx] = first_image
    del first_image
    ccds = []
    for i, (path, primary) in enumerate(zip(paths, primaries)):
        if i == 0:
            where = f"{Path(path)}[{chan_name(ifu)}]"
            quadrants = detector_geometry(first_header, where=where)
            ccds.append(RawCcd(Path(path), ifu, stack[0, :, :nx], first_header, primary, quadrants))
        else:
            ccds.append(load_raw_ccd(path, ifu, primary, out=stack[i, :, :nx]))
    return ccds


def check_compatible(ccds: list[RawCcd]) -> None:
    """All inputs must share INS MODE, DET READ CURID and the port geometry.

    RecipeError naming the first file that differs from the first input.
    """
    first = ccds[0]
    mode = first.primary.get("ESO INS MODE")
    for ccd in ccds[1:]:
        if ccd.primary.get("ESO INS MODE") != mode:
            raise RecipeError(
                f"{ccd.path}: INS MODE {ccd.primary.get('ESO INS MODE')!r} differs from "
                f"{mode!r} of {first.path.name}; inputs must share one instrument mode"
            )
        if ccd.setup() != first.setup():
            raise RecipeError(
                f"{ccd.where}: detector setup (DET OUT geometry or DET READ CURID) differs from {first.where}"
            )


def badpix_mask(quadrants: list[Quadrant], xpos, ypos, status) -> np.ndarray:
    """Trimmed int32 DQ map from BADPIX_TABLE rows (1-based raw coordinates).

    Entries in prescans or overscans have no trimmed pixel and are ignored.
    """
    mask = np.zeros(trimmed_shape(quadrants), dtype=np.int32)
    x0 = np.asarray(xpos, dtype=np.int64) - 1
    y0 = np.asarray(ypos, dtype=np.int64) - 1
    st = np.asarray(status, dtype=np.int64).astype(np.int32)
    for q in quadrants:
        rows, cols = q.data
        inside = (y0 >= rows.start) & (y0 < rows.stop) & (x0 >= cols.start) & (x0 < cols.stop)
        ty = y0[inside] - rows.start + q.trimmed[0].start
        tx = x0[inside] - cols.start + q.trimmed[1].start
        np.bitwise_or.at(mask, (ty, tx), st[inside])
    return mask


# --------------------------------------------------------------------------------------
# Overscan
# --------------------------------------------------------------------------------------


def _strips(ccd: RawCcd, q: Quadrant, ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertical (rows × cols) and horizontal overscan strips, minus ``ignore`` pixels next
    to the data section."""
    rows, cols = q.overscan_x
    vcols = slice(cols.start + ignore, cols.stop) if not q.x_flip else slice(cols.start, cols.stop - ignore)
    hrows, hcols = q.overscan_y
    hrows = slice(hrows.start + ignore, hrows.stop) if not q.y_flip else slice(hrows.start, hrows.stop - ignore)
    vert = ccd.image[rows, vcols]
    horiz = ccd.image[hrows, hcols]
    if vert.size == 0:
        raise RecipeError(f"{ccd.where}: port {q.out} has no vertical overscan left after ovscignore={ignore}")
    return vert, horiz


def _clip_mean(
    values: np.ndarray, sigma: float, passes: int, centre_median: bool
) -> tuple[float, float, np.ndarray]:
    keep = np.ones(values.shape, dtype=bool)
    for _ in range(passes):
        v = values[keep]
        if v.size < 3:
            break
        centre = np.median(v) if centre_median else v.mean()
        sd = v.std()
        if sd == 0:
            break
        new = np.abs(values - centre) <= sigma * sd
        if np.array_equal(new, keep):
            break
        keep = new
    v = values[keep]
    return float(v.mean()), float(v.std(ddof=1) if v.size > 1 else 0.0), keep


def _dcr_keep(piece: np.ndarray, box: int, sigma: float, passes: int) -> np.ndarray:
    """Values of a strip (long axis first) kept by ``passes`` rounds of ``sigma`` clipping,
    separately in boxes of ``box`` rows: about the median in the first round, about the
    mean of the kept values after that (vectorised over boxes)."""
    nrow = piece.shape[0]
    if nrow == 0 or piece.size == 0:
        return piece.ravel()
    nbox = -(-nrow // box)
    padded = np.zeros((nbox * box, piece.shape[1]))
    padded[:nrow] = piece
    boxes = padded.reshape(nbox, -1)
    valid = np.zeros(boxes.shape, dtype=bool)
    valid.reshape(nbox * box, -1)[:nrow] = True
    count = valid.sum(axis=1)
    full = nrow // box
    centre = np.empty(nbox)
    if full:
        centre[:full] = np.median(boxes[:full], axis=1)
    if full < nbox:
        centre[full] = np.median(boxes[full][valid[full]])
    keep = valid
    for _ in range(passes):
        n = np.maximum(keep.sum(axis=1), 1)
        mean = np.where(keep, boxes, 0.0).sum(axis=1) / n
        sd = np.sqrt(np.where(keep, (boxes - mean[:, None]) ** 2, 0.0).sum(axis=1) / n)
        new = valid & ((np.abs(boxes - centre[:, None]) <= sigma * sd[:, None]) | (sd[:, None] == 0))
        new = np.where((new.sum(axis=1) > 0)[:, None] | (count == 0)[:, None], new, keep)
        if np.array_equal(new, keep):
            break
        keep = new
        n = np.maximum(keep.sum(axis=1), 1)
        centre = np.where(keep, boxes, 0.0).sum(axis=1) / n
    return boxes[keep]


def overscan_statistics(ccd: RawCcd, spec: OverscanSpec) -> tuple[np.ndarray, np.ndarray]:
    """Mean and stdev (adu) of the overscan of each port, with ``ovscreject`` rejection.

    ``dcr``: 2.5σ clipping in 3 passes (about the median, then the mean of the kept
    values), in boxes of 128 pixels along each strip (the DRS DCR box is 128×32);
    ``fit``: iterative constant fit clipped at ``ovscsigma``; ``none``: plain mean and stdev.
    """
    means = np.empty(len(ccd.quadrants))
    stdevs = np.empty(len(ccd.quadrants))
    for i, q in enumerate(ccd.quadrants):
        vert, horiz = _strips(ccd, q, spec.ignore)
        pieces = [vert.astype(np.float64), horiz.astype(np.float64).T]
        if spec.reject == "none":
            values = np.concatenate([p.ravel() for p in pieces])
            means[i], stdevs[i] = values.mean(), values.std(ddof=1)
        elif spec.reject == "fit":
            values = np.concatenate([p.ravel() for p in pieces])
            means[i], stdevs[i], _ = _clip_mean(values, spec.sigma, 25, centre_median=False)
        else:
            kept = [_dcr_keep(piece, 128, 2.5, 3) for piece in pieces]
            values = np.concatenate(kept)
            means[i], stdevs[i] = values.mean(), values.std(ddof=1)
    return means, stdevs


@dataclass
class OverscanResult:
    """Overscan of one exposure: per port statistics and the level subtracted per row.

    ``correction[p, y]`` (adu) is subtracted from the trimmed row ``y`` of port index
    ``p`` (only the port's own rows are meaningful). ``ncoeff`` is the number of vpoly
    coefficients (0 when no polynomial was fitted).
    """

    mean: np.ndarray
    stdev: np.ndarray
    correction: np.ndarray
    ncoeff: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=int))


def _fit_vpoly(strip: np.ndarray, spec: OverscanSpec) -> tuple[np.ndarray, int]:
    """Fit a polynomial in y to a vertical overscan strip (rows × cols, adu).

    The order rises from 0 while the pixel RMS improves by more than ``frms`` and the
    reduced χ² by more than ``fchisq``, up to ``order``; each fit is iterated with
    pixels beyond ``ovscsigma``·RMS rejected. Returns the fitted level per strip row and
    the number of coefficients. Fits use row sums (exact for unit weights) in a
    Legendre basis over y scaled to [−1, 1].
    """
    pix = strip.astype(np.float64)
    ref = float(np.median(pix))
    pix -= ref
    nrow = pix.shape[0]
    t = np.linspace(-1.0, 1.0, nrow) if nrow > 1 else np.zeros(1)
    keep = np.ones(pix.shape, dtype=bool)

    def row_sums(keep):
        n = keep.sum(axis=1).astype(np.float64)
        s = np.where(keep, pix, 0.0).sum(axis=1)
        ss = np.where(keep, pix * pix, 0.0).sum(axis=1)
        return n, s, ss

    def fit(order, keep):
        for _ in range(10):
            n, s, ss = row_sums(keep)
            ok = n > 0
            if ok.sum() <= order:
                return None
            mean = np.where(ok, s / np.maximum(n, 1), 0.0)
            coeffs = np.polynomial.legendre.legfit(t[ok], mean[ok], order, w=np.sqrt(n[ok]))
            level = np.polynomial.legendre.legval(t, coeffs)
            ntot = n.sum()
            rss = float(np.sum(ss - 2 * level * s + n * level * level))
            rms = np.sqrt(max(rss, 0.0) / ntot)
            cut = spec.sigma * rms
            resid_hi = np.where(keep, pix, -np.inf).max(axis=1) - level
            resid_lo = level - np.where(keep, pix, np.inf).min(axis=1)
            if rms == 0 or (np.max(resid_hi[ok]) <= cut and np.max(resid_lo[ok]) <= cut):
                return level, rms, rss / max(ntot - order - 1, 1)
            keep = keep & (np.abs(pix - level[:, None]) <= cut)
        return level, rms, rss / max(ntot - order - 1, 1)

    best = fit(0, keep)
    ncoeff = 1
    for order in range(1, spec.order + 1):
        trial = fit(order, keep)
        if trial is None:
            break
        if not (best[1] / max(trial[1], 1e-300) > spec.frms and best[2] / max(trial[2], 1e-300) > spec.fchisq):
            break
        best, ncoeff = trial, order + 1
    return best[0] + ref, ncoeff


def overscan_correction(
    ccd: RawCcd,
    spec: OverscanSpec,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    reference_name: str = "the first input",
) -> OverscanResult:
    """Overscan statistics and the per-row correction of one exposure.

    * ``none``: nothing is subtracted; a port whose mean overscan differs from the
      reference by more than ``ovscsigma``·stdev is an error (the DRS stops too).
    * ``offset``: the exposure is shifted to the reference's overscan level
      (correction = mean − reference mean); without a reference nothing is shifted.
    * ``vpoly``: the polynomial fit to the vertical overscan is subtracted row by row;
      the level check against the reference uses 100·stdev.

    ``reference`` is ``(means, stdevs)`` per port: the first input of a stack, or the
    levels recorded in a MASTER_BIAS (``ESO DRS MUSE OVSCn MEAN/STDEV``).
    """
    means, stdevs = overscan_statistics(ccd, spec)
    ny = ccd.shape[0]
    correction = np.zeros((len(ccd.quadrants), ny))
    ncoeff = np.zeros(len(ccd.quadrants), dtype=int)
    if reference is not None and spec.method in ("none", "vpoly"):
        factor = spec.sigma if spec.method == "none" else 100.0
        for i, q in enumerate(ccd.quadrants):
            limit = factor * max(stdevs[i], reference[1][i])
            if abs(means[i] - reference[0][i]) > limit:
                raise RecipeError(
                    f"{ccd.where}: overscan level of port {q.out} ({means[i]:.2f} adu) differs from "
                    f"{reference_name} ({reference[0][i]:.2f} adu) by more than {factor:g} sigma"
                )
    for i, q in enumerate(ccd.quadrants):
        rows = q.trimmed[0]
        if spec.method == "offset":
            if reference is not None:
                correction[i, rows] = means[i] - reference[0][i]
        elif spec.method == "vpoly":
            vert, _ = _strips(ccd, q, spec.ignore)
            level, ncoeff[i] = _fit_vpoly(vert, spec)
            correction[i, rows] = level
    return OverscanResult(means, stdevs, correction, ncoeff)


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
    :func:`load_raw_stack` filled when they are its planes, else a new padded copy."""
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
    :func:`load_raw_stack`) plus the three output images, whatever the image size.
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
# MASTER_BIAS as input of the later recipes
# --------------------------------------------------------------------------------------


def bias_reference(bias: CcdImage, quadrants: list[Quadrant], bias_path: Path, spec: OverscanSpec):
    """Overscan levels ``(means, stdevs)`` per port recorded in a MASTER_BIAS, or None.

    They are required for ``overscan=none`` (level check) and ``offset`` (shift).
    """
    means, stdevs = [], []
    for q in quadrants:
        key = f"ESO DRS MUSE OVSC{q.out} "
        if key + "MEAN" not in bias.header or key + "STDEV" not in bias.header:
            if spec.method in ("none", "offset"):
                raise RecipeError(f"{bias_path}: MASTER_BIAS lacks {key}MEAN/STDEV needed by overscan={spec.method}")
            return None
        means.append(float(bias.header[key + "MEAN"]))
        stdevs.append(float(bias.header[key + "STDEV"]))
    return np.array(means), np.array(stdevs)


def check_bias_overscan(bias_path: Path, params: Mapping) -> None:
    """The MASTER_BIAS must have been made with the same ``overscan`` method (as the DRS checks)."""
    recorded = recorded_params(read_primary_header(bias_path))
    ours = str(params.get("overscan", "vpoly")).split(":")[0].strip().lower()
    if "overscan" in recorded and recorded["overscan"].split(":")[0].strip().lower() != ours:
        raise RecipeError(
            f"{bias_path}: MASTER_BIAS was made with overscan={recorded['overscan']}, "
            f"this recipe runs with overscan={params.get('overscan')}"
        )


# --------------------------------------------------------------------------------------
# Shared recipe parameters and input checks of the CCD-level recipes
# --------------------------------------------------------------------------------------

NIFU_PARAM = Param(
    "nifu", int, 0,
    "IFU to handle: 1..24 one IFU; 0 all IFUs serially; -1 all IFUs (the DRS runs them in "
    "parallel; musered runs them in turn, each parallel over pixels)",
    minimum=-1, maximum=24,
)  # fmt: skip
OVERSCAN_PARAMS = (
    Param(
        "overscan", str, "vpoly",
        "none: only check overscan levels against the reference (stop if discrepant); offset: "
        "shift each exposure to the reference overscan level; vpoly[:order,frms,fchisq]: fit a "
        "polynomial in y to the vertical overscan and subtract it row by row (default order 15, "
        "frms = fchisq = 1.00001)",
    ),
    Param("ovscreject", str, "dcr", "outlier rejection for the overscan statistics: dcr, fit (iterative "
          "constant fit) or none", choices=OVSCREJECT_METHODS),
    Param("ovscsigma", float, 30.0, "stop if an overscan level differs from the reference by more than "
          "ovscsigma x stdev; for vpoly the rejection sigma of the iterative fit (the level check then "
          "uses 100 x stdev)", minimum=0.0),
    Param("ovscignore", int, 3, "overscan pixels next to the data section excluded from statistics and "
          "fits", minimum=0),
)  # fmt: skip
COMBINE_PARAMS = (
    Param("combine", str, "sigclip", "image combination: average, median, minmax or sigclip",
          choices=("average", "median", "minmax", "sigclip")),
    Param("nlow", int, 1, "minmax: number of lowest pixels rejected", minimum=0),
    Param("nhigh", int, 1, "minmax: number of highest pixels rejected", minimum=0),
    Param("nkeep", int, 1, "minmax: minimum number of pixels kept", minimum=1),
    Param("lsigma", float, 3.0, "sigclip: low rejection threshold (sigma)", minimum=0.0),
    Param("hsigma", float, 3.0, "sigclip: high rejection threshold (sigma)", minimum=0.0),
)  # fmt: skip
MERGE_PARAM = Param(
    "merge", bool, False,
    "DRS: merge the per-IFU products into one file. musered always writes the merged layout "
    "(one file, CHANnn.DATA/DQ/STAT extensions); the value is recorded for provenance",
)  # fmt: skip


def combine_options(params) -> dict:
    """The combination keyword arguments of :func:`combine_frames` from recipe parameters."""
    return {
        "method": str(params.get("combine", "sigclip")),
        "nlow": int(params.get("nlow", 1)),
        "nhigh": int(params.get("nhigh", 1)),
        "nkeep": int(params.get("nkeep", 1)),
        "lsigma": float(params.get("lsigma", 3.0)),
        "hsigma": float(params.get("hsigma", 3.0)),
    }


def raw_inputs(frames, tag: str, recipe: str, minimum: int) -> list[Path]:
    """The raw files of ``tag``; RecipeError naming them when fewer than ``minimum``."""
    paths = [Path(p) for p in frames.get(tag, [])]
    if len(paths) < minimum:
        names = ", ".join(p.name for p in paths) or "none"
        raise RecipeError(f"{recipe} needs at least {minimum} {tag} frames, got {len(paths)} ({names})")
    for path in paths:
        if not path.exists():
            raise RecipeError(f"{path}: raw file does not exist (deleted since ingestion?)")
    return paths


def optional_calib(frames, tag: str) -> Path | None:
    """The first file of an optional calibration tag, or None."""
    paths = list(frames.get(tag, []) or [])
    return Path(paths[0]) if paths else None


def select_ifus(paths: list[Path], nifu: int) -> list[int]:
    """IFUs to process (``nifu`` 1..24 one, 0/-1 all of the first input); every input must
    hold them (RecipeError naming the file that lacks one)."""
    present = list_ifus(paths[0])
    if not present:
        raise RecipeError(f"{paths[0]}: no CHANnn image extensions")
    wanted = present if nifu <= 0 else [nifu]
    for path in paths:
        have = set(present) if path == paths[0] else set(list_ifus(path))
        missing = [i for i in wanted if i not in have]
        if missing:
            raise RecipeError(f"{path}: no extension {chan_name(missing[0])}")
    return wanted


def check_modes(paths: list[Path], primaries: list[fits.Header]) -> None:
    """Inputs must share ESO INS MODE and DET READ CURID (RecipeError naming the odd file)."""
    for key, label in (("ESO INS MODE", "INS MODE"), ("ESO DET READ CURID", "DET READ CURID")):
        ref = primaries[0].get(key)
        for path, header in zip(paths[1:], primaries[1:]):
            if header.get(key) != ref:
                raise RecipeError(
                    f"{path}: {label} {header.get(key)!r} differs from {ref!r} of {paths[0].name}; "
                    "inputs must share one instrument mode and detector setup"
                )


def exposure_times(paths: list[Path], primaries: list[fits.Header], kind: str) -> np.ndarray:
    """EXPTIME [s] of every input; RecipeError naming the file when it is missing or <= 0
    (``kind`` names the frame type in the message, e.g. "lamp flat")."""
    times = []
    for path, header in zip(paths, primaries):
        try:
            t = float(header["EXPTIME"])
        except (KeyError, TypeError, ValueError):
            raise RecipeError(f"{path}: EXPTIME missing or not a number") from None
        if not t > 0:
            raise RecipeError(f"{path}: EXPTIME must be > 0 for a {kind}, not {t}")
        times.append(t)
    return np.array(times)
