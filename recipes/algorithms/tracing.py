"""Slice tracing on a master flat (the muse_trace step of muse_flat), pure algorithm.

Input: one trimmed CCD image (2-D, 0-based arrays, x along axis 1). Output: per slice,
polynomials in y of order ``order`` for the centre, left and right edge, in the DRS
convention of TRACE_TABLE: **1-based trimmed-CCD coordinates** for both x and y, raw
(unscaled) powers of y.

Steps (recipes.md §3.3, step 4):
1. average ``nsum`` rows per horizontal cut (NaN-aware, so flagged pixels drop out; a
   fully flagged column stays NaN and the edge fit simply leaves it out);
2. on the cut nearest the CCD centre, find the slices as runs above ``edgefrac`` of the
   local maximum (a running maximum over about two slice pitches, so that an illumination
   falloff across the IFU does not lose the dim slices);
3. follow both edges of every slice cut by cut (:func:`recipes.kernels.trace.edge_walk`);
4. reject deviant widths, then fit each edge and the centre with an iteratively clipped
   polynomial, computed in scaled coordinates and converted to raw 1-based powers.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.special import ndtri

from recipes.base import RecipeError
from recipes.kernels.trace import PLATEAU_OFFSET, edge_blur, edge_walk

NSLICES = 48
# Iterative rejection of trace points in the polynomial fits (sigma, passes).
FIT_REJECT_SIGMA = 5.0
FIT_REJECT_PASSES = 5
# Widths further than this many robust sigmas (or 1 px) from a slice's median width are
# rejected before fitting: they come from a cosmic ray or bad column at an edge.
WIDTH_REJECT_SIGMA = 5.0


@dataclass
class TraceSamples:
    """Measured trace points, 1-based coordinates: arrays (ncut, nslice); NaN = rejected."""

    y: np.ndarray  # (ncut,) row of each cut
    left: np.ndarray
    right: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return 0.5 * (self.left + self.right)


@dataclass
class Trace:
    """Trace polynomials of one IFU, DRS convention (1-based, raw powers of y).

    ``centre``, ``left``, ``right``: (nslice, order + 1) coefficients c_k of x(y) = Σ c_k y^k;
    ``mse``: (nslice, 3) mean-squared residuals (centre, left, right) in pix²;
    ``width``: (nslice,) mean measured width in pix.
    """

    centre: np.ndarray
    left: np.ndarray
    right: np.ndarray
    mse: np.ndarray
    width: np.ndarray
    samples: TraceSamples | None

    @property
    def nslice(self) -> int:
        return self.centre.shape[0]

    def evaluate(self, which: str, y1: np.ndarray | float) -> np.ndarray:
        """x (1-based) of ``which`` (centre/left/right) for every slice at 1-based rows y1.

        Returns (nslice,) + shape(y1).
        """
        coeffs = getattr(self, which)
        return np.stack([np.polynomial.polynomial.polyval(y1, c) for c in coeffs])


def scaled_to_raw(coeffs: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Coefficients a_k of Σ a_k t^k, t = (y - offset) / scale, as raw powers of y."""
    order = len(coeffs) - 1
    raw = np.zeros(order + 1)
    for k, a in enumerate(coeffs):
        for p in range(k + 1):
            raw[p] += a * comb(k, p) * (-offset) ** (k - p) / scale**k
    return raw


