"""Wavelength calibration of one IFU from arc images (the muse_wavecal algorithm), pure.

Inputs: one reduced arc image per lamp (2-D count images and variances, 0-based arrays,
x along axis 1), the slice trace (:class:`recipes.tracing.Trace`) and the LINE_CATALOG
rows. Output per slice: the coefficients ``wlc[I, J]`` of λ(x, y) = Σ wlc[I, J] x^I y^J
in the DRS convention of WAVECAL_TABLE (**absolute 1-based trimmed-CCD coordinates**,
raw powers; Å in air), the fit RMS and the line measurements for QC and residual tables.

Steps per slice (recipes.md §3.4):
1. for each lamp, average the 4 columns around the slice centre into a spectrum along y,
   subtract a running median, and keep the local maxima above ``sigma`` in S/N whose
   Gaussian fit passes the DRS limits;
2. identify them with the lamp's catalogue lines by point-pattern matching: triplets of
   neighbouring detected lines and of catalogue lines with the same spacing ratio (within
   ``tolerance``, an absolute difference of the ratios in [0, 1]) and a dispersion
   within 1.25 Å/px ± ``dres`` give candidate linear solutions; the one matching most
   lines is refined by iterative polynomial fits. No first guess of λ0 is used, so any
   offset of the wavelength scale is found. A joint solution of all lamps then matches
   every lamp's detections, also those of lamps with too few lines for pattern matching;
3. fit each identified, unblended line of quality ≥ 2 column by column with a Gaussian
   (:func:`recipes.kernels.arclines.fit_lines_across`) and its centre y(x) with a
   polynomial of ``xorder``, rejecting beyond ``linesigma``;
4. pool all lamps and fit the tensor polynomial of ``xorder`` × ``yorder`` with iterative
   rejection beyond ``fitsigma`` × RMS and weights per ``fitweighting`` (the y order of
   the x-dependent terms chosen by BIC, see :func:`fit_2d`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import comb

import numpy as np
from scipy.ndimage import median_filter

from .base import RecipeError
from .instrument import wavecal_eval
from .kernels.arclines import FWHM_PER_SIGMA, MIN_FLUX, NFIT, fit_lines_across, fit_peaks
from .tracing import Trace, clipped_polyfit

NOMINAL_DISPERSION = 1.25  # Å/px, kMuseSpectralSamplingA
# Ions of the catalogue that each arc lamp shows (``ion`` column of LINE_CATALOG).
LAMP_IONS: dict[str, tuple[str, ...]] = {
    "Ne": ("NeI", "NeII"),
    "Xe": ("XeI", "XeII"),
    "HgCd": ("HgI", "HgII", "CdI", "CdII"),
}
CENTRE_COLUMNS = 4  # columns averaged for the detection spectrum ("column 78, 77..80")
FIT_HALFWIN = 5  # px, half-width of the Gaussian-fit window along y
SIGMA_GUESS = 0.9  # px, start value of the Gaussian sigma
BACKGROUND_WINDOW = 61  # px, running median subtracted before detection
# A catalogue line with another line of the same lamp closer than this (Å) that is
# brighter than BLEND_FLUX of it is a blend: identified but left out of the fit.
BLEND_DISTANCE = 8.0
BLEND_FLUX = 0.01
MIN_LINES = 5  # fewest identified lines for a slice solution
REJECT_FLOOR = 1e-4  # Å, smallest rejection limit of the 2-D fit
EDGE_MARGIN = 1.0  # px kept clear of the traced slice edges when choosing columns


@dataclass
class LineCatalog:
    """Rows of LINE_CATALOG: λ (Å, air, increasing), flux, ion name and quality flag."""

    lam: np.ndarray
    flux: np.ndarray
    ion: np.ndarray
    quality: np.ndarray

    def for_lamp(self, lamp: str, where: str = "LINE_CATALOG") -> LineCatalog:
        """All catalogue lines of one lamp (any quality; blends need the unused ones too).

        RecipeError for an unknown lamp or a lamp without a line of quality ≥ 1, at once:
        the DRS 2.8.7 spins for many minutes in that case instead.
        """
        if lamp not in LAMP_IONS:
            raise RecipeError(f"{where}: unknown arc lamp {lamp!r} (known: {', '.join(LAMP_IONS)})")
        ions = {i.lower() for i in LAMP_IONS[lamp]}
        sel = np.array([str(i).strip().lower() in ions for i in self.ion], dtype=bool)
        if not (sel & (self.quality >= 1)).any():
            ions = ", ".join(LAMP_IONS[lamp])
            raise RecipeError(f"{where}: no usable lines (quality >= 1) for lamp {lamp} (ions {ions})")
        return LineCatalog(self.lam[sel], self.flux[sel], self.ion[sel], self.quality[sel])

    @property
    def usable(self) -> np.ndarray:
        """Mask of lines usable for pattern matching (quality ≥ 1)."""
        return self.quality >= 1

    def blended(self) -> np.ndarray:
        """Mask of lines with a neighbour within BLEND_DISTANCE brighter than BLEND_FLUX of them."""
        near = np.abs(self.lam[:, None] - self.lam[None, :]) < BLEND_DISTANCE
        bright = self.flux[None, :] > BLEND_FLUX * self.flux[:, None]
        np.fill_diagonal(near, False)
        return (near & bright).any(axis=1)


@dataclass
class WaveParams:
    """The DRS parameters used by the algorithm (recipes.md §3.4 defaults)."""

    sigma: float = 1.0
    dres: float = 0.05
    tolerance: float = 0.1
    xorder: int = 2
    yorder: int = 6
    linesigma: float = 2.5
    fitsigma: float = 3.0
    fitweighting: str = "cerrscatter"
    dispersion: float = NOMINAL_DISPERSION


@dataclass
class LineMeasurements:
    """All accepted column fits of one slice (1-based x, y), one entry per position."""

    x: np.ndarray
    y: np.ndarray
    lam: np.ndarray
    cerr: np.ndarray
    sigma: np.ndarray  # px
    flux: np.ndarray
    scatter: np.ndarray  # px, RMS of the line's y(x) fit, per position
    line: np.ndarray  # index of the line within the slice's identified lines
    lamp: np.ndarray  # lamp name per position


@dataclass
class SliceSolution:
    """Result for one slice: coefficients wlc[I, J] (1-based, raw powers), fit RMS (Å)."""

    slice_no: int
    wlc: np.ndarray
    rms: float
    mse: float
    ndet: int
    nid: int
    nfit_lines: int
    measurements: LineMeasurements
    kept: np.ndarray  # mask over measurements kept in the final fit
    residual_log: list[tuple[int, np.ndarray, np.ndarray, float]] = field(default_factory=list)
    # (iteration, indices into measurements, residuals in Å, rejection limit in Å)
    detections: dict[str, np.ndarray] = field(default_factory=dict)  # lamp -> detected y (1-based)
    identified: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # lamp -> (y, λ)

    def wavelength(self, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
        return evaluate_2d(self.wlc, x1, y1)


# --------------------------------------------------------------------------------------
# Polynomials


def _raw_matrix(order: int, offset: float, scale: float) -> np.ndarray:
    """M with raw = M @ scaled for a 1-D polynomial in t = (v - offset) / scale."""
    m = np.zeros((order + 1, order + 1))
    for k in range(order + 1):
        for p in range(k + 1):
            m[p, k] = comb(k, p) * (-offset) ** (k - p) / scale**k
    return m


def evaluate_2d(wlc: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """λ = Σ wlc[I, J] x^I y^J in Å (the DRS WAVECAL_TABLE polynomial, 1-based x, y)."""
    return wavecal_eval(wlc, x, y)


def _weighted_lsq(design: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares through the normal equations.

    The design columns are powers of coordinates scaled to [-1, 1], so the normal matrix
    is well conditioned; this is ~50x faster than an SVD-based lstsq for the ~2000 x 21
    systems of a slice, and the accuracy (tested) is far below 1e-6 Å.
    """
    wd = design * weights[:, None]
    # einsum, not BLAS matmul: OpenBLAS threads spin against numba's worker threads and
    # made these tiny products 100x slower on a loaded machine.
    return np.linalg.solve(np.einsum("ki,kj->ij", wd, design), np.einsum("ki,k->i", wd, values))


