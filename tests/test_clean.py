"""clean: products and records of the current version, a dry run unless --force (MuseRed's command)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from musered.clean import clean
from musered.cli import cli
from musered.db import Database
from musered.db.models import Reduced
from musered.errors import MuseredError
from musered.settings import load_settings

BIAS_15 = "2017-06-16T10:40:27"     # night 2017-06-15 (in run R1)
BIAS_17 = "2017-06-18T10:40:27"     # night 2017-06-17
EXP = "2017-06-16T01:34:56.867"     # night 2017-06-15


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path), "version": "0.1",
                                    "runs": {"R1": {"start_date": "2017-06-01", "end_date": "2017-06-15"}}}))
    settings = load_settings(path)
    database = Database(settings.database_url())
    reduced = tmp_path / "reduced"
    add(database, "muse_bias", BIAS_15, "2017-06-15", reduced / "0.1/bias" / BIAS_15, ["MASTER_BIAS"])
    add(database, "muse_bias", BIAS_17, "2017-06-17", reduced / "0.1/bias" / BIAS_17, ["MASTER_BIAS"])
    add(database, "muse_scibasic", EXP, "2017-06-15", reduced / "0.1/scibasic" / EXP,
        ["PIXTABLE_OBJECT_0001", "PIXTABLE_OBJECT_0002"])
    add(database, "scibasic_test", EXP, "2017-06-15", reduced / "0.1/scibasic_test" / EXP, ["PIXTABLE_OBJECT_0001"])
    # copied from version 0.0 (copy_reduced): the record is 0.1's, the files are 0.0's
    add(database, "muse_wavecal", BIAS_15, "2017-06-15", reduced / "0.0/wavecal" / BIAS_15, ["WAVECAL_TABLE"])
    # version 0.2: its own bias, and a record using 0.1's bias of 2017-06-17
    add(database, "muse_bias", BIAS_15, "2017-06-15", reduced / "0.2/bias" / BIAS_15, ["MASTER_BIAS"], "0.2")
    add(database, "muse_bias", BIAS_17, "2017-06-17", reduced / "0.1/bias" / BIAS_17, ["MASTER_BIAS"], "0.2",
        write=False)
    return path, settings, database, reduced


def add(database, recipe, name, night, folder: Path, tags, version="0.1", write=True) -> None:
    if write:
        folder.mkdir(parents=True)
        (folder / "log.txt").write_text("log\n")
    with database.session() as session:
        for tag in tags:
            if write:
                (folder / f"{tag}.fits").write_bytes(b"x")
            session.add(Reduced(recipe_name=recipe, name=name, PRO_CATG=tag, path=str(folder / f"{tag}.fits"),
                                night=night, version=version, date_run=dt.datetime(2026, 1, 1),
                                log_path=str(folder / "log.txt")))


def records(database, version="0.1") -> list[tuple[str, str]]:
    with database.session() as session:
        rows = session.execute(select(Reduced.recipe_name, Reduced.name).where(Reduced.version == version)).all()
    return sorted({(r, n) for r, n in rows})


def invoke(settings_path: Path, *args: str):
    result = CliRunner().invoke(cli, ["--settings", str(settings_path), *args])
    assert "Traceback" not in result.output
    return result


def test_dry_run_by_default_removes_nothing(project):
    settings_path, settings, database, reduced = project
    before = records(database)
    result = invoke(settings_path, "clean")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Dry run (use --force to remove): nothing is removed"
    assert f"Would remove {reduced / '0.1/bias' / BIAS_15}" in lines
    assert f"Would remove {reduced / '0.1/scibasic' / EXP}" in lines
    assert lines[-1] == ("Would remove 6 records (3 exposures/nights; muse_bias, muse_scibasic, muse_wavecal, "
                         "scibasic_test) of version 0.1 from the database")
    assert records(database) == before and (reduced / "0.1/bias" / BIAS_15 / "MASTER_BIAS.fits").is_file()


def test_force_removes_the_selected_folders_and_records_only(project):
    settings_path, settings, database, reduced = project
    result = invoke(settings_path, "clean", "-r", "bias", "-n", "R1", "--force")   # step name, run
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"Removed {reduced / '0.1/bias' / BIAS_15}",
                                          "Removed 1 record (1 exposures/nights; muse_bias) of version 0.1 "
                                          "from the database"]
    assert not (reduced / "0.1/bias" / BIAS_15).exists()
    assert ("muse_bias", BIAS_15) not in records(database) and ("muse_bias", BIAS_17) in records(database)
    assert (reduced / "0.2/bias" / BIAS_15 / "MASTER_BIAS.fits").is_file()              # other version
    assert records(database, "0.2") == [("muse_bias", BIAS_15), ("muse_bias", BIAS_17)]


def test_date_glob_and_keep_files(project):
    settings_path, settings, database, reduced = project
    report = clean(settings, database, dates=["2017-06-16T01:3*"], remove_files=False, force=True)
    assert report.records == 3 and report.recipes == ["muse_scibasic", "scibasic_test"]
    assert (reduced / "0.1/scibasic" / EXP / "PIXTABLE_OBJECT_0001.fits").is_file()
    assert [r for r, n in records(database) if n == EXP] == []


def test_files_of_other_versions_stay_on_disk(project):
    settings_path, settings, database, reduced = project
    # the copied 0.0 wavecal: only its record goes
    report = clean(settings, database, recipes=["wavecal"], force=True)
    assert report.folders == [] and report.records == 1
    assert report.kept == [(reduced / "0.0/wavecal" / BIAS_15,
                            f"outside reduced_path {reduced / '0.1'} (another version's products)")]
    assert (reduced / "0.0/wavecal" / BIAS_15 / "WAVECAL_TABLE.fits").is_file()
    # 0.1's bias of 2017-06-17 is used by a 0.2 record: kept
    report = clean(settings, database, recipes=["muse_bias"], nights=["2017-06-17"], force=True)
    assert report.kept == [(reduced / "0.1/bias" / BIAS_17, "other records use products in it")]
    assert (reduced / "0.1/bias" / BIAS_17 / "MASTER_BIAS.fits").is_file()
    assert ("muse_bias", BIAS_17) not in records(database) and ("muse_bias", BIAS_17) in records(database, "0.2")


def test_redversion_cleans_that_version(project):
    settings_path, settings, database, reduced = project
    result = invoke(settings_path, "--redversion", "0.2", "clean", "-d", BIAS_15, "--force")
    assert result.exit_code == 0, result.output
    assert records(database, "0.2") == [("muse_bias", BIAS_17)]
    assert not (reduced / "0.2/bias" / BIAS_15).exists() and (reduced / "0.1/bias" / BIAS_15).exists()
    assert ("muse_bias", BIAS_15) in records(database)


def test_errors_are_one_line(project):
    settings_path, settings, database, reduced = project
    with pytest.raises(MuseredError, match=r"^--recipe 'twilight': no products of that recipe in this version "
                                           r"\(recorded: muse_bias, muse_scibasic, muse_wavecal, scibasic_test\)"):
        clean(settings, database, recipes=["twilight"])
    result = invoke(settings_path, "clean", "-n", "2019-01-01")
    assert result.exit_code == 1
    assert result.output.startswith("Error: --night 2019-01-01: no products of version 0.1 match it")
    assert len(result.output.strip().splitlines()) == 1


def test_recipe_names_as_museRed_wrote_them():
    from musered.clean import resolve_recipes

    recorded = ["muse_bias", "muse_scipost_make_cube", "muse_scibasic", "scibasic_test"]
    assert resolve_recipes(["bias"], recorded) == ["muse_bias"]                          # step and short name
    assert resolve_recipes(["scipost_make_cube"], recorded) == ["muse_scipost_make_cube"]  # MuseRed's short name
    assert resolve_recipes(["makecube", "scibasic_test"], recorded) == ["muse_scipost_make_cube", "scibasic_test"]
    with pytest.raises(MuseredError, match="--recipe 'make_cube'"):
        resolve_recipes(["make_cube"], recorded)
