"""Several exposures' pixel tables as one: positioned coordinates, merging and weights.

Celestial tables (projected or positioned) of different exposures are put on one
reference (the first exposure's) as ``positioned (final)`` tables, xpos = RA − CRVAL1,
ypos = DEC − CRVAL2 [deg] (:func:`to_positioned`), and concatenated (:func:`merge_tables`);
pixel-unit tables are concatenated as they are. :func:`exposure_weight` is the weight
muse_scipost gives each exposure before combining (the resampler multiplies its kernel
weights by the ``weight`` column). Shared by muse_scipost, muse_scipost_make_cube and
muse_exp_combine.
"""

from __future__ import annotations

import numpy as np

from recipes.base import RecipeError
from recipes.algorithms.pixtable import WCS_PIXEL, WCS_POSITIONED, PixTable, set_wcs_state


def to_positioned(pt: PixTable, reference: tuple[float, float], chunk: int = 4_000_000) -> PixTable:
    """``pt`` with positioned coordinates (deg offsets) about ``reference`` (RA, Dec) [deg].

    Converted in chunks of rows, so no float64 copy of whole columns is made.
    """
    xpos = np.empty(pt.nrows, dtype=np.float32)
    ypos = np.empty(pt.nrows, dtype=np.float32)
    for s in range(0, pt.nrows, chunk):
        ra, dec = pt.celestial(slice(s, s + chunk))
        xpos[s : s + chunk] = ra - reference[0]
        ypos[s : s + chunk] = dec - reference[1]
    cols = dict(pt.columns)
    cols["xpos"], cols["ypos"] = xpos, ypos
    header = pt.header.copy()
    set_wcs_state(header, WCS_POSITIONED, reference)
    units = dict(pt.units)
    units["xpos"] = units["ypos"] = "deg"
    return PixTable(header, cols, pt.flat_field, units)


def merge_tables(tables: list[PixTable]) -> PixTable:
    """One table from several: celestial ones on the first one's reference (positioned)."""
    if len(tables) == 1:
        return tables[0]
    states = {t.wcs_state for t in tables}
    if WCS_PIXEL in states and len(states) > 1:
        raise RecipeError("cannot merge pixel tables in pixel units with celestial ones")
    if WCS_PIXEL not in states:
        reference = tables[0].reference()
        tables = [to_positioned(t, reference) for t in tables]
    return PixTable.concatenate(tables, consume=True)


def exposure_weight(pt: PixTable, kind: str, where: str) -> float | None:
    """Weight of one exposure: EXPTIME (``exptime``), EXPTIME / FWHM² (``fwhm``), None (``none``)."""
    if kind == "none":
        return None
    exptime = float(pt.header.get("EXPTIME", 0.0) or 0.0)
    if exptime <= 0:
        raise RecipeError(f"{where}: weight={kind} needs a positive EXPTIME")
    if kind == "exptime":
        return exptime
    keys = ("ESO TEL AMBI FWHM START", "ESO TEL AMBI FWHM END", "ESO TEL IA FWHM", "ESO TEL AG FWHMX")
    fwhm = [float(pt.header[k]) for k in keys if k in pt.header and float(pt.header[k]) > 0]
    if not fwhm:
        raise RecipeError(f"{where}: weight=fwhm needs a seeing keyword ({', '.join(keys)})")
    return exptime / float(np.mean(fwhm[:2])) ** 2
