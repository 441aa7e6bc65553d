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
target kind (``recipes.base.Recipe.target``) is classified by that declaration.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import func, inspect, select

from .db import Database, Flag, Raw, Reduced
from .errors import MuseredError
from .rawrows import RAW_QUERY_COLUMNS, keyword_column, value_matches

NONE = "--"
# Calibration DPR TYPEs in the order of a MUSE calibration plan.
CALIB_TYPE_ORDER = (
    "BIAS", "DARK", "FLAT,LAMP", "FLAT,LAMP,ILLUM", "WAVE", "WAVE,LSF", "WAVE,MASK",
    "FLAT,SKY", "SKY", "STD", "ASTROMETRY",
)
SCIENCE_TYPE = "OBJECT"
_EXPOSURE_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}$")
RAW_TABLE_COLUMNS = ("name", "night", "run", "DPR_TYPE", "OBJECT", "INS_MODE", "EXPTIME", "TPL_START", "excluded")


@dataclass
class InfoTable:
    """A table as text: what ``render`` prints and what tests assert on."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    empty: str = "nothing to show"

    def column(self, name: str) -> list[str]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def cell(self, row_key: str, column: str) -> str:
        """The cell of the row whose first column is ``row_key``."""
        index = self.columns.index(column)
        for row in self.rows:
            if row[0] == row_key:
                return row[index]
        raise KeyError(row_key)


# --------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class NightFilter:
    """Nights to keep: given dates and runs (either matches); no selection keeps all."""

    dates: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_options(cls, settings, dates: Sequence[str] = (), runs: Sequence[str] = ()) -> NightFilter:
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
        return bool(self.dates or self.ranges)

    def __call__(self, night: str | None) -> bool:
        if not self.active:
            return True
        if night is None:
            return False
        return night in self.dates or any(start <= night <= end for start, end in self.ranges)


ALL_NIGHTS = NightFilter()


# --------------------------------------------------------------------------------------
# Reading


def _raw_rows(database: Database, columns: Iterable[str], keep: Callable[[str | None], bool]) -> list[dict]:
    wanted = list(dict.fromkeys(["night", *columns]))
    with database.session() as session:
        rows = session.execute(select(*(getattr(Raw, c) for c in wanted)).order_by(Raw.DATE_OBS, Raw.path))
        return [dict(row._mapping) for row in rows if keep(row.night)]


def _reduced_rows(database: Database, keep: Callable[[str | None], bool]) -> list[dict]:
    columns = (Reduced.recipe_name, Reduced.name, Reduced.night, Reduced.status, Reduced.path)
    with database.session() as session:
        rows = session.execute(select(*columns).where(Reduced.status == "ok"))
        return [dict(row._mapping) for row in rows if keep(row.night)]


def _flags(database: Database) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = defaultdict(list)
    with database.session() as session:
        for name, flag in session.execute(select(Flag.name, Flag.flag).order_by(Flag.name, Flag.flag)):
            flags[name].append(flag)
    return flags


def _count(value: int) -> str:
    return str(value) if value else NONE


def raw_type(row: dict) -> str | None:
    """The night-table column of a raw row: DPR TYPE, or OBJECT for science frames."""
    if row.get("DPR_TYPE") == SCIENCE_TYPE:
        return row.get("OBJECT") or SCIENCE_TYPE
    return row.get("DPR_TYPE")


def _target_kinds() -> dict[str, str]:
    """Recipe name -> declared target kind, for the recipes that are registered.

    Loading the registry imports the recipe modules (about a second), so callers ask
    only when there are processed products to classify."""
    try:
        from recipes.registry import all_recipes

        return {name: recipe.target for name, recipe in all_recipes().items()}
    except Exception:  # the registry is optional here: fall back on the name pattern
        return {}


def reduced_kind(row: dict, kinds: dict[str, str]) -> str:
    """``sequence`` (calibration), ``exposure`` or ``dataset`` for a reduced row."""
    declared = kinds.get(row["recipe_name"])
    if declared in ("sequence", "exposure", "dataset"):
        return declared
    if _EXPOSURE_NAME.match(row["name"] or ""):
        return "exposure"
    return "sequence" if row["night"] else "dataset"


# --------------------------------------------------------------------------------------
# Views


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
    rows = _raw_rows(database, ["OBJECT", "DPR_TYPE", "excluded"], keep)
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
    rows = _raw_rows(database, ["run", "DPR_TYPE", "excluded"], keep)
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
    rows = [r for r in _raw_rows(database, ["DPR_TYPE", "OBJECT", "excluded"], keep)
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
    rows = _reduced_rows(database, keep)
    kinds = _target_kinds() if rows else {}
    rows = [r for r in rows if reduced_kind(r, kinds) == "sequence"]
    return _processed_table("Processed calibrations per night", "night", rows, lambda r: r["night"],
                            empty="no processed calibrations")


def exps_processed_table(database: Database, keep: NightFilter = ALL_NIGHTS) -> InfoTable:
    """Processed exposures: products per exposure name (rows) and recipe (columns)."""
    rows = _reduced_rows(database, keep)
    kinds = _target_kinds() if rows else {}
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
    raws = [r for r in _raw_rows(database, ["name", "OBJECT", "OBJECT_ORIG", "run", "INS_MODE", "EXPTIME",
                                            "DPR_TYPE", "excluded"], keep) if r["DPR_TYPE"] == SCIENCE_TYPE]
    flags = _flags(database)
    reduced = _reduced_rows(database, ALL_NIGHTS)
    kinds = _target_kinds() if reduced else {}
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
    rows = [r for r in _raw_rows(database, ["TPL_START", "DPR_TYPE", "INS_MODE", "excluded"], keep)
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


def parse_raw_query(settings, terms: Sequence[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` terms → {column: [values]}; a key may be a raw column or an
    additional keyword (by its column name or its FITS spelling)."""
    extra = {keyword_column(k): k for k in settings.additional_keywords}
    query: dict[str, list[str]] = defaultdict(list)
    for term in terms:
        key, sep, value = term.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MuseredError(f"--raw {term!r}: expected KEY=VALUE (e.g. night=2017-06-15)")
        if key not in RAW_QUERY_COLUMNS and key not in extra:
            column = keyword_column(key)
            if column in RAW_QUERY_COLUMNS or column in extra:
                key = column
            else:
                known = ", ".join(sorted(RAW_QUERY_COLUMNS) + sorted(extra))
                raise MuseredError(f"--raw {term!r}: unknown column {key!r} (known: {known})")
        query[key].append(value.strip())
    return dict(query)


