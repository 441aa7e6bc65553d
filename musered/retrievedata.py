"""retrieve-data as a function: fetch the raw files of datasets, their calibrations and
whole calibration nights from the ESO archive; what ``musered retrieve-data`` and
``MuseRed.retrieve_data`` both call.

Science files come from a TAP query built from each dataset's ``archive_filter`` (only
``ins_mode`` ones when given, between ``start`` and ``end``), their calibrations from the
archive's calibration selector; ``calib_nights`` adds every calibration of those nights.
Files already in ``raw_path`` are not downloaded again and science files whose
calibrations were all retrieved are remembered in the database, so an interrupted run
resumes (``force`` asks the selector again for every science file). Every download is
verified before entering ``raw_path``; update-db runs afterwards unless ``update_db`` is
False. Progress lines go to ``echo`` as each part is done.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MuseredError


@dataclass
class RetrieveDataReport:
    """What a retrieval did: one :class:`~musered.archive.retrieve.RetrievalReport` per
    dataset and per calibration night (``parts``, by label), and the update-db report."""

    raw_path: Path
    dry_run: bool
    parts: dict[str, Any] = field(default_factory=dict)
    ingest: Any = None

    @property
    def planned(self) -> list:
        """Files a dry run would download, one per archive id, sorted."""
        found = {f.dp_id: f for r in self.parts.values() for f in r.planned}
        return [found[k] for k in sorted(found)]

    @property
    def downloaded(self) -> list[Path]:
        return [p for r in self.parts.values() for p in r.downloaded]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.parts.values())

    @property
    def missing(self) -> dict[str, str]:
        """Archive id -> why a requested file is not in raw_path."""
        out: dict[str, str] = {}
        for r in self.parts.values():
            out.update(r.missing)
        return out

    def lines(self) -> list[str]:
        """The closing lines: the plan of a dry run, else what was downloaded."""
        if self.dry_run:
            planned = self.planned
            known = f" ({size_text(sum(f.size or 0 for f in planned))} known)" if planned else ""
            return [f"Would download {count_text(len(planned), 'file')}{known}"] + [
                f"  {f.dp_id}  {f.kind}  {size_text(f.size) if f.size is not None else '?'}" for f in planned]
        return [f"Downloaded {count_text(len(self.downloaded), 'file')} ({size_text(self.bytes)}) into {self.raw_path}"]

    def failure_message(self, listed: bool = False) -> str | None:
        """The error when requested files are missing (None: all retrieved); ``listed``:
        the command printed them already, else the archive ids are named."""
        missing = self.missing
        if not missing:
            return None
        which = "(listed above)" if listed else f"({', '.join(sorted(missing))})"
        return f"{len(missing)} requested files were not retrieved {which}; run retrieve-data again to resume"


def _day(value: dt.date | str | None, option: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise MuseredError(f"{option} {value!r}: expected an ISO night YYYY-MM-DD") from None


def calib_night_list(values: Sequence[str | dt.date]) -> list[dt.date]:
    """``--calib`` values as nights; MuseRed took one comma-separated list."""
    out = []
    for value in values:
        parts = [value] if isinstance(value, dt.date) else [n.strip() for n in str(value).split(",") if n.strip()]
        out += [_day(part, "--calib") for part in parts]
    return out


def archive_columns(settings, username: str | None = None) -> tuple[Any, list[dict[str, str]]]:
    """The archive's configuration and its queryable columns for MUSE (``--help-query``:
    the keys of ``archive_filter``)."""
    from .archive import Archive, ArchiveConfig

    archive = Archive(ArchiveConfig.from_settings(settings.retrieve_data, username=username))
    return archive.config, archive.columns()


def retrieve_data(settings, database, datasets: Sequence[str] = (), *, start: dt.date | str | None = None,
                  end: dt.date | str | None = None, calib_nights: Sequence[str | dt.date] = (),
                  ins_mode: str | None = None, force: bool = False, dry_run: bool = False, update_db: bool = True,
                  username: str | None = None, progress: bool = False, interactive: bool | None = None,
                  echo: Callable[[str], None] | None = None) -> RetrieveDataReport:
    """Retrieve (module docstring); ``interactive``: may prompt for the password (default:
    when stdin is a terminal). Files not retrieved are in the report's ``missing``, not
    raised (:meth:`RetrieveDataReport.failure_message`)."""
    from rich.console import Console

    from .archive import Archive, ArchiveConfig, Retriever

    echo = echo or (lambda line: None)
    datasets = list(datasets)
    if not datasets and not calib_nights:
        raise MuseredError("give at least one DATASET (or --calib NIGHT); "
                           f"datasets in the settings: {', '.join(settings.datasets) or 'none'}")
    for name in datasets:
        if name not in settings.datasets:
            raise MuseredError(f"dataset {name!r} is not in the settings "
                               f"(known: {', '.join(settings.datasets) or 'none'})")
        if not settings.datasets[name].archive_filter:
            raise MuseredError(f"dataset {name!r} has no archive_filter in the settings")
    nights = calib_night_list(calib_nights)
    start, end = _day(start, "--start"), _day(end, "--end")
    if start and end and end < start:
        raise MuseredError(f"--end {end} is before --start {start}")

    config = ArchiveConfig.from_settings(settings.retrieve_data, username=username)
    archive = Archive(config)
    raw_path = settings.raw_path
    if not dry_run:
        try:
            raw_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MuseredError(f"cannot create raw_path {raw_path}: {exc.strerror}") from None
        if config.username:
            archive.login(config.username, interactive=sys.stdin.isatty() if interactive is None else interactive)
    # also for a dry run: the record of complete science files decides what is asked for
    retriever = Retriever(archive, raw_path, database, progress=progress, console=Console(stderr=True))
    out = RetrieveDataReport(raw_path=raw_path, dry_run=dry_run)
    for name in datasets:
        part = retriever.retrieve_dataset(name, settings.datasets[name].archive_filter, start=start, end=end,
                                          force=force, dry_run=dry_run, ins_mode=ins_mode)
        out.parts[name] = part
        echo(f"{name}: {count_text(part.queried, 'science file')} in the archive, {part.local} already in "
             f"raw_path; calibrations asked for {part.associated} of them ({part.present} files already in raw_path)")
    for night in nights:
        part = retriever.retrieve_night_calibrations(night, settings.night_cutoff, dry_run=dry_run,
                                                     ins_mode=ins_mode)
        out.parts[f"night {night}"] = part
        echo(f"night {night}: {count_text(part.queried, 'calibration file')}"
             + (f" of mode {ins_mode}" if ins_mode else "") + f" in the archive, {part.local} already in raw_path")
    for line in out.lines():
        echo(line)
    if not dry_run and update_db:
        from .ingest import update_db as ingest

        out.ingest = ingest(settings, database, progress=progress)
        echo(out.ingest.summary())
    return out


def count_text(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def size_text(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"
