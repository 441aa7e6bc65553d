"""``update-db``: ingest the primary headers of the raw files into the ``raw`` table.

One table, :data:`musered.rawrows.KEYWORDS`, says which header keyword fills which ``raw`` column and how
its value is converted (PyPeIt style: the whole header → metadata map in one place).
Derived columns: ``night`` (cutoff rule, :mod:`musered.nights`), ``run``
(``settings.run_of``), ``name`` (exposure name from the archive file name, else from
DATE-OBS), ``OBJECT`` mapped to its dataset name through ``settings.datasets`` with the
header value kept in ``OBJECT_ORIG``, ``excluded`` from ``frames.exclude.raw``.
Every keyword MuseRed makes a raw column of is a real column (:data:`musered.rawrows.KEYWORDS`);
``settings.additional_keywords`` each get a real column too, added to the table when first
written (:mod:`musered.db.rawtable`), and are also kept in the JSON column ``extra`` under
their column name (``ESO OBS OBSERVER`` → ``OBS_OBSERVER``); the whole primary header goes
to ``header`` as JSON (COMMENT/HISTORY cards left out).
Besides raw frames (DPR keywords) and products (PRO CATG), the MUSE files the archive
delivers without either (``M.MUSE.*`` static calibrations) are ingested.
Headers are read by :func:`musered.fitsheader.read_primary_values` (the block reader of
:mod:`recipes.io.fitsblocks`) and turned into rows by :mod:`musered.rawrows`.

Bad files (empty, non-FITS such as an HTML login page saved as ``.fits``, truncated,
without DATE-OBS) are reported with their reason in :class:`IngestReport.failed`; they
never stop the run and never enter ``raw`` (a previously ingested file that became
unreadable loses its row).

Concurrency: rows are written in batches, each in one short transaction, with an upsert on
the unique ``path`` (``INSERT ... ON CONFLICT(path) DO UPDATE`` on SQLite and PostgreSQL,
insert-else-update on other back ends), and retried with backoff while SQLite reports the
database as locked; two ``update-db`` running at once on one file lose no rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from recipes.io.fitsblocks import HeaderError

from .db import Database, Raw
from .db.rawtable import ensure_additional_columns, upsert_raw
from .errors import MuseredError
from .fitsheader import read_primary_values
from .rawrows import RowContext, header_to_row

logger = logging.getLogger(__name__)

RAW_SUFFIXES = (".fits", ".fits.fz", ".fits.gz")
NIGHTLOG_SUFFIX = ".NL.txt"
BATCH_SIZE = 200
# Below this many files to read, a progress bar only flickers.
PROGRESS_MIN_FILES = 50
LOCK_RETRIES = 10


# --------------------------------------------------------------------------------------
# The scan


@dataclass
class IngestReport:
    """What ``update_db`` did. ``failed`` lists (path, reason) of files not ingested."""

    added: int = 0
    updated: int = 0
    skipped: int = 0
    excluded: int = 0  # among the rows written by this run
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # rows whose file is gone (kept)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path left out, copy ingested)
    weather_rows: int = 0  # weather rows written from night logs
    nightlogs: int = 0  # night logs read
    nightlog_warnings: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return self.added + self.updated + self.skipped + len(self.failed)

    def summary(self) -> str:
        """A plain-text multi-line summary (what ``musered update-db`` prints)."""
        lines = [
            f"{self.files} raw files in {self.seconds:.1f} s: {self.added} added, {self.updated} updated, "
            f"{self.skipped} unchanged, {self.excluded} excluded, {len(self.failed)} failed",
        ]
        if self.nightlogs or self.nightlog_warnings:
            lines.append(
                f"{self.nightlogs} night logs: {self.weather_rows} weather rows, "
                f"{len(self.nightlog_warnings)} skipped"
            )
        if self.duplicates:
            lines.append(f"{len(self.duplicates)} files left out: another compression of the same exposure "
                         "is in the same folder")
        if self.missing:
            lines.append(f"{len(self.missing)} files in the database are no longer in raw_path (rows kept)")
        for path, reason in self.failed:
            lines.append(f"failed: {path}: {reason}")
        for path, reason in self.nightlog_warnings:
            lines.append(f"skipped night log: {path}: {reason}")
        return "\n".join(lines)


def find_files(raw_path: Path) -> tuple[list[Path], list[Path]]:
    """Raw FITS files and night logs under ``raw_path`` (recursive, sorted, no hidden dirs)."""
    fits_files, nightlogs = [], []
    for folder, dirs, names in os.walk(raw_path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.endswith(RAW_SUFFIXES):
                fits_files.append(Path(folder, name))
            elif name.endswith(NIGHTLOG_SUFFIX):
                nightlogs.append(Path(folder, name))
    return sorted(fits_files), sorted(nightlogs)


def drop_other_compressions(fits_files: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """One file per exposure and folder: ``X.fits`` before ``X.fits.fz`` before ``X.fits.gz``.

    The archive delivers ``.fits.fz``; users often unpack next to it. Ingesting both would
    make every exposure appear twice in ``raw`` and in every recipe's input.
    Returns the files kept (sorted) and the ``(left out, kept)`` pairs.
    """
    chosen: dict[tuple[Path, str], Path] = {}
    left_out: list[tuple[Path, Path]] = []
    for path in sorted(fits_files, key=lambda p: (p.parent, _exposure_stem(p.name)[0], _exposure_stem(p.name)[1])):
        stem, _ = _exposure_stem(path.name)
        key = (path.parent, stem)
        if key in chosen:
            left_out.append((path, chosen[key]))
        else:
            chosen[key] = path
    return sorted(chosen.values()), left_out


def _exposure_stem(name: str) -> tuple[str, int]:
    """The name without its FITS suffix, and the suffix's rank in :data:`RAW_SUFFIXES`."""
    for rank, suffix in enumerate(RAW_SUFFIXES):
        if name.endswith(suffix):
            return name[: -len(suffix)], rank
    return name, len(RAW_SUFFIXES)


