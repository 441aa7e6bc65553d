"""``musered exp-combine``: combine the exposures of a dataset into one cube."""

from __future__ import annotations

import sys

import click

from ..errors import MuseredError
from .steps import StepsCommand

COMMAND = "exp-combine"


@click.command(COMMAND, cls=StepsCommand, musered_command=COMMAND, step_flags=False)
@click.argument("datasets", nargs=-1, required=True, metavar="DATASET...")
@click.option("--method", default=None, metavar="METHOD",
              help="The combination recipe, by its method (see below; default drs).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters, frames and from_recipe from this settings block "
                   "(default: the block named after the method's recipe).")
@click.option("--name", default=None, metavar="NAME",
              help="Name of the result: DATASET_NAME, folder exp_combine/DATASET_NAME (default NAME: the "
                   "method); with the block's names_with_selection, the entry to combine (default: all).")
@click.option("-f", "--force", is_flag=True, help="Re-run datasets that are already done.")
@click.option("--dry-run", is_flag=True, help="Print the frames chosen; run nothing.")
@click.pass_obj
def command(app, datasets, method, params_block, name, force, dry_run) -> None:
    """Combine the exposures of DATASET into one cube (DATACUBE_FINAL).

    Methods: {methods}.

    drs: the PIXTABLE_REDUCED of the dataset's exposures made by the block's from_recipe
    (default muse_scipost), shifted by the block's OFFSET_LIST frame (a file, or a stored
    name such as OFFSET_LIST_drs from exp-align), weighted and resampled once with
    cosmic-ray rejection → DATACUBE_FINAL, IMAGE_FOV, EXPMAP. mpdaf: the DATACUBE_FINAL of
    from_recipe (default muse_scipost_make_cube, all on one OUTPUT_WCS) combined voxel by
    voxel → DATACUBE_FINAL, EXPMAP_CUBE, EXPMAP_IMAGE, STATPIX, IMAGE_FOV. The method can
    also be set by the block's `method`.

    Every exposure of the dataset is combined, flagged ones included, unless the block
    says `exclude_flags: true` (any flag) or `exclude_flags: [FLAG, ...]` (those flags).
    The block's `select: {TABLE: "SQL condition" or {column: value}}` keeps only the
    exposures whose name the query picks (raw: '"TEL_AIRM_START" < 1.07'), and
    `names_with_selection: {OUTPUT_NAME: {TABLE: ...}}` makes one product per entry,
    named OUTPUT_NAME (--name picks one). Each exposure left out (not selected, flagged,
    excluded in frames.exclude, or with no product of from_recipe) is listed here with
    the reason, and at the top of the result's log.txt.
    """
    from ..expcombine import combine_problem, combine_recipe, exp_combine

    settings = app.settings
    summary = exp_combine(settings, app.database, datasets, method=method, params_block=params_block, name=name,
                          force=force, dry_run=dry_run, progress=sys.stderr.isatty())
    _, block_name, method = combine_recipe(settings, method, params_block)
    for r in summary.results:
        if r.status in ("ok", "done"):
            click.echo(f"{r.name}: combined cube in {r.folder} ({block_name}, method {method}, {r.status})")
        echo_left_out(r)
    problem = combine_problem(summary)
    if problem:
        raise MuseredError(problem)


def echo_left_out(result) -> None:
    """Name every exposure a dataset result left out, and why (a combined cube must never
    lose an exposure silently)."""
    if result.left_out:
        click.echo(f"{result.name}: {len(result.left_out)} exposure(s) left out:")
        for name, reason in sorted(result.left_out.items()):
            click.echo(f"  {name}: {reason}")