def clipped_polyfit(
    x: np.ndarray,
    y: np.ndarray,
    order: int,
    sigma: float = FIT_REJECT_SIGMA,
    passes: int = FIT_REJECT_PASSES,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Iteratively clipped least-squares polynomial y(x), returned as raw powers of x.

    The fit is done in scaled coordinates for stability (normal equations: the scaled
    Vandermonde matrix is well conditioned and this is much faster than an SVD for the
    thousands of small fits of a slice). Returns (coefficients, mask of
    kept points, mean-squared residual of the kept points). Rejection uses the RMS of
    the kept residuals, one pass removing every point beyond ``sigma`` RMS.
    """
    good = np.isfinite(x) & np.isfinite(y)
    if weights is not None:
        good &= np.isfinite(weights) & (weights > 0)
    if good.sum() <= order:
        raise ValueError(f"{good.sum()} points cannot fit a polynomial of order {order}")
    offset = 0.5 * (x[good].min() + x[good].max())
    scale = max(0.5 * (x[good].max() - x[good].min()), 1.0)
    t = (x - offset) / scale
    w = np.ones_like(y) if weights is None else weights
    for _ in range(passes + 1):
        vander = np.vander(t[good], order + 1, increasing=True)
        wv = vander * w[good, None]
        # einsum, not BLAS matmul: OpenBLAS threads contend with numba's worker threads.
        coef = np.linalg.solve(np.einsum("ki,kj->ij", wv, vander), np.einsum("ki,k->i", wv, y[good]))
        resid = y - np.polynomial.polynomial.polyval(t, coef)
        rms = np.sqrt(np.mean(resid[good] ** 2))
        keep = good & (np.abs(resid) <= sigma * rms) if rms > 0 else good
        if keep.sum() <= order or keep.sum() == good.sum():
            break
        good = keep
    mse = float(np.mean(resid[good] ** 2))
    return scaled_to_raw(coef, offset, scale), good, mse


def horizontal_cuts(image: np.ndarray, nsum: int) -> tuple[np.ndarray, np.ndarray]:
    """Averages of ``nsum`` consecutive rows (NaN pixels ignored): (cuts, 0-based row centres).

    A last incomplete group of rows is dropped, as the DRS does (4112 rows → 128 cuts at 32).
    """
    ny, nx = image.shape
    ncut = ny // nsum
    if ncut < 1:
        raise RecipeError(f"nsum={nsum} is larger than the image height ({ny} rows)")
    block = image[: ncut * nsum].reshape(ncut, nsum, nx)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        cuts = np.nanmean(block, axis=1)
    ycen = np.arange(ncut) * nsum + 0.5 * (nsum - 1)
    return cuts, ycen


class _quiet_nanmean:
    """Silence numpy's 'Mean of empty slice' for fully flagged columns (they become NaN)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _interpolate_bad(cuts: np.ndarray) -> np.ndarray:
    """Replace NaN pixels of each cut (fully flagged columns) by linear interpolation in x."""
    out = cuts.copy()
    x = np.arange(cuts.shape[1])
    for row in out:
        bad = ~np.isfinite(row)
        if bad.any() and (~bad).sum() >= 2:
            row[bad] = np.interp(x[bad], x[~bad], row[~bad])
    return out


def locate_slices(profile: np.ndarray, edgefrac: float, nslices: int = NSLICES) -> tuple[np.ndarray, np.ndarray]:
    """First-guess left and right edges (0-based pix) of the slices in one horizontal cut.

    Pixels above ``edgefrac`` of the running maximum over about two slice pitches form
    runs; runs narrower than half the median run are noise. Raises RecipeError unless
    exactly ``nslices`` are found.
    """
    prof = np.nan_to_num(profile, nan=0.0)
    nx = prof.size
    pitch = nx / nslices
    smooth = uniform_filter1d(prof, 3)
    local_max = maximum_filter1d(smooth, size=int(2 * pitch) | 1)
    above = smooth > edgefrac * local_max
    # Ignore dark regions where even the local maximum is tiny (detector edges).
    above &= local_max > 0.05 * np.nanmax(local_max)
    diff = np.diff(np.concatenate(([0], above.astype(np.int8), [0])))
    starts = np.flatnonzero(diff == 1)
    stops = np.flatnonzero(diff == -1) - 1
    widths = stops - starts + 1
    if widths.size:
        keep = widths >= 0.5 * np.median(widths)
        starts, stops = starts[keep], stops[keep]
    if starts.size != nslices:
        raise RecipeError(
            f"found {starts.size} slices instead of {nslices} on the central cut of the flat "
            f"(edgefrac={edgefrac}); is this a lamp flat?"
        )
    return starts - 0.5, stops + 0.5


def typical_blur(cut: np.ndarray, left0: np.ndarray, right0: np.ndarray) -> float:
    """Median Gaussian blur (px) of all slice edges of one cut (0 if none is measurable).

    Used where a flagged column sits on an edge: there the blur is fixed to this value
    instead of being fitted, which would be degenerate.
    """
    npl = int(np.median(right0 - left0)) - 2 * PLATEAU_OFFSET - 2
    sig = [edge_blur(cut, g, True, npl) for g in left0] + [edge_blur(cut, g, False, npl) for g in right0]
    sig = np.array(sig)
    sig = sig[np.isfinite(sig)]
    return float(np.median(sig)) if sig.size else 0.0


def trace_image(image: np.ndarray, nsum: int = 32, order: int = 5, edgefrac: float = 0.5) -> Trace:
    """Trace the slices of a flat-field image (2-D, 0-based; NaN marks bad pixels)."""
    if not 0.0 < edgefrac < 1.0:
        raise RecipeError(f"edgefrac must lie between 0 and 1, not {edgefrac}")
    cuts, ycen = horizontal_cuts(np.asarray(image, dtype=np.float64), nsum)
    ncut = cuts.shape[0]
    if ncut <= order + 1:
        raise RecipeError(f"only {ncut} cuts of nsum={nsum} rows: too few to fit order {order}")
    start = int(np.argmin(np.abs(ycen - 0.5 * (image.shape[0] - 1))))
    left0, right0 = locate_slices(_interpolate_bad(cuts[start : start + 1])[0], edgefrac)
    zfrac = float(ndtri(edgefrac)) if edgefrac != 0.5 else 0.0
    # The first guesses are run edges; refine them on the central cut before walking.
    blur = typical_blur(cuts[start], left0, right0)
    left, right = edge_walk(cuts, left0.astype(np.float64), right0.astype(np.float64), start, zfrac, blur)
    width = right - left
    med = np.nanmedian(width, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(width - med), axis=0)
    bad = ~(np.abs(width - med) <= np.maximum(WIDTH_REJECT_SIGMA * mad, 1.0))
    left[bad] = np.nan
    right[bad] = np.nan
    y1 = ycen + 1.0
    samples = TraceSamples(y=y1, left=left + 1.0, right=right + 1.0)
    nslice = left.shape[1]
    coeffs = {name: np.zeros((nslice, order + 1)) for name in ("centre", "left", "right")}
    mse = np.zeros((nslice, 3))
    for s in range(nslice):
        for j, (name, xs) in enumerate(
            (("centre", samples.centre[:, s]), ("left", samples.left[:, s]), ("right", samples.right[:, s]))
        ):
            try:
                coef, kept, err = clipped_polyfit(y1, xs, order)
            except ValueError:
                raise RecipeError(
                    f"slice {s + 1}: only {np.isfinite(xs).sum()} good trace points for order {order}"
                ) from None
            coeffs[name][s] = coef
            mse[s, j] = err
    return Trace(
        centre=coeffs["centre"],
        left=coeffs["left"],
        right=coeffs["right"],
        mse=mse,
        width=np.nanmean(samples.right - samples.left, axis=0),
        samples=samples,
    )


def slice_mask(trace: Trace, shape: tuple[int, int]) -> np.ndarray:
    """Integer image (0-based) with the 1-based slice number inside each slice, 0 outside.

    A pixel belongs to a slice when its centre lies between the traced edges. Each slice
    is filled within its own column band, so this stays cheap on a full CCD.
    """
    ny, nx = shape
    y1 = np.arange(ny) + 1.0
    left = trace.evaluate("left", y1)  # (nslice, ny), 1-based x
    right = trace.evaluate("right", y1)
    mask = np.zeros(shape, dtype=np.int16)
    for number, band in slice_bands(trace, shape):
        s = number - 1
        x1 = np.arange(band.start, band.stop) + 1.0
        inside = (x1[None, :] >= left[s][:, None]) & (x1[None, :] <= right[s][:, None])
        mask[:, band][inside] = number
    return mask


def slice_bands(trace: Trace, shape: tuple[int, int]) -> list[tuple[int, slice]]:
    """(slice number, column band) of every slice: the columns :func:`slice_mask` may fill."""
    ny, nx = shape
    y1 = np.arange(ny) + 1.0
    left = trace.evaluate("left", y1)
    right = trace.evaluate("right", y1)
    out = []
    for s in range(trace.nslice):
        lo = max(int(np.floor(left[s].min())) - 1, 0)
        hi = min(int(np.ceil(right[s].max())) + 1, nx)
        if hi > lo:
            out.append((s + 1, slice(lo, hi)))
    return out
