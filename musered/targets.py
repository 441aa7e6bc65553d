"""What exists and what to reduce: a snapshot of the database, exclusions, targets.

:class:`Catalog` is a plain-data snapshot of the ``raw``, ``reduced`` (status ok) and
``flags`` tables, with every raw file's exclusion reason already decided. Association
(:mod:`musered.association`) and target discovery are pure functions of a catalog and
the settings, so they can be tested without a database.

A **target** is what one recipe run reduces, named as MuseRed names it:

- ``sequence`` (calibration recipes): the raw files with the recipe's input tags sharing
  one TPL_START and INS_MODE; name ``{TPL_START}``, folder
  ``{output_dir or first output tag}/{TPL_START}.{INS_MODE}``;
- ``exposure`` (science recipes): one exposure, name ``raw.name`` (the archive-file
  timestamp), folder ``{output_dir or short recipe name}/{name}``; its inputs are either
  its raw file (scibasic) or the products of that exposure (standard, scipost, ...);
- ``dataset`` (exp_align, exp_combine): the products of every exposure of a settings
  dataset; name ``{dataset}`` (a command may add a suffix), folder
  ``{output_dir or short recipe name}/{name}``.

Raw tags come from DPR TYPE (``specs/muse-raw-format.md``, Classification); archive
calibration products have no DPR TYPE and carry their ESO PRO CATG instead.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from .db.models import Flag, Raw, Reduced
from .errors import MuseredError

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

# Columns of the raw table a `frames.exclude` query may name (besides `extra` keywords).
RAW_QUERY_COLUMNS = (
    "path", "filename", "ARCFILE", "night", "run", "name", "DATE_OBS", "MJD_OBS", "EXPTIME",
    "OBJECT", "OBJECT_ORIG", "DPR_CATG", "DPR_TYPE", "DPR_TECH", "PRO_CATG", "TPL_START",
    "TPL_ID", "INS_MODE", "INS_TEMP7_VAL",
)
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
    def from_database(cls, database, settings, exclude_flags: bool | Sequence[str] = True) -> Catalog:
        """Read raw (without headers), reduced (status ok) and flags; decide exclusions."""
        # every column but the full header, which association never needs
        raw_columns = [c for c in Raw.__table__.columns if c.name not in ("header", "id")]
        with database.session() as session:
            raw_rows = session.execute(select(*raw_columns)).all()
            product_rows = session.execute(select(
                Reduced.path, Reduced.recipe_name, Reduced.name, Reduced.PRO_CATG, Reduced.night,
                Reduced.DATE_OBS, Reduced.INS_MODE, Reduced.OBJECT, Reduced.TPL_START,
                Reduced.output_dir, Reduced.date_run).where(Reduced.status == "ok")).all()
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
              exclude_flags: bool | Sequence[str] = True) -> Catalog:
        """A catalog whose raw frames carry their exclusion reason (db flag, flags, settings).

        ``exclude_flags`` (a recipe block's ``exclude_flags``): True excludes exposures
        with any flag, False none, a list only those with one of the named flags.
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
        dead_exposures = _excluded_exposures(self)
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
            if _item_matches(item, raw_column_getter(raw),
                             (raw.night, raw.name, raw.TPL_START, raw.path.name)):
                return f"excluded by frames.exclude.{key}: {item!r}"
    return None


def raw_column_getter(raw: RawFrame):
    def get(column: str) -> Any:
        if column in raw.columns and column != "extra":
            return raw.columns[column]
        return (raw.columns.get("extra") or {}).get(column)

    return get


def _item_matches(item: Any, get, names: Sequence[str | None]) -> bool:
    if isinstance(item, Mapping):
        return all(_value_matches(get(column), wanted) for column, wanted in item.items())
    return _value_matches_any(names, item)


def _value_matches_any(values: Sequence[Any], wanted: Any) -> bool:
    return any(_value_matches(v, wanted) for v in values)


def _value_matches(value: Any, wanted: Any) -> bool:
    """Equality of a column value and a settings value (or any of a list); globs on strings."""
    if isinstance(wanted, (list, tuple, set)):
        return any(_value_matches(value, w) for w in wanted)
    if value is None:
        return wanted is None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(wanted, (int, float)):
        return float(value) == float(wanted)
    text = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)
    pattern = wanted.isoformat() if isinstance(wanted, (dt.date, dt.datetime)) else str(wanted)
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(text, pattern)
    return text == pattern