def fit_2d(
    x: np.ndarray,
    y: np.ndarray,
    lam: np.ndarray,
    weights: np.ndarray,
    xorder: int,
    yorder: int,
    fitsigma: float,
    max_iter: int = 20,
) -> tuple[np.ndarray, np.ndarray, float, list[tuple[int, np.ndarray, np.ndarray, float]]]:
    """Iteratively clipped weighted tensor polynomial λ(x, y), raw powers of x and y.

    Each pass rejects the points beyond ``fitsigma`` times the RMS of the kept residuals
    (the DRS rejects in Å), until none goes. The terms x^I y^J with I ≥ 1 (the change of
    the line curvature along the slice) go up to a y order chosen between 0 and
    ``yorder`` by the Bayesian information criterion, the I = 0 terms always to
    ``yorder``: the DRS always fits the full tensor, whose high-order cross terms are
    unconstrained beyond the first and last lines and there moved λ by up to 0.08 Å on
    the simulated mini CCD (0.026 Å with the selection). Unused coefficients are zero.
    Returns (wlc[xorder+1, yorder+1], kept mask, RMS of the kept residuals in Å,
    per-iteration log for WAVECAL_RESIDUALS).
    """
    xc, xs = 0.5 * (x.min() + x.max()), max(0.5 * (x.max() - x.min()), 1.0)
    yc, ys = 0.5 * (y.min() + y.max()), max(0.5 * (y.max() - y.min()), 1.0)
    u = (x - xc) / xs
    v = (y - yc) / ys
    good = np.isfinite(lam) & np.isfinite(weights) & (weights > 0)
    if not good.any():
        raise ValueError("no line positions to fit")
    sw = weights / np.median(weights[good])
    full_terms = [(i, j) for i in range(xorder + 1) for j in range(yorder + 1)]
    full_design = np.stack([u**i * v**j for i, j in full_terms], axis=1)
    best = None
    for cross in range(yorder + 1) if xorder > 0 else (0,):
        terms = [(i, j) for i, j in full_terms if i == 0 or j <= cross]
        columns = [full_terms.index(t) for t in terms]
        result = _clipped_fit(full_design[:, columns], lam, sw, good, fitsigma, max_iter)
        if best is None or result[4] < best[4]:
            best = result + (terms,)
    coeffs, kept, rms, log, _, terms = best
    scaled = np.zeros((xorder + 1, yorder + 1))
    for (i, j), c in zip(terms, coeffs):
        scaled[i, j] = c
    wlc = _raw_matrix(xorder, xc, xs) @ scaled @ _raw_matrix(yorder, yc, ys).T
    return wlc, kept, rms, log


