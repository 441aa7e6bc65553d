"""FITS checksums of the raw files (``musered check-integrity``, MuseRed's command).

Each raw file of the database (or those the selectors pick: nights, runs, exposure names,
file names, globs — :func:`musered.dateselect.select_dates`) is read with astropy and
every CHECKSUM and DATASUM keyword is verified (:func:`musered.archive.verify_fits`: also
a file shorter or longer than its headers describe is invalid). The result is kept in
the ``checksums`` table (path, size, mtime, status, reason, date), so that, as in MuseRed,
a later run verifies only the files not verified yet — or changed since (size or mtime),
or all of them with ``recheck``; :func:`integrity_summary` is MuseRed's ``--report``.

Statuses: ``valid`` (every checksum present matches), ``invalid`` (the reason names the
HDU), ``unverified`` (the file carries no CHECKSUM/DATASUM: nothing to compare),
``missing`` (not on disk).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import DateTime, Float, Integer, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

logger = logging.getLogger(__name__)

STATUSES = ("valid", "invalid", "unverified", "missing")


class _Base(DeclarativeBase):
    # Its own metadata: the table is created by the first check, not with every database.
    pass


class Checksum(_Base):
    """The last verification of one raw file."""

    __tablename__ = "checksums"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True, index=True)
    file_size: Mapped[int | None] = mapped_column(Integer)
    file_mtime: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    checked: Mapped[dt.datetime] = mapped_column(DateTime)


@dataclass(frozen=True)
class FileCheck:
    path: str
    status: str
    reason: str = ""


@dataclass
class IntegrityReport:
    """The files verified by this run, and how many were skipped as already verified."""

    checked: list[FileCheck] = field(default_factory=list)
    skipped: int = 0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checked)

    @property
    def bad(self) -> list[FileCheck]:
        return [c for c in self.checked if c.status in ("invalid", "missing")]

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in STATUSES if self.count(s)]
        text = f"{len(self.checked)} file{'' if len(self.checked) == 1 else 's'} verified" + (f" ({', '.join(parts)})" if parts else "")
        if self.skipped:
            text += f"; {self.skipped} already verified and unchanged, skipped (--recheck to verify them again)"
        return text + (" — interrupted, results so far saved" if self.interrupted else "")


def check_file(path: str | Path) -> FileCheck:
    """Verify one file's checksums (module docstring for the statuses)."""
    from .archive.verify import Rejected, verify_fits

    path = Path(path)
    if not path.is_file():
        return FileCheck(str(path), "missing", "not on disk")
    try:
        verified = verify_fits(path)
    except Rejected as exc:
        return FileCheck(str(path), "invalid", str(exc))
    except OSError as exc:
        return FileCheck(str(path), "invalid", f"unreadable: {exc.strerror or exc}")
    if verified == 0:
        return FileCheck(str(path), "unverified", "no CHECKSUM or DATASUM keyword")
    return FileCheck(str(path), "valid", f"{verified} checksums match")


def check_integrity(settings, database, selectors: Sequence[str] = (), *, recheck: bool = False,
                    progress: Callable[[int, int, FileCheck], None] | None = None) -> IntegrityReport:
    """Verify the raw files picked by ``selectors`` (all without), except those already
    verified and unchanged unless ``recheck``; ``progress(i, n, result)`` after each.
    Ctrl-C stops it with the results so far saved (``report.interrupted``)."""
    from .dateselect import select_dates

    paths = select_dates(settings, database, selectors, column="path", include_excluded=True,
                         option="check-integrity")
    _create_table(database)
    with database.session() as session:
        # every row, not an IN over thousands of paths (SQLite's parameter limit)
        known = {c.path: (c.file_size, c.file_mtime, c.status) for c in session.scalars(select(Checksum))}
    report = IntegrityReport()
    todo = []
    for path in paths:
        previous = known.get(path)
        if not recheck and previous is not None and previous[2] in ("valid", "unverified") \
                and previous[:2] == _stamp(path):
            report.skipped += 1
        else:
            todo.append(path)
    results = []
    try:
        for i, path in enumerate(todo, start=1):
            result = check_file(path)
            results.append(result)
            if progress is not None:
                progress(i, len(todo), result)
    except KeyboardInterrupt:  # as MuseRed: keep what was verified
        report.interrupted = True
    report.checked = results
    _save(database, results)
    return report


def integrity_summary(settings, database) -> dict[str, list[str] | int]:
    """MuseRed's ``--report``: the number of raw files, how many of them were verified
    with each status, and the paths of the invalid and missing ones."""
    from .db.models import Raw

    _create_table(database)
    with database.session() as session:
        paths = set(session.scalars(select(Raw.path)).all())
        checks = {c.path: c.status for c in session.scalars(select(Checksum)) if c.path in paths}
    counts = Counter(checks.values())
    out: dict[str, list[str] | int] = {"files": len(paths), "not verified": len(paths) - len(checks)}
    for status in STATUSES:
        out[status] = counts[status]
    out["bad"] = sorted(p for p, s in checks.items() if s in ("invalid", "missing"))
    return out


def _stamp(path: str) -> tuple[int | None, float | None]:
    try:
        stat = Path(path).stat()
    except OSError:
        return None, None
    return stat.st_size, stat.st_mtime


def _create_table(database) -> None:
    _Base.metadata.create_all(database.engine)


def _save(database, results: Sequence[FileCheck]) -> None:
    if not results:
        return
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with database.session() as session:
        rows = {c.path: c for c in session.scalars(select(Checksum))}
        for result in results:
            row = rows.get(result.path) or Checksum(path=result.path)
            row.file_size, row.file_mtime = _stamp(result.path)
            row.status, row.reason, row.checked = result.status, result.reason, now
            session.add(row)