# ---------------------------------------------------------------- targets

@dataclass
class Target:
    """One unit of work for a recipe (see the module docstring for names and folders)."""

    kind: str                      # sequence | exposure | dataset
    name: str
    output_dir: str
    folder: PurePosixPath          # relative to reduced_path
    night: str | None
    DATE_OBS: dt.datetime | None
    INS_MODE: str | None
    TPL_START: str | None
    OBJECT: str | None
    INS_TEMP7_VAL: float | None = None
    inputs: dict[str, list[Path]] = field(default_factory=dict)
    members: tuple[str, ...] = ()  # exposure names of the input raw files / products
    log: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Skipped:
    """A would-be target left out because its raw files are excluded or flagged."""

    name: str
    reason: str
    night: str | None = None


def output_dir_for(recipe, block: Mapping[str, Any]) -> str:
    """``init.output_dir`` of the block, else the first output tag (sequences) or the
    recipe name without ``muse_`` (exposures, datasets)."""
    init = block.get("init") or {}
    if init.get("output_dir"):
        return str(init["output_dir"])
    if recipe.target == "sequence":
        return recipe.outputs[0]
    return recipe.name.removeprefix("muse_")


def discover_targets(recipe, catalog: Catalog, settings, block: Mapping[str, Any] | None = None,
                     dataset_suffix: str = "") -> tuple[list[Target], list[Skipped]]:
    """All targets of ``recipe`` in the catalog, sorted by time, and those skipped (why)."""
    block = block or {}
    output_dir = output_dir_for(recipe, block)
    if recipe.target == "sequence":
        return _sequence_targets(recipe, catalog, output_dir)
    if recipe.target == "exposure":
        return _exposure_targets(recipe, catalog, settings, block, output_dir)
    if recipe.target == "dataset":
        return _dataset_targets(recipe, catalog, settings, block, output_dir, dataset_suffix)
    raise MuseredError(f"recipe {recipe.name}: unknown target kind {recipe.target!r}")


def _sort_key(target: Target):
    return (target.DATE_OBS or dt.datetime.max, target.name)


def _sequence_targets(recipe, catalog: Catalog, output_dir: str):
    groups: dict[tuple[str, str], list[RawFrame]] = defaultdict(list)
    for raw in catalog.raws:
        if raw.tag in recipe.inputs:
            groups[(raw.TPL_START or raw.name or raw.path.name, raw.INS_MODE or "")].append(raw)
    targets, skipped = [], []
    for (tpl, mode), raws in groups.items():
        raws.sort(key=lambda r: (r.DATE_OBS or dt.datetime.max, str(r.path)))
        used = [r for r in raws if r.excluded is None]
        log = [f"{r.path.name}: not used, {r.excluded}" for r in raws if r.excluded]
        if not used:
            skipped.append(Skipped(tpl, f"all {len(raws)} raw files excluded ({raws[0].excluded})",
                                   raws[0].night))
            continue
        inputs: dict[str, list[Path]] = defaultdict(list)
        for r in used:
            inputs[r.tag].append(r.path)
        first = used[0]
        folder_name = f"{tpl}.{mode}" if mode else tpl
        targets.append(Target(
            kind="sequence", name=tpl, output_dir=output_dir,
            folder=PurePosixPath(output_dir, folder_name), night=first.night,
            DATE_OBS=first.DATE_OBS, INS_MODE=first.INS_MODE, TPL_START=first.TPL_START,
            OBJECT=first.OBJECT, INS_TEMP7_VAL=first.INS_TEMP7_VAL, inputs=dict(inputs),
            members=tuple(r.name for r in used if r.name), log=log,
        ))
    return sorted(targets, key=_sort_key), skipped


