"""``musered info-raw column:value ...`` (also ``info --raw KEY=VALUE``): raw files
matching column queries, with the observing conditions MuseRed's ``info-raw`` shows.

A term is ``KEY:VALUE`` (MuseRed's spelling) or ``KEY=VALUE``; the key is a raw column or
an additional keyword (its column name or its FITS spelling). A repeated key matches any
of its values; values compare as :func:`musered.matching.value_matches` does (numbers as
numbers, globs such as ``*T11:40*``). ``excluded`` is the exclusion decided as association
decides it (``yes``/``no``). Rows are sorted by exposure name, as MuseRed sorts them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .db import Database
from .errors import MuseredError
from .inforows import ALL_NIGHTS, NightFilter, Snapshot
from .infotable import InfoTable, text_of
from .matching import RAW_QUERY_COLUMNS, value_matches
from .rawrows import keyword_column

RAW_TABLE_COLUMNS = ("name", "night", "run", "DPR_TYPE", "OBJECT", "TPL_START", "INS_MODE", "EXPTIME")
# MuseRed's info-raw columns beyond ours, shown when the raw table has them; their table
# names drop TEL_, OCS_SGS_ and INS_ as MuseRed's do.
CONDITION_COLUMNS = (
    "INS_DROT_POSANG", "INS_TEMP7_VAL", "OCS_SGS_AG_FWHMX_MED", "OCS_SGS_FWHM_MED",
    "TEL_AIRM_START", "TEL_AIRM_END", "OBS_NAME",
)
_SHORT_PREFIXES = ("TEL_", "OCS_SGS_", "INS_")


def _split_term(term: str) -> tuple[str, str]:
    # the key never holds ':' or '=', the value may (TPL_START:2017-06-18T11:03:09)
    cuts = [i for i in (term.find(":"), term.find("=")) if i > 0]
    if not cuts:
        raise MuseredError(f"query {term!r}: expected KEY:VALUE or KEY=VALUE (e.g. night:2017-06-15)")
    cut = min(cuts)
    return term[:cut].strip(), term[cut + 1:].strip()


def parse_raw_query(settings, terms: Sequence[str]) -> dict[str, list[str]]:
    """``KEY:VALUE`` / ``KEY=VALUE`` terms -> {column: [values]}; MuseredError naming an
    unknown column and the known ones."""
    extra = {keyword_column(k) for k in settings.additional_keywords}
    known = (RAW_QUERY_COLUMNS - {"id"}) | extra
    query: dict[str, list[str]] = defaultdict(list)
    for term in terms:
        key, value = _split_term(term)
        if key not in known:
            column = keyword_column(key)
            if column not in known:
                raise MuseredError(f"query {term!r}: unknown column {key!r} (known: {', '.join(sorted(known))})")
            key = column
        query[key].append(value)
    return dict(query)


def _value(raw, key: str) -> Any:
    if key == "excluded":
        return bool(raw.excluded)
    if key in raw.columns:
        return raw.columns[key]
    return (raw.columns.get("extra") or {}).get(key)


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):
        return wanted.lower() in (("true", "yes", "1") if value else ("false", "no", "0"))
    return value_matches(value, wanted)


def raw_query(settings, database: Database, terms: Sequence[str] = (), keep: NightFilter = ALL_NIGHTS, *,
              snap: Snapshot | None = None) -> list:
    """The raw files (:class:`musered.catalog.RawFrame`, exclusion decided) matching every
    term, sorted by name (MuseRed's ``mr.info_raw(**query)`` rows)."""
    query = parse_raw_query(settings, terms)
    snap = snap if snap is not None else Snapshot.load(settings, database)
    rows = [r for r in snap.raws_kept(keep)
            if all(any(_matches(_value(r, key), wanted) for wanted in values) for key, values in query.items())]
    return sorted(rows, key=lambda r: (r.name is None, r.name or "", r.path.name))


def raw_query_table(settings, database: Database, terms: Sequence[str] = (), keep: NightFilter = ALL_NIGHTS, *,
                    snap: Snapshot | None = None) -> InfoTable:
    """``info-raw``: the rows of :func:`raw_query` with our columns, MuseRed's observing
    columns that the raw table has, the additional keywords and ``excluded``."""
    rows = raw_query(settings, database, terms, keep, snap=snap)
    conditions = [c for c in CONDITION_COLUMNS if c in RAW_QUERY_COLUMNS or any(
        c in (r.columns.get("extra") or {}) for r in rows)]
    extra = [keyword_column(k) for k in settings.additional_keywords]
    extra = [c for c in dict.fromkeys(extra) if c not in RAW_TABLE_COLUMNS and c not in conditions]
    keys = ["filename", *RAW_TABLE_COLUMNS, *conditions, *extra, "excluded"]
    titles = ["filename", *RAW_TABLE_COLUMNS, *(_short(c) for c in conditions), *extra, "excluded"]
    table = InfoTable("Raw files", titles, empty="no matching raw files")
    for r in rows:
        table.rows.append([r.path.name if key == "filename" else text_of(_value(r, key)) for key in keys])
    return table


def _short(column: str) -> str:
    for prefix in _SHORT_PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix):]
    return column
