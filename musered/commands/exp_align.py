"""``musered exp-align``: offsets between the exposures of a dataset (OFFSET_LIST)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import click
from sqlalchemy import select

from ..errors import MuseredError

METHOD_RECIPES = {"drs": "muse_exp_align", "image": "image_align"}
DEFAULT_FROM_RECIPE = "muse_scipost"
PLOT_NAME = "alignment.png"


def _recipe(method: str):
    if method == "drs":
        from recipes.exp_align import RECIPE
    else:
        from recipes.imagealign import RECIPE
    return RECIPE


def step_settings(settings, block_name: str, dates: tuple[str, ...], database):
    """A shallow copy of ``settings`` whose block ``block_name`` has ``from_recipe``
    (default muse_scipost), and whose global raw exclusions drop the nights not in
    ``dates`` (when given), so that the runner sees exactly what the command asks."""
    from ..db.models import Raw

    out = copy.copy(settings)
    recipes = dict(settings.recipes)
    block = copy.deepcopy(recipes.get(block_name, {}))
    block.setdefault("from_recipe", DEFAULT_FROM_RECIPE)
    recipes[block_name] = block
    out.recipes = recipes
    if dates:
        with database.session() as session:
            nights = {n for (n,) in session.execute(select(Raw.night).distinct()) if n}
        unknown = [d for d in dates if d not in nights]
        if unknown:
            raise MuseredError(f"--date {unknown[0]}: no exposure on that night in the database")
        others = sorted(nights - set(dates))
        frames = copy.deepcopy(settings.frames or {})
        if others:
            exclude = frames.setdefault("exclude", {})
            raw = exclude.get("raw") or []
            exclude["raw"] = (raw if isinstance(raw, list) else [raw]) + [{"night": others}]
        out.frames = frames
    return out


@click.command("exp-align")
@click.argument("datasets", nargs=-1, required=True, metavar="DATASET...")
@click.option("--method", type=click.Choice(sorted(METHOD_RECIPES)), default=None,
              help="drs: detect and match point sources (muse_exp_align, default); "
                   "image: fit each exposure against the block's REFERENCE_IMAGE.")
@click.option("--name", default=None, metavar="NAME",
              help="Name the OFFSET_LIST is stored under (default OFFSET_LIST_<method>).")
@click.option("--params", "params_block", default=None, metavar="BLOCK",
              help="Take parameters, frames, from_recipe and filt from this settings block.")
@click.option("--filter", "filt", default=None, metavar="FILTER",
              help="IMAGE_FOV filter to align on (default: the block's filt, else white).")
@click.option("--date", "dates", multiple=True, metavar="NIGHT",
              help="Only use the exposures of this night (repeatable).")
@click.option("--force", is_flag=True, help="Re-run datasets that are already done.")
@click.option("--dry-run", is_flag=True, help="Print the frames chosen; run nothing.")
@click.pass_obj
def command(app, datasets, method, name, params_block, filt, dates, force, dry_run) -> None:
    """Compute the offsets between the exposures of DATASET (an OFFSET_LIST).

    The inputs are the IMAGE_FOV of the dataset's exposures made by the recipe named by
    the block's from_recipe (default muse_scipost), in the filter filt (default white);
    flagged exposures are left out (the block's exclude_flags). The OFFSET_LIST is stored
    as DATASET_NAME (NAME default OFFSET_LIST_drs), so that a block's
    `frames: {OFFSET_LIST: OFFSET_LIST_drs}` finds it for that dataset. An alignment
    preview (alignment.png: the exposures combined with the offsets applied, sources
    marked) is written next to the products.

    The method is --method, else the `method` key of the muse_exp_align (or --params)
    block, else drs. The image method reads the `image_align` block (or --params):
    `frames: {REFERENCE_IMAGE: hst.fits}` and params filter, psf, beta, fwhm, maxshift.
    """
    from ..runner import run_step

    settings = app.settings
    known = getattr(settings, "datasets", {}) or {}
    for dataset in datasets:
        if dataset not in known:
            raise MuseredError(f"unknown dataset {dataset!r}; datasets in the settings: "
                               f"{', '.join(sorted(known)) or 'none'}")
    default_block = settings.recipe_block(params_block or METHOD_RECIPES["drs"])
    method = method or str(default_block.get("method") or "drs")
    if method not in METHOD_RECIPES:
        raise MuseredError(f"recipes.{params_block or 'muse_exp_align'}.method: {method!r} is not one of "
                           f"{', '.join(sorted(METHOD_RECIPES))}")
    recipe = _recipe(method)
    block_name = params_block or recipe.name
    block = settings.recipe_block(block_name)
    name = name or f"OFFSET_LIST_{method}"
    filt = filt or block.get("filt")
    cli_params = {"filter": filt} if filt else None
    step = step_settings(settings, block_name, tuple(dates), app.database)
    summary = run_step(step, app.database, recipe, list(datasets), params_block=params_block,
                       cli_params=cli_params, force=force, dry_run=dry_run,
                       progress=sys.stderr.isatty(), dataset_suffix=f"_{name}")
    if summary.failed:
        raise MuseredError(summary.failure_message())
    if dry_run:
        return
    from recipes.base import RecipeError

    for dataset in datasets:
        try:
            png = alignment_preview(app.database, block_name, f"{dataset}_{name}")
        except (RecipeError, MuseredError, OSError, ValueError) as exc:
            # the offsets are stored; a preview that cannot be drawn is only reported
            click.echo(f"{dataset}: alignment preview not drawn: {str(exc).splitlines()[0]}", err=True)
            continue
        if png is not None:
            click.echo(f"{dataset}: OFFSET_LIST stored as {dataset}_{name} ({block_name}); preview {png}")


def alignment_preview(database, block_name: str, target_name: str, redraw: bool = False) -> Path | None:
    """Draw ``alignment.png`` next to the OFFSET_LIST of ``target_name`` (None if there is
    none); kept when newer than the OFFSET_LIST unless ``redraw``."""
    from ..alignplot import plot_alignment
    from ..db.models import Reduced

    with database.session() as session:
        rows = session.scalars(select(Reduced).where(
            Reduced.recipe_name == block_name, Reduced.name == target_name, Reduced.status == "ok")).all()
        found = [(r.PRO_CATG, Path(r.path), r.frames or {}) for r in rows]
    offsets = [p for tag, p, _ in found if tag == "OFFSET_LIST"]
    if not offsets or not offsets[0].is_file():
        return None
    out = offsets[0].parent / PLOT_NAME
    if out.is_file() and not redraw and out.stat().st_mtime >= offsets[0].stat().st_mtime:
        return out
    preview = next((p for tag, p, _ in found if tag == "PREVIEW_FOV"), None)
    sources = sorted(p for tag, p, _ in found if tag == "SOURCE_LIST")
    inputs = [Path(f["path"]) for f in next(fr for tag, _, fr in found if tag == "OFFSET_LIST").get("IMAGE_FOV", [])]
    return plot_alignment(out, offsets[0], preview=preview, source_lists=sources,
                          fov_images=[] if preview is not None else inputs, title=target_name)
