"""Point-source QC of a final cube: ``ESO QC {SCIPOST,EXPCOMB} NDET, LAMBDA, POSk X/Y, FWHMk X/Y,
FWHM NVALID/MEDIAN/MAD`` (recipes.md §3.9, §3.12; the DRS's ``muse_postproc_qc_fwhm``).

The steps, as the DRS takes them:

1. the image is the central wavelength plane of the cube (0-based plane ``nz // 2``);
   ``LAMBDA`` is its wavelength [Å];
2. detection (``cpl_apertures_extract`` with the sigma list 50, 30, 10, 8, 6, 5): for
   each ``sigma`` in turn, the pixels above median + sigma · dev of the finite pixels
   (dev = the mean absolute deviation from the median, ``cpl_image_get_median_dev``),
   cleaned by a 3 × 3 morphological opening (single hot pixels go), are grouped into
   connected apertures; the first sigma that finds any is kept. No aperture even at 5:
   ``NDET = 0`` and no other key. Apertures are numbered in raster order (rows from the
   bottom, x fastest), k = 1 .. NDET;
3. per aperture, position and FWHM.

Where this differs from the DRS, and why: the DRS takes the flux-weighted centroid of the
aperture's pixels and the FWHM from the half-maximum crossings of the row and column
through the pixel nearest that centroid (``cpl_image_get_fwhm``). For a star of a few
pixels FWHM that estimate is biased by several per cent (the crossing level is half the
value of a pixel that is not the peak). Here each source is fitted, in a box around its
aperture, with an axis-aligned elliptical Gaussian and an elliptical Moffat (free β), each
plus a constant; the fit with the smaller residual gives the centre and the FWHM along x
and y. A failed fit gives ``FWHMk X/Y = -1`` (as the DRS marks a failure) and the
centroid as position.

Conventions: arrays ``[y, x]`` 0-based inside; ``POSk X/Y`` are 1-based pixels as the DRS
writes them; FWHM in arcsec (the spatial pixel scales from the grid's CD matrix), in
pixels for pixel-unit grids. ``FWHM MEDIAN`` and ``MAD`` (the raw median absolute
deviation, not scaled to σ) are over the valid sources' (FWHM X + FWHM Y)/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.sourcedetect import FWHM_TO_SIGMA

#: detection levels tried in turn [mean absolute deviations above the median] (the DRS's list)
DETECTION_SIGMAS = (50.0, 30.0, 10.0, 8.0, 6.0, 5.0)


@dataclass(frozen=True)
class SourceShape:
    """One detected source: 0-based centre [pix] and FWHM along x and y [pix] (−1: failed)."""

    x: float
    y: float
    fwhm_x: float
    fwhm_y: float

    @property
    def valid(self) -> bool:
        return self.fwhm_x > 0 and self.fwhm_y > 0


def detect_apertures(image: np.ndarray) -> tuple[list[np.ndarray], float]:
    """The DRS detection (step 2 of the module doc): a list of apertures, each a boolean
    mask of ``image``'s shape, and the sigma that found them (NaN when none was found)."""
    finite = np.isfinite(image)
    values = image[finite].astype(np.float64)
    if values.size == 0:
        return [], math.nan
    median = float(np.median(values))
    dev = float(np.mean(np.abs(values - median)))
    if dev <= 0:
        return [], math.nan
    filled = np.where(finite, image, -np.inf)
    opening = np.ones((3, 3), dtype=bool)
    for sigma in DETECTION_SIGMAS:
        selected = ndimage.binary_opening(filled > median + sigma * dev, structure=opening)
        labels, count = ndimage.label(selected)
        if count:
            return [labels == k for k in range(1, count + 1)], sigma
    return [], math.nan


def _gaussian(p, x, y):
    a, x0, y0, sx, sy, c = p
    return a * np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2)) + c


def _moffat(p, x, y):
    a, x0, y0, ax, ay, beta, c = p
    return a * (1.0 + ((x - x0) / ax) ** 2 + ((y - y0) / ay) ** 2) ** (-beta) + c


def _moffat_fwhm(alpha, beta):
    return 2.0 * alpha * math.sqrt(2.0 ** (1.0 / beta) - 1.0)