def update_db(settings, database: Database, force: bool = False, progress: bool = True) -> IngestReport:
    """Ingest new and changed raw files and night logs of ``settings.raw_path``.

    Known files whose size and modification time did not change are skipped unless
    ``force`` (which recomputes every row, e.g. after editing datasets or runs).
    """
    from .nightlog import ingest_nightlogs

    start = time.perf_counter()
    raw_path = Path(settings.raw_path).expanduser()
    if not raw_path.is_dir():
        raise MuseredError(f"raw_path {raw_path} does not exist or is not a folder")
    raw_path = raw_path.resolve()
    context = RowContext.from_settings(settings)
    report = IngestReport()
    fits_files, nightlogs = find_files(raw_path)
    fits_files, duplicates = drop_other_compressions(fits_files)
    report.duplicates = [(str(extra), str(kept)) for extra, kept in duplicates]

    known = _retry_locked(lambda: _known_files(database))
    todo: list[tuple[Path, os.stat_result]] = []
    seen: set[str] = {extra for extra, _ in report.duplicates}  # not "missing": left out on purpose
    for path in fits_files:
        key = str(path)
        seen.add(key)
        try:
            stat = path.stat()
        except OSError as exc:
            report.failed.append((key, f"unreadable: {exc.strerror}"))
            continue
        previous = known.get(key)
        if not force and previous is not None and previous == (stat.st_size, stat.st_mtime):
            report.skipped += 1
        else:
            todo.append((path, stat))
    report.missing = sorted(set(known) - seen)

    writer = _RowWriter(database, known, report, context.additional)
    for extra, _ in report.duplicates:
        writer.forget(extra)  # ingested by an earlier run, before its twin appeared
    with _progress(progress and len(todo) >= PROGRESS_MIN_FILES, len(todo)) as advance:
        for path, stat in todo:
            try:
                header = read_primary_values(path)
                row = header_to_row(path, header, context)
            except HeaderError as exc:
                report.failed.append((str(path), str(exc)))
                writer.forget(str(path))
                logger.debug("not ingested: %s: %s", path, exc)
            else:
                row.update(file_size=stat.st_size, file_mtime=stat.st_mtime)
                writer.add(row)
            advance()
        writer.flush()
    writer.ensure_columns([])  # an additional keyword new in the settings, no file re-read

    if nightlogs:
        result = ingest_nightlogs(nightlogs, database)
        report.nightlogs = result.logs
        report.weather_rows = result.rows
        report.nightlog_warnings = result.warnings
    report.seconds = time.perf_counter() - start
    return report


