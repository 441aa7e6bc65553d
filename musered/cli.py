"""The ``musered`` command line: a thin layer that parses, calls and prints.

Commands live in :mod:`musered.commands`, one module each, and are registered below only
once they work. Every :class:`~musered.errors.MuseredError` (and a recipe's
``RecipeError``) becomes a one-line ``Error: ...`` message with exit status 1.
"""

from __future__ import annotations

import logging

import click

from . import __version__
from .errors import MuseredError

LOGLEVELS = ("debug", "info", "warning", "error")


class AppContext:
    """What every command needs: the settings and the database, both opened lazily."""

    def __init__(self, settings_file: str | None, loglevel: str | None, redversion: str | None = None):
        self.settings_file = settings_file
        self.loglevel = loglevel
        self.redversion = redversion  # --redversion: replaces the settings' version
        self._settings = None
        self._database = None
        self._api = None

    @property
    def settings(self):
        if self._settings is None:
            from .settings import load_settings

            self._settings = load_settings(self.settings_file, version=self.redversion)
            if self.loglevel is None:
                logging.getLogger("musered").setLevel(self._settings.loglevel.upper())
                logging.getLogger("recipes").setLevel(self._settings.loglevel.upper())
        return self._settings

    @property
    def api(self):
        """The Python API on the same settings (``mr`` of plugins and ``musered shell``)."""
        if self._api is None:
            from .api import MuseRed

            self._api = MuseRed(self.settings_file, version=self.redversion)
        return self._api

    @property
    def database(self):
        if self._database is None:
            from .db import Database

            self._database = Database(self.settings.database_url())
        return self._database


class MuseredGroup(click.Group):
    """A click group that turns user errors into one-line messages, and whose commands
    include the user's plugins (:mod:`musered.plugins`), loaded only when a command name
    is not built in or when the commands are listed."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MuseredError as exc:
            raise click.ClickException(str(exc)) from None

    def get_command(self, ctx: click.Context, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is None:
            command = self.plugin_commands(ctx).get(cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            plugins = self.plugin_commands(ctx)
        except MuseredError as exc:  # the help must still show; the error names the plugin
            click.echo(f"Warning: {exc}", err=True)
            plugins = {}
        return sorted({*super().list_commands(ctx), *plugins})

    def plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        """The plugin commands of the settings in use (loaded once per invocation)."""
        key = "musered.plugins"
        if key not in ctx.meta:
            from .plugins import load_plugins, settings_plugin_specs

            ctx.meta[key] = {}  # a failure is reported once, not again for every lookup
            setup_logging(ctx.params.get("loglevel") or "info")  # before the group's callback does
            specs = settings_plugin_specs(ctx.params.get("settings_file"))
            ctx.meta[key] = load_plugins(specs, reserved=self.commands)
        return ctx.meta[key]


def setup_logging(level: str) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # Logs go to stderr so that command output (`musered settings > file.yml`) stays clean.
    handler = RichHandler(
        console=Console(stderr=True), show_path=False, show_time=False, markup=False, rich_tracebacks=False
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("musered", "recipes"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


@click.group(cls=MuseredGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    is_eager=True,  # read before --help, which lists the settings' plugin commands
    help="Settings file (default: $MUSERED_SETTINGS, else ./settings.yml).",
)
@click.option(
    "--loglevel",
    type=click.Choice(LOGLEVELS, case_sensitive=False),
    default=None,
    help="Terminal log level (default: the settings' loglevel, info).",
)
@click.option(
    "--redversion",
    default=None,
    metavar="VERSION",
    help="Reduction version to work on, instead of the settings' version (also in {version} of reduced_path).",
)
@click.version_option(__version__, prog_name="musered")
@click.pass_context
def cli(ctx: click.Context, settings_file: str | None, loglevel: str | None, redversion: str | None) -> None:
    """musered: reduce VLT/MUSE data with native recipes, from raw files to cubes.

    Typical session: retrieve-data, update-db, info, process-calib, process-exp,
    exp-align, exp-combine. Run `musered COMMAND --help` for each command.
    """
    setup_logging(loglevel or "info")
    ctx.obj = AppContext(settings_file, loglevel, redversion)


def main() -> None:
    cli(prog_name="musered")


# Registered commands: add one line per command once it works and is tested.
from .commands.settings_cmd import command as settings_command  # noqa: E402
cli.add_command(settings_command)
from .commands.update_db import command as update_db_command  # noqa: E402
cli.add_command(update_db_command)
from .commands.retrieve_data import command as retrieve_data_command  # noqa: E402
cli.add_command(retrieve_data_command)
from .commands.info import command as info_command  # noqa: E402
cli.add_command(info_command)
from .commands.simulate import command as simulate_command  # noqa: E402
cli.add_command(simulate_command)
from .commands.process_calib import command as process_calib_command  # noqa: E402
cli.add_command(process_calib_command)
from .commands.demo import command as demo_command  # noqa: E402
cli.add_command(demo_command)
from .commands.process_exp import command as process_exp_command  # noqa: E402
cli.add_command(process_exp_command)
from .commands.flags import command as flags_command  # noqa: E402
cli.add_command(flags_command)
from .commands.exp_align import command as exp_align_command  # noqa: E402
cli.add_command(exp_align_command)
from .commands.report import command as report_command  # noqa: E402
cli.add_command(report_command)
from .commands.exp_combine import command as exp_combine_command  # noqa: E402
cli.add_command(exp_combine_command)
from .commands.std_combine import command as std_combine_command  # noqa: E402
cli.add_command(std_combine_command)
from .commands.copy_reduced import command as copy_reduced_command  # noqa: E402
cli.add_command(copy_reduced_command)
from .commands.clean import command as clean_command  # noqa: E402
cli.add_command(clean_command)
from .commands.check_integrity import command as check_integrity_command  # noqa: E402
cli.add_command(check_integrity_command)
from .commands.shell import command as shell_command  # noqa: E402
cli.add_command(shell_command)
from .commands.info_exp import command as info_exp_command  # noqa: E402
cli.add_command(info_exp_command)
from .commands.info_raw import command as info_raw_command  # noqa: E402
cli.add_command(info_raw_command)
from .commands.info_warnings import command as info_warnings_command  # noqa: E402
cli.add_command(info_warnings_command)
from .commands.import_musered import command as import_musered_command  # noqa: E402
cli.add_command(import_musered_command)
from .commands.update_qc import command as update_qc_command  # noqa: E402
cli.add_command(update_qc_command)
