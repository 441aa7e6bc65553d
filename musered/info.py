"""``musered info``: what the database holds and how far the reduction went.

Every view is built as plain data first (:class:`InfoTable`: a title, column names and
rows of text) by a function of the database and the settings, then rendered with rich by
:func:`render`. Counts show ``--`` for none. Night filters (``--date``, ``--run``) keep
the rows whose night is one of the dates or inside one of the runs.

Conventions: a raw file is counted under its DPR TYPE, except science frames
(DPR TYPE ``OBJECT``), counted under their OBJECT (the dataset name after mapping).
Excluded raw files are not counted (``--excluded`` lists them). In ``reduced``, a
calibration target is a TPL_START, an exposure target an exposure name
(``YYYY-MM-DDTHH:MM:SS.mmm``), anything else a dataset; a recipe that declares its
target kind (``recipes.base.Recipe.group``) is classified by that declaration.

Modules: :mod:`musered.infotable` (the table type and its rendering),
:mod:`musered.inforows` (night filters and reading the database),
:mod:`musered.infoquery` (the ``--raw`` query); this module holds the views and
re-exports the names the ``info`` and ``flags`` commands use.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, inspect, select

from .db import Database, Raw, Reduced
from .infoquery import RAW_TABLE_COLUMNS, parse_raw_query, raw_query_table
from .inforows import (
    ALL_NIGHTS,
    SCIENCE_TYPE,
    NightFilter,
    flags_by_name,
    raw_rows,
    raw_type,
    reduced_kind,
    reduced_rows,
    target_kinds,
)
from .infotable import NONE, InfoTable, make_console, render

__all__ = [
    "ALL_NIGHTS", "CALIB_TYPE_ORDER", "NONE", "RAW_TABLE_COLUMNS", "SCIENCE_TYPE", "InfoTable", "NightFilter",
    "calib_sequences_table", "calibs_table", "datasets_table", "excluded_tables", "exposures_table",
    "exps_processed_table", "make_console", "nights_table", "overview_lines", "parse_raw_query",
    "raw_query_table", "raw_type", "reduced_kind", "render", "runs_table", "tables_table",
]

# Calibration DPR TYPEs in the order of a MUSE calibration plan.
CALIB_TYPE_ORDER = (
    "BIAS", "DARK", "FLAT,LAMP", "FLAT,LAMP,ILLUM", "WAVE", "WAVE,LSF", "WAVE,MASK",
    "FLAT,SKY", "SKY", "STD", "ASTROMETRY",
)


def _count(value: int) -> str:
    return str(value) if value else NONE


def overview_lines(settings, database: Database) -> list[str]:
    """Version, file counts and database location."""
    with database.session() as session:
        files = session.scalar(select(func.count()).select_from(Raw)) or 0
        excluded = session.scalar(select(func.count()).select_from(Raw).where(Raw.excluded.is_(True))) or 0
        products = session.scalar(select(func.count()).select_from(Reduced).where(Reduced.status == "ok")) or 0
    return [
        f"Reduction version {settings.version} (revision {settings.revision})",
        f"{files} raw files ({excluded} excluded), {products} processed products",
        f"raw_path: {settings.raw_path}",
    ]


def datasets_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Datasets of the settings with their OBJECT names and exposure counts."""
    rows = raw_rows(database, ["OBJECT", "DPR_TYPE", "excluded"], keep)
    exposures = Counter(r["OBJECT"] for r in rows if r["DPR_TYPE"] == SCIENCE_TYPE and not r["excluded"])
    nights: dict[str, set] = defaultdict(set)
    for r in rows:
        if r["DPR_TYPE"] == SCIENCE_TYPE and not r["excluded"]:
            nights[r["OBJECT"]].add(r["night"])
    table = InfoTable("Datasets", ["dataset", "OBJECT", "exposures", "nights"], empty="no datasets in the settings")
    for name, dataset in settings.datasets.items():
        table.rows.append([
            name, ", ".join(dataset.objects) or name, _count(exposures[name]), _count(len(nights[name])),
        ])
    return table


def runs_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Runs of the settings with their date ranges, exposures and nights."""
    rows = raw_rows(database, ["run", "DPR_TYPE", "excluded"], keep)
    exposures = Counter(r["run"] for r in rows if r["DPR_TYPE"] == SCIENCE_TYPE and not r["excluded"])
    nights: dict[str, set] = defaultdict(set)
    for r in rows:
        if r["run"] and not r["excluded"]:
            nights[r["run"]].add(r["night"])
    table = InfoTable("Runs", ["run", "start_date", "end_date", "exposures", "nights"],
                      empty="no runs in the settings")
    for name, run in settings.runs.items():
        table.rows.append([
            name, run.start_date.isoformat(), run.end_date.isoformat(),
            _count(exposures[name]), _count(len(nights[name])),
        ])
    return table


def nights_table(database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Raw files per night (rows) and DPR TYPE, or OBJECT for science (columns)."""
    rows = [r for r in raw_rows(database, ["DPR_TYPE", "OBJECT", "excluded"], keep)
            if not r["excluded"] and r["night"] and r["DPR_TYPE"]]
    counts = Counter((r["night"], raw_type(r)) for r in rows)
    types = {kind for _, kind in counts}
    calibs = [t for t in CALIB_TYPE_ORDER if t in types]
    calibs += sorted(t for t in types if t not in CALIB_TYPE_ORDER and not _is_science(t, rows))
    science = sorted(t for t in types if t not in calibs)
    columns = calibs + science
    table = InfoTable("Raw files per night", ["night", *columns], empty="no raw files")
    for night in sorted({night for night, _ in counts}):
        table.rows.append([night, *(_count(counts[night, c]) for c in columns)])
    return table


