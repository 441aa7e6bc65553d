"""From a primary header to a ``raw`` row: which keyword fills which column, and matching.

:data:`KEYWORDS` says which header keyword fills which ``raw`` column and how its value is
converted (the whole header → metadata map in one place). Derived columns: ``night``
(cutoff rule, :mod:`musered.nights`), ``run`` (``settings.run_of``), ``name``, ``OBJECT``
mapped to its dataset with the header value kept in ``OBJECT_ORIG``, ``excluded`` from
``frames.exclude.raw``; additional keywords go to their own column (added to the table by
:mod:`musered.db.rawtable`) and to ``extra``, both under their column name.
:func:`row_matches` selects rows by a settings query through the one matcher,
:func:`musered.matching.value_matches`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.io.fitsblocks import HeaderError

from .db import Raw
from .errors import MuseredError
from .matching import RAW_QUERY_COLUMNS, query_matches, row_getter
from .nights import DEFAULT_NIGHT_CUTOFF, exposure_name, night_of, parse_date_obs


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


def _as_int(value: Any) -> int | None:
    number = _as_float(value)
    return int(number) if number is not None and number.is_integer() else None


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
    # MuseRed's other raw columns (its RAW_FITS_KEYWORDS), same names
    Keyword("ORIGFILE", "ORIGFILE", _as_str),
    Keyword("INSTRUME", "INSTRUME", _as_str),
    Keyword("RA", "RA", _as_float),
    Keyword("DEC", "DEC", _as_float),
    Keyword("ESO INS DROT POSANG", "INS_DROT_POSANG", _as_float),
    Keyword("ESO INS TEMP4 VAL", "INS_TEMP4_VAL", _as_float),
    Keyword("ESO INS TEMP11 VAL", "INS_TEMP11_VAL", _as_float),
    Keyword("ESO OBS NAME", "OBS_NAME", _as_str),
    Keyword("ESO OBS START", "OBS_START", _as_str),
    Keyword("ESO OBS TARG NAME", "OBS_TARG_NAME", _as_str),
    Keyword("ESO OCS SGS AG FWHMX MED", "OCS_SGS_AG_FWHMX_MED", _as_float),
    Keyword("ESO OCS SGS AG FWHMY MED", "OCS_SGS_AG_FWHMY_MED", _as_float),
    Keyword("ESO OCS SGS AG FWHMX RMS", "OCS_SGS_AG_FWHMX_RMS", _as_float),
    Keyword("ESO OCS SGS AG FWHMY RMS", "OCS_SGS_AG_FWHMY_RMS", _as_float),
    Keyword("ESO OCS SGS FWHM MED", "OCS_SGS_FWHM_MED", _as_float),
    Keyword("ESO OCS SGS FWHM RMS", "OCS_SGS_FWHM_RMS", _as_float),
    Keyword("ESO PRO DATANCOM", "PRO_DATANCOM", _as_int),
    Keyword("ESO TEL AIRM START", "TEL_AIRM_START", _as_float),
    Keyword("ESO TEL AIRM END", "TEL_AIRM_END", _as_float),
    Keyword("ESO TEL AMBI WINDDIR", "TEL_AMBI_WINDDIR", _as_float),
    Keyword("ESO TEL AMBI WINDSP", "TEL_AMBI_WINDSP", _as_float),
    Keyword("ESO TEL MOON RA", "TEL_MOON_RA", _as_float),
    Keyword("ESO TEL MOON DEC", "TEL_MOON_DEC", _as_float),
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


def row_matches(row: dict[str, Any], query: dict[str, Any]) -> bool:
    """All items of ``query`` match the row (columns first, then ``extra``)."""
    return query_matches(row_getter(row), query)


def header_to_row(path: Path, header: dict[str, Any], context: RowContext) -> dict[str, Any]:
    """The raw row of a file, without the bookkeeping columns (size, mtime, ingested).

    Raises :class:`HeaderError` for a raw frame (DPR keywords) without a valid DATE-OBS,
    and for a FITS file that is neither a raw frame nor a product (no DPR nor PRO CATG)
    nor a MUSE archive file (:func:`is_muse_file`).
    """
    row: dict[str, Any] = {kw.column: kw.convert(header.get(kw.keyword)) for kw in KEYWORDS}
    row["path"], row["filename"] = str(path), path.name
    is_raw = any(header.get(f"ESO DPR {k}") is not None for k in ("CATG", "TYPE", "TECH"))
    if not is_raw and row["PRO_CATG"] is None and not is_muse_file(header):
        raise HeaderError("no ESO DPR keywords nor ESO PRO CATG, and not a MUSE archive file: "
                          "not a MUSE raw file or product")
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
    for column, value in row["extra"].items():
        row.setdefault(column, value)  # its own column too (musered.db.rawtable); KEYWORDS win
    row["header"] = header
    row["excluded"] = any(row_matches(row, query) for query in context.exclusions)
    for column, length in _STRING_LENGTHS.items():
        value = row.get(column)
        if isinstance(value, str) and len(value) > length:
            row[column] = value[:length]  # the full value stays in the header JSON
    return row


def is_muse_file(header: dict[str, Any]) -> bool:
    """A file the ESO archive delivered for MUSE without DPR keywords nor PRO CATG (old
    static calibrations, ``M.MUSE.*``): its ARCFILE says MUSE, or its INSTRUME does.
    MuseRed ingests them; they are never a recipe input by tag (they have none)."""
    arcfile = str(header.get("ARCFILE") or "")
    return arcfile.startswith(("M.MUSE.", "MUSE.")) or str(header.get("INSTRUME") or "").strip() == "MUSE"


_STRING_LENGTHS = {
    c.name: c.type.length for c in Raw.__table__.columns if getattr(c.type, "length", None)
}
