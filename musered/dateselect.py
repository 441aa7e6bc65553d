"""The one reading of command-line selectors of nights and exposures (MuseRed's
``prepare_dates``): every ``--date``/``--night`` option and every NAME_OR_DATE argument
goes through :func:`pick` (which items a selector picks), :func:`select_dates` (the names
or nights of the database that selectors pick) or, for one item, :func:`selector_matches`.

A selector is, in MuseRed's order:

1. a run name of the settings: every item on a night of that run (``GTO17``);
2. a night ``YYYY-MM-DD``: every item of that night (``2017-06-16``);
3. an item's name (an exposure name ``2017-06-16T01:34:56.867``, a sequence's TPL_START,
   a dataset), exactly or as a glob (``"2017-06-16T01:3*"``), case-sensitive;
4. only when 1-3 pick nothing: a glob on the nights (``"2017-06-1?"``), or another value
   of the item, exactly or as a glob (TPL_START, OBJECT, file name).

So a glob on exposure names picks those exposures only, not every exposure sharing their
template, as in MuseRed; and what MuseRed could not select (an OBJECT, a file name) still
works. Values compare as text through :func:`musered.matching.value_matches`. MuseRed warns
about a selector that picks nothing and goes on; musered stops with a one-line error naming
it, because a typo would otherwise silently select nothing.

>>> from musered.settings.model import Run
>>> import datetime as dt
>>> runs = {"GTO17": Run("GTO17", dt.date(2017, 6, 15), dt.date(2017, 6, 18))}
>>> items = [("2017-06-16T01:34:56.867", "2017-06-16T01:34:55", "2017-06-15"),
...          ("2017-06-16T01:40:40.868", "2017-06-16T01:34:55", "2017-06-15")]
>>> def names(selector):
...     return [i[0][11:] for i in pick(selector, items, lambda i: ([i[0]], [i[1]], [i[2]]), runs)]
>>> names("GTO17"), names("2017-06-15"), names("*T01:3*"), names("2017-06-16T01:34:55"), names("2017-06-1?")
(['01:34:56.867', '01:40:40.868'], ['01:34:56.867', '01:40:40.868'], ['01:34:56.867'], ['01:34:56.867', '01:40:40.868'], ['01:34:56.867', '01:40:40.868'])
>>> names("2017-06-17")
[]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import select

from .errors import MuseredError
from .matching import any_matches

T = TypeVar("T")

#: The tables :func:`select_dates` reads, and the columns a selector is compared with.
SELECTABLE = {
    "raw": ("name", "night", "TPL_START", "OBJECT", "filename"),
    "reduced": ("name", "night", "TPL_START", "OBJECT"),
}


def _in_run(run, nights: Iterable[str | None]) -> bool:
    import datetime as dt

    for night in nights:
        try:
            if night and run.contains(dt.date.fromisoformat(str(night))):
                return True
        except ValueError:
            continue
    return False


def _first_rank(selector: str, names: Sequence[Any], nights: Sequence[str | None], runs) -> bool:
    """Rules 1-3 of the module docstring."""
    run = (runs or {}).get(selector)
    if run is not None:
        return _in_run(run, nights)
    return selector in [n for n in nights if n] or any_matches([v for v in names if v], selector)


def _second_rank(selector: str, others: Sequence[Any], nights: Sequence[str | None]) -> bool:
    """Rule 4: globs on nights, other values."""
    return any_matches([v for v in [*others, *nights] if v not in (None, "")], selector)


def pick(selector: str, items: Sequence[T], key: Callable[[T], tuple[Sequence, Sequence, Sequence]],
         runs: Mapping[str, Any] | None = None) -> list[T]:
    """The ``items`` that ``selector`` picks, in their order (module docstring);
    ``key(item)`` gives its (names, other values, nights); ``runs`` are the settings' runs
    (objects with ``contains(date)``)."""
    keys = [key(item) for item in items]
    first = [item for item, (names, _, nights) in zip(items, keys) if _first_rank(selector, names, nights, runs)]
    if first or selector in (runs or {}):
        return first
    return [item for item, (_, others, nights) in zip(items, keys) if _second_rank(selector, others, nights)]


def selector_matches(selector: str, values: Iterable[Any], nights: Iterable[str | None] = (),
                     runs: Mapping[str, Any] | None = None) -> bool:
    """Whether ``selector`` could pick an item with these ``values`` (names, TPL_START,
    OBJECT ...) on these ``nights``, by any rule of the module docstring (for one item
    seen alone; :func:`pick` applies the order over a list)."""
    values, nights = list(values), list(nights)
    return _first_rank(selector, values, nights, runs) or _second_rank(selector, values, nights)


def select_dates(settings, database, selectors: Sequence[str] | None, *, column: str = "name",
                 table: str = "raw", dpr_types: Sequence[str] | None = None,
                 include_excluded: bool = False, option: str = "--date") -> list[str]:
    """The distinct values of ``column`` (``name``, ``night``, ``TPL_START``, ``path`` ...)
    of the rows of ``table`` (``raw``, or ``reduced`` of the settings' version) that the
    selectors pick, sorted; every row's when ``selectors`` is empty (MuseRed's
    ``prepare_dates``). ``dpr_types`` limits raw rows to those DPR_TYPEs (reduced rows:
    their PRO_CATG); excluded raw files are left out unless ``include_excluded``.

    A selector that picks no row is a MuseredError naming it with ``option``.
    """
    from .db.models import Raw, Reduced

    if table not in SELECTABLE:
        raise ValueError(f"select_dates: table must be one of {', '.join(SELECTABLE)}, not {table!r}")
    model = Raw if table == "raw" else Reduced
    if not hasattr(model, column):
        raise ValueError(f"select_dates: {table} has no column {column!r}")
    wanted = [getattr(model, c) for c in SELECTABLE[table]]
    query = select(getattr(model, column), *wanted)
    if table == "raw":
        if dpr_types:
            query = query.where(Raw.DPR_TYPE.in_(list(dpr_types)))
        if not include_excluded:
            query = query.where(Raw.excluded.is_not(True))
    else:
        query = query.where(Reduced.version == str(settings.version))
        if dpr_types:
            query = query.where(Reduced.PRO_CATG.in_(list(dpr_types)))
    with database.session() as session:
        rows = session.execute(query).all()
    rows = [r for r in rows if r[0] is not None]
    if not selectors:
        return sorted({str(r[0]) for r in rows})
    runs = getattr(settings, "runs", {}) or {}
    columns = SELECTABLE[table]
    night_index = columns.index("night") + 1
    # the asked column ranks first, as MuseRed's values of ``datecol``; then the item's name
    first = [i for i, c in enumerate(columns, start=1) if c in (column, "name") and c != "night"]

    def key(row):
        return ([row[0], *(row[i] for i in first)], [row[i] for i in range(1, len(row))], [row[night_index]])

    chosen: set[str] = set()
    for selector in selectors:
        hits = {str(r[0]) for r in pick(selector, rows, key, runs)}
        if not hits:
            raise MuseredError(_nothing_matches(option, selector, table, dpr_types, settings))
        chosen |= hits
    return sorted(chosen)


def _nothing_matches(option: str, selector: str, table: str, dpr_types, settings) -> str:
    where = "raw files" if table == "raw" else f"products of version {settings.version}"
    kinds = f" ({', '.join(dpr_types)})" if dpr_types else ""
    return (f"{option} {selector}: no {where}{kinds} match it (a night YYYY-MM-DD, a run, an "
            "exposure name or a glob such as '2017-06-1*')")
