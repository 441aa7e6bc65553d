"""``musered process-calib``: run the calibration recipes on calibration sequences."""

from __future__ import annotations

import click

from .steps import StepsCommand, chosen_steps, run_selected_steps

COMMAND = "process-calib"


@click.command(COMMAND, cls=StepsCommand, musered_command=COMMAND)
@click.argument("date_or_glob", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Re-run sequences that are already done.")
@click.option("--dry-run", is_flag=True, help="Print the frames chosen for each sequence; run nothing.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Run this many sequences at once (process pool).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters and frames from this settings block (one step only).")
@click.pass_obj
def command(app, date_or_glob, force, dry_run, jobs, params_block, **flags) -> None:
    """Process calibration sequences: {steps}.

    DATE_OR_GLOB selects what to run: a night (2017-06-16), a run name, a TPL_START
    or a glob ("2017-06-16*"); nothing means every night. With no step flag, the steps
    above run, in order. Sequences already processed (same inputs, same parameters) are
    skipped unless --force. Exits non-zero, naming them, if any sequence failed.
    """
    run_selected_steps(app, chosen_steps(COMMAND, flags), date_or_glob, params_block=params_block,
                       force=force, dry_run=dry_run, jobs=jobs)
