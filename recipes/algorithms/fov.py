"""Field-of-view images (IMAGE_FOV) of exposures: reading, selection, tangent plane, mosaic.

An IMAGE_FOV (as :func:`recipes.algorithms.cube.write_image_fov` writes it) has a primary
header with DATE-OBS, MJD-OBS, EXPTIME and ``ESO DRS MUSE FILTER NAME``, and a ``DATA``
image (NaN = no data) with a gnomonic (TAN) celestial WCS. :class:`FovImage` holds one,
:func:`read_fov` reads it, :func:`select_fovs` keeps one filter's images in time order
(muse_exp_align), :func:`tangent_plane` projects RA/Dec on the plane of a reference
point [arcsec], and :func:`mosaic` averages offset-corrected images on one north-up grid
(PREVIEW_FOV, and the alignment plot of musered).

Offsets follow the DRS convention of OFFSET_LIST: ``RA_OFFSET``/``DEC_OFFSET`` [deg] are
the apparent displacement of an exposure, subtracted to correct it (RA_OFFSET a pure
difference of RA). Pixels are 0-based ``[y, x]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from recipes.base import RecipeError


@dataclass
class FovImage:
    """One IMAGE_FOV: its data (NaN = no data), WCS and observation keys."""

    path: Path
    data: np.ndarray
    wcs: WCS
    header: fits.Header          # primary header
    date_obs: str
    mjd_obs: float
    exptime: float
    filter_name: str

    @property
    def label(self) -> str:
        """``folder/file``: products of every exposure share one file name."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def spaxel(self) -> float:
        """Pixel size [arcsec] (square root of the pixel area)."""
        return math.sqrt(abs(np.linalg.det(self.wcs.pixel_scale_matrix))) * 3600.0

    def pixel_to_world(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RA, Dec [deg] of 0-based pixels."""
        ra, dec = self.wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return np.asarray(ra, float), np.asarray(dec, float)

    def world_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixels of RA, Dec [deg]."""
        x, y = self.wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
        return np.asarray(x, float), np.asarray(y, float)


def read_fov(path: Path) -> FovImage:
    """An IMAGE_FOV (the first image extension, ``DATA`` preferred). RecipeError naming the
    file when it cannot be read or lacks a celestial WCS, DATE-OBS or MJD-OBS."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            primary = hdul[0].header.copy()
            hdu = hdul["DATA"] if "DATA" in hdul else next(
                (h for h in hdul if h.data is not None and h.header.get("NAXIS") == 2), None)
            if hdu is None:
                raise RecipeError(f"{path}: no 2-D image extension")
            data = np.asarray(hdu.data, dtype=np.float64)
            header = hdu.header.copy()
    except RecipeError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read IMAGE_FOV ({str(exc).splitlines()[0]})") from None
    if data.ndim != 2:
        raise RecipeError(f"{path}: IMAGE_FOV data must be a 2-D image, not {data.ndim}-D")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial or "TAN" not in "".join(wcs.wcs.ctype):
        raise RecipeError(f"{path}: IMAGE_FOV needs a gnomonic (RA---TAN/DEC--TAN) WCS")
    date_obs = primary.get("DATE-OBS", header.get("DATE-OBS"))
    mjd = primary.get("MJD-OBS", header.get("MJD-OBS"))
    if date_obs is None or mjd is None:
        raise RecipeError(f"{path}: IMAGE_FOV needs DATE-OBS and MJD-OBS in its header")
    flt = str(primary.get("ESO DRS MUSE FILTER NAME", header.get("ESO DRS MUSE FILTER NAME", "white")))
    return FovImage(path, data, wcs, primary, str(date_obs), float(mjd),
                    float(primary.get("EXPTIME", 1.0) or 1.0), flt.strip())


def select_fovs(paths: Sequence[Path], filter_name: str, recipe: str = "muse_exp_align") -> list[FovImage]:
    """The images of ``filter_name`` (case-insensitive), one per exposure, in MJD-OBS order.

    RecipeError when no image has that filter, when two share an MJD-OBS (the same
    exposure twice) or when fewer than two remain (``recipe`` names who needs them).
    """
    images = [read_fov(p) for p in paths]
    chosen = [im for im in images if im.filter_name.lower() == filter_name.lower()]
    if not chosen:
        found = sorted({im.filter_name for im in images})
        raise RecipeError(f"no IMAGE_FOV of filter {filter_name!r} among {len(images)} input(s) "
                          f"(filters found: {', '.join(found) or 'none'})")
    chosen.sort(key=lambda im: (im.mjd_obs, str(im.path)))
    for a, b in zip(chosen, chosen[1:]):
        if abs(a.mjd_obs - b.mjd_obs) < 1e-8:
            raise RecipeError(f"{a.label} and {b.label}: same MJD-OBS {a.mjd_obs}; "
                              "each IMAGE_FOV must come from a different exposure")
    if len(chosen) < 2:
        raise RecipeError(f"{recipe} needs at least 2 IMAGE_FOV of filter {filter_name!r}, "
                          f"got {len(chosen)} ({chosen[0].label})")
    return chosen


def tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic (ξ, η) [arcsec] of RA/Dec [deg] about (ra0, dec0) (n × 2; ξ east, η north)."""
    a = np.deg2rad(np.asarray(ra, float) - ra0)
    d = np.deg2rad(np.asarray(dec, float))
    d0 = np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.rad2deg(np.column_stack([xi, eta])) * 3600.0


def mosaic(images: Sequence[FovImage], ra_offset: np.ndarray, dec_offset: np.ndarray,
           ) -> tuple[np.ndarray, np.ndarray, fits.Header]:  # fmt: skip
    """Average of the corrected images on a north-up TAN grid (nearest neighbour), the
    exposure time per pixel [s], and the grid's WCS cards. The grid has the first
    image's pixel size and tangent point (corrected by its offset); it covers every input.
    Offsets [deg] as in the module docstring, one per image."""
    ref = images[0]
    ra0 = float(ref.wcs.wcs.crval[0]) - float(ra_offset[0])
    dec0 = float(ref.wcs.wcs.crval[1]) - float(dec_offset[0])
    scale = ref.spaxel  # arcsec/pix
    corners = []
    for im, dra, ddec in zip(images, ra_offset, dec_offset):
        ny, nx = im.data.shape
        cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
        cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        ra, dec = im.pixel_to_world(cx, cy)
        corners.append(tangent_plane(ra - dra, dec - ddec, ra0, dec0))
    corners = np.vstack(corners)
    lo = np.floor(corners.min(axis=0) / scale)
    hi = np.ceil(corners.max(axis=0) / scale)
    nx, ny = int(hi[0] - lo[0]), int(hi[1] - lo[1])
    header = fits.Header()
    header["WCSAXES"] = 2
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    # East left: ξ decreases with x; pixel 1 sits at ξ = hi - 0.5 pixels.
    header["CRPIX1"], header["CRPIX2"] = hi[0] + 0.5, -lo[1] + 0.5
    header["CRVAL1"], header["CRVAL2"] = ra0, dec0
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -scale / 3600.0, 0.0, 0.0, scale / 3600.0
    out_wcs = WCS(header)
    total = np.zeros((ny, nx))
    count = np.zeros((ny, nx))
    expmap = np.zeros((ny, nx))
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = out_wcs.all_pix2world(xx.ravel().astype(float), yy.ravel().astype(float), 0)
    for im, dra, ddec in zip(images, ra_offset, dec_offset):
        px, py = im.world_to_pixel(ra + dra, dec + ddec)
        ix, iy = np.rint(px).astype(np.int64), np.rint(py).astype(np.int64)
        inside = (ix >= 0) & (iy >= 0) & (ix < im.data.shape[1]) & (iy < im.data.shape[0])
        values = np.full(ix.size, np.nan)
        values[inside] = im.data[iy[inside], ix[inside]]
        good = np.isfinite(values).reshape(ny, nx)
        total[good] += values.reshape(ny, nx)[good]
        count[good] += 1
        expmap[good] += im.exptime
    with np.errstate(invalid="ignore", divide="ignore"):
        preview = np.where(count > 0, total / count, np.nan)
    return preview.astype(np.float32), expmap.astype(np.float32), header
