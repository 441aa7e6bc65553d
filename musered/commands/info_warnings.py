"""``musered info-warnings [-m summary|list|detail] [-r RECIPE] [-d DATE]``."""

from __future__ import annotations

import sys

import click


@click.command("info-warnings")
@click.option("-m", "--mode", type=click.Choice(["summary", "list", "detail"]), default="summary", show_default=True,
              help="summary: counts per name and recipe; list: one line per run with its log; "
                   "detail: the messages of each log.")
@click.option("-d", "--date", "dates", multiple=True, metavar="DATE",
              help="Only these targets (a name, a night, a run, a glob; repeatable).")
@click.option("-r", "--recipe", "recipes", multiple=True, metavar="RECIPE", help="Only this recipe (repeatable).")
@click.option("--no-color", is_flag=True, help="Plain text without colours (also when output is piped).")
@click.pass_obj
def command(app, mode, dates, recipes, no_color) -> None:
    """Show the recipe runs of this version that logged warnings."""
    from ..infotable import make_console, render
    from ..infowarnings import warning_items

    render(make_console(sys.stdout, no_color=no_color), warning_items(app.settings, app.database, dates, recipes, mode))
