"""``musered std-combine``: combine the standard-star calibrations of a run's nights.

The recipe (group ``run``, declared in ``recipes/steps``) runs through the same runner as
every other: one target per run of the settings. This command only turns its selectors
into that selection: a run name selects the run; a night (YYYY-MM-DD) selects the run that
holds it and restricts the inputs to the nights named; ``--name`` combines everything
selected into one product named NAME; ``--mode`` keeps the standards of one mode.
"""

from __future__ import annotations

import copy
import datetime as dt
import sys

import click

from ..errors import MuseredError
from .steps import StepsCommand, command_recipes

COMMAND = "std-combine"


def run_selection(settings, selectors: tuple[str, ...], name: str | None):
    """(settings to run with, selection, nights the inputs are restricted to or None)."""
    runs = getattr(settings, "runs", {}) or {}
    if not selectors and not runs:
        raise MuseredError("no runs in the settings: give the nights to combine (and --name)")
    selected_runs, nights = [], set()
    named_nights = False
    for selector in selectors or tuple(runs):
        if selector in runs:
            run = runs[selector]
            selected_runs.append(selector)
            nights |= {(run.start_date + dt.timedelta(days=k)).isoformat()
                       for k in range((run.end_date - run.start_date).days + 1)}
            continue
        try:
            night = dt.date.fromisoformat(selector).isoformat()
        except ValueError:
            known = ", ".join(runs) or "none in the settings"
            raise MuseredError(f"{selector!r} is neither a run (known: {known}) nor a night (YYYY-MM-DD)") from None
        group = settings.run_of(night)
        if group is None and name is None:
            raise MuseredError(f"night {night} is in no run of the settings: add the run under 'runs' or give --name")
        selected_runs.append(group)
        nights.add(night)
        named_nights = True
    if name is None:
        return settings, sorted(set(selected_runs)), sorted(nights) if named_nights else None
    from ..settings.model import Run

    days = sorted(dt.date.fromisoformat(n) for n in nights)
    out = copy.copy(settings)
    out.runs = {name: Run(name, days[0], days[-1])}
    return out, [name], sorted(nights)


def std_combine(settings, database, selectors: tuple[str, ...] = (), *, name: str | None = None,
                mode: str | None = None, method: str | None = None, params_block: str | None = None,
                force: bool = False, dry_run: bool = False, progress: bool = False, console=None,
                report: bool = True):
    """Run the run-group recipe on the selection (see the module docstring); the runner's
    :class:`~musered.runner.StepSummary`. ``method`` (else the block's ``method`` key, as
    MuseRed wrote it, else the recipe default) sets the recipe's parameter of that name."""
    from ..runner import run_step

    if name is not None and (not name or "/" in name or name.strip() != name):
        raise MuseredError(f"--name {name!r}: must be a plain name without '/' or spaces around it")
    (recipe,) = command_recipes(COMMAND)
    if params_block is not None and params_block not in (settings.recipes or {}):
        raise MuseredError(f"--params {params_block}: no block recipes.{params_block} in the settings")
    method = method or settings.recipe_block(params_block or recipe.name).get("method")
    run_settings, selection, nights = run_selection(settings, tuple(selectors), name)
    query = {"night": nights} if nights is not None else {}
    if mode is not None:
        query["INS_MODE"] = mode
    return run_step(run_settings, database, recipe, selection, params_block=params_block,
                    cli_params={"method": method} if method else None, force=force, dry_run=dry_run,
                    progress=progress, console=console, report=report, inputs_query=query or None)


@click.command(COMMAND, cls=StepsCommand, musered_command=COMMAND, step_flags=False)
@click.argument("run_or_date", nargs=-1)
@click.option("--name", default=None, metavar="NAME",
              help="Combine everything selected into one product named NAME (default: per run).")
@click.option("--mode", default=None, metavar="INS_MODE", help="Only standards of this instrument mode.")
@click.option("--method", default=None, metavar="METHOD",
              help="How to combine: the recipe's method parameter (default: the block's, else median).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters, from_recipe, exclude_flags and output_dir from this settings block.")
@click.option("-f", "--force", is_flag=True, help="Combine again even if the inputs and parameters are unchanged.")
@click.option("--dry-run", is_flag=True, help="List the inputs of each combination; write nothing.")
@click.pass_obj
def command(app, run_or_date, name, mode, method, params_block, force, dry_run) -> None:
    """Combine the STD_RESPONSE and STD_TELLURIC of several nights into one per run.

    Recipe: {methods}.

    RUN_OR_DATE: a run of the settings or a night (YYYY-MM-DD, grouped by its run);
    nothing means every run. The result is stored under the run's name: use it with
    `frames: {STD_RESPONSE: RUN, STD_TELLURIC: RUN}` in the muse_scipost block.
    Flagged standards are combined unless the block says `exclude_flags: true` (any flag)
    or lists flag names; each standard left out is listed with the reason.
    """
    summary = std_combine(app.settings, app.database, tuple(run_or_date), name=name, mode=mode, method=method,
                          params_block=params_block, force=force, dry_run=dry_run, progress=sys.stderr.isatty(),
                          report=False)
    from .exp_combine import echo_left_out

    for r in summary.results:
        if r.status in ("ok", "done") and not dry_run:
            click.echo(f"{r.name}: {r.status}, {', '.join(p.name for p in r.products) or r.reason} in {r.folder}")
        echo_left_out(r)
    if summary.failed:
        raise MuseredError(summary.failure_message())
    if summary.results and all(r.status == "excluded" for r in summary.results):
        raise MuseredError("nothing combined: " + "; ".join(f"{r.name}: {r.reason}" for r in summary.results))
