"""Point-source detection on field-of-view images, as muse_exp_align does it (recipes.md §3.11).

Three steps, each a function:

1. :func:`background` — ignore the darkest ``bkgignore`` fraction of the finite pixels,
   take the next ``bkgfraction`` of the rest as background: its median and MAD (the raw
   median absolute deviation, not scaled to σ; the DRS reports it as QC BKG MAD).
2. :func:`find_candidates` — a DAOFIND-like search: correlate the image with a
   zero-sum ("lowered") Gaussian kernel of ``fwhm`` [pix] inside a circle of radius
   ``max(2, 1.5 σ)``, so that the correlated value at a star is the amplitude of the
   best-fitting Gaussian (independent of a flat background); keep local maxima of that
   image with their sharpness, roundness, sub-pixel centroid and flux. Pixels closer
   than ``bpixdistance`` to a bad (non-finite) pixel or than the kernel radius to the edge
   are not candidates.
3. :func:`detect_sources` — the adaptive threshold: start at ``threshold`` (> 0: an
   absolute level above the background; <= 0: that many MADs), move it by ``step`` (in
   the same units) up while more than ``srcmax`` candidates pass, down while fewer than
   ``srcmin`` pass, for at most ``iterations`` steps; keep the candidates passing the
   roundness and sharpness cuts.

Definitions (pixel units, 0-based array indices; ``x`` is the column, ``y`` the row):

- ``sharpness = (d[peak] - mean(d over the kernel circle without the centre)) / height``
  with ``height`` the correlated value: ~0.5-0.8 for a star matching ``fwhm``, > 1 for a
  single hot pixel or cosmic ray, small for extended blobs (DAOFIND's SHARP);
- ``roundness = 2 (hx - hy) / (hx + hy)`` where hx, hy are the amplitudes of the best
  Gaussian (σ of the kernel) fitted to the x and y marginal sums of the background-free
  data in the kernel box (DAOFIND's GROUND): 0 for a round source, ±2 for a source
  elongated along y or x only;
- ``x, y``: the centre of a parabola through the correlated image at the peak and its
  two neighbours along each axis (unbiased for symmetric sources);
- ``flux``: the background-subtracted sum of the data inside the kernel circle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from recipes.base import RecipeError

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class Background:
    """Background level and spread [image units] and the number of pixels used."""

    median: float
    mad: float
    npix: int


@dataclass(frozen=True)
class Candidates:
    """Local maxima of the correlated image (arrays of equal length, any order)."""

    x: np.ndarray          # 0-based column, sub-pixel
    y: np.ndarray          # 0-based row, sub-pixel
    height: np.ndarray     # amplitude of the best-fitting Gaussian [image units]
    flux: np.ndarray       # background-subtracted sum in the kernel circle
    sharpness: np.ndarray
    roundness: np.ndarray

    def take(self, keep: np.ndarray) -> Candidates:
        return Candidates(*(getattr(self, f)[keep] for f in ("x", "y", "height", "flux", "sharpness", "roundness")))

    def __len__(self) -> int:
        return int(self.x.size)


@dataclass(frozen=True)
class Detection:
    """Sources found by :func:`detect_sources` with the threshold level that found them."""

    sources: Candidates
    background: Background
    threshold: float       # final level above the background [image units]
    iterations: int


def background(image: np.ndarray, bkgignore: float = 0.05, bkgfraction: float = 0.1) -> Background:
    """Median and MAD of the darkest pixels after ignoring the darkest ``bkgignore``."""
    values = np.sort(np.asarray(image, dtype=np.float64)[np.isfinite(image)], kind="stable")
    if values.size == 0:
        raise RecipeError("image has no finite pixel")
    start = int(bkgignore * values.size)
    count = max(1, int(bkgfraction * (values.size - start)))
    sample = values[start:start + count]
    if sample.size == 0:
        sample = values[-1:]
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median)))
    return Background(median, mad, int(sample.size))


def daofind_kernel(fwhm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lowered Gaussian kernel, its circular mask and the plain Gaussian (all square).

    The kernel K = (g - mean g) / Σ (g - mean g)² on the mask (0 outside), so that
    Σ K·d = amplitude of the least-squares Gaussian + constant fit to d.
    """
    sigma = fwhm * FWHM_TO_SIGMA
    radius = max(2.0, 1.5 * sigma)
    half = int(radius)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    mask = (xx * xx + yy * yy) <= radius * radius
    gauss = np.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
    g = np.where(mask, gauss, 0.0)
    lowered = np.where(mask, g - g[mask].mean(), 0.0)
    kernel = lowered / np.sum(lowered[mask] ** 2)
    return kernel, mask, gauss


