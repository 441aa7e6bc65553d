"""``musered std-combine``: combine the standard-star calibrations of a run's nights."""

from __future__ import annotations

import click


@click.command("std-combine")
@click.argument("run_or_date", nargs=-1)
@click.option("--name", default=None, metavar="NAME",
              help="Combine everything selected into one product named NAME (default: per run).")
@click.option("--mode", default=None, metavar="INS_MODE", help="Only standards of this instrument mode.")
@click.option("--method", type=click.Choice(["median", "mean"]), default=None,
              help="How to combine (default: the block's method, else median).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take method, from_recipe, exclude_flags and output_dir from this settings block.")
@click.option("--force", is_flag=True, help="Combine again even if the inputs are unchanged.")
@click.option("--dry-run", is_flag=True, help="List the inputs of each combination; write nothing.")
@click.pass_obj
def command(app, run_or_date, name, mode, method, params_block, force, dry_run) -> None:
    """Combine the STD_RESPONSE and STD_TELLURIC of several nights into one per run.

    RUN_OR_DATE: a run of the settings or a night (YYYY-MM-DD, grouped by its run);
    nothing means every run. The result is stored under the run's name: use it with
    `frames: {STD_RESPONSE: RUN, STD_TELLURIC: RUN}` in the muse_scipost block.
    """
    from ..errors import MuseredError
    from ..stdcombine import std_combine

    results = std_combine(app.settings, app.database, list(run_or_date), name=name, mode=mode, method=method,
                          params_block=params_block, force=force, dry_run=dry_run)
    if results and all(r.status == "skipped" for r in results):
        raise MuseredError("nothing combined: " + "; ".join(f"{r.name}: {r.message}" for r in results))
    for result in results:
        click.echo(f"{result.name}: {result.status}, {result.message}")
