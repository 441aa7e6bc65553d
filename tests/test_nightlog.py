"""Night logs (*.NL.txt) -> weather_conditions."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from musered.db import WeatherCondition
from musered.ingest import update_db
from musered.nightlog import NightlogError, ingest_nightlogs, parse_nightlog
from musered.settings import settings_from_dict

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_raw_fits  # noqa: E402

# A night report as the archive delivers it beside the raw files (tabs in the weather block).
NIGHT_LOG = (
    "--------------------------------------------------------------------------------\n"
    "                  NIGHT LOG  -  VLT UT4 (Yepun)  -  MUSE\n"
    "--------------------------------------------------------------------------------\n"
    "Date: 2017-06-15\n"
    "Night astronomer: J. Doe          Telescope operator: R. Roe\n"
    "\n"
    "Technical problems\n"
    "None.\n"
    "\n"
    "Weather observations\n"
    "Time\tConditions\tComment\n"
    "22:45\tPhotometric\tSeeing 0.6\", wind 5 m/s from NW\n"
    "23:59:30\tClear\t\n"
    "01:30\tClear\tSome thin cirrus near the horizon\n"
    "05:12:45\tThick clouds\tDome closed for humidity > 90%\n"
    "09:40\tPhotometric\n"
    "\n"
    "Observations\n"
    "01:34\t099.A-0001(A)\tIC4406 OB1 done\n"
)


def test_parse_nightlog():
    rows = parse_nightlog(NIGHT_LOG, "MUSE.2017-06-16.NL.txt")
    assert [(r.night, r.time, r.conditions, r.comment) for r in rows] == [
        ("2017-06-15", dt.datetime(2017, 6, 15, 22, 45), "Photometric", 'Seeing 0.6", wind 5 m/s from NW'),
        ("2017-06-15", dt.datetime(2017, 6, 15, 23, 59, 30), "Clear", None),
        ("2017-06-15", dt.datetime(2017, 6, 16, 1, 30), "Clear", "Some thin cirrus near the horizon"),
        ("2017-06-15", dt.datetime(2017, 6, 16, 5, 12, 45), "Thick clouds", "Dome closed for humidity > 90%"),
        ("2017-06-15", dt.datetime(2017, 6, 16, 9, 40), "Photometric", None),
    ]


def test_night_from_file_name_when_no_date_line():
    text = NIGHT_LOG.replace("Date: 2017-06-15\n", "")
    rows = parse_nightlog(text, "MUSE.2017-07-01.NL.txt")
    assert rows[0].night == "2017-07-01" and rows[0].time == dt.datetime(2017, 7, 1, 22, 45)
    assert rows[2].time == dt.datetime(2017, 7, 2, 1, 30)
    with pytest.raises(NightlogError, match="no night"):
        parse_nightlog(text, "nightlog.NL.txt")


def test_bad_logs():
    with pytest.raises(NightlogError, match="no 'Weather observations' block"):
        parse_nightlog("Date: 2017-06-15\nTechnical problems\nNone.\n", "x.NL.txt")
    with pytest.raises(NightlogError, match="empty"):
        parse_nightlog("Date: 2017-06-15\nWeather observations\nTime\tConditions\tComment\n\n", "x.NL.txt")
    with pytest.raises(NightlogError, match="header line"):
        parse_nightlog("Date: 2017-06-15\nWeather observations\n22:00\tClear\n", "x.NL.txt")
    with pytest.raises(NightlogError, match="invalid time"):
        parse_nightlog("Date: 2017-06-15\nWeather observations\nTime\tConditions\n25:00\tClear\n", "x.NL.txt")


def test_ingest_is_idempotent_and_warns(tmp_path, database):
    good = tmp_path / "MUSE.2017-06-16.NL.txt"
    good.write_text(NIGHT_LOG)
    no_block = tmp_path / "MUSE.2017-06-17.NL.txt"
    no_block.write_text("Date: 2017-06-16\nTechnical problems\nNone.\n")
    for _ in range(2):
        result = ingest_nightlogs([good, no_block], database)
        assert (result.logs, result.rows) == (1, 5)
        assert result.warnings == [(str(no_block), "no 'Weather observations' block")]
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(WeatherCondition)) == 5
    # the same log copied elsewhere does not duplicate the rows
    copy = tmp_path / "copy" / good.name
    copy.parent.mkdir()
    copy.write_text(NIGHT_LOG)
    result = ingest_nightlogs([good, copy], database)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(WeatherCondition)) == 5
        row = session.scalars(select(WeatherCondition).order_by(WeatherCondition.time)).first()
        assert (row.night, row.time, row.conditions, row.source) == (
            "2017-06-15", dt.datetime(2017, 6, 15, 22, 45), "Photometric", str(good))


def test_update_db_reads_night_logs(tmp_path, database):
    settings = settings_from_dict({"workdir": str(tmp_path)}, base_dir=tmp_path)
    write_raw_fits(settings.raw_path / "MUSE.2017-06-16T01:34:56.867.fits")
    (settings.raw_path / "logs").mkdir()
    (settings.raw_path / "logs" / "MUSE.2017-06-16.NL.txt").write_text(NIGHT_LOG)
    (settings.raw_path / "MUSE.2017-06-18.NL.txt").write_text("Date: 2017-06-17\nnothing here\n")
    report = update_db(settings, database, progress=False)
    assert (report.added, report.nightlogs, report.weather_rows) == (1, 1, 5)
    assert len(report.nightlog_warnings) == 1
    assert "skipped night log: " in report.summary() and "MUSE.2017-06-18.NL.txt" in report.summary()
    report = update_db(settings, database, progress=False)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(WeatherCondition)) == 5
