"""Markdown documentation of recipe declarations (for docs/recipes.md).

``render_recipe(recipe)`` describes one recipe: its purpose, raw inputs (with the
minimum count), calibrations (required / optional / excluded by default), products and
a parameter table (DRS name, type, default, allowed values or range, help).
``render_recipes(recipes)`` joins several under a title. Nothing here is hand-written
per recipe: the declarations are the single source.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import Param, Recipe


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(param: Param) -> str:
    if param.default is None:
        return "–"
    if isinstance(param.default, bool):
        return "`true`" if param.default else "`false`"
    return f"`{param.default}`"


def _allowed(param: Param) -> str:
    if param.choices is not None:
        return ", ".join(f"`{c}`" for c in param.choices)
    bounds = []
    if param.minimum is not None:
        bounds.append(f"≥ {param.minimum:g}")
    if param.maximum is not None:
        bounds.append(f"≤ {param.maximum:g}")
    return ", ".join(bounds)


def render_recipe(recipe: Recipe) -> str:
    """Markdown section for one recipe declaration."""
    lines = [f"## {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description, ""]
    lines.append(f"- **Target**: one {recipe.target}")
    inputs = ", ".join(f"`{tag}`" for tag in recipe.inputs) or "none"
    lines.append(f"- **Raw inputs**: {inputs} (at least {recipe.min_inputs})")
    if recipe.calibs:
        calibs = []
        for calib in recipe.calibs:
            if calib.required:
                status = "required"
            elif calib.default_excluded:
                status = "optional, excluded unless the settings block includes it"
            else:
                status = "optional"
            calibs.append(f"`{calib.tag}` ({status})")
        lines.append("- **Calibrations**: " + ", ".join(calibs))
    else:
        lines.append("- **Calibrations**: none")
    lines.append("- **Products**: " + (", ".join(f"`{tag}`" for tag in recipe.outputs) or "none"))
    lines.append("")
    if recipe.params:
        lines += ["| parameter | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
        for param in recipe.params:
            lines.append(
                f"| `{param.name}` | {param.kind.__name__} | {_default(param)} | "
                f"{_cell(_allowed(param))} | {_cell(param.help)} |"
            )
    else:
        lines.append("No parameters.")
    lines.append("")
    return "\n".join(lines)


def render_recipes(recipes: Iterable[Recipe], title: str = "Recipes") -> str:
    """A whole markdown document: a title, a short index, then one section per recipe."""
    recipes = list(recipes)
    lines = [
        f"# {title}",
        "",
        "Generated from the recipe declarations (`recipes/*.py`) by `recipes.docs`; do not edit by hand.",
        "Parameter names and defaults are those of the ESO MUSE DRS.",
        "",
    ]
    for recipe in recipes:
        lines.append(f"- [{recipe.name}](#{recipe.name}): {recipe.description}")
    lines.append("")
    return "\n".join(lines) + "\n" + "\n".join(render_recipe(r) for r in recipes)


def main() -> None:
    """``python -m recipes.docs > docs/recipes.md``: every registered recipe."""
    from .registry import all_recipes

    recipes = sorted(all_recipes().values(), key=lambda r: r.name)
    print(render_recipes(recipes), end="")


if __name__ == "__main__":
    main()