def _clipped_fit(
    design: np.ndarray,
    lam: np.ndarray,
    sw: np.ndarray,
    good: np.ndarray,
    fitsigma: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, float, list, float]:
    """One clipped fit of the design columns (first column constant): (coeffs, kept, rms, log, BIC)."""
    nterms = design.shape[1]
    kept = good.copy()
    lam_ref = float(np.median(lam[kept]))
    log = []
    coeffs = np.zeros(nterms)
    rms = np.nan
    resid = np.zeros_like(lam)
    for iteration in range(1, max_iter + 1):
        if kept.sum() <= nterms:
            raise ValueError(f"{kept.sum()} line positions cannot fit {nterms} coefficients")
        coeffs = _weighted_lsq(design[kept], lam[kept] - lam_ref, sw[kept])
        coeffs[0] += lam_ref
        resid = lam - design @ coeffs
        rms = float(np.sqrt(np.mean(resid[kept] ** 2)))
        # The floor keeps an exact (noise-free) fit from clipping round-off.
        limit = max(fitsigma * rms, REJECT_FLOOR)
        idx = np.flatnonzero(kept)
        log.append((iteration, idx, resid[idx], limit))
        newkept = kept & (np.abs(resid) <= limit)
        if newkept.sum() == kept.sum():
            break
        kept = newkept
    n = int(kept.sum())
    rss = float(np.sum(sw[kept] * resid[kept] ** 2))
    bic = n * np.log(max(rss, 1e-300) / n) + nterms * np.log(n)
    return coeffs, kept, rms, log, bic


# --------------------------------------------------------------------------------------
# Detection and identification


