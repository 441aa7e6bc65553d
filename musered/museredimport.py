"""``import-musered``: a MuseRed database read (never written) into a musered database.

The source is opened read-only (:func:`musered.db.migrate.readonly_connect`: no file is
created next to it) and the whole import is one transaction in the target, so a failure
or ``dry_run`` leaves the target as it was. Importing again adds nothing.

What is imported (MuseRed table → ours):

- ``raw`` → ``raw``: each row's header is rebuilt from MuseRed's columns (the keywords it
  kept) and turned into our row by the ingest's own :func:`musered.rawrows.header_to_row`,
  so night, run, name, OBJECT and ``excluded`` follow the current settings; the report
  lists where night, run or name differ from MuseRed's. Rows whose file is already in our
  ``raw`` table are left alone (update-db read the whole header). The file size is not
  recorded, so the next update-db reads every imported file's full header.
- ``reduced_{version}`` → ``reduced`` (``reduced_0_1`` → version ``0.1``): MuseRed keeps
  one record per target and product type whose ``path`` is a folder; ours are one row per
  product file, so a record becomes the ``{PRO_CATG}*.fits`` files of its folder (paths
  relative to the settings' workdir). A record whose files are not on disk becomes rows
  with status ``missing`` (file names from its QC rows, else ``{PRO_CATG}.fits``): shown
  by info, never used as an input (the catalog takes status ``ok`` only).
- ``flags_{version}`` (one 0/1 column per flag) → ``flags``, a row per flag set (> 0).
- ``qc_*`` → our QC tables of the same names and columns (:mod:`musered.qctables`),
  ``reduced_id`` pointing at our reduced row of the same file; ``qc_info`` recounted.
- ``weather_conditions`` → ``weather_conditions``; ``gto_logs`` → ``gto_logs``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from .db import Database, Raw, Reduced
from .db.migrate import readonly_connect, sqlite_tables_readonly
from .db.rawtable import ensure_additional_columns, upsert_raw
from .errors import MuseredError
from .museredtables import import_flags, import_gto_logs, import_qc_tables, import_weather, text_datetime
from .rawrows import KEYWORDS, RowContext, header_to_row, keyword_column, normalize_keyword

# MuseRed's raw columns that are its bookkeeping, not header keywords
_BOOKKEEPING = {"id", "name", "filename", "path", "night", "run", "date_import", "OBJECT", "OBJECT_ORIG"}
_SUFFIXES = (".fits", ".fits.fz", ".fits.gz")


@dataclass
class ImportReport:
    """What :func:`import_musered` did: per table, rows read and rows added."""

    source: str
    target: str
    dry_run: bool = False
    versions: list[str] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    #: (exposure name, column, MuseRed's value, ours) where our derived raw columns differ
    differences: list[tuple[str, str, Any, Any]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # raw (filename, reason)
    missing_files: int = 0  # reduced rows imported with status 'missing'

    def count(self, table: str, read: int, added: int) -> None:
        self.read[table] = self.read.get(table, 0) + read
        self.added[table] = self.added.get(table, 0) + added

    def summary(self) -> str:
        """Plain-text lines (what ``musered import-musered`` prints)."""
        verb = "would import" if self.dry_run else "imported"
        lines = [f"{verb} {self.source} into {self.target} (versions: {', '.join(self.versions) or 'none'})"]
        for table in self.read:
            lines.append(f"  {table}: {self.read[table]} read, {self.added[table]} added")
        if self.missing_files:
            lines.append(f"{self.missing_files} reduced files are not on disk: recorded with status "
                         "'missing' (shown, never used as inputs)")
        for name, column, theirs, ours in self.differences:
            lines.append(f"differs from MuseRed: {name} {column}: MuseRed {theirs!r}, musered {ours!r}")
        for name, reason in self.failed:
            lines.append(f"raw row not imported: {name}: {reason}")
        return "\n".join(lines)


class MuseredSource:
    """A MuseRed SQLite database, read-only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        tables = sqlite_tables_readonly(self.path)
        if not tables:
            raise MuseredError(f"{self.path}: no MuseRed database there (no such file or no tables)")
        if "schema_version" in tables:
            raise MuseredError(f"{self.path} is a musered database already, not a MuseRed one")
        if "raw" not in tables:
            raise MuseredError(f"{self.path} has no raw table: not a MuseRed database")
        self.tables = set(tables)
        self.connection = readonly_connect(self.path)
        self.connection.row_factory = sqlite3.Row

    def rows(self, table: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.connection.execute(f'SELECT * FROM "{table}" ORDER BY id')]

    def column_types(self, table: str) -> dict[str, str]:
        """Column → declared SQLite type (``INTEGER``, ``FLOAT``, ``TEXT``)."""
        return {r["name"]: (r["type"] or "").upper() for r in self.connection.execute(f'PRAGMA table_info("{table}")')}

    def versions(self, current: str) -> dict[str, str]:
        """Table suffix → version (``0_1`` → ``0.1``; the settings' spelling when it matches)."""
        suffixes = {t.split("_", 1)[1] for t in self.tables if t.startswith(("reduced_", "flags_"))}
        return {s: current if current.replace(".", "_") == s else s.replace("_", ".") for s in sorted(suffixes)}

    def close(self) -> None:
        self.connection.close()


