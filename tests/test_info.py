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

    def product(recipe, name, catg, night, path, version="0.3", status="ok", **more):
        return Reduced(recipe_name=recipe, name=name, PRO_CATG=catg, path=path, night=night,
                       version=version, date_run=now, status=status, **more)

    with database.session() as session:
        session.add_all([
            product("muse_bias", "2017-06-16T10:40:27", "MASTER_BIAS", "2017-06-15", "/r/b1.fits"),
            product("muse_flat", "2017-06-16T11:40:00", "MASTER_FLAT", "2017-06-15", "/r/f1.fits"),
            product("muse_flat", "2017-06-16T11:40:00", "TRACE_TABLE", "2017-06-15", "/r/f2.fits"),
            # made from the excluded bias sequence: left out unless asked for
            product("muse_bias", "2017-06-17T10:40:27", "MASTER_BIAS", "2017-06-16", "/r/b2.fits"),
            # two files of one product type count once; a missing file is still a record
            product("muse_scibasic", "2017-06-16T01:40:00.000", "PIXTABLE_OBJECT", "2017-06-15", "/r/s1.fits"),
            product("muse_scibasic", "2017-06-16T01:40:00.000", "PIXTABLE_OBJECT", "2017-06-15", "/r/s2.fits",
                    status="missing"),
            product("muse_scipost", "2017-06-16T01:40:00.000", "DATACUBE_FINAL", "2017-06-15", "/r/c1.fits",
                    warnings=2, log_path="/r/log.txt"),
            product("muse_exp_combine", "IC4406", "DATACUBE_FINAL", None, "/r/comb.fits"),
            # the standard star is a calibration, whatever recipe ran on it
            product("muse_scibasic", "2017-06-16T03:00:00.000", "PIXTABLE_STD", "2017-06-15", "/r/std.fits"),
            # another version, and a failed run: never shown
            product("muse_bias", "2017-06-16T10:40:27", "MASTER_BIAS", "2017-06-15", "/r/old.fits", version="0.2"),
            product("muse_flat", "2017-06-16T11:40:00", "MASTER_FLAT", "2017-06-15", "/r/bad.fits", status="failed"),
        ])
        session.add(Flag(name="2017-06-17T01:40:00.000", flag="BAD_SEEING", comment="2 arcsec", date=now))
        session.add(Flag(name="2017-06-17T01:40:00.000", flag="SHORT", comment=None, date=now))


@pytest.fixture
def setup(tmp_path, database):
    settings = settings_from_dict({"workdir": str(tmp_path), **SETTINGS}, base_dir=tmp_path)
    populate(settings.raw_path)
    write_raw_fits(settings.raw_path / "MUSE.2017-06-16T03:00:00.000.fits", kind="STD")
    update_db(settings, database, progress=False)
    add_products(database)
    return settings, database


def test_overview_datasets_runs(setup):
    settings, database = setup
    lines = info.overview_lines(settings, database)
    assert lines[0] == "Reduction version 0.3 (revision 1)"
    assert lines[1] == ("13 raw files (3 excluded), 9 processed products of this version "
                        "(1 recorded with their file missing)")
    assert info.datasets(settings, database) == [
        info.DatasetSummary("IC4406", ("IC4406", "IC4406-b"), 2, 1, 2),
        info.DatasetSummary("empty_field", ("NOTHING",), 0, 0, 0),
    ]
    datasets = info.datasets_table(settings, database)
    assert datasets.rows == [["IC4406", "IC4406, IC4406-b", "2", "1", "2"],
                             ["empty_field", "NOTHING", "--", "--", "--"]]
    # science exposures only (not the standard); the flagged one counted in its run
    runs = info.runs_table(settings, database)
    assert runs.rows == [["GTO17", "2017-06-01", "2017-06-15", "2", "--", "1"],
                         ["GTO18", "2017-06-16", "2017-06-30", "2", "1", "1"]]


