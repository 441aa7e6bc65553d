"""A MuseRed database: detected (never altered) and imported (import-musered)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

import musered_example
from musered.cli import cli
from musered.db import Database, Flag, GtoLog, QcInfo, Raw, Reduced, WeatherCondition, sqlite_url
from musered.errors import MuseredError
from musered.museredimport import import_musered
from musered.qctables import qc_table_names, read_qc
from musered.settings import load_settings

pytestmark = pytest.mark.skipif(not musered_example.available(), reason="MuseRed example material not found")


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tables_of(path) -> list[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return sorted(r[0] for r in connection.execute("SELECT name FROM sqlite_master"))
    finally:
        connection.close()


def count(database, model, *where) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def example(tmp_path):
    settings_path = musered_example.example_folder(tmp_path / "work", with_musered_db=True)
    return load_settings(settings_path)


def test_opening_a_musered_database_changes_nothing(tmp_path):
    path = tmp_path / "musered.db"
    shutil.copy(musered_example.EXAMPLE_DB, path)
    before, tables, files = md5(path), tables_of(path), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(MuseredError) as error:
        Database(sqlite_url(path))
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"{path} is a MuseRed database; musered never alters it. Import it with "
                       f"`musered import-musered` (it writes a musered database at {tmp_path / 'musered.musered.db'}) "
                       "and set `db:` to that file")
    assert md5(path) == before and tables_of(path) == tables
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no -wal / -shm left behind


def test_musered_info_in_a_musered_folder_is_one_line_and_alters_nothing(example):
    db = example.db
    before, tables = md5(db), tables_of(db)
    result = CliRunner().invoke(cli, ["--settings", str(example.path), "info"])
    assert result.exit_code == 1
    assert "is a MuseRed database; musered never alters it" in result.output
    assert "Traceback" not in result.output
    assert md5(db) == before and tables_of(db) == tables


def test_another_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE stars (id INTEGER PRIMARY KEY, name TEXT)")
    connection.commit()
    connection.close()
    before = md5(path)
    with pytest.raises(MuseredError, match="is not a musered database .*stars.*set `db:` to a new file"):
        Database(sqlite_url(path))
    assert md5(path) == before


def test_import_everything_once(example, database):
    source = example.db
    before = md5(source)
    target = database  # SQLite, and PostgreSQL when TEST_DATABASE_URL is set
    report = import_musered(source, target, example)
    assert md5(source) == before and sorted(p.name for p in source.parent.iterdir()) == [
        "musered.db", "raw", "settings.yml"]

    theirs_raw = musered_example.example_rows("raw")
    assert report.read["raw"] == report.added["raw"] == count(target, Raw) == 155
    assert report.differences == [] and report.failed == []  # same night, run and name as MuseRed
    with target.session() as session:
        ours = {r.name: r for r in session.scalars(select(Raw))}
    for theirs in theirs_raw:
        row = ours[theirs["name"]]
        assert (row.night, row.run, row.OBJECT, row.OBJECT_ORIG) == (
            theirs["night"], theirs["run"], theirs["OBJECT"], theirs["OBJECT_ORIG"])
        for column in ("TEL_AIRM_START", "INS_DROT_POSANG", "OBS_NAME", "OCS_SGS_FWHM_MED", "RA"):
            assert getattr(row, column) == theirs[column]
        assert row.path.endswith(theirs["filename"].removesuffix(".fz"))  # the file on disk
    from sqlalchemy import text

    with target.engine.connect() as conn:  # additional keywords are real columns too
        telescop = dict(conn.execute(text('SELECT name, "TELESCOP" FROM raw')).all())
    assert telescop == {t["name"]: t["TELESCOP"] for t in theirs_raw}
    # the settings' exclusion (night 2017-06-13) is decided again
    assert {r.name for r in ours.values() if r.excluded} == {t["name"] for t in theirs_raw if t["night"] == "2017-06-13"}

    records = musered_example.example_rows("reduced_0_1")
    assert report.read["reduced_0_1 → reduced"] == 126
    with target.session() as session:
        reduced = session.scalars(select(Reduced)).all()
    assert {r.status for r in reduced} == {"missing"}  # MuseRed's products are not in the example
    assert report.missing_files == len(reduced)
    assert {(r.recipe_name, r.name, r.PRO_CATG) for r in reduced} == {
        (t["recipe_name"], t["name"], t["DPR_TYPE"]) for t in records}
    flats = sorted(r.path.rsplit("/", 1)[1] for r in reduced
                   if r.PRO_CATG == "MASTER_FLAT" and r.name == "2017-06-16T12:15:46")
    assert flats == ["MASTER_FLAT.fits"]  # the file name from MuseRed's QC rows
    bias = next(r for r in reduced if r.name == "2017-06-14T09:01:03" and r.PRO_CATG == "MASTER_BIAS")
    assert (bias.version, bias.night, bias.INS_MODE, bias.params, bias.warnings, bias.TPL_START) == (
        "0.1", "2017-06-13", "WFM-NOAO-N", {"nifu": -1, "merge": True}, 0, "2017-06-14T09:01:03")
    assert bias.runtime == pytest.approx(records[0]["tottime"])
    assert bias.path == str(example.workdir / "reduced/0.1/MASTER_BIAS/2017-06-14T09:01:03.WFM-NOAO-N/MASTER_BIAS.fits")

    with target.session() as session:
        flags = set(session.execute(select(Flag.name, Flag.flag)).all())
    assert flags == {(row["name"], flag) for row in musered_example.example_rows("flags_0_1")
                     for flag, value in row.items() if flag not in ("id", "name") and value}
    assert flags == {("2017-06-16T01:40:40.868", "BAD_SLICE"), ("2017-06-16T01:40:40.868", "SLICE_GRADIENT")}
    assert count(target, WeatherCondition) == 11 and count(target, GtoLog) == 6

    qc_names = {t for t in tables_of(source) if t.startswith("qc_") and t != "qc_info"}
    assert set(qc_table_names(target)) == qc_names
    theirs_bias = musered_example.example_rows("qc_MASTER_BIAS")
    ours_bias = read_qc(target, "MASTER_BIAS", version="0.1")
    assert len(ours_bias) == len(theirs_bias) == 96
    first = next(r for r in ours_bias if r["name"] == theirs_bias[0]["name"] and r["hdu"] == theirs_bias[0]["hdu"])
    assert first["QC_BIAS_MASTER1_RON"] == theirs_bias[0]["QC_BIAS_MASTER1_RON"]
    assert first["reduced_id"] == bias.id and first["filename"] == "MASTER_BIAS.fits"
    assert len(read_qc(target, "MASTER_BIAS", names=["2017-06-14T09:01:03"])) == 24
    with target.session() as session:
        info = {(i.DPR_TYPE, i.version): i.nrows for i in session.scalars(select(QcInfo))}
    assert info[("MASTER_BIAS", "0.1")] == 96 and len(info) == len(qc_names)

    again = import_musered(source, target, example)
    assert set(again.added.values()) == {0}
    assert count(target, Raw) == 155 and count(target, Reduced) == len(reduced)
    assert len(read_qc(target, "MASTER_BIAS")) == 96
    assert md5(source) == before


def test_existing_products_are_ok_and_reused(example, tmp_path):
    folder = example.workdir / "reduced/0.1/MASTER_BIAS/2017-06-16T10:40:27.WFM-AO-N"
    folder.mkdir(parents=True)
    (folder / "MASTER_BIAS.fits").write_bytes(b"")
    target = Database(sqlite_url(tmp_path / "imported.db"))
    import_musered(example.db, target, example)
    with target.session() as session:
        found = session.scalars(select(Reduced).where(Reduced.status == "ok")).all()
    assert [(r.name, r.PRO_CATG, r.path) for r in found] == [
        ("2017-06-16T10:40:27", "MASTER_BIAS", str(folder / "MASTER_BIAS.fits"))]
    from musered.catalog import Catalog

    catalog = Catalog.from_database(target, example)
    assert [p.path for p in catalog.products] == [folder / "MASTER_BIAS.fits"]  # missing ones never used


def test_dry_run_writes_nothing(example, database):
    target = database
    report = import_musered(example.db, target, example, dry_run=True)
    assert report.added["raw"] == 155 and report.dry_run
    assert count(target, Raw) == 0 and count(target, Reduced) == 0 and qc_table_names(target) == []


def test_versions_and_errors(example, tmp_path):
    target = Database(sqlite_url(tmp_path / "imported.db"))
    with pytest.raises(MuseredError, match="version 0.7 is not in"):
        import_musered(example.db, target, example, versions=["0.7"])
    report = import_musered(example.db, target, example, versions=["0.2"])
    assert report.versions == ["0.2"] and count(target, Reduced) == 0 and count(target, Flag) == 0
    with pytest.raises(MuseredError, match="musered database already"):
        import_musered(tmp_path / "imported.db", Database("sqlite://"), example)
    with pytest.raises(MuseredError, match="no MuseRed database there"):
        import_musered(tmp_path / "nothing.db", target, example)


def test_cli_import_then_update_db_and_info(example):
    runner = CliRunner()
    base = ["--settings", str(example.path)]
    result = runner.invoke(cli, [*base, "import-musered", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would import" in result.output and "raw: 155 read, 155 added" in result.output
    target = example.db.with_name("musered.musered.db")
    assert not target.exists()
    result = runner.invoke(cli, [*base, "import-musered", "--to", str(example.db)])
    assert result.exit_code == 1 and "that is the source" in result.output
    before = md5(example.db)
    result = runner.invoke(cli, [*base, "import-musered"])
    assert result.exit_code == 0, result.output
    assert f"set `db: {target}`" in result.output and md5(example.db) == before
    text = example.path.read_text().replace("db: 'musered.db'", "db: 'musered.musered.db'")
    example.path.write_text(text)
    result = runner.invoke(cli, [*base, "update-db"])
    assert result.exit_code == 0, result.output
    assert "155 raw files" in result.output and "0 added, 155 updated" in result.output and "0 failed" in result.output
    database = Database(sqlite_url(target))
    assert count(database, Raw) == 155 and count(database, Raw, Raw.file_size.is_(None)) == 0
    assert count(database, WeatherCondition) == 11  # the night log's rows are MuseRed's rows
