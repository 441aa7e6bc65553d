"""What the ``info`` views read: one snapshot of raw, reduced and flags, and night filters.

:class:`Snapshot` holds the raw files with their exclusion decided as association decides it
(:class:`musered.catalog.Catalog`: the database flag, ``frames.exclude.raw`` and the
per-type blocks), the ``reduced`` records of the settings' version only (each version has
its own records, as MuseRed's ``reduced_{version}`` tables) and the exposure flags.

Conventions, MuseRed's:

- a *record* is one ``reduced`` row whose status is ``ok`` or ``missing`` (a record
  imported from MuseRed whose file is not on disk still says what was processed);
  ``failed`` rows are not records;
- a record is a calibration (``CALIB``) or science (``SCIENCE``) record, MuseRed's
  ``DPR_CATG`` of its inputs: the DPR CATG of the raw exposure it is named after (the
  standard star is a calibration), else ``CALIB`` for a recipe of calibration sequences or
  of runs, or a target that is a TPL_START of raw calibrations, else ``SCIENCE`` (exposures
  and dataset products such as combined cubes and offset lists);
- a record is *excluded* when it was made from raw files now all excluded (its exposure or
  its calibration sequence) or when ``frames.exclude.<PRO_CATG>`` names it.

:class:`NightFilter` keeps the nights picked by ``--date`` (a night, a glob such as
``2017-06-1*``, a run name) and ``--run``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import select

from .catalog import Catalog, RawFrame
from .db import Database, Reduced
from .errors import MuseredError
from .matching import GLOB_CHARACTERS, any_matches, query_matches, row_getter

SCIENCE_TYPE = "OBJECT"
RECORD_STATUSES = ("ok", "missing")
# reduced columns too large to carry in a snapshot (read on demand by info-exp)
_HEAVY_COLUMNS = {"params", "qc", "software"}


@dataclass(frozen=True)
class NightFilter:
    """Nights to keep: any of ``selectors`` (a night, a glob on nights, a run name of
    ``runs``) picks a night; no selector keeps every night, also rows without one."""

    selectors: tuple[str, ...] = ()
    runs: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_options(cls, settings, dates: Sequence[str] = (), runs: Sequence[str] = ()) -> NightFilter:
        """The filter of ``--date`` and ``--run``; MuseredError for a bad date or run."""
        known = getattr(settings, "runs", {}) or {}
        for date in dates:
            if date in known or any(c in date for c in GLOB_CHARACTERS):
                continue
            try:
                dt.date.fromisoformat(date)
            except ValueError:
                raise MuseredError(f"--date {date!r} is not a night (YYYY-MM-DD, a glob such as "
                                   "'2017-06-1*', or a run name)") from None
        for name in runs:
            if name not in known:
                names = ", ".join(known) or "none in the settings"
                raise MuseredError(f"--run {name!r}: unknown run (known: {names})")
        return cls(tuple(dates) + tuple(runs), dict(known))

    @property
    def active(self) -> bool:
        """Whether any night was selected (else every night is kept)."""
        return bool(self.selectors)

    def __call__(self, night: str | None) -> bool:
        if not self.selectors:
            return True
        if night is None:
            return False
        for selector in self.selectors:
            run = self.runs.get(selector)
            if run is not None:
                try:
                    if run.contains(dt.date.fromisoformat(night)):
                        return True
                except ValueError:
                    continue
            elif any_matches([night], selector):
                return True
        return False


ALL_NIGHTS = NightFilter()


@dataclass
class Snapshot:
    """Raw files (exclusions decided), the version's records and the exposure flags."""

    settings: Any
    raws: list[RawFrame]
    records: list[dict[str, Any]]
    flags: dict[str, list[str]]

    @classmethod
    def load(cls, settings, database: Database) -> Snapshot:
        """Read the database once for all the views of a command."""
        catalog = Catalog.from_database(database, settings)
        columns = [c for c in Reduced.__table__.columns if c.name not in _HEAVY_COLUMNS]
        with database.session() as session:
            rows = session.execute(select(*columns).where(
                Reduced.version == str(settings.version), Reduced.status.in_(RECORD_STATUSES),
            ).order_by(Reduced.date_run, Reduced.id)).all()
        records = [dict(row._mapping) for row in rows]
        flags = {name: sorted(values) for name, values in catalog.flags.items()}
        return cls(settings, catalog.raws, records, flags)

    @cached_property
    def groups(self) -> dict[str, str]:
        """Recipe name -> declared group; read only when records are classified."""
        return recipe_groups() if self.records else {}

    # ------------------------------------------------------------------ raw files

    def raws_kept(self, keep: NightFilter = ALL_NIGHTS) -> list[RawFrame]:
        """Raw files of the kept nights, by DATE-OBS."""
        rows = [r for r in self.raws if keep(r.night)]
        return sorted(rows, key=lambda r: (r.DATE_OBS or dt.datetime.min, str(r.path)))

    def column(self, raw: RawFrame, name: str) -> Any:
        """A raw column of a raw file (``extra`` keywords included)."""
        return row_getter(raw.columns)(name)

    @cached_property
    def raw_by_name(self) -> dict[str, RawFrame]:
        return {r.name: r for r in self.raws if r.name}

    @cached_property
    def calib_tpl_starts(self) -> set[str]:
        return {r.TPL_START for r in self.raws if r.TPL_START and r.DPR_TYPE and r.DPR_TYPE != SCIENCE_TYPE}

    # ------------------------------------------------------------------ records

    def category(self, record: Mapping[str, Any]) -> str:
        """``CALIB`` or ``SCIENCE`` (module docstring)."""
        raw = self.raw_by_name.get(record["name"])
        if raw is not None and raw.DPR_TYPE:
            catg = self.column(raw, "DPR_CATG")
            if catg:
                return "SCIENCE" if str(catg).upper() == "SCIENCE" else "CALIB"
            return "SCIENCE" if raw.DPR_TYPE == SCIENCE_TYPE else "CALIB"
        if self.groups.get(record["recipe_name"]) in ("sequence", "run"):
            return "CALIB"
        return "CALIB" if record["name"] in self.calib_tpl_starts else "SCIENCE"

    @cached_property
    def excluded_records(self) -> dict[int, str]:
        """Record id -> why it is excluded (module docstring)."""
        sequences: dict[str, list[RawFrame]] = defaultdict(list)
        for raw in self.raws:
            if raw.TPL_START:
                sequences[raw.TPL_START].append(raw)
        dead_sequences = {tpl: raws[0].excluded for tpl, raws in sequences.items() if all(r.excluded for r in raws)}
        dead_exposures = {r.name: r.excluded for r in self.raws if r.name and r.excluded}
        exclude = (getattr(self.settings, "frames", None) or {}).get("exclude") or {}
        out = {}
        for record in self.records:
            name = record["name"]
            reason = dead_exposures.get(name) or dead_sequences.get(name)
            if reason is None:
                reason = _tag_exclusion(record, exclude.get(record["PRO_CATG"]) or [])
            if reason:
                out[record["id"]] = reason
        return out

    def records_kept(self, keep: NightFilter = ALL_NIGHTS, excluded: bool = False,
                     category: str | None = None) -> list[dict[str, Any]]:
        """Records of the kept nights (a dataset record, without night, is kept only when
        no night is selected), without the excluded ones unless ``excluded``."""
        out = []
        for record in self.records:
            if not keep(record["night"]):
                continue
            if not excluded and record["id"] in self.excluded_records:
                continue
            if category is not None and self.category(record) != category:
                continue
            out.append(record)
        return out


