"""User plugins: commands from the settings' `plugins` block, in MuseRed's format."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from musered.cli import cli
from musered.errors import MuseredError
from musered.settings import load_settings

# MuseRed's docs/_static/example_plugin.py, with mr.raw/mr.reduced counts as it has them
EXAMPLE_PLUGIN = '''
import logging

import click


@click.argument('name')
@click.pass_obj
def my_command(mr, name):
    """Example plugin, say hello."""
    click.echo(f'Hello {name}!')
    click.echo(f'{type(mr).__name__} version {mr.version}: raw {mr.raw.count()} rows')
'''

CLICK_PLUGIN = '''
import click


@click.command("count-settings")
@click.option("--key", default="version")
@click.pass_obj
def command(mr, key):
    """A ready click command."""
    click.echo(f"{key} = {mr.conf[key]}")
'''


@pytest.fixture(autouse=True)
def no_user_plugins(tmp_path, monkeypatch):
    # MuseRed's ~/.musered/plugins.yml is read too: the tests get their own HOME
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MUSERED_SETTINGS", raising=False)
    return home


def project(tmp_path: Path, plugins: dict | None, **files: str) -> Path:
    for name, text in files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    data = {"workdir": str(tmp_path)}
    if plugins is not None:
        data["plugins"] = plugins
    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(settings_path: Path, *args: str):
    result = CliRunner().invoke(cli, ["--settings", str(settings_path), *args])
    assert "Traceback" not in result.output, result.output
    return result


def test_museRed_plugin_from_a_module_on_paths(tmp_path):
    settings = project(tmp_path, {"paths": ["{workdir}/plugins"], "commands": ["example_plugin:my_command"]},
                       **{"plugins/example_plugin.py": EXAMPLE_PLUGIN})
    result = invoke(settings, "my-command", "world")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["Hello world!", "MuseRed version 0.1: raw 0 rows"]
    help_text = invoke(settings, "--help").output
    assert "my-command" in help_text and "Example plugin, say hello." in help_text
    import sys

    assert str(tmp_path / "plugins") not in sys.path          # paths are used only while loading


def test_click_command_from_a_file_with_redversion(tmp_path):
    settings = project(tmp_path, {"commands": ["tools/mine.py:command"]}, **{"tools/mine.py": CLICK_PLUGIN})
    result = invoke(settings, "--redversion", "0.3", "count-settings")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "version = 0.3"


def test_musered_plugins_yml_of_the_home_folder(tmp_path, no_user_plugins):
    folder = no_user_plugins / ".musered"
    folder.mkdir()
    (folder / "example_plugin.py").write_text(EXAMPLE_PLUGIN)
    (folder / "plugins.yml").write_text(yaml.safe_dump(
        {"plugins": {"paths": [str(folder)], "commands": ["example_plugin:my_command"]}}))
    settings = project(tmp_path, None)
    result = invoke(settings, "my-command", "you")
    assert result.exit_code == 0 and result.output.startswith("Hello you!"), result.output


@pytest.mark.parametrize("text, message", [
    ("import click\ndef broken(:\n    pass\n", r"^Error: plugin .*bad\.py, line 2: SyntaxError: "),
    ("import click\n\nraise RuntimeError('no config')\n", r"^Error: plugin .*bad\.py, line 3: RuntimeError: no config$"),
    ("import click\nimport not_a_module_xyz\n", r"^Error: plugin .*bad\.py, line 2: ModuleNotFoundError: "),
    ("x = 1\n", r"^Error: plugin .*bad\.py: no 'cmd' in it \(declared in .*settings\.yml\)$"),
    ("cmd = 3\n", r"^Error: plugin .*bad\.py: cmd is not a function or a click command$"),
])
def test_broken_plugin_is_one_line_naming_the_file(tmp_path, text, message):
    settings = project(tmp_path, {"commands": ["bad.py:cmd"]}, **{"bad.py": text})
    result = invoke(settings, "cmd")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert __import__("re").match(message, result.output.strip()), result.output
    # built-in commands do not load plugins: a broken one does not stop them
    assert invoke(settings, "settings", "version").output.strip() == "0.1"
    # the command list still shows, with the error as a warning
    listing = invoke(settings, "--help")
    assert listing.exit_code == 0 and "check-integrity" in listing.output and "Warning: plugin" in listing.output


def test_unknown_module_and_missing_file(tmp_path):
    settings = project(tmp_path, {"paths": ["nowhere"], "commands": ["no_such_plugin:cmd"]})
    result = invoke(settings, "cmd")
    assert result.exit_code == 1 and "plugin module 'no_such_plugin' not found" in result.output
    settings = project(tmp_path, {"commands": ["gone.py:cmd"]})
    result = invoke(settings, "cmd")
    assert result.exit_code == 1 and f"plugin {tmp_path / 'gone.py'}: file not found" in result.output


def test_plugin_cannot_replace_a_builtin_command(tmp_path):
    plugin = "import click\n\n@click.command('info')\ndef cmd():\n    click.echo('plugin info')\n"
    settings = project(tmp_path, {"commands": ["p.py:cmd", "q.py:command"]},
                       **{"p.py": plugin, "q.py": CLICK_PLUGIN})
    result = invoke(settings, "count-settings")
    assert result.exit_code == 0 and "version = 0.1" in result.output
    assert "'info' is a musered command; the plugin is not used" in result.output
    assert "plugin info" not in invoke(settings, "info").output


def test_unknown_command_without_settings_is_clicks_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2 and "No such command 'no-such-command'" in result.output


def test_plugins_block_is_checked_at_settings_load(tmp_path):
    settings = load_settings(project(tmp_path, {"paths": "~/x", "commands": "mod.sub:fn"}))
    assert settings.data["plugins"] == {"paths": [str(Path("~/x").expanduser())], "commands": ["mod.sub:fn"]}
    for plugins, message in [
        ({"commands": ["no_colon"]}, r"plugins\.commands\[0\]: 'no_colon' is not 'module:function'"),
        ({"commands": ["a b:fn"]}, r"plugins\.commands\[0\]: 'a b' is neither a module name nor a \.py file"),
        ({"command": ["m:f"]}, r"plugins\.command: unknown key"),
        ("m:f", r"plugins: must be a mapping with paths and commands"),
    ]:
        with pytest.raises(MuseredError, match=message):
            load_settings(project(tmp_path, plugins))
