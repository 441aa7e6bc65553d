"""Database tables for the Python API, queried the way MuseRed's ``dataset`` tables are.

MuseRed users write ``mr.raw.find(night="2017-06-17", DPR_TYPE="BIAS")`` and
``mr.reduced.count(recipe_name="muse_bias")``. :class:`Table` offers that vocabulary —
``find``, ``find_one``, ``count``, ``distinct``, ``all``, iteration, ``len`` — over a
table of our database reflected with SQLAlchemy (so columns added to a table, and tables
imported from MuseRed such as ``qc_*``, are seen as they are). It only reads: writes go
through the module functions the commands use (flags, ingest, import).

Filters (keyword arguments), as in ``dataset``: a plain value is ``==`` (a string given
for a date-time column is read as ISO), ``None`` is ``IS NULL``, a list/tuple/set is
``IN``, a dict maps operators to values: ``{">": 1.5}``, ``{"between": [a, b]}``,
``{"like": "2017-06-1%"}`` (also ``gt``, ``gte``, ``lt``, ``lte``, ``!=``/``not``,
``in``, ``notin``, ``ilike``, ``startswith``, ``endswith``). Positional arguments are
SQLAlchemy clauses (``t.c.EXPTIME > 100``) or SQL text (``"EXPTIME > 100"``).
``order_by`` takes a column name, ``-name`` for descending, or a list of them; ``_limit``
caps the rows. An unknown column is a one-line :class:`~musered.errors.MuseredError`.

A table may carry fixed filters (``mr.reduced`` is ``reduced`` restricted to the
settings' version) and column aliases (``DPR_TYPE`` for ``PRO_CATG`` in ``reduced``, as
MuseRed calls the product type), both applied to every query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import MetaData, and_, func, inspect, select, text
from sqlalchemy import Table as SqlTable
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.types import Date, DateTime

from .errors import MuseredError

_OPERATORS = {
    ">": "__gt__", "gt": "__gt__", ">=": "__ge__", "gte": "__ge__",
    "<": "__lt__", "lt": "__lt__", "<=": "__le__", "lte": "__le__",
    "!=": "__ne__", "<>": "__ne__", "not": "__ne__", "==": "__eq__", "=": "__eq__",
}


class Table:
    """One database table, queried like a MuseRed ``dataset`` table (module docstring)."""

    def __init__(self, tables: TableSet, name: str, fixed: Mapping[str, Any] | None = None,
                 aliases: Mapping[str, str] | None = None):
        self.tables = tables
        self.database = tables.database
        self.name = name
        self.fixed = dict(fixed or {})
        self.aliases = dict(aliases or {})

    def __repr__(self) -> str:
        where = ", ".join(f"{k}={v!r}" for k, v in self.fixed.items())
        return f"<Table {self.name}{' (' + where + ')' if where else ''}>"

    @property
    def table(self) -> SqlTable:
        """The SQLAlchemy table, as ``dataset``'s ``Table.table`` (reflected once per
        :class:`TableSet`, so that its columns combine in one query)."""
        return self.tables.reflect(self.name)

    @property
    def c(self):
        """The table's SQLAlchemy columns (``mr.raw.c.EXPTIME > 100``)."""
        return self.table.c

    @property
    def columns(self) -> list[str]:
        return [column.name for column in self.table.columns]

    def find(self, *clauses: Any, order_by: str | list[str] | None = None, _limit: int | None = None,
             **filters: Any) -> Iterator[dict[str, Any]]:
        """Rows (dicts) matching the clauses and filters (module docstring)."""
        query = select(self.table).where(*self._where(clauses, filters))
        query = query.order_by(*self._order(order_by))
        if _limit is not None:
            query = query.limit(_limit)
        with self.database.engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        return iter(rows)

    def find_one(self, *clauses: Any, order_by: str | list[str] | None = None, **filters: Any) -> dict | None:
        """The first matching row, or None."""
        return next(self.find(*clauses, order_by=order_by, _limit=1, **filters), None)

    def all(self) -> list[dict[str, Any]]:
        """Every row (with the table's fixed filters)."""
        return list(self.find())

    def count(self, *clauses: Any, **filters: Any) -> int:
        """The number of matching rows."""
        query = select(func.count()).select_from(self.table).where(*self._where(clauses, filters))
        with self.database.engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def values(self, column: str, *clauses: Any, distinct: bool = False, notnull: bool = False,
               **filters: Any) -> list:
        """The values of one column in the matching rows (distinct ones sorted)."""
        col = self._column(column)
        where = self._where(clauses, filters) + ([col.is_not(None)] if notnull else [])
        query = select(col).where(*where)
        if distinct:
            query = query.distinct().order_by(col)
        with self.database.engine.connect() as connection:
            return [value for (value,) in connection.execute(query)]

    def distinct(self, *columns: str, order_by: str | list[str] | None = None, **filters: Any) -> list[dict]:
        """The distinct value combinations of ``columns`` among the matching rows (sorted by
        them unless ``order_by``)."""
        cols = [self._column(name) for name in columns]
        query = select(*cols).distinct().where(*self._where((), filters))
        query = query.order_by(*(self._order(order_by) if order_by else cols))
        with self.database.engine.connect() as connection:
            return [dict(zip(columns, row)) for row in connection.execute(query)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.find()

    def __len__(self) -> int:
        return self.count()

    # ------------------------------------------------------------ building queries

    def _column(self, name: str):
        real = self.aliases.get(name, name)
        try:
            return self.table.c[real]
        except KeyError:
            raise MuseredError(f"table {self.name} has no column {name!r} "
                               f"(columns: {', '.join(self.columns)})") from None

    def _where(self, clauses, filters: Mapping[str, Any]) -> list:
        out = [text(c) if isinstance(c, str) else c for c in clauses]
        for name, value in {**self.fixed, **filters}.items():
            out.append(self._condition(self._column(name), value))
        return [and_(*out)] if out else []

    def _condition(self, column, value: Any):
        if value is None:
            return column.is_(None)
        if isinstance(value, (list, tuple, set, frozenset)):
            return column.in_([self._bind(column, v) for v in value])
        if isinstance(value, Mapping):
            return and_(*(self._operator(column, op, v) for op, v in value.items()))
        return column == self._bind(column, value)

    def _operator(self, column, op: str, value: Any):
        key = str(op).lower()
        if key in _OPERATORS:
            if value is None:
                return column.is_(None) if _OPERATORS[key] == "__eq__" else column.is_not(None)
            return getattr(column, _OPERATORS[key])(self._bind(column, value))
        if key in ("between", ".."):
            low, high = value
            return column.between(self._bind(column, low), self._bind(column, high))
        if key in ("in", "notin"):
            values = [self._bind(column, v) for v in value]
            return column.in_(values) if key == "in" else column.not_in(values)
        if key in ("like", "ilike", "notlike", "startswith", "endswith"):
            method = {"notlike": "not_like"}.get(key, key)
            return getattr(column, method)(value)
        raise MuseredError(f"unknown operator {op!r} on column {column.name} (use one of: "
                           f"{', '.join(sorted(_OPERATORS))}, between, in, notin, like, ilike, "
                           "notlike, startswith, endswith)")

    @staticmethod
    def _bind(column, value: Any) -> Any:
        # SQLite's DateTime type takes only datetime objects; MuseRed users write ISO strings.
        if isinstance(value, str) and isinstance(column.type, (DateTime, Date)):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                raise MuseredError(f"column {column.name}: {value!r} is not an ISO date") from None
            return parsed if isinstance(column.type, DateTime) else parsed.date()
        return value

    def _order(self, order_by: str | list[str] | None) -> list:
        if order_by is None:
            return []
        names = [order_by] if isinstance(order_by, str) else list(order_by)
        return [self._column(n[1:]).desc() if n.startswith("-") else self._column(n) for n in names]


class NoSuchTable(MuseredError, KeyError):
    """``mr.db["name"]`` for a table the database does not have (a KeyError for mappings)."""

    def __str__(self) -> str:
        return MuseredError.__str__(self)


class TableSet(Mapping):
    """The database's tables by name (``mr.db["raw"]``, ``"qc_MASTER_FLAT" in mr.db``),
    and :meth:`query` for SQL text; tables are listed as they are now in the database,
    their columns as they were when first used (:meth:`refresh` reads them again)."""

    def __init__(self, database):
        self.database = database
        self._metadata = MetaData()

    def reflect(self, name: str) -> SqlTable:
        """The SQLAlchemy table ``name``, reflected on first use."""
        if name not in self._metadata.tables:
            try:
                SqlTable(name, self._metadata, autoload_with=self.database.engine)
            except NoSuchTableError:
                raise NoSuchTable(f"no table {name!r} in the database (tables: {', '.join(self.tables)})") from None
        return self._metadata.tables[name]

    def refresh(self) -> None:
        """Forget the reflected tables (after a change of columns: update-db, an import)."""
        self._metadata = MetaData()

    def table(self, name: str, fixed: Mapping[str, Any] | None = None,
              aliases: Mapping[str, str] | None = None) -> Table:
        """A :class:`Table` of this set, with fixed filters and column aliases."""
        return Table(self, name, fixed, aliases)

    @property
    def tables(self) -> list[str]:
        return sorted(inspect(self.database.engine).get_table_names())

    def __getitem__(self, name: str) -> Table:
        if name not in self.tables:
            raise NoSuchTable(f"no table {name!r} in the database (tables: {', '.join(self.tables)})")
        return Table(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    def __contains__(self, name: object) -> bool:
        return name in self.tables

    def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Rows (dicts) of an SQL query, with ``:name`` parameters (``dataset``'s ``db.query``)."""
        with self.database.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(sql), params)]


def rows_to_table(rows: list[Mapping[str, Any]], columns: list[str]):
    """An astropy Table of rows: a masked column per database column (None is masked),
    date-times as ISO text (as MuseRed stores them), JSON values as objects."""
    from astropy.table import Column, MaskedColumn
    from astropy.table import Table as AstropyTable

    out = AstropyTable(masked=True)
    for name in columns:
        values = [row.get(name) for row in rows]
        present = [v for v in values if v is not None]
        mask = [v is None for v in values]
        if any(isinstance(v, (dict, list)) for v in present):
            out[name] = Column(values, dtype=object)
            continue
        if any(isinstance(v, (dt.date, dt.datetime)) for v in present):
            values = [v.isoformat() if v is not None else None for v in values]
            present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            fill, dtype = False, bool
        elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            fill, dtype = 0, int
        elif present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            fill, dtype = float("nan"), float
        elif present:
            fill, dtype = "", str
            values = [str(v) if v is not None else None for v in values]
        else:
            fill, dtype = float("nan"), float
        out[name] = MaskedColumn([fill if v is None else v for v in values], dtype=dtype, mask=mask)
    return out
