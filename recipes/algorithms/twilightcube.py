"""The smooth illumination-correction cube of muse_twilight (recipes.md §3.6, step 6).

From the resampled skyflat cube (planes ``[z, y, x]`` in field spaxels, count) and its
white-light image: the illuminated spaxels (white image above ILLUMINATED_FRACTION of its
median) form the mask; each plane is median filtered (SMOOTH_BOX spaxels), normalised to
mean 1 in the mask, fitted with a 2-D polynomial of ``xorder`` × ``yorder``
(:func:`poly2d_fit`) and normalised again. The result is dimensionless.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

from recipes.base import RecipeError

#: Spaxels whose white-light value is above this fraction of the median are illuminated.
ILLUMINATED_FRACTION = 0.5
#: Median filter applied to each plane before the polynomial fit: (y, x) spaxels.
SMOOTH_BOX = (7, 5)


def poly2d_fit(image: np.ndarray, mask: np.ndarray, xorder: int, yorder: int) -> np.ndarray:
    """Least-squares tensor polynomial Σ c_ij u^i v^j (i ≤ xorder, j ≤ yorder) fitted to
    the masked pixels of a 2-D image, evaluated on the whole image (u, v: the pixel
    coordinates scaled to [-1, 1])."""
    ny, nx = image.shape
    v, u = np.mgrid[0:ny, 0:nx].astype(np.float64)
    u = 2 * u / max(nx - 1, 1) - 1
    v = 2 * v / max(ny - 1, 1) - 1
    terms = [(i, j) for i in range(xorder + 1) for j in range(yorder + 1)]
    design = np.stack([u[mask] ** i * v[mask] ** j for i, j in terms], axis=1)
    if design.shape[0] < len(terms):
        raise RecipeError(f"only {design.shape[0]} illuminated spaxels for a {xorder}x{yorder} polynomial")
    coef, *_ = np.linalg.lstsq(design, image[mask].astype(np.float64), rcond=None)
    return sum(c * u**i * v**j for c, (i, j) in zip(coef, terms))


def smooth_cube(data: np.ndarray, white: np.ndarray, xorder: int, yorder: int) -> tuple[np.ndarray, np.ndarray]:
    """TWILIGHT_CUBE planes from the skyflat cube (step 6) and the illuminated mask."""
    mask = np.isfinite(white) & (white > ILLUMINATED_FRACTION * np.nanmedian(white))
    out = np.empty(data.shape, dtype=np.float32)
    for k, plane in enumerate(data):
        good = mask & np.isfinite(plane)
        if good.sum() < (xorder + 1) * (yorder + 1):
            out[k] = np.nan
            continue
        # fill holes with the plane median so the filter does not spread NaNs
        filled = np.where(good, plane, np.median(plane[good]))
        smooth = median_filter(filled, size=SMOOTH_BOX, mode="nearest")
        smooth = smooth / smooth[good].mean()
        fit = poly2d_fit(smooth, good, xorder, yorder)
        out[k] = fit / fit[good].mean()
    return out, mask
