"""Observing nights and exposure names.

Conventions (as in MuseRed):

- **Night**: the UT date of ``DATE-OBS``, minus one day when the UT time of day is before
  the cutoff (default 20:40 UT, settings key ``night_cutoff``). At Paranal (UT-4/-3) this
  puts morning and afternoon calibrations on the night before, and evening twilights
  (taken after the cutoff) on the night that follows. Nights are ISO strings
  ``YYYY-MM-DD``.
- **Exposure name**: the timestamp of the archive file name ``MUSE.2017-06-16T01:34:56.867.fits``
  (also ``.fits.fz`` / ``.fits.gz`` and ``M.MUSE.*`` products), else ``DATE-OBS`` formatted
  the same way: ``YYYY-MM-DDTHH:MM:SS.mmm`` with exactly three decimals (rounded to the
  nearest millisecond).
"""

from __future__ import annotations

import datetime as dt
import re

DEFAULT_NIGHT_CUTOFF = dt.time(20, 40)

# The ESO archive names files after DATE-OBS with millisecond precision.
_ARCHIVE_TIMESTAMP = re.compile(r"MUSE\.(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})(?:\.|$)")


def to_utc_naive(value: dt.datetime) -> dt.datetime:
    """A naive UTC datetime from a naive (assumed UTC) or timezone-aware one."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def night_of(date_obs: dt.datetime, cutoff: dt.time = DEFAULT_NIGHT_CUTOFF) -> str:
    """The ISO night (``YYYY-MM-DD``) of an observation starting at ``date_obs`` (UT).

    >>> night_of(dt.datetime(2017, 6, 16, 1, 34, 56))
    '2017-06-15'
    >>> night_of(dt.datetime(2017, 6, 15, 22, 50))
    '2017-06-15'
    >>> night_of(dt.datetime(2017, 6, 15, 20, 40))
    '2017-06-15'
    >>> night_of(dt.datetime(2017, 6, 15, 20, 39, 59, 999999))
    '2017-06-14'
    """
    date_obs = to_utc_naive(date_obs)
    day = date_obs.date()
    if date_obs.time() < cutoff:
        day -= dt.timedelta(days=1)
    return day.isoformat()


def format_timestamp(date_obs: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmm`` rounded to the nearest millisecond (the archive style).

    >>> format_timestamp(dt.datetime(2017, 6, 16, 1, 34, 56, 867400))
    '2017-06-16T01:34:56.867'
    >>> format_timestamp(dt.datetime(2017, 6, 16, 1, 34, 59, 999600))
    '2017-06-16T01:35:00.000'
    """
    rounded = to_utc_naive(date_obs) + dt.timedelta(microseconds=500)
    return f"{rounded:%Y-%m-%dT%H:%M:%S}.{rounded.microsecond // 1000:03d}"


def timestamp_from_filename(filename: str) -> str | None:
    """The timestamp of an archive file name, or None if the name is not archive-style.

    >>> timestamp_from_filename("MUSE.2017-06-16T01:34:56.867.fits.fz")
    '2017-06-16T01:34:56.867'
    >>> timestamp_from_filename("M.MUSE.2017-06-16T01:34:56.867.fits")
    '2017-06-16T01:34:56.867'
    >>> timestamp_from_filename("bias_01.fits") is None
    True
    """
    match = _ARCHIVE_TIMESTAMP.search(filename)
    return match.group(1) if match else None


def exposure_name(filename: str, date_obs: dt.datetime | None) -> str | None:
    """The exposure name: archive file-name timestamp, else DATE-OBS (ms precision)."""
    from_name = timestamp_from_filename(filename)
    if from_name is not None:
        return from_name
    return format_timestamp(date_obs) if date_obs is not None else None


def parse_date_obs(value: object) -> dt.datetime:
    """A naive UTC datetime from a FITS ``DATE-OBS`` value; ValueError if it is not one.

    Accepts ``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM:SS[.fff...]`` (any number of decimals;
    beyond microseconds they are truncated) and a trailing ``Z``.
    """
    if isinstance(value, dt.datetime):
        return to_utc_naive(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"DATE-OBS {value!r} is not an ISO date")
    text = value.strip().removesuffix("Z")
    head, dot, frac = text.partition(".")
    if dot:
        if not frac.isdigit():
            raise ValueError(f"DATE-OBS {value!r} is not an ISO date")
        text = f"{head}.{(frac + '000000')[:6]}"
    try:
        return to_utc_naive(dt.datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"DATE-OBS {value!r} is not an ISO date") from None
