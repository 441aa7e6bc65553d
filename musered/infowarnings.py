"""``musered info-warnings``: the recipe runs of this version that logged warnings.

A run's warning count is the ``warnings`` of its record when the record has one (MuseRed's
``nbwarn``, imported), else the number of ``WARNING`` lines of its log file (our runs'
``log.txt``), else unknown (no log on disk) and the run is not listed. Modes, MuseRed's:
``summary`` (exposure or target name × recipe, the counts), ``list`` (one row per run with
its log file), ``detail`` (each run's warning and error messages read from its log). A run
is one (recipe, target) pair; ``-d`` selects targets as ``--date`` does (a name, a night,
a run, a glob), ``-r`` recipes in any spelling ``info-exp --recipe`` accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .db import Database
from .inforows import Snapshot, resolve_recipes
from .infotable import NONE, InfoTable

MODES = ("summary", "list", "detail")
# esorex / python-cpl log lines (MuseRed's) and ours (logging: "asctime LEVEL logger: message")
_DRS_LINE = re.compile(r"\[(WARNING|  ERROR)\]\[.*?\] (.*)")
_OUR_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR) \S+: (.*)")


@dataclass(frozen=True)
class WarningRun:
    """A recipe run with warnings."""

    recipe_name: str
    name: str
    night: str | None
    warnings: int
    log_path: str | None


def warning_count(record: Mapping[str, Any]) -> int | None:
    """Warnings of a record's run: its ``warnings`` (MuseRed's ``nbwarn``), else counted
    in its log, else None."""
    for key in ("warnings", "nbwarn"):
        if record.get(key) is not None:
            return int(record[key])
    log = record.get("log_path")
    if not log:
        return None
    messages = log_messages(str(log))
    return None if messages is None else sum(level == "WARNING" for level, _ in messages)


@lru_cache(maxsize=256)
def _read_messages(path: str, mtime: float) -> tuple[tuple[str, str], ...]:
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            match = _DRS_LINE.search(line) or _OUR_LINE.match(line)
            if match:
                out.append((match.group(1).strip(), match.group(2).rstrip()))
    return tuple(out)


def log_messages(path: str) -> tuple[tuple[str, str], ...] | None:
    """(level, message) of the WARNING and ERROR lines of a log; None if it is not on disk."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return None
    return _read_messages(path, mtime)


def warning_runs(settings, database: Database, dates: Sequence[str] = (), recipes: Sequence[str] = (), *,
                 snap: Snapshot | None = None) -> list[WarningRun]:
    """The runs with warnings, by target name then recipe (module docstring)."""
    from .dateselect import select_dates

    snap = snap if snap is not None else Snapshot.load(settings, database)
    wanted = set(resolve_recipes(settings, snap, recipes, option="-r")) if recipes else None
    names = set(select_dates(settings, database, list(dates), column="name", table="reduced",
                             option="-d")) if dates else None
    seen: dict[tuple[str, str], WarningRun] = {}
    for record in snap.records:
        key = (record["recipe_name"], record["name"])
        if key in seen or (wanted is not None and key[0] not in wanted) or (names is not None and key[1] not in names):
            continue
        count = warning_count(record)
        if count:
            seen[key] = WarningRun(key[0], key[1], record["night"], count, record.get("log_path"))
    return sorted(seen.values(), key=lambda w: (w.name, w.recipe_name))


def summary_table(runs: Sequence[WarningRun]) -> InfoTable:
    """``--mode summary``: warnings per name (rows) and recipe (columns)."""
    recipes = sorted({w.recipe_name for w in runs})
    counts = {(w.name, w.recipe_name): w.warnings for w in runs}
    table = InfoTable("Warnings", ["name", *recipes], empty="no warnings")
    for name in sorted({w.name for w in runs}):
        table.rows.append([name, *(str(counts[name, r]) if (name, r) in counts else NONE for r in recipes)])
    return table


def list_table(runs: Sequence[WarningRun]) -> InfoTable:
    """``--mode list``: one row per run with its log file."""
    table = InfoTable("Warnings", ["recipe_name", "name", "warnings", "log_file"], empty="no warnings")
    for w in runs:
        table.rows.append([w.recipe_name, w.name, str(w.warnings), w.log_path or NONE])
    return table


def detail_items(runs: Sequence[WarningRun]) -> list[str]:
    """``--mode detail``: per run a header line then its messages read from the log."""
    items: list[str] = []
    for w in runs:
        items += ["", f"{w.recipe_name}, {w.name}, {w.warnings} warnings", ""]
        messages = log_messages(w.log_path) if w.log_path else None
        if messages is None:
            items.append(f"- (log file not found: {w.log_path or 'none recorded'})")
            continue
        items += [f"- {level:7s} : {message}" for level, message in messages]
    return items or ["No warnings."]


def warning_items(settings, database: Database, dates: Sequence[str] = (), recipes: Sequence[str] = (),
                  mode: str = "summary") -> list:
    """What ``info-warnings`` prints in ``mode`` (summary, list or detail)."""
    from .errors import MuseredError

    if mode not in MODES:
        raise MuseredError(f"info-warnings: mode must be one of {', '.join(MODES)}, not {mode!r}")
    runs = warning_runs(settings, database, dates, recipes)
    if mode == "detail":
        return detail_items(runs)
    return [list_table(runs) if mode == "list" else summary_table(runs)]
