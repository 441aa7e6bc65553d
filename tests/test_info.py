"""musered info: table contents (plain data and plain-text output) and the command."""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from musered import info
from musered.cli import cli
from musered.db import Database, Flag, Reduced
from musered.errors import MuseredError
from musered.ingest import update_db
from musered.settings import settings_from_dict

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_raw_fits  # noqa: E402

SETTINGS = {
    "version": "0.3",
    "additional_keywords": ["ESO OBS OBSERVER"],
    "datasets": {"IC4406": {"OBJECT": ["IC4406", "IC4406-b"]}, "empty_field": {"OBJECT": "NOTHING"}},
    "runs": {"GTO17": {"start_date": "2017-06-01", "end_date": "2017-06-15"},
             "GTO18": {"start_date": "2017-06-16", "end_date": "2017-06-30"}},
    "frames": {"exclude": {"raw": [{"TPL_START": "2017-06-17T10:40:27"}], "MASTER_FLAT": ["2017-06-17T11:40:00"]}},
}


def populate(raw: Path) -> None:
    """Nights 2017-06-15 and 2017-06-16: a bias sequence, a flat, two science frames each."""
    for day in (16, 17):
        for i in range(3):
            write_raw_fits(raw / f"MUSE.2017-06-{day}T10:40:{27 + i}.000.fits", kind="BIAS",
                           TPL_START=f"2017-06-{day}T10:40:27")
        write_raw_fits(raw / f"MUSE.2017-06-{day}T11:40:00.000.fits", kind="FLAT")
        write_raw_fits(raw / f"MUSE.2017-06-{day}T01:40:00.000.fits", OBJECT="IC4406-b",
                       OBS_OBSERVER="Jane Doe" if day == 16 else "John Roe")
        write_raw_fits(raw / f"MUSE.2017-06-{day}T02:40:00.000.fits", OBJECT="NGC300")


def add_products(database: Database) -> None:
    now = dt.datetime(2024, 1, 1)

    def product(recipe, name, catg, night, path):
        return Reduced(recipe_name=recipe, name=name, PRO_CATG=catg, path=path, night=night,
                       version="0.3", date_run=now)

    with database.session() as session:
        session.add_all([
            product("muse_bias", "2017-06-16T10:40:27", "MASTER_BIAS", "2017-06-15", "/r/b1.fits"),
            product("muse_flat", "2017-06-16T11:40:00", "MASTER_FLAT", "2017-06-15", "/r/f1.fits"),
            product("muse_flat", "2017-06-16T11:40:00", "TRACE_TABLE", "2017-06-15", "/r/f2.fits"),
            product("muse_bias", "2017-06-17T10:40:27", "MASTER_BIAS", "2017-06-16", "/r/b2.fits"),
            product("muse_scibasic", "2017-06-16T01:40:00.000", "PIXTABLE_OBJECT", "2017-06-15", "/r/s1.fits"),
            product("muse_scibasic", "2017-06-16T01:40:00.000", "PIXTABLE_OBJECT", "2017-06-15", "/r/s2.fits"),
            product("muse_scipost", "2017-06-16T01:40:00.000", "DATACUBE_FINAL", "2017-06-15", "/r/c1.fits"),
            product("muse_exp_combine", "IC4406", "DATACUBE_FINAL", None, "/r/comb.fits"),
        ])
        session.add(Flag(name="2017-06-17T01:40:00.000", flag="BAD_SEEING", comment="2 arcsec", date=now))
        session.add(Flag(name="2017-06-17T01:40:00.000", flag="SHORT", comment=None, date=now))


@pytest.fixture
def setup(tmp_path, database):
    settings = settings_from_dict({"workdir": str(tmp_path), **SETTINGS}, base_dir=tmp_path)
    populate(settings.raw_path)
    update_db(settings, database, progress=False)
    add_products(database)
    return settings, database


def test_overview_datasets_runs(setup):
    settings, database = setup
    lines = info.overview_lines(settings, database)
    assert lines[0] == "Reduction version 0.3 (revision 1)"
    assert lines[1] == "12 raw files (3 excluded), 8 processed products"
    datasets = info.datasets_table(settings, database)
    assert datasets.rows == [["IC4406", "IC4406, IC4406-b", "2", "2"], ["empty_field", "NOTHING", "--", "--"]]
    runs = info.runs_table(settings, database)
    assert runs.rows == [["GTO17", "2017-06-01", "2017-06-15", "2", "1"],
                         ["GTO18", "2017-06-16", "2017-06-30", "2", "1"]]


