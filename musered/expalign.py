"""exp-align as a function: offsets between the exposures of datasets (an OFFSET_LIST),
what ``musered exp-align`` and ``MuseRed.exp_align`` both call.

The method (``drs``, ``image`` ...) is ``method``, else the ``method`` key of the
muse_exp_align (or ``params_block``) block, else drs. The OFFSET_LIST of a dataset is
stored as ``{dataset}_{name}`` (``name`` default ``OFFSET_LIST_{method}``), so that a
block's ``frames: {OFFSET_LIST: OFFSET_LIST_drs}`` finds it. ``dates`` keeps the exposures
of these nights, runs, names or globs (``--date``); the block's ``select`` keeps those its
query picks (:mod:`musered.selection`). An alignment preview (``alignment.png``: the
exposures combined with the offsets applied, sources marked) is drawn next to the products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MuseredError

COMMAND = "exp-align"
DEFAULT_METHOD = "drs"
PLOT_NAME = "alignment.png"


@dataclass
class AlignReport:
    """What an exp-align run did: the runner's :class:`~musered.runner.StepSummary`, the
    block read, the name the OFFSET_LISTs are stored under, and per dataset the preview
    drawn (``previews``) or why it could not be (``preview_problems``); no preview on a
    dry run."""

    summary: Any
    block_name: str
    name: str
    previews: dict[str, Path] = field(default_factory=dict)
    preview_problems: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list:
        return self.summary.failed

    def lines(self) -> list[str]:
        """What the command prints once the step has run."""
        return [f"{dataset}: OFFSET_LIST stored as {dataset}_{self.name} ({self.block_name}); preview {png}"
                for dataset, png in self.previews.items()]


def nights_query(dates: Sequence[str], settings, database) -> dict[str, list[str]] | None:
    """The inputs query of ``--date`` (None: every exposure): the science exposures it picks
    (nights, runs, names, globs: :func:`musered.dateselect.select_dates`, as MuseRed's
    ``exps``); MuseredError for a selector that picks none."""
    from .dateselect import select_dates

    if not dates:
        return None
    return {"name": select_dates(settings, database, list(dates), column="name", dpr_types=("OBJECT",))}


def exp_align(settings, database, datasets: Sequence[str], *, method: str | None = None, name: str | None = None,
              params_block: str | None = None, filt: str | None = None, dates: Sequence[str] = (),
              njobs: int | None = None, force: bool = False, dry_run: bool = False, progress: bool = False,
              console: Any = None, report: bool = True) -> AlignReport:
    """Align each dataset (module docstring). Failed targets are in the report's summary,
    not raised; a preview that cannot be drawn is only reported (the offsets are stored)."""
    from recipes.base import RecipeError

    from .commands.steps import method_recipe
    from .expcombine import check_datasets
    from .runner import run_step
    from .selection import exposure_selection

    datasets = list(datasets)
    check_datasets(settings, datasets)
    default_block = settings.recipe_block(params_block or method_recipe(COMMAND, DEFAULT_METHOD).name)
    method = method or str(default_block.get("method") or DEFAULT_METHOD)
    recipe = method_recipe(COMMAND, method)
    block_name = params_block or recipe.name
    block = settings.recipe_block(block_name)
    if block.get("names_with_selection"):
        raise MuseredError(f"recipes.{block_name}.names_with_selection: read by exp-combine only "
                           "(exp-align reads select)")
    name = name or f"OFFSET_LIST_{method}"
    filt = filt or block.get("filt")
    selection = exposure_selection(database, block.get("select"), settings.version, "select",
                                   f"recipes.{block_name}.select")
    summary = run_step(settings, database, recipe, datasets, params_block=params_block,
                       cli_params={"filter": filt} if filt else None, force=force, dry_run=dry_run,
                       progress=progress, console=console, report=report, dataset_suffix=f"_{name}",
                       inputs_query=nights_query(dates, settings, database), jobs=njobs,
                       exposure_selection=selection)
    out = AlignReport(summary, block_name, name)
    if dry_run or summary.failed:
        return out
    for dataset in datasets:
        try:
            png = alignment_preview(database, block_name, f"{dataset}_{name}", settings.version)
        except (RecipeError, MuseredError, OSError, ValueError) as exc:
            out.preview_problems[dataset] = str(exc).splitlines()[0]
            continue
        if png is not None:
            out.previews[dataset] = png
    return out


def alignment_preview(database, block_name: str, target_name: str, version: str,
                      redraw: bool = False) -> Path | None:
    """Draw ``alignment.png`` next to the OFFSET_LIST of ``target_name`` in reduction
    ``version`` (None if there is none); kept when newer than the OFFSET_LIST unless
    ``redraw``."""
    from sqlalchemy import select

    from .alignplot import plot_alignment
    from .db.models import Reduced

    with database.session() as session:
        rows = session.scalars(select(Reduced).where(
            Reduced.recipe_name == block_name, Reduced.name == target_name, Reduced.status == "ok",
            Reduced.version == str(version))).all()
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
