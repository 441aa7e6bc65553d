"""update-db: header reading, derived columns, incremental runs, bad files, concurrency."""

from __future__ import annotations

import datetime as dt
import doctest
import gzip
import multiprocessing
import os
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from click.testing import CliRunner
from sqlalchemy import func, select

import musered.ingest
import musered.rawrows
import musered.nights
from musered.cli import cli
from musered.db import Database, Raw
from musered.errors import MuseredError
from musered.fitsheader import read_primary_values
from musered.ingest import update_db
from musered.rawrows import keyword_column
from musered.nights import exposure_name, format_timestamp, night_of, parse_date_obs
from musered.settings import settings_from_dict
from recipes.io.fitsblocks import HeaderError, parse_cards

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_raw_fits  # noqa: E402


def test_doctests():
    for module in (musered.nights, musered.rawrows):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module


# --------------------------------------------------------------------------------------
# Nights and names


@pytest.mark.parametrize(
    "date_obs, cutoff, night",
    [
        ("2017-06-16T01:34:56", "20:40", "2017-06-15"),  # science after midnight UT
        ("2017-06-15T23:10:00", "20:40", "2017-06-15"),  # science before midnight UT
        ("2017-06-16T10:40:27", "20:40", "2017-06-15"),  # morning calibrations
        ("2017-06-16T18:00:00", "20:40", "2017-06-15"),  # afternoon calibrations
        ("2017-06-15T20:40:00", "20:40", "2017-06-15"),  # exactly at the cutoff: this night
        ("2017-06-15T20:39:59.999", "20:40", "2017-06-14"),  # just before: the night before
        ("2017-06-15T22:50:00", "20:40", "2017-06-15"),  # evening twilight
        ("2017-01-01T05:00:00", "20:40", "2016-12-31"),  # across a year boundary
        ("2016-03-01T05:00:00", "20:40", "2016-02-29"),  # leap day
        ("2017-06-15T19:00:00", "18:00", "2017-06-15"),  # another cutoff
        ("2017-06-15T17:59:00", "18:00", "2017-06-14"),
    ],
)
def test_night_of(date_obs, cutoff, night):
    assert night_of(dt.datetime.fromisoformat(date_obs), dt.time.fromisoformat(cutoff)) == night


def test_night_of_aware_datetime_is_converted_to_utc():
    chile = dt.timezone(dt.timedelta(hours=-4))
    # 2017-06-15 22:00 local = 2017-06-16 02:00 UT -> night 2017-06-15
    assert night_of(dt.datetime(2017, 6, 15, 22, 0, tzinfo=chile)) == "2017-06-15"


def test_exposure_names():
    date_obs = dt.datetime(2017, 6, 16, 1, 34, 56, 867000)
    assert exposure_name("MUSE.2017-06-16T01:34:56.867.fits.fz", None) == "2017-06-16T01:34:56.867"
    assert exposure_name("M.MUSE.2017-06-16T01:34:56.867.fits", None) == "2017-06-16T01:34:56.867"
    # the file name wins over DATE-OBS (they differ in the last digit in real data)
    assert exposure_name("MUSE.2017-06-16T01:34:56.868.fits", date_obs) == "2017-06-16T01:34:56.868"
    assert exposure_name("renamed.fits", date_obs) == "2017-06-16T01:34:56.867"
    assert exposure_name("renamed.fits", None) is None
    assert format_timestamp(dt.datetime(2017, 6, 16, 1, 34, 56)) == "2017-06-16T01:34:56.000"
    assert format_timestamp(dt.datetime(2017, 6, 16, 23, 59, 59, 999700)) == "2017-06-17T00:00:00.000"


def test_parse_date_obs():
    assert parse_date_obs("2017-06-16T01:34:56.8674321") == dt.datetime(2017, 6, 16, 1, 34, 56, 867432)
    assert parse_date_obs("2017-06-16") == dt.datetime(2017, 6, 16)
    assert parse_date_obs("2017-06-16T01:34:56Z") == dt.datetime(2017, 6, 16, 1, 34, 56)
    for bad in ("", "yesterday", "2017-13-01T00:00:00", 57920.06, "2017-06-16T01:34:56.x"):
        with pytest.raises(ValueError, match="DATE-OBS"):
            parse_date_obs(bad)


