"""``musered exp-align``: offsets between the exposures of a dataset (OFFSET_LIST)."""

from __future__ import annotations

import sys

import click

from ..errors import MuseredError
from .exp_combine import echo_left_out
from .steps import StepsCommand

COMMAND = "exp-align"


@click.command(COMMAND, cls=StepsCommand, musered_command=COMMAND, step_flags=False)
@click.argument("datasets", nargs=-1, required=True, metavar="DATASET...")
@click.option("--method", default=None, metavar="METHOD",
              help="The alignment recipe, by its method (see below; default drs).")
@click.option("--name", default=None, metavar="NAME",
              help="Name the OFFSET_LIST is stored under (default OFFSET_LIST_<method>).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters, frames, from_recipe and filt from this settings block.")
@click.option("--filter", "filt", default=None, metavar="FILTER",
              help="IMAGE_FOV filter to align on (default: the block's filt, else white).")
@click.option("--date", "dates", multiple=True, metavar="DATE",
              help="Only use these exposures: a night, run, exposure name or glob (repeatable).")
@click.option("--njobs", type=click.IntRange(min=1), default=None,
              help="Align this many datasets at once (process pool; default: the settings' executor).")
@click.option("-f", "--force", is_flag=True, help="Re-run datasets that are already done.")
@click.option("--dry-run", is_flag=True, help="Print the frames chosen; run nothing.")
@click.pass_obj
def command(app, datasets, method, name, params_block, filt, dates, njobs, force, dry_run) -> None:
    """Compute the offsets between the exposures of DATASET (an OFFSET_LIST).

    Methods: {methods}.

    The inputs are the IMAGE_FOV of the dataset's exposures made by the recipe named by
    the block's from_recipe (default: the method recipe's declared source), in the
    filter filt (default white); flagged exposures are used unless the block says
    `exclude_flags: true` (any flag) or lists flag names, and each exposure left out is
    listed with its reason (also in the log.txt of the result). The OFFSET_LIST is stored
    as DATASET_NAME (NAME default OFFSET_LIST_drs), so that a block's
    `frames: {OFFSET_LIST: OFFSET_LIST_drs}` finds it for that dataset. An alignment
    preview (alignment.png: the exposures combined with the offsets applied, sources
    marked) is written next to the products.

    The block's `select: {TABLE: "SQL condition" or {column: value}}` keeps only the
    exposures whose name the query picks (as exp-combine's).

    The method is --method, else the `method` key of the muse_exp_align (or --params)
    block, else drs. The image method reads the `image_align` block (or --params):
    `frames: {REFERENCE_IMAGE: hst.fits}` and params filter, psf, beta, fwhm, maxshift.
    """
    from ..expalign import exp_align

    report = exp_align(app.settings, app.database, datasets, method=method, name=name, params_block=params_block,
                       filt=filt, dates=dates, njobs=njobs, force=force, dry_run=dry_run,
                       progress=sys.stderr.isatty())
    for result in report.summary.results:
        echo_left_out(result)
    if report.failed:
        raise MuseredError(report.summary.failure_message())
    for dataset, problem in report.preview_problems.items():
        click.echo(f"{dataset}: alignment preview not drawn: {problem}", err=True)
    for line in report.lines():
        click.echo(line)