def import_musered(source: Path, database: Database, settings, versions: list[str] | None = None,
                   dry_run: bool = False) -> ImportReport:
    """Import the MuseRed database at ``source`` into ``database`` (module docstring).

    ``versions``: the reduction versions to import (default: every ``reduced_*`` and
    ``flags_*`` table). ``dry_run``: do everything in a transaction that is rolled back.
    MuseredError when the source is not a MuseRed database or is the target itself.
    """
    source = Path(source).expanduser().resolve()
    if database.path is not None and database.path.resolve() == source:
        raise MuseredError(f"{source}: the import would write into its own source; choose another target")
    src = MuseredSource(source)
    report = ImportReport(source=str(source), target=str(database.path or database.url), dry_run=dry_run)
    try:
        found = src.versions(str(settings.version))
        if versions is not None:
            wanted = {str(v) for v in versions}
            unknown = wanted - set(found.values())
            if unknown:
                raise MuseredError(f"version {', '.join(sorted(unknown))} is not in {source} "
                                   f"(it has {', '.join(found.values()) or 'none'})")
            found = {s: v for s, v in found.items() if v in wanted}
        report.versions = list(found.values())
        workdir = Path(settings.workdir)
        with database.engine.connect() as conn:
            transaction = conn.begin()
            try:
                import_raw(conn, src, settings, workdir, report)
                record_rows = {}
                for suffix, version in found.items():
                    if f"reduced_{suffix}" in src.tables:
                        record_rows.update(import_reduced(conn, src, suffix, version, workdir, report))
                    if f"flags_{suffix}" in src.tables:
                        import_flags(conn, src, f"flags_{suffix}", report)
                import_qc_tables(conn, src, found, record_rows, report)
                import_weather(conn, src, report)
                import_gto_logs(conn, src, report)
            except BaseException:
                transaction.rollback()
                raise
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()
    finally:
        src.close()
    return report


# ------------------------------------------------------------------------------- raw

def rebuilt_header(row: dict[str, Any], settings) -> dict[str, Any]:
    """The primary header a MuseRed raw row was read from, as far as MuseRed kept it."""
    keywords = {kw.column: kw.keyword for kw in KEYWORDS if kw.column != "OBJECT_ORIG"}
    keywords["DATE_OBS"] = "DATE-OBS"
    for keyword in settings.additional_keywords or []:
        keywords.setdefault(keyword_column(keyword), normalize_keyword(keyword))
    header: dict[str, Any] = {"SIMPLE": True}
    for column, value in row.items():
        if column in _BOOKKEEPING or value is None:
            continue
        # a column of an additional keyword MuseRed had and our settings do not
        guess = f"ESO {column.replace('_', ' ')}" if "_" in column else column
        header[keywords.get(column, guess)] = value
    original = row.get("OBJECT_ORIG", row.get("OBJECT"))
    if original is not None:
        header["OBJECT"] = original
    return header


def file_on_disk(recorded: str, workdir: Path, raw_path: Path | None = None) -> Path:
    """The file a MuseRed path names (relative to the workdir), or its other compression
    (``X.fits`` for ``X.fits.fz``) in that folder or in ``raw_path``; else the path as given."""
    path = Path(recorded).expanduser()
    path = (path if path.is_absolute() else workdir / path).resolve()
    stem = path.name
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    folders = [path.parent] + ([Path(raw_path).resolve()] if raw_path is not None else [])
    for folder in folders:
        for suffix in _SUFFIXES:
            if (folder / (stem + suffix)).is_file():
                return folder / (stem + suffix)
    return path


