"""``musered clean``: remove products and their records (a dry run unless --force)."""

from __future__ import annotations

import click


@click.command("clean")
@click.option("-r", "--recipe", "recipes", multiple=True, metavar="RECIPE",
              help="Only this recipe's products: its block name as recorded (muse_bias, a --params "
                   "block) or its step (bias); repeatable.")
@click.option("-d", "--date", "dates", multiple=True, metavar="DATE",
              help="Only these targets: an exposure name, TPL_START, night, run or glob; repeatable.")
@click.option("-n", "--night", "nights", multiple=True, metavar="NIGHT",
              help="Only the products of this night (YYYY-MM-DD), run or glob; repeatable.")
@click.option("--force", is_flag=True, help="Really remove; without it nothing is done (dry run).")
@click.option("--keep-files", is_flag=True, help="Remove the database records only, keep the files.")
@click.pass_obj
def command(app, recipes, dates, nights, force, keep_files) -> None:
    """Remove the products of the current version, and their database records.

    The products selected by --recipe, --date and --night (all given criteria must hold;
    none selects every product of the version) are listed, and only removed with
    --force. Their folders are removed when inside reduced_path and used by no other
    record; products shared with another version stay on disk.

    Example: musered clean -r bias -n 2017-06-16 --force
    """
    from ..clean import clean

    report = clean(app.settings, app.database, recipes=recipes, dates=dates, nights=nights,
                   remove_files=not keep_files, force=force)
    for line in report.lines():
        click.echo(line)
