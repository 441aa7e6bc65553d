"""The recipes musered can run, by DRS name, and the order they run in.

Every module of :mod:`recipes.steps` defines one ``RECIPE`` and is registered when the
registry is first asked; modules named in the environment variable ``MUSERED_RECIPES``
(comma-separated, importable names) and the ``musered.recipes`` entry points are added
after them, so a recipe can live outside this package. :func:`register` adds a recipe
object directly (tests). Recipe modules never import this module.

:func:`step_order` derives the order of the steps from the declarations: a recipe runs
after every recipe its inputs come from (``from_recipe``) and after every recipe that
writes one of its calibrations that may come from ``reduced``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterable
from importlib.metadata import entry_points

from recipes.base import GROUPS, REDUCED, Recipe

ENV_MODULES = "MUSERED_RECIPES"
ENTRY_POINT_GROUP = "musered.recipes"

RECIPES: dict[str, Recipe] = {}
_loaded: set[str] = set()


def register(recipe: Recipe) -> Recipe:
    """Add (or replace) a recipe; returns it."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"register() takes a recipes.base.Recipe, not {type(recipe).__name__}")
    _load_all()
    RECIPES[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    """Remove a recipe added by :func:`register` (tests)."""
    RECIPES.pop(name, None)


def get_recipe(name: str) -> Recipe:
    """The recipe named ``name`` (DRS spelling); KeyError with the known names otherwise."""
    _load_all()
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(RECIPES)) or "none"
        raise KeyError(f"unknown recipe {name!r}; known recipes: {known}") from None


def all_recipes() -> dict[str, Recipe]:
    """Every registered recipe by name, in step order."""
    _load_all()
    return {recipe.name: recipe for recipe in step_order(RECIPES.values())}


def recipes_of(command: str) -> list[Recipe]:
    """The recipes a musered command runs (``process-calib``, ``exp-align`` ...), in step order."""
    return [r for r in all_recipes().values() if r.command_name == command]


def step_recipe(command: str, step: str) -> Recipe | None:
    """The recipe of ``command`` whose step (flag or method) is ``step``, or None."""
    return next((r for r in recipes_of(command) if r.step_name == step), None)


def _load_all() -> None:
    from recipes import steps

    names = [f"recipes.steps.{m.name}" for m in sorted(pkgutil.iter_modules(steps.__path__), key=lambda m: m.name)]
    names += [n.strip() for n in os.environ.get(ENV_MODULES, "").split(",") if n.strip()]
    for name in names:
        if name not in _loaded:
            _loaded.add(name)
            _add_module(importlib.import_module(name), name)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {entry.name}"
        if key not in _loaded:
            _loaded.add(key)
            loaded = entry.load()
            if isinstance(loaded, Recipe):
                RECIPES[loaded.name] = loaded
            else:
                _add_module(loaded, key)


def _add_module(module, where: str) -> None:
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"{where}: a recipe module defines RECIPE = recipes.base.Recipe(...)")
    RECIPES[recipe.name] = recipe


def step_order(recipes: Iterable[Recipe]) -> list[Recipe]:
    """The recipes in the order they must run (see the module docstring); independent
    recipes go by group (sequence, exposure, run, dataset), command, then name.

    >>> [r.name for r in step_order(all_recipes().values())][:3]
    ['muse_bias', 'muse_dark', 'muse_flat']
    """
    recipes = list(recipes)
    writers: dict[str, set[str]] = {}
    for recipe in recipes:
        for tag in recipe.outputs:
            writers.setdefault(tag, set()).add(recipe.name)
    names = {r.name for r in recipes}
    after: dict[str, set[str]] = {}
    for recipe in recipes:
        deps = {recipe.from_recipe} & names if recipe.from_recipe else set()
        for calib in recipe.calibs:
            if REDUCED in calib.sources:
                deps |= writers.get(calib.tag, set())
        after[recipe.name] = deps - {recipe.name}
    by_name = {r.name: r for r in recipes}
    rank = {group: i for i, group in enumerate(GROUPS)}
    done: list[Recipe] = []
    placed: set[str] = set()
    while len(done) < len(recipes):
        ready = [by_name[n] for n in by_name if n not in placed and after[n] <= placed]
        if not ready:  # a cycle: keep the rest in the same stable order
            ready = [by_name[n] for n in by_name if n not in placed]
        chosen = min(ready, key=lambda r: (rank[r.group], r.command_name, r.name))
        done.append(chosen)
        placed.add(chosen.name)
    return done
