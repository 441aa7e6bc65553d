"""One reduced CCD image of one IFU → pixel-table columns (muse_pixtable_create), pure.

Inputs: the reduced image (:class:`recipes.io.CcdImage`, count), the IFU's slice trace
(:class:`recipes.algorithms.tracing.Trace`, from TRACE_TABLE), its wavelength solutions
(``{SliceNo: wlc[I, J]}``, from WAVECAL_TABLE via :func:`recipes.algorithms.calibtables.read_wavecal_table`)
and its GEOMETRY_TABLE rows (:class:`IfuGeometry`), read together by :func:`ifu_tables`. Output: the columns of
:mod:`recipes.algorithms.pixtable` and the per-slice x offsets of the origin column (recipes.md §3.7
step 2, §4.6). The pixel loop is :func:`recipes.kernels.pixtable_build.build_pixels`.

Conventions: trace and wavelength polynomials use 1-based trimmed-CCD coordinates;
``xpos``/``ypos`` are field pixels (0.2" spaxels, the GEOMETRY_TABLE units), so the table
is in the ``pixel`` coordinate state (``ESO DRS MUSE PIXTABLE TYPE = 'GEOFULL'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.base import RecipeError
from recipes.io import CcdImage, chan_name, hkey, read_table_product
from recipes.kernels.pixtable_build import binned_flat_sums, build_pixels
from recipes.algorithms.calibtables import read_wavecal_table, trace_from_table
from recipes.algorithms.origin import xoffset_key
from recipes.algorithms.pixtable import PixTable, pkey, set_wcs_state, WCS_PIXEL
from recipes.algorithms.tracing import Trace

#: Bin of the PIXTABLE_FLAT_FIELD spectrum (Å), the natural MUSE sampling.
FLAT_FIELD_BIN = 1.25


@dataclass
class IfuGeometry:
    """GEOMETRY_TABLE rows of one IFU, indexed by CCD slice (position k = SliceCCD − 1).

    ``x``, ``y``: field position of the slice centre (field pixels); ``angle`` (deg);
    ``width``: slice length on the sky (field pixels); ``slice_sky``: sky slice number.
    """

    ifu: int
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    width: np.ndarray
    slice_sky: np.ndarray


def read_geometry(path: Path, ifu: int, nslice: int = 48) -> IfuGeometry:
    """The rows of IFU ``ifu`` (``SubField``) of a GEOMETRY_TABLE (first table extension).

    RecipeError naming the file when a column is missing or a CCD slice 1..nslice has
    no row (or several).
    """
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)), None)
            if hdu is None:
                raise RecipeError(f"{path}: GEOMETRY_TABLE has no table extension")
            data = hdu.data
            names = [n.lower() for n in hdu.columns.names]
            cols = {}
            for want in ("SubField", "SliceCCD", "SliceSky", "x", "y", "angle", "width"):
                if want.lower() not in names:
                    raise RecipeError(f"{path}: GEOMETRY_TABLE lacks column {want}")
                cols[want] = np.asarray(data[hdu.columns.names[names.index(want.lower())]], dtype=np.float64)
    except RecipeError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read GEOMETRY_TABLE ({str(exc).splitlines()[0]})") from None
    sel = cols["SubField"].astype(int) == ifu
    sl = cols["SliceCCD"][sel].astype(int)
    out = {k: np.full(nslice, np.nan) for k in ("x", "y", "angle", "width", "SliceSky")}
    for s in range(1, nslice + 1):
        rows = np.flatnonzero(sl == s)
        if rows.size != 1:
            raise RecipeError(f"{path}: GEOMETRY_TABLE has {rows.size} rows for IFU {ifu} slice {s}, expected 1")
        for k in out:
            out[k][s - 1] = cols[k][sel][rows[0]]
    return IfuGeometry(ifu, out["x"], out["y"], out["angle"], out["width"], out["SliceSky"].astype(int))


def slice_xoffsets(trace: Trace, shape: tuple[int, int]) -> np.ndarray:
    """Per slice, the origin x offset: the slice's leftmost 1-based pixel over all rows − 1."""
    ny, nx = shape
    y1 = np.arange(1, ny + 1, dtype=np.float64)
    left = trace.evaluate("left", y1)
    lo = np.clip(np.ceil(left), 1, nx)
    return (lo.min(axis=1) - 1).astype(np.int64)


