"""Markdown documentation of recipe declarations (for docs/recipes.md).

``render_recipe(recipe)`` describes one recipe: its purpose, how it is run (command, step
flag or method, by default or not, what one run reduces), its inputs (with the minimum
count and where they come from), calibrations (required / optional / excluded by default,
with their sources, night offset and mode matching), products and a parameter table (DRS
name, type, default, allowed values or range, help).
``render_recipes(recipes)`` joins several under a title. Nothing here is hand-written
per recipe: the declarations are the single source.
"""

from __future__ import annotations

from collections.abc import Iterable

from recipes.base import RAW, REDUCED, Calib, Param, Recipe, format_param


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(param: Param) -> str:
    if param.default is None:
        return "–"
    return f"`{format_param(param.default)}`"


def _allowed(param: Param) -> str:
    if param.choices is not None:
        return ", ".join(f"`{c}`" for c in param.choices)
    bounds = []
    if param.minimum is not None:
        bounds.append(f"≥ {param.minimum:g}")
    if param.maximum is not None:
        bounds.append(f"≤ {param.maximum:g}")
    return ", ".join(bounds)


def _calib(calib: Calib) -> str:
    if calib.required:
        status = "required"
    elif calib.default_excluded:
        status = "optional, excluded unless the settings block includes it"
    else:
        status = "optional"
    where = " > ".join(calib.sources)
    if REDUCED in calib.sources:
        where += f", ±{calib.offset} night{'s' if calib.offset != 1 else ''}"
    if calib.match_mode:
        where += ", same INS_MODE"
    if RAW in calib.sources:
        where += f", same night: closest in temperature within {calib.max_delay_hours:g} h, else in time"
        if calib.max_temp_diff is not None:
            where += f", ΔT ≤ {calib.max_temp_diff:g} K"
    if calib.modes:
        where += ", only for INS_MODE " + " or ".join(f"`{m}`" for m in calib.modes)
    return f"`{calib.tag}` ({status}; {where})"


def render_recipe(recipe: Recipe) -> str:
    """Markdown section for one recipe declaration."""
    lines = [f"## {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description, ""]
    flag = "--method " + recipe.step_name if recipe.group == "dataset" else "--" + recipe.step_name
    default = "" if recipe.group in ("dataset", "run") else (" (by default)" if recipe.by_default
                                                            else " (only when asked for)")
    lines.append(f"- **Run by**: `musered {recipe.command_name} {flag}`{default}; one run per {recipe.group}")
    inputs = ", ".join(f"`{tag}`" for tag in recipe.inputs) or "none"
    source = f", products of {recipe.from_recipe}" if recipe.from_recipe else ", raw files"
    lines.append(f"- **Inputs**: {inputs} (at least {recipe.min_inputs}{source})")
    if recipe.calibs:
        lines.append("- **Calibrations**: " + ", ".join(_calib(c) for c in recipe.calibs))
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
        "Generated from the recipe declarations (`recipes/steps/*.py`) by `recipes.docs`; do not edit by hand.",
        "Recipes are listed in the order they run. Calibrations name their sources in search order "
        "(frames: the settings block's `frames`; reduced: products of other recipes on the nearest "
        "nights; raw: a raw file of the same night; static: `static_calib`, `muse_calib_path`, archive "
        "products). Parameter names and defaults are those of the ESO MUSE DRS.",
        "",
    ]
    for recipe in recipes:
        lines.append(f"- [{recipe.name}](#{recipe.name}): {recipe.description}")
    lines.append("")
    return "\n".join(lines) + "\n" + "\n".join(render_recipe(r) for r in recipes)


def main() -> None:
    """``python -m recipes.docs > docs/recipes.md``: every registered recipe."""
    from recipes.registry import all_recipes

    print(render_recipes(all_recipes().values()), end="")


if __name__ == "__main__":
    main()
