"""MuseRed's commands and options: shell, -f, reserved process-exp steps, exp-align --njobs,
retrieve-data --ins-mode (the archive side is in test_archive.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from musered.cli import cli


@pytest.fixture
def settings_path(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))         # no ~/.musered/plugins.yml of the user
    path = tmp_path / "settings.yml"
    path.write_text(yaml.safe_dump({"workdir": str(tmp_path), "version": "0.1", "datasets": {"FIELD": {}}}))
    return path


def invoke(settings_path: Path, *args: str, input: str | None = None, console: bool = False):
    result = CliRunner().invoke(cli, ["--settings", str(settings_path), *args], input=input)
    # musered never shows a traceback; the Python console shows those of the user's code
    assert console or "Traceback" not in result.output, result.output
    return result


def test_shell_starts_with_mr_ready_and_reads_stdin(settings_path):
    result = invoke(settings_path, "--redversion", "0.2", "shell", "--plain",
                    input="print(6 * 7)\nprint(type(mr).__name__, mr.version, mr.raw.count())\n")
    assert result.exit_code == 0, result.output
    assert "musered shell: the reduction of" in result.output and "(version 0.2) is `mr`" in result.output
    assert ">>> 42\n>>> MuseRed 0.2 0\n" in result.output


def test_shell_reports_errors_and_goes_on(settings_path):
    result = invoke(settings_path, "shell", "--plain", input="1/0\nprint('still here')\n", console=True)
    assert result.exit_code == 0
    assert "ZeroDivisionError: division by zero\n>>> still here" in result.output


def test_shell_without_settings_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUSERED_SETTINGS", raising=False)
    result = CliRunner().invoke(cli, ["shell"])
    assert result.exit_code == 1 and result.output.startswith("Error: settings file settings.yml not found")


@pytest.mark.parametrize("command", ["update-db", "process-calib", "process-exp", "exp-align", "exp-combine",
                                     "std-combine"])
def test_force_has_museRed_short_option(settings_path, command):
    assert "-f, --force" in invoke(settings_path, command, "--help").output


def test_clean_and_retrieve_force_have_no_short_option_as_in_museRed(settings_path):
    assert "-f, --force" not in invoke(settings_path, "clean", "--help").output
    assert "  --force" in invoke(settings_path, "clean", "--help").output
    help_text = invoke(settings_path, "retrieve-data", "--help").output
    assert "-f, --force" not in help_text and "--ins-mode MODE" in help_text


def test_reserved_process_exp_steps(settings_path):
    help_text = invoke(settings_path, "process-exp", "--help").output
    assert "--superflat" in help_text and "(issue 16: not available yet)" in help_text
    assert "--fsf" in help_text and "(issue 17: not available yet)" in help_text
    for step, issue in (("superflat", 16), ("zap", 16), ("fsf", 17)):
        result = invoke(settings_path, "process-exp", "-f", f"--{step}")
        assert result.exit_code == 1
        assert result.output.strip() == f"Error: process-exp --{step}: not available yet (issue {issue})"


def test_a_registered_recipe_replaces_its_reserved_step(monkeypatch):
    from musered.commands import steps

    real = steps.command_recipes
    monkeypatch.setattr(steps, "command_recipes",
                        lambda command: [*real(command), SimpleNamespace(step_name="zap", name="zap")])
    assert list(steps.reserved_steps("process-exp")) == ["superflat", "fsf"]
    assert steps.reserved_steps("process-calib") == {}


def test_command_list_and_step_help(settings_path):
    listing = invoke(settings_path, "--help").output
    # the list does not load the registry (seconds): the placeholder is dropped there ...
    assert "{steps}" not in listing and "process-exp      Process science and standard exposures.\n" in listing
    # ... and expanded in the command's own help
    assert "Process science and standard exposures: scibasic, " in invoke(settings_path, "process-exp", "-h").output


def test_exp_align_njobs_and_date_reach_the_runner(settings_path, monkeypatch):
    import musered.runner

    calls = []

    def fake_run_step(settings, database, recipe, selection, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(failed=[], results=[])

    monkeypatch.setattr(musered.runner, "run_step", fake_run_step)
    result = invoke(settings_path, "exp-align", "FIELD", "--njobs", "3", "--dry-run")
    assert result.exit_code == 0, result.output
    assert calls[-1]["jobs"] == 3 and calls[-1]["inputs_query"] is None
    assert "--njobs INTEGER RANGE" in invoke(settings_path, "exp-align", "--help").output
    assert invoke(settings_path, "exp-align", "FIELD", "--njobs", "0").exit_code == 2
    # --date goes through the shared selector: an empty database has no such exposure
    result = invoke(settings_path, "exp-align", "FIELD", "--date", "2017-06-1*", "--dry-run")
    assert result.exit_code == 1
    assert result.output.startswith("Error: --date 2017-06-1*: no raw files (OBJECT) match it")


def test_shell_uses_ipython_when_installed_and_interactive(settings_path, monkeypatch):
    import sys

    started = {}
    fake = SimpleNamespace(start_ipython=lambda argv, user_ns: started.update(argv=argv, ns=user_ns))
    monkeypatch.setitem(sys.modules, "IPython", fake)
    monkeypatch.setattr("musered.commands.shell.interactive", lambda: True)
    result = invoke(settings_path, "shell")
    assert result.exit_code == 0, result.output
    assert started["argv"] == ["--no-banner", "--no-confirm-exit"]
    assert type(started["ns"]["mr"]).__name__ == "MuseRed" and started["ns"]["mr"].version == "0.1"
    assert "is `mr`" in result.output
    started.clear()
    invoke(settings_path, "shell", "--plain", input="")
    assert started == {}
