"""The static flux-calibration inputs: STD_FLUX_TABLE, EXTINCT_TABLE and TELLURIC_REGIONS
(formats of recipes.md §4.9), and the column readers the response tables share.

Read by muse_standard and muse_scipost; STD_RESPONSE and STD_TELLURIC, the products, are
read and written by :mod:`recipes.algorithms.fluxcal`. Wavelengths in Å (air; HST CALSPEC
vacuum wavelengths are converted, :func:`vacuum_to_air`), fluxes in erg/s/cm²/Å; tables
are returned sorted by wavelength.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from recipes.base import RecipeError


@dataclass(frozen=True)
class ReferenceSpectrum:
    """A standard star's tabulated flux: ``lam`` [Å, air], ``flux``, ``fluxerr`` [erg/s/cm²/Å]."""

    name: str
    lam: np.ndarray
    flux: np.ndarray
    fluxerr: np.ndarray
    ra: float | None = None
    dec: float | None = None

    def at(self, lam) -> tuple[np.ndarray, np.ndarray]:
        """Flux and error interpolated to ``lam`` [Å] (NaN outside the table)."""
        lam = np.asarray(lam, dtype=np.float64)
        f = np.interp(lam, self.lam, self.flux, left=np.nan, right=np.nan)
        e = np.interp(lam, self.lam, self.fluxerr, left=np.nan, right=np.nan)
        return f, e


# --------------------------------------------------------------------------------------
# reading tables
# --------------------------------------------------------------------------------------


def _columns(table: Table) -> dict[str, str]:
    return {c.lower(): c for c in table.colnames}


