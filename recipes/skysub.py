"""Sky subtraction of one exposure's pixel table (muse_scipost ``skymethod``, recipes.md §3.9 step 6).

Pure functions on a merged, flux-calibrated :class:`~recipes.pixtable.PixTable` still in
field-pixel coordinates (0.2″ spaxels of the GEOMETRY_TABLE):

* :func:`white_image` — the reconstructed white-light image: per spaxel (field pixel
  rounded to the nearest integer), the σ-clipped mean of its good rows over all λ;
* :func:`sky_mask` — the darkest ``fraction`` of the spaxels after ignoring the darkest
  ``ignore`` (artefacts), as the DRS chooses them;
* :func:`sky_spectrum` — the rows of the sky spaxels binned in λ (``sampling`` Å bins,
  abscissa = mean λ of each bin), σ-clipped per bin around the median (MAD) to reject
  cosmic rays;
* ``simple``: :func:`subtract_spectrum` subtracts the sky spectrum interpolated at each
  row's λ;
* ``model``: :func:`fit_sky_model` fits the SKY_LINES fluxes by linear least squares with
  the mean LSF of the exposure's slices (LSF_PROFILE, :func:`recipes.lsfmodel.evaluate_lsf`,
  or a Gaussian whose width is fitted on the brightest line when no LSF_PROFILE is given)
  plus a smooth continuum; the continuum is then the residual spectrum − lines (or
  SKY_CONTINUUM when given); :func:`subtract_model` removes lines (each row with its own
  slice's LSF) and continuum from every row.

Units: whatever the table holds (1e-20 erg/s/cm²/Å per spaxel after flux calibration);
wavelengths in Å. Line fluxes are in table units × Å (per spaxel).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from .base import RecipeError
# the per-bin σ-clipped mean: a numba kernel (counting sort by bin, per-bin medians in
# parallel) instead of two global lexsorts of up to 3e8 rows; numpy reference alongside
from .kernels.binstats import clipped_bin_mean, stable_bin_order
from .pixtable import PixTable, unpack_origin

#: Half-width [Å] of the window in which a line's LSF is evaluated.
LINE_WINDOW = 8.0
#: Knot spacing [Å] of the smooth continuum fitted together with the line fluxes.
CONTINUUM_KNOTS = 20.0


#: Rows per chunk of the whole-table passes (bounds their float64/int64 temporaries).
_CHUNK = 8_000_000


def _good(pt: PixTable, rows: slice = slice(None)) -> np.ndarray:
    return (pt.dq[rows] == 0) & np.isfinite(pt.data[rows])


# --------------------------------------------------------------------------------------
# white image and sky mask
# --------------------------------------------------------------------------------------


@dataclass
class FieldImage:
    """An image on the field-pixel grid: ``data[iy, ix]`` with pixel (ix, iy) at field
    position (x0 + ix, y0 + iy) (field pixels, 0.2″); NaN where no data."""

    data: np.ndarray
    x0: int
    y0: int

    def index_of(self, xpos: np.ndarray, ypos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ix = np.floor(np.asarray(xpos, dtype=np.float64) + 0.5).astype(np.int64) - self.x0
        iy = np.floor(np.asarray(ypos, dtype=np.float64) + 0.5).astype(np.int64) - self.y0
        return ix, iy


def white_image(pt: PixTable, crsigma: float = 15.0, max_rows: int = 20_000_000) -> FieldImage:
    """Reconstructed white-light image: per field spaxel, the mean of its good rows after
    rejecting those more than ``crsigma`` × 1.4826 MAD from the spaxel's median (cosmic
    rays and the brightest sky lines). Tables with more than ``max_rows`` good rows are
    subsampled regularly (every k-th row), which bounds the sort on full-size tables."""
    good = _every_kth_good_row(pt, max_rows)
    if good.size == 0:
        raise RecipeError("pixel table has no good rows for the white image")
    xpos, ypos = pt.xpos[good], pt.ypos[good]
    x0 = int(np.floor(xpos.min() + 0.5))
    y0 = int(np.floor(ypos.min() + 0.5))
    nx = int(np.floor(xpos.max() + 0.5)) - x0 + 1
    ny = int(np.floor(ypos.max() + 0.5)) - y0 + 1
    image = FieldImage(np.full((ny, nx), np.nan), x0, y0)
    ix, iy = image.index_of(xpos, ypos)
    mean, _ = clipped_bin_mean(iy * nx + ix, pt.data[good], nx * ny, crsigma)
    image.data = mean.reshape(ny, nx)
    return image


def _every_kth_good_row(pt: PixTable, max_rows: int) -> np.ndarray:
    """Indices of the good rows, every k-th of them (k = ⌈good / max_rows⌉), chunk by
    chunk: the index array of all 3e8 good rows of an exposure would take 2.4 GB."""
    starts = range(0, pt.nrows, _CHUNK)
    total = sum(int(np.count_nonzero(_good(pt, slice(c, c + _CHUNK)))) for c in starts)
    k = int(math.ceil(total / max_rows)) if total > max_rows else 1
    picked, seen = [], 0
    for c in starts:
        rows = np.flatnonzero(_good(pt, slice(c, c + _CHUNK))) + c
        picked.append(rows[(-seen) % k :: k])  # global good-row positions 0, k, 2k, ...
        seen += rows.size
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def sky_mask(image: FieldImage, fraction: float, ignore: float) -> tuple[np.ndarray, float, float]:
    """Boolean mask of the sky spaxels of ``image`` and the (low limit, threshold) values.

    The finite spaxels are sorted by value; the darkest ``ignore`` fraction is skipped and
    the next ``fraction`` of all finite spaxels are sky (at least one spaxel).
    """
    values = image.data[np.isfinite(image.data)]
    if values.size == 0:
        raise RecipeError("white image has no finite spaxel for the sky mask")
    ordered = np.sort(values)
    i0 = min(int(math.floor(ignore * values.size)), values.size - 1)
    i1 = min(max(i0 + 1, int(math.floor((ignore + fraction) * values.size))), values.size)
    low, high = float(ordered[i0]), float(ordered[i1 - 1])
    with np.errstate(invalid="ignore"):
        mask = (image.data >= low) & (image.data <= high)
    return mask, low, high


def source_free_mask(image: FieldImage, nsigma: float, grow: int) -> tuple[np.ndarray, float]:
    """Boolean mask of the spaxels free of sources, and the threshold: spaxels brighter
    than median + ``nsigma`` × 1.4826 MAD of the finite spaxels are sources, grown by
    ``grow`` spaxels (binary dilation, e.g. one seeing FWHM) to take their wings too.
    Unlike :func:`sky_mask` it does not choose by rank, so that a slice whose sky is a
    few per cent brighter keeps its sky spaxels."""
    finite = np.isfinite(image.data)
    values = image.data[finite]
    if values.size == 0:
        raise RecipeError("white image has no finite spaxel for the source mask")
    median = float(np.median(values))
    threshold = median + nsigma * 1.4826 * float(np.median(np.abs(values - median)))
    sources = finite & (np.where(finite, image.data, -np.inf) > threshold)
    if grow > 0 and sources.any():
        sources = ndimage.binary_dilation(sources, iterations=grow)
    return finite & ~sources, threshold


def rows_in_mask(pt: PixTable, image: FieldImage, mask: np.ndarray) -> np.ndarray:
    """Boolean row selection: good rows whose spaxel is in ``mask``."""
    ny, nx = mask.shape
    sel = np.zeros(pt.nrows, dtype=bool)
    for c in range(0, pt.nrows, _CHUNK):  # chunks: the spaxel indices are int64
        ix, iy = image.index_of(pt.xpos[c : c + _CHUNK], pt.ypos[c : c + _CHUNK])
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        part = sel[c : c + _CHUNK]
        part[inside] = mask[iy[inside], ix[inside]]
    return sel & _good(pt)


# --------------------------------------------------------------------------------------
# sky spectrum
# --------------------------------------------------------------------------------------


@dataclass
class SkySpectrum:
    """Binned sky spectrum: bin mean wavelength ``lam`` [Å], ``data`` (mean per row),
    ``stat`` (variance of that mean), ``count`` (rows kept per bin). Bins without rows
    are dropped."""

    lam: np.ndarray
    data: np.ndarray
    stat: np.ndarray
    count: np.ndarray

    def __call__(self, lam) -> np.ndarray:
        return np.interp(np.asarray(lam, dtype=np.float64), self.lam, self.data)

    def table(self) -> Table:
        return Table({"lambda": self.lam, "data": self.data, "stat": self.stat,
                      "dq": np.zeros(self.lam.size, dtype=np.int32)})  # fmt: skip


def sky_spectrum(lam: np.ndarray, data: np.ndarray, stat: np.ndarray, sampling: float, crsigma: float) -> SkySpectrum:
    """Bin sky rows in ``sampling`` Å bins with per-bin σ-clipping (``crsigma``)."""
    lam = np.asarray(lam, dtype=np.float64)
    if lam.size == 0:
        raise RecipeError("no sky rows to build a sky spectrum")
    lo = float(lam.min())
    bins = np.floor((lam - lo) / sampling).astype(np.int64)
    nb = int(bins.max()) + 1
    mean, keep = clipped_bin_mean(bins, data, nb, crsigma)
    count = np.bincount(bins[keep], minlength=nb)
    lam_mean = np.bincount(bins[keep], weights=lam[keep], minlength=nb)
    var = np.bincount(bins[keep], weights=np.asarray(stat, dtype=np.float64)[keep], minlength=nb)
    ok = count > 0
    n = np.maximum(count, 1)
    return SkySpectrum(lam_mean[ok] / n[ok], mean[ok], var[ok] / n[ok] ** 2, count[ok])


def subtract_spectrum(pt: PixTable, spectrum: SkySpectrum) -> None:
    """``simple``: subtract the sky spectrum, interpolated at each row's λ, in place."""
    data = pt.columns["data"]
    for c in range(0, pt.nrows, _CHUNK):  # chunks: the interpolation runs in float64
        data[c : c + _CHUNK] -= spectrum(pt.lam[c : c + _CHUNK]).astype(np.float32)


