"""exp-combine as a function: combine the exposures of datasets, what ``musered
exp-combine`` and ``MuseRed.exp_combine`` both call.

The method (``drs``, ``mpdaf`` ...) picks the recipe: ``--method``, else the block's
``method`` key, else drs. The block is ``--params`` or the method recipe's own block.
Products are named ``{dataset}_{name}`` (``name`` default: the method), in folder
``{output_dir}/{dataset}_{name}``; with the block's ``names_with_selection`` there is one
product per entry, named after it (``GTO26``), ``name`` picking one entry. The block's
``select`` (or each entry's query) keeps only the exposures it picks
(:mod:`musered.selection`); the others are listed as left out, with the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import MuseredError

COMMAND = "exp-combine"
DEFAULT_METHOD = "drs"


def check_datasets(settings, datasets: Sequence[str]) -> None:
    """MuseredError for a dataset the settings do not define (also used by exp-align)."""
    known = getattr(settings, "datasets", {}) or {}
    for dataset in datasets:
        if dataset not in known:
            raise MuseredError(f"unknown dataset {dataset!r}; datasets in the settings: "
                               f"{', '.join(sorted(known)) or 'none'}")


def combine_recipe(settings, method: str | None = None, params_block: str | None = None):
    """(recipe, block name, method) of an exp-combine run; MuseredError for an unknown
    ``--params`` block or method."""
    from .commands.steps import method_recipe, methods

    if params_block is not None and params_block not in (settings.recipes or {}):
        blocks = ", ".join(sorted(b for b in (settings.recipes or {}) if b != "common")) or "none"
        raise MuseredError(f"--params {params_block}: no such block in the settings; blocks: {blocks}")
    default_block = params_block or method_recipe(COMMAND, DEFAULT_METHOD).name
    if method is None:
        method = str(settings.recipe_block(default_block).get("method") or DEFAULT_METHOD)
        if method not in methods(COMMAND):
            raise MuseredError(f"recipes.{default_block}.method: {method!r} is not one of "
                               f"{', '.join(methods(COMMAND))}")
    recipe = method_recipe(COMMAND, method)
    return recipe, params_block or recipe.name, method


def check_name(name: str) -> None:
    if not name or "/" in name or name.strip() != name:
        raise MuseredError(f"--name {name!r}: must be a plain name without '/' or spaces around it")


def combine_selections(settings, database, block_name: str, datasets: Sequence[str], name: str | None,
                       method: str) -> tuple[list, str]:
    """The selections to run, one product each (a list of
    :class:`~musered.selection.ExposureSelection` or None: every exposure), and the
    target-name suffix of products that are not named by their selection."""
    from .selection import exposure_selection

    block = settings.recipe_block(block_name)
    where = f"recipes.{block_name}"
    entries = block.get("names_with_selection")
    if not entries:
        name = name or method
        check_name(name)
        return [exposure_selection(database, block.get("select"), settings.version, "select",
                                   f"{where}.select")], f"_{name}"
    if name is not None:
        if name not in entries:
            raise MuseredError(f"--name {name}: not an entry of {where}.names_with_selection "
                               f"({', '.join(entries)})")
        entries = {name: entries[name]}
    if len(datasets) > 1:
        raise MuseredError(f"{where}.names_with_selection names its products ({', '.join(entries)}): "
                           f"combine one dataset at a time, not {len(datasets)}")
    return [exposure_selection(database, queries, settings.version, f"names_with_selection {out}",
                               f"{where}.names_with_selection.{out}", output_name=out)
            for out, queries in entries.items()], ""


def exp_combine(settings, database, datasets: Sequence[str], *, method: str | None = None,
                params_block: str | None = None, name: str | None = None, force: bool = False,
                dry_run: bool = False, progress: bool = False, console: Any = None, report: bool = True):
    """Combine the exposures of each dataset (module docstring); the runner's
    :class:`~musered.runner.StepSummary` of every product (one per dataset, or one per
    names_with_selection entry). Failed targets are in the summary, not raised:
    :func:`combine_problem` says what the command reports as an error."""
    from .runner import StepSummary, run_step

    datasets = list(datasets)
    check_datasets(settings, datasets)
    recipe, block_name, method = combine_recipe(settings, method, params_block)
    selections, suffix = combine_selections(settings, database, block_name, datasets, name, method)
    summary = StepSummary(recipe=block_name)
    for selection in selections:
        part = run_step(settings, database, recipe, datasets, params_block=params_block, force=force,
                        dry_run=dry_run, progress=progress, console=console, report=report,
                        dataset_suffix=suffix, exposure_selection=selection)
        for result in part.results:
            # a dataset with nothing selected is reported under the product it would have made
            if result.status == "excluded" and selection is not None and selection.output_name:
                result.name = selection.output_name
        summary.results.extend(part.results)
        summary.associations.extend(part.associations)
    return summary


def combine_problem(summary) -> str | None:
    """The error of an exp-combine run, or None: failed targets, or nothing combined at
    all (every dataset excluded)."""
    if summary.failed:
        return summary.failure_message()
    missing = [r for r in summary.results if r.status == "excluded"]
    if missing and not any(r.status in ("ok", "done", "dry-run") for r in summary.results):
        return f"{summary.recipe}: nothing to combine: {missing[0].name} ({missing[0].reason})"
    return None