def _tag_exclusion(record: Mapping[str, Any], items: Sequence[Any]) -> str | None:
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, Mapping):
            hit = query_matches(row_getter(record), item)
        else:
            hit = any_matches([record["name"], record["night"], record["TPL_START"]], item)
        if hit:
            return f"excluded by frames.exclude.{record['PRO_CATG']}: {item!r}"
    return None


def recipe_groups() -> dict[str, str]:
    """Recipe name -> declared group (sequence, exposure, dataset, run) of the registry.

    Loading the registry imports the recipe modules (about a second), so a snapshot asks
    only when there are records to classify. Records of recipes the registry does not know
    (imported from MuseRed: ``zap``, ``muse_scipost_rec`` ...) are classified by their target."""
    try:
        from recipes.registry import all_recipes

        return {name: recipe.group for name, recipe in all_recipes().items()}
    except Exception:  # a broken user recipe module must not break info
        return {}


def count_text(value: int) -> str:
    """A count as table text: ``--`` for none."""
    return str(value) if value else "--"


def resolve_recipes(settings, snap: Snapshot, names: Sequence[str], option: str = "--recipe") -> list[str]:
    """Recipe names as recorded, from what a user types: the name (``muse_bias``), a step
    flag of the registry (``bias``, ``makecube``: MuseRed's short spelling for most), or
    the one known name ending in ``_NAME`` (``scipost_rec`` for MuseRed's
    ``muse_scipost_rec``). Known: the registry's recipes, the settings' recipe blocks and
    the recorded names; MuseredError for an unknown or ambiguous name."""
    known = {*recipe_groups(), *(getattr(settings, "recipes", None) or {}), *(r["recipe_name"] for r in snap.records)}
    steps = _step_names()
    out = []
    for name in names:
        if name in known:
            out.append(name)
            continue
        if steps.get(name) in known:
            out.append(steps[name])
            continue
        ending = sorted(k for k in known if k.endswith(f"_{name}"))
        if len(ending) != 1:
            what = (f"ambiguous ({', '.join(ending)})" if ending
                    else f"unknown recipe (known: {', '.join(sorted(known))})")
            raise MuseredError(f"{option} {name!r}: {what}")
        out.append(ending[0])
    return out


def _step_names() -> dict[str, str]:
    try:
        from recipes.registry import all_recipes

        return {recipe.step: name for name, recipe in all_recipes().items() if recipe.step}
    except Exception:  # as recipe_groups
        return {}