# --------------------------------------------------------------------------------------
# line + continuum model
# --------------------------------------------------------------------------------------


def read_sky_lines(path: Path) -> Table:
    """SKY_LINES: ``name``, ``group``, ``lambda`` [Å], ``flux`` (first table extension)."""
    path = Path(path)
    try:
        table = Table.read(path, hdu=1)
    except (OSError, ValueError, IndexError) as exc:
        raise RecipeError(f"{path}: cannot read SKY_LINES ({str(exc).splitlines()[0]})") from None
    cols = {c.lower(): c for c in table.colnames}
    if "lambda" not in cols or "flux" not in cols:
        raise RecipeError(f"{path}: SKY_LINES needs columns lambda and flux")
    out = Table({"lambda": np.asarray(table[cols["lambda"]], dtype=np.float64),
                 "flux": np.asarray(table[cols["flux"]], dtype=np.float64)})  # fmt: skip
    out["name"] = table[cols["name"]] if "name" in cols else [f"L{x:.2f}" for x in out["lambda"]]
    out["group"] = np.asarray(table[cols["group"]], dtype=np.int32) if "group" in cols else 0
    return out


def read_sky_continuum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SKY_CONTINUUM: ``lambda`` [Å] and ``flux`` (table units)."""
    path = Path(path)
    try:
        table = Table.read(path, hdu=1)
    except (OSError, ValueError, IndexError) as exc:
        raise RecipeError(f"{path}: cannot read SKY_CONTINUUM ({str(exc).splitlines()[0]})") from None
    cols = {c.lower(): c for c in table.colnames}
    if "lambda" not in cols or "flux" not in cols:
        raise RecipeError(f"{path}: SKY_CONTINUUM needs columns lambda and flux")
    lam = np.asarray(table[cols["lambda"]], dtype=np.float64)
    order = np.argsort(lam)
    return lam[order], np.asarray(table[cols["flux"]], dtype=np.float64)[order]


#: ``lsf(ifu, slice, line_lambda, dlam) -> profile [1/Å]``
LsfFunction = Callable[[int, int, float, np.ndarray], np.ndarray]


def gaussian_lsf(sigma: float) -> LsfFunction:
    """An LSF that is the same unit-area Gaussian of ``sigma`` [Å] in every slice."""
    norm = 1.0 / (math.sqrt(2 * math.pi) * sigma)

    def lsf(ifu: int, slice_no: int, lam_line: float, dlam: np.ndarray) -> np.ndarray:
        return norm * np.exp(-0.5 * (np.asarray(dlam) / sigma) ** 2)

    return lsf


def profile_lsf(profile: dict) -> LsfFunction:
    """The LSF of an LSF_PROFILE (:func:`recipes.lsfmodel.read_lsf_profile` result)."""
    from .lsfmodel import evaluate_lsf

    def lsf(ifu: int, slice_no: int, lam_line: float, dlam: np.ndarray) -> np.ndarray:
        return evaluate_lsf(profile, ifu, slice_no, lam_line, dlam)

    return lsf


def fit_line_width(spectrum: SkySpectrum, lines: Table) -> float:
    """Gaussian σ [Å] of the brightest catalogue line in the spectrum's range (fit of a
    Gaussian plus constant within ±5 Å). RecipeError when no line can be fitted."""
    from scipy.optimize import curve_fit

    lo, hi = spectrum.lam[0] + 6.0, spectrum.lam[-1] - 6.0
    cand = [(float(f), float(lam)) for lam, f in zip(lines["lambda"], lines["flux"]) if lo < lam < hi]
    for _, lam0 in sorted(cand, reverse=True)[:5]:
        sel = np.abs(spectrum.lam - lam0) < 5.0
        x, y = spectrum.lam[sel], spectrum.data[sel]
        if x.size < 8:
            continue
        base = float(np.median(np.concatenate([y[:3], y[-3:]])))
        amp = float(y.max() - base)
        if amp <= 0:
            continue

        def gauss(xx, a, c, s, b):
            return a * np.exp(-0.5 * ((xx - c) / s) ** 2) + b

        try:
            p, _ = curve_fit(gauss, x, y, p0=(amp, lam0, 1.1, base), maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        sigma = abs(float(p[2]))
        if 0.3 < sigma < 4.0:
            return sigma
    raise RecipeError("cannot measure the sky-line width: no bright SKY_LINES line in the data (give LSF_PROFILE)")


@dataclass
class SkyModel:
    """Sky lines (``lam`` [Å], fitted ``flux`` [table units × Å], ``name``, ``group``) and the
    continuum sampled at ``cont_lam`` [Å] (``cont``)."""

    lam: np.ndarray
    flux: np.ndarray
    name: list[str]
    group: np.ndarray
    cont_lam: np.ndarray
    cont: np.ndarray

    def continuum(self, lam) -> np.ndarray:
        return np.interp(np.asarray(lam, dtype=np.float64), self.cont_lam, self.cont)

    def lines_table(self) -> Table:
        return Table({"name": self.name, "group": self.group, "lambda": self.lam, "flux": self.flux})

    def continuum_table(self) -> Table:
        return Table({"lambda": self.cont_lam, "flux": self.cont})


def _hat_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Linear B-spline (hat) functions on ``knots`` evaluated at ``x``: (len(x), len(knots))."""
    basis = np.zeros((x.size, knots.size))
    j = np.clip(np.searchsorted(knots, x) - 1, 0, knots.size - 2)
    t = np.clip((x - knots[j]) / (knots[j + 1] - knots[j]), 0.0, 1.0)
    rows = np.arange(x.size)
    basis[rows, j] = 1 - t
    basis[rows, j + 1] += t
    return basis


