"""Sky-line wavelength zero point of a pixel table (muse_scibasic step 3, ``skylines``).

Around each catalogue sky line the good rows within ±``skyhalfwidth`` form a spectrum in
``skybinsize`` bins (σ-clipped bin means, ``skyreject``); a Gaussian plus constant fitted
to it gives the line's centre (:func:`fit_sky_line`). The weighted mean of catalogue −
measured over the lines found is the shift added to ``lambda`` (:func:`lambda_shift`),
recorded as ``ESO QC SCIBASIC LAMBDA SHIFT``. Wavelengths in Å (air).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recipes.kernels.pixtable_build import good_lambda_range, rows_near
from recipes.algorithms.pixtable import PixTable

#: A sky-line fit counts only when its amplitude exceeds this many standard errors.
MIN_LINE_SIGNIFICANCE = 10.0


def _gauss(x, amp, centre, sigma, bg):
    return amp * np.exp(-0.5 * ((x - centre) / sigma) ** 2) + bg


def fit_sky_line(
    lam: np.ndarray, data: np.ndarray, line: float, halfwidth: float, binsize: float, reject: tuple[float, float, int]
) -> tuple[float, float] | None:
    """Centre (Å) and its error of one sky line in pixel-table rows (good rows only), or None.

    The rows within ±``halfwidth`` form a spectrum in ``binsize`` bins (bin mean after
    ``reject`` = (hi, lo, niter) σ-clipping within each bin); a Gaussian plus constant is
    fitted to it.
    """
    from scipy.optimize import curve_fit

    lo_edge = line - halfwidth
    sel = np.abs(lam - line) < halfwidth
    if sel.sum() < 20:
        return None
    lsel = lam[sel].astype(np.float64)
    dsel = data[sel].astype(np.float64)
    nbin = int(np.ceil(2 * halfwidth / binsize))
    idx = np.clip(((lsel - lo_edge) / binsize).astype(np.int64), 0, nbin - 1)
    keep = np.ones(idx.size, dtype=bool)
    hi, lo, niter = reject
    for _ in range(niter + 1):
        n = np.bincount(idx[keep], minlength=nbin)
        s1 = np.bincount(idx[keep], weights=dsel[keep], minlength=nbin)
        s2 = np.bincount(idx[keep], weights=dsel[keep] ** 2, minlength=nbin)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        if _ == niter:
            break
        dev = dsel - mean[idx]
        new = keep & (dev <= hi * std[idx]) & (dev >= -lo * std[idx])
        if new.sum() == keep.sum():
            break
        keep = new
    good = n > 0
    if good.sum() < 10:
        return None
    x = lo_edge + (np.arange(nbin) + 0.5) * binsize
    x, y = x[good], mean[good]
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(n[good] > 1, std[good] / np.sqrt(n[good]), np.nan)
    err = np.where(np.isfinite(err) & (err > 0), err, np.nanmedian(err) if np.isfinite(err).any() else 1.0)
    bg0 = float(np.median(y))
    central = np.abs(x - line) < 0.5 * halfwidth
    peak = int(np.argmax(np.where(central, y, -np.inf)))
    p0 = (float(y[peak] - bg0), float(x[peak]), 1.0, bg0)
    try:
        popt, pcov = curve_fit(_gauss, x, y, p0=p0, sigma=err, absolute_sigma=False, maxfev=2000)
    except (RuntimeError, ValueError):
        return None
    amp, centre, sigma, _ = popt
    errs = np.sqrt(np.diag(pcov)) if np.all(np.isfinite(pcov)) else np.full(4, np.inf)
    cerr = float(errs[1])
    # a line, not a noise bump: significant amplitude, width of an LSF, near the catalogue
    plausible = amp > MIN_LINE_SIGNIFICANCE * errs[0] and abs(centre - line) < 0.5 * halfwidth
    plausible = plausible and 0.1 < abs(sigma) < 0.5 * halfwidth
    if not (plausible and np.isfinite(cerr) and cerr > 0):
        return None
    return float(centre), cerr


def lambda_shift(pt: PixTable, lines: Sequence[float], halfwidth: float, binsize: float,
                 reject: tuple[float, float, int]) -> tuple[float, list[tuple[float, float, float]]]:  # fmt: skip
    """Weighted mean offset catalogue − measured (Å) of the sky lines inside the table's
    range, and per line (catalogue λ, offset, error). 0 when no line could be measured."""
    # one pass per line over the columns (numba), no 13 M-row masks or copies per IFU
    ngood, lmin, lmax = good_lambda_range(pt.lam, pt.data, pt.dq)
    if ngood == 0:
        return 0.0, []
    found = []
    for line in lines:
        if line - halfwidth < lmin or line + halfwidth > lmax:
            continue
        fit = fit_sky_line(*rows_near(pt.lam, pt.data, pt.dq, line, halfwidth), line, halfwidth, binsize, reject)
        if fit is not None:
            found.append((line, line - fit[0], fit[1]))
    if not found:
        return 0.0, []
    w = np.array([1.0 / f[2] ** 2 for f in found])
    shift = float(np.sum(w * np.array([f[1] for f in found])) / w.sum())
    return shift, found