def test_keyword_column():
    assert keyword_column("ESO OBS OBSERVER") == "OBS_OBSERVER"
    assert keyword_column("ESO.INS.MODE") == "INS_MODE"
    assert keyword_column("ESO OBS PI-COI NAME") == "OBS_PI_COI_NAME"
    assert keyword_column("EXPTIME") == "EXPTIME"


# --------------------------------------------------------------------------------------
# The header reader


def test_reader_agrees_with_astropy(tmp_path):
    path = write_raw_fits(
        tmp_path / "MUSE.2017-06-16T01:34:56.867.fits",
        header={"ESO OBS COMMENT": "it's a long comment " * 10, "HIERARCH ESO QC X": 1.5e-12},
    )
    ours = read_primary_values(path)
    theirs = fits.getheader(path)
    keys = [k for k in theirs if k not in ("COMMENT", "HISTORY", "")]
    assert len(ours) == len(keys) > 200
    for key in keys:
        assert ours[key] == theirs[key], key
        assert type(ours[key]) is type(theirs[key]), key


def test_reader_value_types():
    cards = [
        "SIMPLE  =                    T / conforms",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "STR     = 'O''Brien  '         / quote inside",
        "SLASH   = 'a/b'                / slash inside the string",
        "FLT     =           1.2500D+03 / fortran exponent",
        "NEG     =                  -42",
        "UNDEF   =                      / no value",
        "LONG    = 'abc&'",
        "CONTINUE  'def&'",
        "CONTINUE  'ghi'",
        "HIERARCH ESO DET OUT1 GAIN = 1.1 / [e-/ADU]",
        "HIERARCH ESO INS LAMP1 ST = F",
        "HIERARCH ESO X='tight'",
        "COMMENT this is ignored",
        "STR     = 'second'             / duplicates keep the first",
    ]
    raw = "".join(card.ljust(80) for card in cards).encode()
    header = parse_cards(raw)
    assert header["STR"] == "O'Brien"
    assert header["SLASH"] == "a/b"
    assert header["FLT"] == 1250.0
    assert header["NEG"] == -42 and isinstance(header["NEG"], int)
    assert header["UNDEF"] is None
    assert header["LONG"] == "abcdefghi"
    assert header["ESO DET OUT1 GAIN"] == 1.1
    assert header["ESO INS LAMP1 ST"] is False
    assert header["ESO X"] == "tight"
    assert "COMMENT" not in header


@pytest.mark.parametrize("suffix", [".fits", ".fits.fz", ".fits.gz"])
def test_reader_suffixes(tmp_path, suffix):
    path = write_raw_fits(tmp_path / f"MUSE.2017-06-16T01:34:56.867{suffix}", kind="BIAS", data=suffix != ".fits.fz")
    header = read_primary_values(path)
    assert header["ESO DPR TYPE"] == "BIAS"
    assert header["DATE-OBS"] == "2017-06-16T01:34:56.867"


