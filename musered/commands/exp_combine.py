"""``musered exp-combine``: combine the exposures of a dataset into one cube."""

from __future__ import annotations

import sys

import click

from ..errors import MuseredError
from .steps import StepsCommand, method_recipe, methods

COMMAND = "exp-combine"
DEFAULT_METHOD = "drs"


@click.command(COMMAND, cls=StepsCommand, musered_command=COMMAND, step_flags=False)
@click.argument("datasets", nargs=-1, required=True, metavar="DATASET...")
@click.option("--method", default=None, metavar="METHOD",
              help="The combination recipe, by its method (see below; default drs).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters, frames and from_recipe from this settings block "
                   "(default: the block named after the method's recipe).")
@click.option("--name", default=None, metavar="NAME",
              help="Name of the result: DATASET_NAME, folder exp_combine/DATASET_NAME (default NAME: the method).")
@click.option("--force", is_flag=True, help="Re-run datasets that are already done.")
@click.option("--dry-run", is_flag=True, help="Print the frames chosen; run nothing.")
@click.pass_obj
def command(app, datasets, method, params_block, name, force, dry_run) -> None:
    """Combine the exposures of DATASET into one cube (DATACUBE_FINAL).

    Methods: {methods}.

    drs: the PIXTABLE_REDUCED of the dataset's exposures made by the block's from_recipe
    (default muse_scipost), shifted by the block's OFFSET_LIST frame (a file, or a stored
    name such as OFFSET_LIST_drs from exp-align), weighted and resampled once with
    cosmic-ray rejection → DATACUBE_FINAL, IMAGE_FOV, EXPMAP. mpdaf: the DATACUBE_FINAL of
    from_recipe (default muse_scipost_make_cube, all on one OUTPUT_WCS) combined voxel by
    voxel → DATACUBE_FINAL, EXPMAP_CUBE, EXPMAP_IMAGE, STATPIX, IMAGE_FOV. Flagged
    exposures are left out (the block's exclude_flags). The method can also be set by the
    block's `method`.
    """
    from ..runner import run_step

    settings = app.settings
    known = getattr(settings, "datasets", {}) or {}
    for dataset in datasets:
        if dataset not in known:
            raise MuseredError(f"unknown dataset {dataset!r}; datasets in the settings: "
                               f"{', '.join(sorted(known)) or 'none'}")
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
    block_name = params_block or recipe.name
    name = name or method
    if not name or "/" in name or name.strip() != name:
        raise MuseredError(f"--name {name!r}: must be a plain name without '/' or spaces around it")
    summary = run_step(settings, app.database, recipe, list(datasets), params_block=params_block, force=force,
                       dry_run=dry_run, progress=sys.stderr.isatty(), dataset_suffix=f"_{name}")  # fmt: skip
    if summary.failed:
        raise MuseredError(summary.failure_message())
    missing = [r for r in summary.results if r.status == "excluded"]
    if missing and not any(r.status in ("ok", "done", "dry-run") for r in summary.results):
        raise MuseredError(f"{block_name}: nothing to combine: {missing[0].name} ({missing[0].reason})")
    if dry_run:
        return
    for r in summary.results:
        if r.status in ("ok", "done"):
            click.echo(f"{r.name}: combined cube in {r.folder} ({block_name}, method {method}, {r.status})")