def _exposure_targets(recipe, catalog: Catalog, settings, block, output_dir: str):
    targets, skipped = [], []
    for raw in catalog.raws:
        if raw.tag not in recipe.inputs:
            continue
        name = raw.name or raw.path.name
        if raw.excluded:
            skipped.append(Skipped(name, raw.excluded, raw.night))
            continue
        targets.append(Target(
            kind="exposure", name=name, output_dir=output_dir,
            folder=PurePosixPath(output_dir, name), night=raw.night, DATE_OBS=raw.DATE_OBS,
            INS_MODE=raw.INS_MODE, TPL_START=raw.TPL_START, OBJECT=raw.OBJECT,
            INS_TEMP7_VAL=raw.INS_TEMP7_VAL, inputs={raw.tag: [raw.path]}, members=(name,),
        ))
    by_name = _product_inputs_by_exposure(recipe, catalog, block)
    excluded_names = _excluded_exposures(catalog)
    for name, (products, log) in by_name.items():
        if name in excluded_names:
            skipped.append(Skipped(name, excluded_names[name], products[0].night))
            continue
        first = min(products, key=lambda p: (p.DATE_OBS or dt.datetime.max, str(p.path)))
        inputs: dict[str, list[Path]] = defaultdict(list)
        for p in sorted(products, key=lambda p: str(p.path)):
            inputs[p.PRO_CATG].append(p.path)
        targets.append(Target(
            kind="exposure", name=name, output_dir=output_dir,
            folder=PurePosixPath(output_dir, name), night=first.night, DATE_OBS=first.DATE_OBS,
            INS_MODE=first.INS_MODE, TPL_START=first.TPL_START, OBJECT=first.OBJECT,
            INS_TEMP7_VAL=_temperature_of(catalog, name), inputs=dict(inputs),
            members=(name,), log=log,
        ))
    return sorted(targets, key=_sort_key), skipped


def _temperature_of(catalog: Catalog, name: str) -> float | None:
    raw = catalog.raws_by_name.get(name)
    return raw.INS_TEMP7_VAL if raw is not None else None


def _excluded_exposures(catalog: Catalog) -> dict[str, str]:
    """Exposure names whose raw file is excluded (their products must not be used either)."""
    return {raw.name: raw.excluded for raw in catalog.raws if raw.name and raw.excluded}


def _product_inputs_by_exposure(recipe, catalog: Catalog, block) -> dict[str, tuple[list[ProductFrame], list[str]]]:
    """Per exposure name, the product set feeding ``recipe``: products with an input tag,
    from the ``from_recipe`` block when given; several runs -> the latest one (logged)."""
    from_recipe = block.get("from_recipe")
    sets: dict[str, dict[tuple, list[ProductFrame]]] = defaultdict(lambda: defaultdict(list))
    for p in catalog.products:
        if p.PRO_CATG in recipe.inputs and (from_recipe is None or p.recipe_name == from_recipe):
            sets[p.name][p.set_key].append(p)
    out = {}
    for name, by_set in sets.items():
        ranked = sorted(by_set.items(),
                        key=lambda kv: (max(p.date_run or dt.datetime.min for p in kv[1]), kv[0]),
                        reverse=True)
        key, products = ranked[0]
        log = []
        if len(ranked) > 1:
            others = ", ".join(f"{k[0]}:{k[2]}" for k, _ in ranked[1:])
            log.append(f"inputs from {key[0]} ({key[2]}), the latest run; not used: {others}")
        out[name] = (products, log)
    return out


