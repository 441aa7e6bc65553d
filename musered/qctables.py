"""The QC tables: one table ``qc_{PRO_CATG}`` per product type, as MuseRed keeps them.

Columns (MuseRed's): ``id``, ``name`` (the target: TPL_START, exposure, dataset),
``reduced_id`` (our ``reduced`` row of the product file), ``version``, ``recipe_name``,
``date_parsed`` (when the values were read), ``DATE_OBS``, ``INS_MODE``, ``run``,
``filename`` (the product file name), ``hdu`` (``PRIMARY`` or the extension name without
its ``.DATA`` suffix: ``CHAN01``), then one column per QC keyword, ``ESO QC BIAS MASTER1
RON`` → ``QC_BIAS_MASTER1_RON``. One row per product file and header holding QC keywords;
a row is identified by (version, recipe_name, name, filename, hdu).

The tables are made at run time with SQLAlchemy Core: created when the first values of a
type are written, and given a new column (``ALTER TABLE ADD COLUMN``) for a QC keyword
seen for the first time; a keyword's type is that of its first value (integer, float,
boolean, text). ``qc_info`` (:class:`musered.db.QcInfo`) counts the rows of each table
and version. Written by ``update-qc`` (:mod:`musered.qcupdate`) and ``import-musered``;
read by ``info --qc`` through :func:`read_qc`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (Boolean, Column, Connection, DateTime, Float, Index, Integer, MetaData, String,
                        Table, Text, delete, func, insert, inspect, select)
from sqlalchemy.exc import NoSuchTableError

from .db import Database, QcInfo
from .db.migrate import add_column
from .errors import MuseredError

QC_PREFIX = "qc_"
#: The columns before the QC keywords, in MuseRed's order.
FIXED_COLUMNS = ("id", "name", "reduced_id", "version", "recipe_name", "date_parsed", "DATE_OBS",
                 "INS_MODE", "run", "filename", "hdu")
ROW_KEY = ("version", "recipe_name", "name", "filename", "hdu")
_PRO_CATG_RE = re.compile(r"[A-Z0-9_]+")


def qc_table_name(pro_catg: str) -> str:
    """``MASTER_BIAS`` → ``qc_MASTER_BIAS`` (MuseRed's name); MuseredError for a name
    that is not a product type."""
    if not _PRO_CATG_RE.fullmatch(pro_catg or ""):
        raise MuseredError(f"{pro_catg!r} is not a product type (PRO CATG such as MASTER_BIAS)")
    return QC_PREFIX + pro_catg


def qc_column(keyword: str) -> str:
    """The column of a QC keyword: ``ESO QC BIAS MASTER1 RON`` → ``QC_BIAS_MASTER1_RON``."""
    name = " ".join(keyword.strip().split())
    if name.startswith("HIERARCH "):
        name = name[9:]
    if name.startswith("ESO "):
        name = name[4:]
    return re.sub(r"[ .\-]+", "_", name)


def qc_type(value: Any):
    """The column type for a QC value (booleans before integers: bool is an int)."""
    if isinstance(value, bool):
        return Boolean()
    if isinstance(value, int):
        return Integer()
    if isinstance(value, float):
        return Float()
    return Text()


def _fixed_columns() -> list[Column]:
    return [
        Column("id", Integer, primary_key=True),
        Column("name", String(128)),
        Column("reduced_id", Integer),
        Column("version", String(32)),
        Column("recipe_name", String(64)),
        Column("date_parsed", DateTime),
        Column("DATE_OBS", DateTime),
        Column("INS_MODE", String(32)),
        Column("run", String(64)),
        Column("filename", String(255)),
        Column("hdu", String(64)),
    ]


def _table(name: str, columns: Mapping[str, Any]) -> Table:
    """A Core table of a QC table: the fixed columns, then ``columns`` (name → type)."""
    fixed = _fixed_columns()
    known = {c.name for c in fixed}
    table = Table(name, MetaData(), *fixed,
                  *[Column(c, t) for c, t in columns.items() if c not in known])
    Index(f"uq_{name}_row", *[table.c[c] for c in ROW_KEY], unique=True)
    return table


def ensure_qc_table(conn: Connection, pro_catg: str, qc_columns: Mapping[str, Any] = ()) -> Table:
    """The table of ``pro_catg``, created when missing, with a column for each of
    ``qc_columns`` (QC column → type; existing columns keep their type)."""
    name = qc_table_name(pro_catg)
    inspector = inspect(conn)
    qc_columns = dict(qc_columns)
    if not inspector.has_table(name):
        table = _table(name, qc_columns)
        table.create(conn)
        return table
    existing = {c["name"]: c["type"] for c in inspector.get_columns(name)}
    for column, type_ in qc_columns.items():
        if column not in existing:
            add_column(conn, name, column, type_)
            existing[column] = type_
    return _table(name, {c: t for c, t in existing.items() if c not in FIXED_COLUMNS})


def reflect_qc_table(conn: Connection, pro_catg: str) -> Table | None:
    """The table of ``pro_catg`` as it is, or None when it does not exist."""
    name = qc_table_name(pro_catg)
    try:
        columns = {c["name"]: c["type"] for c in inspect(conn).get_columns(name)}
    except NoSuchTableError:
        return None
    if not columns:
        return None
    return _table(name, {c: t for c, t in columns.items() if c not in FIXED_COLUMNS})


def qc_table_names(database: Database) -> list[str]:
    """The QC tables of the database (``qc_MASTER_BIAS`` ...), sorted; not ``qc_info``."""
    names = inspect(database.engine).get_table_names()
    return sorted(n for n in names if n.startswith(QC_PREFIX) and n != QcInfo.__tablename__)


def read_qc(database: Database, pro_catg: str, version: str | None = None,
            names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``qc_{pro_catg}`` as dicts (fixed columns first, then QC columns in
    table order), ordered by name, filename and hdu; only ``version`` and the targets in
    ``names`` when given. QC columns that are NULL in every selected row are left out.
    MuseredError naming the known types when the table does not exist."""
    with database.engine.connect() as conn:
        table = reflect_qc_table(conn, pro_catg)
        if table is None:
            known = ", ".join(n[len(QC_PREFIX):] for n in qc_table_names(database)) or "none yet: run update-qc"
            raise MuseredError(f"no QC table for {pro_catg} (QC tables: {known})")
        query = select(table)
        if version is not None:
            query = query.where(table.c.version == str(version))
        if names:
            query = query.where(table.c.name.in_(list(names)))
        query = query.order_by(table.c.name, table.c.filename, table.c.hdu, table.c.id)
        rows = [dict(r._mapping) for r in conn.execute(query)]
    qc_names = [c.name for c in table.columns if c.name not in FIXED_COLUMNS]
    used = [c for c in qc_names if any(r[c] is not None for r in rows)]
    return [{**{c: r[c] for c in FIXED_COLUMNS}, **{c: r[c] for c in used}} for r in rows]


FILE_KEY = ROW_KEY[:-1]  # (version, recipe_name, name, filename): the rows of one product file


def write_qc_rows(conn: Connection, pro_catg: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Write QC rows (fixed columns and QC columns) into ``qc_{pro_catg}``, replacing every
    row of the same product files (same version, recipe_name, name and filename: a header
    that lost its QC loses its row). Returns the rows written."""
    if not rows:
        return 0
    types: dict[str, Any] = {}
    for row in rows:
        for column, value in row.items():
            if column not in FIXED_COLUMNS and column not in types and value is not None:
                types[column] = qc_type(value)
    table = ensure_qc_table(conn, pro_catg, types)
    keys = {tuple(row.get(k) for k in FILE_KEY) for row in rows}
    for key in keys:
        conn.execute(delete(table).where(*[table.c[k] == v if v is not None else table.c[k].is_(None)
                                           for k, v in zip(FILE_KEY, key)]))
    columns = [c.name for c in table.columns if c.name != "id"]
    conn.execute(insert(table), [{c: row.get(c) for c in columns} for row in rows])
    return len(rows)


def existing_keys(conn: Connection, pro_catg: str, version: str) -> dict[tuple, int | None]:
    """(version, recipe_name, name, filename, hdu) → reduced_id of the rows of a version."""
    table = reflect_qc_table(conn, pro_catg)
    if table is None:
        return {}
    rows = conn.execute(select(*[table.c[k] for k in ROW_KEY], table.c.reduced_id)
                        .where(table.c.version == version))
    return {tuple(r[:len(ROW_KEY)]): r[-1] for r in rows}


def update_qc_info(conn: Connection, pro_catgs: Iterable[str], versions: Iterable[str],
                   when: dt.datetime | None = None) -> None:
    """Count the rows of each table and version into ``qc_info`` (one row per pair)."""
    info = QcInfo.__table__
    when = when or dt.datetime.now()
    for pro_catg in sorted(set(pro_catgs)):
        table = reflect_qc_table(conn, pro_catg)
        for version in sorted(set(versions)):
            nrows = 0 if table is None else conn.scalar(
                select(func.count()).select_from(table).where(table.c.version == version))
            conn.execute(delete(info).where(info.c.DPR_TYPE == pro_catg, info.c.version == version))
            if nrows:
                conn.execute(insert(info).values(DPR_TYPE=pro_catg, table=qc_table_name(pro_catg),
                                                 version=version, date_updated=when, nrows=nrows))


def update_qc(settings, database: Database, pro_catg: str | Sequence[str] | None = None, force: bool = False,
              recipe_name: str | None = None):
    """``update-qc``: :func:`musered.qcupdate.update_qc` (the reading of the products lives
    there; this name keeps the QC tables' API in one module). Returns its QcReport."""
    from .qcupdate import update_qc as run

    return run(settings, database, pro_catg=pro_catg, force=force, recipe_name=recipe_name)
