"""Pure pixel-table steps of muse_scipost (recipes.md §3.9) before the sky: the IFUs of one
exposure merged, then flux calibrated.

* :func:`group_exposures` — the input IFU tables grouped by exposure (DATE-OBS), one
  instrument mode (:func:`check_mode`);
* :func:`merge_ifus` — the IFU tables of one exposure → one table (same exposure, same
  instrument mode, each IFU once); each IFU's ``PIXTABLE_FLAT_FIELD`` spectrum is
  multiplied back into its rows first (:func:`apply_flat_field_spectrum`);
* :func:`flux_calibrate` — count → 1e-20 erg/s/cm²/Å with STD_RESPONSE, EXTINCT_TABLE
  and STD_TELLURIC (:func:`read_response`, :func:`read_extinction`, :func:`read_telluric`).

The later steps have their own modules: :mod:`recipes.algorithms.autocal` (slice
autocalibration), :mod:`recipes.algorithms.skysub`/:mod:`recipes.algorithms.skymodel`
(sky), :mod:`recipes.algorithms.rvcorr`, :mod:`recipes.algorithms.astrometry` (with the
DAR of :mod:`recipes.algorithms.dar`), :mod:`recipes.algorithms.offsets`.

Conventions
-----------
Wavelengths in Å (air); arrays 0-based.

*Flat-field spectrum.* muse_scibasic divides every pixel by the normalised master flat,
which also divides out the lamp spectrum; the table carries the mean flat spectrum per
1.25 Å (``PIXTABLE_FLAT_FIELD``). :func:`apply_flat_field_spectrum` **multiplies** each row
by that spectrum (linear interpolation in λ), so that the data become counts as an average
pixel of that IFU would record them, and sets ``ESO DRS MUSE PIXTABLE FFSPEC = T`` and
the DRS's ``... PIXTABLE FFCORR = 1`` (either one means: already applied).
muse_standard must do the same before it derives STD_RESPONSE, so that the response
matches the data it is applied to.

*Flux calibration* (the DRS formula, recipes.md §3.9 step 3)::

    f [1e-20 erg/s/cm²/Å] = count / EXPTIME / 1.25 Å / 10**(0.4 R(λ)) * 10**(0.4 k(λ) X) / T(λ) * 1e20

with R the STD_RESPONSE ``response`` [mag] (so ``10**(0.4 R)`` is the detected
count/s/Å per erg/s/cm²/Å), k the extinction [mag/airmass], X the mean airmass of the
exposure (``ESO TEL AIRM START/END``) and T the STD_TELLURIC ``ftelluric`` scaled to X
(1 outside the table): :func:`recipes.algorithms.fluxcal.apply_response`, shared with muse_standard.
The variance gets the square of the factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from recipes.algorithms import fluxcal, fluxcal_tables
from recipes.base import RecipeError
from recipes.io import hkey, read_primary_header
from recipes.algorithms.origin import unpack_origin
from recipes.algorithms.pixtable import WCS_PIXEL, PixTable, pkey

#: kMuseSpectralSamplingA: the pixel width in λ the DRS flux calibration divides by.
SPECTRAL_SAMPLING = 1.25
#: On STD_RESPONSE/STD_TELLURIC: made from flat-field-spectrum corrected data (DRS name).
FLUX_FFCORR = "ESO DRS MUSE FLUX FFCORR"
FLUX_UNIT = "10**(-20)*erg/s/cm**2/Angstrom"
STAT_UNIT = "(10**(-20)*erg/s/cm**2/Angstrom)**2"


# --------------------------------------------------------------------------------------
# merging the IFUs of one exposure
# --------------------------------------------------------------------------------------


def apply_flat_field_spectrum(pt: PixTable, where: str = "pixel table") -> bool:
    """Multiply the rows by the table's PIXTABLE_FLAT_FIELD spectrum (see module doc).

    Returns False (and leaves the table alone) when there is no such extension or it was
    already applied (``... PIXTABLE FFSPEC`` true).
    """
    if pt.flat_field is None or bool(pt.header.get(pkey("FFSPEC"), False)) or bool(pt.header.get(pkey("FFCORR"), 0)):
        return False
    table = pt.flat_field
    names = {c.lower(): c for c in table.colnames}
    if "lambda" not in names or "data" not in names or len(table) < 2:
        raise RecipeError(f"{where}: PIXTABLE_FLAT_FIELD needs columns lambda and data (2+ rows)")
    lam = np.asarray(table[names["lambda"]], dtype=np.float64)
    spec = np.asarray(table[names["data"]], dtype=np.float64)
    order = np.argsort(lam)
    factor = np.interp(pt.lam, lam[order], spec[order]).astype(np.float32)
    pt.columns["data"] *= factor
    pt.columns["stat"] *= factor * factor
    mark_flat_field_applied(pt.header)
    return True


def mark_flat_field_applied(header: fits.Header) -> None:
    """Record that the rows were multiplied by the flat-field spectrum: ``... PIXTABLE
    FFSPEC = T`` (ours) and the DRS's ``... PIXTABLE FFCORR = 1``, so that neither
    pipeline applies it twice."""
    header[hkey(pkey("FFSPEC"))] = (True, "data multiplied by the flat-field spectrum")
    header[hkey(pkey("FFCORR"))] = (1, "Pixel table corrected for flat-field spectrum")


def merge_ifus(tables: Sequence[PixTable], names: Sequence[str] | None = None) -> PixTable:
    """One exposure's IFU tables → one table (pixel coordinates, rows in input order).

    Checks that all share DATE-OBS and ``ESO INS MODE`` and that no IFU appears twice;
    applies each IFU's flat-field spectrum before concatenating and records
    ``ESO DRS MUSE PIXTABLE MERGED`` (number of IFUs). RecipeError naming the file at fault.
    """
    if not tables:
        raise RecipeError("no pixel table to merge")
    names = list(names) if names is not None else [f"table {i + 1}" for i in range(len(tables))]
    first = tables[0].header
    seen: dict[int, str] = {}
    for pt, name in zip(tables, names):
        for key in ("DATE-OBS", "ESO INS MODE"):
            if str(pt.header.get(key, "")).strip() != str(first.get(key, "")).strip():
                raise RecipeError(
                    f"{name}: {key} {pt.header.get(key)!r} differs from {first.get(key)!r} of {names[0]}"
                )
        if pt.wcs_state != WCS_PIXEL:
            raise RecipeError(f"{name}: pixel table is already {pt.wcs_state}, expected field pixels")
        if pt.nrows:
            ifus = np.flatnonzero(np.bincount(unpack_origin(pt.origin)[0], minlength=32))  # sorted, no sort
            for ifu in ifus.tolist():
                if ifu in seen:
                    raise RecipeError(f"{name}: IFU {ifu} also comes from {seen[ifu]}")
                seen[ifu] = name
        apply_flat_field_spectrum(pt, name)
    merged = PixTable.concatenate(list(tables), consume=True)
    merged.flat_field = None  # applied per IFU; a merged table has no single spectrum
    merged.header[hkey(pkey("MERGED"))] = (len(tables), "number of merged IFUs")
    merged.header.remove("EXTNAME", ignore_missing=True)  # no longer one IFU (DRS: none either)
    mark_flat_field_applied(merged.header)
    for key in [k for k in merged.header if k.startswith(pkey("EXP"))]:
        if key.endswith(("FIRST", "LAST")):
            del merged.header[key]
    merged.header[hkey(pkey("EXP1", "FIRST"))] = 0
    merged.header[hkey(pkey("EXP1", "LAST"))] = merged.nrows - 1
    return merged


def check_mode(pt: PixTable | fits.Header, mode: str | None, where: str) -> str:
    """The ``ESO INS MODE`` of a table (or of its primary header); RecipeError when it
    differs from ``mode``."""
    header = pt.header if isinstance(pt, PixTable) else pt
    this = str(header.get("ESO INS MODE", "")).strip()
    if not this:
        raise RecipeError(f"{where}: pixel table header lacks ESO INS MODE")
    if mode is not None and this != mode:
        raise RecipeError(f"{where}: pixel table from instrument mode {this}, the others are {mode}")
    return this


def group_exposures(paths: list[Path]) -> list[list[Path]]:
    """Group the input tables by DATE-OBS (time order) from their primary headers, after
    checking that all come from one instrument mode (the tables are read per exposure)."""
    groups: dict[str, list[Path]] = {}
    mode = None
    for path in paths:
        header = read_primary_header(path)
        mode = check_mode(header, mode, str(path))
        groups.setdefault(str(header.get("DATE-OBS", "")), []).append(path)
    return [groups[k] for k in sorted(groups)]


# --------------------------------------------------------------------------------------
# flux calibration
# --------------------------------------------------------------------------------------


def read_response(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """STD_RESPONSE (recipes.md §4.9): ``lambda`` [Å], ``response`` [mag] (:mod:`recipes.algorithms.fluxcal`)."""
    lam, resp, _ = fluxcal.read_response(Path(path))
    return lam, resp


def read_telluric(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """STD_TELLURIC: ``lambda`` [Å], ``ftelluric`` (transmission at airmass 1, ≤ 1)."""
    lam, ftell, _ = fluxcal.read_telluric(Path(path))
    return lam, ftell


def read_extinction(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """EXTINCT_TABLE: ``lambda`` [Å], ``extinction`` [mag/airmass]."""
    return fluxcal_tables.read_extinction(Path(path))


def header_airmass(header: fits.Header, where: str = "pixel table") -> float:
    """Mean of ``ESO TEL AIRM START/END`` (RecipeError when neither is there)."""
    values = [float(header[k]) for k in ("ESO TEL AIRM START", "ESO TEL AIRM END") if k in header]
    if not values:
        raise RecipeError(f"{where}: header lacks ESO TEL AIRM START/END (airmass)")
    return float(np.mean(values))


def flux_calibrate(
    pt: PixTable,
    response: tuple[np.ndarray, np.ndarray],
    extinction: tuple[np.ndarray, np.ndarray],
    telluric: tuple[np.ndarray, np.ndarray] | None = None,
    where: str = "pixel table",
    chunk: int = 4_000_000,
) -> None:
    """Convert ``pt`` in place from count to 1e-20 erg/s/cm²/Å (formula in the module doc).

    Rows outside the response's wavelength range get the nearest response value (as
    :func:`numpy.interp`); the telluric correction is 1 outside its table.
    """
    if bool(pt.header.get(pkey("FLUXCAL"), False)):
        raise RecipeError(f"{where}: pixel table is already flux calibrated")
    try:
        exptime = float(pt.header["EXPTIME"])
    except (KeyError, TypeError, ValueError):
        raise RecipeError(f"{where}: header lacks a numeric EXPTIME") from None
    if exptime <= 0:
        raise RecipeError(f"{where}: EXPTIME {exptime} must be positive for flux calibration")
    airmass = header_airmass(pt.header, where)
    for s in range(0, pt.nrows, chunk):  # chunks: the factor is computed in float64
        sel = slice(s, s + chunk)
        try:
            data, stat = fluxcal.apply_response(pt.lam[sel], pt.data[sel], pt.stat[sel], exptime, airmass, response,
                                                extinction, telluric)  # fmt: skip
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}") from None
        pt.columns["data"][sel], pt.columns["stat"][sel] = data, stat
    pt.units["data"], pt.units["stat"] = FLUX_UNIT, STAT_UNIT
    pt.header[hkey(pkey("FLUXCAL"))] = (True, "flux calibrated")
