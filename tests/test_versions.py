"""Reduction versions kept apart: each version sees only its own ``reduced`` records
(products, done-checks, association, report), old ones are reused only when copied
(``copy_reduced`` / ``musered copy-reduced``), and ``musered --redversion`` picks the
version (and ``{version}`` in reduced_path) from the command line."""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

import pytest
import yaml
from astropy.io import fits
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import select

from musered.catalog import Catalog
from musered.cli import cli
from musered.copyreduced import copy_reduced, recorded_versions
from musered.db import Raw, Reduced
from musered.errors import MuseredError
from musered.report import collect_runs
from musered.runner import run_step
from musered.settings import load_settings, settings_from_dict
from recipes.base import Calib, Param, Product, Recipe

sys.path.insert(0, str(Path(__file__).parent))
import musered_example  # noqa: E402

MODE = "WFM-NOAO-N"
TPL = "2017-06-16T10:00:00"
EXPOSURE = "2017-06-17T01:00:00.000"


def _master(frames, params, outdir):
    path = outdir / "MASTER_TEST.fits"
    fits.PrimaryHDU(header=fits.Header({"HIERARCH ESO PRO CATG": "MASTER_TEST"})).writeto(path)
    return [Product(path, "MASTER_TEST")]


def _science(frames, params, outdir):
    path = outdir / "PIXTABLE_OBJECT.fits"
    header = fits.Header({"HIERARCH ESO TEST MASTER": str(frames["MASTER_TEST"][0])})
    fits.PrimaryHDU(header=header).writeto(path)
    return [Product(path, "PIXTABLE_OBJECT")]


MASTER = Recipe(name="muse_master", inputs=("BIAS",), outputs=("MASTER_TEST",), calibs=(),
                params=(Param("scale", float, 1.0, "a parameter"),), run=_master)
SCIENCE = Recipe(name="muse_science", inputs=("OBJECT",), outputs=("PIXTABLE_OBJECT",),
                 calibs=(Calib("MASTER_TEST"),), params=(), run=_science, group="exposure")


def settings_for(tmp_path, version=None):
    """Settings of ``tmp_path`` with the default reduced_path ({workdir}/reduced/{version})."""
    return settings_from_dict({"workdir": str(tmp_path)}, base_dir=tmp_path, version=version)


@pytest.fixture
def env(tmp_path, database):
    """A BIAS sequence and one OBJECT exposure; the BIAS reduced in version 0.1."""
    raw = tmp_path / "raw"
    raw.mkdir()
    with database.session() as session:
        for name, dpr_type, tpl, night in ((f"{TPL}.000", "BIAS", TPL, "2017-06-16"),
                                           (f"{TPL[:-2]}01.000", "BIAS", TPL, "2017-06-16"),
                                           (EXPOSURE, "OBJECT", "2017-06-17T00:59:00", "2017-06-16")):
            path = raw / f"MUSE.{name}.fits"
            fits.PrimaryHDU().writeto(path)
            session.add(Raw(path=str(path), filename=path.name, name=name, night=night, DPR_TYPE=dpr_type,
                            DATE_OBS=dt.datetime.fromisoformat(name), TPL_START=tpl, INS_MODE=MODE,
                            OBJECT=dpr_type, header={}))
    old = settings_for(tmp_path)
    assert old.version == "0.1" and old.reduced_path == tmp_path / "reduced" / "0.1"
    assert run(old, database, MASTER).results[0].status == "ok"
    return old, settings_for(tmp_path, "0.2"), database


def run(settings, database, recipe, **options):
    return run_step(settings, database, recipe, progress=False, console=Console(file=io.StringIO()), **options)


def products(database, version):
    with database.session() as session:
        return session.scalars(select(Reduced).where(Reduced.version == version).order_by(Reduced.id)).all()