def test_runs_without_raw_files_are_not_listed(setup, tmp_path):
    settings, database = setup
    more = {**SETTINGS, "runs": {**SETTINGS["runs"], "P105": {"start_date": "2020-04-01", "end_date": "2020-09-30"}}}
    settings = settings_from_dict({"workdir": str(tmp_path), **more}, base_dir=tmp_path)
    update_db(settings, database, force=True, progress=False)
    assert [r.name for r in info.runs(settings, database)] == ["GTO17", "GTO18"]


def test_lists(setup):
    settings, database = setup
    assert info.nights(settings, database) == ["2017-06-15", "2017-06-16"]
    # every DPR TYPE, science included; the excluded bias sequence is gone
    assert info.calib_sequences(settings, database) == {
        "BIAS": ["2017-06-16T10:40:27"],
        "FLAT,LAMP": ["2017-06-16T11:40:00", "2017-06-17T11:40:00"],
        "OBJECT": ["2017-06-16T01:40:00", "2017-06-16T02:40:00", "2017-06-17T01:40:00", "2017-06-17T02:40:00"],
        "STD": ["2017-06-16T03:00:00"],
    }
    assert info.exposures(settings, database) == {
        "IC4406": ["2017-06-16T01:40:00.000", "2017-06-17T01:40:00.000"],
        "NGC300": ["2017-06-16T02:40:00.000", "2017-06-17T02:40:00.000"],
    }
    nights = info.nights_table(settings, database)
    assert nights.rows == [["2017-06-15", "GTO17", "7", "--"], ["2017-06-16", "GTO18", "6", "3"]]


def test_raw_data_table(setup):
    settings, database = setup
    table = info.raw_data_table(settings, database)
    # calibrations by DPR TYPE in plan order, then science by (mapped) OBJECT
    assert table.columns == ["night", "BIAS", "FLAT,LAMP", "STD", "IC4406", "NGC300"]
    assert table.rows == [["2017-06-15", "3", "1", "1", "1", "1"],
                          ["2017-06-16", "--", "1", "--", "1", "1"]]  # excluded biases not counted
    assert info.raw_data_table(settings, database, excluded=True).rows[1][1] == "3"
    only = info.raw_data_table(settings, database, info.NightFilter.from_options(settings, ["2017-06-16"]))
    assert [row[0] for row in only.rows] == ["2017-06-16"]


def test_processed_tables(setup):
    settings, database = setup
    calibs = info.processed_calibs_table(settings, database)
    # product types per night and recipe (MuseRed's counts)
    assert calibs.columns == ["night", "muse_bias", "muse_flat", "muse_scibasic"]
    assert calibs.rows == [["2017-06-15", "1", "2", "1"]]
    with_excluded = info.processed_calibs_table(settings, database, excluded=True)
    assert with_excluded.rows[1] == ["2017-06-16", "1", "--", "--"]
    science = info.processed_science_table(settings, database)
    assert science.columns == ["name", "muse_exp_combine", "muse_scibasic", "muse_scipost"]
    assert science.rows == [["2017-06-16T01:40:00.000", "--", "1", "1"], ["IC4406", "1", "--", "--"]]
    # a night selection keeps that night's records; dataset records have none
    keep = info.NightFilter.from_options(settings, ["2017-06-1*"])
    assert [r[0] for r in info.processed_science_table(settings, database, keep).rows] == ["2017-06-16T01:40:00.000"]


def test_calib_sequences_table(setup):
    settings, database = setup
    table = info.calib_sequences_table(settings, database)
    assert table.columns == ["DPR_TYPE", "TPL_START", "night", "INS_MODE", "files", "processed"]
    assert table.rows[0][:5] == ["BIAS", "2017-06-16T10:40:27", "2017-06-15", "WFM-NOAO-N", "3"]
    assert table.cell("BIAS", "processed") == "muse_bias"
    assert table.column("DPR_TYPE").count("OBJECT") == 4


