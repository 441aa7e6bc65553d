"""Small helpers shared by the settings stages: error messages, value kinds, dates, paths."""

from __future__ import annotations

import datetime as dt
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import MuseredError


def where_text(path: Path | None) -> str:
    return str(path) if path is not None else "settings"


def fail_at(where: str, keypath: str | None, reason: str):
    prefix = f"{where}: {keypath}: " if keypath else f"{where}: "
    raise MuseredError(prefix + " ".join(reason.split()))


def kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}" if not isinstance(value, str) else f"text {value!r}"


def plain(value: Any) -> Any:
    """Paths and times given by Python callers (settings_from_dict) as the text YAML would give."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S")
    return value


def is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, dt.date))


def scalar_text(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def absolute_text(text: str, base_dir: Path) -> str:
    """Expand ``~`` and take a relative path from ``base_dir``; normalised, symlinks kept."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text)))


def parse_date(value: Any, default: dt.date | None) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return default
    return default


def suggest(name: str, candidates: Any, braces: bool = False) -> str:
    close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {{{close[0]}}}?" if braces else f"; did you mean {close[0]}?"


def first_unknown(params: Mapping[str, Any], known: set[str]) -> str | None:
    return next((key for key in params if key not in known), None)


def raw_columns(additional_keywords: list[str]) -> tuple[str, ...]:
    """Columns a global raw exclusion may query: the raw table's and additional keywords'."""
    from ..db.models import Raw
    from ..rawrows import keyword_column

    internal = ("header", "extra")
    columns = tuple(c for c in Raw.__table__.columns.keys() if c not in internal)
    return columns + tuple(keyword_column(k) for k in additional_keywords)
