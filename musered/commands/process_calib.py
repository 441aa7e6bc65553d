"""``musered process-calib``: run the calibration recipes on calibration sequences."""

from __future__ import annotations

import click

from .steps import registered_steps, run_selected_steps

# In the order they must run; dark is only run when asked for (as in MuseRed).
CALIB_STEPS = (
    ("bias", "muse_bias"),
    ("dark", "muse_dark"),
    ("flat", "muse_flat"),
    ("wavecal", "muse_wavecal"),
    ("lsf", "muse_lsf"),
    ("twilight", "muse_twilight"),
)
NOT_BY_DEFAULT = {"muse_dark"}


def _build_command() -> click.Command:
    steps = registered_steps(CALIB_STEPS)

    @click.command("process-calib")
    @click.argument("date_or_glob", nargs=-1)
    @click.option("--force", is_flag=True, help="Re-run sequences that are already done.")
    @click.option("--dry-run", is_flag=True, help="Print the frames chosen for each sequence; run nothing.")
    @click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
                  help="Run this many sequences at once (process pool).")
    @click.option("--params", "params_block", default=None, metavar="BLOCK",
                  help="Take parameters and frames from this settings block (one step only).")
    @click.pass_obj
    def command(app, date_or_glob, force, dry_run, jobs, params_block, **flags) -> None:
        """Process calibration sequences: bias, flat, wavecal, lsf, twilight.

        DATE_OR_GLOB selects what to run: a night (2017-06-16), a run name, a TPL_START
        or a glob ("2017-06-16*"); nothing means every night. With no step flag, all
        steps but dark run, in order. Sequences already processed are skipped unless
        --force. Exits non-zero, naming them, if any sequence failed.
        """
        chosen = [name for flag, name in steps if flags.get(flag)]
        if not chosen:
            chosen = [name for _, name in steps if name not in NOT_BY_DEFAULT]
        run_selected_steps(app, chosen, date_or_glob, params_block=params_block, force=force,
                           dry_run=dry_run, jobs=jobs)

    for flag, name in steps:
        command = click.option(f"--{flag}", is_flag=True, help=f"Run {name}.")(command)
    return command


command = _build_command()