def _known_files(database: Database) -> dict[str, tuple[int | None, float | None]]:
    with database.session() as session:
        rows = session.execute(select(Raw.path, Raw.file_size, Raw.file_mtime))
        return {path: (size, mtime) for path, size, mtime in rows}


class _progress:
    """A rich progress bar (or nothing), used as ``with _progress(on, n) as advance``."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.total = total
        self._bar = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from rich.console import Console

        self._bar = Progress(
            TextColumn("reading headers"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            transient=True, console=Console(stderr=True),
        )
        self._bar.__enter__()
        task = self._bar.add_task("headers", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


class _RowWriter:
    """Batches rows and writes each batch in one short transaction (upsert on path)."""

    def __init__(self, database: Database, known: dict, report: IngestReport,
                 additional: Sequence[tuple[str, str]] = ()):
        self.database = database
        self.known = known
        self.report = report
        self.additional = tuple(additional)
        self.table = None  # the raw table with the additional keywords' columns
        self.rows: list[dict[str, Any]] = []
        self.stale: list[str] = []

    def ensure_columns(self, rows: Sequence[dict[str, Any]]):
        """The raw table with a column per additional keyword (added once, typed from the
        first rows written)."""
        if self.table is None and not self.additional:
            self.table = Raw.__table__
        if self.table is None:
            def ensure():
                with self.database.engine.begin() as conn:
                    return ensure_additional_columns(conn, self.additional, [r["header"] for r in rows])
            self.table = _retry_locked(ensure)
        return self.table

    def add(self, row: dict[str, Any]) -> None:
        row["ingested"] = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        self.rows.append(row)
        if len(self.rows) >= BATCH_SIZE:
            self.flush()

    def forget(self, path: str) -> None:
        """A known file that became unreadable or is left out as a duplicate: its row goes."""
        if path in self.known:
            self.stale.append(path)

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        stale, self.stale = self.stale, []
        if stale:
            _retry_locked(lambda: self._delete(stale))
        if not rows:
            return
        table = self.ensure_columns(rows)
        try:
            _retry_locked(lambda: _upsert(self.database, rows, table))
        except SQLAlchemyError:
            rows = self._one_by_one(rows)  # one bad row must not lose the whole batch
        for row in rows:
            if row["path"] in self.known:
                self.report.updated += 1
            else:
                self.report.added += 1
            self.report.excluded += bool(row["excluded"])

    def _one_by_one(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        written = []
        for row in rows:
            try:
                _retry_locked(lambda: _upsert(self.database, [row], self.table))
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                self.report.failed.append((row["path"], f"rejected by the database: {reason}"))
                if row["path"] in self.known:
                    _retry_locked(lambda: self._delete([row["path"]]))
            else:
                written.append(row)
        return written

    def _delete(self, paths: list[str]) -> None:
        with self.database.session() as session:
            session.execute(delete(Raw).where(Raw.path.in_(paths)))


def _upsert(database: Database, rows: Sequence[dict[str, Any]], table) -> None:
    """Insert rows, updating those whose path another run (or process) already stored."""
    with database.engine.begin() as conn:
        upsert_raw(conn, table, rows)


def _is_locked(exc: OperationalError) -> bool:
    message = str(exc.orig).lower()
    return "locked" in message or "busy" in message


def _retry_locked(action: Callable[[], Any]) -> Any:
    """Run ``action``, retrying with exponential backoff while SQLite says 'locked'."""
    delay = 0.05
    for attempt in range(LOCK_RETRIES):
        try:
            return action()
        except OperationalError as exc:
            if not _is_locked(exc):
                raise MuseredError(f"database error: {exc.orig}") from None
            if attempt == LOCK_RETRIES - 1:
                raise MuseredError(
                    "the database stayed locked by another process; run update-db again"
                ) from None
            logger.debug("database locked, retrying in %.2f s", delay)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")

