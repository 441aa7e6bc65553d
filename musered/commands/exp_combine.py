"""``musered exp-combine``: combine the exposures of a dataset into one cube."""

from __future__ import annotations

import copy
import sys

import click

from ..errors import MuseredError

METHODS = ("drs", "mpdaf")
#: settings block used by default, and the recipe whose products feed it, per method
DEFAULT_BLOCKS = {"drs": "muse_exp_combine", "mpdaf": "mpdaf_combine"}
DEFAULT_FROM_RECIPE = {"drs": "muse_scipost", "mpdaf": "muse_scipost_make_cube"}
OUTPUT_DIR = "exp_combine"


def _recipe(method: str):
    if method == "drs":
        from recipes.exp_combine import RECIPE
    else:
        from recipes.cubecombine import RECIPE
    return RECIPE


def step_settings(settings, block_name: str, method: str):
    """A shallow copy of ``settings`` whose block ``block_name`` has ``from_recipe``
    (default per method) and ``init.output_dir`` (default exp_combine), so that the
    runner finds the inputs and writes to ``exp_combine/{DATASET}_{NAME}``."""
    out = copy.copy(settings)
    recipes = dict(settings.recipes)
    block = copy.deepcopy(recipes.get(block_name, {}))
    block.setdefault("from_recipe", DEFAULT_FROM_RECIPE[method])
    init = dict(block.get("init") or {})
    init.setdefault("output_dir", OUTPUT_DIR)
    block["init"] = init
    recipes[block_name] = block
    out.recipes = recipes
    return out


@click.command("exp-combine")
@click.argument("datasets", nargs=-1, required=True, metavar="DATASET...")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="drs: resample the PIXTABLE_REDUCED of all exposures at once (muse_exp_combine, "
                   "default); mpdaf: sigma-clipped mean of cubes already on one grid.")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters, frames and from_recipe from this settings block "
                   "(default muse_exp_combine for drs, mpdaf_combine for mpdaf).")
@click.option("--name", default=None, metavar="NAME",
              help="Name of the result: DATASET_NAME, folder exp_combine/DATASET_NAME (default NAME: the method).")
@click.option("--force", is_flag=True, help="Re-run datasets that are already done.")
@click.option("--dry-run", is_flag=True, help="Print the frames chosen; run nothing.")
@click.pass_obj
def command(app, datasets, method, params_block, name, force, dry_run) -> None:
    """Combine the exposures of DATASET into one cube (DATACUBE_FINAL).

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
    if method is None:
        block_method = settings.recipe_block(params_block or DEFAULT_BLOCKS["drs"]).get("method") or "drs"
        if block_method not in METHODS:
            raise MuseredError(f"recipes.{params_block or DEFAULT_BLOCKS['drs']}.method: {block_method!r} "
                               f"is not one of {', '.join(METHODS)}")
        method = str(block_method)
    recipe = _recipe(method)
    block_name = params_block or DEFAULT_BLOCKS[method]
    name = name or method
    if not name or "/" in name or name.strip() != name:
        raise MuseredError(f"--name {name!r}: must be a plain name without '/' or spaces around it")
    step = step_settings(settings, block_name, method)
    summary = run_step(step, app.database, recipe, list(datasets), params_block=params_block, force=force,
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