def test_reader_errors(tmp_path):
    good = write_raw_fits(tmp_path / "good.fits", data=True)
    cases = {
        "empty.fits": (b"", "empty file"),
        "login.fits": (b"<!DOCTYPE html>\n<html><head><title>ESO login</title></head></html>", "not a FITS file"),
        "binary.fits": (bytes(range(256)) * 20, "not a FITS file"),
        "cut_header.fits": (good.read_bytes()[:4000], "truncated header"),
        "cut_data.fits": (good.read_bytes()[:-2880], "truncated file"),
        "odd_size.fits": (good.read_bytes() + b"x", "truncated file"),
        "notgzip.fits.gz": (good.read_bytes(), "unreadable"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(HeaderError, match=reason):
            read_primary_values(path)
    cut_gz = tmp_path / "cut.fits.gz"
    cut_gz.write_bytes(gzip.compress(good.read_bytes()[:3000]))
    with pytest.raises(HeaderError, match="truncated header"):
        read_primary_values(cut_gz)


# --------------------------------------------------------------------------------------
# update_db


def make_settings(tmp_path: Path, **data) -> object:
    tree = {"workdir": str(tmp_path), **data}
    return settings_from_dict(tree, base_dir=tmp_path)


def raw_rows(database: Database) -> dict[str, Raw]:
    with database.session() as session:
        return {row.filename: row for row in session.scalars(select(Raw))}


def populate(raw: Path) -> None:
    """One night of files: a bias sequence, a flat, two science exposures, a product."""
    for i in range(3):
        write_raw_fits(raw / f"MUSE.2017-06-16T10:40:{27 + 2 * i:02d}.{100 + i}.fits.fz", kind="BIAS",
                       TPL_START="2017-06-16T10:40:27")
    write_raw_fits(raw / "cal" / "MUSE.2017-06-16T11:02:03.456.fits.gz", kind="FLAT")
    write_raw_fits(raw / "MUSE.2017-06-16T01:34:56.867.fits", kind="OBJECT", OBJECT="IC4406")
    write_raw_fits(raw / "MUSE.2017-06-16T02:10:00.000.fits", kind="OBJECT", OBJECT="IC4406-mosaic-2",
                   OBS_OBSERVER="Jane Doe")
    product = raw / "M.MUSE.2017-06-10T12:00:00.000.fits"
    write_raw_fits(product, kind="BIAS", header={
        "ESO DPR CATG": None, "ESO DPR TYPE": None, "ESO DPR TECH": None,
        "ESO PRO CATG": "GEOMETRY_TABLE", "OBJECT": "GEOMETRY_TABLE", "ESO INS MODE": None,
    })


@pytest.fixture
def settings(tmp_path):
    return make_settings(
        tmp_path,
        datasets={"IC4406": {"OBJECT": ["IC4406", "IC4406-mosaic-2"]}},
        runs={"GTO17": {"start_date": "2017-06-01", "end_date": "2017-06-30"}},
        additional_keywords=["ESO OBS OBSERVER"],
    )


def test_update_db_columns(settings, database):
    populate(settings.raw_path)
    report = update_db(settings, database, progress=False)
    assert (report.added, report.updated, report.skipped, report.failed) == (7, 0, 0, [])
    rows = raw_rows(database)
    sci = rows["MUSE.2017-06-16T01:34:56.867.fits"]
    assert sci.path == str(settings.raw_path / sci.filename)
    assert (sci.night, sci.run, sci.name) == ("2017-06-15", "GTO17", "2017-06-16T01:34:56.867")
    assert (sci.OBJECT, sci.OBJECT_ORIG) == ("IC4406", "IC4406")
    assert (sci.DPR_CATG, sci.DPR_TYPE, sci.DPR_TECH) == ("SCIENCE", "OBJECT", "IFU")
    assert sci.DATE_OBS == dt.datetime(2017, 6, 16, 1, 34, 56, 867000)
    assert sci.EXPTIME == 600.0 and sci.INS_MODE == "WFM-NOAO-N" and sci.INS_TEMP7_VAL == 12.34
    assert sci.ARCFILE == sci.filename and sci.PRO_CATG is None and sci.excluded is False
    assert sci.header["ESO TEL AIRM START"] == 1.065
    assert sci.extra == {"OBS_OBSERVER": "UNKNOWN"}
    mosaic = rows["MUSE.2017-06-16T02:10:00.000.fits"]
    assert (mosaic.OBJECT, mosaic.OBJECT_ORIG) == ("IC4406", "IC4406-mosaic-2")
    assert mosaic.extra == {"OBS_OBSERVER": "Jane Doe"}
    bias = rows["MUSE.2017-06-16T10:40:29.101.fits.fz"]
    assert (bias.night, bias.DPR_TYPE, bias.TPL_START) == ("2017-06-15", "BIAS", "2017-06-16T10:40:27")
    assert bias.name == "2017-06-16T10:40:29.101"
    assert rows["MUSE.2017-06-16T11:02:03.456.fits.gz"].DPR_TYPE == "FLAT,LAMP"
    product = rows["M.MUSE.2017-06-10T12:00:00.000.fits"]
    assert (product.PRO_CATG, product.DPR_TYPE, product.night) == ("GEOMETRY_TABLE", None, "2017-06-09")


def test_update_db_incremental_and_force(settings, database, tmp_path):
    populate(settings.raw_path)
    update_db(settings, database, progress=False)
    report = update_db(settings, database, progress=False)
    assert (report.added, report.updated, report.skipped) == (0, 0, 7)

    # a changed file is re-read; a new file is added
    changed = settings.raw_path / "MUSE.2017-06-16T01:34:56.867.fits"
    write_raw_fits(changed, kind="OBJECT", OBJECT="IC4406", EXPTIME=900.0)
    os.utime(changed, (1.5e9, 1.5e9))
    write_raw_fits(settings.raw_path / "new" / "MUSE.2017-06-17T03:00:00.000.fits", OBJECT="NGC1234")
    report = update_db(settings, database, progress=False)
    assert (report.added, report.updated, report.skipped) == (1, 1, 6)
    assert raw_rows(database)[changed.name].EXPTIME == 900.0

    # settings changed: only --force recomputes the derived columns
    other = make_settings(
        tmp_path,
        datasets={"field_a": {"OBJECT": "IC4406"}, "field_b": {"OBJECT": "IC4406-mosaic-2"}},
        runs={"P99": {"start_date": "2017-06-01", "end_date": "2017-06-30"}},
    )
    update_db(other, database, progress=False)
    assert raw_rows(database)[changed.name].OBJECT == "IC4406"
    report = update_db(other, database, force=True, progress=False)
    assert (report.added, report.updated, report.skipped) == (0, 8, 0)
    rows = raw_rows(database)
    assert (rows[changed.name].OBJECT, rows[changed.name].run) == ("field_a", "P99")
    assert rows["MUSE.2017-06-16T02:10:00.000.fits"].OBJECT == "field_b"
    assert rows["MUSE.2017-06-16T02:10:00.000.fits"].extra == {}
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Raw)) == 8