def _is_science(kind: str, rows: list[dict]) -> bool:
    return any(r["DPR_TYPE"] == SCIENCE_TYPE and raw_type(r) == kind for r in rows)


def calibs_table(database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Processed calibrations: distinct targets per night (rows) and recipe (columns)."""
    rows = reduced_rows(database, keep)
    kinds = target_kinds() if rows else {}
    rows = [r for r in rows if reduced_kind(r, kinds) == "sequence"]
    return _processed_table("Processed calibrations per night", "night", rows, lambda r: r["night"],
                            empty="no processed calibrations")


def exps_processed_table(database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Processed exposures: products per exposure name (rows) and recipe (columns)."""
    rows = reduced_rows(database, keep)
    kinds = target_kinds() if rows else {}
    rows = [r for r in rows if reduced_kind(r, kinds) == "exposure"]
    return _processed_table("Processed exposures", "name", rows, lambda r: r["name"],
                            empty="no processed exposures")


def _processed_table(title: str, key: str, rows: list[dict], key_of, empty: str) -> InfoTable:
    # A calibration night counts its targets (sequences); an exposure counts its products.
    count_targets = key == "night"
    cells: dict[tuple[str, str], set | int] = defaultdict(set if count_targets else int)
    for r in rows:
        if count_targets:
            cells[key_of(r), r["recipe_name"]].add(r["name"])
        else:
            cells[key_of(r), r["recipe_name"]] += 1
    recipes = sorted({recipe for _, recipe in cells})
    table = InfoTable(title, [key, *recipes], empty=empty)
    for row_key in sorted({k for k, _ in cells}):
        values = []
        for recipe in recipes:
            cell = cells.get((row_key, recipe))
            values.append(_count(len(cell) if isinstance(cell, set) else (cell or 0)))
        table.rows.append([row_key, *values])
    return table


def exposures_table(database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Science exposures with their flags and what has been processed for each."""
    raws = [r for r in raw_rows(database, ["name", "OBJECT", "OBJECT_ORIG", "run", "INS_MODE", "EXPTIME",
                                           "DPR_TYPE", "excluded"], keep) if r["DPR_TYPE"] == SCIENCE_TYPE]
    flags = flags_by_name(database)
    reduced = reduced_rows(database, ALL_NIGHTS)
    kinds = target_kinds() if reduced else {}
    processed: dict[str, Counter] = defaultdict(Counter)
    for r in reduced:
        if reduced_kind(r, kinds) == "exposure":
            processed[r["name"]][r["recipe_name"]] += 1
    recipes = sorted({recipe for counter in processed.values() for recipe in counter})
    table = InfoTable(
        "Exposures",
        ["name", "night", "OBJECT", "OBJECT_ORIG", "run", "INS_MODE", "EXPTIME", "flags", *recipes],
        empty="no science exposures",
    )
    for r in raws:
        flag_text = ", ".join(flags.get(r["name"], [])) or NONE
        if r["excluded"]:
            flag_text = "excluded" if flag_text == NONE else f"excluded, {flag_text}"
        table.rows.append([
            r["name"] or NONE, r["night"] or NONE, r["OBJECT"] or NONE, r["OBJECT_ORIG"] or NONE,
            r["run"] or NONE, r["INS_MODE"] or NONE, _number(r["EXPTIME"]), flag_text,
            *(_count(processed[r["name"]][recipe]) for recipe in recipes),
        ])
    return table


def calib_sequences_table(database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Raw calibration sequences (one TPL_START each) with their file counts."""
    rows = [r for r in raw_rows(database, ["TPL_START", "DPR_TYPE", "INS_MODE", "excluded"], keep)
            if r["DPR_TYPE"] and r["DPR_TYPE"] != SCIENCE_TYPE]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["night"], r["TPL_START"] or NONE, r["DPR_TYPE"], r["INS_MODE"] or NONE].append(r)
    table = InfoTable("Calibration sequences", ["night", "TPL_START", "DPR_TYPE", "INS_MODE", "files", "excluded"],
                      empty="no raw calibrations")
    for (night, tpl_start, dpr_type, mode), members in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        table.rows.append([night or NONE, tpl_start, dpr_type, mode, str(len(members)),
                           _count(sum(bool(m["excluded"]) for m in members))])
    return table


def excluded_tables(settings, database: Database, keep: NightFilter = ALL_NIGHTS) -> list[InfoTable]:
    """Excluded raw files, per-tag exclusions of the settings, and flagged exposures."""
    tables = [raw_query_table(settings, database, [], keep, excluded_only=True)]
    by_tag = {tag: names for tag, names in (settings.frames.get("exclude") or {}).items() if tag != "raw"}
    tag_table = InfoTable("Excluded by tag (frames.exclude)", ["tag", "excluded names"],
                          empty="no per-tag exclusions in the settings")
    for tag, names in by_tag.items():
        tag_table.rows.append([tag, ", ".join(map(str, names))])
    tables.append(tag_table)
    flag_table = InfoTable("Flagged exposures", ["name", "flags"], empty="no flagged exposures")
    for name, flags in sorted(flags_by_name(database).items()):
        flag_table.rows.append([name, ", ".join(flags)])
    tables.append(flag_table)
    return tables


def tables_table(database: Database) -> InfoTable:
    """The database tables and their row counts."""
    from .db.models import Base

    table = InfoTable("Database tables", ["table", "rows"])
    names = inspect(database.engine).get_table_names()
    with database.session() as session:
        for name in sorted(names):
            model_table = Base.metadata.tables.get(name)
            if model_table is None:
                continue
            count = session.scalar(select(func.count()).select_from(model_table)) or 0
            table.rows.append([name, str(count)])
    return table


def _number(value: Any) -> str:
    if value is None:
        return NONE
    return f"{value:g}" if isinstance(value, float) else str(value)