def fit_source(image: np.ndarray, aperture: np.ndarray, others: np.ndarray | None = None) -> SourceShape:
    """Centre and FWHM [pix] of the source in ``aperture`` (step 3 of the module doc).

    The pixels of ``others`` (the other apertures) are left out of the fit and the centre
    must stay within a pixel of the aperture, so that a brighter neighbour in the box is
    not fitted instead; a fit whose centre or width ends on its bounds has failed."""
    ys, xs = np.nonzero(aperture)
    w = np.clip(np.nan_to_num(image[ys, xs]), 0, None)
    if w.sum() > 0:
        cx, cy = float(np.average(xs, weights=w)), float(np.average(ys, weights=w))
    else:
        cx, cy = float(xs.mean()), float(ys.mean())
    failed = SourceShape(cx, cy, -1.0, -1.0)
    # box: ± two aperture diameters around its brightest pixel, at least ±5, at most ±40 pixels
    half = int(min(40, max(5, math.ceil(4.0 * math.sqrt(xs.size / math.pi)))))
    peak = int(np.argmax(w))
    px, py = int(xs[peak]), int(ys[peak])
    ny, nx = image.shape
    y0, y1, x0, x1 = max(0, py - half), min(ny, py + half + 1), max(0, px - half), min(nx, px + half + 1)
    box = image[y0:y1, x0:x1].astype(np.float64)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    good = np.isfinite(box)
    if others is not None:
        good &= ~others[y0:y1, x0:x1]
    if good.sum() < 12:
        return failed
    x, y, v = xx[good].astype(np.float64), yy[good].astype(np.float64), box[good]
    background = float(np.median(v))
    amp = max(float(image[py, px]) - background, 1e-30)
    s0 = max(0.7, math.sqrt(xs.size / math.pi))  # the aperture radius ~ the star's σ..FWHM
    lo_pos, hi_pos = (xs.min() - 1.0, ys.min() - 1.0), (xs.max() + 1.0, ys.max() + 1.0)
    size = float(max(x1 - x0, y1 - y0))
    fits_ = []
    try:
        g = least_squares(lambda p: _gaussian(p, x, y) - v, [amp, px, py, s0, s0, background],
                          bounds=([0, lo_pos[0], lo_pos[1], 0.2, 0.2, -np.inf],
                                  [np.inf, hi_pos[0], hi_pos[1], size, size, np.inf]), x_scale="jac")  # fmt: skip
        if g.success:
            fits_.append((float(np.sum(g.fun**2)), g.x[1], g.x[2], g.x[3] / FWHM_TO_SIGMA, g.x[4] / FWHM_TO_SIGMA))
        m = least_squares(lambda p: _moffat(p, x, y) - v, [amp, px, py, 2 * s0, 2 * s0, 2.5, background],
                          bounds=([0, lo_pos[0], lo_pos[1], 0.2, 0.2, 1.01, -np.inf],
                                  [np.inf, hi_pos[0], hi_pos[1], 4 * size, 4 * size, 100.0, np.inf]),
                          x_scale="jac")  # fmt: skip
        if m.success:
            beta = m.x[5]
            fits_.append((float(np.sum(m.fun**2)), m.x[1], m.x[2], _moffat_fwhm(m.x[3], beta),
                          _moffat_fwhm(m.x[4], beta)))  # fmt: skip
    except (ValueError, np.linalg.LinAlgError):
        return failed
    if not fits_:
        return failed
    _, fx, fy, wx, wy = min(fits_, key=lambda f: f[0])
    inside = lo_pos[0] + 1e-3 < fx < hi_pos[0] - 1e-3 and lo_pos[1] + 1e-3 < fy < hi_pos[1] - 1e-3
    if not (inside and 0.5 < wx < size and 0.5 < wy < size):
        return failed
    return SourceShape(float(fx), float(fy), float(wx), float(wy))


def pixel_scales(grid: CubeGrid) -> tuple[float, float, str]:
    """Size of a spaxel along x and y and its unit: arcsec (celestial grids) or pix."""
    if not grid.celestial:
        return 1.0, 1.0, "pix"
    a, b, c, d = grid.cd
    return math.hypot(a, c) * 3600.0, math.hypot(b, d) * 3600.0, "arcsec"


def fwhm_qc(data: np.ndarray, grid: CubeGrid, prefix: str) -> list[tuple[str, object, str]]:
    """The QC ``(keyword, value, comment)`` triples of a cube ``data [z, y, x]`` on ``grid``,
    keywords starting with ``prefix`` (``ESO QC SCIPOST``, ``ESO QC EXPCOMB``); for
    :func:`recipes.provenance.add_qc`."""
    plane = data.shape[0] // 2
    image = np.asarray(data[plane], dtype=np.float64)
    lam = float(grid.wavelength_at(np.array([float(plane)]))[0])
    apertures, _ = detect_apertures(image)
    qc: list[tuple[str, object, str]] = [
        (f"{prefix} NDET", len(apertures), "sources detected"),
        (f"{prefix} LAMBDA", lam, "[Angstrom] plane used"),
    ]
    if not apertures:
        return qc
    scale_x, scale_y, unit = pixel_scales(grid)
    fwhms = []
    detected = np.logical_or.reduce(apertures)
    for k, aperture in enumerate(apertures, start=1):
        src = fit_source(image, aperture, detected & ~aperture)
        qc.append((f"{prefix} POS{k} X", src.x + 1.0, "[pix] position in x"))
        qc.append((f"{prefix} POS{k} Y", src.y + 1.0, "[pix] position in y"))
        if src.valid:
            fx, fy = src.fwhm_x * scale_x, src.fwhm_y * scale_y
            fwhms.append(0.5 * (fx + fy))
            qc.append((f"{prefix} FWHM{k} X", fx, f"[{unit}] FWHM in x"))
            qc.append((f"{prefix} FWHM{k} Y", fy, f"[{unit}] FWHM in y"))
        else:
            qc.append((f"{prefix} FWHM{k} X", -1.0, f"[{unit}] FWHM failed"))
            qc.append((f"{prefix} FWHM{k} Y", -1.0, f"[{unit}] FWHM failed"))
    qc.append((f"{prefix} FWHM NVALID", len(fwhms), "sources with FWHM"))
    if fwhms:
        median = float(np.median(fwhms))
        qc.append((f"{prefix} FWHM MEDIAN", median, f"[{unit}] median FWHM"))
        qc.append((f"{prefix} FWHM MAD", float(np.median(np.abs(np.array(fwhms) - median))),
                   f"[{unit}] MAD of FWHM"))  # fmt: skip
    return qc


def product_qc(triples: list[tuple[str, object, str]], prefix: str) -> dict[str, object]:
    """The triples as a product's QC dictionary (keys without ``prefix``), for the database
    and the report."""
    return {key.removeprefix(prefix).strip(): value for key, value, _ in triples}
