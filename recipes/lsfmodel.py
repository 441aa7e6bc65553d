"""The line spread function (LSF) of one slice from arc images, and the LSF_PROFILE product.

Pure functions used by :mod:`recipes.lsf` (the muse_lsf recipe) and, later, by the sky
modelling of scipost:

* :func:`read_wavecal_table`: the WAVECAL_TABLE (§4.3) of one IFU (LINE_CATALOG and
  TRACE_TABLE are read with :func:`recipes.wavecal.read_line_catalog` and
  :func:`recipes.flat.trace_from_table`);
* :func:`select_lines`: bright, isolated catalogue lines of one lamp;
* :func:`collect_slice_samples`: for every selected line and every column of a slice,
  the pixels within ±``lsf_range`` of the line, as offsets Δλ = λ(x, y) − λ_line from
  the wavelength solution, background-subtracted and divided by the line flux in that
  column and by the pixel's width in λ, so that they sample a profile of unit integral;
* :func:`fit_slice_profile`: the DRS ``interpolate`` method — the profile on a grid of
  ``lsf_size`` offsets over [−lsf_range, +lsf_range] at ``lambda_size`` wavelength nodes,
  by local quadratic regression along Δλ (points within ±``lsf_regression_window``) and
  a low-order polynomial in the line wavelength (:mod:`recipes.kernels.lsf`);
* :func:`profile_fwhm`, :func:`box_gauss_fwhm`, :func:`gaussian_fwhm`: widths;
* :class:`LsfCube`, :func:`read_lsf_profile` and :func:`evaluate_lsf`: the product.

**What the profile is.** Arc pixels integrate the light over their width in λ (≈ 1.25 Å
along y), so the samples describe the LSF convolved with that pixel box, expressed per Å:
a line of flux F centred at λ_line puts ``F · dλ_pix · P(λ_pix − λ_line)`` into a pixel
of the same CCD whose centre is at λ_pix. The DRS ``interpolate`` method likewise
regresses pixel values, and this is what a pixel-table sky model needs. Its FWHM is that
of the optical LSF convolved with the pixel width (Gaussian of FWHM 2.5 Å, 1.25 Å pixels:
2.648 Å); :func:`box_gauss_fwhm` gives that width and :func:`gaussian_fwhm` takes the
pixel back out for a Gaussian-like LSF. ``∫ P dΔλ = 1`` by construction (the flux
normalisation; not forced afterwards).

Units: wavelengths and offsets in Å (air), profile values in 1/Å. Coordinates of the
polynomials: trimmed-CCD FITS 1-based (pixel centres at integers); arrays 0-based [y, x].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .base import RecipeError
from .io import chan_name, read_table_product
from .kernels.lsf import local_profile_fit
from .tracing import Trace
from .wavesolution import LAMP_IONS, LineCatalog, evaluate_2d

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
#: Wavelength range of the LSF nodes: the nominal MUSE range (kMuseNominalLambdaMin/Max),
#: as the DRS 2.8.7 writes it (CRVAL2 = 4650, CD2_2 = 160.34 Å for lambda_size = 30),
#: whatever the CCD covers; nodes beyond the lines used repeat the nearest profile.
NODES_LAMBDA_RANGE = (4650.0, 9300.0)
_MAD = 1.482602218505602


# --------------------------------------------------------------------------------------
# Calibration readers


def read_wavecal_table(path: Path, ifu: int) -> dict[int, np.ndarray]:
    """Wavelength solutions of one IFU from WAVECAL_TABLE (§4.3): ``{SliceNo: wlc[I, J]}``
    with λ(x, y) = Σ wlc[I, J] x^I y^J in Å, x and y absolute 1-based trimmed-CCD pixels.

    The orders are recovered from the ``wlcIJ`` column names.
    """
    table, _ = read_table_product(Path(path), ifu)
    where = f"{Path(path).name}[{chan_name(ifu)}]"
    cols = [(int(m.group(1)), int(m.group(2)), n) for n in table.colnames if (m := re.fullmatch(r"wlc(\d)(\d)", n))]
    if "SliceNo" not in table.colnames or not cols:
        raise RecipeError(f"{where}: not a WAVECAL_TABLE (needs SliceNo and wlcIJ columns)")
    xorder = max(c[0] for c in cols)
    yorder = max(c[1] for c in cols)
    out = {}
    for r, slice_no in enumerate(np.asarray(table["SliceNo"], dtype=int)):
        wlc = np.zeros((xorder + 1, yorder + 1))
        for i, j, name in cols:
            wlc[i, j] = float(table[name][r])
        if not np.all(np.isfinite(wlc)):
            raise RecipeError(f"{where}: slice {slice_no} has a non-finite wavelength solution")
        out[int(slice_no)] = wlc
    return out


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


def lamp_ions(lamps: str) -> tuple[str, ...]:
    """Catalogue ions of a lamp name, or of several joined by ``+`` (``"Ne+Xe"``)."""
    ions: list[str] = []
    for lamp in lamps.split("+"):
        if lamp not in LAMP_IONS:
            raise RecipeError(f"unknown arc lamp {lamp!r} (known: {', '.join(LAMP_IONS)})")
        ions.extend(LAMP_IONS[lamp])
    return tuple(ions)


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


@dataclass(frozen=True)
class ProfileGrid:
    """The sampling of LSF_PROFILE: offsets ``dlam`` (Å, lsf_size values from −lsf_range
    to +lsf_range) and wavelength nodes ``lam`` (Å, lambda_size values)."""

    dlam: np.ndarray
    lam: np.ndarray

    @classmethod
    def make(cls, lsf_range: float, lsf_size: int, lambda_size: int,
             lam_range: tuple[float, float] = NODES_LAMBDA_RANGE) -> ProfileGrid:  # fmt: skip
        """``lsf_size`` offsets over ±``lsf_range`` and ``lambda_size`` nodes over ``lam_range``."""
        return cls(np.linspace(-lsf_range, lsf_range, lsf_size), np.linspace(*lam_range, lambda_size))


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


def profile_fwhm(dlam: np.ndarray, profile: np.ndarray) -> float:
    """Full width at half maximum (Å) of a sampled profile, with linear interpolation of
    the half-maximum crossings on either side of the peak; NaN if a side never drops
    below half."""
    profile = np.asarray(profile, dtype=np.float64)
    k = int(np.argmax(profile))
    half = 0.5 * profile[k]
    if not half > 0:
        return float("nan")
    below_left = np.flatnonzero(profile[:k] < half)
    below_right = np.flatnonzero(profile[k:] < half)
    if below_left.size == 0 or below_right.size == 0:
        return float("nan")
    i = below_left[-1]  # profile[i] < half <= profile[i + 1]
    xl = dlam[i] + (half - profile[i]) / (profile[i + 1] - profile[i]) * (dlam[i + 1] - dlam[i])
    j = k + below_right[0]  # profile[j - 1] >= half > profile[j]
    xr = dlam[j - 1] + (profile[j - 1] - half) / (profile[j - 1] - profile[j]) * (dlam[j] - dlam[j - 1])
    return float(xr - xl)


_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def box_gauss_fwhm(fwhm: float, width: float) -> float:
    """FWHM (Å) of a Gaussian of ``fwhm`` (Å) convolved with a box of ``width`` (Å): the
    width a pixel-sampled profile shows (exact, by root finding on the analytic profile)."""
    from scipy.optimize import brentq
    from scipy.special import ndtr

    if width <= 0:
        return float(fwhm)
    sig = fwhm / _FWHM_PER_SIGMA

    def shape(d: float) -> float:
        return float(ndtr((d + width / 2) / sig) - ndtr((d - width / 2) / sig))

    half = 0.5 * shape(0.0)
    return 2.0 * brentq(lambda d: shape(d) - half, 0.0, fwhm + width)


def gaussian_fwhm(fwhm_measured: float, width: float) -> float:
    """The FWHM (Å) of the Gaussian LSF that, integrated over pixels of ``width`` Å, shows
    ``fwhm_measured`` (inverse of :func:`box_gauss_fwhm`); NaN when ``fwhm_measured`` is
    not wider than such a pixel can explain. Meaningful for Gaussian-like LSFs only."""
    from scipy.optimize import brentq

    if not np.isfinite(fwhm_measured) or box_gauss_fwhm(1e-3, width) >= fwhm_measured:
        return float("nan")
    return float(brentq(lambda f: box_gauss_fwhm(f, width) - fwhm_measured, 1e-3, fwhm_measured))


# --------------------------------------------------------------------------------------
# The LSF_PROFILE product (method=interpolate)

#: Extension name of one IFU's cube in the merged file (recipes.md §4.4).
EXTNAME_SUFFIX = ".LSF_PROFILE"


def cube_header(grid: ProfileGrid) -> fits.Header:
    """WCS of an LSF cube as the DRS 2.8.7 writes it: ``WCSAXES = 2``, axis 1 = Δλ
    (``CTYPE1 = 'PARAM'``), axis 2 = line wavelength (``'AWAV'``), linear CRPIX/CRVAL/CD
    in Angstrom; the third FITS axis (no WCS) is the CCD slice 1..48."""
    header = fits.Header()
    dl = float(grid.dlam[1] - grid.dlam[0]) if grid.dlam.size > 1 else 1.0
    dn = float(grid.lam[1] - grid.lam[0]) if grid.lam.size > 1 else 1.0
    header["WCSAXES"] = 2
    header["CD1_1"] = (dl, "[Angstrom] step of the wavelength offset")
    header["CD1_2"] = 0.0
    header["CD2_1"] = 0.0
    header["CD2_2"] = (dn, "[Angstrom] step of the line wavelength")
    header["CRPIX1"] = 1.0
    header["CRPIX2"] = 1.0
    header["CRVAL1"] = (float(grid.dlam[0]), "[Angstrom] first wavelength offset")
    header["CRVAL2"] = (float(grid.lam[0]), "[Angstrom] first line wavelength (air)")
    header["CTYPE1"] = ("PARAM", "wavelength offset from the line")
    header["CTYPE2"] = ("AWAV", "line wavelength (air)")
    header["CUNIT1"] = "Angstrom"
    header["CUNIT2"] = "Angstrom"
    header["BUNIT"] = ("Angstrom**-1", "profile per unit wavelength offset")
    return header


def cube_hdu(ifu: int, cube: np.ndarray, grid: ProfileGrid, extra: fits.Header | None = None) -> fits.ImageHDU:
    """The ``CHANnn.LSF_PROFILE`` extension of the merged file: float32
    ``cube[slice, node, offset]`` (the DRS single-IFU file names it ``LSF_PROFILE``)."""
    header = cube_header(grid)
    if extra is not None:
        for card in extra.cards:
            header.append(card, end=True)
    header["EXTNAME"] = chan_name(ifu) + EXTNAME_SUFFIX
    return fits.ImageHDU(np.ascontiguousarray(cube, dtype=np.float32), header=header)


@dataclass
class LsfCube:
    """The LSF of one IFU: ``data[slice − 1, node, offset]`` (1/Å) on ``grid``; ``header``
    holds the WCS and the QC of the extension."""

    ifu: int
    data: np.ndarray
    grid: ProfileGrid
    header: fits.Header


def _axis(header: fits.Header, n: int, size: int, where: str) -> np.ndarray:
    try:
        step = float(header.get(f"CD{n}_{n}", header.get(f"CDELT{n}")))
        start = float(header["CRVAL{}".format(n)]) - (float(header.get(f"CRPIX{n}", 1.0)) - 1.0) * step
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: LSF_PROFILE extension lacks a linear WCS on axis {n}") from None
    return start + step * np.arange(size)


def read_lsf_profile(path: Path) -> dict[int, LsfCube]:
    """All IFU cubes of an LSF_PROFILE file: merged ``CHANnn.LSF_PROFILE`` extensions, or
    a single-IFU file whose primary ``EXTNAME`` is ``CHANnn`` with the cube in the first
    image HDU. Returns ``{ifu: LsfCube}``; RecipeError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: LSF_PROFILE does not exist")
    pattern = re.compile(r"^CHAN(\d\d)" + re.escape(EXTNAME_SUFFIX) + "$")
    cubes: dict[int, LsfCube] = {}
    try:
        with fits.open(path) as hdul:
            for hdu in hdul:
                match = pattern.match(str(hdu.header.get("EXTNAME", "")).strip())
                single = re.match(r"^CHAN(\d\d)$", str(hdul[0].header.get("EXTNAME", "")).strip())
                if match is None and not (single and hdu.data is not None and hdu.header.get("NAXIS") == 3):
                    continue
                ifu = int((match or single).group(1))
                data = np.array(hdu.data, dtype=np.float64)
                where = f"{path}[{hdu.header.get('EXTNAME', ifu)}]"
                if data.ndim != 3:
                    raise RecipeError(f"{where}: LSF cube is not 3-D")
                grid = ProfileGrid(_axis(hdu.header, 1, data.shape[2], where),
                                   _axis(hdu.header, 2, data.shape[1], where))  # fmt: skip
                cubes[ifu] = LsfCube(ifu=ifu, data=data, grid=grid, header=hdu.header.copy())
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"{path}: cannot read LSF_PROFILE ({reason})") from None
    if not cubes:
        raise RecipeError(f"{path}: no CHANnn{EXTNAME_SUFFIX} extension (not an interpolate LSF_PROFILE)")
    return cubes


