"""Illumination corrections of a pixel table (muse_scibasic steps 5 and 6, muse_twilight).

* ILLUM (an attached lamp flat): each slice is divided by its normalised median flux in
  the flat-fielded ILLUM exposure (:func:`slice_illumination`, :func:`apply_per_slice`);
* TWILIGHT_CUBE (muse_twilight's smooth sky-flat cube, in field pixels): every row is
  divided by the cube at its (xpos, ypos, λ) (:func:`read_twilight_cube`,
  :func:`apply_twilight`).

The factors are dimensionless; data and stat are divided by the factor and its square.
Slices are the 1-based CCD slice numbers of the origin word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import CcdImage
from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.origin import unpack_origin
from recipes.algorithms.pixtable import PixTable
from recipes.algorithms.tracing import Trace, slice_mask


def slice_illumination(illum: CcdImage, trace: Trace) -> np.ndarray:
    """Per-slice median of the flat-fielded ILLUM exposure, normalised to their mean (48,)."""
    mask = slice_mask(trace, illum.data.shape)
    good = illum.dq == 0
    med = np.array([
        float(np.median(illum.data[(mask == s) & good])) if ((mask == s) & good).any() else np.nan
        for s in range(1, trace.nslice + 1)
    ])  # fmt: skip
    mean = np.nanmean(med)
    if not np.isfinite(mean) or mean <= 0:
        raise RecipeError("ILLUM exposure has no positive flux inside the slices")
    return med / mean


def apply_per_slice(pt: PixTable, factors: np.ndarray) -> None:
    """Divide data (and stat by the square) of each slice by ``factors[slice − 1]``."""
    _, slice_, _, _ = unpack_origin(pt.origin)
    f = np.asarray(factors, dtype=np.float64)
    f = np.where(np.isfinite(f) & (f > 0), f, 1.0).astype(np.float32)[slice_ - 1]
    pt.data[...] = pt.data / f
    pt.stat[...] = pt.stat / (f * f)


def read_twilight_cube(path: Path) -> tuple[np.ndarray, CubeGrid]:
    """``(cube [z, y, x] float32, CubeGrid)`` of a TWILIGHT_CUBE (first 3-D image, its WCS
    in field pixels: CTYPE1/2 PIXEL, CD or CDELT, linear λ axis)."""
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul if h.data is not None and h.data.ndim == 3), None)
            if hdu is None:
                raise RecipeError(f"{path}: TWILIGHT_CUBE has no 3-D image")
            h = hdu.header
            cube = np.array(hdu.data, dtype=np.float32)

            def cd(i, j):
                key = f"CD{i}_{j}"
                if key in h:
                    return float(h[key])
                return float(h.get(f"CDELT{i}", 1.0)) if i == j else 0.0

            nz, ny, nx = cube.shape
            grid = CubeGrid(
                nx, ny, nz, float(h.get("CRPIX1", 1.0)), float(h.get("CRPIX2", 1.0)),
                float(h.get("CRVAL1", 0.0)), float(h.get("CRVAL2", 0.0)), (cd(1, 1), cd(1, 2), cd(2, 1), cd(2, 2)),
                float(h.get("CRPIX3", 1.0)), float(h["CRVAL3"]), cd(3, 3), celestial=False,
            )  # fmt: skip
    except RecipeError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RecipeError(f"{path}: cannot read TWILIGHT_CUBE ({str(exc).splitlines()[0]})") from None
    if str(h.get("CTYPE1", "PIXEL")).startswith(("RA", "DEC")):
        raise RecipeError(f"{path}: TWILIGHT_CUBE must have pixel axes (CTYPE1 PIXEL), not {h['CTYPE1']}")
    return cube, grid


def apply_twilight(pt: PixTable, cube: np.ndarray, grid: CubeGrid, chunk: int = 4_000_000) -> int:
    """Divide each row by the twilight cube at its (xpos, ypos) (nearest spaxel, clipped to
    the cube) and λ (linear between planes). Rows where the cube is not positive are left
    unchanged and counted (returned). Works in blocks of ``chunk`` rows (bounded memory)."""
    nbad = 0
    for start in range(0, pt.nrows, chunk):
        rows = slice(start, min(start + chunk, pt.nrows))
        px, py = grid.world_to_pixel(pt.xpos[rows], pt.ypos[rows])
        ix = np.clip(np.rint(px), 0, grid.nx - 1).astype(np.int64)
        iy = np.clip(np.rint(py), 0, grid.ny - 1).astype(np.int64)
        z = np.clip(grid.plane_of(pt.lam[rows]), 0, grid.nz - 1)
        z0 = np.floor(z).astype(np.int64)
        z1 = np.minimum(z0 + 1, grid.nz - 1)
        t = (z - z0).astype(np.float32)
        value = (1 - t) * cube[z0, iy, ix] + t * cube[z1, iy, ix]
        ok = np.isfinite(value) & (value > 0)
        f = np.where(ok, value, 1.0).astype(np.float32)
        pt.data[rows] /= f
        pt.stat[rows] /= f * f
        nbad += int((~ok).sum())
    return nbad
