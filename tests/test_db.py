"""The database: created on first use, schema version, SQLite pragmas, clear errors."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from click.testing import CliRunner
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from musered.cli import cli
from musered.db import SCHEMA_VERSION, Database, Raw, SchemaVersion, WeatherCondition, sqlite_url
from musered.errors import MuseredError
from musered.settings import settings_from_dict

TABLES = {"raw", "reduced", "flags", "weather_conditions", "schema_version"}


def test_tables_created_on_first_use(db_url):
    database = Database(db_url)
    assert TABLES <= set(inspect(database.engine).get_table_names())
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Raw)) == 0
    database.dispose()


def test_schema_version_row_once(db_url):
    for _ in range(3):
        database = Database(db_url)
        with database.session() as session:
            versions = session.scalars(select(SchemaVersion.version)).all()
        database.dispose()
        assert versions == [SCHEMA_VERSION]


def test_rows_round_trip_with_json(database):
    with database.session() as session:
        session.add(Raw(path="/raw/a.fits", filename="a.fits", night="2017-06-15",
                        DATE_OBS=dt.datetime(2017, 6, 16, 1, 34, 56, 867000),
                        header={"ESO DPR TYPE": "BIAS", "EXPTIME": 0.0, "ESO INS LAMP1 ST": False},
                        extra={"OBS_OBSERVER": None}))
    with database.session() as session:
        row = session.scalars(select(Raw)).one()
        assert row.header == {"ESO DPR TYPE": "BIAS", "EXPTIME": 0.0, "ESO INS LAMP1 ST": False}
        assert row.DATE_OBS == dt.datetime(2017, 6, 16, 1, 34, 56, 867000)
        assert row.excluded is False and row.extra == {"OBS_OBSERVER": None}


def test_unique_constraints(database):
    with database.session() as session:
        session.add(Raw(path="/raw/a.fits", filename="a.fits"))
    with pytest.raises(IntegrityError):
        with database.session() as session:
            session.add(Raw(path="/raw/a.fits", filename="a.fits"))
    when = dt.datetime(2017, 6, 15, 23, 0)
    with database.session() as session:
        session.add(WeatherCondition(night="2017-06-15", time=when, conditions="Clear"))
    with pytest.raises(IntegrityError):
        with database.session() as session:
            session.add(WeatherCondition(night="2017-06-15", time=when, conditions="Clear"))


def test_sqlite_pragmas(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'm.db'}")
    with database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
    database.dispose()


def test_database_folder_is_created(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'new' / 'deeper' / 'm.db'}")
    assert (tmp_path / "new" / "deeper" / "m.db").exists()
    database.dispose()


def test_database_folder_cannot_be_created(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(MuseredError, match="cannot create the database folder") as error:
        Database(f"sqlite:///{tmp_path / 'a_file' / 'sub' / 'm.db'}")
    assert "\n" not in str(error.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_database_folder(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(MuseredError, match="not writable") as error:
            Database(f"sqlite:///{folder / 'm.db'}")
        assert "\n" not in str(error.value)
    finally:
        folder.chmod(stat.S_IRWXU)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_database_in_a_folder_nobody_can_write(tmp_path):
    """/proc refuses new files even to root, which the permission test above cannot."""
    with pytest.raises(MuseredError, match="cannot use database .*unable to open database file") as error:
        Database("sqlite:////proc/musered-test.db")
    assert "\n" not in str(error.value)


def test_unwritable_database_folder_cli(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    settings_file = tmp_path / "settings.yml"
    settings_file.write_text(f"workdir: '{tmp_path}'\ndb: '{tmp_path}/a_file/sub/musered.db'\n")
    (tmp_path / "raw").mkdir()
    result = CliRunner().invoke(cli, ["--settings", str(settings_file), "update-db"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot create the database folder")
    assert "Traceback" not in result.output


def test_db_env_unset_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("MUSERED_TEST_DB_URL", raising=False)
    settings = settings_from_dict({"workdir": str(tmp_path), "db_env": "MUSERED_TEST_DB_URL"}, base_dir=tmp_path)
    with pytest.raises(MuseredError, match="MUSERED_TEST_DB_URL") as error:
        settings.database_url()
    assert "\n" not in str(error.value)


def test_db_env_variable_is_used(tmp_path, monkeypatch, db_url):
    monkeypatch.setenv("MUSERED_TEST_DB_URL", db_url)
    workdir = tmp_path / "work"
    settings = settings_from_dict({"workdir": str(workdir), "db_env": "MUSERED_TEST_DB_URL"}, base_dir=tmp_path)
    assert settings.database_url() == db_url
    database = Database(settings.database_url())
    assert TABLES <= set(inspect(database.engine).get_table_names())
    database.dispose()
    assert not (workdir / "musered.db").exists()  # db_env wins over db


def test_bad_url_is_one_line_error():
    with pytest.raises(MuseredError, match="cannot open database") as error:
        Database("nosuchdialect://user:secret@host/db")
    assert "secret" not in str(error.value) and "\n" not in str(error.value)


# The schema-1 tables as musered 1 created them (the others did not change).
V1_RAW = """CREATE TABLE raw ( id INTEGER NOT NULL, path VARCHAR(1024) NOT NULL, filename VARCHAR(255) NOT NULL,
 file_size INTEGER, file_mtime FLOAT, "ARCFILE" VARCHAR(255), night VARCHAR(10), run VARCHAR(64), name VARCHAR(64),
 "DATE_OBS" DATETIME, "MJD_OBS" FLOAT, "EXPTIME" FLOAT, "OBJECT" VARCHAR(255), "OBJECT_ORIG" VARCHAR(255),
 "DPR_CATG" VARCHAR(32), "DPR_TYPE" VARCHAR(64), "DPR_TECH" VARCHAR(32), "PRO_CATG" VARCHAR(64),
 "TPL_START" VARCHAR(32), "TPL_ID" VARCHAR(64), "INS_MODE" VARCHAR(32), "INS_TEMP7_VAL" FLOAT,
 excluded BOOLEAN NOT NULL, extra JSON NOT NULL, header JSON NOT NULL, ingested DATETIME, PRIMARY KEY (id),
 UNIQUE (path) )"""
V1_REDUCED = """CREATE TABLE reduced ( id INTEGER NOT NULL, recipe_name VARCHAR(64) NOT NULL, name VARCHAR(128) NOT NULL,
 "PRO_CATG" VARCHAR(64) NOT NULL, path VARCHAR(1024) NOT NULL, night VARCHAR(10), "DATE_OBS" DATETIME,
 "OBJECT" VARCHAR(255), "INS_MODE" VARCHAR(32), "TPL_START" VARCHAR(32), version VARCHAR(32) NOT NULL,
 revision VARCHAR(32), date_run DATETIME NOT NULL, params JSON NOT NULL, frames JSON NOT NULL, qc JSON NOT NULL,
 status VARCHAR(16) NOT NULL, runtime FLOAT, log_path VARCHAR(1024), output_dir VARCHAR(1024), ifus JSON NOT NULL,
 software JSON NOT NULL, PRIMARY KEY (id) )"""


def test_schema_1_database_is_migrated_in_place(tmp_path):
    import json
    import sqlite3

    path = tmp_path / "v1.db"
    connection = sqlite3.connect(path)
    connection.execute(V1_RAW)
    connection.execute(V1_REDUCED)
    connection.execute("CREATE TABLE schema_version (id INTEGER NOT NULL, version INTEGER, PRIMARY KEY (id))")
    connection.execute("INSERT INTO schema_version VALUES (1, 1)")
    header = {"ESO TEL AIRM START": 1.062, "ESO OBS NAME": "IC4406", "ESO INS DROT POSANG": 135.6,
              "RA": 215.609208, "ESO PRO DATANCOM": 3, "ESO OBS START": "2017-06-16T01:23:29"}
    connection.execute("INSERT INTO raw (path, filename, excluded, extra, header) VALUES (?, ?, 0, '{}', ?)",
                       ("/raw/a.fits", "a.fits", json.dumps(header)))
    connection.execute("INSERT INTO raw (path, filename, excluded, extra, header) VALUES ('/raw/b.fits', 'b.fits', 0,"
                       " '{}', '{}')")
    connection.commit()
    connection.close()

    database = Database(sqlite_url(path))
    with database.session() as session:
        assert session.scalars(select(SchemaVersion.version)).all() == [SCHEMA_VERSION] == [2]
        a, b = session.scalars(select(Raw).order_by(Raw.path)).all()
    assert (a.TEL_AIRM_START, a.OBS_NAME, a.INS_DROT_POSANG, a.RA, a.PRO_DATANCOM, a.OBS_START) == (
        1.062, "IC4406", 135.6, 215.609208, 3, "2017-06-16T01:23:29")
    assert (b.TEL_AIRM_START, b.OBS_NAME) == (None, None)
    columns = {c["name"] for c in inspect(database.engine).get_columns("reduced")}
    assert "warnings" in columns
    assert {"gto_logs", "qc_info"} <= set(inspect(database.engine).get_table_names())
    database.dispose()
    Database(sqlite_url(path)).dispose()  # opening again changes nothing and does not fail


def test_newer_schema_is_refused(tmp_path):
    database = Database(sqlite_url(tmp_path / "m.db"))
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 99"))
    database.dispose()
    with pytest.raises(MuseredError, match="made by a newer musered"):
        Database(sqlite_url(tmp_path / "m.db"))
