"""``musered process-exp``: run the science recipes on exposures."""

from __future__ import annotations

import click

from .steps import registered_steps, run_selected_steps

# In the order they must run; make_cube only when asked for (as in MuseRed).
EXP_STEPS = (
    ("scibasic", "muse_scibasic"),
    ("standard", "muse_standard"),
    ("scipost", "muse_scipost"),
    ("makecube", "muse_scipost_make_cube"),
)
NOT_BY_DEFAULT = {"muse_scipost_make_cube"}


def _build_command() -> click.Command:
    steps = registered_steps(EXP_STEPS)

    @click.command("process-exp")
    @click.argument("name_or_date", nargs=-1)
    @click.option("--dataset", "datasets", multiple=True, metavar="NAME",
                  help="Only the exposures of this dataset (repeatable).")
    @click.option("--force", is_flag=True, help="Re-run exposures that are already done.")
    @click.option("--dry-run", is_flag=True, help="Print the frames chosen for each exposure; run nothing.")
    @click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
                  help="Run this many exposures at once (process pool).")
    @click.option("--params", "params_block", default=None, metavar="BLOCK",
                  help="Take parameters, frames and output_dir from this settings block (one step only).")
    @click.pass_obj
    def command(app, name_or_date, datasets, force, dry_run, jobs, params_block, **flags) -> None:
        """Process science and standard exposures: scibasic, standard, scipost.

        NAME_OR_DATE selects exposures: an exposure name (2017-06-16T01:34:56.867), a
        night, a run name or a glob; nothing means every exposure. With no step flag,
        scibasic, standard and scipost run in order; --standard runs scibasic on the
        standard stars first. Flagged or excluded exposures are skipped and listed.
        Exits non-zero, naming them, if any exposure failed.
        """
        chosen = [name for flag, name in steps if flags.get(flag)]
        if flags.get("standard") and "muse_scibasic" not in chosen:
            chosen.insert(0, "muse_scibasic")
        if not chosen:
            chosen = [name for _, name in steps if name not in NOT_BY_DEFAULT]
        selection = list(name_or_date) + list(datasets)
        run_selected_steps(app, chosen, selection, params_block=params_block, force=force,
                           dry_run=dry_run, jobs=jobs)

    for flag, name in steps:
        command = click.option(f"--{flag}", is_flag=True, help=f"Run {name}.")(command)
    return command


command = _build_command()
