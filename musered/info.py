"""``musered info``: what the database holds and how far the reduction went.

Every view is plain data first, computed by a function of the settings and the database
(the same function the Python API calls), then a table (:class:`InfoTable`) rendered with
rich by :func:`render`. The lists are MuseRed's, with its rules (:mod:`musered.inforows`
for reading and the record conventions):

- :func:`nights`: every night of the raw table, calibration-only, excluded and
  static-calibration nights included (``info --nights``);
- :func:`runs`: the runs of the settings that have raw files, with their OBJECT
  exposures and how many of those are flagged (``info --runs``);
- :func:`datasets`: every dataset of the settings with its exposures (``info --datasets``);
- :func:`calib_sequences`: the TPL_STARTs of each DPR TYPE, science (``OBJECT``) included,
  leaving out sequences whose raw files are all excluded (``info --calibs``);
- :func:`exposures`: the science exposures (DPR TYPE ``OBJECT``) not excluded, per OBJECT
  (``info --exps``; a standard star is a calibration, listed under ``STD``).

Counts show ``--`` for none. ``keep`` (``--date``, ``--run``) keeps the rows of those
nights. Processed views are in :mod:`musered.infoprocessed`, the raw query in
:mod:`musered.infoquery`; this module re-exports what the commands use.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import func, inspect, select, table

from .db import Database
from .errors import MuseredError
from .infoprocessed import (
    exposures_table,
    overview_lines,
    processed_calibs_table,
    processed_science_table,
    processed_tables,
)
from .infoquery import RAW_TABLE_COLUMNS, parse_raw_query, raw_query, raw_query_table
from .inforows import ALL_NIGHTS, SCIENCE_TYPE, NightFilter, Snapshot, count_text
from .infotable import NONE, Heading, InfoTable, make_console, render, text_of

__all__ = [
    "ALL_NIGHTS", "CALIB_TYPE_ORDER", "NONE", "RAW_TABLE_COLUMNS", "SCIENCE_TYPE", "DatasetSummary", "Heading",
    "InfoTable", "NightFilter", "RunSummary", "Snapshot", "calib_sequences", "calib_sequences_table", "datasets",
    "datasets_table", "excluded_tables", "exposures", "exposures_table", "make_console", "nights", "nights_table",
    "overview_lines", "parse_raw_query", "processed_calibs_table", "processed_science_table", "processed_tables",
    "raw_data_table", "raw_query", "raw_query_table", "render", "report_items", "runs", "runs_table",
    "tables_table", "text_of",
]

REPORT_PARTS = ("raw", "calib", "science")
# Calibration DPR TYPEs in the order of a MUSE calibration plan (columns of the raw table).
CALIB_TYPE_ORDER = (
    "BIAS", "DARK", "FLAT,LAMP", "FLAT,LAMP,ILLUM", "WAVE", "WAVE,LSF", "WAVE,MASK",
    "FLAT,SKY", "SKY", "STD", "ASTROMETRY",
)


@dataclass(frozen=True)
class RunSummary:
    """A run with raw files: its dates, OBJECT exposures (flagged ones among them), nights."""

    name: str
    start_date: str
    end_date: str
    exposures: int
    flagged: int
    nights: int


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset of the settings: its OBJECT names, exposures and nights."""

    name: str
    objects: tuple[str, ...]
    exposures: int
    flagged: int
    nights: int


def _snap(settings, database: Database, snap: Snapshot | None) -> Snapshot:
    return snap if snap is not None else Snapshot.load(settings, database)


# ---------------------------------------------------------------------- lists


def nights(settings, database: Database, *, snap: Snapshot | None = None) -> list[str]:
    """Every night of the raw table, sorted (MuseRed's ``mr.nights``)."""
    return sorted({r.night for r in _snap(settings, database, snap).raws if r.night})


def runs(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
         snap: Snapshot | None = None) -> list[RunSummary]:
    """The settings' runs that have raw files (MuseRed's ``mr.runs``), in settings order."""
    snap = _snap(settings, database, snap)
    raws = snap.raws_kept(keep)
    with_data = {r.columns.get("run") for r in raws}
    out = []
    for name, run in settings.runs.items():
        if name not in with_data:
            continue
        mine = [r for r in raws if r.columns.get("run") == name and not r.excluded]
        names = {r.name for r in mine if r.DPR_TYPE == SCIENCE_TYPE}
        out.append(RunSummary(name, run.start_date.isoformat(), run.end_date.isoformat(), len(names),
                              sum(n in snap.flags for n in names), len({r.night for r in mine if r.night})))
    return out


