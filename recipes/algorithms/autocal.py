"""Slice autocalibration of one exposure (muse_scipost ``autocalib``, recipes.md §3.9 step 2b).

The sky lines are uniform on the sky, so the ratio of a slice's sky-line flux to that of
the exposure's mean sky spectrum is the slice's illumination relative to the calibration:

* ``deepfield`` (:func:`deepfield_factors`): the mean sky spectrum of the source-free
  spaxels of the white image (sources above median + AUTOCAL_NSIGMA × MAD, grown by
  AUTOCAL_GROW seeing FWHM), then per (IFU, slice) factors from the sky-line windows
  (:func:`autocal_factors`);
* ``user``: a given AUTOCAL_FACTORS table (:func:`read_autocal_factors`);

either is divided out by :func:`apply_autocal`. Wavelengths in Å (air); IFU and slice
numbers 1-based as in the origin word; the factors are dimensionless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy import ndimage

from recipes.base import RecipeError
from recipes.io import hkey
from recipes.algorithms import skysub
from recipes.algorithms.origin import unpack_origin
from recipes.algorithms.pixtable import PixTable, pkey
from recipes.algorithms.postprocess import SPECTRAL_SAMPLING

#: ``autocalib=deepfield`` source mask: spaxels of the white image above median +
#: AUTOCAL_NSIGMA × MAD are sources, grown by AUTOCAL_GROW × the seeing FWHM (header, or
#: AUTOCAL_DEFAULT_FWHM [arcsec]) so that their wings stay out of the sky spectrum.
AUTOCAL_NSIGMA = 3.0
AUTOCAL_GROW = 1.5
AUTOCAL_DEFAULT_FWHM = 0.8
_SPAXEL_ARCSEC = 0.2

#: Wavelength bin [Å] of the slice autocalibration factors.
AUTOCAL_BIN = 250.0
#: A sky line window is where the sky spectrum exceeds its running median (over
#: AUTOCAL_MEDIAN_WIDTH Å) by this factor, widened by AUTOCAL_LINE_PAD Å on each side so
#: that it holds the whole line at every slice's LSF and wavelength sampling.
AUTOCAL_LINE_CONTRAST = 1.3
AUTOCAL_MEDIAN_WIDTH = 51.25
AUTOCAL_LINE_PAD = 3.75
#: Bin [Å] of the per-spaxel continuum that is subtracted under the line windows.
AUTOCAL_CONT_BIN = 40.0
#: Spaxel columns further than this many σ from their slice's weighted median are dropped.
AUTOCAL_CLIP = 4.0
#: A line whose field-wide mean ratio exceeds that of the other lines by more than
#: max(5 σ, this) is spatially variable emission (a nebula), not sky, and is dropped.
AUTOCAL_EXCESS = 0.01
_AUTOCAL_CHUNK = 8_000_000
_NXSLICE = 256  # xslice field of the origin word (8 bits)


def sky_line_windows(sky, sampling: float = SPECTRAL_SAMPLING) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) [Å] of the sky-line windows of the spectrum ``sky`` (a callable of λ with
    a ``lam`` array): where it exceeds its running median by AUTOCAL_LINE_CONTRAST,
    widened by AUTOCAL_LINE_PAD on each side; adjacent windows merge."""
    grid = np.arange(float(np.min(sky.lam)), float(np.max(sky.lam)) + sampling, sampling)
    flux = sky(grid)
    size = max(3, int(round(AUTOCAL_MEDIAN_WIDTH / sampling)) | 1)
    cont = ndimage.median_filter(flux, size=size, mode="nearest")
    peak = (flux > AUTOCAL_LINE_CONTRAST * cont) & (flux > 0)
    pad = int(round(AUTOCAL_LINE_PAD / sampling))
    inside = ndimage.binary_dilation(peak, iterations=pad) if pad > 0 and peak.any() else peak
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return grid[first] - 0.5 * sampling, grid[last] + 0.5 * sampling


