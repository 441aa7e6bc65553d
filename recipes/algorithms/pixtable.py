"""MUSE pixel tables (PIXTABLE_OBJECT/STD/SKY/REDUCED/POSITIONED/COMBINED; recipes.md §4.6).

A pixel table holds one row per CCD pixel as typed numpy columns:

========  ========  ====================================================================
column    dtype     meaning
========  ========  ====================================================================
xpos      float32   x in the field: ``pix`` (scibasic), ``rad`` (projected), ``deg`` (positioned)
ypos      float32   y in the field, same unit as xpos
lambda    float32   air wavelength of the pixel centre [Angstrom]
data      float32   value (``count`` or ``10**(-20)*erg/s/cm**2/Angstrom``)
dq        int32     Euro3D flags (0 = good)
stat      float32   variance of ``data``
origin    uint32    bit-packed CCD origin (:mod:`recipes.algorithms.origin`); int32 on disk
weight    float32   optional exposure weight (after combination)
========  ========  ====================================================================

Coordinate conventions (as the DRS and mpdaf read them, ``ESO DRS MUSE PIXTABLE WCS``):

* pixel units (no WCS key, xpos unit ``pix``): field pixels (geometry-table units), no
  celestial reference;
* ``projected (intermediate)``: xpos = native longitude φ [rad], ypos = θ − π/2 [rad] of the
  gnomonic (TAN) projection about the header ``RA``/``DEC`` (deg), φp = 180°
  (:mod:`recipes.algorithms.projection`);
* ``positioned (final)``: xpos = RA − CRVAL1, ypos = DEC − CRVAL2 [deg] (a plain RA
  difference, not multiplied by cos δ), CRVAL1/2 in the primary header.

Storage: one IMAGE extension per column (shape NAXIS1=1, NAXIS2=nrows, EXTNAME = column
name) after a header-only primary HDU, as the DRS writes it; a binary-table layout (one
BINTABLE extension with these columns) is read too and written on request. An optional
``PIXTABLE_FLAT_FIELD`` bintable (``lambda``, ``data``) is carried along unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError
from recipes.io import STRUCTURAL_KEYS, fit_comments, hkey
from recipes.kernels.pixtable_build import origin_ranges
from recipes.algorithms.projection import native_to_celestial

#: Column name -> numpy dtype in memory (``origin`` is written as int32 like the DRS).
COLUMN_DTYPES: dict[str, np.dtype] = {
    "xpos": np.dtype(np.float32),
    "ypos": np.dtype(np.float32),
    "lambda": np.dtype(np.float32),
    "data": np.dtype(np.float32),
    "dq": np.dtype(np.int32),
    "stat": np.dtype(np.float32),
    "origin": np.dtype(np.uint32),
    "weight": np.dtype(np.float32),
}
REQUIRED_COLUMNS = ("xpos", "ypos", "lambda", "data", "dq", "stat", "origin")
FLAT_FIELD_EXTNAME = "PIXTABLE_FLAT_FIELD"

PIXTABLE_KEY = "ESO DRS MUSE PIXTABLE"
WCS_PIXEL = "pixel"
WCS_PROJECTED = "projected"
WCS_POSITIONED = "positioned"
#: Values of ``ESO DRS MUSE PIXTABLE WCS`` (muse_pixtable.h); pixel-unit tables carry no
#: such key, their state follows from the ``pix`` unit of xpos.
WCS_KEYWORD_VALUES = {
    WCS_PROJECTED: "projected (intermediate)",
    WCS_POSITIONED: "positioned (final)",
}
_POSITION_UNITS = {WCS_PIXEL: "pix", WCS_PROJECTED: "rad", WCS_POSITIONED: "deg"}


def pkey(*parts: object) -> str:
    """``pkey("LIMITS", "X", "LOW")`` -> ``"ESO DRS MUSE PIXTABLE LIMITS X LOW"``."""
    return " ".join((PIXTABLE_KEY, *(str(p) for p in parts)))


# --------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------


@dataclass
class PixTable:
    """A pixel table: primary ``header`` plus typed numpy ``columns`` of equal length.

    Column access: ``pt.xpos``, ``pt.ypos``, ``pt.lam`` (the ``lambda`` column), ``pt.data``,
    ``pt.dq``, ``pt.stat``, ``pt.origin``, ``pt.weight`` (None when absent).
    """

    header: fits.Header
    columns: dict[str, np.ndarray]
    flat_field: Table | None = None
    units: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.columns]
        if missing:
            raise RecipeError(f"pixel table lacks column(s) {', '.join(missing)}")
        n = None
        for name in list(self.columns):
            if name not in COLUMN_DTYPES:
                continue
            col = np.asarray(self.columns[name]).reshape(-1)
            want = COLUMN_DTYPES[name]
            if name == "origin" and col.dtype != want:
                col = col.astype(np.int64).astype(want) if col.dtype.kind == "i" else col.astype(want)
            elif col.dtype != want:
                col = col.astype(want)
            if not col.dtype.isnative:
                col = col.astype(want.newbyteorder("="))
            self.columns[name] = col
            if n is None:
                n = col.size
            elif col.size != n:
                raise RecipeError(f"pixel table column {name} has {col.size} rows, expected {n}")

    # -- columns -------------------------------------------------------------------
    @property
    def nrows(self) -> int:
        return int(self.columns["xpos"].size)

    @property
    def xpos(self) -> np.ndarray:
        return self.columns["xpos"]

    @property
    def ypos(self) -> np.ndarray:
        return self.columns["ypos"]

    @property
    def lam(self) -> np.ndarray:
        return self.columns["lambda"]

    @property
    def data(self) -> np.ndarray:
        return self.columns["data"]

    @property
    def dq(self) -> np.ndarray:
        return self.columns["dq"]

    @property
    def stat(self) -> np.ndarray:
        return self.columns["stat"]

    @property
    def origin(self) -> np.ndarray:
        return self.columns["origin"]

    @property
    def weight(self) -> np.ndarray | None:
        return self.columns.get("weight")

    # -- coordinate state ------------------------------------------------------------
    @property
    def wcs_state(self) -> str:
        """``pixel``, ``projected`` or ``positioned`` (header WCS key, else the xpos unit)."""
        value = str(self.header.get(pkey("WCS"), "")).strip().lower()
        for state in (WCS_POSITIONED, WCS_PROJECTED, WCS_PIXEL):
            if value.startswith(state):
                return state
        unit = self.units.get("xpos", "pix").strip().lower()
        return {"rad": WCS_PROJECTED, "deg": WCS_POSITIONED}.get(unit, WCS_PIXEL)

    def reference(self) -> tuple[float, float]:
        """Celestial reference (deg): ``RA``/``DEC`` when projected, ``CRVAL1/2`` when positioned."""
        state = self.wcs_state
        keys = {WCS_PROJECTED: ("RA", "DEC"), WCS_POSITIONED: ("CRVAL1", "CRVAL2")}.get(state)
        if keys is None:
            raise RecipeError("pixel table is in pixel units and has no celestial reference")
        try:
            return float(self.header[keys[0]]), float(self.header[keys[1]])
        except (KeyError, TypeError, ValueError):
            raise RecipeError(f"{state} pixel table header lacks a numeric {keys[0]}/{keys[1]}") from None

    def celestial(self, rows: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Absolute (RA, Dec) in degrees (float64) of the rows (all by default)."""
        sel = slice(None) if rows is None else rows
        x = self.xpos[sel].astype(np.float64)
        y = self.ypos[sel].astype(np.float64)
        ra0, dec0 = self.reference()
        if self.wcs_state == WCS_POSITIONED:
            return ra0 + x, dec0 + y
        return native_to_celestial(x, y, ra0, dec0)

    # -- selection and limits ----------------------------------------------------------
    def select(self, mask_or_index) -> PixTable:
        """A new table with the selected rows (boolean mask or index array)."""
        cols = {name: col[mask_or_index] for name, col in self.columns.items()}
        out = PixTable(self.header.copy(), cols, self.flat_field, dict(self.units))
        out.update_limits()
        return out

    def cut_lambda(self, lmin: float, lmax: float, inplace: bool = False) -> PixTable:
        """Rows with ``lmin <= lambda <= lmax`` [Angstrom] (the table itself if nothing is cut).

        ``inplace`` replaces the columns one at a time, so that a large table needs memory
        for one extra column instead of a second table.
        """
        keep = (self.lam >= lmin) & (self.lam <= lmax)
        if keep.all():
            return self
        if not inplace:
            return self.select(keep)
        for name in list(self.columns):
            self.columns[name] = self.columns[name][keep]
        self.update_limits()
        return self

    def update_limits(self) -> None:
        """Refresh the ``... LIMITS {X,Y,LAMBDA,IFU,SLICE} {LOW,HIGH}`` header keys."""
        if self.nrows == 0:
            return
        for name, col in (("X", self.xpos), ("Y", self.ypos), ("LAMBDA", self.lam)):
            self.header[hkey(pkey("LIMITS", name, "LOW"))] = float(col.min())
            self.header[hkey(pkey("LIMITS", name, "HIGH"))] = float(col.max())
        # one pass over the origin words: unpacking 3e8 of them would need ≈ 5 GB of temporaries
        ifu_lo, ifu_hi, slice_lo, slice_hi = origin_ranges(self.origin)
        for name, low, high in (("IFU", ifu_lo, ifu_hi), ("SLICE", slice_lo, slice_hi)):
            self.header[hkey(pkey("LIMITS", name, "LOW"))] = low
            self.header[hkey(pkey("LIMITS", name, "HIGH"))] = high

    # -- I/O ------------------------------------------------------------------------
    def write(self, path: Path, as_table: bool = False) -> Path:
        """Write the DRS layout (one image extension per column) or a binary table.

        A header without ``ESO DRS MUSE PIXTABLE TYPE`` gets ``GEOFULL`` (the DRS needs it).
        """
        path = Path(path)
        self.update_limits()
        if pkey("TYPE") not in self.header:  # the DRS refuses tables without it
            self.header[hkey(pkey("TYPE"))] = ("GEOFULL", "type of pixel table")
        units = self.default_units()
        primary = fits.PrimaryHDU(header=fit_comments(_clean(self.header)))
        hdus: list[fits.hdu.base._BaseHDU] = [primary]
        names = [c for c in (*REQUIRED_COLUMNS, "weight") if c in self.columns]
        if as_table:
            cols = [
                fits.Column(name=n, format=_TFORM[n], unit=units.get(n), array=_disk(n, self.columns[n]))
                for n in names
            ]
            hdus.append(fits.BinTableHDU.from_columns(cols))
        else:
            for n in names:
                hdu = fits.ImageHDU(_disk(n, self.columns[n]).reshape(-1, 1))
                hdu.header["EXTNAME"] = n  # lower case, as the DRS writes it
                if units.get(n):
                    hdu.header["BUNIT"] = units[n]
                hdus.append(hdu)
        if self.flat_field is not None:
            hdus.append(fits.BinTableHDU(self.flat_field, name=FLAT_FIELD_EXTNAME))
        fits.HDUList(hdus).writeto(path, overwrite=True, output_verify="silentfix")
        return path

    def default_units(self) -> dict[str, str]:
        units = {
            "xpos": _POSITION_UNITS[self.wcs_state],
            "ypos": _POSITION_UNITS[self.wcs_state],
            "lambda": "Angstrom",
            "data": "count",
            "stat": "count**2",
        }
        units.update({k: v for k, v in self.units.items() if v})
        return units

    @classmethod
    def read(cls, path: Path, columns: Iterable[str] | None = None) -> PixTable:
        """Read a pixel table written as image extensions or as a binary table.

        ``columns`` restricts the optional columns read (the required ones are always read).
        RecipeError naming the file for a missing file, missing column or corrupt data.
        """
        path = Path(path)
        if not path.exists():
            raise RecipeError(f"{path}: file does not exist")
        wanted = set(REQUIRED_COLUMNS) | set(columns or ("weight",))
        try:
            with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
                header = hdul[0].header.copy()
                names = [str(h.header.get("EXTNAME", "")).strip().lower() for h in hdul]
                cols: dict[str, np.ndarray] = {}
                units: dict[str, str] = {}
                flat = None
                if FLAT_FIELD_EXTNAME.lower() in names:
                    flat = Table(hdul[names.index(FLAT_FIELD_EXTNAME.lower())].data.copy())
                if "xpos" in names and isinstance(hdul[names.index("xpos")], fits.ImageHDU):
                    for name in wanted:
                        if name not in names:
                            continue
                        hdu = hdul[names.index(name)]
                        cols[name] = _from_disk(name, hdu.data)
                        if "BUNIT" in hdu.header:
                            units[name] = str(hdu.header["BUNIT"])
                else:
                    table_hdu = next(
                        (h for h in hdul[1:] if isinstance(h, fits.BinTableHDU) and "xpos" in h.columns.names),
                        None,
                    )
                    if table_hdu is None:
                        raise RecipeError(f"{path}: not a pixel table (no xpos column or extension)")
                    for name in wanted:
                        if name in table_hdu.columns.names:
                            cols[name] = _from_disk(name, table_hdu.data[name])
                            unit = table_hdu.columns[name].unit
                            if unit:
                                units[name] = str(unit)
        except RecipeError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise RecipeError(f"{path}: cannot read pixel table ({str(exc).splitlines()[0]})") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in cols]
        if missing:
            raise RecipeError(f"{path}: pixel table lacks column(s) {', '.join(missing)}")
        try:
            return cls(header, cols, flat, units)
        except RecipeError as exc:
            raise RecipeError(f"{path}: {exc}") from None

    @classmethod
    def concatenate(cls, tables: list[PixTable], consume: bool = False) -> PixTable:
        """Rows of several tables (same coordinate state) in order; header of the first.

        ``consume`` empties the input tables column by column as it goes, so that memory
        holds one extra column instead of a second copy of everything.
        """
        if not tables:
            raise RecipeError("no pixel table to concatenate")
        states = {t.wcs_state for t in tables}
        if len(states) > 1:
            raise RecipeError(f"pixel tables mix coordinate states: {', '.join(sorted(states))}")
        names = [n for n in tables[0].columns if all(n in t.columns for t in tables)]
        cols = {}
        for n in names:
            cols[n] = np.concatenate([t.columns[n] for t in tables])
            if consume:
                for t in tables:
                    # a new empty array: an empty view ([:0]) would keep the whole column alive
                    t.columns[n] = np.empty(0, dtype=t.columns[n].dtype)
        out = cls(tables[0].header.copy(), cols, tables[0].flat_field, dict(tables[0].units))
        if len(tables) > 1:  # the rows of several IFUs: the first one's EXTNAME = CHANnn is wrong
            out.header.remove("EXTNAME", ignore_missing=True)
        out.update_limits()
        return out


