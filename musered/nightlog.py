"""Weather conditions from ESO night logs (``*.NL.txt`` beside the raw files).

The archive delivers, with the raw data of a night, a plain-text night report. We read
only its weather block; everything else in the file is ignored. The expected layout::

    ------------------------------------------------------------
            Night Log for UT4 - MUSE
    ------------------------------------------------------------
    Date: 2017-06-15
    Observer(s): ...

    Weather observations
    Time\tConditions\tComment
    23:05\tPhotometric\tSeeing 0.6", wind 5 m/s
    02:30\tClear\tThin cirrus to the West
    05:12:30\tThick clouds\tClosed

    Operations summary
    ...

- The block starts at a line ``Weather observations`` (any case, trailing ``:``
  allowed), followed by a header line naming the columns (``Time``, ``Conditions``,
  ``Comment``), then one tab-separated row per observation. It ends at the first blank
  line or the first line that does not start with a time.
- ``Time`` is UT, ``HH:MM`` or ``HH:MM:SS``. ``Conditions`` and ``Comment`` are free
  text; the comment may be missing.
- The night is the ISO date of a ``Date:`` or ``Night:`` line, else the observing
  night of the exposure timestamp in the file name (``MUSE.2017-06-16T01:34:56.867.NL.txt``
  → 2017-06-15, the archive's naming), else the first ``YYYY-MM-DD`` in the file name
  (``MUSE.2017-06-15.NL.txt``). A time at or after noon
  UT belongs to the night's calendar date, a time before noon to the next day
  (Paranal nights run from about 22:00 to 10:00 UT).

A log without the block (or without a night) is skipped with a warning. Re-reading a
log replaces its rows, so running ``update-db`` again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError

from .db import Database, WeatherCondition
from .errors import MuseredError

logger = logging.getLogger(__name__)

_BLOCK_START = re.compile(r"^\s*weather\s+observations\s*:?\s*$", re.IGNORECASE)
_NIGHT_LINE = re.compile(r"^\s*(?:date|night)\s*:\s*(\d{4}-\d{2}-\d{2})\b", re.IGNORECASE | re.MULTILINE)
_ISO_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
NOON = dt.time(12, 0)


class NightlogError(Exception):
    """A night log we cannot use; ``str()`` is the reason."""


@dataclass(frozen=True)
class WeatherRow:
    night: str
    time: dt.datetime  # naive UTC
    conditions: str
    comment: str | None


@dataclass
class NightlogResult:
    logs: int = 0
    rows: int = 0
    warnings: list[tuple[str, str]] = field(default_factory=list)


def night_of_log(text: str, filename: str) -> str:
    """The ISO night a log describes (``Date:``/``Night:`` line, else the file name).

    A log named after its exposure (``MUSE.2017-06-16T01:34:56.867.NL.txt``) describes
    the observing night of that exposure (2017-06-15), as MuseRed has it.
    """
    from .nights import night_of, parse_date_obs, timestamp_from_filename

    stamp = None if _NIGHT_LINE.search(text) else timestamp_from_filename(filename)
    if stamp is not None:
        return night_of(parse_date_obs(stamp))
    match = _NIGHT_LINE.search(text) or _ISO_DATE.search(filename)
    if match is None:
        raise NightlogError("no night: neither a 'Date:' line nor a YYYY-MM-DD in the file name")
    night = match.group(1)
    try:
        dt.date.fromisoformat(night)
    except ValueError:
        raise NightlogError(f"invalid night date {night!r}") from None
    return night


def parse_nightlog(text: str, filename: str = "") -> list[WeatherRow]:
    """The rows of the 'Weather observations' block; NightlogError if there is none."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _BLOCK_START.match(line)), None)
    if start is None:
        raise NightlogError("no 'Weather observations' block")
    night = night_of_log(text, filename)
    night_date = dt.date.fromisoformat(night)
    body = lines[start + 1 :]
    if not body or "time" not in body[0].lower():
        raise NightlogError("the 'Weather observations' block has no Time/Conditions/Comment header line")
    rows = []
    for line in body[1:]:
        if not line.strip():
            break
        cells = [cell.strip() for cell in line.split("\t")]
        match = _TIME.match(cells[0])
        if match is None:
            break
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise NightlogError(f"invalid time {cells[0]!r}")
        clock = dt.time(hour, minute, second)
        day = night_date if clock >= NOON else night_date + dt.timedelta(days=1)
        conditions = cells[1] if len(cells) > 1 else ""
        comment = "\t".join(cells[2:]).strip() or None
        rows.append(WeatherRow(night, dt.datetime.combine(day, clock), conditions, comment))
    if not rows:
        raise NightlogError("the 'Weather observations' block is empty")
    return rows


def ingest_nightlogs(paths: Iterable[Path], database: Database) -> NightlogResult:
    """Read night logs into ``weather_conditions``; unusable logs become warnings."""
    result = NightlogResult()
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
            rows = parse_nightlog(text, Path(path).name)
        except (OSError, NightlogError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            logger.warning("night log %s skipped: %s", path, reason)
            result.warnings.append((str(path), reason))
            continue
        result.rows += _store(database, str(path), rows)
        result.logs += 1
    return result


def _store(database: Database, source: str, rows: list[WeatherRow]) -> int:
    """Replace the rows of one log in one transaction; retried if another process races."""
    delay = 0.05
    for attempt in range(10):
        try:
            return _store_once(database, source, rows)
        except (IntegrityError, OperationalError) as exc:
            if isinstance(exc, OperationalError) and "locked" not in str(exc.orig).lower():
                raise MuseredError(f"database error: {exc.orig}") from None
            if attempt == 9:
                raise MuseredError(f"could not store the weather rows of {source}: {exc.orig}") from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _store_once(database: Database, source: str, rows: list[WeatherRow]) -> int:
    with database.session() as session:
        session.execute(delete(WeatherCondition).where(WeatherCondition.source == source))
        nights = {row.night for row in rows}
        # Another log of the same night may hold identical rows: keep one copy.
        existing = {
            tuple(row)
            for row in session.execute(
                select(WeatherCondition.night, WeatherCondition.time, WeatherCondition.conditions).where(
                    WeatherCondition.night.in_(nights)
                )
            )
        }
        written = 0
        for row in rows:
            key = (row.night, row.time, row.conditions)
            if key in existing:
                continue
            existing.add(key)
            session.add(
                WeatherCondition(
                    night=row.night, time=row.time, conditions=row.conditions, comment=row.comment, source=source
                )
            )
            written += 1
        return written