def vacuum_to_air(lam) -> np.ndarray:
    """Air wavelength [Å] of vacuum wavelength ``lam`` [Å] (Ciddor 1996 / Morton 2000)."""
    lam = np.asarray(lam, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = 1.0 + 0.0000834254 + 0.02406147 / (130.0 - s2) + 0.00015998 / (38.9 - s2)
    return lam / n


def _reference_from_table(table: Table, name: str, where: str) -> ReferenceSpectrum:
    cols = _columns(table)
    if "lambda" in cols and "flux" in cols:  # MUSE format
        lam = np.asarray(table[cols["lambda"]], dtype=np.float64)
        flux = np.asarray(table[cols["flux"]], dtype=np.float64)
        err = np.asarray(table[cols["fluxerr"]], dtype=np.float64) if "fluxerr" in cols else np.zeros_like(flux)
    elif "wavelength" in cols and "flux" in cols:  # HST CALSPEC: vacuum λ, FLAM
        lam = vacuum_to_air(np.asarray(table[cols["wavelength"]], dtype=np.float64))
        flux = np.asarray(table[cols["flux"]], dtype=np.float64)
        err = np.zeros_like(flux)
        for c in ("staterror", "syserror"):
            if c in cols:
                err = np.hypot(err, np.asarray(table[cols[c]], dtype=np.float64))
    else:
        raise RecipeError(f"{where}: STD_FLUX_TABLE extension {name} needs columns lambda, flux (or WAVELENGTH, FLUX)")
    good = np.isfinite(lam) & np.isfinite(flux)
    order = np.argsort(lam[good])
    lam, flux, err = lam[good][order], flux[good][order], np.nan_to_num(err[good][order])
    if lam.size < 2:
        raise RecipeError(f"{where}: STD_FLUX_TABLE extension {name} has fewer than 2 valid rows")
    return ReferenceSpectrum(name, lam, flux, err)


def read_std_flux_table(
    path: Path, ra: float | None = None, dec: float | None = None, name: str | None = None,
    max_distance: float = 60.0,
) -> ReferenceSpectrum:  # fmt: skip
    """The reference spectrum of the observed standard from a STD_FLUX_TABLE.

    Each table extension is one star (EXTNAME = name, ``RA``/``DEC`` [deg] in its header).
    The star is the extension nearest to (``ra``, ``dec``) [deg] within ``max_distance``
    [arcsec], else the one whose EXTNAME equals ``name`` (the exposure's OBS TARG NAME),
    else, for a single-extension file without coordinates, that extension. RecipeError
    naming the file and the stars it holds when none matches.
    """
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            entries = []
            for hdu in hdul[1:]:
                if not isinstance(hdu, fits.BinTableHDU):
                    continue
                h = hdu.header
                extname = str(h.get("EXTNAME", f"EXT{len(entries) + 1}")).strip()
                try:
                    pos = (float(h["RA"]), float(h["DEC"]))
                except (KeyError, TypeError, ValueError):
                    pos = None
                entries.append((extname, pos, Table(hdu.data)))
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read STD_FLUX_TABLE ({str(exc).splitlines()[0]})") from None
    if not entries:
        raise RecipeError(f"{path}: STD_FLUX_TABLE has no table extension")
    chosen = None
    if ra is not None and dec is not None:
        best = None
        for entry in entries:
            if entry[1] is None:
                continue
            d = angular_distance(ra, dec, *entry[1]) * 3600.0
            if d <= max_distance and (best is None or d < best[0]):
                best = (d, entry)
        chosen = best[1] if best else None
    if chosen is None and name:
        chosen = next((e for e in entries if e[0].strip().upper() == name.strip().upper()), None)
    if chosen is None and len(entries) == 1 and entries[0][1] is None:
        chosen = entries[0]
    if chosen is None:
        where = f"RA={ra:.5f} DEC={dec:.5f}" if ra is not None and dec is not None else "the exposure"
        stars = ", ".join(e[0] for e in entries)
        raise RecipeError(f"{path}: STD_FLUX_TABLE has no star {name or ''} within {max_distance:g} arcsec of "
                          f"{where} (stars: {stars})")  # fmt: skip
    ref = _reference_from_table(chosen[2], chosen[0], str(path))
    pos = chosen[1] or (None, None)
    return ReferenceSpectrum(ref.name, ref.lam, ref.flux, ref.fluxerr, pos[0], pos[1])


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance [deg] between two positions [deg]."""
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    s = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return float(np.degrees(2 * np.arcsin(np.sqrt(min(1.0, s)))))


def read_first_table(path: Path, what: str) -> Table:
    """The first binary-table extension of ``path`` (``what`` names it in RecipeErrors)."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            hdu = next((h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)), None)
            if hdu is None:
                raise RecipeError(f"{path}: {what} has no table extension")
            return Table(hdu.data)
    except RecipeError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise RecipeError(f"{path}: cannot read {what} ({str(exc).splitlines()[0]})") from None


def sorted_columns(path: Path, what: str, names: tuple[str, ...], optional: tuple[str, ...] = (),
                    min_rows: int = 2) -> list[np.ndarray]:  # fmt: skip
    """Columns ``names`` (required) and ``optional`` (None when absent) of the first table of
    ``path`` as float64 arrays (column names case-insensitive), sorted by the first."""
    table = read_first_table(path, what)
    cols = _columns(table)
    out = []
    for name in names + optional:
        if name.lower() in cols:
            out.append(np.asarray(table[cols[name.lower()]], dtype=np.float64).reshape(-1))
        elif name in optional:
            out.append(None)
        else:
            raise RecipeError(f"{path}: {what} lacks column {name}")
    if out[0].size < min_rows:
        raise RecipeError(f"{path}: {what} has fewer than {min_rows} row(s)")
    order = np.argsort(out[0])
    return [None if c is None else c[order] for c in out]


def read_extinction(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """EXTINCT_TABLE: ``lambda`` [Å], ``extinction`` [mag/airmass]."""
    lam, ext = sorted_columns(path, "EXTINCT_TABLE", ("lambda", "extinction"))
    return lam, ext


def read_telluric_regions(path: Path) -> np.ndarray:
    """TELLURIC_REGIONS: (n, 4) array of ``lmin``, ``lmax``, ``bgmin``, ``bgmax`` [Å].

    RecipeError unless bgmin <= lmin < lmax <= bgmax in every row.
    """
    lmin, lmax, bgmin, bgmax = sorted_columns(path, "TELLURIC_REGIONS", ("lmin", "lmax", "bgmin", "bgmax"),
                                              min_rows=1)
    regions = np.column_stack([lmin, lmax, bgmin, bgmax])
    bad = ~((regions[:, 2] <= regions[:, 0]) & (regions[:, 0] < regions[:, 1]) & (regions[:, 1] <= regions[:, 3]))
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise RecipeError(f"{path}: TELLURIC_REGIONS row {row} needs bgmin <= lmin < lmax <= bgmax")
    return regions