def raw_query_table(settings, database: Database, terms: Sequence[str], keep: NightFilter = ALL_NIGHTS,
                    excluded_only: bool = False) -> InfoTable:
    """Raw rows matching every ``KEY=VALUE`` term (a repeated key matches any of its
    values; ``*`` is a wildcard)."""
    query = parse_raw_query(settings, terms)
    extra_columns = [keyword_column(k) for k in settings.additional_keywords]
    rows = _raw_rows(database, [*RAW_TABLE_COLUMNS, "filename", "extra"], keep)
    out_columns = ["filename", *RAW_TABLE_COLUMNS[1:], *extra_columns]
    title = "Excluded raw files" if excluded_only else "Raw files"
    table = InfoTable(title, out_columns, empty="no matching raw files")
    for r in rows:
        if excluded_only and not r["excluded"]:
            continue
        values = {**(r["extra"] or {}), **{k: v for k, v in r.items() if k != "extra"}}
        if all(any(_term_matches(values.get(key), wanted) for wanted in wanted_values)
               for key, wanted_values in query.items()):
            table.rows.append([_text(values.get(c)) for c in out_columns])
    return table


def _term_matches(value: Any, wanted: str) -> bool:
    if "*" in wanted:
        pattern = "^" + ".*".join(re.escape(part) for part in wanted.split("*")) + "$"
        return value is not None and re.match(pattern, _text(value)) is not None
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    return value_matches(value, wanted)


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
    for name, flags in sorted(_flags(database).items()):
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


def _is_count(text: str) -> bool:
    return text == NONE or text.replace(".", "", 1).isdigit()


def _number(value: Any) -> str:
    if value is None:
        return NONE
    return f"{value:g}" if isinstance(value, float) else str(value)


def _text(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --------------------------------------------------------------------------------------
# Rendering


def make_console(file: IO[str], no_color: bool = False):
    """A rich console; plain text (no ANSI codes, wide lines) unless a colour terminal."""
    from rich.console import Console

    plain = no_color or not file.isatty()
    if plain:
        return Console(file=file, color_system=None, force_terminal=False, highlight=False,
                       emoji=False, width=400, soft_wrap=True)
    return Console(file=file, highlight=False, emoji=False)


def render(console, items: Iterable[str | InfoTable]) -> None:
    """Print lines and tables; an empty table prints its ``empty`` message."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    for item in items:
        if isinstance(item, str):
            console.print(Text(item))
            continue
        console.print()
        console.print(Text(item.title, style="bold"))
        if not item.rows:
            console.print(Text(f"  ({item.empty})"))
            continue
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for i, name in enumerate(item.columns):
            numeric = i > 0 and all(_is_count(row[i]) for row in item.rows)
            table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
        for row in item.rows:
            table.add_row(*(Text(cell, style="dim" if cell == NONE else "") for cell in row))
        console.print(table)
