"""Overscan: statistics, correction and the reference levels a MASTER_BIAS records.

The parameters (``overscan`` = ``none``/``offset``/``vpoly[:order,frms,fchisq]``,
``ovscreject`` = ``dcr``/``fit``/``none``, ``ovscsigma``, ``ovscignore``) as an
:class:`OverscanSpec` (checked once by :func:`check_overscan_params`, the recipes'
``check``); per port of one raw exposure (:class:`recipes.algorithms.rawccd.RawCcd`) the
mean and stdev of the overscan with outlier rejection (:func:`overscan_statistics`) and
the level subtracted per trimmed row (:func:`overscan_correction`, :class:`OverscanResult`).
The later recipes take the levels recorded in the MASTER_BIAS as reference
(:func:`bias_reference`) and must run with the overscan method it was made with
(:func:`check_bias_overscan`). Values in adu; rows 0-based in the trimmed image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recipes.base import RecipeError
from recipes.algorithms.instrument import Quadrant
from recipes.algorithms.rawccd import RawCcd
from recipes.io import CcdImage, read_primary_header
from recipes.provenance import recorded_params

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
        """Build from recipe parameters (missing keys take the DRS defaults); RecipeError
        with a one-line reason if malformed. ``overscan`` is the one structured string
        parameter (``vpoly:order,frms,fchisq``), so it is parsed here, for
        :func:`check_overscan_params` at validation and for the per-IFU processing."""
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


def check_overscan_params(params: Mapping) -> None:
    """The ``check`` rule of the recipes with overscan parameters: a malformed ``overscan``
    (or ``ovscsigma`` <= 0) is refused when the parameters are validated, before any data
    is read. Raises ValueError with the one-line reason of :meth:`OverscanSpec.from_params`."""
    try:
        OverscanSpec.from_params(params)
    except RecipeError as exc:
        raise ValueError(str(exc)) from None


# --------------------------------------------------------------------------------------
# Statistics and correction of one exposure
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
    ours = OverscanSpec.from_params(params).method
    if "overscan" in recorded and recorded["overscan"].split(":")[0].strip().lower() != ours:
        raise RecipeError(
            f"{bias_path}: MASTER_BIAS was made with overscan={recorded['overscan']}, "
            f"this recipe runs with overscan={params.get('overscan')}"
        )
