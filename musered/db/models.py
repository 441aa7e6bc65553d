"""SQLAlchemy models of the musered database.

Conventions: ``night`` is the observing night as an ISO date string ``YYYY-MM-DD``
(see :func:`musered.nights.night_of`); timestamps are naive UTC ``datetime``;
header-derived columns keep the ESO keyword spelling with dots and spaces replaced by
underscores (``ESO DPR TYPE`` -> ``DPR_TYPE``), as MuseRed names them, so that the SQL a
MuseRed user writes on ``raw`` works here. Columns made at run time (not in these
models): one ``raw`` column per ``settings.additional_keywords`` keyword
(:mod:`musered.db.rawtable`) and the QC tables ``qc_{PRO_CATG}`` (:mod:`musered.qctables`).

Schema versions: 1 kept most keywords in the ``header`` JSON only; 2 has every keyword
MuseRed turns into a raw column as a real column, ``reduced.warnings``, ``gto_logs`` and
``qc_info``. A version-1 database is migrated in place when opened
(:mod:`musered.db.migrate`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 2


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    """One row holding the schema version the database was created with."""

    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class Raw(Base):
    """One row per raw file (or archive-delivered calibration product) in ``raw_path``."""

    __tablename__ = "raw"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True, index=True)
    filename: Mapped[str] = mapped_column(String(255), index=True)
    file_size: Mapped[int | None] = mapped_column(Integer)
    file_mtime: Mapped[float | None] = mapped_column(Float)
    ARCFILE: Mapped[str | None] = mapped_column(String(255))
    night: Mapped[str | None] = mapped_column(String(10), index=True)
    run: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(64), index=True)
    DATE_OBS: Mapped[dt.datetime | None] = mapped_column(DateTime)
    MJD_OBS: Mapped[float | None] = mapped_column(Float)
    EXPTIME: Mapped[float | None] = mapped_column(Float)
    OBJECT: Mapped[str | None] = mapped_column(String(255), index=True)
    OBJECT_ORIG: Mapped[str | None] = mapped_column(String(255))
    DPR_CATG: Mapped[str | None] = mapped_column(String(32))
    DPR_TYPE: Mapped[str | None] = mapped_column(String(64), index=True)
    DPR_TECH: Mapped[str | None] = mapped_column(String(32))
    PRO_CATG: Mapped[str | None] = mapped_column(String(64), index=True)
    TPL_START: Mapped[str | None] = mapped_column(String(32), index=True)
    TPL_ID: Mapped[str | None] = mapped_column(String(64))
    INS_MODE: Mapped[str | None] = mapped_column(String(32))
    INS_TEMP7_VAL: Mapped[float | None] = mapped_column(Float)
    # The other keywords MuseRed makes raw columns of (its RAW_FITS_KEYWORDS)
    ORIGFILE: Mapped[str | None] = mapped_column(String(255))
    INSTRUME: Mapped[str | None] = mapped_column(String(32))
    RA: Mapped[float | None] = mapped_column(Float)
    DEC: Mapped[float | None] = mapped_column(Float)
    INS_DROT_POSANG: Mapped[float | None] = mapped_column(Float)
    INS_TEMP4_VAL: Mapped[float | None] = mapped_column(Float)
    INS_TEMP11_VAL: Mapped[float | None] = mapped_column(Float)
    OBS_NAME: Mapped[str | None] = mapped_column(String(255))
    OBS_START: Mapped[str | None] = mapped_column(String(32))
    OBS_TARG_NAME: Mapped[str | None] = mapped_column(String(255))
    OCS_SGS_AG_FWHMX_MED: Mapped[float | None] = mapped_column(Float)
    OCS_SGS_AG_FWHMY_MED: Mapped[float | None] = mapped_column(Float)
    OCS_SGS_AG_FWHMX_RMS: Mapped[float | None] = mapped_column(Float)
    OCS_SGS_AG_FWHMY_RMS: Mapped[float | None] = mapped_column(Float)
    OCS_SGS_FWHM_MED: Mapped[float | None] = mapped_column(Float)
    OCS_SGS_FWHM_RMS: Mapped[float | None] = mapped_column(Float)
    PRO_DATANCOM: Mapped[int | None] = mapped_column(Integer)
    TEL_AIRM_START: Mapped[float | None] = mapped_column(Float)
    TEL_AIRM_END: Mapped[float | None] = mapped_column(Float)
    TEL_AMBI_WINDDIR: Mapped[float | None] = mapped_column(Float)
    TEL_AMBI_WINDSP: Mapped[float | None] = mapped_column(Float)
    TEL_MOON_RA: Mapped[float | None] = mapped_column(Float)
    TEL_MOON_DEC: Mapped[float | None] = mapped_column(Float)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    # settings.additional_keywords, keyed by their column name (ESO OBS OBSERVER -> OBS_OBSERVER);
    # each is also a real column of its own (musered.db.rawtable), this map is what the
    # catalog and info read without knowing the settings' keywords
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    header: Mapped[dict] = mapped_column(JSON, default=dict)
    ingested: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Reduced(Base):
    """One row per product file written by a recipe run."""

    __tablename__ = "reduced"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipe_name: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128), index=True)  # target: TPL_START, exposure, dataset
    PRO_CATG: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    night: Mapped[str | None] = mapped_column(String(10), index=True)
    DATE_OBS: Mapped[dt.datetime | None] = mapped_column(DateTime)
    OBJECT: Mapped[str | None] = mapped_column(String(255))
    INS_MODE: Mapped[str | None] = mapped_column(String(32))
    TPL_START: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    revision: Mapped[str | None] = mapped_column(String(32))
    date_run: Mapped[dt.datetime] = mapped_column(DateTime)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    frames: Mapped[dict] = mapped_column(JSON, default=dict)  # tag -> [{path, md5}]
    qc: Mapped[dict] = mapped_column(JSON, default=dict)
    # 'ok': usable as an input; 'missing': recorded (by an import) but its file is not on disk
    status: Mapped[str] = mapped_column(String(16), default="ok")
    runtime: Mapped[float | None] = mapped_column(Float)
    warnings: Mapped[int | None] = mapped_column(Integer)  # warnings in the run's log (MuseRed nbwarn)
    log_path: Mapped[str | None] = mapped_column(String(1024))
    output_dir: Mapped[str | None] = mapped_column(String(1024))
    ifus: Mapped[list] = mapped_column(JSON, default=list)  # IFUs the product covers (1-24)
    software: Mapped[dict] = mapped_column(JSON, default=dict)  # musered/recipes/numpy versions


class Flag(Base):
    """A quality flag on an exposure; flagged exposures are excluded by default."""

    __tablename__ = "flags"
    __table_args__ = (UniqueConstraint("name", "flag"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)  # exposure name
    flag: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    date: Mapped[dt.datetime] = mapped_column(DateTime)


class WeatherCondition(Base):
    """One row of the 'Weather observations' block of an ESO night log."""

    __tablename__ = "weather_conditions"
    __table_args__ = (UniqueConstraint("night", "time", "conditions"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    night: Mapped[str] = mapped_column(String(10), index=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime)
    conditions: Mapped[str | None] = mapped_column(String(255))
    comment: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(1024))


class Retrieved(Base):
    """A science file whose associated calibrations were all retrieved (retrieve-data).

    Written only once the science file and every file the archive's calibration selector
    associated with it are in ``raw_path``, so an interrupted retrieval resumes with the
    science files missing here.
    """

    __tablename__ = "retrieved"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dp_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    dataset: Mapped[str | None] = mapped_column(String(64))
    n_calib: Mapped[int] = mapped_column(Integer, default=0)
    date: Mapped[dt.datetime] = mapped_column(DateTime)


class GtoLog(Base):
    """MuseRed's ``gto_logs`` (observers' flags and comments of the GTO databases), kept
    with MuseRed's columns; filled by ``import-musered``."""

    __tablename__ = "gto_logs"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(64), index=True)
    ARCFILE: Mapped[str | None] = mapped_column(String(255))
    OBS_START: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[str | None] = mapped_column(String(32))
    flag: Mapped[str | None] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    date: Mapped[str | None] = mapped_column(String(32))
    author: Mapped[str | None] = mapped_column(String(255))
    fcomment: Mapped[str | None] = mapped_column(Text)
    fdate: Mapped[str | None] = mapped_column(String(32))
    fauthor: Mapped[str | None] = mapped_column(String(255))


class QcInfo(Base):
    """One row per QC table and version (MuseRed's ``qc_info``): when update-qc last filled
    ``table`` (``qc_{PRO_CATG}``) and how many rows of that version it has. ``DPR_TYPE`` is
    the product type (PRO CATG), under MuseRed's column name."""

    __tablename__ = "qc_info"
    __table_args__ = (UniqueConstraint("DPR_TYPE", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    DPR_TYPE: Mapped[str] = mapped_column(String(64))
    table: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(32))
    date_updated: Mapped[dt.datetime | None] = mapped_column(DateTime)
    nrows: Mapped[int] = mapped_column(Integer, default=0)
