"""Arc-line detection and identification along one slice (muse_wavecal steps 1-2).

1. :func:`centre_spectrum`: the mean of CENTRE_COLUMNS columns around the slice centre,
   following the trace; :func:`detect_lines`: its local maxima above ``sigma`` in S/N
   (after a running median) whose Gaussian fit passes the DRS limits;
2. :func:`identify`: point-pattern matching of the detected positions with catalogue
   wavelengths: triplets of neighbouring detected lines and of catalogue lines with the
   same spacing ratio (within ``tolerance``, an absolute difference of the ratios in
   [0, 1]) and a dispersion within 1.25 Å/px ± ``dres`` give candidate linear solutions;
   the one matching most lines is refined by iterative polynomial fits. No first guess
   of λ0 is used, so any offset of the wavelength scale is found.

Rows are 0-based in the spectra, detected positions passed to :func:`identify` 1-based;
wavelengths in Å (air).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import median_filter

from recipes.algorithms.tracing import Trace, clipped_polyfit
from recipes.kernels.arclines import MIN_FLUX, NFIT, fit_peaks

if TYPE_CHECKING:  # wavesolution imports this module; the parameters are only annotated here
    from recipes.algorithms.wavesolution import WaveParams

CENTRE_COLUMNS = 4  # columns averaged for the detection spectrum ("column 78, 77..80")
FIT_HALFWIN = 5  # px, half-width of the Gaussian-fit window along y
SIGMA_GUESS = 0.9  # px, start value of the Gaussian sigma
BACKGROUND_WINDOW = 61  # px, running median subtracted before detection
MIN_LINES = 5  # fewest identified lines for a slice solution


def centre_spectrum(
    image: np.ndarray, var: np.ndarray, trace: Trace, slice_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the good pixels of CENTRE_COLUMNS columns around the slice centre, following
    the trace.

    Flagged pixels (infinite variance, :func:`recipes.algorithms.arcs.fit_inputs`) are left out of
    each row's mean, so a dead column through the slice centre costs signal-to-noise, not
    the whole slice. Rows without a good pixel get NaN. Returns (spectrum, variance) along
    y (0-based rows).
    """
    ny, nx = image.shape
    y1 = np.arange(ny) + 1.0
    xc0 = np.polynomial.polynomial.polyval(y1, trace.centre[slice_index]) - 1.0  # 0-based
    first = np.floor(xc0 - 0.5 * CENTRE_COLUMNS + 0.5).astype(int)
    cols = np.clip(first[:, None] + np.arange(CENTRE_COLUMNS)[None, :], 0, nx - 1)
    rows = np.arange(ny)[:, None]
    values, variances = image[rows, cols], var[rows, cols]
    good = np.isfinite(values) & np.isfinite(variances)
    ngood = good.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = np.where(good, values, 0.0).sum(axis=1) / ngood
        svar = np.where(good, variances, 0.0).sum(axis=1) / ngood.astype(np.float64) ** 2
    spec[ngood == 0] = np.nan
    svar[ngood == 0] = np.nan
    return spec, svar


def detect_lines(spec: np.ndarray, svar: np.ndarray, sigma: float) -> np.ndarray:
    """Accepted Gaussian fits (n, NFIT) of the peaks of a spectrum above ``sigma`` in S/N.

    The S/N spectrum is (spec - running median) / noise; its peaks above
    median + sigma × robust deviation are fitted and kept when the fit passes the DRS
    limits. Centres are 0-based rows.
    """
    background = median_filter(spec, size=BACKGROUND_WINDOW, mode="nearest")
    noise = np.sqrt(np.where(svar > 0, svar, np.nan))
    sn = (spec - background) / noise
    good = np.isfinite(sn)
    med = np.median(sn[good])
    dev = 1.4826 * np.median(np.abs(sn[good] - med))
    thresh = med + sigma * dev
    inner = sn[1:-1]
    peaks = np.flatnonzero((inner > thresh) & (inner >= sn[:-2]) & (inner > sn[2:]) & good[1:-1]) + 1
    # Peaks whose window holds less than half the DRS minimum line flux cannot pass the
    # fit limits: skip them (with sigma = 1 most peaks are noise).
    net = spec - background
    window = np.convolve(np.nan_to_num(net), np.ones(2 * FIT_HALFWIN + 1), mode="same")
    peaks = peaks[window[peaks] >= 0.5 * MIN_FLUX]
    fits = fit_peaks(net, svar, peaks.astype(np.float64), FIT_HALFWIN, SIGMA_GUESS)
    fits = fits[np.isfinite(fits[:, 0])]
    if fits.shape[0] == 0:
        return np.zeros((0, NFIT))
    fits = fits[np.argsort(fits[:, 0])]
    # Two peaks of one line converge on the same centre: keep the first of each group.
    keep = np.ones(len(fits), dtype=bool)
    keep[1:] = np.diff(fits[:, 0]) >= 1.0
    return fits[keep]


