"""Remove products and their database records (``musered clean``, ``MuseRed.clean``).

The selection is MuseRed's: records of the settings' version whose recipe is one of
``recipes`` (a block name as recorded — the recipe name, or a ``--params`` block — or a
step name such as ``bias``, or MuseRed's ``muse_``-less name), whose target name is
picked by ``dates`` and whose night is picked by ``nights`` (both read by
:func:`musered.dateselect.select_dates`: nights, runs, exposure names, TPL_STARTs, globs);
the criteria given must all hold, and none given selects every record of the version.

Nothing is done unless ``force`` (a dry run by default): the report lists what would go.
With ``force`` the records are deleted in one transaction, then the product folders of
those records (``{reduced_path}/{output_dir}/{target}``, with their log) are removed —
only folders inside the current ``reduced_path`` that no other record uses: products
that a record of this version shares with another version (``copy_reduced``) stay on
disk, and only their record goes. ``remove_files=False`` (``--keep-files``) keeps every
file.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select

from .errors import MuseredError


@dataclass
class CleanReport:
    """What :func:`clean` removed (``done``) or would remove (a dry run)."""

    done: bool
    version: str
    records: int = 0
    targets: list[str] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # removed, or to remove
    kept: list[tuple[Path, str]] = field(default_factory=list)  # (folder, why it stays)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (folder, OS error)

    def lines(self) -> list[str]:
        """The report as MuseRed prints it: one line per folder, then the records."""
        action = "Removed" if self.done else "Would remove"
        out = [] if self.done else ["Dry run (use --force to remove): nothing is removed"]
        out += [f"{action} {folder}" for folder in self.folders]
        out += [f"Kept {folder}: {why}" for folder, why in self.kept]
        out += [f"Could not remove {folder}: {why}" for folder, why in self.failed]
        out.append(f"{action} {self.records} record{'' if self.records == 1 else 's'} "
                   f"({len(self.targets)} exposures/nights; {', '.join(self.recipes) or 'no recipe'}) "
                   f"of version {self.version} from the database")
        return out


def resolve_recipes(names: Sequence[str], recorded: Sequence[str]) -> list[str]:
    """The recorded block names meant by ``names``: a recorded name itself, a recipe's
    step name (``bias``), or MuseRed's short name (``scibasic`` for ``muse_scibasic``);
    MuseredError for a name that is none of them."""
    from recipes.registry import all_recipes

    # MuseRed's normalize_recipe_name added the DRS prefix: the name after the first "_"
    by_short: dict[str, set[str]] = {}
    for recipe in all_recipes().values():
        for short in (recipe.step_name, recipe.name.partition("_")[2]):
            by_short.setdefault(short, set()).add(recipe.name)
    recorded_set = set(recorded)
    out: list[str] = []
    for name in names:
        if name in recorded_set:
            hits = [name]
        else:
            candidates = by_short.get(name, set())
            hits = sorted(c for c in candidates if c in recorded_set)
        if not hits:
            raise MuseredError(f"--recipe {name!r}: no products of that recipe in this version "
                               f"(recorded: {', '.join(sorted(recorded_set)) or 'none'})")
        out += [h for h in hits if h not in out]
    return out


def clean(settings, database, *, recipes: Sequence[str] = (), dates: Sequence[str] = (),
          nights: Sequence[str] = (), remove_files: bool = True, force: bool = False) -> CleanReport:
    """Remove the selected records of the settings' version and their product folders
    (module docstring); a dry run unless ``force``."""
    from .dateselect import select_dates
    from .db.models import Reduced

    version = str(settings.version)
    report = CleanReport(done=force, version=version)
    query = select(Reduced.id, Reduced.recipe_name, Reduced.name, Reduced.path, Reduced.log_path).where(
        Reduced.version == version)
    if recipes:
        with database.session() as session:
            recorded = session.scalars(select(Reduced.recipe_name).where(Reduced.version == version)
                                       .distinct()).all()
        query = query.where(Reduced.recipe_name.in_(resolve_recipes(recipes, recorded)))
    if dates:
        query = query.where(Reduced.name.in_(select_dates(settings, database, dates, column="name",
                                                          table="reduced", option="--date")))
    if nights:
        query = query.where(Reduced.night.in_(select_dates(settings, database, nights, column="night",
                                                           table="reduced", option="--night")))
    with database.session() as session:
        rows = session.execute(query).all()
        ids = {r.id for r in rows}
        report.records = len(rows)
        report.targets = sorted({r.name for r in rows})
        report.recipes = sorted({r.recipe_name for r in rows})
        if remove_files:
            _plan_folders(session, rows, ids, Path(settings.reduced_path), report)
        if force and ids:
            session.execute(delete(Reduced).where(Reduced.id.in_(sorted(ids))))
    if force and remove_files:
        removed = []
        for folder in report.folders:
            try:
                shutil.rmtree(folder)
                removed.append(folder)
            except OSError as exc:
                report.failed.append((folder, exc.strerror or str(exc)))
        report.folders = removed
    return report


def _plan_folders(session, rows, ids: set[int], reduced_path: Path, report: CleanReport) -> None:
    """The product folders of ``rows`` that may go: inside reduced_path, used by no other
    record (of any version)."""
    from .db.models import Reduced

    root = reduced_path.resolve()
    folders = sorted({_folder_of(r.path, r.log_path) for r in rows})
    for folder in folders:
        if not folder.exists():
            continue
        if not folder.resolve().is_relative_to(root) or folder.resolve() == root:
            report.kept.append((folder, f"outside reduced_path {reduced_path} (another version's products)"))
            continue
        prefix = str(folder).rstrip("/") + "/"
        others = session.scalar(select(Reduced.id).where(Reduced.path.startswith(prefix, autoescape=True),
                                                          Reduced.id.not_in(sorted(ids))).limit(1))
        if others is not None:
            report.kept.append((folder, "other records use products in it"))
            continue
        report.folders.append(folder)


def _folder_of(path: str, log_path: str | None) -> Path:
    # the run folder holds the log next to the products (products may sit in subfolders)
    return Path(log_path).parent if log_path else Path(path).parent
