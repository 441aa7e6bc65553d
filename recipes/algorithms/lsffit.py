"""The line spread function (LSF) of one slice measured on arc images (muse_lsf steps 3-5).

* :func:`select_lines`: bright, isolated catalogue lines of one lamp;
* :func:`collect_slice_samples`: for every selected line and every column of a slice,
  the pixels within ±``lsf_range`` of the line, as offsets Δλ = λ(x, y) − λ_line from
  the wavelength solution, background-subtracted and divided by the line flux in that
  column and by the pixel's width in λ, so that they sample a profile of unit integral;
* :func:`fit_slice_profile`: the DRS ``interpolate`` method — the profile on a
  :class:`recipes.algorithms.lsfmodel.ProfileGrid` by local quadratic regression along
  Δλ (points within ±``lsf_regression_window``) and a low-order polynomial in the line
  wavelength (:mod:`recipes.kernels.lsf`);
* :func:`slice_fwhm_qc`: the QC LSF SLICEj FWHM keywords of a fitted profile.

What the profile is (the LSF convolved with the pixel width, per Å) is described in
:mod:`recipes.algorithms.lsfmodel`. Units: wavelengths and offsets in Å (air), profile
values in 1/Å. Coordinates of the polynomials: trimmed-CCD FITS 1-based (pixel centres
at integers); arrays 0-based [y, x].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.base import RecipeError
from recipes.algorithms.linecatalog import LineCatalog
from recipes.algorithms.lsfmodel import ProfileGrid, profile_fwhm
from recipes.algorithms.tracing import Trace
from recipes.algorithms.wavesolution import evaluate_2d
from recipes.kernels.lsf import local_profile_fit

#: A neighbour line (same lamp, any quality) within lsf_range + ISOLATION_MARGIN Å that is
#: brighter than ISOLATION_FLUX of a line makes that line unusable: its wing would fall
#: into the window.
ISOLATION_MARGIN = 4.0
ISOLATION_FLUX = 0.01
#: The outermost BACKGROUND_WIDTH Å of each side of the window estimate the background.
BACKGROUND_WIDTH = 2.0
#: Fewest background pixels per column (both sides together).
MIN_BACKGROUND_PIXELS = 2
#: Line flux S/N per column below which the column is left out.
MIN_COLUMN_SNR = 20.0
#: Pixels closer than this (px) to the traced slice edges are left out (partly lit).
EDGE_MARGIN = 1.0
#: Highest polynomial order along the line wavelength, used from 4 × LAMBDA_ORDER lines
#: on (fewer lines get order nlines // 4): order 4 follows a FWHM changing by 10 % over
#: 4650-9300 Å to 0.4 %, order 2 only to 1 % (measured on the simulator's full profile).
LAMBDA_ORDER = 4
#: Points beyond CLIP_SIGMA robust σ of the normalised residuals are rejected (one pass).
#: The residual's noise includes CLIP_MODEL_FLOOR × the model, so that the brightest
#: pixels (S/N of thousands) are not rejected for tiny model imperfections.
CLIP_SIGMA = 5.0
CLIP_MODEL_FLOOR = 0.02
_MAD = 1.482602218505602


# --------------------------------------------------------------------------------------
# Line selection and sample collection


def select_lines(catalog: LineCatalog, ions: tuple[str, ...], line_quality: int, lsf_range: float) -> np.ndarray:
    """Wavelengths (Å) of the lines of ``ions`` with quality ≥ ``line_quality`` that have
    no neighbour of the same ions brighter than ISOLATION_FLUX of them within
    ``lsf_range`` + ISOLATION_MARGIN Å (every catalogue line counts as a neighbour, quality
    0 blends included, since the lamp emits them all)."""
    wanted = {i.lower() for i in ions}
    mine = np.array([str(i).strip().lower() in wanted for i in catalog.ion], dtype=bool)
    lam, flux, quality = catalog.lam[mine], catalog.flux[mine], catalog.quality[mine]
    reach = lsf_range + ISOLATION_MARGIN
    keep = []
    for k in np.flatnonzero(quality >= line_quality):
        near = (np.abs(lam - lam[k]) < reach) & (flux > ISOLATION_FLUX * flux[k])
        if near.sum() == 1:
            keep.append(lam[k])
    return np.array(keep, dtype=np.float64)


@dataclass
class LineSamples:
    """Normalised arc samples of one slice (one entry per pixel).

    ``dlam``: λ(pixel) − λ_line (Å); ``lam_line``: line wavelength (Å); ``value``:
    (data − background) / (column line flux · pixel width in λ) in 1/Å; ``var``: its
    variance; ``weight``: inverse of the mean ``var`` of the pixel's (line, column) group;
    ``group``: index of the (line, column) group.
    """

    dlam: np.ndarray
    lam_line: np.ndarray
    value: np.ndarray
    var: np.ndarray
    weight: np.ndarray
    group: np.ndarray

    @property
    def lines(self) -> np.ndarray:
        """The distinct line wavelengths that contributed."""
        return np.unique(self.lam_line)

    @classmethod
    def concatenate(cls, parts: list[LineSamples]) -> LineSamples:
        if not parts:
            empty = np.zeros(0)
            return cls(empty, empty, empty, empty, empty, np.zeros(0, dtype=np.int64))
        offset, groups = 0, []
        for p in parts:
            groups.append(p.group + offset)
            offset += int(p.group.max()) + 1 if p.group.size else 0
        return cls(
            *(np.concatenate([getattr(p, n) for p in parts]) for n in ("dlam", "lam_line", "value", "var", "weight")),
            group=np.concatenate(groups),
        )


def centre_wavelengths(trace: Trace, wlc: np.ndarray, slice_index: int, ny: int) -> np.ndarray:
    """λ (Å) along the slice centre at every row (0-based index → 1-based row)."""
    y1 = np.arange(ny) + 1.0
    xc = np.polynomial.polynomial.polyval(y1, trace.centre[slice_index])
    return evaluate_2d(wlc, xc, y1)


def ifu_wavelength_range(trace: Trace, wlcs: dict[int, np.ndarray], ny: int) -> tuple[float, float]:
    """Smallest and largest λ (Å) along the slice centres of the IFU (rows 1 and ny)."""
    lo, hi = np.inf, -np.inf
    for s in range(trace.nslice):
        wlc = wlcs.get(s + 1)
        if wlc is None:
            continue
        lam = centre_wavelengths(trace, wlc, s, ny)
        lo, hi = min(lo, float(lam.min())), max(hi, float(lam.max()))
    return lo, hi


def collect_slice_samples(
    data: np.ndarray,
    var: np.ndarray,
    dq: np.ndarray,
    trace: Trace,
    wlc: np.ndarray,
    slice_index: int,
    lines: np.ndarray,
    lsf_range: float,
) -> LineSamples:
    """Normalised samples of every line in ``lines`` (Å) over all columns of one slice.

    ``data``/``var``/``dq``: a reduced arc image (count, count², Euro3D bits), 0-based
    [y, x]. A column of a line is used only when the window ±``lsf_range`` lies on the
    CCD, holds no flagged pixel, has ≥ MIN_BACKGROUND_PIXELS in the outer
    BACKGROUND_WIDTH Å and a line flux S/N ≥ MIN_COLUMN_SNR. The background of a column
    is the mean of those outer pixels.
    """
    ny, nx = data.shape
    lam_c = centre_wavelengths(trace, wlc, slice_index, ny)
    step = np.gradient(lam_c)
    if not np.all(step > 0):
        raise RecipeError(f"slice {slice_index + 1}: wavelength does not increase along the slice centre")
    parts = []
    for lam_line in lines:
        if lam_line - lsf_range < lam_c[0] or lam_line + lsf_range > lam_c[-1]:
            continue
        yc = float(np.interp(lam_line, lam_c, np.arange(ny)))  # 0-based row at the centre
        disp = float(np.interp(lam_line, lam_c, step))
        # rows of the window plus a margin for the change of λ across the slice
        half = int(np.ceil(lsf_range / disp)) + 8
        r0, r1 = max(int(yc) - half, 0), min(int(yc) + half + 2, ny)
        y1 = np.arange(r0, r1) + 1.0
        left = np.polynomial.polynomial.polyval(y1, trace.left[slice_index])
        right = np.polynomial.polynomial.polyval(y1, trace.right[slice_index])
        c0 = max(int(np.ceil(left.min() - 1 + EDGE_MARGIN)), 0)
        c1 = min(int(np.floor(right.max() - 1 - EDGE_MARGIN)) + 1, nx)
        if c1 <= c0:
            continue
        x1 = np.arange(c0, c1) + 1.0
        inside = (x1[None, :] >= left[:, None] + EDGE_MARGIN) & (x1[None, :] <= right[:, None] - EDGE_MARGIN)
        # λ at the row borders y ± 0.5 give the pixel's width in λ and its centre (the
        # border mean differs from λ(y) by λ''/8 < 1e-5 Å for any MUSE dispersion)
        borders = evaluate_2d(wlc, x1[None, :], np.arange(r0, r1 + 1)[:, None] + 0.5)
        width = np.diff(borders, axis=0)
        lam = 0.5 * (borders[1:] + borders[:-1])
        dl = lam - lam_line
        win = (np.abs(dl) < lsf_range) & inside
        d = data[r0:r1, c0:c1].astype(np.float64)
        v = var[r0:r1, c0:c1].astype(np.float64)
        bad = (dq[r0:r1, c0:c1] != 0) | ~np.isfinite(d) | ~np.isfinite(v)
        # a column is complete when its window does not touch the box rows (CCD edge)
        complete = ~(win[0] | win[-1]) & inside.all(axis=0)
        outer = win & (np.abs(dl) >= lsf_range - BACKGROUND_WIDTH)
        nout = outer.sum(axis=0)
        nwin = win.sum(axis=0)
        clean = ~(bad & win).any(axis=0)
        ok = complete & clean & (nout >= MIN_BACKGROUND_PIXELS) & (nwin > nout)
        if not ok.any():
            continue
        bg = np.where(outer, d, 0.0).sum(axis=0) / np.maximum(nout, 1)
        sub = d - bg[None, :]
        flux = np.where(win, sub, 0.0).sum(axis=0)
        fvar = np.where(win, v, 0.0).sum(axis=0)
        ok &= (flux > 0) & (flux > MIN_COLUMN_SNR * np.sqrt(np.maximum(fvar, 1e-30)))
        if not ok.any():
            continue
        sel = win & ok[None, :]
        rr, cc = np.nonzero(sel)
        norm = flux[cc] * width[rr, cc]
        value = sub[rr, cc] / norm
        pvar = v[rr, cc] / norm**2
        mean_var = np.bincount(cc, weights=pvar, minlength=sel.shape[1]) / np.maximum(sel.sum(axis=0), 1)
        parts.append(LineSamples(
            dlam=dl[rr, cc], lam_line=np.full(rr.size, lam_line), value=value, var=pvar,
            weight=1.0 / np.maximum(mean_var[cc], 1e-30), group=cc.astype(np.int64),
        ))  # fmt: skip
    return LineSamples.concatenate(parts)


# --------------------------------------------------------------------------------------
# The profile of one slice


@dataclass
class SliceProfile:
    """The fitted profile of one slice: ``image[node, offset]`` (1/Å) and fit facts."""

    image: np.ndarray
    nlines: int
    npoints: int
    nrejected: int
    lam_range: tuple[float, float]  # line wavelengths covered (Å)


def _scaled(lam: np.ndarray, lo: float, hi: float) -> np.ndarray:
    centre, half = 0.5 * (lo + hi), max(0.5 * (hi - lo), 1.0)
    return (lam - centre) / half


def _fill_nan_rows(coeffs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(coeffs).all(axis=1)
    if bad.all():
        raise ValueError("no grid offset could be fitted")
    if bad.any():
        for m in range(coeffs.shape[1]):
            coeffs[bad, m] = np.interp(grid[bad], grid[~bad], coeffs[~bad, m])
    return coeffs


def _model_at(coeffs: np.ndarray, grid: np.ndarray, dlam: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.zeros_like(dlam)
    for m in range(coeffs.shape[1]):
        out += np.interp(dlam, grid, coeffs[:, m]) * t**m
    return out


def fit_slice_profile(samples: LineSamples, grid: ProfileGrid, window: float) -> SliceProfile:
    """The ``interpolate`` LSF image of one slice from its samples.

    Local quadratic regression along Δλ over ±``window`` Å at each grid offset, with a
    polynomial in the line wavelength of order min(LAMBDA_ORDER, number of lines // 4)
    (scaled to [−1, 1] over the lines' range). One pass rejects points beyond CLIP_SIGMA
    robust σ of the residuals in units of their noise. Nodes outside the lines' range get
    the profile at the nearest end of it (no polynomial extrapolation).
    Raises ValueError when there are no samples.
    """
    if samples.dlam.size == 0:
        raise ValueError("no arc-line samples")
    lines = samples.lines
    lorder = int(min(LAMBDA_ORDER, lines.size // 4))
    lo, hi = float(lines.min()), float(lines.max())
    order = np.argsort(samples.dlam, kind="stable")
    dlam = samples.dlam[order]
    t = _scaled(samples.lam_line[order], lo, hi)
    value = samples.value[order]
    weight = samples.weight[order].copy()
    sigma = np.sqrt(samples.var[order])
    coeffs, _ = local_profile_fit(dlam, t, value, weight, grid.dlam, window, lorder)
    coeffs = _fill_nan_rows(coeffs, grid.dlam)
    model = _model_at(coeffs, grid.dlam, dlam, t)
    resid = (value - model) / np.maximum(np.hypot(sigma, CLIP_MODEL_FLOOR * model), 1e-30)
    spread = _MAD * np.median(np.abs(resid - np.median(resid)))
    reject = np.abs(resid) > CLIP_SIGMA * spread if spread > 0 else np.zeros(resid.size, dtype=bool)
    if reject.any():
        weight[reject] = 0.0
        coeffs, _ = local_profile_fit(dlam, t, value, weight, grid.dlam, window, lorder)
        coeffs = _fill_nan_rows(coeffs, grid.dlam)
    tn = np.clip(_scaled(grid.lam, lo, hi), -1.0, 1.0)
    image = np.zeros((grid.lam.size, grid.dlam.size))
    for m in range(lorder + 1):
        image += tn[:, None] ** m * coeffs[None, :, m]
    return SliceProfile(image=image, nlines=int(lines.size), npoints=int(dlam.size),
                        nrejected=int(reject.sum()), lam_range=(lo, hi))  # fmt: skip


def slice_fwhm_qc(profile: SliceProfile, grid: ProfileGrid, slice_no: int) -> list[tuple[str, object, str]]:
    """QC ``ESO QC LSF SLICEj FWHM MEAN/STDEV/MIN/MAX`` (Å) of one slice: the FWHM of the
    profile at the nodes inside the range of the lines used (the node nearest its middle
    when none is). Empty when no node has a half-maximum crossing: a FITS header cannot
    hold NaN."""
    lo, hi = profile.lam_range
    nodes = (grid.lam >= lo) & (grid.lam <= hi)
    if not nodes.any():
        nodes = np.abs(grid.lam - 0.5 * (lo + hi)) == np.abs(grid.lam - 0.5 * (lo + hi)).min()
    fwhm = np.array([profile_fwhm(grid.dlam, row) for row in profile.image[nodes]])
    fwhm = fwhm[np.isfinite(fwhm)]
    if not fwhm.size:
        return []
    return [(f"ESO QC LSF SLICE{slice_no} FWHM {name}", float(value), f"[Angstrom] FWHM {name.lower()}")
            for name, value in zip(("MEAN", "STDEV", "MIN", "MAX"),
                                   (fwhm.mean(), fwhm.std(), fwhm.min(), fwhm.max()))]  # fmt: skip