def datasets(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
             snap: Snapshot | None = None) -> list[DatasetSummary]:
    """Every dataset of the settings with its exposures (not excluded) and nights."""
    snap = _snap(settings, database, snap)
    found = exposures(settings, database, keep, snap=snap)
    night_of = {r.name: r.night for r in snap.raws if r.name}
    return [
        DatasetSummary(name, tuple(dataset.objects or [name]), len(found.get(name, [])),
                       sum(n in snap.flags for n in found.get(name, [])),
                       len({night_of[n] for n in found.get(name, []) if night_of.get(n)}))
        for name, dataset in settings.datasets.items()
    ]


def calib_sequences(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
                    snap: Snapshot | None = None) -> dict[str, list[str]]:
    """DPR TYPE -> its TPL_STARTs, sorted (MuseRed's ``mr.calib_exposures``, module docstring)."""
    members: dict[tuple[str, str], list] = defaultdict(list)
    for r in _snap(settings, database, snap).raws_kept(keep):
        if r.DPR_TYPE and r.TPL_START:
            members[r.DPR_TYPE, r.TPL_START].append(r)
    out: dict[str, list[str]] = defaultdict(list)
    for (dpr_type, tpl_start), raws in sorted(members.items()):
        if not all(r.excluded for r in raws):
            out[dpr_type].append(tpl_start)
    return dict(out)


def exposures(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
              snap: Snapshot | None = None) -> dict[str, list[str]]:
    """OBJECT -> its science exposure names, sorted (MuseRed's ``mr.exposures``)."""
    out: dict[str, list[str]] = defaultdict(list)
    for r in _snap(settings, database, snap).raws_kept(keep):
        if r.DPR_TYPE == SCIENCE_TYPE and r.name and not r.excluded:
            out[r.OBJECT or SCIENCE_TYPE].append(r.name)
    return {obj: sorted(names) for obj, names in sorted(out.items())}


# ---------------------------------------------------------------------- tables


def datasets_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
                   snap: Snapshot | None = None) -> InfoTable:
    """``info --datasets``."""
    table = InfoTable("Datasets", ["dataset", "OBJECT", "exposures", "flagged", "nights"],
                      empty="no datasets in the settings")
    for d in datasets(settings, database, keep, snap=snap):
        table.rows.append([d.name, ", ".join(d.objects), count_text(d.exposures), count_text(d.flagged),
                           count_text(d.nights)])
    return table


def runs_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
               snap: Snapshot | None = None) -> InfoTable:
    """``info --runs``."""
    table = InfoTable("Runs", ["run", "start_date", "end_date", "exposures", "flagged", "nights"],
                      empty="no run of the settings has raw files")
    for r in runs(settings, database, keep, snap=snap):
        table.rows.append([r.name, r.start_date, r.end_date, count_text(r.exposures), count_text(r.flagged),
                           count_text(r.nights)])
    return table


def nights_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
                 snap: Snapshot | None = None) -> InfoTable:
    """``info --nights``: every night with its run and raw file counts."""
    snap = _snap(settings, database, snap)
    files: Counter = Counter()
    excluded: Counter = Counter()
    run_of: dict[str, str] = {}
    for r in snap.raws:
        if r.night:
            files[r.night] += 1
            excluded[r.night] += bool(r.excluded)
            run_of.setdefault(r.night, r.columns.get("run") or NONE)
    table = InfoTable("Nights", ["night", "run", "raw files", "excluded"], empty="no raw files")
    for night in nights(settings, database, snap=snap):
        if keep(night):
            table.rows.append([night, run_of[night], str(files[night]), count_text(excluded[night])])
    return table


def raw_data_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, excluded: bool = False, *,
                   snap: Snapshot | None = None) -> InfoTable:
    """Raw files per night (rows) and DPR TYPE, OBJECT for science (columns): MuseRed's
    "Raw data" table. Calibration products (no DPR TYPE) are left out, and excluded files
    unless ``excluded``."""
    rows = [r for r in _snap(settings, database, snap).raws_kept(keep)
            if (excluded or not r.excluded) and r.night and r.DPR_TYPE]
    kind = {id(r): (r.OBJECT or SCIENCE_TYPE) if r.DPR_TYPE == SCIENCE_TYPE else r.DPR_TYPE for r in rows}
    counts = Counter((r.night, kind[id(r)]) for r in rows)
    science = sorted({kind[id(r)] for r in rows if r.DPR_TYPE == SCIENCE_TYPE})
    calibs = {kind[id(r)] for r in rows if r.DPR_TYPE != SCIENCE_TYPE}
    columns = [t for t in CALIB_TYPE_ORDER if t in calibs] + sorted(calibs - set(CALIB_TYPE_ORDER)) + science
    table = InfoTable("Raw files per night", ["night", *columns], empty="no raw files")
    for night in sorted({night for night, _ in counts}):
        table.rows.append([night, *(count_text(counts[night, c]) for c in columns)])
    return table


