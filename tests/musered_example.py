"""MuseRed's example material as a test fixture: a real WFM-AO night set (IC4406, 2017-06).

``../shared/data/musered-example/`` holds MuseRed's SQLite database (its ``raw`` table has
the real header values of 155 raw files as columns), its settings file, two night logs and
the header of one DRS product. :func:`write_example_raw` turns each ``raw`` row back into a
header-only FITS file, so that our own ``update-db`` ingests the same headers MuseRed did;
:func:`example_folder` lays out a working folder (settings, raw files, night logs) the way a
MuseRed user has it, with or without MuseRed's own ``musered.db`` next to the settings.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from astropy.io import fits

EXAMPLE_DIR = Path(
    os.environ.get("MUSERED_EXAMPLE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "musered-example")
)
EXAMPLE_DB = EXAMPLE_DIR / "musered.db"
EXAMPLE_SETTINGS = EXAMPLE_DIR / "settings.yml"
EXAMPLE_PRODUCT = EXAMPLE_DIR / "MUSE.2017-06-16T01:34:56.867.fits"
NIGHTLOGS = ("MUSE.2017-06-16T01:34:56.867.NL.txt", "MUSE.2017-06-16T01:37:47.867.invalid.txt")

# MuseRed's raw columns that are not header keywords (bookkeeping of its own).
_NOT_KEYWORDS = {"id", "name", "filename", "path", "night", "run", "date_import", "OBJECT_ORIG"}
# Columns whose keyword is not the ESO-hierarchical spelling of the column name.
_PLAIN_KEYWORDS = {
    "ARCFILE": "ARCFILE", "DATE_OBS": "DATE-OBS", "MJD_OBS": "MJD-OBS", "EXPTIME": "EXPTIME",
    "OBJECT": "OBJECT", "ORIGFILE": "ORIGFILE", "RA": "RA", "DEC": "DEC", "TELESCOP": "TELESCOP",
}


def available() -> bool:
    return EXAMPLE_DB.is_file() and EXAMPLE_SETTINGS.is_file()


def column_keyword(column: str) -> str:
    """FITS keyword of a MuseRed raw column: ``TEL_AIRM_START`` → ``ESO TEL AIRM START``."""
    return _PLAIN_KEYWORDS.get(column) or "ESO " + column.replace("_", " ")


def example_rows(table: str = "raw") -> list[dict[str, Any]]:
    """Rows of a table of MuseRed's example database (read-only)."""
    connection = sqlite3.connect(f"file:{EXAMPLE_DB}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute(f'SELECT * FROM "{table}" ORDER BY id')]
    finally:
        connection.close()


def header_of(row: dict[str, Any]) -> fits.Header:
    """The primary header a MuseRed raw row was read from (the keywords it kept)."""
    header = fits.Header()
    for column, value in row.items():
        if column in _NOT_KEYWORDS or value is None:
            continue
        keyword = column_keyword(column)
        card = f"HIERARCH {keyword}" if keyword.startswith("ESO ") else keyword
        header[card] = value
    # MuseRed maps OBJECT to the dataset name; the file holds the original value.
    if row.get("OBJECT_ORIG") is not None:
        header["OBJECT"] = row["OBJECT_ORIG"]
    return header


def write_example_raw(raw_path: Path) -> list[Path]:
    """Header-only FITS files of the 155 raw rows, named as MuseRed's ``filename`` column.

    Compressed names (``.fits.fz``) are written as plain FITS under the same name: the
    header reader goes by content, not by suffix.
    """
    raw_path.mkdir(parents=True, exist_ok=True)
    written = []
    for row in example_rows("raw"):
        path = raw_path / row["filename"].removesuffix(".fz")
        fits.PrimaryHDU(header=header_of(row)).writeto(path, overwrite=True)
        written.append(path)
    for name in NIGHTLOGS:
        shutil.copy(EXAMPLE_DIR / name, raw_path / name)
    return written


def example_folder(folder: Path, with_musered_db: bool = False, settings_text: str | None = None) -> Path:
    """A MuseRed user's working folder: ``settings.yml``, ``raw/`` and optionally MuseRed's db.

    ``settings_text`` replaces MuseRed's settings file (default: a copy of it). Returns the
    settings path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    settings = folder / "settings.yml"
    settings.write_text(settings_text if settings_text is not None else EXAMPLE_SETTINGS.read_text())
    write_example_raw(folder / "raw")
    if with_musered_db:
        shutil.copy(EXAMPLE_DB, folder / "musered.db")
        os.chmod(folder / "musered.db", 0o644)
    return settings


# The DRS static calibrations named by MuseRed's example settings (static_calib) and the
# usual muse-calib names of the others, by their ESO PRO CATG.
STATIC_FILES = {
    "badpix_table.fits": "BADPIX_TABLE", "badpix_table_pre_2015apr.fits": "BADPIX_TABLE",
    "astrometry_wcs_wfm_gto17.fits": "ASTROMETRY_WCS", "astrometry_wcs_wfm_gto19.fits": "ASTROMETRY_WCS",
    "geometry_table_wfm_gto17.fits": "GEOMETRY_TABLE", "geometry_table_wfm_gto19.fits": "GEOMETRY_TABLE",
    "line_catalog.fits": "LINE_CATALOG", "extinct_table.fits": "EXTINCT_TABLE",
    "std_flux_table.fits": "STD_FLUX_TABLE", "filter_list.fits": "FILTER_LIST", "sky_lines.fits": "SKY_LINES",
    "raman_lines.fits": "RAMAN_LINES", "vignetting_mask.fits": "VIGNETTING_MASK",
    "telluric_regions.fits": "TELLURIC_REGIONS",
}


def write_static_calib(folder: Path) -> list[Path]:
    """Header-only files of :data:`STATIC_FILES` (primary ``ESO PRO CATG`` set) in
    ``folder``, for association and dry runs: MuseRed's ``muse_calib_path`` is not shipped."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, catg in STATIC_FILES.items():
        header = fits.Header()
        header["HIERARCH ESO PRO CATG"] = catg
        fits.PrimaryHDU(header=header).writeto(folder / name, overwrite=True)
        written.append(folder / name)
    return written


def write_example_reduced(folder: Path, version: str = "0.1") -> list[Path]:
    """Header-only product files where MuseRed's ``reduced_{version}`` records put them
    (``{path}/{DPR_TYPE}.fits`` under ``folder``, with ``ESO PRO CATG`` and ``ESO INS MODE``):
    the reduced tree of a MuseRed user's folder, which the example set does not ship."""
    written = []
    for row in example_rows(f"reduced_{version.replace('.', '_')}"):
        path = folder / row["path"] / f"{row['DPR_TYPE']}.fits"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        header = fits.Header()
        header["HIERARCH ESO PRO CATG"] = row["DPR_TYPE"]
        if row["INS_MODE"]:
            header["HIERARCH ESO INS MODE"] = row["INS_MODE"]
        fits.PrimaryHDU(header=header).writeto(path)
        written.append(path)
    return written
