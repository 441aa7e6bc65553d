"""Pixel table → cube: the output grid, the resampling options and the resampling itself.

* :func:`resample_params` declares the resampling parameters shared by muse_scipost,
  muse_scipost_make_cube and muse_exp_combine (DRS names and order), :func:`check_resample`
  is their cross-parameter rule and :func:`resample_options` turns the typed values into
  :class:`~recipes.kernels.resample.ResampleOptions`;
* :func:`grid_from_pixtable` fits a :class:`~recipes.algorithms.cube.CubeGrid` to the
  data (``dx``/``dy`` 0 → 0.2″ WFM, 0.025″ NFM, 1 pix for pixel-unit tables; ``dlambda``
  0 → 1.25 Å), :func:`grid_from_header` takes it from an OUTPUT_WCS
  (:func:`read_output_wcs`);
* :func:`make_cube` resamples a :class:`~recipes.algorithms.pixtable.PixTable` onto a grid
  with :func:`recipes.kernels.resample.resample_cube` (definitions there);
* :func:`stacked_image` bins the rows by CCD column and wavelength plane (OBJECT_RESAMPLED).

Grid conventions in :mod:`recipes.algorithms.cube`; wavelengths in Å (air), spaxel sizes in
arcsec (or pixels for pixel-unit tables), arrays 0-based ``[z, y, x]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import Param, ParamValue, RecipeError
from recipes.kernels.resample import METHODS, ResampleOptions, ResampleResult, resample_cube
from recipes.kernels.skycoords import POS_PIXEL, POS_POSITIONED, POS_PROJECTED, spatial_coords
from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.origin import unpack_origin
from recipes.algorithms.pixtable import WCS_PIXEL, WCS_POSITIONED, WCS_PROJECTED, PixTable

SPAXEL_WFM_ARCSEC = 0.2
SPAXEL_NFM_ARCSEC = 0.025
NATURAL_DLAMBDA = 1.25
_CHUNK = 4_000_000
_POS_MODE = {WCS_PIXEL: POS_PIXEL, WCS_PROJECTED: POS_PROJECTED, WCS_POSITIONED: POS_POSITIONED}


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------


def resample_params(crsigma: float, pixfrac: str) -> tuple[Param, ...]:
    """The resampling parameters shared by muse_scipost_make_cube, muse_scipost and
    muse_exp_combine, in the DRS order; the DRS gives them different crsigma and pixfrac
    defaults (15 and 0.8,0.8 for the first two, 10 and 0.6,0.6 for exp_combine)."""
    return (
        Param("resample", str, "drizzle", "resampling kernel for the output cube", choices=METHODS),
        Param("dx", float, 0.0, "spaxel size in x [arcsec, or pix]; 0: 0.2 WFM, 0.025 NFM, 1 pix", minimum=0.0),
        Param("dy", float, 0.0, "spaxel size in y [arcsec, or pix]; 0: as for dx", minimum=0.0),
        Param("dlambda", float, 0.0, "wavelength step [Angstrom]; 0: natural sampling 1.25", minimum=0.0),
        Param("crtype", str, "median", "statistics for cosmic-ray rejection during resampling",
              choices=("iraf", "mean", "median")),
        Param("crsigma", float, crsigma, "cosmic-ray rejection threshold [sigma] during resampling; <= 0 disables"),
        Param("rc", float, 1.25, "critical radius for renka weighting [voxels]", minimum=1e-6),
        Param("pixfrac", tuple, pixfrac,
              "drizzle pixel down-scaling: 1 value (all axes), 2 (spatial,spectral) or 3 (x,y,lambda)", item=float),
        Param("ld", int, 1, "loop distance: neighbouring voxels searched on each axis (not for nearest)", minimum=1),
        Param("format", str, "Cube", "output format: Cube, or xCube with the filter images as extensions",
              choices=("Cube", "xCube")),
    )  # fmt: skip


def check_resample(params: Mapping[str, ParamValue | None]) -> None:
    """The rule of :func:`resample_params` that the declaration cannot express: ``pixfrac``
    has 1 to 3 positive values. ValueError with a one-line reason."""
    pixfrac = params.get("pixfrac")
    if pixfrac is not None and (not 1 <= len(pixfrac) <= 3 or min(pixfrac) <= 0):
        raise ValueError(f"parameter pixfrac needs 1 to 3 positive comma-separated values, not {pixfrac!r}")


def check_lambda_range(params: Mapping[str, ParamValue | None]) -> None:
    """``lambdamin`` < ``lambdamax`` [Å] (ValueError otherwise), for the recipes that cut
    their pixel tables to that range."""
    lmin, lmax = params.get("lambdamin"), params.get("lambdamax")
    if lmin is not None and lmax is not None and lmin >= lmax:
        raise ValueError(f"lambdamin ({lmin}) must be below lambdamax ({lmax})")


def pixfrac_axes(pixfrac: tuple[float, ...]) -> tuple[float, float, float]:
    """The DRS ``pixfrac`` values per axis (x, y, λ): 1 value for all axes, 2 for (spatial,
    spectral), 3 as given. RecipeError for another count."""
    if len(pixfrac) == 1:
        return pixfrac[0], pixfrac[0], pixfrac[0]
    if len(pixfrac) == 2:
        return pixfrac[0], pixfrac[0], pixfrac[1]
    if len(pixfrac) == 3:
        return pixfrac[0], pixfrac[1], pixfrac[2]
    raise RecipeError(f"bad resampling parameter: pixfrac needs 1 to 3 values, not {pixfrac!r}")


def resample_options(params: Mapping[str, ParamValue | None]) -> ResampleOptions:
    """ResampleOptions from the typed parameters of :func:`resample_params`.

    A recipe without :func:`check_resample` in its ``check`` still gets a one-line
    RecipeError for a pixfrac the kernel refuses."""
    try:
        return ResampleOptions(
            method=params["resample"],
            pixfrac=pixfrac_axes(params["pixfrac"]),
            ld=params["ld"],
            rc=params["rc"],
            crtype=params["crtype"],
            crsigma=params["crsigma"],
        )
    except ValueError as exc:
        raise RecipeError(f"bad resampling parameter: {exc}") from None


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
# resampling
# --------------------------------------------------------------------------------------


def make_cube(
    pt: PixTable, grid: CubeGrid, options: ResampleOptions, max_rows: int = 10_000_000, keep_weight: bool = False
) -> ResampleResult:
    """Resample ``pt`` onto ``grid`` (memory-bounded by ``max_rows`` rows per slab)."""
    return resample_cube(
        pt.lam, pt.dq, pt.data, pt.stat, pt.weight, _spatial_mapper(pt, grid), grid.spectral_mapping,
        grid.shape, options, max_rows=max_rows, keep_weight=keep_weight,
    )  # fmt: skip


def stacked_image(pt: PixTable, grid: CubeGrid) -> np.ndarray:
    """OBJECT_RESAMPLED: mean of usable rows per (CCD column, wavelength plane) [plane, column].

    Columns are the distinct (IFU, slice, x − XOFFSET) triples in ascending order.
    """
    ifu, slice_, xs, _ = unpack_origin(pt.origin)
    key = (ifu.astype(np.int64) * 64 + slice_) * 256 + xs
    columns, col = np.unique(key, return_inverse=True)
    plane = np.floor(grid.plane_of(pt.lam) + 0.5).astype(np.int64)
    good = (pt.dq == 0) & np.isfinite(pt.data) & (plane >= 0) & (plane < grid.nz)
    flat = plane[good] * columns.size + col[good]
    total = np.bincount(flat, weights=pt.data[good].astype(np.float64), minlength=grid.nz * columns.size)
    count = np.bincount(flat, minlength=grid.nz * columns.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return image.reshape(grid.nz, columns.size).astype(np.float32)