def _column_line_fluxes(pt: PixTable, sky, lo: np.ndarray, hi: np.ndarray):
    """Per spaxel column (one xslice of one slice) and sky-line window: the line flux of the
    data and of ``sky`` above the column's own continuum (the mean of its rows outside the
    windows per AUTOCAL_CONT_BIN Å bin, so that stars and other continuum sources drop
    out), and the variance of the data's. Good rows only, in chunks (full-size tables).

    Returns ``(columns, num, den, var, rows)``: the occupied column keys
    ((ifu·64 + slice)·256 + xslice), three (ncolumn, nline) arrays, and the window rows
    used per column."""
    nline = lo.size
    lut = np.full(32 * 64 * _NXSLICE, -1, dtype=np.int64)
    lam0 = float(pt.lam.min())
    nbin = int((float(pt.lam.max()) - lam0) // AUTOCAL_CONT_BIN) + 1

    def chunk_rows(c):
        part = slice(c, c + _AUTOCAL_CHUNK)
        good = np.flatnonzero((pt.dq[part] == 0) & np.isfinite(pt.data[part]))
        ifu, slice_, xs, _ = unpack_origin(pt.origin[part][good])
        col = (ifu.astype(np.int64) * 64 + slice_) * _NXSLICE + xs
        lam = pt.lam[part][good].astype(np.float64)
        k = np.searchsorted(lo, lam, side="right") - 1
        line = np.where((k >= 0) & (lam <= hi[np.maximum(k, 0)]), k, -1)
        return part, good, col, lam, line

    starts = range(0, pt.nrows, _AUTOCAL_CHUNK)
    for c in starts:  # the occupied columns -> dense indices
        _, _, col, _, _ = chunk_rows(c)
        lut[col] = 0
    columns = np.flatnonzero(lut == 0)
    lut[columns] = np.arange(columns.size)
    ncol = columns.size
    n_off = np.zeros(ncol * nbin)
    c_data = np.zeros(ncol * nbin)
    c_sky = np.zeros(ncol * nbin)
    for c in starts:  # pass 1: the continuum of each column and λ bin, outside the windows
        part, good, col, lam, line = chunk_rows(c)
        off = line < 0
        key = lut[col[off]] * nbin + ((lam[off] - lam0) // AUTOCAL_CONT_BIN).astype(np.int64)
        n_off += np.bincount(key, minlength=ncol * nbin)
        c_data += np.bincount(key, weights=pt.data[part][good][off], minlength=ncol * nbin)
        c_sky += np.bincount(key, weights=sky(lam[off]), minlength=ncol * nbin)
    usable = n_off >= 5
    c_data = np.where(usable, c_data / np.maximum(n_off, 1), 0.0)
    c_sky = np.where(usable, c_sky / np.maximum(n_off, 1), 0.0)
    num = np.zeros(ncol * nline)
    den = np.zeros(ncol * nline)
    var = np.zeros(ncol * nline)
    rows = np.zeros(ncol, dtype=np.int64)
    for c in starts:  # pass 2: line fluxes above that continuum
        part, good, col, lam, line = chunk_rows(c)
        on = np.flatnonzero(line >= 0)
        icol = lut[col[on]]
        cb = icol * nbin + ((lam[on] - lam0) // AUTOCAL_CONT_BIN).astype(np.int64)
        on, icol, cb = on[usable[cb]], icol[usable[cb]], cb[usable[cb]]
        key = icol * nline + line[on]
        num += np.bincount(key, weights=pt.data[part][good][on] - c_data[cb], minlength=ncol * nline)
        den += np.bincount(key, weights=sky(lam[on]) - c_sky[cb], minlength=ncol * nline)
        var += np.bincount(key, weights=pt.stat[part][good][on], minlength=ncol * nline)
        rows += np.bincount(icol, minlength=ncol)
    shape = (ncol, nline)
    return columns, num.reshape(shape), den.reshape(shape), var.reshape(shape), rows


def _weighted_median(values: np.ndarray, weights: np.ndarray, group: np.ndarray, ngroup: int) -> np.ndarray:
    """Per group, the value at half of the cumulated weight (0 where a group has none)."""
    order = np.lexsort((values, group))
    v, w, g = values[order], weights[order], group[order]
    cw = np.cumsum(w)
    total = np.bincount(g, weights=w, minlength=ngroup)
    before = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    out = np.zeros(ngroup)
    has = total > 0
    # first element of each group whose cumulated weight reaches half of the group's
    target = before + 0.5 * total
    idx = np.searchsorted(cw, target[has], side="left")
    out[has] = v[np.minimum(idx, v.size - 1)]
    return out


def _fit_slices(ratio: np.ndarray, weight: np.ndarray, group: np.ndarray, ngroup: int, s: np.ndarray):
    """Per slice, the weighted straight-line fit ratio = a + b·s over its columns (s: the
    column's position along the slice, −½…½), after σ-clipping columns about the slice's
    weighted median (cosmic rays, residuals of bright stars). Returns (a, b, Σweight)."""
    weight = weight.copy()
    for _ in range(3):
        med = _weighted_median(ratio, weight, group, ngroup)
        weight[np.abs(ratio - med[group]) * np.sqrt(weight) > AUTOCAL_CLIP] = 0.0

    def wsum(x):
        return np.bincount(group, weights=weight * x, minlength=ngroup)

    w, sx, sxx, r, rx = wsum(np.ones_like(ratio)), wsum(s), wsum(s * s), wsum(ratio), wsum(ratio * s)
    det = w * sxx - sx * sx
    fit = (w > 0) & (det > 1e-6 * np.maximum(w * sxx, 1e-300))  # a slope needs columns spread along the slice
    b = np.where(fit, (w * rx - sx * r) / np.where(fit, det, 1.0), 0.0)
    a = np.where(w > 0, (r - b * sx) / np.maximum(w, 1e-300), 1.0)
    return a, b, w


def autocal_factors(pt: PixTable, sky, bin_width: float = AUTOCAL_BIN) -> Table:
    """``autocalib=deepfield``: per (IFU, slice) correction factors from the sky lines.

    ``sky(lam)`` is a mean sky spectrum (e.g. of the source-free spaxels). Sky lines are
    uniform on the sky, so the ratio of a slice's line flux to that of ``sky`` is the
    slice's sky illumination relative to the calibration: for every spaxel column and
    line window (:func:`sky_line_windows`) the flux above the column's own continuum
    (which takes out stars, galaxies' continua and the sky continuum) is summed over the
    whole window (independent of the slice's LSF and λ sampling); a column's ratio is
    Σ data / Σ sky over the kept lines, with weight (Σ sky)² / Σ variance. Per slice a
    straight line along the slice is fitted to the columns (σ-clipped), and the factor is
    its value at the slice centre. Lines whose ratio is higher than the others' over the
    field (nebular emission) are dropped and the fit repeated. The factors are normalised
    to a row-weighted mean of 1 (the response keeps the flux scale) and, the illumination
    being achromatic, repeated for every ``bin_width`` Å bin (the DRS layout).
    Table columns (AUTOCAL_FACTORS): ``ifu``, ``sli``, ``lmin``, ``lmax`` [Å], ``corr``,
    ``npts`` (sky-line window rows of the slice); the data are *divided* by ``corr``
    (the fitted slope along the slice is not kept: the DRS table has no place for it). A
    slice without usable sky-line rows gets 1.
    """
    lo, hi = sky_line_windows(sky)
    columns, num, den, var, rows = _column_line_fluxes(pt, sky, lo, hi)
    slices, group = np.unique(columns // _NXSLICE, return_inverse=True)
    xs = columns % _NXSLICE
    xmin = np.full(slices.size, np.inf)
    xmax = np.full(slices.size, -np.inf)
    np.minimum.at(xmin, group, xs)
    np.maximum.at(xmax, group, xs)
    s = (xs - 0.5 * (xmin[group] + xmax[group])) / np.maximum(xmax[group] - xmin[group], 1.0)
    ok = (den > 0) & (var > 0)
    ratio = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    weight = np.where(ok, den * den / np.where(ok, var, 1.0), 0.0)
    used = weight.sum(axis=0) > 0
    for _ in range(4):
        n, d, v = num[:, used].sum(1), den[:, used].sum(1), var[:, used].sum(1)
        good = (d > 0) & (v > 0)
        a, b, wsum = _fit_slices(np.where(good, n / np.where(good, d, 1.0), 0.0),
                                 np.where(good, d * d / np.where(good, v, 1.0), 0.0), group, slices.size, s)
        model = (a[group] + b[group] * s)[:, None]
        wl = weight.sum(axis=0)
        excess = np.sum(weight * (ratio - model), axis=0) / np.maximum(wl, 1e-300)
        if not used.any():
            break
        limit = np.maximum(5.0 / np.sqrt(np.maximum(wl, 1e-300)), AUTOCAL_EXCESS)
        keep = (wl > 0) & (excess - np.median(excess[used]) < limit)
        if (keep == used).all() or not keep.any():
            break
        used = keep
    measured = wsum > 0
    nrows = np.bincount(group, weights=rows, minlength=slices.size)
    norm = float(np.sum(nrows[measured] * a[measured]) / np.sum(nrows[measured])) if measured.any() else 1.0
    corr = np.where(measured, a / norm, 1.0)
    lam_lo = math.floor(float(pt.lam.min()) / bin_width) * bin_width
    nbin = int(math.floor((float(pt.lam.max()) - lam_lo) / bin_width)) + 1
    b_idx = np.tile(np.arange(nbin), slices.size)
    return Table({
        "ifu": np.repeat(slices // 64, nbin).astype(np.int32), "sli": np.repeat(slices % 64, nbin).astype(np.int32),
        "lmin": lam_lo + b_idx * bin_width, "lmax": lam_lo + (b_idx + 1) * bin_width,
        "corr": np.repeat(corr, nbin), "npts": np.repeat(np.where(measured, nrows, 0), nbin).astype(np.int32),
    })  # fmt: skip


def apply_autocal(pt: PixTable, factors: Table, where: str = "AUTOCAL_FACTORS") -> int:
    """Divide each row by the factor of its (IFU, slice, λ bin); returns the rows corrected.

    Rows whose slice or bin has no entry are left alone. Records ``… PIXTABLE AUTOCAL``.
    """
    cols = {c.lower(): c for c in factors.colnames}
    for need in ("ifu", "sli", "lmin", "lmax", "corr"):
        if need not in cols:
            raise RecipeError(f"{where}: autocalibration table lacks column {need}")
    lmin = np.asarray(factors[cols["lmin"]], dtype=np.float64)
    lmax = np.asarray(factors[cols["lmax"]], dtype=np.float64)
    corr = np.asarray(factors[cols["corr"]], dtype=np.float64)
    if len(factors) == 0:
        return 0
    width = float(np.median(lmax - lmin))
    if not width > 0:
        raise RecipeError(f"{where}: autocalibration bins must have lmax > lmin")
    lo = float(lmin.min())
    fb = np.floor((lmin - lo) / width + 0.5).astype(np.int64)
    nbin = int(fb.max()) + 1
    lut = np.ones((32, 64, nbin), dtype=np.float64)
    usable = np.isfinite(corr) & (corr > 0)
    f_ifu = np.asarray(factors[cols["ifu"]], dtype=np.int64)
    f_sli = np.asarray(factors[cols["sli"]], dtype=np.int64)
    if ((f_ifu < 0) | (f_ifu > 31) | (f_sli < 0) | (f_sli > 63)).any():
        raise RecipeError(f"{where}: autocalibration table has IFU/slice numbers out of range")
    lut[f_ifu[usable], f_sli[usable], fb[usable]] = corr[usable]
    ifu, slice_, _, _ = unpack_origin(pt.origin)
    b = np.floor((pt.lam.astype(np.float64) - lo) / width).astype(np.int64)
    inside = (b >= 0) & (b < nbin)
    factor = np.ones(pt.nrows, dtype=np.float32)
    factor[inside] = lut[ifu[inside], slice_[inside], b[inside]]
    pt.columns["data"] /= factor
    pt.columns["stat"] /= factor * factor
    pt.header[hkey(pkey("AUTOCAL"))] = (True, "slice autocalibration applied")
    return int(np.count_nonzero(factor != 1.0))


# --------------------------------------------------------------------------------------
# the two sources of factors
# --------------------------------------------------------------------------------------


@dataclass
class Deepfield:
    """What ``autocalib=deepfield`` measured: the factors (AUTOCAL_FACTORS table), the white
    image and its source-free mask (AUTOCAL_MASK) and the source threshold."""

    factors: Table
    image: skysub.FieldImage
    mask: np.ndarray
    threshold: float

    @property
    def low(self) -> float:
        """Lowest white-image value inside the mask."""
        return float(np.nanmin(np.where(self.mask, self.image.data, np.nan)))


def deepfield_factors(pt: PixTable, crsigma: tuple[float, float]) -> Deepfield:
    """``autocalib=deepfield`` on a merged, flux-calibrated table in field pixels: the white
    image (``crsigma[0]`` clipping), its source-free spaxels, their mean sky spectrum
    (``crsigma[1]`` clipping, 1.25 Å bins) and from it the slice factors."""
    cube_sigma, spec_sigma = crsigma
    image = skysub.white_image(pt, cube_sigma)
    seeing = [float(pt.header[k]) for k in ("ESO TEL AMBI FWHM START", "ESO TEL AMBI FWHM END")
              if k in pt.header and float(pt.header[k]) > 0]  # fmt: skip
    fwhm = float(np.mean(seeing)) if seeing else AUTOCAL_DEFAULT_FWHM
    grow = min(10, int(round(AUTOCAL_GROW * fwhm / _SPAXEL_ARCSEC)))  # WFM spaxels
    mask, threshold = skysub.source_free_mask(image, AUTOCAL_NSIGMA, grow)
    if not mask.any():
        raise RecipeError("autocalib=deepfield: no source-free spaxel in the white image")
    rows = skysub.rows_in_mask(pt, image, mask)
    spectrum = skysub.sky_spectrum(pt.lam[rows], pt.data[rows], pt.stat[rows], SPECTRAL_SAMPLING, spec_sigma)
    del rows
    return Deepfield(autocal_factors(pt, spectrum), image, mask, threshold)


def read_autocal_factors(path: Path) -> Table:
    """A given AUTOCAL_FACTORS table (``autocalib=user``), first extension."""
    try:
        return Table.read(path, hdu=1)
    except (OSError, ValueError, IndexError) as exc:
        raise RecipeError(f"{path}: cannot read AUTOCAL_FACTORS ({str(exc).splitlines()[0]})") from None
