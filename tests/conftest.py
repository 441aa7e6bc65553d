"""Shared fixtures: MUSE-like raw files and databases.

- ``make_raw_fits(path, kind=None, header=None, data=False, **columns)`` writes a
  header-only raw file (``.fits``, ``.fits.gz`` or tile-compressed ``.fits.fz``) with the
  keywords of a real MUSE primary header (about 260 cards). ``columns`` use the raw column
  spelling (``DATE_OBS``, ``DPR_TYPE``, ``OBJECT``, ``TPL_START``, ``INS_MODE``...) or an
  ESO keyword with underscores (``TEL_AIRM_START``, ``INS_DROT_POSANG``); ``header`` gives
  exact FITS keywords; a value of None removes the keyword.
  :func:`write_raw_fits` is the same as a plain function (bench/ingest.py uses it).
- ``db_url``: parametrised over a fresh SQLite file and, when ``TEST_DATABASE_URL`` is
  set, PostgreSQL (each test gets its own schema, dropped afterwards).
- ``database``: a :class:`musered.db.Database` on ``db_url``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

# Raw column -> FITS keyword, for the keyword arguments of make_raw_fits.
COLUMN_KEYWORDS = {
    "DATE_OBS": "DATE-OBS",
    "MJD_OBS": "MJD-OBS",
    "EXPTIME": "EXPTIME",
    "OBJECT": "OBJECT",
    "ARCFILE": "ARCFILE",
    "DPR_CATG": "ESO DPR CATG",
    "DPR_TYPE": "ESO DPR TYPE",
    "DPR_TECH": "ESO DPR TECH",
    "PRO_CATG": "ESO PRO CATG",
    "TPL_START": "ESO TPL START",
    "TPL_ID": "ESO TPL ID",
    "INS_MODE": "ESO INS MODE",
    "INS_TEMP7_VAL": "ESO INS TEMP7 VAL",
    "OBS_OBSERVER": "ESO OBS OBSERVER",
}

# kind -> (DPR CATG, DPR TYPE, TPL ID, OBJECT, EXPTIME)
KINDS = {
    "BIAS": ("CALIB", "BIAS", "MUSE_wfm_cal_bias", "BIAS", 0.0),
    "DARK": ("CALIB", "DARK", "MUSE_wfm_cal_dark", "DARK", 1800.0),
    "FLAT": ("CALIB", "FLAT,LAMP", "MUSE_wfm_cal_specflat", "FLAT,LAMP", 15.0),
    "ILLUM": ("CALIB", "FLAT,LAMP,ILLUM", "MUSE_wfm_cal_illum", "FLAT,LAMP,ILLUM", 5.0),
    "SKYFLAT": ("CALIB", "FLAT,SKY", "MUSE_wfm_cal_skyflat", "FLAT,SKY", 20.0),
    "ARC": ("CALIB", "WAVE", "MUSE_wfm_cal_arc", "WAVE", 10.0),
    "STD": ("CALIB", "STD", "MUSE_wfm_cal_std", "STD", 60.0),
    "OBJECT": ("SCIENCE", "OBJECT", "MUSE_wfm-noao_obs_genericoffset", "IC4406", 600.0),
}

MJD_UNIX_EPOCH = 40587.0


def _base_header(kind: str, date_obs: dt.datetime, arcfile: str) -> list[tuple[str, Any, str]]:
    catg, dpr_type, tpl_id, obj, exptime = KINDS[kind]
    mjd = MJD_UNIX_EPOCH + (date_obs - dt.datetime(1970, 1, 1)).total_seconds() / 86400
    tpl_start = date_obs.strftime("%Y-%m-%dT%H:%M:%S")
    cards: list[tuple[str, Any, str]] = [
        ("SIMPLE", True, "Standard FITS"),
        ("BITPIX", 8, "# of bits per pix value"),
        ("NAXIS", 0, "# of axes in data array"),
        ("EXTEND", True, "Extensions may be present"),
        ("ORIGIN", "ESO-PARANAL", "European Southern Observatory"),
        ("DATE", (date_obs + dt.timedelta(seconds=exptime + 90)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
         "Date the file was written"),
        ("TELESCOP", "ESO-VLT-U4", "ESO <TEL>"),
        ("INSTRUME", "MUSE", "Instrument used."),
        ("OBJECT", obj, "Original target."),
        ("RA", 215.609, "14:22:26.1 RA (J2000) pointing"),
        ("DEC", -44.151, "-44:09:03.6 DEC (J2000) pointing"),
        ("EQUINOX", 2000.0, "Standard FK5"),
        ("RADECSYS", "FK5", "Coordinate system"),
        ("EXPTIME", exptime, "Integration time"),
        ("MJD-OBS", round(mjd, 8), "Obs start"),
        ("DATE-OBS", date_obs.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], "Observing date"),
        ("UTC", float(date_obs.hour * 3600 + date_obs.minute * 60 + date_obs.second), "UTC at start (sec)"),
        ("LST", 49143.517, "LST at start (sec)"),
        ("PI-COI", "UNKNOWN", "PI-COI name."),
        ("OBSERVER", "UNKNOWN", "Name of observer."),
        ("ARCFILE", arcfile, "Archive File Name"),
        ("ORIGFILE", f"MUSE_{kind}_{date_obs:%j}_0001.fits", "Original File Name"),
        ("ESO OBS DID", "ESO-VLT-DIC.OBS-1.12", "OBS Dictionary"),
        ("ESO OBS EXECTIME", 0, "Expected execution time"),
        ("ESO OBS GRP", "0", "linked blocks"),
        ("ESO OBS ID", 200265890, "Observation block ID"),
        ("ESO OBS NAME", f"{obj}_OB1" if kind == "OBJECT" else "Calibration", "OB name"),
        ("ESO OBS OBSERVER", "UNKNOWN", "Observer Name"),
        ("ESO OBS PI-COI ID", 1234, "ESO internal PI-COI ID"),
        ("ESO OBS PI-COI NAME", "UNKNOWN", "PI-COI name"),
        ("ESO OBS PROG ID", "099.A-0001(A)" if kind == "OBJECT" else "60.A-9100(K)", "ESO program identification"),
        ("ESO OBS START", tpl_start, "OB start time"),
        ("ESO OBS TARG NAME", obj, "OB target name"),
        ("ESO OBS TPLNO", 2, "Template number within OB"),
        ("ESO TPL DID", "ESO-VLT-DIC.TPL-1.9", "Data dictionary for TPL"),
        ("ESO TPL EXPNO", 1, "Exposure number within template"),
        ("ESO TPL ID", tpl_id, "Template signature ID"),
        ("ESO TPL NAME", tpl_id.replace("_", " "), "Template name"),
        ("ESO TPL NEXP", 5, "Number of exposures within template"),
        ("ESO TPL PRESEQ", tpl_id, "Sequencer script"),
        ("ESO TPL START", tpl_start, "TPL start time"),
        ("ESO TPL VERSION", "$Revision: 296716 $", "Version of the template"),
        ("ESO DPR CATG", catg, "Observation category"),
        ("ESO DPR TECH", "IFU", "Observation technique"),
        ("ESO DPR TYPE", dpr_type, "Observation type"),
        ("ESO INS MODE", "WFM-NOAO-N", "Instrument mode used."),
        ("ESO INS DROT MODE", "SKY", "Instrument derotator mode"),
        ("ESO INS DROT POSANG", 0.0, "[deg] Position angle"),
        ("ESO INS OPTI1 NAME", "Blue_Cut", "OPTIi name"),
        ("ESO INS OPTI2 NAME", "WFM", "OPTIi name"),
        ("ESO INS TEMP7 VAL", 12.34, "[C] Temperature value"),
        ("ESO INS LAMPNUM", 6, "Number of lamps"),
    ]
    for i in range(1, 7):
        cards += [
            (f"ESO INS LAMP{i} NAME", f"CU-LAMP{i}", "Name of lamp"),
            (f"ESO INS LAMP{i} ST", kind in ("FLAT", "ARC", "ILLUM") and i <= 3, "Lamp activated"),
            (f"ESO INS SHUT{i} NAME", f"CU-SHUT{i}", "Name of shutter"),
            (f"ESO INS SHUT{i} ST", False, "Shutter open"),
        ]
    for i in range(1, 48):  # the many temperature and pressure sensors of a real header
        cards += [
            (f"ESO INS TEMP{i + 10} ID", f"SENS{i:02d}", "Temperature sensor ID"),
            (f"ESO INS TEMP{i + 10} NAME", f"IFU{(i - 1) % 24 + 1:02d} sensor", "Temperature sensor name"),
            (f"ESO INS TEMP{i + 10} VAL", round(12.0 + 0.01 * i, 2), "[C] Temperature value"),
        ]
    cards += [
        ("ESO DET BINX", 1, "Binning factor along X"),
        ("ESO DET BINY", 1, "Binning factor along Y"),
        ("ESO DET CHIPS", 24, "Number of chips"),
        ("ESO DET READ CURID", 1, "Used readout mode id"),
        ("ESO DET READ CURNAME", "SCI1.0", "Used readout mode name"),
        ("ESO DET WIN1 DIT1", exptime, "Actual subintegration time"),
        ("ESO DET WIN1 NDIT", 1, "# of subintegrations"),
        ("ESO TEL AIRM END", 1.072, "Airmass at end"),
        ("ESO TEL AIRM START", 1.065, "Airmass at start"),
        ("ESO TEL AMBI FWHM END", 0.71, "[arcsec] Observatory seeing"),
        ("ESO TEL AMBI FWHM START", 0.68, "[arcsec] Observatory seeing"),
        ("ESO TEL AMBI PRES END", 743.2, "[hPa] Pressure"),
        ("ESO TEL AMBI PRES START", 743.3, "[hPa] Pressure"),
        ("ESO TEL AMBI RHUM", 12.0, "[%] Relative humidity"),
        ("ESO TEL AMBI TEMP", 14.05, "[C] Air temperature"),
        ("ESO TEL AMBI WINDDIR", 312.0, "[deg] Wind direction"),
        ("ESO TEL AMBI WINDSP", 5.2, "[m/s] Wind speed"),
        ("ESO TEL GEOELEV", 2648.0, "[m] Elevation above sea level"),
        ("ESO TEL GEOLAT", -24.6270, "[deg] Tel geo latitude"),
        ("ESO TEL GEOLON", -70.4040, "[deg] Tel geo longitude"),
        ("ESO TEL ID", "v 1.123", "TCS version number"),
        ("ESO TEL TARG ALPHA", 142226.1, "Alpha coordinate"),
        ("ESO TEL TARG DELTA", -440903.6, "Delta coordinate"),
    ]
    for i in range(1, 25):
        cards.append((f"ESO OCS SGS FWHM{i} MED", 0.7 + 0.001 * i, "[arcsec] slow guiding FWHM"))
    return cards


def _card_key(key: str) -> str:
    """Long or spaced keywords as explicit HIERARCH cards (astropy warns otherwise)."""
    return f"HIERARCH {key}" if len(key) > 8 or " " in key else key


KIND_OF_DPR_TYPE = {dpr_type: kind for kind, (_, dpr_type, *_rest) in KINDS.items()}


def _keyword_of(name: str, hdr: fits.Header) -> str:
    """FITS keyword of a keyword argument: a raw column (DPR_TYPE), an ESO keyword with
    underscores (TEL_AIRM_START -> ESO TEL AIRM START), or the keyword itself."""
    if name in COLUMN_KEYWORDS:
        return COLUMN_KEYWORDS[name]
    for candidate in ("ESO " + name.replace("_", " "), name.replace("_", "-")):
        if candidate in hdr:
            return candidate
    return name


def write_raw_fits(
    path: str | Path,
    kind: str | None = None,
    header: dict[str, Any] | None = None,
    data: bool = False,
    **columns: Any,
) -> Path:
    """Write a MUSE-like raw file: the primary header, optionally small primary data.

    ``kind`` (BIAS, DARK, FLAT, ILLUM, SKYFLAT, ARC, STD, OBJECT) sets a consistent DPR
    CATG/TYPE, TPL ID, OBJECT and EXPTIME; by default it follows a ``DPR_TYPE`` argument,
    else OBJECT. The exposure date comes from ``DATE_OBS`` (datetime or ISO string), else
    from an archive-style file name, else 2017-06-16T01:34:56.867. ``.fits.fz`` files get a
    tiny tile-compressed image extension (the primary HDU stays header-only, as in archive
    deliveries); ``.fits.gz`` files are gzipped.
    """
    dpr_type = columns.get("DPR_TYPE", (header or {}).get("ESO DPR TYPE"))
    if kind is None:
        kind = KIND_OF_DPR_TYPE.get(dpr_type, "BIAS" if dpr_type else "OBJECT")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    date_obs = columns.pop("DATE_OBS", None)
    if date_obs is None:
        from musered.nights import timestamp_from_filename

        stamp = timestamp_from_filename(path.name) or "2017-06-16T01:34:56.867"
        date_obs = dt.datetime.fromisoformat(stamp)
    elif isinstance(date_obs, str):
        date_obs = dt.datetime.fromisoformat(date_obs)
    arcfile = path.name.removesuffix(".fz").removesuffix(".gz")
    cards = _base_header(kind, date_obs, arcfile)
    hdr = fits.Header()
    for key, value, comment in cards:
        hdr[_card_key(key)] = (value, comment)
    changes = {_keyword_of(k, hdr): v for k, v in columns.items()}
    changes.update(header or {})
    if dpr_type and dpr_type not in KIND_OF_DPR_TYPE:
        changes.setdefault("OBJECT", dpr_type)  # calibrations are named after their type
    for key, value in changes.items():
        if value is None:
            hdr.remove(key, ignore_missing=True)
        elif key in hdr:
            hdr[key] = value
        else:
            hdr[_card_key(key)] = value
    if path.name.endswith(".fz"):
        image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
        fits.HDUList([fits.PrimaryHDU(header=hdr), fits.CompImageHDU(image, name="CHAN01")]).writeto(
            path, overwrite=True
        )
        return path
    payload = hdr.tostring().encode("ascii")
    if data:
        array = np.arange(32 * 32, dtype=">i2").reshape(32, 32)
        primary = fits.PrimaryHDU(array, header=hdr)
        payload = primary.header.tostring().encode("ascii")
        raw = array.tobytes()
        payload += raw + b"\0" * (-len(raw) % 2880)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=1) as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture
def make_raw_fits():
    """``make_raw_fits(path, kind=None, header=None, data=False, **columns)``."""
    return write_raw_fits


# --------------------------------------------------------------------------------------
# Databases


def _postgres_url(base: str) -> str:
    """A psycopg (3) URL: plain postgresql:// would ask SQLAlchemy for psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if base.startswith(prefix):
            return "postgresql+psycopg://" + base[len(prefix):]
    return base


def _db_params():
    params = [pytest.param("sqlite", id="sqlite")]
    params.append(
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="TEST_DATABASE_URL not set"),
            ],
        )
    )
    return params


@pytest.fixture(params=_db_params())
def db_url(request, tmp_path) -> str:
    """A database URL nobody else uses: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'musered.db'}"
        return
    from sqlalchemy import create_engine, text

    base = _postgres_url(os.environ["TEST_DATABASE_URL"])
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database(db_url):
    from musered.db import Database

    db = Database(db_url)
    yield db
    db.dispose()
