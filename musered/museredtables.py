"""``import-musered``, the tables besides raw and reduced: flags, QC tables, weather, GTO logs.

Each function reads one kind of MuseRed table from a :class:`musered.museredimport.MuseredSource`
and adds to the target connection only the rows it does not have yet (by each table's
natural key), counting read and added rows in the import report.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Float, Integer, Text, insert, select

from .db import Flag, GtoLog, WeatherCondition
from .nights import parse_date_obs
from .qctables import FIXED_COLUMNS, ROW_KEY, ensure_qc_table, existing_keys, update_qc_info, write_qc_rows

_SQLITE_TYPES = {"INTEGER": Integer, "INT": Integer, "FLOAT": Float, "REAL": Float, "DOUBLE": Float}


def text_datetime(value: Any) -> dt.datetime | None:
    """A MuseRed ISO text date as a datetime; None when empty or unparsable."""
    if value in (None, ""):
        return None
    try:
        return parse_date_obs(str(value))
    except ValueError:
        return None


def import_flags(conn: Connection, src, table: str, report) -> None:
    """``flags_{version}``: one integer column per flag, set when > 0 (MuseRed's test)."""
    known = set(conn.execute(select(Flag.name, Flag.flag)).all())
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = src.rows(table)
    new = []
    for row in rows:
        name = row.get("name")
        for flag, value in row.items():
            if flag in ("id", "name") or not name or not isinstance(value, (int, float)) or value <= 0:
                continue
            if (name, flag) not in known:
                known.add((name, flag))
                new.append({"name": name, "flag": flag, "date": now,
                            "comment": f"imported from MuseRed {table}" + (f" (value {value})" if value != 1 else "")})
    if new:
        conn.execute(insert(Flag.__table__), new)
    report.count(f"{table} → flags", len(rows), len(new))


def import_qc_tables(conn: Connection, src, versions: dict[str, str], record_rows: dict, report) -> None:
    """``qc_*`` tables (not ``qc_info``, which is recounted): same names and columns;
    ``reduced_id`` becomes our reduced row of the same file (of the same MuseRed record)."""
    wanted = set(versions.values())
    done = []
    for table in sorted(t for t in src.tables if t.startswith("qc_") and t != "qc_info"):
        pro_catg = table[3:]
        types = {c: _SQLITE_TYPES.get(t.split("(")[0], Text)() for c, t in src.column_types(table).items()
                 if c not in FIXED_COLUMNS}
        rows = [r for r in src.rows(table) if str(r.get("version")) in wanted]
        ensure_qc_table(conn, pro_catg, types)
        have: set[tuple] = set()
        for version in {str(r["version"]) for r in rows}:
            have |= set(existing_keys(conn, pro_catg, version))
        new = []
        for row in rows:
            item = {c: v for c, v in row.items() if c != "id"}
            item["version"] = str(row["version"])
            item["date_parsed"] = text_datetime(row.get("date_parsed"))
            item["DATE_OBS"] = text_datetime(row.get("DATE_OBS"))
            ids = record_rows.get((item["version"], row.get("reduced_id")), {})
            item["reduced_id"] = ids.get(row.get("filename")) or next(iter(ids.values()), None)
            key = tuple(item.get(k) for k in ROW_KEY)
            if key not in have:
                have.add(key)
                new.append(item)
        write_qc_rows(conn, pro_catg, new)
        done.append(pro_catg)
        report.count(table, len(rows), len(new))
    if done:
        update_qc_info(conn, done, wanted)


def import_weather(conn: Connection, src, report) -> None:
    """``weather_conditions`` (night, Time, Conditions, Comment, date) → ours."""
    if "weather_conditions" not in src.tables:
        return
    table = WeatherCondition.__table__
    known = set(conn.execute(select(table.c.night, table.c.time, table.c.conditions)).all())
    rows = src.rows("weather_conditions")
    new = []
    for row in rows:
        when = text_datetime(row.get("date"))
        if when is None or not row.get("night"):
            continue
        key = (row["night"], when, row.get("Conditions"))
        if key not in known:
            known.add(key)
            new.append({"night": row["night"], "time": when, "conditions": row.get("Conditions"),
                        "comment": row.get("Comment"), "source": f"MuseRed {src.path}"})
    if new:
        conn.execute(insert(table), new)
    report.count("weather_conditions", len(rows), len(new))


def import_gto_logs(conn: Connection, src, report) -> None:
    """``gto_logs``: same columns, one row per exposure name and version."""
    if "gto_logs" not in src.tables:
        return
    table = GtoLog.__table__
    columns = [c.name for c in table.columns if c.name != "id"]
    known = set(conn.execute(select(table.c.name, table.c.version)).all())
    rows = src.rows("gto_logs")
    new = []
    for row in rows:
        item = {c: (None if row.get(c) is None else str(row[c])) for c in columns}
        key = (item["name"], item["version"])
        if key not in known:
            known.add(key)
            new.append(item)
    if new:
        conn.execute(insert(table), new)
    report.count("gto_logs", len(rows), len(new))