def test_exposures_table_with_flags(setup):
    settings, database = setup
    table = info.exposures_table(settings, database)
    assert table.columns == ["name", "OBJECT", "night", "run", "INS_MODE", "EXPTIME", "flags",
                             "muse_scibasic", "muse_scipost"]
    # by OBJECT then name, the standard star not among them
    assert table.column("name") == ["2017-06-16T01:40:00.000", "2017-06-17T01:40:00.000",
                                    "2017-06-16T02:40:00.000", "2017-06-17T02:40:00.000"]
    assert table.cell("2017-06-17T01:40:00.000", "flags") == "BAD_SEEING, SHORT"
    assert table.cell("2017-06-16T01:40:00.000", "flags") == "--"
    assert table.cell("2017-06-16T01:40:00.000", "OBJECT") == "IC4406"
    assert table.cell("2017-06-16T01:40:00.000", "muse_scibasic") == "1"
    assert table.cell("2017-06-16T02:40:00.000", "muse_scipost") == "--"


def test_raw_query(setup):
    settings, database = setup
    table = info.raw_query_table(settings, database, ["DPR_TYPE=BIAS", "night:2017-06-16"])
    assert table.column("filename") == [f"MUSE.2017-06-17T10:40:{s}.000.fits" for s in (27, 28, 29)]
    assert set(table.column("excluded")) == {"yes"}
    # additional keyword, by column name or FITS spelling; repeated key = any of the values
    for term in ("OBS_OBSERVER=Jane Doe", "ESO OBS OBSERVER:Jane Doe"):
        table = info.raw_query_table(settings, database, [term])
        assert table.column("filename") == ["MUSE.2017-06-16T01:40:00.000.fits"]
    table = info.raw_query_table(settings, database, ["OBJECT=NGC300", "night=2017-06-15", "night=2017-06-16"])
    assert len(table.rows) == 2
    table = info.raw_query_table(settings, database, ["filename=*T11:40*"])
    assert len(table.rows) == 2
    table = info.raw_query_table(settings, database, ["TPL_START:2017-06-16T10:40:27"])
    assert len(table.rows) == 3
    table = info.raw_query_table(settings, database, ["EXPTIME=600"])
    assert len(table.rows) == 4
    assert len(info.raw_query(settings, database, ["excluded:yes"])) == 3
    with pytest.raises(MuseredError, match="unknown column 'COLOR'"):
        info.raw_query_table(settings, database, ["COLOR=blue"])
    with pytest.raises(MuseredError, match="expected KEY:VALUE"):
        info.raw_query_table(settings, database, ["night"])


def test_excluded_and_tables(setup):
    settings, database = setup
    raw, by_tag, flagged = info.excluded_tables(settings, database)
    assert len(raw.rows) == 3 and set(raw.column("TPL_START")) == {"2017-06-17T10:40:27"}
    assert all("frames.exclude" in reason for reason in raw.column("reason"))
    assert by_tag.rows == [["MASTER_FLAT", "2017-06-17T11:40:00"]]
    assert flagged.rows == [["2017-06-17T01:40:00.000", "BAD_SEEING, SHORT"]]
    counts = dict(info.tables_table(database).rows)
    assert counts["raw"] == "13" and counts["reduced"] == "11" and counts["flags"] == "2"


def test_night_filter(setup):
    settings, _ = setup
    keep = info.NightFilter.from_options(settings, dates=["2017-06-20"], runs=["GTO17"])
    assert keep("2017-06-20") and keep("2017-06-01") and not keep("2017-06-16") and not keep(None)
    keep = info.NightFilter.from_options(settings, dates=["2017-06-1*", "GTO18"])
    assert keep("2017-06-15") and keep("2017-06-29") and not keep("2017-06-01")
    with pytest.raises(MuseredError, match="--run 'P100': unknown run"):
        info.NightFilter.from_options(settings, runs=["P100"])
    with pytest.raises(MuseredError, match="not a night"):
        info.NightFilter.from_options(settings, dates=["June"])


def test_render_plain_text_has_no_ansi(setup):
    settings, database = setup
    out = io.StringIO()
    info.render(info.make_console(out, no_color=False), ["hello", info.raw_data_table(settings, database)])
    text = out.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0] == "hello" and "Raw files per night" in lines
    header = lines[lines.index("Raw files per night") + 1].split()
    assert header == ["night", "BIAS", "FLAT,LAMP", "STD", "IC4406", "NGC300"]
    assert text.split("2017-06-16", 1)[1].split("\n")[0].split() == ["--", "1", "--", "1", "1"]


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_colour_only_on_a_terminal(setup):
    settings, database = setup
    tty = _FakeTty()
    info.render(info.make_console(tty), [info.raw_data_table(settings, database)])
    assert "\x1b[" in tty.getvalue()
    tty = _FakeTty()
    info.render(info.make_console(tty, no_color=True), [info.raw_data_table(settings, database)])
    assert "\x1b[" not in tty.getvalue()


