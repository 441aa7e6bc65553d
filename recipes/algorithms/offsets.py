"""OFFSET_LIST: corrections of each exposure's sky position and flux (recipes.md §4.8).

An OFFSET_LIST (written by muse_exp_align, or by hand) has one row per exposure, matched by
``MJD_OBS`` (to 1e-6 d), else by ``DATE_OBS``: ``RA_OFFSET``/``DEC_OFFSET`` in degrees of
RA and Dec (an RA difference, **not** multiplied by cos δ) are **subtracted** from the
exposure's reference: RA_corr = RA − RA_OFFSET, DEC_corr = DEC − DEC_OFFSET; a pointing
truly at RA + δ is thus corrected by RA_OFFSET = −δ. ``FLUX_SCALE`` multiplies the data
(its square the variance); missing, masked or NaN means 1 (the DRS convention).
Shared by muse_scipost, muse_scipost_make_cube and muse_exp_combine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError
from recipes.io import hkey
from recipes.algorithms.pixtable import WCS_PIXEL, PixTable, set_wcs_state


def read_offsets(path: Path) -> Table:
    """OFFSET_LIST rows (DATE_OBS, MJD_OBS, RA_OFFSET, DEC_OFFSET [deg], FLUX_SCALE)."""
    try:
        table = Table.read(path, hdu=1)
    except (OSError, ValueError, IndexError) as exc:
        raise RecipeError(f"{path}: cannot read OFFSET_LIST ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("RA_OFFSET", "DEC_OFFSET") if c not in table.colnames]
    if missing or not ({"MJD_OBS", "DATE_OBS"} & set(table.colnames)):
        raise RecipeError(f"{path}: OFFSET_LIST needs RA_OFFSET, DEC_OFFSET and MJD_OBS or DATE_OBS")
    return table


def apply_offsets(pt: PixTable, table: Table, where: Path) -> tuple[float, float, float] | None:
    """Shift ``pt``'s celestial reference by its OFFSET_LIST row; scale data; None if no row."""
    row = None
    mjd = pt.header.get("MJD-OBS")
    if "MJD_OBS" in table.colnames and mjd is not None:
        hits = np.flatnonzero(np.abs(np.asarray(table["MJD_OBS"], dtype=float) - float(mjd)) < 1e-6)
        row = table[int(hits[0])] if hits.size else None
    if row is None and "DATE_OBS" in table.colnames and "DATE-OBS" in pt.header:
        hits = [i for i, d in enumerate(table["DATE_OBS"]) if str(d).strip() == str(pt.header["DATE-OBS"]).strip()]
        row = table[hits[0]] if hits else None
    if row is None:
        return None
    if pt.wcs_state == WCS_PIXEL:
        raise RecipeError(f"{where}: OFFSET_LIST cannot be applied to a pixel table in pixel units")
    dra, ddec = float(row["RA_OFFSET"]), float(row["DEC_OFFSET"])
    # A missing FLUX_SCALE means 1 (DRS); muse_exp_align writes NaN, which astropy reads
    # back as a masked value.
    scale = table["FLUX_SCALE"][row.index] if "FLUX_SCALE" in table.colnames else 1.0
    scale = 1.0 if np.ma.is_masked(scale) or not np.isfinite(float(scale)) else float(scale)
    ra, dec = pt.reference()
    set_wcs_state(pt.header, pt.wcs_state, (ra - dra, dec - ddec))
    if np.isfinite(scale) and scale != 1.0:
        pt.columns["data"] *= np.float32(scale)
        pt.columns["stat"] *= np.float32(scale * scale)
    return dra, ddec, scale


def record_offset(header: fits.Header, index: int, date_obs: str, shift: tuple[float, float, float]) -> None:
    """The ``ESO DRS MUSE OFFSETi DATE-OBS/DRA/DDEC`` [deg] and ``ESO DRS MUSE FLUX SCALEi``
    keywords of the ``index``-th (1-based) exposure whose ``shift`` (:func:`apply_offsets`)
    was applied."""
    dra, ddec, scale = shift
    header[hkey(f"ESO DRS MUSE OFFSET{index} DATE-OBS")] = date_obs
    header[hkey(f"ESO DRS MUSE OFFSET{index} DRA")] = (dra, "[deg] RA offset")
    header[hkey(f"ESO DRS MUSE OFFSET{index} DDEC")] = (ddec, "[deg] DEC offset")
    header[hkey(f"ESO DRS MUSE FLUX SCALE{index}")] = (scale, "flux scale")