def test_a_new_version_sees_none_of_the_old_products(env):
    old, new, database = env
    assert new.reduced_path == old.reduced_path.parent / "0.2"
    assert len(Catalog.from_database(database, old).products) == 1
    assert Catalog.from_database(database, new).products == []
    # not done in 0.2 (nothing to skip), and no 0.1 calibration associated
    science = run(new, database, SCIENCE).results[0]
    assert science.status == "failed" and "no MASTER_TEST" in science.reason
    assert [r.name for r in collect_runs(database, "0.2")] == []
    assert [r.recipe_name for r in collect_runs(database, "0.1")] == ["muse_master"]
    redo = run(new, database, MASTER).results[0]
    assert redo.status == "ok" and Path(products(database, "0.2")[0].path).is_relative_to(new.reduced_path)
    # each version keeps its own record and file
    (kept,) = products(database, "0.1")
    assert Path(kept.path).is_file() and Path(kept.path).is_relative_to(old.reduced_path)
    assert run(old, database, MASTER).results[0].status == "done"


def test_copied_records_are_reused_then_replaced_by_a_new_run(env):
    old, new, database = env
    (original,) = products(database, "0.1")
    dry = copy_reduced(new, database, "0.1", dry_run=True)
    assert not dry.done and dry.records == 1 and products(database, "0.2") == []
    assert dry.lines()[0] == "Dry run: nothing is copied"
    report = copy_reduced(new, database, "0.1", recipes=["muse_master"])
    assert report.lines() == ["Copied 1 record of version 0.1 to version 0.2 (muse_master: 1; 1 target); "
                              "the files stay in version 0.1's folders"]
    (copy,) = products(database, "0.2")
    assert (copy.path, copy.frames, copy.params, copy.name) == (original.path, original.frames, original.params,
                                                                original.name)
    # the copy is associated and counts as done, with the files of 0.1
    assert run(new, database, MASTER).results[0].status == "done"
    assert run(new, database, SCIENCE).results[0].status == "ok"
    (science,) = [p for p in products(database, "0.2") if p.recipe_name == "muse_science"]
    assert fits.getval(science.path, "HIERARCH ESO TEST MASTER") == original.path
    assert Path(science.path).is_relative_to(new.reduced_path)
    # copying again replaces the copies instead of adding more
    again = copy_reduced(new, database, "0.1", recipes=["muse_master"])
    assert again.replaced == 1 and "Replaced 1 record of version 0.2" in again.lines()[1]
    assert len(products(database, "0.2")) == 2
    # a new run in 0.2 replaces the copied record; 0.1 keeps its record and file
    forced = run(new, database, MASTER, cli_params={"scale": 2.0}).results[0]
    assert forced.status == "ok"
    masters = [p for p in products(database, "0.2") if p.recipe_name == "muse_master"]
    assert len(masters) == 1 and Path(masters[0].path).is_relative_to(new.reduced_path)
    assert [p.id for p in products(database, "0.1")] == [original.id] and Path(original.path).is_file()


def test_copy_selection_and_errors(env, tmp_path):
    old, new, database = env
    run(old, database, SCIENCE)
    assert recorded_versions(database) == ["0.1"]
    only = copy_reduced(new, database, "0.1", names=[EXPOSURE], dry_run=True)
    assert only.targets == [("muse_science", EXPOSURE)]
    by_night = copy_reduced(new, database, "0.1", names=["2017-06-16"], dry_run=True)
    assert by_night.records == 2
    with pytest.raises(MuseredError, match="that is the current version"):
        copy_reduced(old, database, "0.1")
    with pytest.raises(MuseredError, match=r"no records of version 0\.9 in the database \(versions: 0\.1\)"):
        copy_reduced(new, database, "0.9")
    with pytest.raises(MuseredError, match="--recipe 'muse_nope'"):
        copy_reduced(new, database, "0.1", recipes=["muse_nope"])
    with pytest.raises(MuseredError, match="'2018-01-01' picks no record of version 0.1"):
        copy_reduced(new, database, "0.1", names=["2018-01-01"])
    assert products(database, "0.2") == []
    # a copied record whose file was removed since is reported
    Path(products(database, "0.1")[0].path).unlink()
    report = copy_reduced(new, database, "0.1", recipes=["muse_master"])
    assert report.missing and report.lines()[-1].startswith("Warning: 1 copied record(s) name a file")


