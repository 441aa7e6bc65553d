"""Relative offsets of exposures from their point-source positions (muse_exp_align step 3).

:func:`compute_offsets` takes, per exposure, source positions (n_i × 2, arcsec in one
tangent plane: ξ east, η north) and fluxes, and a list of search radii ``rsearch``
[arcsec]:

1. for every pair of exposures, the first pair displacement is the one most of their
   source separations (within ±``rsearch[0]``) agree on to half a bin of the DRS's 2-D
   histogram (``rsearch[0]``/``nbins``; mean of those separations); a peak no larger than
   chance would give is no match. A global weighted least-squares solution gives
   per-exposure offsets with the reference (exposure 0) fixed at 0;
2. for each following radius, sources are matched pairwise (mutual nearest neighbours
   within the radius after removing the current solution; separations more than 4σ from
   the median one dropped), the pair displacement is the mean of the matched separations
   (weighted by √(flux_i flux_j) with ``weight``), and the global solution is recomputed
   (pair weights: number of matches).

Exposures never connected to the reference by matches keep offset 0 (``matched`` False).
Offsets are the apparent displacement of an exposure relative to the reference [arcsec].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class OffsetSolution:
    """Per-exposure offsets [arcsec] in the reference tangent plane (ξ east, η north),
    the apparent displacement relative to the reference exposure (index 0)."""

    xi: np.ndarray
    eta: np.ndarray
    nmatch: np.ndarray         # median number of matches with the other exposures
    matched: np.ndarray        # bool: connected to the reference by matches


def compute_offsets(positions: Sequence[np.ndarray], fluxes: Sequence[np.ndarray], radii: Sequence[float],
                    nbins: int = 60, weight: bool = True) -> OffsetSolution:  # fmt: skip
    """Offsets from source positions ``positions[i]`` (n_i × 2, arcsec in a common tangent
    plane) and fluxes; ``radii`` = ``rsearch`` [arcsec]; see the module docstring."""
    n = len(positions)
    pos = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in positions]
    flx = [np.clip(np.asarray(f, dtype=np.float64), 0.0, None) for f in fluxes]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]

    # First iteration: the displacement most separations agree on. Each separation votes
    # for the others within half a histogram bin (r0 / nbins): a sharper peak than the
    # fixed bins of a 2-D histogram, which split a match over two bins and, on small fields
    # whose stars are ~1 bin apart, let the stars' mutual separations pull the mean.
    r0 = radii[0]
    tolerance = r0 / nbins
    pair_d: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
    for i, j in pairs:
        if len(pos[i]) == 0 or len(pos[j]) == 0:
            continue
        sep = (pos[j][:, None, :] - pos[i][None, :, :]).reshape(-1, 2)
        sep = sep[(np.abs(sep[:, 0]) <= r0) & (np.abs(sep[:, 1]) <= r0)]
        if len(sep) == 0:
            continue
        votes = np.array([len(v) for v in cKDTree(sep).query_ball_point(sep, tolerance)])
        best = int(np.argmax(votes))
        chance = len(sep) * np.pi * tolerance**2 / (2.0 * r0) ** 2
        # a peak that chance alone would give is no match (e.g. exposures that do not overlap)
        if votes[best] < max(3.0, 3.0 * (chance + 1.0)):
            continue
        near = np.hypot(*(sep - sep[best]).T) <= tolerance
        centre = sep[near].mean(axis=0)
        near = np.hypot(*(sep - centre).T) <= tolerance
        pair_d[(i, j)] = (sep[near].mean(axis=0), float(near.sum()))
    solution, matched = _solve(n, pair_d)

    # with a single radius, the matches are the first-iteration peaks
    nmatch_pairs: dict[tuple[int, int], int] = {key: int(count) for key, (_, count) in pair_d.items()}
    for radius in radii[1:]:
        pair_d = {}
        nmatch_pairs = {}
        for i, j in pairs:
            if len(pos[i]) == 0 or len(pos[j]) == 0:
                continue
            predicted = solution[j] - solution[i]
            tree = cKDTree(pos[i])
            dist, idx = tree.query(pos[j] - predicted, distance_upper_bound=radius)
            ok = np.isfinite(dist)
            # mutual nearest neighbours only: a spurious source must not steal a match
            back = cKDTree(pos[j] - predicted).query(pos[i], distance_upper_bound=radius)[1]
            ok[ok] &= back[idx[ok]] == np.flatnonzero(ok)
            if ok.sum() < 2:
                continue
            sep = pos[j][ok] - pos[i][idx[ok]]
            # drop chance pairs: separations far from the median one (4 σ, at least 0.1")
            resid = np.hypot(*(sep - np.median(sep, axis=0)).T)
            good = resid <= max(4.0 * 1.4826 * np.median(resid), 0.1)
            ok[np.flatnonzero(ok)[~good]] = False
            sep = sep[good]
            if len(sep) < 2:
                continue
            w = np.sqrt(flx[j][ok] * flx[i][idx[ok]]) if weight else np.ones(int(ok.sum()))
            if not np.any(w > 0):
                w = np.ones_like(w)
            pair_d[(i, j)] = ((sep * w[:, None]).sum(axis=0) / w.sum(), float(ok.sum()))
            nmatch_pairs[(i, j)] = int(ok.sum())
        solution, matched = _solve(n, pair_d)

    nmatch = np.zeros(n)
    for k in range(n):
        counts = [c for (i, j), c in nmatch_pairs.items() if k in (i, j)]
        nmatch[k] = float(np.median(counts)) if counts else 0.0
    return OffsetSolution(solution[:, 0], solution[:, 1], nmatch, matched)


def _solve(n: int, pair_d: Mapping[tuple[int, int], tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares for offsets o (n × 2) with o[0] = 0 and o[j] − o[i] = d_ij,
    over the exposures connected to the reference; the others get 0."""
    connected = {0}
    grew = True
    while grew:
        grew = False
        for i, j in pair_d:
            if (i in connected) != (j in connected):
                connected |= {i, j}
                grew = True
    members = sorted(connected - {0})
    out = np.zeros((n, 2))
    matched = np.zeros(n, dtype=bool)
    matched[sorted(connected)] = True
    if not members:
        return out, matched
    column = {k: c for c, k in enumerate(members)}
    rows, rhs = [], []
    for (i, j), (d, w) in pair_d.items():
        if i not in connected or j not in connected:
            continue
        row = np.zeros(len(members))
        if j in column:
            row[column[j]] += 1.0
        if i in column:
            row[column[i]] -= 1.0
        sw = np.sqrt(max(w, 1e-12))
        rows.append(row * sw)
        rhs.append(np.asarray(d) * sw)
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    for k, c in column.items():
        out[k] = sol[c]
    return out, matched
