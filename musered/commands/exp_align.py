"""``musered exp-align``: offsets between the exposures of a dataset (OFFSET_LIST)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy import select

from ..errors import MuseredError
from .steps import StepsCommand, method_recipe

COMMAND = "exp-align"
DEFAULT_METHOD = "drs"
PLOT_NAME = "alignment.png"


def nights_query(dates: tuple[str, ...], database) -> dict[str, list[str]] | None:
    """The inputs query of ``--date`` (None: all nights); MuseredError for a night without
    exposures."""
    from ..db.models import Raw

    if not dates:
        return None
    with database.session() as session:
        nights = {n for (n,) in session.execute(select(Raw.night).distinct()) if n}
    unknown = [d for d in dates if d not in nights]
    if unknown:
        raise MuseredError(f"--date {unknown[0]}: no exposure on that night in the database")
    return {"night": list(dates)}


@click.command(COMMAND, cls=StepsCommand, musered_command=COMMAND, step_flags=False)
@click.argument("datasets", nargs=-1, required=True, metavar="DATASET...")
@click.option("--method", default=None, metavar="METHOD",
              help="The alignment recipe, by its method (see below; default drs).")
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

    Methods: {methods}.

    The inputs are the IMAGE_FOV of the dataset's exposures made by the recipe named by
    the block's from_recipe (default: the method recipe's declared source), in the
    filter filt (default white);
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
    default_block = settings.recipe_block(params_block or method_recipe(COMMAND, DEFAULT_METHOD).name)
    method = method or str(default_block.get("method") or DEFAULT_METHOD)
    recipe = method_recipe(COMMAND, method)
    block_name = params_block or recipe.name
    block = settings.recipe_block(block_name)
    name = name or f"OFFSET_LIST_{method}"
    filt = filt or block.get("filt")
    cli_params = {"filter": filt} if filt else None
    summary = run_step(settings, app.database, recipe, list(datasets), params_block=params_block,
                       cli_params=cli_params, force=force, dry_run=dry_run, progress=sys.stderr.isatty(),
                       dataset_suffix=f"_{name}", inputs_query=nights_query(tuple(dates), app.database))
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
