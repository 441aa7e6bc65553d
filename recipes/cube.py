"""Output cubes: the grid (WCS), resampling a pixel table onto it, DATACUBE_FINAL and IMAGE_FOV.

Grid conventions (recipes.md §4.7): celestial axes ``RA---TAN``/``DEC--TAN`` with
``CD1_1 = −dx/3600``, ``CD2_2 = +dy/3600`` (deg/pix, north up, east left), ``CRVAL1/2`` the
pixel table's reference (pointing) and ``CRPIX1/2`` placed so that the data start at pixel
1; spectral axis ``AWAV`` (air wavelength, Å, linear, ``CRPIX3 = 1``, ``CRVAL3`` = first plane,
``CD3_3 = dlambda``) or ``AWAV-LOG`` from an OUTPUT_WCS. Pixel-unit tables (not yet
positioned) get ``CTYPE1/2 = 'PIXEL'`` with ``CD = dx``. Pixels are 1-based in headers
(FITS) and 0-based in arrays; cube arrays are ``[z, y, x]``.

:func:`make_cube` resamples a :class:`~recipes.pixtable.PixTable` with
:func:`recipes.kernels.resample.resample_cube`; :func:`write_datacube` writes the DRS
layout (header-only primary HDU, ``DATA`` and ``STAT`` float32 extensions with the WCS);
:func:`collapse` and :func:`write_image_fov` make the filter images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .base import RecipeError
from .io import STRUCTURAL_KEYS, fit_comments, hkey
from .kernels.resample import (
    POS_PIXEL,
    POS_POSITIONED,
    POS_PROJECTED,
    SPECTRAL_LINEAR,
    SPECTRAL_LOG,
    ResampleOptions,
    ResampleResult,
    resample_cube,
    spatial_coords,
)
from .pixtable import WCS_PIXEL, WCS_POSITIONED, WCS_PROJECTED, PixTable

SPAXEL_WFM_ARCSEC = 0.2
SPAXEL_NFM_ARCSEC = 0.025
NATURAL_DLAMBDA = 1.25
#: Built-in "white" filter: flat throughput over the nominal MUSE range (kMuseNominalLambdaMin/Max).
WHITE_RANGE = (4650.0, 9300.0)
FLUX_UNIT = "10**(-20)*erg/s/cm**2/Angstrom"
_CHUNK = 4_000_000
_POS_MODE = {WCS_PIXEL: POS_PIXEL, WCS_PROJECTED: POS_PROJECTED, WCS_POSITIONED: POS_POSITIONED}


@dataclass(frozen=True)
class CubeGrid:
    """An output voxel grid: ``nx, ny, nz`` and its WCS (FITS conventions, 1-based CRPIX).

    ``celestial`` False means pixel-unit axes (``CTYPE='PIXEL'``). ``cd`` is the 2×2 spatial
    CD matrix (deg/pix, or pix/pix), row-major. ``spectral`` is ``AWAV`` or ``AWAV-LOG``.
    """

    nx: int
    ny: int
    nz: int
    crpix1: float
    crpix2: float
    crval1: float
    crval2: float
    cd: tuple[float, float, float, float]
    crpix3: float
    crval3: float
    cd3: float
    celestial: bool = True
    spectral: str = "AWAV"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nz, self.ny, self.nx)

    @property
    def cdinv(self) -> np.ndarray:
        a, b, c, d = self.cd
        det = a * d - b * c
        return np.array([d / det, -b / det, -c / det, a / det], dtype=np.float64)

    @property
    def spectral_mapping(self) -> tuple[int, float, float, float]:
        kind = SPECTRAL_LOG if self.spectral == "AWAV-LOG" else SPECTRAL_LINEAR
        return kind, self.crval3, self.cd3, self.crpix3

    # -- coordinates (numpy; the resampler uses the numba twin spatial_coords) -------
    def wavelengths(self) -> np.ndarray:
        """Wavelength [Å] of every plane centre."""
        return self.wavelength_at(np.arange(self.nz, dtype=np.float64))

    def wavelength_at(self, planes) -> np.ndarray:
        """Wavelength [Å] at 0-based fractional planes."""
        p = np.asarray(planes, dtype=np.float64) + 1 - self.crpix3
        if self.spectral == "AWAV-LOG":
            return self.crval3 * np.exp(self.cd3 * p / self.crval3)
        return self.crval3 + self.cd3 * p

    def plane_of(self, lam) -> np.ndarray:
        """0-based fractional plane of wavelengths [Å]."""
        lam = np.asarray(lam, dtype=np.float64)
        if self.spectral == "AWAV-LOG":
            return self.crpix3 - 1 + self.crval3 / self.cd3 * np.log(lam / self.crval3)
        return (lam - self.crval3) / self.cd3 + self.crpix3 - 1

    def world_to_pixel(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """0-based fractional pixels of (RA, Dec) [deg] (or of pixel-unit x, y)."""
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        if self.celestial:
            u, v = tan_project(ra, dec, self.crval1, self.crval2)
        else:
            u, v = ra - self.crval1, dec - self.crval2
        ci = self.cdinv
        return ci[0] * u + ci[1] * v + self.crpix1 - 1, ci[2] * u + ci[3] * v + self.crpix2 - 1

    def pixel_to_world(self, px, py) -> tuple[np.ndarray, np.ndarray]:
        """(RA, Dec) [deg] of 0-based pixels (inverse of :meth:`world_to_pixel`)."""
        px = np.asarray(px, dtype=np.float64) + 1 - self.crpix1
        py = np.asarray(py, dtype=np.float64) + 1 - self.crpix2
        a, b, c, d = self.cd
        u, v = a * px + b * py, c * px + d * py
        if not self.celestial:
            return u + self.crval1, v + self.crval2
        return tan_deproject(u, v, self.crval1, self.crval2)

    # -- headers ---------------------------------------------------------------------
    def header(self, naxis: int = 3) -> fits.Header:
        """WCS cards of the cube (``naxis=3``) or of its 2-D images (``naxis=2``)."""
        h = fits.Header()
        h["WCSAXES"] = naxis
        if self.celestial:
            h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
            h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
        else:
            h["CTYPE1"], h["CTYPE2"] = "PIXEL", "PIXEL"
            h["CUNIT1"], h["CUNIT2"] = "pixel", "pixel"
        h["CRPIX1"], h["CRPIX2"] = self.crpix1, self.crpix2
        h["CRVAL1"], h["CRVAL2"] = self.crval1, self.crval2
        h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = self.cd
        if naxis == 3:
            h["CTYPE3"] = self.spectral
            h["CUNIT3"] = "Angstrom"
            h["CRPIX3"], h["CRVAL3"], h["CD3_3"] = self.crpix3, self.crval3, self.cd3
            h["CD1_3"] = h["CD2_3"] = h["CD3_1"] = h["CD3_2"] = 0.0
            h["SPECSYS"] = "TOPOCENT"
        if self.celestial:
            h["RADESYS"] = "FK5"
            h["EQUINOX"] = 2000.0
        return h


def tan_project(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection: intermediate world coordinates (ξ, η) [deg] of (RA, Dec) [deg]."""
    a = np.deg2rad(np.asarray(ra, dtype=np.float64) - ra0)
    d = np.deg2rad(np.asarray(dec, dtype=np.float64))
    d0 = np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.rad2deg(xi), np.rad2deg(eta)