def fit_sky_model(
    spectrum: SkySpectrum,
    lines: Table,
    mean_lsf: Callable[[float, np.ndarray], np.ndarray],
    continuum: tuple[np.ndarray, np.ndarray] | None = None,
) -> SkyModel:
    """Fit the line fluxes and the continuum to ``spectrum``.

    ``mean_lsf(line_lambda, dlam)`` is the exposure's mean LSF [1/Å]. The lines inside the
    spectrum's range and a hat-function continuum (knots every 20 Å) are fitted together
    by linear least squares (bins weighted by their row counts); the final continuum is
    the spectrum minus the fitted lines (the DRS keeps that residual), or the given
    SKY_CONTINUUM interpolated onto the spectrum's wavelengths.
    """
    lam = spectrum.lam
    inside = (np.asarray(lines["lambda"]) > lam[0] - 3.0) & (np.asarray(lines["lambda"]) < lam[-1] + 3.0)
    sel = lines[inside]
    line_lam = np.asarray(sel["lambda"], dtype=np.float64)
    columns = [mean_lsf(float(ll), lam - ll) * (np.abs(lam - ll) < LINE_WINDOW) for ll in line_lam]
    if continuum is None:
        knots = np.linspace(lam[0], lam[-1], max(2, int(math.ceil((lam[-1] - lam[0]) / CONTINUUM_KNOTS)) + 1))
        cont_basis = _hat_basis(lam, knots)
        target = spectrum.data
    else:
        cont_basis = np.zeros((lam.size, 0))
        target = spectrum.data - np.interp(lam, continuum[0], continuum[1])
    design = np.column_stack([*columns, cont_basis]) if columns else cont_basis
    w = np.sqrt(spectrum.count.astype(np.float64))
    ok = np.isfinite(target)
    coef, *_ = np.linalg.lstsq(design[ok] * w[ok, None], target[ok] * w[ok], rcond=None)
    flux = coef[: line_lam.size]
    line_model = design[:, : line_lam.size] @ flux if line_lam.size else np.zeros(lam.size)
    if continuum is None:
        cont = spectrum.data - line_model
    else:
        cont = np.interp(lam, continuum[0], continuum[1])
    return SkyModel(line_lam, flux, [str(n) for n in sel["name"]], np.asarray(sel["group"], dtype=np.int32),
                    lam.copy(), cont)  # fmt: skip


