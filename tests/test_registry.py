"""The recipe declarations carry the reduction chain: step order, commands, flags,
association policy and docs all come from the registry; a recipe added from outside
recipes/steps shows up everywhere with no edit elsewhere; the package structure rules."""

from __future__ import annotations

import ast
import datetime as dt
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recipes import registry
from recipes.base import Recipe

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def test_step_order_is_derived_from_outputs_and_inputs():
    order = list(registry.all_recipes())
    assert order[:6] == ["muse_bias", "muse_dark", "muse_flat", "muse_wavecal", "muse_lsf", "muse_twilight"]
    position = {name: i for i, name in enumerate(order)}
    # every recipe runs after the recipes that write what it takes from `reduced` or `from_recipe`
    writers: dict[str, set[str]] = {}
    for recipe in registry.all_recipes().values():
        for tag in recipe.outputs:
            writers.setdefault(tag, set()).add(recipe.name)
    for recipe in registry.all_recipes().values():
        if recipe.from_recipe:
            assert position[recipe.from_recipe] < position[recipe.name], recipe.name
        for calib in recipe.calibs:
            if "reduced" in calib.sources:
                for writer in writers.get(calib.tag, set()) - {recipe.name}:
                    assert position[writer] < position[recipe.name], (writer, recipe.name, calib.tag)
    assert position["muse_standard"] < position["muse_std_combine"] < position["muse_scipost"]


def test_commands_steps_and_methods_come_from_the_declarations():
    from musered.commands.steps import chosen_steps, methods

    names = lambda recipes: [r.name for r in recipes]  # noqa: E731
    assert names(chosen_steps("process-calib", {})) == ["muse_bias", "muse_flat", "muse_wavecal", "muse_lsf",
                                                       "muse_twilight"]
    assert names(chosen_steps("process-calib", {"dark": True})) == ["muse_dark"]
    assert names(chosen_steps("process-exp", {})) == ["muse_scibasic", "muse_standard", "muse_scipost"]
    assert names(chosen_steps("process-exp", {"standard": True})) == ["muse_scibasic", "muse_standard"]
    assert names(chosen_steps("process-exp", {"makecube": True})) == ["muse_scipost_make_cube"]
    assert methods("exp-align") == ["drs", "image"] and methods("exp-combine") == ["drs", "mpdaf"]
    assert registry.step_recipe("exp-combine", "mpdaf").from_recipe == "muse_scipost_make_cube"


def test_static_calibrations_are_never_products():
    from recipes import calibs

    for name in ("SKY_LINES", "EXTINCT_TABLE", "FILTER_LIST", "LINE_CATALOG", "GEOMETRY_TABLE", "STD_FLUX_TABLE",
                 "RAMAN_LINES", "ASTROMETRY_WCS", "BADPIX_TABLE"):
        assert "reduced" not in getattr(calibs, name).sources, name
    scipost = registry.get_recipe("muse_scipost")
    assert "reduced" not in scipost.calib("SKY_LINES").sources


def test_the_manager_names_no_recipe():
    """`"muse_` in musered/*.py only in comments, docstrings, help text and messages (a
    string with a space), and the muse_calib_path settings key, which is no recipe."""
    found = []
    for path in (ROOT / "musered").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        helps = {id(kw.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                 for kw in node.keywords if kw.arg == "help"}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and "muse_" in node.value
                    and " " not in node.value.strip()
                    and id(node) not in docstrings | helps and "muse_calib_path" not in node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:40]!r}")
    assert not found, found


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_recipes_import_neither_musered_the_registry_nor_each_other():
    for path in (ROOT / "recipes").rglob("*.py"):
        imports = _imports(path)
        where = path.relative_to(ROOT)
        assert not any(m == "musered" or m.startswith("musered.") for m in imports), where
        if path.name not in ("registry.py", "docs.py"):
            assert "recipes.registry" not in imports, where
        if path.parent.name == "steps":
            others = {m for m in imports if m.startswith("recipes.steps.")}
            assert not others, (where, others)
        if path.parent.name in ("algorithms", "kernels"):
            assert not any(m.startswith("recipes.steps") for m in imports), where