def _clean(header: fits.Header) -> fits.Header:
    """The primary header to write: no structural keywords, except ``EXTNAME`` (a
    single-IFU table names its IFU there, ``CHANnn``, where the DRS looks for it)."""
    out = fits.Header()
    for card in header.cards:
        if card.keyword in ("", "COMMENT", "HISTORY"):
            continue
        if card.keyword in STRUCTURAL_KEYS and card.keyword != "EXTNAME":
            continue
        out.append(card, end=True)
    return out


_TFORM = {"xpos": "E", "ypos": "E", "lambda": "E", "data": "E", "dq": "J", "stat": "E", "origin": "J", "weight": "E"}


def _disk(name: str, col: np.ndarray) -> np.ndarray:
    if name == "origin":
        return col.view(np.int32)  # the DRS stores origin as a signed 32-bit integer
    return col


def _from_disk(name: str, raw) -> np.ndarray:
    arr = np.asarray(raw).reshape(-1)
    if name == "origin":
        arr = np.ascontiguousarray(arr, dtype=np.int32).view(np.uint32)
    return np.array(arr, dtype=COLUMN_DTYPES[name].newbyteorder("="))


def set_wcs_state(header: fits.Header, state: str, reference: tuple[float, float] | None = None) -> None:
    """Record the coordinate state (and its celestial reference) in a pixel-table header.

    ``pixel`` removes the WCS key, as the DRS has none for tables in pixel units.
    """
    if state == WCS_PIXEL:
        header.remove(pkey("WCS"), ignore_missing=True)
        return
    header[hkey(pkey("WCS"))] = (WCS_KEYWORD_VALUES[state], "coordinates")
    if reference is not None:
        if state == WCS_PROJECTED:
            header["RA"], header["DEC"] = float(reference[0]), float(reference[1])
        elif state == WCS_POSITIONED:
            header["CRVAL1"], header["CRVAL2"] = float(reference[0]), float(reference[1])
            header["CUNIT1"], header["CUNIT2"] = "deg", "deg"


def make_pixtable(columns: Mapping[str, np.ndarray], header: fits.Header | None = None, **units: str) -> PixTable:
    """Build a :class:`PixTable` from arrays (dtypes converted; ``units`` per column name)."""
    return PixTable(header.copy() if header is not None else fits.Header(), dict(columns), None, dict(units))
