"""Master-dark analysis of muse_dark (recipes.md §3.2): exposure-time scaling, hot
pixels and the dark current.

Images are one IFU's trimmed CCD (0-based ``[y, x]``, DATA in count per the unit time,
Euro3D DQ bits). σ = 1.4826 · MAD (the median absolute deviation as a Gaussian σ).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.algorithms.ccdinputs import exposure_times
from recipes.algorithms.preprocess import DQ_HOTPIXEL
from recipes.io import CcdImage

_MAD = 1.482602218505602


def exposure_scales(
    paths: list[Path], primaries: list[fits.Header], scale: bool, normalize: float
) -> tuple[np.ndarray, float, float]:
    """Per-input factors and the time unit (s) of the result.

    ``scale``: each exposure is scaled to ``normalize`` s (or to the first exposure time
    when ``normalize < 0``); otherwise inputs are combined as they are and the result is
    rescaled from the mean exposure time to ``normalize`` s afterwards (``post``).
    Returns ``(factors, post, unit_seconds)``.
    """
    times = exposure_times(paths, primaries, "dark")
    if scale:
        unit = normalize if normalize > 0 else times[0]
        return unit / times, 1.0, float(unit)
    mean = float(times.mean())
    if normalize > 0:
        return np.ones(len(times)), normalize / mean, float(normalize)
    return np.ones(len(times)), 1.0, mean


def flag_hot_pixels(master: CcdImage, hotsigma: float) -> int:
    """Mark pixels above median + hotsigma·σ (σ = 1.4826·MAD of unflagged pixels) as HOTPIXEL."""
    good = master.dq == 0
    values = master.data[good] if good.any() else master.data.ravel()
    median = float(np.median(values))
    sigma = _MAD * float(np.median(np.abs(values - median)))
    hot = master.data > median + hotsigma * sigma
    master.dq[hot] |= DQ_HOTPIXEL
    return int(hot.sum())


#: Dark-current windows: number and size (pixels). Larger than the 9×9 read-noise windows
#: because the dark signal is small against the read noise (the DRS window size is not
#: documented, recipes.md §7.5).
DC_NWINDOWS = 100
DC_WINDOW = 33


def dark_current(master: CcdImage, per_hour: float, seed: int) -> tuple[float, float]:
    """DC and DCERR (count/pix/h): mean of the means of ``DC_NWINDOWS`` random
    ``DC_WINDOW``² windows without flagged pixels, and the scatter of those means."""
    rng = np.random.default_rng(seed)
    ny, nx = master.data.shape
    size = min(DC_WINDOW, ny, nx)
    means = []
    for _ in range(DC_NWINDOWS * 10):
        if len(means) >= DC_NWINDOWS:
            break
        y = int(rng.integers(0, ny - size + 1))
        x = int(rng.integers(0, nx - size + 1))
        if master.dq[y : y + size, x : x + size].any():
            continue
        means.append(float(master.data[y : y + size, x : x + size].mean(dtype=np.float64)))
    if not means:
        return float("nan"), float("nan")
    means = np.array(means) * per_hour
    return float(means.mean()), float(means.std(ddof=1)) if means.size > 1 else 0.0
