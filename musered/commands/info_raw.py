"""``musered info-raw [column:value ...]``: raw files matching a query (as ``info --raw``)."""

from __future__ import annotations

import sys

import click


@click.command("info-raw")
@click.argument("terms", nargs=-1, metavar="[COLUMN:VALUE]...")
@click.option("--no-color", is_flag=True, help="Plain text without colours (also when output is piped).")
@click.pass_obj
def command(app, terms, no_color) -> None:
    """List raw files, with their observing conditions, matching every COLUMN:VALUE
    (also COLUMN=VALUE; a column or an additional keyword; a repeated column matches any
    of its values; globs such as '*T11:40*').

    Example: musered info-raw DPR_CATG:CALIB night:2017-06-18
    """
    from ..infoquery import raw_query_table
    from ..infotable import make_console, render

    render(make_console(sys.stdout, no_color=no_color), [raw_query_table(app.settings, app.database, terms)])