def mean_slice_lsf(pt: PixTable, lsf: LsfFunction) -> Callable[[float, np.ndarray], np.ndarray]:
    """The mean over the table's (IFU, slice) pairs of ``lsf`` (for fitting the mean spectrum)."""
    ifu, slice_, _, _ = unpack_origin(pt.origin)
    pairs = np.flatnonzero(np.bincount(ifu.astype(np.int64) * 64 + slice_))  # = np.unique, without a sort

    def mean(lam_line: float, dlam: np.ndarray) -> np.ndarray:
        total = np.zeros(np.shape(dlam))
        for pair in pairs:
            i, s = divmod(int(pair), 64)
            total += lsf(i, s, lam_line, dlam)
        return total / max(pairs.size, 1)

    return mean


def subtract_model(pt: PixTable, model: SkyModel, lsf: LsfFunction) -> None:
    """Subtract lines (each row with its own slice's LSF) and continuum, in place.

    Works one (IFU, slice) group at a time (a chunk of rows without lines), so that no
    float64 column of the whole table is needed.
    """
    data = pt.columns["data"]
    if not model.lam.size:
        for c in range(0, pt.nrows, _CHUNK):
            data[c : c + _CHUNK] -= model.continuum(pt.lam[c : c + _CHUNK]).astype(np.float32)
        return
    ifu, slice_, _, _ = unpack_origin(pt.origin)
    key = ifu.astype(np.int64) * 64 + slice_
    del ifu, slice_
    # rows grouped by (IFU, slice) as a stable argsort would, by a counting sort (O(n))
    order, starts = stable_bin_order(key, 32 * 64)
    del key
    for k in np.flatnonzero(np.diff(starts)):
        rows = order[starts[k] : starts[k + 1]]
        i, s = divmod(int(k), 64)
        lam = pt.lam[rows].astype(np.float64)
        lam_order = np.argsort(lam)
        sorted_lam = lam[lam_order]
        acc = np.zeros(rows.size)
        for ll, f in zip(model.lam, model.flux):
            lo, hi = np.searchsorted(sorted_lam, [ll - LINE_WINDOW, ll + LINE_WINDOW])
            if hi <= lo:
                continue
            idx = lam_order[lo:hi]
            acc[idx] += f * lsf(i, s, float(ll), lam[idx] - ll)
        data[rows] -= (model.continuum(lam) + acc).astype(np.float32)


def mask_image_hdu(image: FieldImage, mask: np.ndarray) -> fits.ImageHDU:
    """SKY_MASK image (1 = sky) on the field-pixel grid, with a PIXEL WCS."""
    hdu = fits.ImageHDU(mask.astype(np.uint8), name="DATA")
    h = hdu.header
    h["CTYPE1"], h["CTYPE2"] = "PIXEL", "PIXEL"
    h["CRPIX1"], h["CRPIX2"] = 1.0, 1.0
    h["CRVAL1"], h["CRVAL2"] = float(image.x0), float(image.y0)
    h["CDELT1"], h["CDELT2"] = 1.0, 1.0
    return hdu