def test_modules_stay_small_or_say_why():
    """No module over ~400 lines without a reason in its first lines."""
    long = []
    for folder in ("musered", "recipes"):
        for path in (ROOT / folder).rglob("*.py"):
            lines = path.read_text().splitlines()
            if len(lines) > 420 and not any("lines:" in line.lower() or "long:" in line.lower()
                                            for line in lines[:30]):
                long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert not long, long


# --------------------------------------------------------------------------------------
# a recipe from outside recipes/steps


@pytest.fixture
def throwaway(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv(registry.ENV_MODULES, "throwaway_recipe")
    recipe = registry.get_recipe("muse_throwaway")
    yield recipe
    registry.unregister("muse_throwaway")
    registry._loaded.discard("throwaway_recipe")
    sys.modules.pop("throwaway_recipe", None)


def _night_with_a_pixel_table(tmp_path, database):
    """A settings file and a database holding one muse_scibasic PIXTABLE_OBJECT."""
    from musered.db import Reduced

    table = tmp_path / "reduced" / "0.1" / "scibasic" / "2017-06-16T01:34:56.867" / "PIXTABLE_OBJECT_0001.fits"
    table.parent.mkdir(parents=True)
    table.write_bytes(b"")
    with database.session() as session:
        session.add(Reduced(recipe_name="muse_scibasic", name="2017-06-16T01:34:56.867", PRO_CATG="PIXTABLE_OBJECT",
                            path=str(table), night="2017-06-15", INS_MODE="WFM-NOAO-N", OBJECT="IC4406",
                            DATE_OBS=dt.datetime(2017, 6, 16, 1, 34, 56, 867000), version="0.1",
                            date_run=dt.datetime(2024, 1, 1), output_dir="scibasic", status="ok",
                            frames={}, params={}))
    settings = tmp_path / "settings.yml"
    settings.write_text(yaml.safe_dump({"workdir": str(tmp_path), "db": database.url.replace("sqlite:///", ""),
                                        "recipes": {"muse_throwaway": {"params": {"offset": 2}}}}))
    return settings


def test_a_recipe_from_the_test_folder_is_seen_everywhere(throwaway, tmp_path, database):
    from musered.cli import cli
    from musered.report import build_report, collect_runs
    from recipes.docs import render_recipes

    assert isinstance(throwaway, Recipe)
    order = list(registry.all_recipes())
    assert order.index("muse_scibasic") < order.index("muse_throwaway")
    help_text = CliRunner().invoke(cli, ["process-exp", "--help"]).output
    assert "--throwaway" in help_text and "muse_throwaway (only when asked for)" in help_text
    assert "## muse_throwaway" in render_recipes(registry.all_recipes().values())
    if not database.url.startswith("sqlite"):
        pytest.skip("the CLI part reads the SQLite file of the settings")
    settings = _night_with_a_pixel_table(tmp_path, database)

    def musered(*args):
        result = CliRunner().invoke(cli, ["--settings", str(settings), *args])
        assert "Traceback" not in result.output, result.output
        return result

    dry = musered("process-exp", "--throwaway", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "2017-06-16T01:34:56.867 (exposure" in dry.output and "PIXTABLE_OBJECT: 1 file(s)" in dry.output
    assert "params (muse_throwaway): offset=2" in dry.output
    done = musered("process-exp", "--throwaway")
    assert done.exit_code == 0, done.output
    product = tmp_path / "reduced" / "0.1" / "throwaway" / "2017-06-16T01:34:56.867" / "TINY_PRODUCT.fits"
    assert product.is_file()
    runs = collect_runs(database)
    assert [r.recipe_name for r in runs] == ["muse_scibasic", "muse_throwaway"]
    assert runs[1].qc["QC TINY NINPUT"] == 3
    page = build_report(_settings_of(settings), database)
    assert "throwaway" in Path(page).read_text()


def _settings_of(path: Path):
    from musered.settings import load_settings

    return load_settings(path)
