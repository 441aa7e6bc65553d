"""Exposure flags: the API of musered.flags, the `musered flags` command, and what reads the
flags (info --exps; MuseRed's policy: flagged exposures are processed and combined, and a
step leaves them out only when its recipe block says exclude_flags)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from musered import flags, info
from musered.cli import cli
from musered.db import Flag
from musered.errors import MuseredError
from musered.ingest import update_db
from musered.settings import settings_from_dict
from musered.catalog import Catalog

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_raw_fits  # noqa: E402

EXP1 = "2017-06-16T01:40:00.000"
EXP2 = "2017-06-16T02:40:00.000"
EXP3 = "2017-06-17T01:40:00.000"
SETTINGS = {
    "datasets": {"IC4406": {"OBJECT": "IC4406"}},
    "flags": {"BAD_SEEING": "Seeing above 1.2 arcsec"},
}


def populate(raw: Path) -> None:
    write_raw_fits(raw / "MUSE.2017-06-16T10:40:27.000.fits", kind="BIAS", TPL_START="2017-06-16T10:40:27")
    for name in (EXP1, EXP2, EXP3):
        write_raw_fits(raw / f"MUSE.{name}.fits", OBJECT="IC4406")


@pytest.fixture
def setup(tmp_path, database):
    settings = settings_from_dict({"workdir": str(tmp_path), **SETTINGS}, base_dir=tmp_path)
    populate(settings.raw_path)
    update_db(settings, database, progress=False)
    return settings, database


def test_known_flags_are_musered_list_plus_settings(setup):
    settings, _ = setup
    known = flags.known_flags(settings)
    for name in ("BAD_CENTERING", "BAD_IMAQUALITY", "BAD_SKY_FLUX", "BAD_SKY_SUB", "BAD_SLICE", "SATELLITE",
                 "SHORT_EXPTIME", "SLICE_GRADIENT", "BAD_ALIGNMENT", "IMPHOT_OUTLIER_OFFSET", "BAD_SEEING"):
        assert name in known
    assert known["BAD_SEEING"] == "Seeing above 1.2 arcsec"
    assert "BAD_SEEING" not in flags.known_flags(None)
    assert flags.check_flag("bad_sky_sub", settings) == "BAD_SKY_SUB"


def test_unknown_flag_lists_the_valid_ones(setup):
    settings, database = setup
    with pytest.raises(MuseredError) as err:
        flags.add_flag(database, [EXP1], "BAD_WEATHER", settings=settings)
    message = str(err.value)
    assert "\n" not in message and "'BAD_WEATHER'" in message
    assert "BAD_SKY_SUB" in message and "BAD_SEEING" in message


@pytest.mark.parametrize("name, message", [
    ("2017-06-18T01:40:00.000", "unknown exposure '2017-06-18T01:40:00.000'"),
    ("2017-06-16T10:40:27.000", "is a BIAS file, not an exposure"),
    ("2018-*", "'2018-\\*' matches no exposure"),
])
def test_unknown_exposure_is_an_error(setup, name, message):
    settings, database = setup
    with pytest.raises(MuseredError, match=message):
        flags.add_flag(database, [name], "SATELLITE", settings=settings)
    with database.session() as session:
        assert session.query(Flag).count() == 0


def test_add_update_list_remove(setup):
    settings, database = setup
    added, updated = flags.add_flag(database, [EXP1, EXP2], "SATELLITE", "track across IFU 3", settings=settings)
    assert (added, updated) == ([EXP1, EXP2], [])
    added, updated = flags.add_flag(database, [EXP1], "satellite", "two tracks", settings=settings)
    assert (added, updated) == ([], [EXP1])
    flags.add_flag(database, [EXP1], "BAD_SEEING", settings=settings)
    entries = flags.list_flags(database)
    assert [(e.name, e.flag, e.comment) for e in entries] == [
        (EXP1, "BAD_SEEING", None), (EXP1, "SATELLITE", "two tracks"), (EXP2, "SATELLITE", "track across IFU 3")]
    assert entries[0].night == "2017-06-15" and entries[0].OBJECT == "IC4406"
    assert [e.name for e in flags.list_flags(database, flag="SATELLITE")] == [EXP1, EXP2]
    assert [e.flag for e in flags.list_flags(database, [EXP1])] == ["BAD_SEEING", "SATELLITE"]
    assert flags.flags_by_exposure(database) == {EXP1: ["BAD_SEEING", "SATELLITE"], EXP2: ["SATELLITE"]}

    assert flags.remove_flag(database, [EXP1], "SATELLITE", settings=settings) == 1
    assert flags.flags_by_exposure(database) == {EXP1: ["BAD_SEEING"], EXP2: ["SATELLITE"]}
    with pytest.raises(MuseredError, match="does not have the flag SATELLITE"):
        flags.remove_flag(database, [EXP1], "SATELLITE", settings=settings)
    assert flags.remove_flag(database, ["2017-06-16T0*"]) == 2
    assert flags.flags_by_exposure(database) == {}


def test_a_flag_dropped_from_the_settings_can_still_be_removed(setup, tmp_path):
    settings, database = setup
    flags.add_flag(database, [EXP3], "BAD_SEEING", settings=settings)
    bare = settings_from_dict({"workdir": str(tmp_path)}, base_dir=tmp_path)
    with pytest.raises(MuseredError, match="unknown flag 'BAD_SEEING'"):
        flags.add_flag(database, [EXP2], "BAD_SEEING", settings=bare)
    assert flags.remove_flag(database, [EXP3], "BAD_SEEING", settings=bare) == 1


def test_flags_show_in_info_and_exclude_exposures(setup):
    settings, database = setup
    flags.add_flag(database, [EXP1], "SATELLITE", settings=settings)
    flags.add_flag(database, [EXP2], "BAD_SEEING", settings=settings)
    table = info.exposures_table(settings, database)
    assert table.cell(EXP1, "flags") == "SATELLITE"
    assert table.cell(EXP2, "flags") == "BAD_SEEING"
    assert table.cell(EXP3, "flags") == info.NONE

    def excluded(exclude_flags):
        catalog = Catalog.from_database(database, settings, exclude_flags)
        return {r.name: r.excluded for r in catalog.raws if r.tag == "OBJECT"}

    assert set(excluded(False).values()) == {None}
    default = Catalog.from_database(database, settings)  # the default: flags exclude nothing
    assert {r.excluded for r in default.raws} == {None}
    everything = excluded(True)
    assert everything[EXP1] == "flagged (SATELLITE)" and everything[EXP2] == "flagged (BAD_SEEING)"
    assert everything[EXP3] is None
    assert excluded(["BAD_SEEING"]) == {EXP1: None, EXP2: "flagged (BAD_SEEING)", EXP3: None}
    assert set(excluded(False).values()) == {None}


def _step(settings, database, block=None):
    """A dry run of the exposure recipe reading raw OBJECT files: {exposure: (status, reason)}."""
    import io

    from rich.console import Console

    from musered.runner import run_step
    from recipes.registry import recipes_of

    recipe = next(r for r in recipes_of("process-exp") if "OBJECT" in r.inputs)
    if block is not None:
        settings = settings_from_dict({**settings.data, "recipes": {recipe.name: block}}, base_dir=settings.base_dir)
    summary = run_step(settings, database, recipe, dry_run=True, progress=False, console=Console(file=io.StringIO()))
    return {r.name: (r.status, r.reason) for r in summary.results}


def test_flagged_exposures_are_processed_unless_the_block_excludes_them(setup):
    settings, database = setup
    flags.add_flag(database, [EXP1], "SATELLITE", settings=settings)
    flags.add_flag(database, [EXP2], "BAD_SEEING", settings=settings)
    default = _step(settings, database)
    assert set(default) == {EXP1, EXP2, EXP3} and "excluded" not in {s for s, _ in default.values()}
    assert _step(settings, database, {"exclude_flags": False}) == default
    some = _step(settings, database, {"exclude_flags": ["satellite"]})  # names are case-insensitive
    assert some[EXP1] == ("excluded", "flagged (SATELLITE)") and some[EXP2] == default[EXP2]
    every = _step(settings, database, {"exclude_flags": True})
    assert every[EXP1][0] == every[EXP2][0] == "excluded" and every[EXP2][1] == "flagged (BAD_SEEING)"
    assert every[EXP3] == default[EXP3]
    with pytest.raises(MuseredError, match=r"exclude_flags: unknown flag 'SATELITE'; valid flags: BAD_ALIGNMENT"):
        _step(settings, database, {"exclude_flags": ["SATELITE"]})


# --------------------------------------------------------------------------------------
# The command


@pytest.fixture
def settings_file(tmp_path):
    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path), **SETTINGS}))
    populate(tmp_path / "raw")
    result = CliRunner().invoke(cli, ["--settings", str(path), "update-db"])
    assert result.exit_code == 0, result.output
    return path


def run_flags(settings_file, *args):
    result = CliRunner().invoke(cli, ["--settings", str(settings_file), "flags", *args])
    assert "Traceback" not in result.output
    return result


def test_cli_flags(settings_file):
    result = run_flags(settings_file, "add", EXP1, EXP2, "--flag", "BAD_SKY_SUB", "--comment", "residuals at 5577")
    assert result.exit_code == 0, result.output
    assert f"{EXP1}: flagged BAD_SKY_SUB" in result.output and f"{EXP2}: flagged BAD_SKY_SUB" in result.output
    result = run_flags(settings_file, "add", EXP1, "-f", "bad_sky_sub", "-c", "strong residuals")
    assert "already flagged BAD_SKY_SUB, comment updated" in result.output

    out = run_flags(settings_file, "list", "--no-color").output
    rows = [line for line in out.splitlines() if line.startswith("2017-")]
    assert len(rows) == 2 and "strong residuals" in rows[0] and "residuals at 5577" in rows[1]
    out = run_flags(settings_file, "list", EXP2, "--no-color").output
    assert [line.split()[0] for line in out.splitlines() if line.startswith("2017-")] == [EXP2]
    out = run_flags(settings_file, "list", "--defined", "--no-color").output
    assert "BAD_SEEING" in out and "Seeing above 1.2 arcsec" in out and "SLICE_GRADIENT" in out

    result = run_flags(settings_file, "remove", EXP1, EXP2)
    assert result.exit_code == 0 and "removed 2 flags" in result.output
    out = run_flags(settings_file, "list", "--no-color").output
    assert "no flagged exposures" in out


@pytest.mark.parametrize("args, message", [
    (["add", EXP1, "--flag", "CLOUDS"], "unknown flag 'CLOUDS'; valid flags: BAD_ALIGNMENT"),
    (["add", "2019-01-01T00:00:00.000", "--flag", "SATELLITE"], "unknown exposure '2019-01-01T00:00:00.000'"),
    (["remove", EXP1], "nothing to remove"),
    (["list", "nope"], "unknown exposure 'nope'"),
])
def test_cli_flags_errors_are_one_line(settings_file, args, message):
    result = run_flags(settings_file, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_a_dataset_names_every_exposure_it_leaves_out(tmp_path):
    """Catalog and targets alone (no database): the combination's exposures, those left
    out (flagged with exclude_flags, not reduced) and the reason when none is left."""
    import datetime as dt

    from musered.catalog import ProductFrame, raw_frame
    from musered.targets import discover_targets
    from recipes.registry import step_recipe

    recipe = step_recipe("exp-combine", "drs")
    settings = settings_from_dict({"workdir": str(tmp_path), "datasets": {"FIELD": {}}}, base_dir=tmp_path)
    names = [f"2017-06-16T0{i}:00:00.000" for i in range(1, 4)]
    raws = [raw_frame(path=f"/raw/{n}.fits", name=n, night="2017-06-15", DPR_TYPE="OBJECT", OBJECT="FIELD",
                      DATE_OBS=dt.datetime.fromisoformat(n)) for n in names]
    products = [ProductFrame(path=tmp_path / n / "PIXTABLE_REDUCED.fits", recipe_name=recipe.from_recipe, name=n,
                             PRO_CATG="PIXTABLE_REDUCED", night="2017-06-15", DATE_OBS=dt.datetime.fromisoformat(n),
                             INS_MODE="WFM-NOAO-N", OBJECT="FIELD", TPL_START=None, output_dir="scipost",
                             date_run=dt.datetime(2026, 1, 1)) for n in names[:2]]
    flagged = {names[0]: ["SATELLITE"]}
    missing = f"no PIXTABLE_REDUCED product from {recipe.from_recipe}"

    def discover(products, exclude_flags):
        catalog = Catalog.build(raws, products, flagged, settings, exclude_flags)
        return discover_targets(recipe, catalog, settings, {}, dataset_suffix="_drs")

    (target,), _ = discover(products, False)
    assert target.members == tuple(names[:2]) and target.left_out == {names[2]: missing}
    assert any("used although flagged (SATELLITE)" in line for line in target.log)
    (target,), _ = discover(products, ["SATELLITE"])
    assert target.members == (names[1],)
    assert target.left_out == {names[0]: "flagged (SATELLITE)", names[2]: missing}
    assert f"exposure {names[0]} left out: flagged (SATELLITE)" in target.log
    _, (skipped,) = discover([], False)
    assert skipped.reason == (f"no PIXTABLE_REDUCED products from {recipe.from_recipe} for this dataset "
                              f"(3 exposure(s) without one: {', '.join(names)})")
    _, (skipped,) = discover(products[:1], True)
    assert skipped.reason.startswith(f"every exposure left out ({names[0]} (flagged (SATELLITE)); {names[1]} (no")