def test_update_db_exclusions(tmp_path, database):
    settings = make_settings(
        tmp_path,
        additional_keywords=["ESO OBS OBSERVER"],
        frames={"exclude": {"raw": [
            {"DPR_TYPE": "BIAS", "TPL_START": "2017-06-16T10:40:27"},  # both must match
            {"night": ["2017-06-20", "2017-06-21"]},
            {"OBS_OBSERVER": "Bad Night"},  # an additional keyword
            {"EXPTIME": 42},  # numbers compare as numbers
            {"filename": "MUSE.2017-06-25T01:00:00.000.fits"},
        ]}},
    )
    raw = settings.raw_path
    write_raw_fits(raw / "MUSE.2017-06-16T10:40:27.000.fits", kind="BIAS", TPL_START="2017-06-16T10:40:27")
    write_raw_fits(raw / "MUSE.2017-06-17T10:40:27.000.fits", kind="BIAS", TPL_START="2017-06-17T10:40:27")
    write_raw_fits(raw / "MUSE.2017-06-21T01:00:00.000.fits")
    write_raw_fits(raw / "MUSE.2017-06-22T01:00:00.000.fits", OBS_OBSERVER="Bad Night")
    write_raw_fits(raw / "MUSE.2017-06-23T01:00:00.000.fits", EXPTIME=42.0)
    write_raw_fits(raw / "MUSE.2017-06-24T01:00:00.000.fits")
    write_raw_fits(raw / "MUSE.2017-06-25T01:00:00.000.fits")
    report = update_db(settings, database, progress=False)
    assert report.excluded == 5
    excluded = {name for name, row in raw_rows(database).items() if row.excluded}
    assert excluded == {
        "MUSE.2017-06-16T10:40:27.000.fits", "MUSE.2017-06-21T01:00:00.000.fits",
        "MUSE.2017-06-22T01:00:00.000.fits", "MUSE.2017-06-23T01:00:00.000.fits",
        "MUSE.2017-06-25T01:00:00.000.fits",
    }


