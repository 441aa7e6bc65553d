"""``musered copy-reduced``: copy another version's records to the current version."""

from __future__ import annotations

import click


@click.command("copy-reduced")
@click.argument("from_version", metavar="FROM_VERSION")
@click.option("-r", "--recipe", "recipes", multiple=True, metavar="RECIPE",
              help="Only this recipe's records: its block name as recorded (muse_bias, a --params "
                   "block) or its step (bias); repeatable.")
@click.option("-d", "--date", "dates", multiple=True, metavar="DATE",
              help="Only these targets: a target or exposure name, TPL_START, night, run or glob; repeatable.")
@click.option("--dry-run", is_flag=True, help="Say what would be copied; change nothing.")
@click.pass_obj
def command(app, from_version, recipes, dates, dry_run) -> None:
    """Copy the reduced records of FROM_VERSION to the current version.

    Each version sees only its own products (the settings' `version`, or
    `musered --redversion`). To start a new version without reducing everything
    again, copy the records of the steps to keep: the copies point to FROM_VERSION's
    files, which stay where they are; association uses them, and steps whose inputs
    and parameters are unchanged count them as done. A copied target replaces the
    current version's records of the same recipe and target.

    Example: musered --redversion 0.2 copy-reduced 0.1 -r bias -r flat -r wavecal
    """
    from ..copyreduced import copy_reduced

    report = copy_reduced(app.settings, app.database, from_version, recipes=recipes or None,
                          names=dates or None, dry_run=dry_run)
    for line in report.lines():
        click.echo(line)
