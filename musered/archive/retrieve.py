"""Retrieval: what ``raw_path`` lacks, fetched in batches, verified, then recorded.

:class:`Retriever` asks the :class:`~.client.Archive` for a dataset's science files and
their calibrations (or a night's calibrations), skips what is already in ``raw_path``,
downloads the rest into a hidden staging folder, lets only verified files in, and
records in the database the science files whose calibrations all arrived, so that an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

from .client import Archive
from .config import ArchiveConfig
from .files import ArchiveFile, local_files
from .helpers import chunks, human_size
from .verify import Rejected, verify_delivery

# One logger for the whole archive client, named as before it became a package.
logger = logging.getLogger("musered.archive")


@dataclass
class RetrievalReport:
    """What a retrieval did; ``missing`` maps requested ids to why they are not in raw_path."""

    queried: int = 0                                  # files matching the query
    local: int = 0                                    # ... of which already in raw_path
    associated: int = 0                               # science files sent to the calselector
    present: int = 0                                  # requested ids already in raw_path
    downloaded: list[Path] = dc_field(default_factory=list)
    bytes: int = 0
    missing: dict[str, str] = dc_field(default_factory=dict)
    planned: list[ArchiveFile] = dc_field(default_factory=list)   # --dry-run
    completed: list[str] = dc_field(default_factory=list)         # science files recorded complete

    def merge(self, other: RetrievalReport) -> None:
        """Add ``other``'s counts and lists to this report."""
        self.queried += other.queried
        self.local += other.local
        self.associated += other.associated
        self.present += other.present
        self.downloaded += other.downloaded
        self.bytes += other.bytes
        self.missing.update(other.missing)
        self.planned += other.planned
        self.completed += other.completed


