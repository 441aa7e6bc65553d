"""``update-db``: ingest the primary headers of the raw files into the ``raw`` table.

One table, :data:`KEYWORDS`, says which header keyword fills which ``raw`` column and how
its value is converted (PyPeIt style: the whole header → metadata map in one place).
Derived columns: ``night`` (cutoff rule, :mod:`musered.nights`), ``run``
(``settings.run_of``), ``name`` (exposure name from the archive file name, else from
DATE-OBS), ``OBJECT`` mapped to its dataset name through ``settings.datasets`` with the
header value kept in ``OBJECT_ORIG``, ``excluded`` from ``frames.exclude.raw``.
``settings.additional_keywords`` go to the JSON column ``extra`` under their column name
(``ESO OBS OBSERVER`` → ``OBS_OBSERVER``); the whole primary header goes to ``header``
as JSON (COMMENT/HISTORY cards left out).

Headers are read with a small FITS reader of our own (:func:`read_primary_header`): it
reads only the primary header blocks (2880 bytes each) and parses the 80-character cards
with one regular expression, which is several times faster than opening the file with
astropy. ``.fits.fz`` files are read the same way (their primary HDU is the empty MUSE
primary header); ``.fits.gz`` through :mod:`gzip`.

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
import gzip
import logging
import math
import os
import random
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from .db import Database, Raw
from .errors import MuseredError
from .nights import DEFAULT_NIGHT_CUTOFF, exposure_name, night_of, parse_date_obs

logger = logging.getLogger(__name__)

RAW_SUFFIXES = (".fits", ".fits.fz", ".fits.gz")
NIGHTLOG_SUFFIX = ".NL.txt"
BLOCK = 2880
CARD = 80
BATCH_SIZE = 200
# Below this many files to read, a progress bar only flickers.
PROGRESS_MIN_FILES = 50
LOCK_RETRIES = 10


# --------------------------------------------------------------------------------------
# Header keyword -> raw column


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Keyword:
    """One header keyword ingested as a raw column."""

    keyword: str  # FITS keyword as astropy spells it (HIERARCH dropped): 'ESO DPR TYPE'
    column: str  # raw column: 'DPR_TYPE'
    convert: Callable[[Any], Any]


KEYWORDS: tuple[Keyword, ...] = (
    Keyword("ARCFILE", "ARCFILE", _as_str),
    Keyword("MJD-OBS", "MJD_OBS", _as_float),
    Keyword("EXPTIME", "EXPTIME", _as_float),
    Keyword("OBJECT", "OBJECT_ORIG", _as_str),  # OBJECT is the dataset-mapped value
    Keyword("ESO DPR CATG", "DPR_CATG", _as_str),
    Keyword("ESO DPR TYPE", "DPR_TYPE", _as_str),
    Keyword("ESO DPR TECH", "DPR_TECH", _as_str),
    Keyword("ESO PRO CATG", "PRO_CATG", _as_str),
    Keyword("ESO TPL START", "TPL_START", _as_str),
    Keyword("ESO TPL ID", "TPL_ID", _as_str),
    Keyword("ESO INS MODE", "INS_MODE", _as_str),
    Keyword("ESO INS TEMP7 VAL", "INS_TEMP7_VAL", _as_float),
)
# DATE-OBS -> DATE_OBS is parsed separately: it drives night and name and must be valid.


def keyword_column(keyword: str) -> str:
    """Column name of a FITS keyword: ``ESO OBS OBSERVER`` → ``OBS_OBSERVER``.

    ``HIERARCH`` and a leading ``ESO`` are dropped; spaces, dots and dashes become ``_``.

    >>> keyword_column("ESO OBS OBSERVER"), keyword_column("HIERARCH ESO TEL AIRM START")
    ('OBS_OBSERVER', 'TEL_AIRM_START')
    >>> keyword_column("DATE-OBS")
    'DATE_OBS'
    """
    name = normalize_keyword(keyword)
    if name.startswith("ESO "):
        name = name[4:]
    return re.sub(r"[ .\-]+", "_", name)


def normalize_keyword(keyword: str) -> str:
    """The header dictionary key of a keyword: upper case, no HIERARCH, dots as spaces."""
    name = keyword.strip().upper()
    if name.startswith("HIERARCH "):
        name = name[9:].strip()
    return " ".join(name.replace(".", " ").split())


# --------------------------------------------------------------------------------------
# Fast primary-header reader


class HeaderError(Exception):
    """A file whose primary header cannot be read; ``str()`` is the reason."""


_END_CARD = b"END" + b" " * 77
# One card per line: HIERARCH key, standard key with value indicator, or CONTINUE.
_CARD_RE = re.compile(
    r"^(?:HIERARCH +(?P<hkey>[^=\n]*?) *= ?|(?P<key>[A-Z0-9_-]{1,8}) *= |(?P<cont>CONTINUE)  )"
    r" *(?P<value>'(?:[^'\n]|'')*'|[^/\n]*?) *(?:/[^\n]*)?$",
    re.MULTILINE,
)
_INT_RE = re.compile(r"[+-]?\d+")
# FITS headers hold printable ASCII only (0x20-0x7E); anything else is a corrupt file.
_PRINTABLE = bytes(range(0x20, 0x7F))


def _open_raw(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_header_bytes(path: Path) -> tuple[bytes, int]:
    """The primary header up to (excluding) its END card, and its padded length in bytes."""
    first_read = BLOCK * 16
    try:
        with _open_raw(path) as fh:
            buf = fh.read(first_read)
            if not buf:
                raise HeaderError("empty file")
            if not buf.startswith(b"SIMPLE  ="):
                raise HeaderError(f"not a FITS file (starts with {_preview(buf)})")
            search_from = 0
            while True:
                end = buf.find(_END_CARD, search_from)
                while end != -1 and end % CARD:
                    end = buf.find(_END_CARD, end + 1)
                if end != -1:
                    break
                search_from = max(0, len(buf) - len(buf) % CARD - CARD)
                more = fh.read(len(buf))  # double the buffer each round
                if not more:
                    raise HeaderError(f"truncated header (no END card in {len(buf)} bytes)")
                buf += more
    except HeaderError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise HeaderError(f"unreadable: {exc.strerror or exc}") from None
    return buf[:end], -(-(end + CARD) // BLOCK) * BLOCK


def _preview(buf: bytes) -> str:
    text = buf[:40].decode("ascii", "replace")
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    return repr(text[:30] + ("..." if len(text) > 30 else ""))


_LOGICAL = {"T": True, "F": False}


def _parse_value(text: str) -> Any:
    if not text:
        return None
    if text[0] == "'":
        value = text[1:-1]
        return (value.replace("''", "'") if "''" in value else value).rstrip()
    if text in _LOGICAL:
        return _LOGICAL[text]
    if _INT_RE.fullmatch(text):
        return int(text)
    try:
        number = float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        return text  # complex values and oddities stay as written
    return number if math.isfinite(number) else text


def parse_header_cards(raw: bytes) -> dict[str, Any]:
    """Keyword → value of the header cards (first occurrence wins, as astropy's lookup).

    HIERARCH keywords are stored without ``HIERARCH`` (``ESO DPR TYPE``); long strings
    (``&`` + ``CONTINUE``) are joined; COMMENT, HISTORY and blank cards are left out.
    Values are JSON-safe: str, int, float (finite), bool or None.
    """
    if raw.translate(None, _PRINTABLE):
        raise HeaderError("not a FITS file (non-printable bytes in the header)")
    text = raw.decode("ascii")
    lines = "\n".join([text[i : i + CARD] for i in range(0, len(text), CARD)])
    header: dict[str, Any] = {}
    last_key = None
    for hkey, key, cont, value in _CARD_RE.findall(lines):
        if cont:
            previous = header.get(last_key) if last_key else None
            if isinstance(previous, str) and previous.endswith("&") and value.startswith("'"):
                joined = previous[:-1] + _parse_value(value)
                header[last_key] = joined if joined.endswith("&") else joined.rstrip()
            continue
        name = (hkey if "  " not in hkey else " ".join(hkey.split())) if hkey else key
        if name not in header:
            header[name] = _parse_value(value)
            last_key = name
        else:
            last_key = None
    return header


def read_primary_header(path: str | Path, check_size: bool = True) -> dict[str, Any]:
    """The primary header of a FITS file (.fits, .fits.fz, .fits.gz) as a dict.

    Raises :class:`HeaderError` for an empty, non-FITS or truncated file. With
    ``check_size`` an uncompressed-on-disk file must be a whole number of 2880-byte
    blocks and hold the primary data its header announces (cheap truncation checks;
    skipped for .gz, whose size says nothing without decompressing).
    """
    path = Path(path)
    raw, header_bytes = _read_header_bytes(path)
    header = parse_header_cards(raw)
    if header.get("SIMPLE") is not True:
        raise HeaderError("not a standard FITS file (SIMPLE is not T)")
    if check_size and not path.name.endswith(".gz"):
        size = path.stat().st_size
        data_bytes = _primary_data_bytes(header)
        if size < header_bytes + data_bytes:
            raise HeaderError(
                f"truncated file ({size} bytes, the primary HDU alone needs {header_bytes + data_bytes})"
            )
        if size % BLOCK:
            raise HeaderError(f"truncated file ({size} bytes is not a multiple of {BLOCK})")
    return header


def _primary_data_bytes(header: dict[str, Any]) -> int:
    naxis = header.get("NAXIS")
    if not isinstance(naxis, int) or naxis <= 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        length = header.get(f"NAXIS{axis}")
        if not isinstance(length, int) or length < 0:
            raise HeaderError(f"corrupt header (NAXIS{axis} = {length!r})")
        count *= length
    bitpix = header.get("BITPIX")
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise HeaderError(f"corrupt header (BITPIX = {bitpix!r})")
    return count * abs(bitpix) // 8


# --------------------------------------------------------------------------------------
# Header -> raw row


@dataclass
class RowContext:
    """What turning a header into a raw row needs from the settings, computed once."""

    night_cutoff: dt.time = DEFAULT_NIGHT_CUTOFF
    additional: tuple[tuple[str, str], ...] = ()  # (normalized keyword, column)
    object_map: dict[str, str] = field(default_factory=dict)
    run_of: Callable[[str], str | None] = lambda night: None
    exclusions: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_settings(cls, settings) -> RowContext:
        additional = tuple(
            (normalize_keyword(kw), keyword_column(kw)) for kw in (settings.additional_keywords or [])
        )
        exclusions = _exclusion_queries(settings, {column for _, column in additional})
        return cls(
            night_cutoff=settings.night_cutoff or DEFAULT_NIGHT_CUTOFF,
            additional=additional,
            object_map=dict(settings.object_to_dataset()),
            run_of=settings.run_of,
            exclusions=exclusions,
        )


RAW_QUERY_COLUMNS = frozenset(c.name for c in Raw.__table__.columns) - {"header", "extra"}


def _exclusion_queries(settings, extra_columns: set[str]) -> tuple[dict[str, Any], ...]:
    frames = getattr(settings, "frames", None) or {}
    queries = (frames.get("exclude") or {}).get("raw") or []
    if isinstance(queries, dict):
        queries = [queries]
    checked = []
    for i, query in enumerate(queries):
        if not isinstance(query, dict) or not query:
            raise MuseredError(f"frames.exclude.raw[{i}]: expected a mapping of column: value(s), got {query!r}")
        for column in query:
            if column not in RAW_QUERY_COLUMNS and column not in extra_columns:
                known = ", ".join(sorted(RAW_QUERY_COLUMNS | extra_columns))
                raise MuseredError(f"frames.exclude.raw[{i}]: unknown raw column {column!r} (known: {known})")
        checked.append(query)
    return tuple(checked)


def value_matches(value: Any, wanted: Any) -> bool:
    """Whether a raw value equals a settings value (or one of a list of values).

    Numbers compare as numbers, everything else as text, so a YAML date
    ``2018-08-11`` matches the night string ``'2018-08-11'`` and ``'600'`` matches 600.0.

    >>> value_matches(600.0, "600"), value_matches("2018-08-11", ["2018-08-10", "2018-08-11"])
    (True, True)
    """
    if isinstance(wanted, (list, tuple, set)):
        return any(value_matches(value, item) for item in wanted)
    if value is None or wanted is None:
        return value is None and wanted is None
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        number = _as_float(value)
        return number is not None and number == float(wanted)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        wanted_number = _as_float(wanted)  # settings give values as text: '600' vs 600.0
        return wanted_number is not None and float(value) == wanted_number
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    return str(value) == str(wanted)


def row_matches(row: dict[str, Any], query: dict[str, Any]) -> bool:
    """All items of ``query`` match the row (columns first, then ``extra``)."""
    extra = row.get("extra") or {}
    for column, wanted in query.items():
        value = row.get(column) if column in RAW_QUERY_COLUMNS else extra.get(column)
        if not value_matches(value, wanted):
            return False
    return True


def header_to_row(path: Path, header: dict[str, Any], context: RowContext) -> dict[str, Any]:
    """The raw row of a file, without the bookkeeping columns (size, mtime, ingested).

    Raises :class:`HeaderError` for a raw frame (DPR keywords) without a valid DATE-OBS,
    and for a FITS file that is neither a raw frame nor a product (no DPR nor PRO CATG).
    """
    row: dict[str, Any] = {kw.column: kw.convert(header.get(kw.keyword)) for kw in KEYWORDS}
    row["path"], row["filename"] = str(path), path.name
    is_raw = any(header.get(f"ESO DPR {k}") is not None for k in ("CATG", "TYPE", "TECH"))
    if not is_raw and row["PRO_CATG"] is None:
        raise HeaderError("no ESO DPR keywords nor ESO PRO CATG: not a MUSE raw file or product")
    date_obs = None
    if header.get("DATE-OBS") is not None:
        try:
            date_obs = parse_date_obs(header["DATE-OBS"])
        except ValueError as exc:
            if is_raw:
                raise HeaderError(str(exc)) from None
    elif is_raw:
        raise HeaderError("no DATE-OBS in the primary header")
    row["DATE_OBS"] = date_obs
    row["night"] = night_of(date_obs, context.night_cutoff) if date_obs else None
    row["run"] = context.run_of(row["night"]) if row["night"] else None
    row["name"] = exposure_name(path.name, date_obs)
    original = row["OBJECT_ORIG"]
    row["OBJECT"] = context.object_map.get(original, original) if original is not None else None
    row["extra"] = {column: header.get(keyword) for keyword, column in context.additional}
    row["header"] = header
    row["excluded"] = any(row_matches(row, query) for query in context.exclusions)
    for column, length in _STRING_LENGTHS.items():
        value = row.get(column)
        if isinstance(value, str) and len(value) > length:
            row[column] = value[:length]  # the full value stays in the header JSON
    return row


_STRING_LENGTHS = {
    c.name: c.type.length for c in Raw.__table__.columns if getattr(c.type, "length", None)
}


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

    known = _retry_locked(lambda: _known_files(database))
    todo: list[tuple[Path, os.stat_result]] = []
    seen: set[str] = set()
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

    writer = _RowWriter(database, known, report)
    with _progress(progress and len(todo) >= PROGRESS_MIN_FILES, len(todo)) as advance:
        for path, stat in todo:
            try:
                header = read_primary_header(path)
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

    def __init__(self, database: Database, known: dict, report: IngestReport):
        self.database = database
        self.known = known
        self.report = report
        self.rows: list[dict[str, Any]] = []
        self.stale: list[str] = []

    def add(self, row: dict[str, Any]) -> None:
        row["ingested"] = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        self.rows.append(row)
        if len(self.rows) >= BATCH_SIZE:
            self.flush()

    def forget(self, path: str) -> None:
        """A known file that became unreadable: its row goes."""
        if path in self.known:
            self.stale.append(path)

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        stale, self.stale = self.stale, []
        if stale:
            _retry_locked(lambda: self._delete(stale))
        if not rows:
            return
        try:
            _retry_locked(lambda: _upsert(self.database, rows))
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
                _retry_locked(lambda: _upsert(self.database, [row]))
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


_UPSERT_SKIP = {"id", "path"}


def _upsert(database: Database, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, updating those whose path another run (or process) already stored."""
    table = Raw.__table__
    dialect = database.engine.dialect.name
    columns = [c.name for c in table.columns if c.name not in _UPSERT_SKIP]
    rows = [{c: row.get(c) for c in ["path", *columns]} for row in rows]
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.path], set_={c: stmt.excluded[c] for c in columns}
        )
        with database.engine.begin() as conn:
            conn.execute(stmt, rows)
        return
    # Generic back end: insert the batch; if a path exists already, go row by row.
    try:
        with database.engine.begin() as conn:
            conn.execute(insert(table), rows)
    except IntegrityError:
        for row in rows:
            with database.engine.begin() as conn:
                values = {c: row[c] for c in columns}
                done = conn.execute(update(table).where(table.c.path == row["path"]).values(**values))
                if done.rowcount == 0:
                    conn.execute(insert(table).values(path=row["path"], **values))


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