# --------------------------------------------------------------------------------------
# The command


@pytest.fixture
def settings_file(tmp_path):
    import yaml

    from musered.settings import load_settings

    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path), **SETTINGS}))
    populate(tmp_path / "raw")
    write_raw_fits(tmp_path / "raw" / "MUSE.2017-06-16T03:00:00.000.fits", kind="STD")
    result = CliRunner().invoke(cli, ["--settings", str(path), "update-db"])
    assert result.exit_code == 0, result.output
    database = Database(load_settings(str(path)).database_url())
    add_products(database)
    database.dispose()
    (tmp_path / "log.txt").write_text(
        "2024-01-01 10:00:00,001 INFO recipes.scipost: sky subtracted\n"
        "2024-01-01 10:00:01,002 WARNING recipes.scipost: 3 slices without sky\n")
    return path


def run_cli(settings_file, *args):
    result = CliRunner().invoke(cli, ["--settings", str(settings_file), *args])
    assert "Traceback" not in result.output
    return result


def run_info(settings_file, *args):
    return run_cli(settings_file, "info", *args)


def rows_of(out: str, prefix: str = "2017-") -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.startswith(prefix)]


def test_cli_info_default(settings_file):
    result = run_info(settings_file)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b[" not in out
    assert "Reduction version 0.3 (revision 1)" in out
    assert "13 raw files (3 excluded), 9 processed products of this version" in out
    for title in ("Datasets", "Runs", "Raw files per night", "Processed calibrations per night",
                  "Processed science data"):
        assert title in out.splitlines()
    night_line = next(line for line in out.splitlines() if line.startswith("2017-06-15"))
    assert night_line.split() == ["2017-06-15", "3", "1", "1", "1", "1"]
    assert ["IC4406", "1", "--", "--"] in rows_of(out, "IC4406")
    out = run_info(settings_file, "--tables", "calib", "--no-header").output
    assert "Datasets" not in out and "Raw files per night" not in out
    assert "Processed calibrations per night" in out and "Processed science data" not in out


def test_cli_info_options(settings_file):
    out = run_info(settings_file, "--raw", "DPR_TYPE=FLAT,LAMP", "night=2017-06-15").output
    rows = [line for line in out.splitlines() if line.startswith("MUSE.")]
    assert len(rows) == 1 and rows[0].startswith("MUSE.2017-06-16T11:40:00.000.fits")
    out = run_info(settings_file, "--exps", "--no-color").output
    assert "flags" in out and "Exposures" in out.splitlines()
    assert len(rows_of(out)) == 4
    out = run_info(settings_file, "--nights").output
    assert [row[0] for row in rows_of(out)] == ["2017-06-15", "2017-06-16"]
    out = run_info(settings_file, "--nights", "--run", "GTO18").output
    assert [row[0] for row in rows_of(out)] == ["2017-06-16"]
    out = run_info(settings_file, "--calibs", "--date", "2017-06-16").output
    assert "Calibration sequences" in out and "2017-06-17T11:40:00" in out
    assert "2017-06-17T10:40:27" not in out and "2017-06-16T10:40:27" not in out  # excluded; other night
    out = run_info(settings_file, "--excluded").output
    assert sum(line.startswith("MUSE.2017-06-17T10:40:2") for line in out.splitlines()) == 3
    assert ["2017-06-16", "1", "--", "--"] in rows_of(out)  # the excluded sequence's bias is counted
    out = run_info(settings_file, "--datasets", "--runs", "--tables").output
    assert "IC4406" in out and "GTO18" in out and "weather_conditions" in out


def test_cli_info_raw(settings_file):
    out = run_cli(settings_file, "info-raw", "night:2017-06-16", "DPR_TYPE:BIAS").output
    assert [line.split()[0] for line in out.splitlines() if line.startswith("MUSE.")] == [
        f"MUSE.2017-06-17T10:40:{s}.000.fits" for s in (27, 28, 29)]
    # info --raw and info-raw are one function
    assert run_info(settings_file, "--raw", "night=2017-06-16", "DPR_TYPE=BIAS").output == out
    out = run_cli(settings_file, "info-raw", "night:2017-06-20").output
    assert "(no matching raw files)" in out


def test_cli_info_exp(settings_file):
    result = run_cli(settings_file, "info-exp", "2017-06-16T01:40:00.000")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "★ Recipe: muse_scibasic" in lines and "★ Recipe: muse_scipost" in lines
    assert "- products : DATACUBE_FINAL" in lines
    assert any(line.startswith("- warnings : 2") for line in lines)
    out = run_cli(settings_file, "info-exp", "--night", "2017-06-15", "--recipe", "bias").output.splitlines()
    assert out.count("★ Recipe: muse_bias") == 1 and "★ Recipe: muse_flat" not in out
    out = run_cli(settings_file, "info-exp", "--night", "2017-06-15", "--short").output.splitlines()
    assert {"★ Recipe: muse_bias", "★ Recipe: muse_flat", "★ Recipe: muse_scipost"} <= set(out)
    out = run_cli(settings_file, "info-exp", "2017-06-16T02:40:00.000").output
    assert "no processed data in version 0.3" in out


def test_cli_info_warnings(settings_file):
    out = run_cli(settings_file, "info-warnings").output
    assert rows_of(out) == [["2017-06-16T01:40:00.000", "2"]]
    out = run_cli(settings_file, "info-warnings", "-m", "list", "-r", "scipost").output
    assert rows_of(out, "muse_") == [["muse_scipost", "2017-06-16T01:40:00.000", "2", "/r/log.txt"]]
    out = run_cli(settings_file, "info-warnings", "-m", "detail").output
    assert "muse_scipost, 2017-06-16T01:40:00.000, 2 warnings" in out and "log file not found: /r/log.txt" in out
    assert "no warnings" in run_cli(settings_file, "info-warnings", "-r", "bias").output


def test_warnings_counted_in_our_logs(setup, tmp_path):
    from musered import infowarnings

    log = tmp_path / "log.txt"
    log.write_text("2024-01-01 10:00:00,001 INFO recipes.scipost: sky subtracted\n"
                   "2024-01-01 10:00:01,002 WARNING recipes.scipost: 3 slices without sky\n"
                   "2024-01-01 10:00:02,002 ERROR recipes.scipost: IFU 5 failed\n"
                   "[ WARNING][tid=0] muse_scipost: a DRS-style warning line\n")
    assert infowarnings.warning_count({"log_path": str(log)}) == 1
    assert infowarnings.warning_count({"log_path": str(tmp_path / "none.txt")}) is None
    assert infowarnings.warning_count({"warnings": 4, "log_path": str(log)}) == 4
    assert infowarnings.log_messages(str(log))[1] == ("ERROR", "IFU 5 failed")


@pytest.mark.parametrize("args, message", [
    (["info", "--raw", "COLOR=blue"], "unknown column 'COLOR'"),
    (["info", "--run", "P100"], "--run 'P100': unknown run"),
    (["info", "night=2017-06-15"], "KEY=VALUE terms go with --raw"),
    (["info", "--date", "yesterday"], "not a night"),
    (["info", "--tables", "cubes"], "--tables 'cubes'"),
    (["info-raw", "night"], "expected KEY:VALUE"),
    (["info-exp"], "give an exposure name"),
    (["info-exp", "2017-07-*"], "info-exp 2017-07-*: no raw files"),
    (["info-exp", "--night", "2017-06-15", "-r", "cubes"], "--recipe 'cubes': unknown recipe"),
    (["info-warnings", "-d", "2018-01-01"], "-d 2018-01-01: no products of version 0.3"),
])
def test_cli_info_errors_are_one_line(settings_file, args, message):
    result = run_cli(settings_file, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
