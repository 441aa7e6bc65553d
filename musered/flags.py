"""Exposure quality flags: the ``flags`` table, one row per (exposure, flag) with a comment.

A row's presence means the exposure carries the flag; there is no "unset" value, removing
a flag deletes its row. That is what :class:`musered.catalog.Catalog` reads. As in MuseRed,
a flag alone changes nothing: flagged exposures are processed and combined, and a step
leaves them out only when its recipe block says ``exclude_flags: true`` (any flag) or
lists flag names (``exclude_flags: [SATELLITE]``); the step then names each exposure left
out with its flags. ``musered info --exps`` shows the same rows. Flags are shared by all
reduction versions (MuseRed keeps one ``flags_{version}`` table per version).

Valid flag names are :data:`QUALITY_FLAGS` (MuseRed's list, plus BAD_ALIGNMENT for our
``drs`` alignment) and the names under ``flags`` in the settings. Names are matched
case-insensitively and stored as spelled in that list. Exposure names are the ``name``
of raw rows of an exposure type (OBJECT, STD, SKY, ASTROMETRY); a glob (``2017-06-16T0*``)
picks every exposure it matches.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select

from .db import Database, Flag, Raw
from .errors import MuseredError

# Pre-defined flags (MuseRed's list); the settings' `flags` section adds more.
QUALITY_FLAGS: dict[str, str] = {
    "BAD_CENTERING": "Centering offset is wrong",
    "BAD_IMAQUALITY": "Bad image quality",
    "BAD_SKY_FLUX": "Sky flux looks wrong",
    "BAD_SKY_SUB": "Sky subtraction is bad",
    "BAD_SLICE": "Slices with wrong flux",
    "SATELLITE": "Satellite track",
    "SHORT_EXPTIME": "Incomplete observation",
    "SLICE_GRADIENT": "Slices show a flux gradient",
    # alignment: drs (exp-align --method drs) and image (the role imphot plays in MuseRed)
    "BAD_ALIGNMENT": "Offset computed by exp-align seems wrong",
    "IMPHOT_BAD_SCALE": "Flux scale computed by the image alignment seems wrong",
    "IMPHOT_HIGH_BKG": "Flux offset computed by the image alignment seems wrong",
    "IMPHOT_OUTLIER_OFFSET": "Centering offset computed by the image alignment seems wrong",
}

# DPR TYPEs of raw files that are exposures (what exposure recipes reduce and flags apply to).
EXPOSURE_TYPES = ("OBJECT", "STD", "SKY", "ASTROMETRY")


@dataclass(frozen=True)
class FlagEntry:
    """One flag of one exposure, with the exposure's night and OBJECT when known."""

    name: str
    flag: str
    comment: str | None
    date: dt.datetime
    night: str | None = None
    OBJECT: str | None = None


def known_flags(settings=None) -> dict[str, str]:
    """Flag name -> description: the pre-defined flags, then the settings' ``flags``."""
    flags = dict(QUALITY_FLAGS)
    extra: Mapping[str, str] = getattr(settings, "flags", None) or {}
    flags.update({name: description or "" for name, description in extra.items()})
    return flags


def check_flag(flag: str, settings=None) -> str:
    """The canonical spelling of ``flag`` (case-insensitive), or a one-line MuseredError
    listing the valid flags."""
    flags = known_flags(settings)
    by_upper = {name.upper(): name for name in flags}
    canonical = by_upper.get(flag.strip().upper())
    if canonical is None:
        raise MuseredError(f"unknown flag {flag!r}; valid flags: {', '.join(sorted(flags))} "
                           "(add more under 'flags' in the settings)")
    return canonical


def exposure_names(database: Database) -> dict[str, tuple[str | None, str | None]]:
    """Exposure name -> (night, OBJECT) for every raw exposure in the database."""
    with database.session() as session:
        rows = session.execute(
            select(Raw.name, Raw.night, Raw.OBJECT).where(Raw.DPR_TYPE.in_(EXPOSURE_TYPES), Raw.name.is_not(None))
        ).all()
    return {name: (night, obj) for name, night, obj in rows}


def resolve_exposures(database: Database, patterns: Sequence[str]) -> list[str]:
    """The exposure names that ``patterns`` (names or globs) pick, in order, each once.

    A pattern matching no exposure raises a MuseredError naming it.
    """
    if not patterns:
        raise MuseredError("give at least one exposure name")
    known = exposure_names(database)
    out: dict[str, None] = {}
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            hits = sorted(name for name in known if fnmatch.fnmatchcase(name, pattern))
        else:
            hits = [pattern] if pattern in known else []
        if not hits:
            raise MuseredError(_unknown_exposure(database, pattern))
        out.update(dict.fromkeys(hits))
    return list(out)


