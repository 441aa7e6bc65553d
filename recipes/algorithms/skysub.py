"""Sky of one exposure's pixel table from its darkest spaxels (muse_scipost ``skymethod``
``simple`` and ``model``, recipes.md §3.9 step 6).

Pure functions on a merged, flux-calibrated :class:`~recipes.algorithms.pixtable.PixTable` still in
field-pixel coordinates (0.2″ spaxels of the GEOMETRY_TABLE):

* :func:`white_image` — the reconstructed white-light image: per spaxel (field pixel
  rounded to the nearest integer), the σ-clipped mean of its good rows over all λ;
* :func:`sky_mask` — the darkest ``fraction`` of the spaxels after ignoring the darkest
  ``ignore`` (artefacts), as the DRS chooses them;
* :func:`sky_spectrum` — the rows of the sky spaxels binned in λ (``sampling`` Å bins,
  abscissa = mean λ of each bin), σ-clipped per bin around the median (MAD) to reject
  cosmic rays; :func:`measure_sky` runs these three;
* ``simple``: :func:`subtract_spectrum` subtracts the sky spectrum interpolated at each
  row's λ; ``model`` fits lines and continuum to it (:mod:`recipes.algorithms.skymodel`).

Units: whatever the table holds (1e-20 erg/s/cm²/Å per spaxel after flux calibration);
wavelengths in Å.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from recipes.base import RecipeError
# the per-bin σ-clipped mean: a numba kernel (counting sort by bin, per-bin medians in
# parallel) instead of two global lexsorts of up to 3e8 rows; numpy reference alongside
from recipes.kernels.binstats import clipped_bin_mean
from recipes.algorithms.pixtable import PixTable

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


@dataclass
class SkyMeasurement:
    """The sky of one exposure: the white image, its sky mask (with the lowest and highest
    white value in it) and the mean spectrum of the rows in the mask."""

    image: FieldImage
    mask: np.ndarray
    low: float
    high: float
    spectrum: SkySpectrum


def measure_sky(pt: PixTable, crsigma: tuple[float, float], fraction: float, ignore: float,
                sampling: float) -> SkyMeasurement:  # fmt: skip
    """White image (``crsigma[0]`` clipping), sky mask (``fraction`` after ``ignore``) and
    sky spectrum (``sampling`` Å bins, ``crsigma[1]`` clipping) of ``pt``."""
    cube_sigma, spec_sigma = crsigma
    image = white_image(pt, cube_sigma)
    mask, low, high = sky_mask(image, fraction, ignore)
    rows = rows_in_mask(pt, image, mask)
    spectrum = sky_spectrum(pt.lam[rows], pt.data[rows], pt.stat[rows], sampling, spec_sigma)
    return SkyMeasurement(image, mask, low, high, spectrum)


def mask_image_hdu(image: FieldImage, mask: np.ndarray) -> fits.ImageHDU:
    """SKY_MASK image (1 = sky) on the field-pixel grid, with a PIXEL WCS."""
    hdu = fits.ImageHDU(mask.astype(np.uint8), name="DATA")
    h = hdu.header
    h["CTYPE1"], h["CTYPE2"] = "PIXEL", "PIXEL"
    h["CRPIX1"], h["CRPIX2"] = 1.0, 1.0
    h["CRVAL1"], h["CRVAL2"] = float(image.x0), float(image.y0)
    h["CDELT1"], h["CDELT2"] = 1.0, 1.0
    return hdu
