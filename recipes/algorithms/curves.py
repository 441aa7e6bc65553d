"""Combination of spectral curves measured on several nights (response, telluric).

A standard star observed on a few nights of a run gives one response curve per night;
their combination is steadier than any one of them. :func:`combine_curves` interpolates
(λ [Å], value, error) curves onto the wavelength grid of the first one, restricted to the
range every input covers, and combines them per wavelength:

- ``median`` (as MuseRed): the median; error ``1.2533 · sqrt(mean(err²) / N)`` (the
  standard error of a median of N Gaussian values; the plain mean formula for N ≤ 2);
- ``mean``: the inverse-variance weighted mean (equal weights when an error is 0); error
  ``1 / sqrt(Σ 1/err²)``.

It also returns the night-to-night scatter, 1.4826 · MAD across the inputs per wavelength.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("median", "mean")
# Standard error of the median of N Gaussian values, in units of sigma/sqrt(N).
MEDIAN_EFFICIENCY = 1.2533


def combine_curves(curves: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], method: str = "median",
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Combine (λ [Å], value, error) curves; return (λ, value, error, scatter).

    λ is the first curve's grid within the range all curves cover; the others are
    linearly interpolated onto it. ValueError when there is no curve, no common range or
    an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (valid: {', '.join(METHODS)})")
    if not curves:
        raise ValueError("nothing to combine")
    lo = max(float(np.min(c[0])) for c in curves)
    hi = min(float(np.max(c[0])) for c in curves)
    first = np.asarray(curves[0][0], dtype=float)
    grid = first[(first >= lo) & (first <= hi)]
    if grid.size < 2:
        raise ValueError(f"the inputs share no wavelength range ({lo:.0f} > {hi:.0f} Å)")
    values = np.array([np.interp(grid, c[0], c[1]) for c in curves])
    errors = np.array([np.interp(grid, c[0], c[2]) for c in curves])
    n = len(curves)
    if method == "median":
        combined = np.median(values, axis=0)
        factor = MEDIAN_EFFICIENCY if n > 2 else 1.0
        error = factor * np.sqrt(np.mean(errors**2, axis=0) / n)
    else:
        usable = np.all(errors > 0, axis=0)
        weights = np.where(usable, 1.0 / np.where(errors > 0, errors, 1.0) ** 2, 1.0)
        combined = np.sum(weights * values, axis=0) / np.sum(weights, axis=0)
        error = np.where(usable, 1.0 / np.sqrt(np.sum(weights, axis=0)), np.sqrt(np.mean(errors**2, axis=0) / n))
    scatter = 1.4826 * np.median(np.abs(values - np.median(values, axis=0)), axis=0) if n > 1 else np.zeros_like(grid)
    return grid, combined, error, scatter