def tan_deproject(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: (RA, Dec) [deg] of intermediate coordinates [deg]."""
    x = np.deg2rad(np.asarray(xi, dtype=np.float64))
    y = np.deg2rad(np.asarray(eta, dtype=np.float64))
    d0 = np.deg2rad(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(rho > 0, y * np.sin(c) / np.where(rho > 0, rho, 1), 0.0)
    dec = np.arcsin(np.cos(c) * np.sin(d0) + ratio * np.cos(d0))
    ra = ra0 + np.rad2deg(np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c)))
    return ra, np.rad2deg(dec)


# --------------------------------------------------------------------------------------
# grid definition
# --------------------------------------------------------------------------------------


def default_spaxel(pt: PixTable, value: float) -> float:
    """``dx``/``dy`` 0 → 0.2″ (WFM), 0.025″ (NFM), 1 pix (pixel-unit tables)."""
    if value > 0:
        return float(value)
    if pt.wcs_state == WCS_PIXEL:
        return 1.0
    mode = str(pt.header.get("ESO INS MODE", "WFM")).upper()
    return SPAXEL_NFM_ARCSEC if mode.startswith("NFM") else SPAXEL_WFM_ARCSEC


def _spatial_mapper(pt: PixTable, grid: CubeGrid):
    mode = _POS_MODE[pt.wcs_state]
    ref = pt.reference() if mode != POS_PIXEL else (0.0, 0.0)
    if grid.celestial != (mode != POS_PIXEL):
        raise RecipeError("output grid and pixel table disagree on celestial vs pixel coordinates")
    cdinv = grid.cdinv

    def spatial(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return spatial_coords(
            pt.xpos, pt.ypos, np.ascontiguousarray(idx, dtype=np.int64), mode, ref[0], ref[1],
            grid.crval1, grid.crval2, grid.crpix1, grid.crpix2, cdinv,
        )  # fmt: skip

    return spatial


def _extent(pt: PixTable, grid: CubeGrid) -> tuple[float, float, float, float]:
    """min/max 0-based pixel coordinates of all rows on ``grid``'s projection (chunked)."""
    spatial = _spatial_mapper(pt, grid)
    lo_x = lo_y = np.inf
    hi_x = hi_y = -np.inf
    for s in range(0, pt.nrows, _CHUNK):
        fx, fy = spatial(np.arange(s, min(pt.nrows, s + _CHUNK), dtype=np.int64))
        lo_x, hi_x = min(lo_x, fx.min()), max(hi_x, fx.max())
        lo_y, hi_y = min(lo_y, fy.min()), max(hi_y, fy.max())
    return lo_x, hi_x, lo_y, hi_y


def grid_from_pixtable(pt: PixTable, dx: float = 0.0, dy: float = 0.0, dlambda: float = 0.0) -> CubeGrid:
    """Grid fitted to the data: steps ``dx``/``dy`` [arcsec, or pix], ``dlambda`` [Å] (0 = defaults)."""
    if pt.nrows == 0:
        raise RecipeError("pixel table has no rows in the wavelength range")
    sx, sy = default_spaxel(pt, dx), default_spaxel(pt, dy)
    dl = float(dlambda) if dlambda > 0 else NATURAL_DLAMBDA
    celestial = pt.wcs_state != WCS_PIXEL
    if celestial:
        ra0, dec0 = pt.reference()
        cd = (-sx / 3600.0, 0.0, 0.0, sy / 3600.0)
    else:
        ra0, dec0 = 0.0, 0.0
        cd = (sx, 0.0, 0.0, sy)
    lam = pt.lam
    lmin, lmax = float(lam.min()), float(lam.max())
    # as the DRS sizes it (checked against muse_scipost_make_cube 2.8.7): the first row sits
    # on pixel 1 and the last one's nearest voxel is the last pixel, n = round(range) + 1
    nz = int(np.floor((lmax - lmin) / dl + 0.5)) + 1
    probe = CubeGrid(1, 1, nz, 1.0, 1.0, ra0, dec0, cd, 1.0, lmin, dl, celestial)
    lo_x, hi_x, lo_y, hi_y = _extent(pt, probe)
    nx = int(np.floor(hi_x - lo_x + 0.5)) + 1
    ny = int(np.floor(hi_y - lo_y + 0.5)) + 1
    if not celestial:  # pixel axes: CRPIX 1 at the data's lower corner, like the DRS
        return replace(probe, nx=nx, ny=ny, crval1=lo_x * cd[0], crval2=lo_y * cd[3])
    return replace(probe, nx=nx, ny=ny, crpix1=1.0 - lo_x, crpix2=1.0 - lo_y)


def read_output_wcs(path: Path) -> fits.Header:
    """The first header of an OUTPUT_WCS file that carries ``CTYPE1`` (RecipeError otherwise)."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            for hdu in hdul:
                if "CTYPE1" in hdu.header:
                    return hdu.header.copy()
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{path}: cannot read OUTPUT_WCS ({str(exc).splitlines()[0]})") from None
    raise RecipeError(f"{path}: OUTPUT_WCS has no header with CTYPE1")


def grid_from_header(header: fits.Header, pt: PixTable, dlambda: float = 0.0, where: str = "OUTPUT_WCS") -> CubeGrid:
    """Grid from an OUTPUT_WCS header; dimensions missing from it are fitted to the data.

    Spatial: CTYPE1/2 (``RA---TAN``/``DEC--TAN`` or ``PIXEL``), CRPIX, CRVAL and CD (or
    CDELT+PC). Spectral: CTYPE3 ``AWAV``/``AWAV-LOG`` with CRVAL3/CD3_3/CRPIX3 when present,
    else the data range with ``dlambda``. RecipeError when the grid misses the data.
    """
    def num(key, default=None):
        if key in header:
            try:
                return float(header[key])
            except (TypeError, ValueError):
                raise RecipeError(f"{where}: {key} is not a number") from None
        if default is None:
            raise RecipeError(f"{where}: missing {key}")
        return default

    ctype1 = str(header.get("CTYPE1", "")).strip().upper()
    celestial = ctype1.startswith("RA")
    if celestial and not (ctype1.endswith("TAN") and str(header.get("CTYPE2", "")).upper().startswith("DEC")):
        raise RecipeError(f"{where}: only RA---TAN/DEC--TAN celestial axes are supported, not {ctype1!r}")
    if celestial == (pt.wcs_state == WCS_PIXEL):
        state = "celestial" if celestial else "pixel"
        raise RecipeError(f"{where}: {state} axes do not match a pixel table in {pt.wcs_state} coordinates")
    if "CD1_1" in header or "CD2_2" in header:
        cd = (num("CD1_1", 0.0), num("CD1_2", 0.0), num("CD2_1", 0.0), num("CD2_2", 0.0))
    else:
        c1, c2 = num("CDELT1"), num("CDELT2")
        cd = (c1 * num("PC1_1", 1.0), c1 * num("PC1_2", 0.0), c2 * num("PC2_1", 0.0), c2 * num("PC2_2", 1.0))
    if cd[0] * cd[3] - cd[1] * cd[2] == 0:
        raise RecipeError(f"{where}: singular CD matrix")
    ctype3 = str(header.get("CTYPE3", "")).strip().upper()
    if ctype3 and ctype3 not in ("AWAV", "AWAV-LOG", "WAVE"):
        raise RecipeError(f"{where}: spectral axis {ctype3!r} is not AWAV or AWAV-LOG")
    lam = pt.lam
    if ctype3:
        cd3 = num("CD3_3", num("CDELT3", 0.0))
        if cd3 <= 0:
            raise RecipeError(f"{where}: CD3_3 must be positive")
        spectral = "AWAV-LOG" if ctype3 == "AWAV-LOG" else "AWAV"
        crval3, crpix3 = num("CRVAL3"), num("CRPIX3", 1.0)
    else:
        cd3 = float(dlambda) if dlambda > 0 else NATURAL_DLAMBDA
        spectral, crval3, crpix3 = "AWAV", float(lam.min()), 1.0
    grid = CubeGrid(1, 1, 1, num("CRPIX1"), num("CRPIX2"), num("CRVAL1"), num("CRVAL2"), cd,
                    crpix3, crval3, cd3, celestial, spectral)  # fmt: skip
    naxis = int(header.get("NAXIS", 0) or 0)
    dims = [int(header.get(f"NAXIS{i}", 0) or 0) if naxis >= i else 0 for i in (1, 2, 3)]
    lo_x, hi_x, lo_y, hi_y = _extent(pt, grid)
    nx = dims[0] or int(np.floor(hi_x + 0.5)) + 1
    ny = dims[1] or int(np.floor(hi_y + 0.5)) + 1
    if dims[2]:
        nz = dims[2]
    else:
        nz = int(np.floor(float(np.max(grid.plane_of(np.array([lam.max()])))) + 0.5)) + 1
    if nx < 1 or ny < 1 or nz < 1:
        raise RecipeError(f"{where}: does not overlap the pixel table (grid would be empty)")
    grid = replace(grid, nx=nx, ny=ny, nz=nz)
    zlo, zhi = grid.plane_of(np.array([float(lam.min()), float(lam.max())]))
    spatial_miss = hi_x < -0.5 or lo_x > nx - 0.5 or hi_y < -0.5 or lo_y > ny - 0.5
    if spatial_miss or zhi < -0.5 or zlo > nz - 0.5:
        raise RecipeError(f"{where}: does not overlap the pixel table")
    return grid


# --------------------------------------------------------------------------------------
# resampling and products
# --------------------------------------------------------------------------------------


def make_cube(
    pt: PixTable, grid: CubeGrid, options: ResampleOptions, max_rows: int = 10_000_000, keep_weight: bool = False
) -> ResampleResult:
    """Resample ``pt`` onto ``grid`` (memory-bounded by ``max_rows`` rows per slab)."""
    return resample_cube(
        pt.lam, pt.dq, pt.data, pt.stat, pt.weight, _spatial_mapper(pt, grid), grid.spectral_mapping,
        grid.shape, options, max_rows=max_rows, keep_weight=keep_weight,
    )  # fmt: skip


def _ext_header(extname: str, kind: str, bunit: str | None, wcs: fits.Header) -> fits.Header:
    h = fits.Header()
    h["EXTNAME"] = (extname, "This extension contains " + ("data values" if kind == "DATA" else "variances"))
    h["HDUCLASS"] = ("ESO", "class name (ESO format)")
    h["HDUDOC"] = ("DICD", "document with class description")
    h["HDUVERS"] = ("DICD version 6", "version number (according to spec v2.5.1)")
    h["HDUCLAS1"] = ("IMAGE", "Image data format")
    if kind == "DATA":
        h["HDUCLAS2"] = ("DATA", "this extension contains the data itself")
        h["ERRDATA"] = ("STAT", "pointer to the variance extension")
    else:
        h["HDUCLAS2"] = ("ERROR", "this extension contains variance")
        h["HDUCLAS3"] = ("MSE", "the extension contains variances (sigma**2)")
        h["SCIDATA"] = ("DATA", "pointer to the data extension")
    if bunit:
        h["BUNIT"] = bunit
    h.extend(wcs.cards)
    return h


def primary_from(template: fits.Header) -> fits.Header:
    """A product primary header from ``template`` minus structure, WCS and pixel-table keys."""
    drop_prefix = ("ESO DRS MUSE PIXTABLE", "CTYPE", "CUNIT", "CRPIX", "CRVAL", "CD1_", "CD2_", "CD3_", "CDELT", "PC")
    out = fits.Header()
    for card in template.cards:
        key = card.keyword
        if key in STRUCTURAL_KEYS or key in ("", "COMMENT", "HISTORY", "WCSAXES", "BUNIT"):
            continue
        if key.startswith(drop_prefix):
            continue
        out.append(card, end=True)
    return out


def write_datacube(
    path: Path, primary: fits.Header, grid: CubeGrid, data: np.ndarray, stat: np.ndarray,
    bunit: str = FLUX_UNIT, extra: list[fits.ImageHDU] | None = None,
) -> Path:  # fmt: skip
    """Write a DATACUBE_FINAL-layout file: primary header, ``DATA``, ``STAT`` (+ ``extra``)."""
    wcs = grid.header(3)
    stat_unit = f"({bunit})**2" if bunit else None
    hdus = [
        fits.PrimaryHDU(header=fit_comments(primary)),
        fits.ImageHDU(np.asarray(data, dtype=np.float32), header=_ext_header("DATA", "DATA", bunit, wcs)),
        fits.ImageHDU(np.asarray(stat, dtype=np.float32), header=_ext_header("STAT", "STAT", stat_unit, wcs)),
    ]
    hdus.extend(extra or [])
    fits.HDUList(hdus).writeto(path, overwrite=True, output_verify="silentfix")
    return Path(path)


# --------------------------------------------------------------------------------------
# filters and field-of-view images
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """A filter curve: ``lam`` [Å] ascending and ``throughput`` (0..1)."""

    name: str
    lam: np.ndarray
    throughput: np.ndarray

    def __call__(self, lam) -> np.ndarray:
        return np.interp(np.asarray(lam, dtype=np.float64), self.lam, self.throughput, left=0.0, right=0.0)


def white_filter() -> Filter:
    lo, hi = WHITE_RANGE
    return Filter("white", np.array([lo - 1e-6, lo, hi, hi + 1e-6]), np.array([0.0, 1.0, 1.0, 0.0]))


def load_filter(name: str, filter_list: Path | None) -> Filter:
    """Filter ``name`` from a FILTER_LIST (extension EXTNAME = name, columns lambda, throughput).

    ``white`` without a FILTER_LIST (or absent from it) is the built-in flat filter over
    4650–9300 Å. RecipeError naming the file and the available filters for an unknown name.
    """
    names: list[str] = []
    if filter_list is not None:
        path = Path(filter_list)
        try:
            with fits.open(path) as hdul:
                for hdu in hdul[1:]:
                    extname = str(hdu.header.get("EXTNAME", "")).strip()
                    names.append(extname)
                    if extname.lower() != name.lower():  # astropy upper-cases EXTNAMEs it writes
                        continue
                    table = Table(hdu.data)
                    cols = {c.lower(): c for c in table.colnames}
                    if "lambda" not in cols or "throughput" not in cols:
                        raise RecipeError(f"{path}[{name}]: filter table needs columns lambda and throughput")
                    lam = np.asarray(table[cols["lambda"]], dtype=np.float64)
                    thr = np.asarray(table[cols["throughput"]], dtype=np.float64)
                    order = np.argsort(lam)
                    return Filter(name, lam[order], thr[order])
        except RecipeError:
            raise
        except (OSError, ValueError, TypeError) as exc:
            raise RecipeError(f"{path}: cannot read FILTER_LIST ({str(exc).splitlines()[0]})") from None
    if name == "white":
        return white_filter()
    if filter_list is None:
        raise RecipeError(f"unknown filter {name!r}: only 'white' is built in; give a FILTER_LIST for others")
    raise RecipeError(f"{filter_list}: unknown filter {name!r}; available: {', '.join(names) or 'none'}")


def collapse(data: np.ndarray, grid: CubeGrid, flt: Filter) -> tuple[np.ndarray, float]:
    """Filter-weighted mean image Σ T(λ)·d / Σ T(λ) over finite voxels, and the fraction [%]
    of the filter's integral covered by the cube's wavelength range."""
    lam = grid.wavelengths()
    t = flt(lam)
    image = np.zeros(data.shape[1:], dtype=np.float64)
    norm = np.zeros(data.shape[1:], dtype=np.float64)
    for z in np.flatnonzero(t > 0):
        plane = data[z].astype(np.float64)
        good = np.isfinite(plane)
        image[good] += t[z] * plane[good]
        norm[good] += t[z]
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(norm > 0, image / norm, np.nan)
    lo, hi = grid.wavelength_at(np.array([-0.5, grid.nz - 0.5]))
    fine = np.linspace(flt.lam[0], flt.lam[-1], 16384)
    curve = flt(fine)
    total = float(np.trapezoid(curve, fine))
    covered = float(np.trapezoid(curve * ((fine >= lo) & (fine <= hi)), fine))
    fraction = 100.0 * covered / total if total > 0 else 0.0
    return image.astype(np.float32), fraction


def write_image_fov(path: Path, primary: fits.Header, grid: CubeGrid, image: np.ndarray, flt: Filter,
                    fraction: float, bunit: str = FLUX_UNIT) -> Path:  # fmt: skip
    """IMAGE_FOV: primary header (FILTER NAME/FRACTION) + a ``DATA`` image with the 2-D WCS."""
    primary = primary.copy()
    primary[hkey("ESO DRS MUSE FILTER NAME")] = (flt.name, "filter name used")
    primary[hkey("ESO DRS MUSE FILTER FRACTION")] = (round(float(fraction), 4), "[%] fraction of filter covered")
    fits.HDUList([
        fits.PrimaryHDU(header=fit_comments(primary)),
        fits.ImageHDU(image.astype(np.float32), header=_ext_header("DATA", "DATA", bunit, grid.header(2))),
    ]).writeto(path, overwrite=True, output_verify="silentfix")  # fmt: skip
    return Path(path)