class Retriever:
    """Fetch what raw_path lacks: science files, their calibrations, whole nights.

    Downloads land in ``raw_path/.retrieve-incoming/<pid>`` (same file system, hidden
    from update-db), are checked by :func:`verify_delivery` and only then renamed into
    ``raw_path``; rejected files are deleted and reported as missing.
    """

    STAGING = ".retrieve-incoming"

    def __init__(self, archive: Archive, raw_path: Path, database=None, *, progress: bool = True,
                 console=None):
        self.archive = archive
        self.raw_path = Path(raw_path)
        self.database = database
        self.progress = progress
        self.console = console
        self._local: dict[str, Path] | None = None

    @property
    def local(self) -> dict[str, Path]:
        if self._local is None:
            self._local = local_files(self.raw_path)
        return self._local

    # -- record of science files with all their calibrations --------------------------------
    def completed(self) -> set[str]:
        """Science files recorded with all their calibrations retrieved (none without a database)."""
        if self.database is None:
            return set()
        from sqlalchemy import select

        from ..db.models import Retrieved

        with self.database.session() as session:
            return set(session.scalars(select(Retrieved.dp_id)))

    def _record(self, dataset: str, done: dict[str, int]) -> None:
        if self.database is None or not done:
            return
        from sqlalchemy import select

        from ..db.models import Retrieved

        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        with self.database.session() as session:
            query = select(Retrieved).where(Retrieved.dp_id.in_(list(done)))
            rows = {r.dp_id: r for r in session.scalars(query)}
            for dp_id, n_calib in done.items():
                row = rows.get(dp_id) or Retrieved(dp_id=dp_id)
                row.dataset, row.n_calib, row.date = dataset, n_calib, now
                session.add(row)

    # -- public entry points ----------------------------------------------------------------
    def retrieve_dataset(self, dataset: str, archive_filter: dict, *, start: dt.date | None = None,
                         end: dt.date | None = None, force: bool = False,
                         dry_run: bool = False, ins_mode: str | None = None) -> RetrievalReport:
        """Science files of a dataset (of instrument mode ``ins_mode`` when given) missing
        from raw_path, then the calibrations of every science file not yet recorded
        complete (all of them with ``force``); the calibration selector's choice is not
        filtered by mode (AO science takes non-AO ILLUM and twilight flats)."""
        report = RetrievalReport()
        science = self.archive.science_files(archive_filter, start, end, ins_mode=ins_mode)
        report.queried = len(science)
        report.local = sum(f.dp_id in self.local for f in science)
        by_id = {f.dp_id: f for f in science}
        done = set() if force else self.completed()
        to_associate = [f.dp_id for f in science if f.dp_id not in done]
        report.associated = len(to_associate)
        logger.debug("%s: %d science files in the archive, %d in raw_path, %d to associate",
                     dataset, report.queried, report.local, report.associated)
        # science files recorded complete but no longer here: fetch them alone
        lost = [by_id[d] for d in sorted(by_id) if d in done and d not in self.local]
        if lost:
            report.merge(self._download(lost, dry_run))
        for batch in chunks(to_associate, self.config.batch_size):
            associations = self.archive.associate(batch)
            calib_ids = set().union(*(associations.get(d, set()) for d in batch)) - set(by_id)
            calibs = self._describe(sorted(calib_ids))
            wanted = [by_id[d] for d in batch] + calibs
            report.merge(self._download(wanted, dry_run))
            if dry_run:
                continue
            complete = {}
            for dp_id in batch:
                if dp_id not in associations:
                    report.missing.setdefault(dp_id, "no calibration association returned by the archive")
                    continue
                if dp_id in self.local and all(c in self.local for c in associations[dp_id]):
                    complete[dp_id] = len(associations[dp_id])
            self._record(dataset, complete)
            report.completed += list(complete)
        return report

    def retrieve_night_calibrations(self, night: dt.date, cutoff: dt.time, *, dry_run: bool = False,
                                    ins_mode: str | None = None) -> RetrievalReport:
        """Every calibration file of an observing night (of instrument mode ``ins_mode``
        when given) that raw_path lacks."""
        files = self.archive.calibration_files(night, cutoff, ins_mode=ins_mode)
        logger.debug("night %s: %d calibration files in the archive", night, len(files))
        report = self._download(files, dry_run)
        report.queried = len(files)
        report.local = report.present
        return report

    @property
    def config(self) -> ArchiveConfig:
        return self.archive.config

    # -- internals ---------------------------------------------------------------------------
    def _describe(self, dp_ids: list[str]) -> list[ArchiveFile]:
        """ArchiveFile records (with sizes when the archive knows them) for calselector ids."""
        missing = [d for d in dp_ids if d not in self.local]
        sizes = self.archive.sizes([d for d in missing if not d.endswith(".NL")]) if missing else {}
        return [ArchiveFile(d, dp_cat="" if d.endswith(".NL") else "CALIB", size=sizes.get(d))
                for d in dp_ids]

    def _download(self, files: list[ArchiveFile], dry_run: bool) -> RetrievalReport:
        report = RetrievalReport()
        todo = []
        seen = set()
        for item in files:
            if item.dp_id in seen:
                continue
            seen.add(item.dp_id)
            if item.dp_id in self.local:
                report.present += 1
            else:
                todo.append(item)
        if dry_run:
            report.planned = todo
            return report
        if not todo:
            return report
        with self._staging() as staging, self._progress(todo) as advance:
            for item in todo:
                path, reason = self._fetch_one(item, staging)
                if path is None:
                    report.missing[item.dp_id] = reason
                    logger.warning("%s: %s", item.dp_id, reason)
                    advance(item, 0)
                else:
                    size = path.stat().st_size
                    report.downloaded.append(path)
                    report.bytes += size
                    self.local[item.dp_id] = path
                    advance(item, size)
        # astroquery swallows some failures: compare requested with what is really here
        for item in todo:
            if item.dp_id not in self.local and item.dp_id not in report.missing:
                report.missing[item.dp_id] = "requested but not received"
        return report

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """This process's staging folder, ``raw_path/.retrieve-incoming/<pid>``.

        Removed with its content afterwards, even on error or interrupt; folders left by
        processes that no longer run (killed) are removed first.
        """
        parent = self.raw_path / self.STAGING
        for folder in parent.glob("*") if parent.is_dir() else []:
            if folder.is_dir() and folder.name.isdigit() and not _process_alive(int(folder.name)):
                shutil.rmtree(folder, ignore_errors=True)
        staging = parent / str(os.getpid())
        staging.mkdir(parents=True, exist_ok=True)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                parent.rmdir()

    def _fetch_one(self, item: ArchiveFile, staging: Path) -> tuple[Path | None, str]:
        try:
            delivered = self.archive.fetch(item.dp_id, staging)
            verify_delivery(delivered, item.dp_id)
        except Rejected as exc:
            for leftover in staging.glob(item.dp_id + "*"):
                leftover.unlink()
            return None, str(exc)
        target = self.raw_path / delivered.name
        os.replace(delivered, target)
        return target, ""

    @contextlib.contextmanager
    def _progress(self, todo: list[ArchiveFile]):
        if not self.progress:
            yield lambda item, size: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        known = [f.size for f in todo if f.size is not None]
        total_bytes = sum(known) if len(known) == len(todo) else None
        state = {"files": 0, "bytes": 0}

        def bytes_text() -> str:
            total = f" / {human_size(total_bytes)}" if total_bytes else ""
            return f"{human_size(state['bytes'])}{total}"

        # one live display: files and bytes as two tasks of the same Progress
        with Progress(TextColumn("{task.description:>6}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                      TimeRemainingColumn(), console=self.console, transient=True) as bar:
            files_task = bar.add_task("files", total=len(todo), detail=f"0/{len(todo)}")
            bytes_task = bar.add_task("bytes", total=total_bytes, detail=bytes_text())

            def advance(item: ArchiveFile, size: int) -> None:
                state["files"] += 1
                state["bytes"] += size
                bar.update(files_task, advance=1, detail=f"{state['files']}/{len(todo)} {item.dp_id}")
                bar.update(bytes_task, advance=size, detail=bytes_text())

            yield advance


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