def _triplets(n: int, maxspan: int) -> np.ndarray:
    """All index triplets i < j < k < n with k - i <= maxspan."""
    out = []
    for i in range(n):
        for k in range(i + 2, min(i + maxspan, n - 1) + 1):
            for j in range(i + 1, k):
                out.append((i, j, k))
    return np.array(out, dtype=int).reshape(-1, 3)


def match_lines(pred: np.ndarray, cat: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """For each predicted λ the nearest catalogue index and |difference|; one-to-one."""
    idx = np.clip(np.searchsorted(cat, pred), 1, cat.size - 1)
    left = cat[idx - 1]
    right = cat[idx]
    nearest = np.where(np.abs(pred - left) <= np.abs(pred - right), idx - 1, idx)
    dist = np.abs(pred - cat[nearest])
    ok = dist < window
    # One catalogue line for at most one peak: the closest one wins.
    order = np.argsort(dist)
    used = set()
    for k in order:
        if not ok[k]:
            continue
        if nearest[k] in used:
            ok[k] = False
        else:
            used.add(nearest[k])
    return np.where(ok, nearest, -1), dist


def identify(peaks: np.ndarray, cat: np.ndarray, params: WaveParams) -> tuple[np.ndarray, np.ndarray]:
    """Identify detected line positions (1-based y, increasing) with catalogue λ (increasing).

    Returns (catalogue index per peak or -1, polynomial λ(y) coefficients of the final
    first-guess solution, raw powers). Raises ValueError when no solution matches at
    least MIN_LINES lines.
    """
    if peaks.size < 3 or cat.size < 3:
        raise ValueError(f"{peaks.size} detected and {cat.size} catalogue lines: too few to match")
    dmin = params.dispersion * (1 - params.dres)
    dmax = params.dispersion * (1 + params.dres)
    pt = _triplets(peaks.size, 3)
    lt = _triplets(cat.size, 4)
    p_span = peaks[pt[:, 2]] - peaks[pt[:, 0]]
    p_ratio = (peaks[pt[:, 1]] - peaks[pt[:, 0]]) / p_span
    l_span = cat[lt[:, 2]] - cat[lt[:, 0]]
    l_ratio = (cat[lt[:, 1]] - cat[lt[:, 0]]) / l_span
    # Compare ratios in blocks to bound memory.
    hyp_d, hyp_l0 = [], []
    for start in range(0, pt.shape[0], 512):
        sl = slice(start, start + 512)
        disp = l_span[None, :] / p_span[sl, None]
        ok = (disp >= dmin) & (disp <= dmax) & (np.abs(p_ratio[sl, None] - l_ratio[None, :]) < params.tolerance)
        pi, li = np.nonzero(ok)
        d = disp[pi, li]
        hyp_d.append(d)
        # λ at y = 0 of the linear solution through the triplet's outer lines
        hyp_l0.append(cat[lt[li, 0]] - d * peaks[pt[start + pi, 0]])
    d = np.concatenate(hyp_d)
    l0 = np.concatenate(hyp_l0)
    if d.size == 0:
        raise ValueError("no line triplet matches the catalogue within the dispersion range")
    # Score each hypothesis by the number of peaks within 2 px of a catalogue line.
    ycen = 0.5 * (peaks.min() + peaks.max())
    key = np.unique(np.round(np.stack([d * 2000.0, (l0 + d * ycen) / 0.5], axis=1)), axis=0, return_index=True)[1]
    d, l0 = d[key], l0[key]
    window = 2.0 * params.dispersion
    best_score, best = -1, 0
    for start in range(0, d.size, 2048):
        pred = l0[start : start + 2048, None] + d[start : start + 2048, None] * peaks[None, :]
        idx = np.clip(np.searchsorted(cat, pred), 1, cat.size - 1)
        dist = np.minimum(np.abs(pred - cat[idx - 1]), np.abs(pred - cat[idx]))
        score = (dist < window).sum(axis=1)
        k = int(np.argmax(score))
        if score[k] > best_score:
            best_score, best = int(score[k]), start + k
    coef = np.array([l0[best], d[best]])
    # Refine: match, fit, tighten; grow the polynomial order with the matches.
    match = np.full(peaks.size, -1)
    window = 2.0 * params.dispersion
    for iteration in range(12):
        pred = np.polynomial.polynomial.polyval(peaks, coef)
        match, dist = match_lines(pred, cat, window)
        ok = match >= 0
        if ok.sum() < MIN_LINES:
            raise ValueError(f"only {ok.sum()} lines identified")
        order = min(1 + iteration // 2, 4, ok.sum() - 2)
        c, kept, mse = clipped_polyfit(peaks[ok], cat[match[ok]], order, sigma=4.0)
        coef = c
        rms = np.sqrt(mse)
        window = max(min(window, 6 * rms + 0.1), 0.5 * params.dispersion)
    pred = np.polynomial.polynomial.polyval(peaks, coef)
    match, _ = match_lines(pred, cat, window)
    if (match >= 0).sum() < MIN_LINES:
        raise ValueError(f"only {(match >= 0).sum()} lines identified")
    return match, coef