def test_nights_table(setup):
    _, database = setup
    table = info.nights_table(database)
    # calibrations by DPR TYPE in plan order, then science by (mapped) OBJECT
    assert table.columns == ["night", "BIAS", "FLAT,LAMP", "IC4406", "NGC300"]
    assert table.rows == [["2017-06-15", "3", "1", "1", "1"],
                          ["2017-06-16", "--", "1", "1", "1"]]  # excluded biases not counted
    only = info.nights_table(database, info.NightFilter(frozenset({"2017-06-16"})))
    assert [row[0] for row in only.rows] == ["2017-06-16"]


def test_processed_tables(setup):
    _, database = setup
    calibs = info.calibs_table(database)
    assert calibs.columns == ["night", "muse_bias", "muse_flat"]
    # a night counts its processed sequences, not product files
    assert calibs.rows == [["2017-06-15", "1", "1"], ["2017-06-16", "1", "--"]]
    exps = info.exps_processed_table(database)
    assert exps.columns == ["name", "muse_scibasic", "muse_scipost"]
    assert exps.rows == [["2017-06-16T01:40:00.000", "2", "1"]]


def test_exposures_table_with_flags(setup):
    _, database = setup
    table = info.exposures_table(database)
    assert table.columns[:8] == ["name", "night", "OBJECT", "OBJECT_ORIG", "run", "INS_MODE", "EXPTIME", "flags"]
    assert table.column("name") == ["2017-06-16T01:40:00.000", "2017-06-16T02:40:00.000",
                                    "2017-06-17T01:40:00.000", "2017-06-17T02:40:00.000"]
    assert table.cell("2017-06-17T01:40:00.000", "flags") == "BAD_SEEING, SHORT"
    assert table.cell("2017-06-16T01:40:00.000", "flags") == "--"
    assert table.cell("2017-06-16T01:40:00.000", "OBJECT") == "IC4406"
    assert table.cell("2017-06-16T01:40:00.000", "OBJECT_ORIG") == "IC4406-b"
    assert table.cell("2017-06-16T01:40:00.000", "muse_scibasic") == "2"
    assert table.cell("2017-06-16T02:40:00.000", "muse_scipost") == "--"


def test_raw_query(setup):
    settings, database = setup
    table = info.raw_query_table(settings, database, ["DPR_TYPE=BIAS", "night=2017-06-16"])
    assert table.column("filename") == [f"MUSE.2017-06-17T10:40:{s}.000.fits" for s in (27, 28, 29)]
    assert set(table.column("excluded")) == {"yes"}
    # additional keyword, by column name or FITS spelling; repeated key = any of the values
    for term in ("OBS_OBSERVER=Jane Doe", "ESO OBS OBSERVER=Jane Doe"):
        table = info.raw_query_table(settings, database, [term])
        assert table.column("filename") == ["MUSE.2017-06-16T01:40:00.000.fits"]
    table = info.raw_query_table(settings, database, ["OBJECT=NGC300", "night=2017-06-15", "night=2017-06-16"])
    assert len(table.rows) == 2
    table = info.raw_query_table(settings, database, ["filename=*T11:40*"])
    assert len(table.rows) == 2
    table = info.raw_query_table(settings, database, ["EXPTIME=600"])
    assert len(table.rows) == 4
    with pytest.raises(MuseredError, match="unknown column 'COLOR'"):
        info.raw_query_table(settings, database, ["COLOR=blue"])
    with pytest.raises(MuseredError, match="expected KEY=VALUE"):
        info.raw_query_table(settings, database, ["night"])


def test_excluded_and_tables(setup):
    settings, database = setup
    raw, by_tag, flagged = info.excluded_tables(settings, database)
    assert len(raw.rows) == 3 and set(raw.column("TPL_START")) == {"2017-06-17T10:40:27"}
    assert by_tag.rows == [["MASTER_FLAT", "2017-06-17T11:40:00"]]
    assert flagged.rows == [["2017-06-17T01:40:00.000", "BAD_SEEING, SHORT"]]
    counts = dict(info.tables_table(database).rows)
    assert counts["raw"] == "12" and counts["reduced"] == "8" and counts["flags"] == "2"


