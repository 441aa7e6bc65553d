"""What exists: a plain-data snapshot of the database, with exclusions decided.

:class:`Catalog` is a snapshot of the ``raw``, ``reduced`` (status ok, of the settings'
``version`` only: each reduction version has its own products, as MuseRed's
``reduced_{version}`` tables) and ``flags`` tables, with every raw file's exclusion reason
already decided (the database flag, the settings' ``frames.exclude``, and exposure flags
when the recipe block asks for it with ``exclude_flags``). Target discovery
(:mod:`musered.targets`) and association (:mod:`musered.association`) are pure functions
of a catalog and the settings, so they can be tested without a database.

Raw tags come from DPR TYPE (``specs/muse-raw-format.md``, Classification); archive
calibration products have no DPR TYPE and carry their ESO PRO CATG instead.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .db.models import Flag, Raw, Reduced
from .errors import MuseredError
from .matching import RAW_QUERY_COLUMNS, any_matches, query_matches, row_getter

# DPR TYPE -> raw tag (DPR TECH is IFU for every MUSE frame).
DPR_TYPE_TAGS: dict[str, str] = {
    "BIAS": "BIAS",
    "DARK": "DARK",
    "FLAT,LAMP": "FLAT",
    "FLAT,LAMP,ILLUM": "ILLUM",
    "FLAT,SKY": "SKYFLAT",
    "WAVE": "ARC",
    "WAVE,LSF": "ARC_LSF",
    "WAVE,MASK": "MASK",
    "SKY": "SKY",
    "STD": "STD",
    "ASTROMETRY": "ASTROMETRY",
    "OBJECT": "OBJECT",
}

REDUCED_QUERY_COLUMNS = (
    "recipe_name", "name", "PRO_CATG", "path", "night", "OBJECT", "INS_MODE", "TPL_START",
    "output_dir",
)


def raw_tag(dpr_type: str | None, pro_catg: str | None = None) -> str | None:
    """The DRS tag of a raw file: from DPR TYPE, else its PRO CATG (archive products)."""
    if dpr_type:
        return DPR_TYPE_TAGS.get(dpr_type.strip().upper(), dpr_type.strip().upper())
    return pro_catg or None


@dataclass(frozen=True)
class RawFrame:
    """One raw row. ``excluded`` holds the reason it must not be used, or None."""

    path: Path
    name: str | None
    night: str | None
    DATE_OBS: dt.datetime | None
    tag: str | None
    DPR_TYPE: str | None
    PRO_CATG: str | None
    TPL_START: str | None
    INS_MODE: str | None
    INS_TEMP7_VAL: float | None
    OBJECT: str | None
    excluded: str | None = None
    columns: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ProductFrame:
    """One ``reduced`` row with status ok."""

    path: Path
    recipe_name: str
    name: str
    PRO_CATG: str
    night: str | None
    DATE_OBS: dt.datetime | None
    INS_MODE: str | None
    OBJECT: str | None
    TPL_START: str | None
    output_dir: str | None
    date_run: dt.datetime | None

    @property
    def set_key(self) -> tuple[str, str, str]:
        """Products of one run (one recipe block, target and output folder) form a set."""
        return (self.recipe_name, self.name, self.output_dir or "")

    def column(self, name: str) -> Any:
        return getattr(self, name)


@dataclass
class Catalog:
    """A plain-data snapshot of the database used by association and target discovery."""

    raws: list[RawFrame]
    products: list[ProductFrame]
    flags: dict[str, list[str]] = field(default_factory=dict)  # exposure name -> flags
    _excluded_products: dict[Path, str] | None = field(default=None, repr=False)

    @classmethod
    def from_database(cls, database, settings, exclude_flags: bool | Sequence[str] = False) -> Catalog:
        """Read raw (without headers), reduced (status ok, ``version == settings.version``)
        and flags; decide exclusions (``exclude_flags``: see :meth:`build`)."""
        # every column but the full header, which association never needs
        raw_columns = [c for c in Raw.__table__.columns if c.name not in ("header", "id")]
        with database.session() as session:
            raw_rows = session.execute(select(*raw_columns)).all()
            product_rows = session.execute(select(
                Reduced.path, Reduced.recipe_name, Reduced.name, Reduced.PRO_CATG, Reduced.night,
                Reduced.DATE_OBS, Reduced.INS_MODE, Reduced.OBJECT, Reduced.TPL_START,
                Reduced.output_dir, Reduced.date_run).where(
                Reduced.status == "ok", Reduced.version == str(settings.version))).all()
            flag_rows = session.execute(select(Flag.name, Flag.flag)).all()
        flags: dict[str, list[str]] = defaultdict(list)
        for name, flag in flag_rows:
            flags[name].append(flag)
        raws = [_raw_frame(row._mapping) for row in raw_rows]
        products = [
            ProductFrame(
                path=Path(r.path), recipe_name=r.recipe_name, name=r.name, PRO_CATG=r.PRO_CATG,
                night=r.night, DATE_OBS=r.DATE_OBS, INS_MODE=r.INS_MODE, OBJECT=r.OBJECT,
                TPL_START=r.TPL_START, output_dir=r.output_dir, date_run=r.date_run,
            )
            for r in product_rows
        ]
        return cls.build(raws, products, dict(flags), settings, exclude_flags)

    @classmethod
    def build(cls, raws: Iterable[RawFrame], products: Iterable[ProductFrame],
              flags: Mapping[str, list[str]] | None, settings,
              exclude_flags: bool | Sequence[str] = False) -> Catalog:
        """A catalog whose raw frames carry their exclusion reason (db flag, settings, flags).

        ``exclude_flags`` (a recipe block's ``exclude_flags``, MuseRed's semantics): False
        (the default: flagged exposures are used like any other), True excludes exposures
        with any flag, a list only those with one of the named flags.
        """
        raws = list(raws)
        flags = dict(flags or {})
        exclude = _global_exclude(settings)
        known_extra = {key for raw in raws for key in raw.columns.get("extra", {}) or {}}
        _check_query_columns(exclude, known_extra)
        decided = []
        for raw in raws:
            reason = raw.excluded
            if reason is None and raw.name in flags and exclude_flags:
                hit = sorted(flags[raw.name]) if exclude_flags is True else \
                    sorted(set(flags[raw.name]) & set(exclude_flags))
                if hit:
                    reason = f"flagged ({', '.join(hit)})"
            if reason is None:
                reason = raw_exclusion_reason(raw, exclude)
            decided.append(_replace(raw, excluded=reason))
        return cls(raws=decided, products=list(products), flags=flags)

    def matching(self, query: Mapping[str, Any]) -> Catalog:
        """The raw files and products whose columns match ``query`` (``{"night": [...],
        "INS_MODE": ...}``, :func:`musered.matching.query_matches`); exclusions as here."""
        return Catalog(raws=[r for r in self.raws if query_matches(row_getter(r.columns), query)],
                       products=[p for p in self.products if query_matches(p.column, query)],
                       flags=self.flags, _excluded_products=self._excluded_products)

    @cached_property
    def products_by_tag_night(self) -> dict[tuple[str, str | None], list[ProductFrame]]:
        index: dict[tuple[str, str | None], list[ProductFrame]] = defaultdict(list)
        for product in self.products:
            index[(product.PRO_CATG, product.night)].append(product)
        return dict(index)

    @cached_property
    def raws_by_tag(self) -> dict[str | None, list[RawFrame]]:
        index: dict[str | None, list[RawFrame]] = defaultdict(list)
        for raw in self.raws:
            index[raw.tag].append(raw)
        return dict(index)

    @cached_property
    def raws_by_name(self) -> dict[str | None, RawFrame]:
        return {raw.name: raw for raw in self.raws}

    def excluded_products(self, settings) -> dict[Path, str]:
        """Products that must not be used, with reasons (computed once per catalog): those
        excluded by the global ``frames.exclude.<PRO_CATG>`` lists, and those made from raw
        files now excluded (a calibration sequence whose raw files are all excluded, an
        exposure whose raw file is excluded or flagged)."""
        if self._excluded_products is not None:
            return self._excluded_products
        exclude = _global_exclude(settings)
        sequences: dict[str, list[RawFrame]] = defaultdict(list)
        for raw in self.raws:
            if raw.TPL_START:
                sequences[raw.TPL_START].append(raw)
        dead_sequences = {tpl: raws[0].excluded for tpl, raws in sequences.items()
                          if all(r.excluded for r in raws)}
        dead_exposures = excluded_exposures(self)
        out = {}
        for product in self.products:
            if product.name in dead_exposures:
                out[product.path] = f"made from an excluded exposure ({dead_exposures[product.name]})"
                continue
            if product.name == product.TPL_START and product.TPL_START in dead_sequences:
                out[product.path] = f"made from excluded raw files ({dead_sequences[product.TPL_START]})"
                continue
            for item in exclude.get(product.PRO_CATG, []) or []:
                if _item_matches(item, product.column, (product.name, product.night, product.TPL_START)):
                    out[product.path] = f"excluded by frames.exclude.{product.PRO_CATG}: {item!r}"
                    break
        self._excluded_products = out
        return out


def _replace(raw: RawFrame, **changes) -> RawFrame:
    from dataclasses import replace

    return replace(raw, **changes)


def _raw_frame(row: Mapping[str, Any]) -> RawFrame:
    columns = dict(row)
    return RawFrame(
        path=Path(row["path"]), name=row["name"], night=row["night"], DATE_OBS=row["DATE_OBS"],
        tag=raw_tag(row["DPR_TYPE"], row["PRO_CATG"]), DPR_TYPE=row["DPR_TYPE"],
        PRO_CATG=row["PRO_CATG"], TPL_START=row["TPL_START"], INS_MODE=row["INS_MODE"],
        INS_TEMP7_VAL=row["INS_TEMP7_VAL"], OBJECT=row["OBJECT"],
        excluded="excluded in the database (frames.exclude at update-db)" if row.get("excluded") else None,
        columns=columns,
    )


def raw_frame(**values: Any) -> RawFrame:
    """A RawFrame from raw-table column values (tests and tools); missing columns are None."""
    row = {c: values.get(c) for c in RAW_QUERY_COLUMNS}
    row["excluded"] = values.get("excluded", False)
    row["extra"] = values.get("extra") or {}
    if row["path"] is None:
        raise ValueError("raw_frame needs a path")
    return _raw_frame(row)


# ---------------------------------------------------------------- exclusions

def _global_exclude(settings) -> dict[str, list]:
    frames = getattr(settings, "frames", None) or {}
    exclude = frames.get("exclude") or {}
    if not isinstance(exclude, Mapping):
        raise MuseredError("settings frames.exclude must be a mapping of 'raw' or a tag to a list")
    return {key: (value if isinstance(value, list) else [value]) for key, value in exclude.items()}


def _check_query_columns(exclude: Mapping[str, list], known_extra: set[str]) -> None:
    """A query naming a column that no table has is a typo: say so instead of ignoring it."""
    raw_keys = {"raw", *DPR_TYPE_TAGS, *DPR_TYPE_TAGS.values()}
    for key, items in exclude.items():
        valid = {c.name for c in Raw.__table__.columns} - {"header", "extra"} | known_extra
        if key not in raw_keys:  # a product tag: reduced rows (or archive raw products)
            valid |= set(REDUCED_QUERY_COLUMNS)
        for item in items:
            if not isinstance(item, Mapping):
                continue
            for column in item:
                if column not in valid:
                    raise MuseredError(
                        f"settings frames.exclude.{key}: unknown column {column!r}; valid: "
                        f"{', '.join(sorted(valid))}"
                    )


def raw_exclusion_reason(raw: RawFrame, exclude: Mapping[str, list]) -> str | None:
    """Why settings ``frames.exclude`` excludes this raw file, or None.

    ``exclude.raw`` items apply to every raw file; ``exclude.<TAG or DPR_TYPE>`` items to
    raw files of that tag. A string item matches (glob allowed) the night, exposure name,
    TPL_START or file name; a mapping item matches when every column matches one of its
    values (raw columns, then ``additional_keywords`` columns).
    """
    keys = ["raw"] + [k for k in (raw.tag, raw.DPR_TYPE) if k]
    for key in keys:
        for item in exclude.get(key, []) or []:
            if _item_matches(item, row_getter(raw.columns),
                             (raw.night, raw.name, raw.TPL_START, raw.path.name)):
                return f"excluded by frames.exclude.{key}: {item!r}"
    return None


def _item_matches(item: Any, get, names: Sequence[str | None]) -> bool:
    if isinstance(item, Mapping):
        return query_matches(get, item)
    return any_matches(names, item)



def excluded_exposures(catalog: Catalog) -> dict[str, str]:
    """Exposure names whose raw file is excluded (their products must not be used either)."""
    return {raw.name: raw.excluded for raw in catalog.raws if raw.name and raw.excluded}
