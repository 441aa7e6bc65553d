"""The processed views of ``musered info``: records of the settings' version counted as
MuseRed counts them.

A cell counts *product types*: the distinct (target, PRO_CATG) records of a recipe, so a
flat sequence counts 3 (MASTER_FLAT, TRACE_TABLE, TRACE_SAMPLES) however many files each
type has. Calibration records (``CALIB``, :mod:`musered.inforows`) are counted per night,
science records per target: exposures and dataset products (combined cubes, offset lists)
alike. Columns are the recorded recipe names (MuseRed's drop ``muse_``). Excluded
records (made from excluded raw files, or named by ``frames.exclude.<PRO_CATG>``) are left
out unless ``excluded`` is asked for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .db import Database
from .inforows import ALL_NIGHTS, SCIENCE_TYPE, NightFilter, Snapshot, count_text
from .infotable import NONE, InfoTable, text_of


def _snap(settings, database: Database, snap: Snapshot | None) -> Snapshot:
    return snap if snap is not None else Snapshot.load(settings, database)


def overview_lines(settings, database: Database, *, snap: Snapshot | None = None) -> list[str]:
    """Version, raw file counts, records of the version, database location."""
    snap = _snap(settings, database, snap)
    excluded = sum(bool(r.excluded) for r in snap.raws)
    missing = sum(r["status"] == "missing" for r in snap.records)
    products = f"{len(snap.records)} processed products of this version"
    if missing:
        products += f" ({missing} recorded with their file missing)"
    return [
        f"Reduction version {settings.version} (revision {settings.revision})",
        f"{len(snap.raws)} raw files ({excluded} excluded), {products}",
        f"raw_path: {settings.raw_path}",
    ]


def product_counts(records: list[dict[str, Any]], key: Callable[[dict], str | None]) -> dict[str, dict[str, int]]:
    """row key -> short recipe name -> number of distinct (target, PRO_CATG)."""
    seen: dict[tuple[str, str], set] = defaultdict(set)
    for record in records:
        row_key = key(record)
        if row_key:
            seen[row_key, record["recipe_name"]].add((record["name"], record["PRO_CATG"]))
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for (row_key, recipe), types in seen.items():
        out[row_key][recipe] = len(types)
    return dict(out)


def _counts_table(title: str, key_column: str, counts: dict[str, dict[str, int]], empty: str) -> InfoTable:
    recipes = sorted({recipe for row in counts.values() for recipe in row})
    table = InfoTable(title, [key_column, *recipes], empty=empty)
    for row_key in sorted(counts):
        table.rows.append([row_key, *(count_text(counts[row_key].get(r, 0)) for r in recipes)])
    return table


def processed_calibs_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, excluded: bool = False,
                           *, snap: Snapshot | None = None) -> InfoTable:
    """Calibration product types per night (rows) and recipe (columns)."""
    records = _snap(settings, database, snap).records_kept(keep, excluded, category="CALIB")
    return _counts_table("Processed calibrations per night", "night", product_counts(records, lambda r: r["night"]),
                         empty=f"no processed calibrations in version {settings.version}")


def processed_science_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, excluded: bool = False,
                            *, snap: Snapshot | None = None) -> InfoTable:
    """Science product types per target (exposures, then datasets) and recipe."""
    records = _snap(settings, database, snap).records_kept(keep, excluded, category="SCIENCE")
    return _counts_table("Processed science data", "name", product_counts(records, lambda r: r["name"]),
                         empty=f"no processed science data in version {settings.version}")


def processed_tables(settings, database: Database, keep: NightFilter = ALL_NIGHTS, excluded: bool = False,
                     *, snap: Snapshot | None = None) -> list[InfoTable]:
    """Both processed tables (plain ``info``)."""
    snap = _snap(settings, database, snap)
    return [processed_calibs_table(settings, database, keep, excluded, snap=snap),
            processed_science_table(settings, database, keep, excluded, snap=snap)]


def exposures_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
                    snap: Snapshot | None = None) -> InfoTable:
    """``info --exps``: the science exposures (not excluded) by OBJECT, with their flags
    and the product types each recipe made for them in this version."""
    snap = _snap(settings, database, snap)
    raws = sorted((r for r in snap.raws_kept(keep) if r.DPR_TYPE == SCIENCE_TYPE and r.name and not r.excluded),
                  key=lambda r: (r.OBJECT or "", r.name))
    names = {r.name for r in raws}
    counts = product_counts([rec for rec in snap.records_kept() if rec["name"] in names], lambda r: r["name"])
    recipes = sorted({recipe for row in counts.values() for recipe in row})
    table = InfoTable("Exposures", ["name", "OBJECT", "night", "run", "INS_MODE", "EXPTIME", "flags", *recipes],
                      empty="no science exposures")
    for r in raws:
        done = counts.get(r.name, {})
        table.rows.append([
            r.name, r.OBJECT or NONE, r.night or NONE, text_of(r.columns.get("run")), r.INS_MODE or NONE,
            text_of(r.columns.get("EXPTIME")), ", ".join(snap.flags.get(r.name, [])) or NONE,
            *(count_text(done.get(recipe, 0)) for recipe in recipes),
        ])
    return table