def calib_sequences_table(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
                          snap: Snapshot | None = None) -> InfoTable:
    """``info --calibs``: the sequences of :func:`calib_sequences`, with their night, mode,
    file count and the recipes whose records (this version) are named after them."""
    snap = _snap(settings, database, snap)
    sequences = calib_sequences(settings, database, keep, snap=snap)
    first: dict[tuple[str, str], object] = {}
    files: Counter = Counter()
    for r in snap.raws:
        if r.DPR_TYPE and r.TPL_START and not r.excluded:
            first.setdefault((r.DPR_TYPE, r.TPL_START), r)
            files[r.DPR_TYPE, r.TPL_START] += 1
    processed: dict[str, set] = defaultdict(set)
    for record in snap.records_kept():
        processed[record["name"]].add(record["recipe_name"])
    table = InfoTable("Calibration sequences", ["DPR_TYPE", "TPL_START", "night", "INS_MODE", "files", "processed"],
                      empty="no raw sequences")
    for dpr_type, starts in sequences.items():
        for tpl_start in starts:
            raw = first[dpr_type, tpl_start]
            table.rows.append([dpr_type, tpl_start, raw.night or NONE, raw.INS_MODE or NONE,
                               str(files[dpr_type, tpl_start]), ", ".join(sorted(processed[tpl_start])) or NONE])
    return table


def excluded_tables(settings, database: Database, keep: NightFilter = ALL_NIGHTS, *,
                    snap: Snapshot | None = None) -> list[InfoTable]:
    """Excluded raw files (with the reason), per-tag exclusions of the settings, and flags."""
    snap = _snap(settings, database, snap)
    raws = InfoTable("Excluded raw files", ["filename", "night", "DPR_TYPE", "TPL_START", "reason"],
                     empty="no excluded raw files")
    for r in snap.raws_kept(keep):
        if r.excluded:
            raws.rows.append([r.path.name, r.night or NONE, r.DPR_TYPE or NONE, r.TPL_START or NONE, r.excluded])
    by_tag = {tag: names for tag, names in (settings.frames.get("exclude") or {}).items() if tag != "raw"}
    tag_table = InfoTable("Excluded by tag (frames.exclude)", ["tag", "excluded names"],
                          empty="no per-tag exclusions in the settings")
    for tag, names in by_tag.items():
        tag_table.rows.append([tag, ", ".join(map(str, names))])
    flag_table = InfoTable("Flagged exposures", ["name", "flags"], empty="no flagged exposures")
    for name, flags in sorted(snap.flags.items()):
        flag_table.rows.append([name, ", ".join(flags)])
    return [raws, tag_table, flag_table]


def tables_table(database: Database) -> InfoTable:
    """Every table of the database (imported MuseRed QC tables included) and its rows."""
    out = InfoTable("Database tables", ["table", "rows"])
    with database.session() as session:
        for name in sorted(inspect(database.engine).get_table_names()):
            count = session.scalar(select(func.count()).select_from(table(name))) or 0
            out.rows.append([name, str(count)])
    return out



def report_items(settings, database: Database, keep: NightFilter = ALL_NIGHTS, parts: str | None = None,
                 excluded: bool = False, header: bool = True, *, snap: Snapshot | None = None) -> list:
    """The plain ``info`` report, MuseRed's: header lines, datasets and runs (``header``),
    then the ``parts`` among raw, calib and science (comma-separated; default all), with
    excluded files and records counted when ``excluded``."""
    chosen = [p.strip() for p in (parts or ",".join(REPORT_PARTS)).split(",") if p.strip()]
    unknown = [p for p in chosen if p not in REPORT_PARTS]
    if unknown:
        raise MuseredError(f"--tables {unknown[0]!r}: expected a comma-separated list of {', '.join(REPORT_PARTS)}")
    snap = _snap(settings, database, snap)
    items: list = []
    if header:
        items += [*overview_lines(settings, database, snap=snap), datasets_table(settings, database, keep, snap=snap),
                  runs_table(settings, database, keep, snap=snap)]
    if "raw" in chosen:
        items.append(raw_data_table(settings, database, keep, excluded, snap=snap))
    if "calib" in chosen:
        items.append(processed_calibs_table(settings, database, keep, excluded, snap=snap))
    if "science" in chosen:
        items.append(processed_science_table(settings, database, keep, excluded, snap=snap))
    return items
