"""Start a new reduction version from an old one: copy ``reduced`` records, not files
(``musered copy-reduced``, ``MuseRed.copy_reduced``).

Each reduction version sees only its own records (``reduced.version``), as MuseRed's
``reduced_{version}`` tables. To reuse products of version 0.1 in version 0.2 instead of
reducing them again, their records are copied to the current version: the copies keep
every column (paths, inputs, parameters, QC, log) but ``version``, so they point to the
files of the old version's tree, which stay where they are. Association then finds them
as products of the current version, and a step whose inputs and parameters are unchanged
counts them as done (:func:`musered.install.is_done`).

The selection: ``recipes`` (recorded block names, step names such as ``bias``, or
MuseRed's names without ``muse_``; :func:`musered.clean.resolve_recipes`), ``names``
(target names, nights, runs, TPL_STARTs, globs; :func:`musered.dateselect.selector_matches`);
nothing given copies every record of ``from_version``. As MuseRed's upsert on (name,
recipe_name, DPR_TYPE), a copied target replaces the current version's records of the
same recipe block and target name. ``dry_run`` reports and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select, tuple_

from .errors import MuseredError

# Columns that are not copied as they are: the key, and the version the copy gets.
_NOT_COPIED = ("id", "version")


@dataclass
class CopyReport:
    """What :func:`copy_reduced` copied (``done``) or would copy (a dry run)."""

    from_version: str
    version: str
    done: bool
    records: int = 0
    recipes: dict[str, int] = field(default_factory=dict)   # block name -> records copied
    targets: list[tuple[str, str]] = field(default_factory=list)  # (block name, target name)
    replaced: int = 0                                        # records of `version` replaced
    missing: list[Path] = field(default_factory=list)        # copied records whose file is gone

    def lines(self) -> list[str]:
        """The report, one fact a line."""
        action = "Copied" if self.done else "Would copy"
        out = [] if self.done else ["Dry run: nothing is copied"]
        per_recipe = ", ".join(f"{name}: {n}" for name, n in sorted(self.recipes.items())) or "no recipe"
        out.append(f"{action} {self.records} record{'' if self.records == 1 else 's'} of version "
                   f"{self.from_version} to version {self.version} ({per_recipe}; {len(self.targets)} "
                   f"target{'' if len(self.targets) == 1 else 's'}); the files stay in version "
                   f"{self.from_version}'s folders")
        if self.replaced:
            out.append(f"{'Replaced' if self.done else 'Would replace'} {self.replaced} record"
                       f"{'' if self.replaced == 1 else 's'} of version {self.version} "
                       "(same recipe and target)")
        if self.missing:
            shown = ", ".join(str(p) for p in self.missing[:3]) + (" ..." if len(self.missing) > 3 else "")
            out.append(f"Warning: {len(self.missing)} copied record(s) name a file that does not exist "
                       f"(not used by association): {shown}")
        return out


def recorded_versions(database) -> list[str]:
    """The reduction versions that have records in ``reduced``, sorted."""
    from .db.models import Reduced

    with database.session() as session:
        return sorted(v for v in session.scalars(select(Reduced.version).distinct()) if v is not None)


def copy_reduced(settings, database, from_version: str, recipes: Sequence[str] | None = None,
                 names: Sequence[str] | None = None, dry_run: bool = False) -> CopyReport:
    """Copy the selected records of ``from_version`` to the settings' version (module
    docstring); MuseredError for an unknown version, recipe or name, or copying a version
    onto itself."""
    from .clean import resolve_recipes
    from .dateselect import selector_matches
    from .db.models import Reduced

    source, version = str(from_version).strip(), str(settings.version)
    if source == version:
        raise MuseredError(f"copy-reduced {source}: that is the current version; copy from another one "
                           "(or choose the version to copy to with --redversion)")
    known = recorded_versions(database)
    if source not in known:
        raise MuseredError(f"copy-reduced {source}: no records of version {source} in the database "
                           f"(versions: {', '.join(known) or 'none'})")
    report = CopyReport(from_version=source, version=version, done=not dry_run)
    query = select(Reduced).where(Reduced.version == source).order_by(Reduced.id)
    with database.session() as session:
        if recipes:
            recorded = session.scalars(select(Reduced.recipe_name).where(Reduced.version == source)
                                       .distinct()).all()
            try:
                chosen = resolve_recipes(list(recipes), recorded)
            except MuseredError as exc:
                raise MuseredError(f"version {source}: {exc}") from None
            query = query.where(Reduced.recipe_name.in_(chosen))
        rows = session.scalars(query).all()
        runs = getattr(settings, "runs", {}) or {}
        for selector in names or ():
            if not any(_picks(selector_matches, selector, row, runs) for row in rows):
                raise MuseredError(f"copy-reduced {source}: {selector!r} picks no record of version {source} "
                                   "(a target name, night, run, TPL_START or a glob)")
        if names:
            rows = [row for row in rows if any(_picks(selector_matches, s, row, runs) for s in names)]
        columns = [c.name for c in Reduced.__table__.columns if c.name not in _NOT_COPIED]
        copies = [{c: getattr(row, c) for c in columns} for row in rows]
        report.records = len(copies)
        report.recipes = dict(Counter(c["recipe_name"] for c in copies))
        report.targets = sorted({(c["recipe_name"], c["name"]) for c in copies})
        report.missing = [Path(c["path"]) for c in copies if not Path(c["path"]).is_file()]
        replaced = _replaced(Reduced, report.targets, version)
        report.replaced = len(session.scalars(select(Reduced.id).where(*replaced)).all()) if replaced else 0
        if not dry_run and copies:
            if replaced:
                session.execute(delete(Reduced).where(*replaced))
            session.add_all(Reduced(**c, version=version) for c in copies)
    return report


def _picks(matches, selector: str, row, runs) -> bool:
    return matches(selector, [row.name, row.TPL_START, row.OBJECT], nights=[row.night], runs=runs)


def _replaced(Reduced, targets: list[tuple[str, str]], version: str) -> list:
    """The where-clauses of the current version's records the copies replace."""
    if not targets:
        return []
    return [Reduced.version == version, tuple_(Reduced.recipe_name, Reduced.name).in_(targets)]
