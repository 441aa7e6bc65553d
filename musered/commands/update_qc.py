"""``musered update-qc [--type PRO_CATG ...] [--recipe NAME] [--force]``: QC keywords of the
products into the QC tables."""

from __future__ import annotations

import click


@click.command("update-qc")
@click.option("--type", "pro_catg", multiple=True, metavar="PRO_CATG",
              help="Only the products of this type (MASTER_BIAS, DATACUBE_FINAL ...; repeatable).")
@click.option("--recipe", "recipe_name", default=None, metavar="NAME",
              help="Only the products of this recipe (its settings block name, e.g. muse_bias).")
@click.option("-f", "--force", is_flag=True, help="Read every product file again.")
@click.pass_obj
def command(app, pro_catg: tuple[str, ...], recipe_name: str | None, force: bool) -> None:
    """Fill the QC tables qc_<PRO_CATG> from the products of the current version.

    One row per product file and header holding ESO QC keywords (columns QC_...); files
    already read for their current run are skipped unless --force. Show them with
    `musered info --qc PRO_CATG`.
    """
    from ..qcupdate import update_qc

    report = update_qc(app.settings, app.database, pro_catg=list(pro_catg) or None, force=force,
                       recipe_name=recipe_name)
    click.echo(report.summary())
