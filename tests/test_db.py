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
from musered.db import SCHEMA_VERSION, Database, Raw, SchemaVersion, WeatherCondition
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