def import_raw(conn: Connection, src: MuseredSource, settings, workdir: Path, report: ImportReport) -> None:
    from recipes.io.fitsblocks import HeaderError

    context = RowContext.from_settings(settings)
    known = set(conn.scalars(select(Raw.path)))
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows, theirs = [], src.rows("raw")
    for item in theirs:
        path = file_on_disk(item["path"] or item["filename"], workdir, settings.raw_path)
        if str(path) in known:
            continue
        try:
            row = header_to_row(path, rebuilt_header(item, settings), context)
        except HeaderError as exc:
            report.failed.append((item["filename"], str(exc)))
            continue
        row.update(file_size=None, file_mtime=None, ingested=now)
        for column in ("night", "run", "name"):
            if item.get(column) != row[column]:
                report.differences.append((item.get("name") or item["filename"], column, item.get(column), row[column]))
        known.add(str(path))
        rows.append(row)
    table = ensure_additional_columns(conn, context.additional, [r["header"] for r in rows])
    if rows:
        upsert_raw(conn, table, rows)
    report.count("raw", len(theirs), len(rows))


# --------------------------------------------------------------------------- reduced

def _json(text: Any) -> dict:
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}


def _ifus(filename: str) -> list[int]:
    """``MASTER_FLAT-05.fits`` → [5]; a merged file → [] (not recorded by MuseRed)."""
    stem = filename.split(".fits")[0]
    tail = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    return [int(tail)] if tail.isdigit() and 1 <= int(tail) <= 24 else []


def _qc_filenames(src: MuseredSource, pro_catg: str, record_id: int, version: str) -> list[str]:
    table = f"qc_{pro_catg}"
    if table not in src.tables:
        return []
    rows = src.connection.execute(
        f'SELECT DISTINCT filename FROM "{table}" WHERE reduced_id = ? AND version = ? ORDER BY filename',
        (record_id, version))
    return [r["filename"] for r in rows if r["filename"]]


def import_reduced(conn: Connection, src: MuseredSource, suffix: str, version: str, workdir: Path,
                   report: ImportReport) -> dict[tuple[str, int], dict[str, int]]:
    """Rows of ``reduced_{suffix}``; returns (version, MuseRed id) → {file name: our row id}."""
    table = Reduced.__table__
    known = {path: row_id for path, row_id in conn.execute(
        select(table.c.path, table.c.id).where(table.c.version == version))}
    tpl_of_name = dict(conn.execute(select(Raw.name, Raw.TPL_START).where(Raw.TPL_START.is_not(None))).all())
    tpl_starts = set(tpl_of_name.values())
    out: dict[tuple[str, int], dict[str, int]] = {}
    records = src.rows(f"reduced_{suffix}")
    added = 0
    for record in records:
        pro_catg = record.get("DPR_TYPE")
        if not pro_catg or not record.get("path"):
            continue
        folder = Path(record["path"]).expanduser()
        folder = (folder if folder.is_absolute() else workdir / folder).resolve()
        files = sorted(folder.glob(f"{pro_catg}*.fits")) if folder.is_dir() else []
        status = "ok" if files else "missing"
        if not files:
            names = _qc_filenames(src, pro_catg, record["id"], version) or [f"{pro_catg}.fits"]
            files = [folder / n for n in names]
        name = record.get("name")
        log = record.get("log_file")
        common = dict(
            recipe_name=record.get("recipe_name") or "?", name=name or "?", PRO_CATG=pro_catg,
            night=record.get("night"), DATE_OBS=text_datetime(record.get("DATE_OBS")), OBJECT=record.get("OBJECT"),
            INS_MODE=record.get("INS_MODE"),
            TPL_START=name if name in tpl_starts else tpl_of_name.get(name),
            version=version, revision=None, date_run=text_datetime(record.get("date_run")) or dt.datetime(1970, 1, 1),
            params=_json(record.get("params")), frames={}, qc={}, status=status, runtime=record.get("tottime"),
            warnings=record.get("nbwarn"),
            log_path=str((workdir / log).resolve()) if log and not Path(log).is_absolute() else log,
            output_dir=folder.parent.name,
            software={k: v for k, v in (("MuseRed", record.get("musered_version")),
                                        ("DRS", record.get("recipe_version"))) if v},
        )
        ids = out.setdefault((version, record["id"]), {})
        for path in files:
            if str(path) in known:
                ids[path.name] = known[str(path)]
                continue
            row_id = conn.execute(insert(table).values(path=str(path), ifus=_ifus(path.name), **common)
                                  ).inserted_primary_key[0]
            known[str(path)] = ids[path.name] = row_id
            added += 1
            report.missing_files += status == "missing"
    report.count(f"reduced_{suffix} → reduced", len(records), added)
    return out