def test_update_db_bad_files_are_reported_not_ingested(settings, database):
    raw = settings.raw_path
    good = write_raw_fits(raw / "MUSE.2017-06-16T01:34:56.867.fits", data=True)
    (raw / "MUSE.2017-06-16T02:00:00.000.fits").write_text(
        "<!DOCTYPE html><html><body>Please log in to the ESO portal</body></html>"
    )
    (raw / "MUSE.2017-06-16T03:00:00.000.fits").write_bytes(good.read_bytes()[:-1000])
    (raw / "MUSE.2017-06-16T04:00:00.000.fits.fz").write_bytes(b"")
    write_raw_fits(raw / "nodate.fits", header={"DATE-OBS": None})
    write_raw_fits(raw / "baddate.fits", header={"DATE-OBS": "tonight"})
    write_raw_fits(raw / "other.fits", header={"ESO DPR CATG": None, "ESO DPR TYPE": None, "ESO DPR TECH": None,
                                               "INSTRUME": "FORS2", "ARCFILE": "FORS2.2017-06-16T05:00:00.000.fits"})
    report = update_db(settings, database, progress=False)
    assert report.added == 1
    reasons = {Path(path).name: reason for path, reason in report.failed}
    assert reasons == {
        "MUSE.2017-06-16T02:00:00.000.fits": "not a FITS file (starts with '<!DOCTYPE html><html><body>Ple...')",
        "MUSE.2017-06-16T03:00:00.000.fits": reasons["MUSE.2017-06-16T03:00:00.000.fits"],
        "MUSE.2017-06-16T04:00:00.000.fits.fz": "empty file",
        "nodate.fits": "no DATE-OBS in the primary header",
        "baddate.fits": "DATE-OBS 'tonight' is not an ISO date",
        "other.fits": "no ESO DPR keywords nor ESO PRO CATG, and not a MUSE archive file: "
                      "not a MUSE raw file or product",
    }
    assert reasons["MUSE.2017-06-16T03:00:00.000.fits"].startswith("truncated file")
    assert set(raw_rows(database)) == {good.name}
    summary = report.summary()
    assert "1 added" in summary and "6 failed" in summary
    assert "failed: " + str(raw / "nodate.fits") + ": no DATE-OBS" in summary

    # a known file that gets corrupted loses its row
    good.write_bytes(b"<html>gone</html>")
    report = update_db(settings, database, progress=False)
    assert raw_rows(database) == {}
    assert len(report.failed) == 7


def test_update_db_missing_raw_path(tmp_path, database):
    settings = make_settings(tmp_path, raw_path=str(tmp_path / "nowhere"))
    with pytest.raises(MuseredError, match="raw_path .*nowhere does not exist"):
        update_db(settings, database, progress=False)


def test_update_db_progress_bar_runs(settings, database):
    for i in range(60):
        write_raw_fits(settings.raw_path / f"MUSE.2017-06-16T01:{i:02d}:00.000.fits")
    report = update_db(settings, database, progress=True)
    assert report.added == 60


def test_update_db_removed_files_are_reported(settings, database):
    a = write_raw_fits(settings.raw_path / "MUSE.2017-06-16T01:00:00.000.fits")
    write_raw_fits(settings.raw_path / "MUSE.2017-06-16T02:00:00.000.fits")
    update_db(settings, database, progress=False)
    a.unlink()
    report = update_db(settings, database, progress=False)
    assert report.missing == [str(a)]
    assert "1 files in the database are no longer in raw_path" in report.summary()


def test_update_db_takes_one_compression_of_an_exposure(settings, database):
    """X.fits next to X.fits.fz is one exposure: the unpacked file is ingested, the other is
    reported; a twin appearing after its first copy was ingested takes that row's place."""
    name = "MUSE.2017-06-16T01:00:00.000"
    packed = write_raw_fits(settings.raw_path / f"{name}.fits.fz", kind="OBJECT")
    write_raw_fits(settings.raw_path / "other" / f"{name}.fits", kind="OBJECT")  # other folder: kept
    update_db(settings, database, progress=False)
    assert len(raw_rows(database)) == 2
    unpacked = write_raw_fits(settings.raw_path / f"{name}.fits", kind="OBJECT")
    report = update_db(settings, database, progress=False)
    assert report.duplicates == [(str(packed), str(unpacked))] and report.missing == []
    assert "1 files left out: another compression" in report.summary()
    with database.session() as session:
        paths = sorted(session.scalars(select(Raw.path)))
    assert paths == sorted([str(unpacked), str(settings.raw_path / "other" / f"{name}.fits")])


# --------------------------------------------------------------------------------------
# Two processes at once


