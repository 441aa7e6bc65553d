"""``musered info --qc PRO_CATG [--date ...]``: the QC values of a product type, per target.

Reads the QC table ``qc_{PRO_CATG}`` of the settings' version (:func:`musered.qctables.read_qc`,
filled by ``update-qc`` or imported from MuseRed): one table per target (a calibration's
TPL_START, an exposure, a dataset product), one row per product file and header (the 24
IFU extensions of a master flat ...), as MuseRed's ``info --qc``. ``--date`` picks targets
as everywhere (a name, a night, a run, a glob such as ``2017-06-16T*``).

Columns: ``filename``, ``hdu``, ``DATE_OBS``, ``INS_MODE``, then the QC columns that
``columns`` names (globs, comma-separated; ``*`` for all), by default those of the main QC
values the recipe declares (``Recipe.summary_qc``, taken per header: ``CHAN?? QC FLAT
MASTER MEDIAN`` is ``QC_FLAT_MASTER_MEDIAN``), or all of them when the recipe declares
none that the table has.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .db import Database
from .infotable import InfoTable, text_of

ROW_COLUMNS = ("filename", "hdu", "DATE_OBS", "INS_MODE")
_FIXED = ("id", "name", "reduced_id", "version", "recipe_name", "date_parsed", "run")


def qc_rows(settings, database: Database, pro_catg: str, dates: Sequence[str] = ()) -> dict[str, list[dict]]:
    """Target name -> its QC rows (this version), for the targets ``dates`` pick (every
    target of the table without ``dates``). MuseredError for an unknown table or a
    selector that picks no product of this type."""
    from .dateselect import select_dates
    from .qctables import read_qc

    names = select_dates(settings, database, list(dates), column="name", table="reduced", dpr_types=[pro_catg],
                         option="--date") if dates else None
    rows = read_qc(database, pro_catg, version=str(settings.version), names=names)
    out: dict[str, list[dict]] = {name: [] for name in names} if names is not None else {}
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[row["name"]].append(row)
    for name in sorted(grouped):
        out[name] = grouped[name]
    return dict(sorted(out.items()))


def qc_columns(rows: list[dict[str, Any]], pro_catg: str, columns: str | None = None) -> list[str]:
    """The QC columns to show (module docstring)."""
    available = list(dict.fromkeys(c for row in rows for c in row if c not in _FIXED and c not in ROW_COLUMNS))
    if columns:
        patterns = [p.strip() for p in columns.split(",") if p.strip()]
    else:
        recipe_names = {row.get("recipe_name") for row in rows}
        patterns = _declared_patterns(recipe_names, pro_catg)
    chosen = [c for c in available if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    return chosen if chosen or columns else available


def _declared_patterns(recipe_names: set, pro_catg: str) -> list[str]:
    try:
        from recipes.registry import all_recipes

        recipes = all_recipes()
    except Exception:  # no registry: every column is shown
        return []
    chosen = [r for name, r in recipes.items() if name in recipe_names] or \
             [r for r in recipes.values() if pro_catg in r.outputs]
    out = []
    for recipe in chosen:
        for _label, pattern in recipe.summary_qc:
            words = pattern.split()
            if words and words[0].startswith("CHAN"):  # per-IFU keyword: one row per header here
                words = words[1:]
            if words and words[0] != "QC":
                words = ["QC", *words]
            out.append("_".join(words))
    return out


def qc_tables(settings, database: Database, pro_catg: str, dates: Sequence[str] = (),
              columns: str | None = None) -> list[InfoTable]:
    """``info --qc``: one table per target (module docstring)."""
    by_name = qc_rows(settings, database, pro_catg, dates)
    shown = qc_columns([r for rows in by_name.values() for r in rows], pro_catg, columns)
    tables = []
    for name, rows in by_name.items():
        table = InfoTable(name, [*ROW_COLUMNS, *shown], empty="no QC")
        for row in rows:
            table.rows.append([text_of(row.get(c)) for c in (*ROW_COLUMNS, *shown)])
        tables.append(table)
    if not tables:
        tables.append(InfoTable(f"QC of {pro_catg}", list(ROW_COLUMNS),
                                empty=f"no QC values of version {settings.version}"))
    return tables
