"""``musered process-exp``: run the science recipes on exposures."""

from __future__ import annotations

import click

from .steps import StepsCommand, chosen_steps, run_selected_steps

COMMAND = "process-exp"


@click.command(COMMAND, cls=StepsCommand, musered_command=COMMAND)
@click.argument("name_or_date", nargs=-1)
@click.option("--dataset", "datasets", multiple=True, metavar="NAME",
              help="Only the exposures of this dataset (repeatable).")
@click.option("-f", "--force", is_flag=True, help="Re-run exposures that are already done.")
@click.option("--dry-run", is_flag=True, help="Print the frames chosen for each exposure; run nothing.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Run this many exposures at once (process pool).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters, frames and output_dir from this settings block (one step only).")
@click.pass_obj
def command(app, name_or_date, datasets, force, dry_run, jobs, params_block, **flags) -> None:
    """Process science and standard exposures: {steps}.

    NAME_OR_DATE selects exposures: an exposure name (2017-06-16T01:34:56.867), a
    night, a run name or a glob; nothing means every exposure. With no step flag, the
    steps above run in order; a step whose inputs come from another step that it needs
    on the same exposures (--standard: scibasic of the standard stars) runs it first.
    Flagged exposures are processed like any other (as in MuseRed; a block's
    exclude_flags leaves them out of that step); exposures excluded in frames.exclude
    are skipped and listed. Exits non-zero, naming them, if any exposure failed.
    """
    selection = list(name_or_date) + list(datasets)
    run_selected_steps(app, chosen_steps(COMMAND, flags), selection, params_block=params_block,
                       force=force, dry_run=dry_run, jobs=jobs)
