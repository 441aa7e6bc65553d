"""Wavelength calibration of one IFU from arc images (the muse_wavecal algorithm), pure.

Inputs: one reduced arc image per lamp (2-D count images and variances, 0-based arrays,
x along axis 1), the slice trace (:class:`recipes.algorithms.tracing.Trace`) and the
LINE_CATALOG rows (:class:`recipes.algorithms.linecatalog.LineCatalog`). Output per slice:
the coefficients ``wlc[I, J]`` of λ(x, y) = Σ wlc[I, J] x^I y^J in the DRS convention of
WAVECAL_TABLE (**absolute 1-based trimmed-CCD coordinates**, raw powers; Å in air), the
fit RMS and the line measurements for QC and residual tables.

Steps per slice (recipes.md §3.4), :func:`calibrate_slice`:
1. for each lamp, detect the lines in the spectrum along the slice centre
   (:func:`recipes.algorithms.linematch.detect_lines`);
2. identify them with the lamp's catalogue lines by point-pattern matching
   (:func:`recipes.algorithms.linematch.identify`); a joint solution of all lamps then
   matches every lamp's detections, also those of lamps with too few lines for pattern
   matching;
3. fit each identified, unblended line of quality ≥ 2 column by column with a Gaussian
   (:func:`recipes.kernels.arclines.fit_lines_across`) and its centre y(x) with a
   polynomial of ``xorder``, rejecting beyond ``linesigma``;
4. pool all lamps and fit the tensor polynomial of ``xorder`` × ``yorder`` with iterative
   rejection beyond ``fitsigma`` × RMS and weights per ``fitweighting``
   (:func:`recipes.algorithms.wavefit.fit_2d`).

:func:`slice_qc` gives the QC WAVECAL keywords of a solution, :func:`wave_map` λ of every
pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from recipes.base import RecipeError
from recipes.algorithms.instrument import wavecal_eval
from recipes.algorithms.linecatalog import LineCatalog
from recipes.algorithms.linematch import (
    FIT_HALFWIN,
    MIN_LINES,
    SIGMA_GUESS,
    centre_spectrum,
    detect_lines,
    identify,
    match_lines,
)
from recipes.algorithms.tracing import Trace, clipped_polyfit, slice_mask
from recipes.algorithms.wavefit import fit_2d
from recipes.kernels.arclines import FWHM_PER_SIGMA, fit_lines_across

NOMINAL_DISPERSION = 1.25  # Å/px, kMuseSpectralSamplingA
EDGE_MARGIN = 1.0  # px kept clear of the traced slice edges when choosing columns


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


def evaluate_2d(wlc: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """λ = Σ wlc[I, J] x^I y^J in Å (the DRS WAVECAL_TABLE polynomial, 1-based x, y)."""
    return wavecal_eval(wlc, x, y)


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
        match, _ = match_lines(np.polynomial.polynomial.polyval(det[:, 0] + 1.0, guess), usable, window)
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


# --------------------------------------------------------------------------------------
# Products of a solution


def wave_map(solutions: list[SliceSolution], trace: Trace, shape: tuple[int, int]) -> np.ndarray:
    """λ (Å) of every pixel inside a slice, 0 outside."""
    mask = slice_mask(trace, shape)
    out = np.zeros(shape, dtype=np.float32)
    y1, x1 = np.mgrid[1 : shape[0] + 1, 1 : shape[1] + 1].astype(np.float64)
    for sol in solutions:
        sel = mask == sol.slice_no
        out[sel] = sol.wavelength(x1[sel], y1[sel])
    return out


def slice_qc(
    sol: SliceSolution, trace: Trace, ny: int, lamp_numbers: Mapping[str, int]
) -> list[tuple[str, object, str]]:
    """QC WAVECAL SLICEj keywords of one slice (recipes.md §3.4)."""
    j = sol.slice_no
    k = j - 1
    m = sol.measurements
    kept = sol.kept
    peak = m.flux / (np.sqrt(2 * np.pi) * m.sigma)
    fwhm = line_fwhm_angstrom(sol)
    p = f"ESO QC WAVECAL SLICE{j} "
    qc: list[tuple[str, object, str]] = [
        (p + "LINES NDET", sol.ndet, ""),
        (p + "LINES NID", sol.nid, ""),
    ]
    for stat, fn in (("MEAN", np.mean), ("STDEV", np.std), ("MIN", np.min), ("MAX", np.max)):
        qc.append((p + f"LINES PEAK {stat}", float(fn(peak[kept])), ""))
    for lamp, number in lamp_numbers.items():
        sel = kept & (m.lamp == lamp)
        if sel.any():
            for stat, fn in (("MEAN", np.mean), ("STDEV", np.std), ("MAX", np.max)):
                qc.append((p + f"LAMP{number} LINES PEAK {stat}", float(fn(peak[sel])), ""))
    for stat, fn in (("MEAN", np.mean), ("STDEV", np.std), ("MIN", np.min), ("MAX", np.max)):
        qc.append((p + f"LINES FWHM {stat}", float(fn(fwhm[kept])), ""))
    qc.append((p + "RESOL", float(np.mean(m.lam[kept] / fwhm[kept])), ""))
    qc.append((p + "FIT NLINES", sol.nfit_lines, ""))
    qc.append((p + "FIT RMS", float(sol.rms), ""))
    for label, y in (("BOTTOM", 1.0), ("TOP", float(ny))):
        xl = np.polynomial.polynomial.polyval(y, trace.left[k])
        xr = np.polynomial.polynomial.polyval(y, trace.right[k])
        qc.append((p + f"DWLEN {label}", float(sol.wavelength(xr, y) - sol.wavelength(xl, y)), ""))
    ypos = 0.5 * (ny + 1)
    qc.append((p + "WLPOS", ypos, ""))
    xc = np.polynomial.polynomial.polyval(ypos, trace.centre[k])
    qc.append((p + "WLEN", float(sol.wavelength(xc, ypos)), ""))
    return qc
