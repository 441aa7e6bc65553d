"""Engine and session factory. SQLite gets WAL, foreign keys and a busy timeout.

Opening a database that is not ours (a MuseRed database, any other) raises a one-line
MuseredError and changes nothing in it; ours is created on first use and migrated to the
current schema (:mod:`musered.db.migrate`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import MuseredError
from .migrate import check_not_foreign, foreign_database_error, migrate, sqlite_tables_readonly
from .models import SCHEMA_VERSION, Base, SchemaVersion

SQLITE_BUSY_TIMEOUT_S = 60


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


class Database:
    """A connection to the musered database; tables are created on first use.

    ``path``: the SQLite file (None in memory or on a server).
    """

    def __init__(self, url: str):
        url = _with_installed_driver(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.path: Path | None = None
        if self.is_sqlite and url not in ("sqlite://", "sqlite:///:memory:"):
            self.path = Path(url.split("sqlite:///", 1)[1])
            # before any connection of ours: the pragmas below would already alter the file
            message = foreign_database_error(str(self.path), sqlite_tables_readonly(self.path), self.path)
            if message:
                raise MuseredError(message)
            folder = self.path.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MuseredError(f"cannot create the database folder {folder}: {exc.strerror}") from None
            if not _writable(folder):
                raise MuseredError(f"the database folder {folder} is not writable")
        kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if self.is_sqlite else {}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise MuseredError(f"cannot open database {_safe(url)}: {exc}") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        if not self.is_sqlite:
            try:
                check_not_foreign(self.engine, _safe(url))
            except SQLAlchemyError as exc:
                raise MuseredError(f"cannot open database {_safe(url)}: {exc}") from None
        self._create_tables()

    def _create_tables(self) -> None:
        # Two processes may create a new database at once: the loser of the race sees
        # "already exists" / a duplicate schema row, and simply checks again.
        for attempt in range(5):
            try:
                Base.metadata.create_all(self.engine)
                with self.session() as session:
                    if session.scalar(select(SchemaVersion)) is None:
                        session.add(SchemaVersion(id=1, version=SCHEMA_VERSION))
                migrate(self.engine, str(self.path) if self.path else _safe(self.url))
                return
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                message = str(exc.orig).lower()
                racing = isinstance(exc, IntegrityError) or any(
                    word in message for word in ("already exists", "locked", "duplicate column"))
                if not racing or attempt == 4:
                    raise MuseredError(f"cannot use database {_safe(self.url)}: {exc.orig}") from None
                time.sleep(0.1 * (attempt + 1))

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        session = self._sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _with_installed_driver(url: str) -> str:
    """A plain ``postgresql://`` URL means psycopg2 to SQLAlchemy; we ship psycopg 3."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.close()


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"
