"""Alignment of exposures against a reference image (exp-align ``--method image``; the
role imphot plays for MuseRed).

For one IMAGE_FOV (:class:`~recipes.algorithms.fov.FovImage`):

1. :func:`resample_reference`: the REFERENCE_IMAGE (any FITS image with a celestial WCS,
   e.g. an HST image in the same band; :func:`read_reference`) on the MUSE image grid:
   the reference is cut to the MUSE footprint, each of its pixels is split into ``s×s``
   sub-pixels (``s`` so that sub-pixels are ≤ 1/3 MUSE pixel), and each MUSE pixel gets
   the mean of the sub-pixel values falling in it (surface brightness kept; NaN where the
   reference has no data);
2. :func:`fit_exposure`: least squares on the pixels where both images have data (eroded
   by 3 pixels) of ``muse(x, y) = a · [ref ⊗ PSF](x − dx, y − dy) + b``, the PSF a
   circular Moffat (fixed ``beta``) or Gaussian of free FWHM, normalised to unit sum
   (:func:`psf_otf`); the shift is applied as a Fourier phase on a zero-padded grid. The
   start comes from the cross-correlation peak within ``maxshift``;
3. :func:`shift_to_sky`: the shift (dx, dy) [MUSE pixels], the apparent displacement of
   the exposure relative to the reference astrometry, as sky offsets [deg] through the
   exposure's WCS at the image centre.

Pixels are 0-based ``[y, x]``; FWHM and shifts in MUSE pixels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy import ndimage, optimize

from recipes.base import RecipeError
from recipes.algorithms.fov import FovImage


@dataclass
class ImageFit:
    """Result of fitting one exposure: shift [MUSE pix], flux ratio a, background b, FWHM [pix]."""

    dx: float
    dy: float
    scale: float
    background: float
    fwhm: float
    npix: int


def read_reference(path: Path) -> tuple[np.ndarray, WCS]:
    """The first 2-D image HDU with a celestial WCS. RecipeError naming the file otherwise."""
    try:
        with fits.open(path) as hdul:
            for hdu in hdul:
                if hdu.data is None or hdu.header.get("NAXIS") != 2:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FITSFixedWarning)
                    wcs = WCS(hdu.header, naxis=2)
                if wcs.has_celestial:
                    return np.asarray(hdu.data, dtype=np.float64), wcs
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read REFERENCE_IMAGE ({str(exc).splitlines()[0]})") from None
    raise RecipeError(f"{path}: REFERENCE_IMAGE has no 2-D image with a celestial WCS")


def resample_reference(ref: np.ndarray, ref_wcs: WCS, fov: FovImage) -> np.ndarray:
    """The reference on the grid of ``fov`` (step 1 of the module docstring)."""
    ny, nx = fov.data.shape
    ref_scale = math.sqrt(abs(np.linalg.det(ref_wcs.pixel_scale_matrix)))
    fov_scale = math.sqrt(abs(np.linalg.det(fov.wcs.pixel_scale_matrix)))
    # the MUSE footprint in reference pixels, plus a margin
    cx = np.array([-1, nx, nx, -1, nx / 2], dtype=float)
    cy = np.array([-1, -1, ny, ny, ny / 2], dtype=float)
    ra, dec = fov.pixel_to_world(cx, cy)
    rx, ry = ref_wcs.all_world2pix(ra, dec, 0)
    x0 = max(int(np.floor(np.min(rx))) - 2, 0)
    x1 = min(int(np.ceil(np.max(rx))) + 3, ref.shape[1])
    y0 = max(int(np.floor(np.min(ry))) - 2, 0)
    y1 = min(int(np.ceil(np.max(ry))) + 3, ref.shape[0])
    if x1 <= x0 or y1 <= y0:
        raise RecipeError(f"{fov.label}: the REFERENCE_IMAGE does not cover this exposure")
    cut = ref[y0:y1, x0:x1]
    s = max(1, int(math.ceil(3.0 * ref_scale / fov_scale)))
    sub = (np.arange(s) + 0.5) / s - 0.5
    yy, xx = np.mgrid[y0:y1, x0:x1]
    total = np.zeros(nx * ny)
    count = np.zeros(nx * ny)
    values = cut.ravel()
    good = np.isfinite(values)
    for oy in sub:
        for ox in sub:
            ra, dec = ref_wcs.all_pix2world(xx.ravel() + ox, yy.ravel() + oy, 0)
            px, py = fov.world_to_pixel(ra, dec)
            ix, iy = np.rint(px).astype(np.int64), np.rint(py).astype(np.int64)
            inside = good & (ix >= 0) & (iy >= 0) & (ix < nx) & (iy < ny)
            flat = iy[inside] * nx + ix[inside]
            total += np.bincount(flat, weights=values[inside], minlength=nx * ny)
            count += np.bincount(flat, minlength=nx * ny)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / count, np.nan)
    return out.reshape(ny, nx)


def psf_otf(shape: tuple[int, int], fwhm: float, kind: str, beta: float) -> np.ndarray:
    """Real FFT (``rfft2`` layout) of a unit-sum circular PSF of ``fwhm`` [pix] centred at (0, 0)."""
    ny, nx = shape
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    if kind == "gaussian":
        sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        return np.exp(-2.0 * math.pi ** 2 * sigma ** 2 * (fx ** 2 + fy ** 2))
    y = np.fft.fftfreq(ny, 1.0 / ny)[:, None]
    x = np.fft.fftfreq(nx, 1.0 / nx)[None, :]
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    image = (1.0 + (x * x + y * y) / (alpha * alpha)) ** (-beta)
    return np.fft.rfft2(image / image.sum())


def fit_exposure(muse: np.ndarray, ref: np.ndarray, fwhm0: float, kind: str = "moffat", beta: float = 2.5,
                 maxshift: float = 25.0, where: str = "image") -> ImageFit:  # fmt: skip
    """Fit ``muse ≈ a [ref ⊗ PSF](x − dx, y − dy) + b`` (step 2); pixels as 0-based arrays."""
    valid = np.isfinite(muse) & np.isfinite(ref)
    use = ndimage.binary_erosion(valid, iterations=3)
    if use.sum() < 50:
        raise RecipeError(f"{where}: fewer than 50 pixels where the exposure and the reference overlap")
    ny, nx = muse.shape
    pad = int(min(max(8, 2 * fwhm0 + maxshift), 64))
    shape = (ny + 2 * pad, nx + 2 * pad)
    r = np.zeros(shape)
    r[pad:pad + ny, pad:pad + nx] = np.where(np.isfinite(ref), ref, 0.0)
    rfft = np.fft.rfft2(r)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    target = muse[use]

    def template(dx: float, dy: float, fwhm: float) -> np.ndarray:
        phase = np.exp(-2j * math.pi * (fx * dx + fy * dy))
        img = np.fft.irfft2(rfft * psf_otf(shape, fwhm, kind, beta) * phase, s=shape)
        return img[pad:pad + ny, pad:pad + nx][use]

    # start: cross-correlation peak of the background-free images within maxshift
    m = np.zeros(shape)
    m[pad:pad + ny, pad:pad + nx] = np.where(use, muse - np.median(target), 0.0)
    t0 = np.zeros(shape)
    t0[pad:pad + ny, pad:pad + nx] = np.where(use, ref - np.median(ref[use]), 0.0)
    cc = np.fft.irfft2(np.fft.rfft2(m) * np.conj(np.fft.rfft2(t0)), s=shape)
    cc = np.fft.fftshift(cc)
    cy, cx = shape[0] // 2, shape[1] // 2
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    cc[np.hypot(xx - cx, yy - cy) > maxshift] = -np.inf
    py, px = np.unravel_index(np.argmax(cc), cc.shape)
    dx0, dy0 = float(px - cx), float(py - cy)

    def linear(dx, dy, fwhm):
        tpl = template(dx, dy, fwhm)
        design = np.column_stack([tpl, np.ones_like(tpl)])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        return coef, design

    def residuals(p):
        coef, design = linear(p[0], p[1], p[2])
        return design @ coef - target

    fit = optimize.least_squares(residuals, x0=[dx0, dy0, fwhm0],
                                 bounds=([dx0 - 3, dy0 - 3, 0.3], [dx0 + 3, dy0 + 3, 10 * fwhm0 + 5]),
                                 x_scale=[0.3, 0.3, 0.5])
    (a, b), _ = linear(*fit.x)
    if not np.isfinite(a) or a <= 0:
        raise RecipeError(f"{where}: the fit against the reference image found no positive flux scale")
    return ImageFit(float(fit.x[0]), float(fit.x[1]), float(a), float(b), float(fit.x[2]), int(use.sum()))


def shift_to_sky(fov: FovImage, dx: float, dy: float) -> tuple[float, float]:
    """RA/Dec offsets [deg] of a shift of the image content by (dx, dy) pixels, at the centre."""
    ny, nx = fov.data.shape
    x, y = np.array([(nx - 1) / 2, (nx - 1) / 2 + dx]), np.array([(ny - 1) / 2, (ny - 1) / 2 + dy])
    ra, dec = fov.pixel_to_world(x, y)
    return float(ra[1] - ra[0]), float(dec[1] - dec[0])
