"""``musered info --raw KEY=VALUE``: raw rows matching column queries.

A key is a raw column or an additional keyword (its column name or its FITS spelling); a
repeated key matches any of its values, ``*`` is a wildcard, and other values compare as
:func:`musered.matching.value_matches` does. ``--excluded`` reuses the query with no
terms to list the excluded raw files.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .db import Database
from .errors import MuseredError
from .infotable import NONE, InfoTable
from .inforows import ALL_NIGHTS, NightFilter, raw_rows
from .matching import RAW_QUERY_COLUMNS, value_matches
from .rawrows import keyword_column

RAW_TABLE_COLUMNS = ("name", "night", "run", "DPR_TYPE", "OBJECT", "INS_MODE", "EXPTIME", "TPL_START", "excluded")


def parse_raw_query(settings, terms: Sequence[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` terms → {column: [values]}; a key may be a raw column or an
    additional keyword (by its column name or its FITS spelling)."""
    extra = {keyword_column(k): k for k in settings.additional_keywords}
    query: dict[str, list[str]] = defaultdict(list)
    for term in terms:
        key, sep, value = term.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MuseredError(f"--raw {term!r}: expected KEY=VALUE (e.g. night=2017-06-15)")
        if key not in RAW_QUERY_COLUMNS and key not in extra:
            column = keyword_column(key)
            if column in RAW_QUERY_COLUMNS or column in extra:
                key = column
            else:
                known = ", ".join(sorted(RAW_QUERY_COLUMNS) + sorted(extra))
                raise MuseredError(f"--raw {term!r}: unknown column {key!r} (known: {known})")
        query[key].append(value.strip())
    return dict(query)


def raw_query_table(settings, database: Database, terms: Sequence[str], keep: NightFilter = ALL_NIGHTS,
                    excluded_only: bool = False) -> InfoTable:
    """Raw rows matching every ``KEY=VALUE`` term (a repeated key matches any of its
    values; ``*`` is a wildcard)."""
    query = parse_raw_query(settings, terms)
    extra_columns = [keyword_column(k) for k in settings.additional_keywords]
    rows = raw_rows(database, [*RAW_TABLE_COLUMNS, "filename", "extra"], keep)
    out_columns = ["filename", *RAW_TABLE_COLUMNS[1:], *extra_columns]
    title = "Excluded raw files" if excluded_only else "Raw files"
    table = InfoTable(title, out_columns, empty="no matching raw files")
    for r in rows:
        if excluded_only and not r["excluded"]:
            continue
        values = {**(r["extra"] or {}), **{k: v for k, v in r.items() if k != "extra"}}
        if all(any(_term_matches(values.get(key), wanted) for wanted in wanted_values)
               for key, wanted_values in query.items()):
            table.rows.append([_text(values.get(c)) for c in out_columns])
    return table


def _term_matches(value: Any, wanted: str) -> bool:
    if "*" in wanted:
        pattern = "^" + ".*".join(re.escape(part) for part in wanted.split("*")) + "$"
        return value is not None and re.match(pattern, _text(value)) is not None
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    return value_matches(value, wanted)


def _text(value: Any) -> str:
    # the table's text of a value, also what a wildcard is matched against
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