def evaluate_lsf(profile: dict[int, LsfCube], ifu: int, slice_no: int, lam, dlam) -> np.ndarray:
    """The LSF (1/Å) of CCD slice ``slice_no`` (1..48) of ``ifu`` at line wavelength ``lam``
    and offset ``dlam`` = λ − λ_line (Å); ``lam`` and ``dlam`` broadcast.

    Bilinear interpolation in the cube; 0 beyond the sampled offsets; wavelengths beyond
    the nodes take the nearest node. ``profile`` is what :func:`read_lsf_profile` returns.
    A pixel of width w (Å) centred at λ_pix receives ``F · w · evaluate_lsf(..., λ_pix − λ_line)``
    of a line of flux F (the profile includes the pixel integration, see the module doc).
    """
    try:
        cube = profile[ifu]
    except KeyError:
        raise RecipeError(f"LSF_PROFILE has no IFU {ifu} (has {sorted(profile)})") from None
    if not 1 <= slice_no <= cube.data.shape[0]:
        raise RecipeError(f"LSF_PROFILE of IFU {ifu} has no slice {slice_no} (1..{cube.data.shape[0]})")
    image = cube.data[slice_no - 1]
    lam, dlam = np.broadcast_arrays(np.asarray(lam, dtype=np.float64), np.asarray(dlam, dtype=np.float64))
    nodes, offsets = cube.grid.lam, cube.grid.dlam
    if nodes.size > 1:
        fn = np.clip((lam - nodes[0]) / (nodes[1] - nodes[0]), 0.0, nodes.size - 1.0)
    else:
        fn = np.zeros(lam.shape)
    fo = (dlam - offsets[0]) / (offsets[1] - offsets[0])
    outside = (fo < 0) | (fo > offsets.size - 1)
    fo = np.clip(fo, 0.0, offsets.size - 1.0)
    n0 = np.minimum(fn.astype(int), max(nodes.size - 2, 0))
    o0 = np.minimum(fo.astype(int), offsets.size - 2)
    an, ao = fn - n0, fo - o0
    n1 = np.minimum(n0 + 1, nodes.size - 1)
    value = ((1 - an) * ((1 - ao) * image[n0, o0] + ao * image[n0, o0 + 1])
             + an * ((1 - ao) * image[n1, o0] + ao * image[n1, o0 + 1]))  # fmt: skip
    return np.where(outside, 0.0, value)