def test_night_filter(setup):
    settings, _ = setup
    keep = info.NightFilter.from_options(settings, dates=["2017-06-20"], runs=["GTO17"])
    assert keep("2017-06-20") and keep("2017-06-01") and not keep("2017-06-16") and not keep(None)
    with pytest.raises(MuseredError, match="--run 'P100': unknown run"):
        info.NightFilter.from_options(settings, runs=["P100"])
    with pytest.raises(MuseredError, match="not a night"):
        info.NightFilter.from_options(settings, dates=["June"])


def test_render_plain_text_has_no_ansi(setup):
    _, database = setup
    out = io.StringIO()
    info.render(info.make_console(out, no_color=False), ["hello", info.nights_table(database)])
    text = out.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0] == "hello" and "Raw files per night" in lines
    assert lines[lines.index("Raw files per night") + 1].split() == ["night", "BIAS", "FLAT,LAMP", "IC4406", "NGC300"]
    assert text.split("2017-06-16", 1)[1].split("\n")[0].split() == ["--", "1", "1", "1"]


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_colour_only_on_a_terminal(setup):
    _, database = setup
    tty = _FakeTty()
    info.render(info.make_console(tty), [info.nights_table(database)])
    assert "\x1b[" in tty.getvalue()
    tty = _FakeTty()
    info.render(info.make_console(tty, no_color=True), [info.nights_table(database)])
    assert "\x1b[" not in tty.getvalue()


# --------------------------------------------------------------------------------------
# The command


@pytest.fixture
def settings_file(tmp_path):
    import yaml

    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path), **SETTINGS}))
    populate(tmp_path / "raw")
    result = CliRunner().invoke(cli, ["--settings", str(path), "update-db"])
    assert result.exit_code == 0, result.output
    return path


def run_info(settings_file, *args):
    result = CliRunner().invoke(cli, ["--settings", str(settings_file), "info", *args])
    assert "Traceback" not in result.output
    return result


def test_cli_info_default(settings_file):
    result = run_info(settings_file)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b[" not in out
    assert "Reduction version 0.3 (revision 1)" in out
    assert "12 raw files (3 excluded), 0 processed products" in out
    for title in ("Datasets", "Runs", "Raw files per night", "Processed calibrations per night",
                  "Processed exposures"):
        assert title in out.splitlines()
    assert "(no processed calibrations)" in out
    night_line = next(line for line in out.splitlines() if line.startswith("2017-06-15"))
    assert night_line.split() == ["2017-06-15", "3", "1", "1", "1"]


def test_cli_info_options(settings_file):
    out = run_info(settings_file, "--raw", "DPR_TYPE=FLAT,LAMP", "night=2017-06-15").output
    rows = [line for line in out.splitlines() if line.startswith("MUSE.")]
    assert len(rows) == 1 and rows[0].startswith("MUSE.2017-06-16T11:40:00.000.fits")
    out = run_info(settings_file, "--exps", "--no-color").output
    assert "flags" in out and "Exposures" in out.splitlines()
    assert sum(line.startswith("2017-06-1") for line in out.splitlines()) == 4
    out = run_info(settings_file, "--nights", "--run", "GTO18").output
    assert "2017-06-16" in out and "2017-06-15" not in out
    out = run_info(settings_file, "--calibs", "--date", "2017-06-16").output
    assert "Calibration sequences" in out and "2017-06-17T10:40:27" in out and "2017-06-16T10:40:27" not in out
    out = run_info(settings_file, "--excluded").output
    assert sum(line.startswith("MUSE.2017-06-17T10:40:2") for line in out.splitlines()) == 3
    out = run_info(settings_file, "--datasets", "--runs", "--tables").output
    assert "IC4406" in out and "GTO18" in out and "weather_conditions" in out


@pytest.mark.parametrize("args, message", [
    (["--raw", "COLOR=blue"], "unknown column 'COLOR'"),
    (["--run", "P100"], "--run 'P100': unknown run"),
    (["night=2017-06-15"], "KEY=VALUE terms go with --raw"),
    (["--date", "yesterday"], "not a night"),
])
def test_cli_info_errors_are_one_line(settings_file, args, message):
    result = run_info(settings_file, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
