"""The exposures of a pixel-table combination (muse_exp_combine): weights and exposure map.

:func:`exposure_weights` gives each exposure its weight relative to the first one
(``kind``): ``exptime`` w = EXPTIME/EXPTIME₀; ``fwhm`` w = (EXPTIME/EXPTIME₀)·(FWHM₀/FWHM)²,
the seeing FWHM [arcsec] from the header (:func:`seeing_of`: the mean of ``ESO TEL AMBI
FWHM START/END``, else ``ESO TEL IA FWHM``, else ``ESO TEL IA FWHMLINOBS``); ``header``
w = ``ESO DRS MUSE WEIGHT``·EXPTIME/EXPTIME₀; ``none``: no weights (the tables keep their
own ``weight`` column). :func:`exposure_map` is the summed EXPTIME [s] per spaxel of the
exposures with usable rows on it. Problems are one-line RecipeErrors naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.algorithms.cube import CubeGrid
from recipes.algorithms.pixtable import PixTable

WEIGHTS = ("exptime", "fwhm", "header", "none")
SEEING_KEYS = (("ESO TEL AMBI FWHM START", "ESO TEL AMBI FWHM END"), ("ESO TEL IA FWHM",), ("ESO TEL IA FWHMLINOBS",))
_CHUNK = 4_000_000  # rows per pass of exposure_map (bounds its float64 temporaries)


def header_number(header: fits.Header, key: str, where: Path) -> float | None:
    """``header[key]`` as a float, None when absent (RecipeError naming ``where`` if not a number)."""
    value = header.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: {key} is not a number ({value!r})") from None


def exptime_of(header: fits.Header, where: Path) -> float:
    """EXPTIME [s] (RecipeError naming the file if missing or not positive)."""
    value = header_number(header, "EXPTIME", where)
    if value is None or not value > 0:
        raise RecipeError(f"{where}: EXPTIME missing or not positive, needed for the exposure weights")
    return value


def seeing_of(header: fits.Header, where: Path) -> float:
    """Seeing FWHM [arcsec] from the header (see the module docstring for the keys)."""
    for keys in SEEING_KEYS:
        values = [header_number(header, k, where) for k in keys]
        values = [v for v in values if v is not None and v > 0]
        if len(values) == len(keys):
            return float(np.mean(values))
    raise RecipeError(f"{where}: no seeing FWHM in the header (ESO TEL AMBI FWHM START/END, ESO TEL IA FWHM), "
                      "needed by weight=fwhm")


def exposure_weights(headers: list[fits.Header], paths: list[Path], kind: str) -> list[float] | None:
    """Relative weights of the exposures (first = EXPTIME-normalised 1), None for ``none``."""
    if kind == "none":
        return None
    exptimes = [exptime_of(h, p) for h, p in zip(headers, paths)]
    rel = [e / exptimes[0] for e in exptimes]
    if kind == "exptime":
        return rel
    if kind == "fwhm":
        fwhm = [seeing_of(h, p) for h, p in zip(headers, paths)]
        return [r * (fwhm[0] / f) ** 2 for r, f in zip(rel, fwhm)]
    weights = []
    for h, p, r in zip(headers, paths, rel):
        w = header_number(h, "ESO DRS MUSE WEIGHT", p)
        if w is None or w < 0:
            raise RecipeError(f"{p}: ESO DRS MUSE WEIGHT missing or negative, needed by weight=header")
        weights.append(w * r)
    return weights


def exposure_map(pt: PixTable, bounds: list[tuple[int, int]], exptimes: list[float], grid: CubeGrid) -> np.ndarray:
    """Summed EXPTIME [s] per spaxel of the exposures with usable rows on it, ``[y, x]`` float32.

    ``pt`` is the combined table; exposure i holds its rows ``bounds[i]`` (first, last; 0-based,
    inclusive). A row is usable with DQ 0 and finite data; it falls on the spaxel of its
    nearest output pixel."""
    image = np.zeros((grid.ny, grid.nx), dtype=np.float64)
    for (first, last), exptime in zip(bounds, exptimes):
        covered = np.zeros(grid.ny * grid.nx, dtype=bool)
        for s in range(first, last + 1, _CHUNK):
            rows = slice(s, min(last + 1, s + _CHUNK))
            usable = (pt.dq[rows] == 0) & np.isfinite(pt.data[rows])
            ra, dec = pt.celestial(rows)
            px, py = grid.world_to_pixel(ra[usable], dec[usable])
            ix, iy = np.floor(px + 0.5).astype(np.int64), np.floor(py + 0.5).astype(np.int64)
            inside = (ix >= 0) & (ix < grid.nx) & (iy >= 0) & (iy < grid.ny)
            covered[iy[inside] * grid.nx + ix[inside]] = True
        image += exptime * covered.reshape(grid.ny, grid.nx)
    return image.astype(np.float32)
