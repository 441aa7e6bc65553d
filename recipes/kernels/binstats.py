"""Per-bin σ-clipped means of large row sets (white image and sky spectrum of muse_scipost).

:func:`clipped_bin_mean` groups ``values`` by integer ``bins`` with a stable counting sort
(O(n), input order kept inside each bin), then, in parallel over the bins, sorts each
bin's values to find its median and the median absolute deviation (MAD), rejects the
values more than ``sigma`` × 1.4826 MAD from the median and sums the rest in input order.
:func:`clipped_bin_mean_reference` is the plain-numpy version (two global ``lexsort``
calls, O(n log n) on one core) that the tests compare it with; both give the same kept
mask and the same means to the last bit (the sums run in the same order).

Conventions: ``bins`` are 0-based bin indices in [0, nbins); the median of an even count
is the mean of the two central values; a bin whose MAD is 0 keeps all its values;
``sigma`` ≤ 0 keeps everything. Empty bins have a NaN mean.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_MAD = 1.482602218505602


@njit(cache=True)
def stable_bin_order(bins: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices grouped by bin, input order inside a bin (= ``np.argsort(bins,
    kind="stable")``, in O(n)), and the start offsets: the rows of bin k are
    ``order[starts[k]:starts[k + 1]]``. ``bins`` are int64 in [0, nbins)."""
    starts = np.zeros(nbins + 1, dtype=np.int64)
    for b in bins:
        starts[b + 1] += 1
    for k in range(nbins):
        starts[k + 1] += starts[k]
    pos = starts[:-1].copy()
    order = np.empty(bins.size, dtype=np.int64)
    for i in range(bins.size):
        b = bins[i]
        order[pos[b]] = i
        pos[b] += 1
    return order, starts


@njit(cache=True, parallel=True)
def _clip_bins(values: np.ndarray, order: np.ndarray, starts: np.ndarray, sigma: float,
               keep: np.ndarray, mean: np.ndarray) -> None:  # fmt: skip
    nbins = starts.size - 1
    limit_factor = sigma * _MAD
    for k in prange(nbins):
        s = starts[k]
        c = starts[k + 1] - s
        if c == 0:
            mean[k] = np.nan
            continue
        v = np.empty(c)
        for j in range(c):
            v[j] = values[order[s + j]]
        if sigma > 0:
            vs = np.sort(v)
            med = 0.5 * (vs[(c - 1) // 2] + vs[c // 2])
            dev = np.abs(v - med)
            ds = np.sort(dev)
            mad = 0.5 * (ds[(c - 1) // 2] + ds[c // 2])
            limit = limit_factor * mad
            for j in range(c):
                keep[order[s + j]] = (dev[j] <= limit) or (mad == 0)
        total = 0.0
        n = 0
        for j in range(c):
            if keep[order[s + j]]:
                total += v[j]
                n += 1
        mean[k] = total / n if n > 0 else np.nan


def clipped_bin_mean(bins: np.ndarray, values: np.ndarray, nbins: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean after rejecting values more than ``sigma`` × 1.4826 MAD from the bin
    median (``sigma`` ≤ 0: no rejection). Returns (mean per bin, kept mask per value)."""
    bins = np.ascontiguousarray(bins, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    keep = np.ones(values.size, dtype=np.bool_)
    mean = np.empty(int(nbins), dtype=np.float64)
    if values.size == 0:
        mean[:] = np.nan
        return mean, keep
    order, starts = stable_bin_order(bins, int(nbins))
    _clip_bins(values, order, starts, float(sigma), keep, mean)
    return mean, keep


# ------------------------------------------------------------------ numpy reference


def _bin_median(sorted_values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lo = starts + np.maximum(counts - 1, 0) // 2
    hi = starts + counts // 2
    n = sorted_values.size
    med = 0.5 * (sorted_values[np.minimum(lo, n - 1)] + sorted_values[np.minimum(hi, n - 1)]) if n else np.zeros(0)
    return np.where(counts > 0, med, np.nan)


def clipped_bin_mean_reference(bins: np.ndarray, values: np.ndarray, nbins: int,
                               sigma: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Plain-numpy :func:`clipped_bin_mean` (global lexsorts); for tests."""
    bins = np.asarray(bins, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    keep = np.ones(values.size, dtype=bool)
    if sigma > 0 and values.size:
        order = np.lexsort((values, bins))
        b, v = bins[order], values[order]
        counts = np.bincount(b, minlength=nbins)
        med = _bin_median(v, counts)
        dev = np.abs(v - med[b])
        order2 = np.lexsort((dev, b))
        mad = _bin_median(dev[order2], counts)
        limit = sigma * _MAD * mad[b]
        keep_sorted = (dev <= limit) | (mad[b] == 0)
        keep[order] = keep_sorted
    total = np.bincount(bins[keep], weights=values[keep], minlength=nbins)
    count = np.bincount(bins[keep], minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean, keep
