"""``musered info-exp NAME... | --night NIGHT... [--recipe R] [--short]``."""

from __future__ import annotations

import sys

import click


@click.command("info-exp")
@click.argument("names", nargs=-1, metavar="NAME_OR_NIGHT...")
@click.option("--night", is_flag=True, help="NAME_OR_NIGHT are nights: every target processed on them.")
@click.option("--short", is_flag=True, help="Without the input frames of each recipe.")
@click.option("-r", "--recipe", "recipes", multiple=True, metavar="RECIPE",
              help="Only this recipe (muse_bias, bias ...; repeatable); hides GTO logs and weather.")
@click.option("--no-color", is_flag=True, help="Plain text without colours (also when output is piped).")
@click.pass_obj
def command(app, names, night, short, recipes, no_color) -> None:
    """Show the reduction of an exposure or of the targets of a night: GTO logs, weather,
    and each recipe run with its products, log, runtime, warnings and input frames.

    NAME_OR_NIGHT is an exposure name, a night, a run or a glob.

    Examples: musered info-exp 2017-06-16T01:34:56.867;
    musered info-exp --night --short 2017-06-17
    """
    from ..infoexp import info_exp_items
    from ..infotable import make_console, render

    items = info_exp_items(app.settings, app.database, names, night=night, recipes=recipes, short=short)
    render(make_console(sys.stdout, no_color=no_color), items)
