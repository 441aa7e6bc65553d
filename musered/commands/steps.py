"""Shared plumbing of the commands that run recipes: which steps a command has (from the
recipe registry, at the time the command runs) and how to run them.

A recipe declares its command (``process-calib`` for sequences, ``process-exp`` for
exposures, ``exp-align``/``exp-combine`` for datasets, ``std-combine`` for runs), its step
flag or method, and whether it runs by default; the order comes from
:func:`recipes.registry.step_order`. Nothing here names a recipe.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence

import click

from ..errors import MuseredError


def command_recipes(command: str):
    """The registered recipes of a musered command, in step order."""
    from recipes.registry import recipes_of

    return recipes_of(command)


def chosen_steps(command: str, flags: Mapping[str, bool]):
    """The recipes to run for the step flags given: the flagged ones (each with its
    ``from_recipe`` step first when it declares ``runs_source_first``), else every recipe
    that runs by default; in step order."""
    recipes = command_recipes(command)
    by_name = {r.name: r for r in recipes}
    chosen = {r.name for r in recipes if flags.get(r.step_name)}
    if not chosen:
        chosen = {r.name for r in recipes if r.by_default}
    for name in list(chosen):
        recipe = by_name[name]
        if recipe.runs_source_first and recipe.from_recipe in by_name:
            chosen.add(recipe.from_recipe)
    return [r for r in recipes if r.name in chosen]


def method_recipe(command: str, method: str):
    """The recipe of a dataset command (exp-align, exp-combine) for ``--method``;
    MuseredError listing the methods otherwise."""
    from recipes.registry import step_recipe

    recipe = step_recipe(command, method)
    if recipe is None:
        raise MuseredError(f"{command}: unknown method {method!r}; methods: {', '.join(methods(command))}")
    return recipe


def methods(command: str) -> list[str]:
    return sorted(r.step_name for r in command_recipes(command))


#: Step flags a command shows before their recipe exists (MuseRed's names, kept for its
#: users): step -> the issue that brings it. A registered recipe of that step replaces it.
RESERVED_STEPS: dict[str, dict[str, str]] = {
    "process-exp": {"superflat": "issue 16", "zap": "issue 16", "fsf": "issue 17"},
}


def reserved_steps(command: str) -> dict[str, str]:
    """The reserved step flags of ``command`` that no registered recipe provides yet."""
    provided = {r.step_name for r in command_recipes(command)}
    return {step: issue for step, issue in RESERVED_STEPS.get(command, {}).items() if step not in provided}


class StepsCommand(click.Command):
    """A click command that runs the recipes of ``musered_command``, read from the registry
    when the command is used (so a recipe registered later is there): with ``step_flags``
    one ``--STEP`` flag per recipe; in the help text ``{steps}`` lists the steps that run
    by default and ``{methods}`` each method with its recipe."""

    def __init__(self, *args, musered_command: str, step_flags: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.musered_command = musered_command
        self.step_flags = step_flags

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        if not self.step_flags:
            return params
        names = {p.name for p in params}
        flags = []
        for recipe in command_recipes(self.musered_command):
            if recipe.step_name in names:
                continue
            note = "" if recipe.by_default else " (only when asked for)"
            flags.append(click.Option([f"--{recipe.step_name}"], is_flag=True,
                                      help=f"Run {recipe.name}{note}: {recipe.description}"))
        for step, issue in reserved_steps(self.musered_command).items():
            if step not in names:
                flags.append(click.Option([f"--{step}"], is_flag=True,
                                          help=f"({issue}: not available yet)"))
        return params[:-1] + flags + params[-1:]  # --help stays last

    def invoke(self, ctx: click.Context):
        for step, issue in reserved_steps(self.musered_command).items():
            if ctx.params.pop(step, False):
                raise MuseredError(f"{self.musered_command} --{step}: not available yet ({issue})")
        return super().invoke(ctx)

    def _expand(self, text: str) -> str:
        recipes = command_recipes(self.musered_command)
        steps = ", ".join(r.step_name for r in recipes if r.by_default)
        described = "; ".join(f"{r.step_name} ({r.name}: {r.description.rstrip('.')})" for r in recipes)
        return text.replace("{steps}", steps).replace("{methods}", described)

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        original = self.help
        self.help = self._expand(original or "")
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = original

    def get_short_help_str(self, limit: int = 45) -> str:
        # the command list (`musered --help`) must not wait for the registry (seconds of
        # imports): the placeholders are dropped there, expanded in the command's own help
        original = self.help
        self.help = re.sub(r":?\s*\{(steps|methods)\}", "", original or "")
        try:
            return super().get_short_help_str(limit)
        finally:
            self.help = original


def run_selected_steps(app, recipes: Sequence, selection: Sequence[str], *, params_block: str | None,
                       force: bool, dry_run: bool, jobs: int | None) -> None:
    """Run the recipes in order on the selected targets; raise a one-line MuseredError
    naming every failed target once all steps have run."""
    from ..runner import failure_message, run_steps

    if params_block and len(recipes) > 1:
        raise MuseredError("--params applies to one step: choose that step's flag too")
    summaries = run_steps(app.settings, app.database, list(recipes), list(selection) or None, jobs=jobs,
                          force=force, dry_run=dry_run, params_block=params_block,
                          progress=sys.stderr.isatty())
    message = failure_message(summaries)
    if message:
        raise MuseredError(message)