def centre_spectrum(
    image: np.ndarray, var: np.ndarray, trace: Trace, slice_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the good pixels of CENTRE_COLUMNS columns around the slice centre, following
    the trace.

    Flagged pixels (infinite variance, :func:`recipes.wavecal.fit_inputs`) are left out of
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


def _match(pred: np.ndarray, cat: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
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
        match, dist = _match(pred, cat, window)
        ok = match >= 0
        if ok.sum() < MIN_LINES:
            raise ValueError(f"only {ok.sum()} lines identified")
        order = min(1 + iteration // 2, 4, ok.sum() - 2)
        c, kept, mse = clipped_polyfit(peaks[ok], cat[match[ok]], order, sigma=4.0)
        coef = c
        rms = np.sqrt(mse)
        window = max(min(window, 6 * rms + 0.1), 0.5 * params.dispersion)
    pred = np.polynomial.polynomial.polyval(peaks, coef)
    match, _ = _match(pred, cat, window)
    if (match >= 0).sum() < MIN_LINES:
        raise ValueError(f"only {(match >= 0).sum()} lines identified")
    return match, coef


# --------------------------------------------------------------------------------------
# Per-slice calibration


def slice_columns(trace: Trace, slice_index: int, shape: tuple[int, int]) -> np.ndarray:
    """0-based columns lying at least EDGE_MARGIN inside the slice at some row."""
    ny, nx = shape
    y1 = np.arange(1, ny + 1, dtype=np.float64)
    left = np.polynomial.polynomial.polyval(y1, trace.left[slice_index]) - 1.0
    right = np.polynomial.polynomial.polyval(y1, trace.right[slice_index]) - 1.0
    lo = max(int(np.ceil(left.min() + EDGE_MARGIN)), 0)
    hi = min(int(np.floor(right.max() - EDGE_MARGIN)), nx - 1)
    return np.arange(lo, hi + 1)


def calibrate_slice(
    arcs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    catalogs: Mapping[str, LineCatalog],
    trace: Trace,
    slice_index: int,
    params: WaveParams,
) -> SliceSolution:
    """Wavelength solution of one slice from the per-lamp arc images ``arcs[lamp] = (data, var)``.

    Raises RecipeError naming the slice when too few lines are identified or measured.
    """
    slice_no = slice_index + 1
    xs, ys, lams, cerrs, sigs, fluxes, scats, lines, lamps = [], [], [], [], [], [], [], [], []
    ndet = nid = 0
    detections, identified = {}, {}
    line_counter = 0
    # Detection and pattern matching per lamp.
    found: dict[str, np.ndarray] = {}
    pairs_y, pairs_lam = [], []
    for lamp, (image, var) in arcs.items():
        cat = catalogs[lamp]
        spec, svar = centre_spectrum(image, var, trace, slice_index)
        det = detect_lines(spec, svar, params.sigma)
        ndet += det.shape[0]
        found[lamp] = det
        detections[lamp] = det[:, 0] + 1.0
        usable = cat.lam[cat.usable]
        try:
            match, _ = identify(det[:, 0] + 1.0, usable, params)
        except ValueError:
            continue  # a lamp with few lines in range is matched with the joint solution below
        ok = match >= 0
        pairs_y.append(det[ok, 0] + 1.0)
        pairs_lam.append(usable[match[ok]])
    if not pairs_y:
        raise RecipeError(
            f"slice {slice_no}: no lamp's arc lines match LINE_CATALOG ({ndet} lines detected); "
            "check the lamps and the catalogue"
        )
    # Joint first guess λ(y) through the lines of every lamp, then every lamp's detections
    # (also those of lamps with too few lines for pattern matching) matched against it.
    yj, lj = np.concatenate(pairs_y), np.concatenate(pairs_lam)
    order = int(min(4, max(1, yj.size // 4)))
    guess, kept, mse = clipped_polyfit(yj, lj, order, sigma=4.0)
    window = max(5.0 * np.sqrt(mse), 0.4 * params.dispersion)
    for lamp, (image, var) in arcs.items():
        cat = catalogs[lamp]
        det = found[lamp]
        if det.shape[0] == 0:
            continue
        usable = cat.lam[cat.usable]
        match, _ = _match(np.polynomial.polynomial.polyval(det[:, 0] + 1.0, guess), usable, window)
        ok = match >= 0
        nid += int(ok.sum())
        identified[lamp] = (det[ok, 0] + 1.0, usable[match[ok]])
        # Lines for the fit: quality ≥ 2 and no blend among all the lamp's catalogue lines.
        blended = cat.blended()
        index = np.flatnonzero(cat.usable)[match[ok]]
        use = ok.copy()
        use[ok] = (cat.quality[index] >= 2) & ~blended[index]
        if not use.any():
            continue
        lam_use = usable[match[use]]
        ycentre = det[use, 0]
        # Every column the slice covers at some height; each column fit is then kept only
        # when it lies EDGE_MARGIN inside the slice at the line's own row (tilted slices).
        cols = slice_columns(trace, slice_index, image.shape)
        xc0 = np.polynomial.polynomial.polyval(0.5 * (image.shape[0] + 1), trace.centre[slice_index]) - 1.0
        start = int(np.argmin(np.abs(cols - xc0)))
        fits = fit_lines_across(image, var, cols, start, ycentre, FIT_HALFWIN, SIGMA_GUESS)
        yfit1 = fits[:, :, 0] + 1.0
        with np.errstate(invalid="ignore"):
            left1 = np.polynomial.polynomial.polyval(yfit1, trace.left[slice_index])
            right1 = np.polynomial.polynomial.polyval(yfit1, trace.right[slice_index])
            outside = (cols[None, :] + 1.0 < left1 + EDGE_MARGIN) | (cols[None, :] + 1.0 > right1 - EDGE_MARGIN)
        fits[outside] = np.nan
        for li in range(fits.shape[0]):
            good = np.isfinite(fits[li, :, 0])
            if good.sum() < params.xorder + 3:
                continue
            x1 = cols[good] + 1.0
            y1 = fits[li, good, 0] + 1.0
            try:
                _, kept, mse = clipped_polyfit(x1, y1, params.xorder, sigma=params.linesigma)
            except ValueError:
                continue
            n = int(kept.sum())
            xs.append(x1[kept])
            ys.append(y1[kept])
            lams.append(np.full(n, lam_use[li]))
            cerrs.append(fits[li, good, 1][kept])
            sigs.append(fits[li, good, 2][kept])
            fluxes.append(fits[li, good, 3][kept])
            scats.append(np.full(n, np.sqrt(mse)))
            lines.append(np.full(n, line_counter))
            lamps.append(np.full(n, lamp, dtype=object))
            line_counter += 1
    if line_counter < MIN_LINES:
        raise RecipeError(
            f"slice {slice_no}: only {line_counter} arc lines identified and measured "
            f"({ndet} detected); check the lamps and LINE_CATALOG"
        )
    meas = LineMeasurements(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        lam=np.concatenate(lams),
        cerr=np.concatenate(cerrs),
        sigma=np.concatenate(sigs),
        flux=np.concatenate(fluxes),
        scatter=np.concatenate(scats),
        line=np.concatenate(lines),
        lamp=np.concatenate(lamps),
    )
    weights = fit_weights(meas, params.fitweighting)
    try:
        wlc, kept, rms, log = fit_2d(meas.x, meas.y, meas.lam, weights, params.xorder, params.yorder, params.fitsigma)
    except ValueError as exc:
        raise RecipeError(f"slice {slice_no}: {exc}") from None
    nfit_lines = len(np.unique(meas.line[kept]))
    return SliceSolution(
        slice_no=slice_no,
        wlc=wlc,
        rms=rms,
        mse=rms**2,
        ndet=ndet,
        nid=nid,
        nfit_lines=nfit_lines,
        measurements=meas,
        kept=kept,
        residual_log=log,
        detections=detections,
        identified=identified,
    )


def fit_weights(meas: LineMeasurements, fitweighting: str) -> np.ndarray:
    """Weights of the 2-D fit: uniform, 1/cerr², 1/scatter² or 1/(cerr² + scatter²)."""
    floor = 1e-4  # px; keeps noise-free tests finite
    if fitweighting == "uniform":
        return np.ones_like(meas.x)
    if fitweighting == "cerr":
        return 1.0 / np.maximum(meas.cerr, floor) ** 2
    if fitweighting == "scatter":
        return 1.0 / np.maximum(meas.scatter, floor) ** 2
    if fitweighting == "cerrscatter":
        return 1.0 / (np.maximum(meas.cerr, floor) ** 2 + meas.scatter**2)
    raise RecipeError(f"fitweighting must be uniform, cerr, scatter or cerrscatter, not {fitweighting!r}")


def line_fwhm_angstrom(solution: SliceSolution) -> np.ndarray:
    """FWHM (Å) of every kept measurement: σ_px × 2.3548 × local dλ/dy."""
    m = solution.measurements
    dldy = (solution.wavelength(m.x, m.y + 0.5) - solution.wavelength(m.x, m.y - 0.5))
    return m.sigma * FWHM_PER_SIGMA * dldy
