"""``musered demo``: simulate a night and reduce it end to end, then say how close it came."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import click

from ..errors import MuseredError


@click.command("demo")
@click.argument("directory", default="demo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--profile", type=click.Choice(["mini", "full"]), default="mini", show_default=True,
              help="mini: 2 IFUs and a small CCD (minutes); full: the real 24-IFU format (hours).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the simulation.")
@click.option("--fresh", is_flag=True, help="Delete DIRECTORY first and simulate again.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Parallel targets per step.")
@click.pass_context
def command(ctx: click.Context, directory: Path, profile: str, seed: int, fresh: bool, jobs: int | None) -> None:
    """Simulate a MUSE night into DIRECTORY and reduce it with musered.

    Runs simulate, update-db, info, process-calib, process-exp, exp-align,
    exp-combine and report, then prints the fidelity of the
    products against the simulator's truth. Running it again reuses the simulation and
    skips the steps already done (--fresh starts over).
    """
    from ..cli import AppContext
    from ..fidelity import fidelity_table
    from ..simulate import simulate
    from ..simulate.truth import load_truth
    from .info import command as info_command
    from .process_calib import command as process_calib_command
    from .exp_align import command as exp_align_command
    from .exp_combine import command as exp_combine_command
    from .process_exp import command as process_exp_command
    from .report import command as report_command
    from .update_db import command as update_db_command

    started = time.perf_counter()
    directory = directory.resolve()
    settings_file = directory / "settings.yml"
    if fresh and directory.exists():
        if not (settings_file.exists() and (directory / "truth").is_dir()):
            raise MuseredError(f"{directory} does not look like a musered demo; not deleting it")
        shutil.rmtree(directory)
    if not settings_file.exists():
        if directory.exists() and any(directory.iterdir()):
            raise MuseredError(f"{directory} exists and is not a musered demo; choose another folder")
        _stage(f"simulate one night ({profile} profile) into {directory}")
        simulate(directory, profile=profile, seed=seed, progress=None)
    else:
        _stage(f"reuse the simulation in {directory} (--fresh to start over)")

    app = AppContext(str(settings_file), ctx.obj.loglevel if ctx.obj else None,
                     ctx.obj.redversion if ctx.obj else None)
    _stage("musered update-db")
    _invoke(ctx, app, update_db_command, force=False, progress=False)
    _stage("musered info")
    _invoke(ctx, app, info_command, no_color=not sys.stdout.isatty())
    _stage("musered process-calib")
    _invoke(ctx, app, process_calib_command, date_or_glob=(), force=False, dry_run=False, jobs=jobs,
            params_block=None)
    _stage("musered process-exp")
    _invoke(ctx, app, process_exp_command, name_or_date=(), datasets=(), force=False, dry_run=False,
            jobs=jobs, params_block=None)
    dataset = next(iter(app.settings.datasets))
    _stage(f"musered exp-align {dataset}")
    _invoke(ctx, app, exp_align_command, datasets=(dataset,), method=None, name=None, params_block=None,
            filt=None, dates=(), force=False, dry_run=False)
    _stage(f"musered exp-combine {dataset}")
    _invoke(ctx, app, exp_combine_command, datasets=(dataset,), method=None, params_block=None, name=None,
            force=False, dry_run=False)
    _stage("musered report")
    _invoke(ctx, app, report_command, out=None)

    _stage("fidelity against the simulator's truth")
    rows = fidelity_table(app.database, load_truth(directory), app.settings.version)
    widths = [max((len(text) for text in column), default=0)
              for column in zip(*((row.quantity, row.measured, row.goal) for row in rows))]
    for row in rows:
        click.echo(f"  {row.quantity:<{widths[0]}}  {row.measured:<{widths[1]}}  goal {row.goal:<{widths[2]}}  "
                   f"{'ok' if row.ok else 'MISSED'}")
    click.echo(f"\nReduced products: {app.settings.reduced_path}")
    click.echo(f"Demo finished in {time.perf_counter() - started:.0f} s.")


def _stage(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def _invoke(ctx: click.Context, app, command: click.Command, **params) -> None:
    """Run another musered command on the demo's settings, as if typed in DIRECTORY."""
    with click.Context(command, parent=ctx, obj=app) as sub:
        sub.invoke(command, **params)
