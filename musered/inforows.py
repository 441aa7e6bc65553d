"""Reading the database for ``musered info``: night filters, raw and reduced rows, flags.

A raw file is counted under its DPR TYPE, except science frames (DPR TYPE ``OBJECT``),
counted under their OBJECT (:func:`raw_type`). In ``reduced``, a calibration target is a
TPL_START, an exposure target an exposure name (``YYYY-MM-DDTHH:MM:SS.mmm``), anything
else a dataset; a recipe that declares its target kind (``recipes.base.Recipe.group``)
is classified by that declaration (:func:`reduced_kind`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from .db import Database, Flag, Raw, Reduced
from .errors import MuseredError

SCIENCE_TYPE = "OBJECT"
EXPOSURE_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}$")


@dataclass(frozen=True)
class NightFilter:
    """Nights to keep: given dates and runs (either matches); no selection keeps all."""

    dates: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_options(cls, settings, dates: Sequence[str] = (), runs: Sequence[str] = ()) -> NightFilter:
        """The filter of ``--date`` and ``--run`` options; MuseredError for a bad date or run."""
        import datetime as dt

        for date in dates:
            try:
                dt.date.fromisoformat(date)
            except ValueError:
                raise MuseredError(f"--date {date!r} is not a night (YYYY-MM-DD)") from None
        ranges = []
        for name in runs:
            run = settings.runs.get(name)
            if run is None:
                known = ", ".join(settings.runs) or "none in the settings"
                raise MuseredError(f"--run {name!r}: unknown run (known: {known})")
            ranges.append((run.start_date.isoformat(), run.end_date.isoformat()))
        return cls(frozenset(dates), tuple(ranges))

    @property
    def active(self) -> bool:
        """Whether any night was selected (else every night is kept)."""
        return bool(self.dates or self.ranges)

    def __call__(self, night: str | None) -> bool:
        if not self.active:
            return True
        if night is None:
            return False
        return night in self.dates or any(start <= night <= end for start, end in self.ranges)


ALL_NIGHTS = NightFilter()


def raw_rows(database: Database, columns: Iterable[str], keep: Callable[[str | None], bool]) -> list[dict]:
    """Raw rows as dicts of ``columns`` (and ``night``), by DATE-OBS, for the kept nights."""
    wanted = list(dict.fromkeys(["night", *columns]))
    with database.session() as session:
        rows = session.execute(select(*(getattr(Raw, c) for c in wanted)).order_by(Raw.DATE_OBS, Raw.path))
        return [dict(row._mapping) for row in rows if keep(row.night)]


def reduced_rows(database: Database, keep: Callable[[str | None], bool]) -> list[dict]:
    """Successful products (recipe, target name, night, path) of the kept nights."""
    columns = (Reduced.recipe_name, Reduced.name, Reduced.night, Reduced.status, Reduced.path)
    with database.session() as session:
        rows = session.execute(select(*columns).where(Reduced.status == "ok"))
        return [dict(row._mapping) for row in rows if keep(row.night)]


def flags_by_name(database: Database) -> dict[str, list[str]]:
    """Exposure name -> its flags, sorted."""
    flags: dict[str, list[str]] = defaultdict(list)
    with database.session() as session:
        for name, flag in session.execute(select(Flag.name, Flag.flag).order_by(Flag.name, Flag.flag)):
            flags[name].append(flag)
    return flags


def raw_type(row: dict) -> str | None:
    """The night-table column of a raw row: DPR TYPE, or OBJECT for science frames."""
    if row.get("DPR_TYPE") == SCIENCE_TYPE:
        return row.get("OBJECT") or SCIENCE_TYPE
    return row.get("DPR_TYPE")


def target_kinds() -> dict[str, str]:
    """Recipe name -> declared target kind, for the recipes that are registered.

    Loading the registry imports the recipe modules (about a second), so callers ask
    only when there are processed products to classify."""
    try:
        from recipes.registry import all_recipes

        return {name: recipe.group for name, recipe in all_recipes().items()}
    except Exception:  # the registry is optional here: fall back on the name pattern
        return {}


def reduced_kind(row: dict, kinds: dict[str, str]) -> str:
    """``sequence`` (calibration), ``exposure`` or ``dataset`` for a reduced row."""
    declared = kinds.get(row["recipe_name"])
    if declared in ("sequence", "exposure", "dataset"):
        return declared
    if EXPOSURE_NAME.match(row["name"] or ""):
        return "exposure"
    return "sequence" if row["night"] else "dataset"