def build_columns(
    image: CcdImage, ifu: int, trace: Trace, wavecal: dict[int, np.ndarray], geometry: IfuGeometry
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pixel-table columns of one IFU and the per-slice origin x offsets.

    ``wavecal`` must hold every slice of the trace (RecipeError otherwise); coefficient
    arrays of different shapes are zero-padded to a common one.
    """
    nslice = trace.nslice
    missing = [s for s in range(1, nslice + 1) if s not in wavecal]
    if missing:
        raise RecipeError(f"WAVECAL_TABLE has no solution for IFU {ifu} slice {missing[0]}")
    ni = max(w.shape[0] for w in wavecal.values())
    nj = max(w.shape[1] for w in wavecal.values())
    wlc = np.zeros((nslice, ni, nj))
    for s in range(1, nslice + 1):
        w = wavecal[s]
        wlc[s - 1, : w.shape[0], : w.shape[1]] = w
    shape = image.data.shape
    xoffset = slice_xoffsets(trace, shape)
    right = trace.evaluate("right", np.arange(1, shape[0] + 1, dtype=np.float64))
    span = np.floor(right).max(axis=1) - xoffset
    if np.any(span > 255):
        bad = int(np.argmax(span)) + 1
        raise RecipeError(f"TRACE_TABLE slice {bad} of IFU {ifu} spans more than 255 pixels; wrong trace?")
    cols = build_pixels(
        image.data, image.dq, image.stat, trace.left, trace.right, wlc, geometry.x, geometry.y,
        geometry.angle, geometry.width, np.arange(1, nslice + 1), ifu, xoffset,
    )  # fmt: skip
    names = ("xpos", "ypos", "lambda", "data", "dq", "stat", "origin")
    return dict(zip(names, cols)), xoffset


def pixtable_for_ifu(
    image: CcdImage,
    ifu: int,
    trace: Trace,
    wavecal: dict[int, np.ndarray],
    geometry: IfuGeometry,
    header: fits.Header,
) -> PixTable:
    """A :class:`PixTable` of one IFU: the columns, ``header`` plus the DRS pixel-table keys
    (TYPE, WCS state, per-slice XOFFSET, EXP0 FIRST/LAST, limits)."""
    cols, xoffset = build_columns(image, ifu, trace, wavecal, geometry)
    out = header.copy()
    out[hkey(pkey("TYPE"))] = "GEOFULL"
    set_wcs_state(out, WCS_PIXEL)
    for s, off in enumerate(xoffset, start=1):
        out[hkey(xoffset_key(ifu, s))] = int(off)
    n = int(cols["xpos"].size)
    out[hkey(pkey("EXP1", "FIRST"))] = 0
    out[hkey(pkey("EXP1", "LAST"))] = n - 1
    pt = PixTable(out, cols, None, {"xpos": "pix", "ypos": "pix"})
    pt.update_limits()
    return pt


def flat_field_spectrum(lam: np.ndarray, flat: np.ndarray, dq: np.ndarray, step: float = FLAT_FIELD_BIN):
    """PIXTABLE_FLAT_FIELD rows: the mean flat-field value of the good pixels in bins of
    ``step`` Å (``lambda`` = bin centre, ``data``), as an astropy Table (float64)."""
    from astropy.table import Table

    binned = binned_flat_sums(lam, flat, dq, step)
    if binned is None:
        return Table({"lambda": np.zeros(0), "data": np.zeros(0)})
    lmin, sums, counts = binned
    keep = counts > 0
    centres = lmin + (np.arange(sums.size) + 0.5) * step
    return Table({"lambda": centres[keep], "data": sums[keep] / counts[keep]})


def ifu_tables(calibs: Mapping[str, Path | None], ifu: int) -> tuple[Trace, dict[int, np.ndarray], IfuGeometry]:
    """The TRACE_TABLE, WAVECAL_TABLE and GEOMETRY_TABLE rows of one IFU."""
    trace_path = calibs["TRACE_TABLE"]
    table, _ = read_table_product(trace_path, ifu)
    trace = trace_from_table(table, f"{trace_path}[{chan_name(ifu)}]")
    wavecal = read_wavecal_table(calibs["WAVECAL_TABLE"], ifu)
    geometry = read_geometry(calibs["GEOMETRY_TABLE"], ifu, trace.nslice)
    return trace, wavecal, geometry