def _ingest_in_process(settings_data: dict, base_dir: str, url: str, force: bool) -> None:
    settings = settings_from_dict(settings_data, base_dir=base_dir)
    database = Database(url)
    report = update_db(settings, database, force=force, progress=False)
    assert not report.failed, report.failed
    database.dispose()


@pytest.mark.parametrize("force", [False, True])
def test_two_processes_at_once(tmp_path, db_url, force):
    """Two update-db on one new database: no lost rows, no 'database is locked'."""
    data = {"workdir": str(tmp_path)}
    templates = [write_raw_fits(tmp_path / f"{kind}.fits", kind=kind).read_bytes() for kind in ("BIAS", "OBJECT")]
    for i in range(600):  # copies: many files quickly, each with its own archive name
        path = tmp_path / "raw" / f"n{i % 7}" / f"MUSE.2017-06-{10 + i % 7:02d}T0{i // 100}:{i % 60:02d}:00.{i:03d}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(templates[i % 2])
    url = db_url
    # fork: two real processes without re-importing everything (spawn where fork is absent)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    procs = [context.Process(target=_ingest_in_process, args=(data, str(tmp_path), url, force)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0, 0]
    database = Database(url)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Raw)) == 600
        assert session.scalar(select(func.count(func.distinct(Raw.path)))) == 600
    database.dispose()


# --------------------------------------------------------------------------------------
# The command


