"""Shared plumbing of the process-* commands: which steps exist and how to run them."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import MuseredError


def registered_steps(steps: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (flag, recipe name) pairs whose recipe is registered: a step whose recipe is
    not there yet gets no command-line flag."""
    from recipes.registry import all_recipes

    known = all_recipes()
    return [(flag, name) for flag, name in steps if name in known]


def run_selected_steps(app, recipe_names: Sequence[str], selection: Sequence[str], *, params_block: str | None,
                       force: bool, dry_run: bool, jobs: int | None) -> None:
    """Run the recipes in order on the selected targets; raise a one-line MuseredError
    naming every failed target once all steps have run."""
    from recipes.registry import get_recipe

    from ..runner import failure_message, run_steps

    if params_block and len(recipe_names) > 1:
        raise MuseredError("--params applies to one step: choose that step's flag too")
    recipes = [get_recipe(name) for name in recipe_names]
    summaries = run_steps(app.settings, app.database, recipes, list(selection) or None, jobs=jobs,
                          force=force, dry_run=dry_run, params_block=params_block,
                          progress=sys.stderr.isatty())
    message = failure_message(summaries)
    if message:
        raise MuseredError(message)
