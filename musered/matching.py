"""One matcher of raw values against settings values: ``frames.exclude`` items, command-line
selectors (nights, names, globs) and database queries all compare through
:func:`value_matches`.

Semantics, in order:

- a list (tuple, set) of wanted values matches when any item matches;
- ``None`` matches only ``None``;
- numbers compare as numbers, also against numeric text: settings and the command line
  give values as text, the database as numbers (``"600"`` is 600.0);
- dates and datetimes compare by their ISO text (``2018-08-11`` from YAML is the night
  ``'2018-08-11'``; ``2017-06-16T01:34:56.867`` for a timestamp);
- text with a glob character (``*``, ``?``, ``[``) is a case-sensitive glob on the ISO text
  or the plain text of the value (``"2017-06-1*"``);
- anything else compares as text.

>>> value_matches(600.0, "600"), value_matches("600", 600.0), value_matches(600.0, 600)
(True, True, True)
>>> value_matches("2017-06-16", "2017-06-1*"), value_matches("2017-07-16", "2017-06-1*")
(True, False)
>>> import datetime as dt
>>> value_matches(dt.datetime(2017, 6, 16, 1, 34, 56, 867000), "2017-06-16T01:34:56.867000")
True
>>> value_matches("2018-08-11", dt.date(2018, 8, 11)), value_matches("WFM-AO-N", ["WFM-NOAO-N", "WFM-AO-*"])
(True, True)
>>> value_matches(None, None), value_matches(None, "x"), value_matches(True, "True")
(True, False, True)
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .db.models import Raw

#: Columns of the raw table a query may name (besides the ``extra`` keywords).
RAW_QUERY_COLUMNS: frozenset[str] = frozenset(c.name for c in Raw.__table__.columns) - {"header", "extra"}

GLOB_CHARACTERS = "*?["


def value_matches(value: Any, wanted: Any) -> bool:
    """Whether a stored value matches a settings or command-line value (module docstring)."""
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return any(value_matches(value, item) for item in wanted)
    if value is None or wanted is None:
        return value is None and wanted is None
    value_number, wanted_number = _number(value), _number(wanted)
    if value_number is not None and wanted_number is not None:
        return value_number == wanted_number
    text, pattern = _text(value), _text(wanted)
    if any(c in pattern for c in GLOB_CHARACTERS):
        return fnmatch.fnmatchcase(text, pattern)
    return text == pattern


def any_matches(values: Sequence[Any], wanted: Any) -> bool:
    """Whether any of ``values`` matches ``wanted`` (a selector against a target's names)."""
    return any(value_matches(v, wanted) for v in values if v is not None)


def query_matches(get: Callable[[str], Any], query: Mapping[str, Any]) -> bool:
    """Every ``column: wanted`` of a query matches ``get(column)``."""
    return all(value_matches(get(column), wanted) for column, wanted in query.items())


def row_getter(row: Mapping[str, Any]) -> Callable[[str], Any]:
    """``get(column)`` for a raw row: its columns, else its ``extra`` keywords."""
    extra = row.get("extra") or {}

    def get(column: str) -> Any:
        if column in RAW_QUERY_COLUMNS:
            return row.get(column)
        return extra.get(column)

    return get


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)