def find_candidates(image: np.ndarray, fwhm: float, bkg: Background, bpixdistance: float = 5.0) -> Candidates:
    """Every local maximum of the correlated image with a positive height (see module doc)."""
    data = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(data)
    filled = np.where(bad, bkg.median, data)
    kernel, mask, _ = daofind_kernel(fwhm)
    half = kernel.shape[0] // 2
    conv = ndimage.correlate(filled, kernel, mode="constant", cval=bkg.median)
    peaks = (conv == ndimage.maximum_filter(conv, footprint=mask, mode="constant", cval=-np.inf)) & (conv > 0)
    ny, nx = data.shape
    peaks[:half, :] = peaks[ny - half:, :] = False
    peaks[:, :half] = peaks[:, nx - half:] = False
    if bad.any():
        distance = ndimage.distance_transform_edt(~bad)
        peaks &= distance >= max(bpixdistance, 1.0)
    iy, ix = np.nonzero(peaks)
    empty = np.zeros(0)
    if iy.size == 0:
        return Candidates(empty, empty, empty, empty, empty, empty)
    height = conv[iy, ix]

    # Sub-pixel centre: a parabola through the correlated image along each axis.
    def vertex(minus, centre, plus):
        denom = minus - 2.0 * centre + plus
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = np.where(denom < 0, 0.5 * (minus - plus) / denom, 0.0)
        return np.clip(shift, -0.5, 0.5)

    x = ix + vertex(conv[iy, ix - 1], height, conv[iy, ix + 1])
    y = iy + vertex(conv[iy - 1, ix], height, conv[iy + 1, ix])

    offsets = np.arange(-half, half + 1)
    boxes = filled[iy[:, None, None] + offsets[None, :, None], ix[:, None, None] + offsets[None, None, :]]
    boxes = boxes - bkg.median
    ring = mask.copy()
    ring[half, half] = False
    centre = boxes[:, half, half]
    sharpness = (centre - boxes[:, ring].mean(axis=1)) / height
    flux = boxes[:, mask].sum(axis=1)

    # Roundness: amplitudes of a fixed-σ Gaussian fitted (with a constant) to the marginals.
    sigma = fwhm * FWHM_TO_SIGMA
    g1 = np.exp(-(offsets ** 2) / (2.0 * sigma * sigma))
    g1 = g1 - g1.mean()
    g1 /= np.sum(g1 * g1)
    hx = boxes.sum(axis=1) @ g1           # marginal along x (summed over rows)
    hy = boxes.sum(axis=2) @ g1
    with np.errstate(invalid="ignore", divide="ignore"):
        roundness = np.where(hx + hy > 0, 2.0 * (hx - hy) / (hx + hy), np.inf)
    return Candidates(x.astype(float), y.astype(float), height, flux, sharpness, roundness)


def detect_sources(
    image: np.ndarray, *, fwhm: float = 5.0, threshold: float = 15.0, bkgignore: float = 0.05,
    bkgfraction: float = 0.1, step: float = 0.5, iterations: int = 100000, srcmin: int = 5,
    srcmax: int = 80, roundmin: float = -1.0, roundmax: float = 1.0, sharpmin: float = 0.2,
    sharpmax: float = 1.0, bpixdistance: float = 5.0, where: str = "image",
) -> Detection:  # fmt: skip
    """Detect point sources with the adaptive threshold; RecipeError (naming ``where``)
    when no threshold within ``iterations`` steps yields ``srcmin``..``srcmax`` sources."""
    if fwhm <= 0.5:
        raise RecipeError(f"{where}: fwhm must be > 0.5 pix, not {fwhm}")
    if srcmax < srcmin or roundmax < roundmin or sharpmax < sharpmin:
        raise RecipeError(f"{where}: srcmin/srcmax, roundmin/roundmax and sharpmin/sharpmax must be ordered")
    bkg = background(image, bkgignore, bkgfraction)
    cand = find_candidates(image, fwhm, bkg, bpixdistance)
    shape_ok = ((cand.roundness >= roundmin) & (cand.roundness <= roundmax)
                & (cand.sharpness >= sharpmin) & (cand.sharpness <= sharpmax))
    cand = cand.take(shape_ok)
    heights = np.sort(cand.height)

    def count(levels: np.ndarray) -> np.ndarray:
        return heights.size - np.searchsorted(heights, levels, side="left")

    unit = 1.0 if threshold > 0 else bkg.mad
    start = threshold if threshold > 0 else -threshold
    n0 = int(count(np.array([start * unit]))[0])
    if srcmin <= n0 <= srcmax:
        level, used = start * unit, 0
    else:
        direction = 1.0 if n0 > srcmax else -1.0
        k = np.arange(1, iterations + 1, dtype=np.float64)
        levels = (start + direction * step * k) * unit
        if direction < 0:
            levels = levels[levels > 0] if threshold > 0 else levels[levels >= 0]
        counts = count(levels)
        hit = np.flatnonzero((counts >= srcmin) & (counts <= srcmax))
        if hit.size == 0:
            raise RecipeError(f"{where}: no threshold gives {srcmin}..{srcmax} point sources "
                              f"({heights.size} candidates pass the shape cuts; background "
                              f"{bkg.median:.4g} ± {bkg.mad:.3g})")
        level, used = float(levels[hit[0]]), int(hit[0]) + 1
    keep = cand.height >= level
    order = np.argsort(-cand.height[keep], kind="stable")
    return Detection(cand.take(np.flatnonzero(keep)[order]), bkg, float(level), used)