def write_settings_file(tmp_path: Path, extra: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "settings.yml"
    path.write_text(f"workdir: '{tmp_path}'\n{extra}")
    return path


def test_cli_update_db(tmp_path):
    settings_file = write_settings_file(tmp_path)
    write_raw_fits(tmp_path / "raw" / "MUSE.2017-06-16T01:34:56.867.fits")
    (tmp_path / "raw" / "login.fits").write_text("<html>login</html>")
    runner = CliRunner()
    result = runner.invoke(cli, ["--settings", str(settings_file), "update-db"])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "1 failed" in result.output
    assert "login.fits: not a FITS file" in result.output
    result = runner.invoke(cli, ["--settings", str(settings_file), "update-db"])
    assert "0 added" in result.output and "1 unchanged" in result.output
    result = runner.invoke(cli, ["--settings", str(settings_file), "update-db", "--force"])
    assert "1 updated" in result.output


def test_cli_update_db_errors_are_one_line(tmp_path):
    runner = CliRunner()
    settings_file = write_settings_file(tmp_path, "raw_path: '{workdir}/nothing'\n")
    result = runner.invoke(cli, ["--settings", str(settings_file), "update-db"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: raw_path") and "nothing" in lines[0]

    settings_file = write_settings_file(tmp_path, "db_env: MUSERED_TEST_UNSET_VARIABLE\n")
    result = runner.invoke(cli, ["--settings", str(settings_file), "update-db"],
                           env={"MUSERED_TEST_UNSET_VARIABLE": None})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "MUSERED_TEST_UNSET_VARIABLE" in lines[0]


def test_non_printable_header_and_long_values(settings, database):
    raw = settings.raw_path
    good = write_raw_fits(raw / "MUSE.2017-06-16T01:00:00.000.fits")
    data = bytearray(good.read_bytes())
    data[200] = 0  # a NUL inside the header: PostgreSQL would refuse it in a text column
    (raw / "MUSE.2017-06-16T02:00:00.000.fits").write_bytes(bytes(data))
    long_object = "A very long OBJECT name " * 15  # 360 characters through CONTINUE cards
    write_raw_fits(raw / "MUSE.2017-06-16T03:00:00.000.fits", OBJECT=long_object)
    report = update_db(settings, database, progress=False)
    assert report.failed == [(str(raw / "MUSE.2017-06-16T02:00:00.000.fits"),
                              "not a FITS file (non-printable bytes in the header)")]
    row = raw_rows(database)["MUSE.2017-06-16T03:00:00.000.fits"]
    assert row.OBJECT_ORIG == long_object.rstrip()[:255]
    assert row.header["OBJECT"] == long_object.rstrip()


def test_a_row_the_database_rejects_does_not_lose_the_batch(settings, database, monkeypatch):
    from sqlalchemy.exc import DataError

    for i in range(5):
        write_raw_fits(settings.raw_path / f"MUSE.2017-06-16T01:00:0{i}.000.fits")
    bad = str(settings.raw_path / "MUSE.2017-06-16T01:00:02.000.fits")
    real_upsert = musered.ingest._upsert

    def picky_upsert(db, rows, table):
        if any(row["path"] == bad for row in rows):
            raise DataError("INSERT", {}, Exception("value too long for type character varying(64)"))
        real_upsert(db, rows, table)

    monkeypatch.setattr(musered.ingest, "_upsert", picky_upsert)
    report = update_db(settings, database, progress=False)
    assert report.added == 4
    assert report.failed == [(bad, "rejected by the database: value too long for type character varying(64)")]
    assert len(raw_rows(database)) == 4


def test_make_raw_fits_helper(tmp_path, make_raw_fits):
    """The shared fixture: kind follows DPR_TYPE; ESO keywords by underscore names."""
    flat = read_primary_values(make_raw_fits(tmp_path / "a.fits", DPR_TYPE="FLAT,LAMP", TEL_AIRM_START=1.5))
    assert (flat["ESO DPR CATG"], flat["ESO TPL ID"], flat["ESO TEL AIRM START"]) == (
        "CALIB", "MUSE_wfm_cal_specflat", 1.5)
    lsf = read_primary_values(make_raw_fits(tmp_path / "b.fits", DPR_TYPE="WAVE,LSF"))
    assert (lsf["ESO DPR CATG"], lsf["OBJECT"]) == ("CALIB", "WAVE,LSF")
    sci = read_primary_values(make_raw_fits(tmp_path / "MUSE.2017-06-18T03:04:05.678.fits"))
    assert (sci["ESO DPR TYPE"], sci["DATE-OBS"]) == ("OBJECT", "2017-06-18T03:04:05.678")
    assert sci["MJD-OBS"] == pytest.approx(57922.127843, abs=1e-6)


def test_cli_update_db_and_info_through_db_env(tmp_path, db_url):
    settings_file = write_settings_file(tmp_path / "work", "db_env: MUSERED_TEST_DB_URL\n")
    write_raw_fits(tmp_path / "work" / "raw" / "MUSE.2017-06-16T01:34:56.867.fits", OBJECT="NGC300")
    runner = CliRunner(env={"MUSERED_TEST_DB_URL": db_url})
    result = runner.invoke(cli, ["--settings", str(settings_file), "update-db"])
    assert result.exit_code == 0 and "1 added" in result.output, result.output
    result = runner.invoke(cli, ["--settings", str(settings_file), "info", "--raw", "OBJECT=NGC300"])
    assert result.exit_code == 0 and "MUSE.2017-06-16T01:34:56.867.fits" in result.output, result.output
    assert not (tmp_path / "work" / "musered.db").exists()


# --------------------------------------------------------------------------------------
# MuseRed's raw columns and its example set


def test_musered_keywords_and_additional_keywords_are_real_columns(settings, database):
    from sqlalchemy import inspect, text

    populate(settings.raw_path)
    update_db(settings, database, progress=False)
    sci = raw_rows(database)["MUSE.2017-06-16T01:34:56.867.fits"]
    assert (sci.TEL_AIRM_START, sci.RA, sci.DEC, sci.INSTRUME) == (1.065, 215.609, -44.151, "MUSE")
    with database.engine.connect() as conn:  # the SQL a MuseRed user writes
        names = conn.execute(text('SELECT name FROM raw WHERE "OBS_OBSERVER" = :who'), {"who": "Jane Doe"}).all()
        airmass = conn.execute(text('SELECT count(*) FROM raw WHERE "TEL_AIRM_START" > 1.0')).scalar()
    assert names == [("2017-06-16T02:10:00.000",)] and airmass >= 2

    # a keyword added to the settings later: its column is made and filled without re-reading
    more = make_settings(settings.workdir, additional_keywords=["ESO OBS OBSERVER", "TELESCOP", "ESO INS LAMP1 ST"])
    report = update_db(more, database, progress=False)
    assert report.skipped == 7
    with database.engine.connect() as conn:  # (PostgreSQL folds unquoted names to lower case)
        rows = dict(conn.execute(text('SELECT filename, "TELESCOP" FROM raw')).all())
    assert rows["MUSE.2017-06-16T01:34:56.867.fits"] == "ESO-VLT-U4"
    assert {c["name"]: str(c["type"]) for c in inspect(database.engine).get_columns("raw")}["TELESCOP"] == "TEXT"


def test_exclusion_on_a_musered_column(tmp_path, database):
    settings = make_settings(tmp_path, frames={"exclude": {"raw": [{"OBS_NAME": "bad-OB*"}]}})
    write_raw_fits(settings.raw_path / "MUSE.2017-06-16T01:00:00.000.fits", header={"ESO OBS NAME": "bad-OB-1"})
    write_raw_fits(settings.raw_path / "MUSE.2017-06-16T02:00:00.000.fits", header={"ESO OBS NAME": "good-OB"})
    report = update_db(settings, database, progress=False)
    assert report.excluded == 1
    assert {n: r.excluded for n, r in raw_rows(database).items()} == {
        "MUSE.2017-06-16T01:00:00.000.fits": True, "MUSE.2017-06-16T02:00:00.000.fits": False}


def test_archive_files_without_dpr_nor_pro_catg_are_ingested(settings, database):
    header = {"ESO DPR CATG": None, "ESO DPR TYPE": None, "ESO DPR TECH": None, "DATE-OBS": None}
    write_raw_fits(settings.raw_path / "M.MUSE.2014-12-02T10:49:18.173.fits",
                   header={**header, "ARCFILE": "M.MUSE.2014-12-02T10:49:18.173.fits", "INSTRUME": None})
    write_raw_fits(settings.raw_path / "vignetting.fits", header={**header, "ARCFILE": None, "INSTRUME": "MUSE"})
    write_raw_fits(settings.raw_path / "fors.fits", header={**header, "ARCFILE": None, "INSTRUME": "FORS2"})
    report = update_db(settings, database, progress=False)
    assert report.added == 2 and [Path(p).name for p, _ in report.failed] == ["fors.fits"]
    row = raw_rows(database)["M.MUSE.2014-12-02T10:49:18.173.fits"]
    assert (row.DPR_TYPE, row.PRO_CATG, row.night, row.name) == (None, None, None, "2014-12-02T10:49:18.173")


@pytest.mark.skipif(not __import__("musered_example").available(), reason="MuseRed example material not found")
def test_musered_example_set_gives_musereds_raw_table(tmp_path):
    import sqlite3

    import musered_example
    from sqlalchemy import text

    from musered.settings import load_settings

    settings = load_settings(musered_example.example_folder(tmp_path / "work"))
    database = Database(settings.database_url())
    report = update_db(settings, database, progress=False)
    assert (report.added, report.failed) == (155, [])  # MuseRed's info: "155 files"
    ours = {r.name: r for r in raw_rows(database).values()}
    theirs = musered_example.example_rows("raw")
    assert len(ours) == len(theirs) == 155
    columns = [c for c in theirs[0] if c not in ("id", "path", "date_import", "DATE_OBS", "filename")]
    for row in theirs:
        mine = ours[row["name"]]
        for column in columns:
            value = getattr(mine, column, None) if column in Raw.__table__.c else mine.extra.get(column)
            expected = row[column]
            if column == "PRO_DATANCOM" and expected is not None:
                expected = int(expected)
            assert value == expected, (row["name"], column)
    # MuseRed users' SQL gives the same answers on both tables
    queries = ["SELECT name FROM raw WHERE TEL_AIRM_START > 1.07",
               "SELECT name FROM raw WHERE OCS_SGS_FWHM_MED < 0.6 AND DPR_TYPE = 'OBJECT'",
               "SELECT name FROM raw WHERE OBS_NAME = 'IC4406' AND INS_DROT_POSANG > 100",
               "SELECT name FROM raw WHERE TELESCOP = 'ESO-VLT-U4' AND INS_TEMP11_VAL < 13",
               "SELECT name FROM raw WHERE night = '2017-06-15' AND run = 'GTO17'"]
    source = sqlite3.connect(f"file:{musered_example.EXAMPLE_DB}?mode=ro&immutable=1", uri=True)
    with database.engine.connect() as conn:
        for query in queries:
            expected = sorted(r[0] for r in source.execute(query))
            assert expected and sorted(r[0] for r in conn.execute(text(query))) == expected, query
    source.close()
