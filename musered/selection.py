"""Exposure selection by database query: MuseRed's ``select`` and ``names_with_selection``.

A recipe block may restrict the exposures a dataset step uses (exp-combine; exp-align
reads ``select`` too) with queries on database tables, as MuseRed documents it
("Exposure selection for exp-combine")::

    select: {TABLE: "SQL condition" or {column: value, ...}, ...}
    names_with_selection: {OUTPUT_NAME: {TABLE: ...}, ...}   # one product per entry

Conventions:

- an exposure is selected when its ``name`` is in the rows of TABLE that the query
  matches; with several tables, when any of them picks it (MuseRed's union);
- TABLE is any table of the database with a ``name`` column: ``raw`` (every keyword
  MuseRed makes a column: ``TEL_AIRM_START``, ``OCS_SGS_FWHM_MED``, ``OBS_NAME`` ...),
  ``flags`` (``name``, ``flag``), the ``qc_<PRO_CATG>`` tables and ``reduced``, these
  last two restricted to the settings' version (MuseRed's ``reduced`` was
  ``reduced_{version}``; its name ``reduced_0_1`` reads our ``reduced`` rows of 0.1);
- SQL text is the condition of ``SELECT name FROM TABLE WHERE ...``, run read-only
  (SQLite ``query_only``; elsewhere a read-only transaction); it may not contain ``;``;
  a double-quoted name must be a column of the table (SQLite would otherwise read an
  unknown one as text, silently);
- a mapping is read as ``mr.raw.find(...)`` reads its filters (:mod:`musered.apitable`):
  a value is ``==``, a list ``IN``, ``{"<": 1.07}`` an operator.

Every problem (unknown table or column, SQL error) is a one-line
:class:`~musered.errors.MuseredError` naming where the query was written.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import MuseredError

#: The column a selection reads: the exposure (target) name.
NAME_COLUMN = "name"
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# single-quoted text (skipped) or a double-quoted identifier (group 1)
_SQL_QUOTED = re.compile(r"'(?:[^']|'')*'|\"((?:[^\"]|\"\")*)\"")
_MUSERED_REDUCED = re.compile(r"reduced_(\d+(?:_\d+)*)\Z")


@dataclass(frozen=True)
class ExposureSelection:
    """The exposures a block's queries pick (``names``; None: every exposure, a
    names_with_selection entry without a query), where they were written (``label``:
    ``select`` or ``names_with_selection GTO26``) and, for a names_with_selection entry,
    the name of the product (``output_name``)."""

    label: str
    queries: Mapping[str, Any] | None
    names: frozenset[str] | None
    output_name: str | None = None

    def picks(self, name: str) -> bool:
        return self.names is None or name in self.names

    @property
    def reason(self) -> str:
        """Why an exposure is left out: ``not selected by names_with_selection GTO26:
        raw: run = 'GTO26'``."""
        return f"not selected by {self.label}: {describe(self.queries)}"


def describe(queries: Mapping[str, Any]) -> str:
    """``raw: "TEL_AIRM_START" < 1.07 or flags: flag=BAD_SLICE`` (the queries as written)."""
    parts = []
    for table, query in queries.items():
        if isinstance(query, Mapping):
            text = ", ".join(f"{column}={_value_text(value)}" for column, value in query.items())
        else:
            text = str(query).strip()
        parts.append(f"{table}: {text}")
    return " or ".join(parts)


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{op} {_value_text(v)}" for op, v in value.items()) + "}"
    return str(value)


# ---------------------------------------------------------------- shape (settings load)

def query_problem(queries: Any) -> tuple[str, str] | None:
    """The first problem of a ``select`` mapping as (key path below it, reason), None
    when it is well formed; only its shape is checked (tables and columns are known
    once the database is open)."""
    if not isinstance(queries, Mapping) or not queries:
        return "", 'must be a mapping {TABLE: "SQL condition" or {column: value}}'
    for table, query in queries.items():
        if not isinstance(table, str) or not _TABLE_NAME.match(table):
            return str(table), "a table name (raw, flags, qc_IMAGE_FOV ...)"
        if isinstance(query, str):
            if not query.strip():
                return table, "an empty SQL condition"
            if ";" in query:
                return table, "one SQL condition, without ';'"
        elif isinstance(query, Mapping):
            if not query:
                return table, "an empty mapping of column values"
            for column, value in query.items():
                if not isinstance(column, str) or not _TABLE_NAME.match(column):
                    return f"{table}.{column}", "a column name"
                if not _is_filter_value(value):
                    return f"{table}.{column}", "a value, a list of values or {operator: value}"
        else:
            return table, f'"SQL condition" or {{column: value}}, not {type(query).__name__}'
    return None


def _is_filter_value(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (str, int, float, bool, dt.date)):
        return True
    if isinstance(value, (list, tuple)):
        return depth < 2 and all(_is_filter_value(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return depth == 0 and all(isinstance(op, str) and _is_filter_value(v, 1) for op, v in value.items())
    return False


def normalized_queries(queries: Mapping[str, Any]) -> dict[str, Any]:
    """The queries with SQL text stripped and dates as ISO text (YAML reads
    ``night: 2017-06-16`` as a date; the columns hold text)."""
    def norm(value: Any) -> Any:
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, Mapping):
            return {op: norm(v) for op, v in value.items()}
        return value

    return {table: query.strip() if isinstance(query, str) else {c: norm(v) for c, v in query.items()}
            for table, query in queries.items()}


# ---------------------------------------------------------------- running the queries

def selected_names(database, queries: Mapping[str, Any], version: str, where: str = "select") -> set[str]:
    """The names picked by ``queries`` (module docstring), read-only; ``where`` (the key
    path, ``recipes.mpdaf_combine.select``) starts every error message."""
    from .apitable import TableSet

    problem = query_problem(queries)
    if problem is not None:
        key, reason = problem
        raise MuseredError(f"{where}{'.' + key if key else ''}: {reason}")
    tables = TableSet(database)
    names: set[str] = set()
    for table_name, query in normalized_queries(queries).items():
        here = f"{where}.{table_name}"
        table = _name_table(tables, table_name, version, here)
        if isinstance(query, str):
            names |= _sql_names(database, table, query, here)
        else:
            try:
                names |= {v for v in table.values(NAME_COLUMN, **query) if v is not None}
            except MuseredError as exc:
                raise MuseredError(f"{here}: {exc}") from None
    return names


def _name_table(tables, name: str, version: str, where: str):
    """The :class:`~musered.apitable.Table` ``name`` stands for (module docstring)."""
    from .apitable import NoSuchTable
    from .qctables import QC_PREFIX

    existing = tables.tables
    fixed: dict[str, str] = {}
    real = name
    match = _MUSERED_REDUCED.match(name)
    if name not in existing and match:
        real, fixed = "reduced", {"version": match.group(1).replace("_", ".")}
    elif name == "reduced" or name.startswith(QC_PREFIX):
        fixed = {"version": str(version)}
    try:
        table = tables.table(real, fixed=fixed)
        columns = table.columns
    except NoSuchTable:
        with_names = [t for t in existing if NAME_COLUMN in _columns(tables, t)]
        raise MuseredError(f"{where}: no table {name!r} in the database (tables with a name column: "
                           f"{', '.join(with_names) or 'none'})") from None
    if NAME_COLUMN not in columns:
        raise MuseredError(f"{where}: table {name} has no name column: a selection picks exposures by name")
    return table


def _columns(tables, name: str) -> list[str]:
    try:
        return tables.table(name).columns
    except MuseredError:
        return []


def _sql_names(database, table, condition: str, where: str) -> set[str]:
    """``SELECT name FROM table WHERE condition`` (and the table's fixed filters), on a
    read-only connection."""
    from sqlalchemy import and_, select, text
    from sqlalchemy.exc import SQLAlchemyError

    for match in _SQL_QUOTED.finditer(condition):
        quoted = match.group(1)
        if quoted is not None and quoted.replace('""', '"') not in table.columns:
            raise MuseredError(f'{where}: no column "{quoted}" in table {table.name} (a double-quoted name is '
                               "a column; write text in single quotes)")
    sql = table.table
    clauses = [text(condition)] + [sql.c[column] == value for column, value in table.fixed.items()]
    query = select(sql.c[NAME_COLUMN]).where(and_(*clauses))
    try:
        with database.engine.connect() as connection:
            with _read_only(connection):
                rows = connection.execute(query).all()
    except SQLAlchemyError as exc:
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise MuseredError(f"{where}: {condition!r}: {message}") from None
    return {name for (name,) in rows if name is not None}


class _read_only:
    """Make a connection refuse writes while a user's SQL runs (SQLite: ``PRAGMA
    query_only``, reset afterwards since pooled connections are reused; other databases:
    a read-only transaction, rolled back when the connection closes)."""

    def __init__(self, connection):
        self.connection = connection
        self.sqlite = connection.dialect.name == "sqlite"

    def __enter__(self):
        if self.sqlite:
            self.connection.exec_driver_sql("PRAGMA query_only = ON")
        else:
            self.connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        return self.connection

    def __exit__(self, *exc_info) -> None:
        if self.sqlite:
            self.connection.rollback()
            self.connection.exec_driver_sql("PRAGMA query_only = OFF")
            self.connection.commit()


def exposure_selection(database, queries: Mapping[str, Any] | None, version: str, label: str, where: str,
                       output_name: str | None = None) -> ExposureSelection | None:
    """The :class:`ExposureSelection` of one block's queries; None when there is neither
    a query nor an output name (nothing to apply)."""
    if queries is None:
        return ExposureSelection(label, None, None, output_name) if output_name else None
    names = selected_names(database, queries, version, where)
    return ExposureSelection(label, normalized_queries(queries), frozenset(names), output_name)