def _unknown_exposure(database: Database, pattern: str) -> str:
    with database.session() as session:
        dpr_type = session.scalar(select(Raw.DPR_TYPE).where(Raw.name == pattern).limit(1))
    if dpr_type:
        return f"{pattern!r} is a {dpr_type} file, not an exposure ({', '.join(EXPOSURE_TYPES)})"
    if any(c in pattern for c in "*?["):
        return f"{pattern!r} matches no exposure in the database (see musered info --exps)"
    return (f"unknown exposure {pattern!r}: no {'/'.join(EXPOSURE_TYPES)} raw file of that name in the "
            "database (see musered info --exps)")


def add_flag(database: Database, names: Sequence[str], flag: str, comment: str | None = None,
             settings=None, now: dt.datetime | None = None) -> tuple[list[str], list[str]]:
    """Flag the exposures ``names`` (names or globs) with ``flag``.

    An exposure that already has the flag gets the new comment (when one is given) and
    date. Returns (newly flagged names, names whose flag was updated).
    """
    flag = check_flag(flag, settings)
    exposures = resolve_exposures(database, names)
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    added, updated = [], []
    with database.session() as session:
        existing = {row.name: row for row in session.scalars(
            select(Flag).where(Flag.flag == flag, Flag.name.in_(exposures)))}
        for name in exposures:
            row = existing.get(name)
            if row is None:
                session.add(Flag(name=name, flag=flag, comment=comment, date=now))
                added.append(name)
            else:
                if comment is not None:
                    row.comment = comment
                row.date = now
                updated.append(name)
    return added, updated


def remove_flag(database: Database, names: Sequence[str], flag: str | None = None, settings=None) -> int:
    """Remove ``flag`` (every flag when None) from the exposures ``names`` (names or globs).

    A flag no longer defined in the settings can still be removed if rows carry it.
    Returns the number of rows removed; removing nothing is a MuseredError (a typo).
    """
    exposures = resolve_exposures(database, names)
    with database.session() as session:
        if flag is not None:
            stored = {f.upper(): f for f in session.scalars(select(Flag.flag).distinct())}
            flag = stored.get(flag.strip().upper()) or check_flag(flag, settings)
        query = delete(Flag).where(Flag.name.in_(exposures))
        if flag is not None:
            query = query.where(Flag.flag == flag)
        removed = session.execute(query).rowcount or 0
    if not removed:
        what = f"the flag {flag}" if flag else "any flag"
        who = exposures[0] if len(exposures) == 1 else f"any of the {len(exposures)} exposures"
        raise MuseredError(f"nothing to remove: {who} does not have {what}")
    return removed


def list_flags(database: Database, names: Sequence[str] = (), flag: str | None = None,
               settings=None) -> list[FlagEntry]:
    """Flags of the exposures ``names`` (names or globs; all flagged exposures when empty),
    optionally only ``flag``; sorted by exposure name then flag."""
    exposures = resolve_exposures(database, names) if names else None
    info = exposure_names(database)
    with database.session() as session:
        query = select(Flag).order_by(Flag.name, Flag.flag)
        if exposures is not None:
            query = query.where(Flag.name.in_(exposures))
        if flag is not None:
            stored = {f.upper(): f for f in session.scalars(select(Flag.flag).distinct())}
            query = query.where(Flag.flag == (stored.get(flag.strip().upper()) or check_flag(flag, settings)))
        rows = session.scalars(query).all()
        return [FlagEntry(name=r.name, flag=r.flag, comment=r.comment, date=r.date,
                          night=info.get(r.name, (None, None))[0], OBJECT=info.get(r.name, (None, None))[1])
                for r in rows]


def flags_by_exposure(database: Database) -> dict[str, list[str]]:
    """Exposure name -> its flags (sorted), for every flagged exposure."""
    out: dict[str, list[str]] = {}
    for entry in list_flags(database):
        out.setdefault(entry.name, []).append(entry.flag)
    return out


def block_exclude_flags(settings, block_name: str) -> bool | list[str]:
    """The ``exclude_flags`` of recipe block ``block_name`` (MuseRed's semantics): False
    when absent (flagged exposures are used), True (any flag), or the flags named, in
    their canonical spelling; an unknown flag name is a MuseredError naming the block (a
    typo must not let flagged exposures in)."""
    value = settings.recipe_block(block_name).get("exclude_flags", False)
    if isinstance(value, bool):
        return value
    try:
        return [check_flag(name, settings) for name in value]
    except MuseredError as exc:
        raise MuseredError(f"recipes.{block_name}.exclude_flags: {exc}") from None