@pytest.mark.skipif(not musered_example.available(), reason="MuseRed's example material is not in ../shared")
def test_copy_reduced_as_in_museRed_test(tmp_path, database):
    """MuseRed's test_copy_reduced: version 0.2 starts empty; copying muse_bias and
    muse_flat from 0.1 gives 13 records (4 MASTER_BIAS, 3 x MASTER_FLAT/TRACE_TABLE/TRACE_SAMPLES)."""
    with database.session() as session:
        for row in musered_example.example_rows("reduced_0_1"):
            session.add(Reduced(recipe_name=row["recipe_name"], name=row["name"], PRO_CATG=row["DPR_TYPE"],
                                path=f"{row['path']}/{row['DPR_TYPE']}.fits", night=row["night"],
                                OBJECT=row["OBJECT"], INS_MODE=row["INS_MODE"], version="0.1",
                                date_run=dt.datetime.fromisoformat(row["date_run"])))
    new = settings_for(tmp_path, "0.2")
    assert Catalog.from_database(database, new).products == []
    report = copy_reduced(new, database, "0.1", recipes=["muse_bias", "muse_flat"])
    assert report.records == 13 and report.recipes == {"muse_bias": 4, "muse_flat": 9}
    assert len(Catalog.from_database(database, new).products) == 13
    # step names and MuseRed's short names select the same records
    assert copy_reduced(new, database, "0.1", recipes=["bias", "flat"], dry_run=True).records == 13


# --------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def project(tmp_path):
    """A settings file (default reduced_path), STD products of version 0.1 for a run."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import write_raw_fits
    from test_std_combine import STDS, add_standard_products

    from musered.db import Database

    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path),
                                    "runs": {"GTO17": {"start_date": "2017-06-14", "end_date": "2017-06-18"}}}))
    for name in STDS:
        write_raw_fits(tmp_path / "raw" / f"MUSE.{name}.fits", kind="STD")
    assert invoke(path, "update-db").exit_code == 0
    settings = load_settings(path)
    database = Database(settings.database_url())
    add_standard_products(settings, database, {k: v for k, v in STDS.items() if k.startswith("2017-06")})
    return path, database


def invoke(settings_path, *args):
    result = CliRunner().invoke(cli, ["--settings", str(settings_path), *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_redversion_overrides_the_version_and_reduced_path(project):
    path, database = project
    out = invoke(path, "--redversion", "0.2", "settings").output
    assert "version: '0.2'" in out and f"reduced_path: {path.parent}/reduced/0.2" in out
    assert load_settings(path, version="0.2").reduced_path == path.parent / "reduced" / "0.2"
    bad = invoke(path, "--redversion", "a b", "settings")
    assert bad.exit_code == 1 and bad.output.strip().splitlines() == [
        "Error: --redversion 'a b': must be one word usable as a folder name (e.g. 0.2)"]

    # version 0.2 has no standards: nothing to combine
    empty = invoke(path, "--redversion", "0.2", "std-combine", "GTO17")
    assert empty.exit_code == 1 and "no STD_RESPONSE/STD_TELLURIC products" in empty.output
    dry = invoke(path, "--redversion", "0.2", "copy-reduced", "0.1", "-r", "standard", "--dry-run")
    assert dry.exit_code == 0 and "Would copy 6 records of version 0.1 to version 0.2" in dry.output
    copied = invoke(path, "--redversion", "0.2", "copy-reduced", "0.1", "--recipe", "muse_standard")
    assert copied.exit_code == 0 and "Copied 6 records" in copied.output
    done = invoke(path, "--redversion", "0.2", "std-combine", "GTO17")
    assert done.exit_code == 0, done.output
    with database.session() as session:
        (row, *_) = session.scalars(select(Reduced).where(Reduced.recipe_name == "muse_std_combine")).all()
    assert row.version == "0.2" and Path(row.path).is_relative_to(path.parent / "reduced" / "0.2")
    assert [r.recipe_name for r in collect_runs(database, "0.1")] == ["muse_standard"] * 3
    again = invoke(path, "copy-reduced", "0.1")
    assert again.exit_code == 1 and "that is the current version" in again.output
