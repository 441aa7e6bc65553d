"""The ``raw`` table as it is in the database: the model's columns plus one real column per
``settings.additional_keywords`` keyword, and the upsert that writes its rows.

An additional keyword's column (``ESO OBS OBSERVER`` → ``OBS_OBSERVER``) is added with
``ALTER TABLE ADD COLUMN`` the first time rows are written with it; its type follows the
values seen (numbers → float, booleans → boolean, else text), and rows already stored get
their value from their ``header`` JSON. Values are converted to the column's type on write
(a text value in a float column is stored as NULL; the header JSON keeps it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (Boolean, Column, Connection, Float, MetaData, String, Table, Text, bindparam,
                        insert, inspect, select, update)
from sqlalchemy.exc import IntegrityError

from .migrate import add_column
from .models import Raw

_UPSERT_SKIP = {"id", "path"}


def infer_type(values: Iterable[Any]):
    """The column type for these header values (None values ignored; text when mixed)."""
    kinds = set()
    for value in values:
        if value is None:
            continue
        kinds.add(bool if isinstance(value, bool) else float if isinstance(value, (int, float)) else str)
    if kinds == {bool}:
        return Boolean()
    if kinds == {float}:
        return Float()
    return Text()


def convert(value: Any, type_) -> Any:
    """A header value as the column type stores it (None when it cannot be)."""
    if value is None:
        return None
    if isinstance(type_, Boolean):
        return value if isinstance(value, bool) else None
    if isinstance(type_, Float):
        if isinstance(value, bool):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if isinstance(type_, String):
        return value if isinstance(value, str) else str(value)
    return value


def ensure_additional_columns(conn: Connection, additional: Sequence[tuple[str, str]],
                              headers: Iterable[Mapping[str, Any]] = ()) -> Table:
    """The raw table with a real column for each ``(keyword, column)`` of ``additional``,
    adding the missing ones (type from ``headers`` and the stored headers) and filling them
    for the rows already stored."""
    existing = {c["name"]: c["type"] for c in inspect(conn).get_columns("raw")}
    missing = [(kw, col) for kw, col in additional if col not in existing]
    if missing:
        headers = list(headers)
        stored = conn.execute(select(Raw.__table__.c.id, Raw.__table__.c.header)).all()
        for keyword, column in missing:
            values = [h.get(keyword) for h in headers] + [(h or {}).get(keyword) for _, h in stored]
            type_ = infer_type(values)
            add_column(conn, "raw", column, type_)
            existing[column] = type_
            fills = [{"row_id": i, "value": convert((h or {}).get(keyword), type_)} for i, h in stored]
            fills = [f for f in fills if f["value"] is not None]
            if fills:
                table = Table("raw", MetaData(), Column("id"), Column(column, type_))
                conn.execute(update(table).where(table.c.id == bindparam("row_id"))
                             .values({column: bindparam("value")}), fills)
    # only the settings' keywords: a column of a keyword dropped from the settings keeps its values
    return raw_table({col: existing[col] for _, col in additional if col in existing})


def raw_table(columns: Mapping[str, Any]) -> Table:
    """A Core table of ``raw`` with the model's columns plus the others in ``columns``
    (name → type, as reflected)."""
    model = Raw.__table__
    extra = [Column(name, type_) for name, type_ in columns.items() if name not in model.c]
    return Table("raw", MetaData(), *[c._copy() for c in model.columns], *extra)


def additional_types(table: Table) -> dict[str, Any]:
    """The columns of ``table`` that are not the model's (the additional keywords)."""
    return {c.name: c.type for c in table.columns if c.name not in Raw.__table__.c}


def upsert_raw(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows, updating those whose ``path`` is stored already (``ON CONFLICT`` on
    SQLite and PostgreSQL, insert-else-update elsewhere). Additional-keyword columns are
    converted to their type; columns a row lacks are written as NULL."""
    dynamic = additional_types(table)
    columns = [c.name for c in table.columns if c.name not in _UPSERT_SKIP]
    values = []
    for row in rows:
        item = {c: row.get(c) for c in ["path", *columns]}
        for column, type_ in dynamic.items():
            item[column] = convert(item[column], type_)
        values.append(item)
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.path],
                                          set_={c: stmt.excluded[c] for c in columns})
        conn.execute(stmt, values)
        return
    # Generic back end: insert the batch; if a path exists already, go row by row.
    savepoint = conn.begin_nested()
    try:
        conn.execute(insert(table), values)
        savepoint.commit()
    except IntegrityError:
        savepoint.rollback()
        for item in values:
            done = conn.execute(update(table).where(table.c.path == item["path"])
                                .values(**{c: item[c] for c in columns}))
            if done.rowcount == 0:
                conn.execute(insert(table).values(**item))
