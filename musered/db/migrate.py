"""What opening a database may do to it: refuse a database that is not ours, migrate ours.

- A database with tables but no ``schema_version`` table is not ours. A MuseRed database
  (its ``raw``, ``reduced_{version}``, ``flags_{version}``, ``qc_info`` tables) is refused
  with the command that imports it; anything else is refused too. Nothing is created or
  altered in either: the tables of an SQLite file are listed through a read-only
  connection, before the engine's first connection sets its pragmas (WAL mode would
  rewrite the file header).
- Ours is brought to :data:`~musered.db.models.SCHEMA_VERSION` in place (so a change
  of the models must bump it): columns the models have and the tables lack are added (``ALTER TABLE ADD COLUMN``, nullable), and a
  version-1 database gets its new raw columns filled from the stored ``header`` JSON.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, inspect, select, text, update

from ..errors import MuseredError
from .models import SCHEMA_VERSION, Base, Raw, SchemaVersion

MUSERED_TABLE_PREFIXES = ("reduced_", "flags_", "qa_reduced_")


def import_target_for(source: Path) -> Path:
    """Where ``import-musered`` writes by default: ``musered.db`` → ``musered.musered.db``."""
    source = Path(source)
    return source.with_name(f"{source.stem}.musered{source.suffix or '.db'}")


def sqlite_tables_readonly(path: Path) -> list[str] | None:
    """The tables of an SQLite file, read without writing anything; None when there is no
    file yet (or an empty one, which SQLite treats as a new database)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    connection = readonly_connect(path)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError as exc:
        raise MuseredError(f"{path} is not an SQLite database ({exc}); musered never alters it") from None
    finally:
        connection.close()
    return [name for (name,) in rows]


def readonly_connect(path: Path) -> sqlite3.Connection:
    """A read-only connection to an SQLite file that creates no file next to it.

    MuseRed's databases are in WAL mode, where even a ``mode=ro`` connection creates the
    ``-wal`` and ``-shm`` files and cannot remove them. Without a non-empty ``-wal`` file
    everything is in the main file, and ``immutable=1`` reads it with no side file; with
    one (a MuseRed process has written since the last checkpoint), ``mode=ro`` reads the
    committed data through the existing ``-wal``.
    """
    path = Path(path).resolve()
    wal = path.with_name(path.name + "-wal")
    pending = wal.is_file() and wal.stat().st_size > 0
    uri = f"file:{quote(str(path))}?{'mode=ro' if pending else 'mode=ro&immutable=1'}"
    try:
        return sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise MuseredError(f"cannot open database {path}: {exc}") from None


def is_musered_legacy(tables: list[str]) -> bool:
    """Whether these tables are MuseRed's (not ours: no ``schema_version``)."""
    names = set(tables)
    if "schema_version" in names:
        return False
    return "raw" in names or "qc_info" in names or any(t.startswith(MUSERED_TABLE_PREFIXES) for t in names)


def foreign_database_error(where: str, tables: list[str] | None, path: Path | None = None) -> str | None:
    """The one-line refusal for a database that is not ours, or None when it is ours or new."""
    if not tables or "schema_version" in tables:
        return None
    if is_musered_legacy(tables):
        target = import_target_for(path) if path is not None else "a new file"
        return (f"{where} is a MuseRed database; musered never alters it. Import it with "
                f"`musered import-musered` (it writes a musered database at {target}) "
                f"and set `db:` to that file")
    shown = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
    return (f"{where} is not a musered database (it has the tables {shown}); musered never "
            f"alters it: set `db:` to a new file")


def check_not_foreign(engine: Engine, where: str) -> None:
    """For a server database: refuse one that is not ours (inspection writes nothing)."""
    message = foreign_database_error(where, inspect(engine).get_table_names())
    if message:
        raise MuseredError(message)


def migrate(engine: Engine, where: str) -> None:
    """Add the model columns an existing database lacks, then upgrade its data to
    :data:`SCHEMA_VERSION` (one transaction; a concurrent migration is harmless)."""
    with engine.begin() as conn:
        version = conn.scalar(select(SchemaVersion.version).where(SchemaVersion.id == 1))
        if version is not None and version > SCHEMA_VERSION:
            raise MuseredError(f"{where} was made by a newer musered (schema {version}, this one knows "
                               f"{SCHEMA_VERSION}); upgrade musered")
        if version is None or version == SCHEMA_VERSION:
            return  # every model change bumps SCHEMA_VERSION: nothing to compare
        added = add_missing_columns(conn)
        if version < 2:
            fill_raw_columns(conn, [c for c in added.get("raw", []) if c in _keyword_columns()])
        conn.execute(update(SchemaVersion).where(SchemaVersion.id == 1).values(version=SCHEMA_VERSION))


def add_missing_columns(conn: Connection) -> dict[str, list[str]]:
    """``ALTER TABLE ADD COLUMN`` for every model column missing from its table."""
    inspector = inspect(conn)
    existing_tables = set(inspector.get_table_names())
    added: dict[str, list[str]] = {}
    for table in Base.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            add_column(conn, table.name, column.name, column.type)
            added.setdefault(table.name, []).append(column.name)
    return added


def add_column(conn: Connection, table: str, column: str, type_) -> None:
    """One nullable column added to a table (names quoted: QC keywords, ``DEC``)."""
    preparer = conn.dialect.identifier_preparer
    spec = type_.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column)} {spec}"))


def _keyword_columns() -> dict[str, object]:
    from ..rawrows import KEYWORDS

    return {kw.column: kw for kw in KEYWORDS}


def fill_raw_columns(conn: Connection, columns: list[str]) -> int:
    """Fill new keyword columns of existing raw rows from their ``header`` JSON, with the
    conversion update-db uses (:data:`musered.rawrows.KEYWORDS`). Returns the rows updated."""
    if not columns:
        return 0
    keywords = _keyword_columns()
    table = Raw.__table__
    rows = conn.execute(select(table.c.id, table.c.header)).all()
    updates = []
    for row_id, header in rows:
        header = header or {}
        values = {c: keywords[c].convert(header.get(keywords[c].keyword)) for c in columns}
        if any(v is not None for v in values.values()):
            updates.append({"row_id": row_id, **values})
    if updates:
        from sqlalchemy import bindparam

        stmt = update(table).where(table.c.id == bindparam("row_id")).values(
            {c: bindparam(c) for c in columns})
        conn.execute(stmt, updates)
    return len(updates)
