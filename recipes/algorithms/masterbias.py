"""Master-bias analysis of muse_bias (recipes.md §3.1): read noise from pairs of raw
biases, bad columns and per-port statistics of the master.

Images are one IFU's CCD: raw uint16 (adu, :class:`recipes.algorithms.rawccd.RawCcd`) or
the trimmed master (0-based ``[y, x]``, adu, Euro3D DQ bits). Robust σ = 1.4826 · MAD.
"""

from __future__ import annotations

import numpy as np

from recipes.base import RecipeError
from recipes.algorithms.instrument import Quadrant
from recipes.algorithms.overscan import OverscanResult
from recipes.algorithms.preprocess import DQ_DARKPIXEL, DQ_HOTPIXEL
from recipes.algorithms.rawccd import RawCcd
from recipes.io import CcdImage
from recipes.kernels.overscan import SATURATION_LIMIT

#: Half size of the read-noise windows (9×9) and their number per port and pair, as CPL's
#: cpl_flux_get_noise_window defaults.
RON_HALFSIZE = 4
RON_NWINDOWS = 100


def measure_ron(
    ccds: list[RawCcd], overscans: list[OverscanResult], static_dq: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read noise per port (adu) and its error, from consecutive-pair differences.

    For each pair and port, the standard deviation of the difference (overscan
    corrections removed) is measured in ``RON_NWINDOWS`` random windows of
    (2·RON_HALFSIZE+1)² pixels that avoid flagged or saturated pixels; RON = mean/√2
    over windows, averaged over pairs; the error is the scatter of the window values
    /√2, divided by √(number of pairs). Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    quadrants = ccds[0].quadrants
    size = 2 * RON_HALFSIZE + 1
    ron = np.zeros(len(quadrants))
    err = np.zeros(len(quadrants))
    for p, q in enumerate(quadrants):
        (dr, dc), (tr, tc) = q.data, q.trimmed
        hy, hx = min(size, q.ny), min(size, q.nx)
        per_pair = []
        spreads = []
        for a, b in zip(range(len(ccds) - 1), range(1, len(ccds))):
            values = []
            for _ in range(RON_NWINDOWS * 3):
                if len(values) >= RON_NWINDOWS:
                    break
                y = int(rng.integers(0, q.ny - hy + 1))
                x = int(rng.integers(0, q.nx - hx + 1))
                win_a = ccds[a].image[dr.start + y : dr.start + y + hy, dc.start + x : dc.start + x + hx]
                win_b = ccds[b].image[dr.start + y : dr.start + y + hy, dc.start + x : dc.start + x + hx]
                if (win_a > SATURATION_LIMIT).any() or (win_b > SATURATION_LIMIT).any():
                    continue
                window = (slice(tr.start + y, tr.start + y + hy), slice(tc.start + x, tc.start + x + hx))
                if static_dq is not None and static_dq[window].any():
                    continue
                rows = slice(tr.start + y, tr.start + y + hy)
                shift = overscans[a].correction[p, rows] - overscans[b].correction[p, rows]
                diff = win_a.astype(np.float64) - win_b - shift[:, None]
                values.append(diff.std(ddof=1))
            if values:
                per_pair.append(np.mean(values) / np.sqrt(2))
                spreads.append(np.std(values, ddof=1) / np.sqrt(2) if len(values) > 1 else 0.0)
        if not per_pair:
            raise RecipeError(f"{ccds[0].where}: no clean window to measure the read noise of port {q.out}")
        ron[p] = np.mean(per_pair)
        err[p] = np.mean(spreads) / np.sqrt(len(per_pair))
    return ron, err


def flag_bad_columns(master: CcdImage, quadrants: list[Quadrant], losigma: float, hisigma: float) -> None:
    """Mark hot and dark columns of a master bias in its DQ (HOTPIXEL / DARKPIXEL bits).

    Per port, each column's mean is compared with the running median of its
    neighbours (31 columns, so the smooth 2-D bias structure does not count); a column
    deviating by more than ``hisigma`` (``losigma`` below) times the robust scatter of
    these deviations is a candidate, and in it the pixels that deviate from the column
    trend by more than ``hisigma`` (``losigma``) times the robust pixel σ of the port are
    flagged. Robust σ = 1.4826·MAD.
    """
    from scipy.ndimage import median_filter

    for q in quadrants:
        data = master.data[q.trimmed]
        dq = master.dq[q.trimmed]
        # column means (robust enough: a single hot pixel makes a candidate column, but
        # then only the pixels that deviate themselves are flagged)
        colmean = data.mean(axis=0, dtype=np.float64)
        trend = median_filter(colmean, size=min(31, colmean.size), mode="nearest")
        dev = colmean - trend
        sigma_col = 1.482602218505602 * np.median(np.abs(dev - np.median(dev)))
        step = max(1, data.shape[0] // 256)  # ~256 rows suffice for the pixel scatter
        resid = (data[::step] - trend[None, :]).ravel()
        sigma_pix = 1.482602218505602 * np.median(np.abs(resid - np.median(resid)))
        if sigma_col <= 0 or sigma_pix <= 0:
            continue
        for col in np.flatnonzero(dev > hisigma * sigma_col):
            hot = data[:, col] - trend[col] > hisigma * sigma_pix
            dq[hot, col] |= DQ_HOTPIXEL
        for col in np.flatnonzero(dev < -losigma * sigma_col):
            dark = data[:, col] - trend[col] < -losigma * sigma_pix
            dq[dark, col] |= DQ_DARKPIXEL


def port_statistics(image: CcdImage, q: Quadrant) -> dict[str, float]:
    """MEDIAN/MEAN/STDEV/MIN/MAX and SLOPE X/Y (adu/pix) of one port's unflagged pixels."""
    data = image.data[q.trimmed]
    good = image.dq[q.trimmed] == 0
    values = data[good] if good.any() else data.ravel()
    colmean = np.where(good, data, 0).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
    rowmean = np.where(good, data, 0).sum(axis=1) / np.maximum(good.sum(axis=1), 1)
    slope_x = np.polyfit(np.arange(colmean.size), colmean, 1)[0] if colmean.size > 1 else 0.0
    slope_y = np.polyfit(np.arange(rowmean.size), rowmean, 1)[0] if rowmean.size > 1 else 0.0
    return {
        "MEDIAN": float(np.median(values)),
        "MEAN": float(values.mean(dtype=np.float64)),
        "STDEV": float(values.std(dtype=np.float64)),
        "MIN": float(values.min()),
        "MAX": float(values.max()),
        "SLOPE X": float(slope_x),
        "SLOPE Y": float(slope_y),
    }