def _dataset_targets(recipe, catalog: Catalog, settings, block, output_dir: str, suffix: str):
    from_recipe = block.get("from_recipe")
    excluded_names = _excluded_exposures(catalog)
    names = list(getattr(settings, "datasets", {}) or {})
    targets, skipped = [], []
    by_exposure = _product_inputs_by_exposure(recipe, catalog, block)
    for dataset in names:
        inputs: dict[str, list[Path]] = defaultdict(list)
        members, log, firsts = [], [], []
        for name in sorted(by_exposure):
            products, set_log = by_exposure[name]
            if products[0].OBJECT != dataset:
                continue
            if name in excluded_names:
                log.append(f"exposure {name} not used: {excluded_names[name]}")
                continue
            members.append(name)
            log.extend(f"{name}: {line}" for line in set_log)
            firsts.append(min(products, key=lambda p: (p.DATE_OBS or dt.datetime.max, str(p.path))))
            for p in sorted(products, key=lambda p: str(p.path)):
                inputs[p.PRO_CATG].append(p.path)
        if not members:
            where = f" from {from_recipe}" if from_recipe else ""
            skipped.append(Skipped(dataset, f"no {'/'.join(recipe.inputs)} products{where} for this dataset"))
            continue
        first = min(firsts, key=lambda p: (p.DATE_OBS or dt.datetime.max, str(p.path)))
        name = f"{dataset}{suffix}"
        targets.append(Target(
            kind="dataset", name=name, output_dir=output_dir, folder=PurePosixPath(output_dir, name),
            night=first.night, DATE_OBS=first.DATE_OBS, INS_MODE=first.INS_MODE,
            TPL_START=first.TPL_START, OBJECT=dataset, inputs=dict(inputs),
            members=tuple(members), log=log,
        ))
    return sorted(targets, key=_sort_key), skipped


# ---------------------------------------------------------------- selection

def target_matches(target: Target, selector: str, settings) -> bool:
    """Does a command-line selector pick this target?

    A selector is a night (``2017-06-16``), a run name, a dataset name, a TPL_START, an
    exposure name, or a glob on any of those (``"2017-06-16*"``).
    """
    runs = getattr(settings, "runs", {}) or {}
    if selector in runs and target.night:
        run = runs[selector]
        night = dt.date.fromisoformat(target.night)
        if (run.start_date is None or run.start_date <= night) and (run.end_date is None or night <= run.end_date):
            return True
    candidates = [target.name, target.night, target.TPL_START, target.OBJECT, *target.members]
    return _value_matches_any([c for c in candidates if c], selector)


def select_targets(targets: Sequence[Target], selection: Sequence[str] | None, settings) -> list[Target]:
    """Targets picked by any selector; all of them when the selection is empty."""
    if not selection:
        return list(targets)
    return [t for t in targets if any(target_matches(t, s, settings) for s in selection)]


def check_selection(selection: Sequence[str] | None, catalog: Catalog, settings) -> None:
    """MuseredError for a selector that names nothing known (typo guard).

    Known: runs, datasets, and the nights, exposure names, TPL_STARTs and OBJECTs of any raw
    or reduced row (globs allowed). A selector that is known but has no target for one
    recipe is not an error: that step simply has nothing to do.
    """
    if not selection:
        return
    runs = getattr(settings, "runs", {}) or {}
    datasets = getattr(settings, "datasets", {}) or {}
    known: set[str] = set(runs) | set(datasets)
    for raw in catalog.raws:
        known.update(v for v in (raw.night, raw.name, raw.TPL_START, raw.OBJECT) if v)
    for p in catalog.products:
        known.update(v for v in (p.night, p.name, p.TPL_START, p.OBJECT) if v)
    for selector in selection:
        if not _value_matches_any(sorted(known), selector):
            raise MuseredError(
                f"nothing matches {selector!r}: not a night, run, dataset, TPL_START or "
                "exposure name in the database"
            )
