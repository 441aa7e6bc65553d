"""``musered info-exp NAME`` / ``--night NIGHT``: what was done for an exposure or a night.

For each target name (an exposure, a calibration sequence's TPL_START, a dataset
product) with records in the settings' version, MuseRed's report: the GTO logs of the
exposure (``gto_logs``, imported from MuseRed), the weather of its night (the night log's
``weather_conditions``), then each recipe that ran on it, in the order they ran, with its
date, log, output folders, product types, runtime, warnings (:mod:`musered.infowarnings`)
and, unless ``short``, the input frames it was given (``inputs``: the recipe's declared
input tags; ``calib``: the rest).

Selection is MuseRed's: ``info-exp NAME...`` picks raw exposure names (a name, a night, a
run, a glob) and ``--night`` picks the names of records on those nights; weather is shown
only for exposures, GTO logs and weather only without ``--recipe``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, inspect, select

from .db import Database, Reduced, WeatherCondition
from .errors import MuseredError
from .inforows import Snapshot, resolve_recipes
from .infotable import Heading, text_of
from .infowarnings import warning_count


@dataclass
class RecipeRun:
    """The records of one recipe for one target."""

    recipe_name: str
    name: str
    night: str | None
    date_run: dt.datetime | None
    products: list[str]
    paths: list[str]
    log_path: str | None
    runtime: float | None
    status: str
    warnings: int | None
    inputs: dict[str, list[str]] = field(default_factory=dict)
    calib: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class TargetReport:
    """What ``info-exp`` shows for one target name."""

    name: str
    night: str | None
    gto_logs: list[dict[str, Any]]
    weather: list[dict[str, Any]]
    runs: list[RecipeRun]


def target_report(settings, database: Database, name: str, recipes: Sequence[str] = (), weather: bool = True,
                  full: bool = True, *, snap: Snapshot | None = None) -> TargetReport | None:
    """The report of one target, or None when it has no record in this version
    (MuseRed's ``mr.info_exp(name)``). ``recipes`` limits it to those recipes (any
    spelling :func:`musered.inforows.resolve_recipes` accepts)."""
    snap = snap if snap is not None else Snapshot.load(settings, database)
    wanted = set(resolve_recipes(settings, snap, recipes)) if recipes else None
    by_recipe: dict[str, list[dict]] = defaultdict(list)
    for record in snap.records:
        if record["name"] == name and (wanted is None or record["recipe_name"] in wanted):
            by_recipe[record["recipe_name"]].append(record)
    if not by_recipe:
        return None
    frames = _frames(database, [r["id"] for rs in by_recipe.values() for r in rs]) if full else {}
    runs = [_recipe_run(records, frames, snap) for records in by_recipe.values()]
    runs.sort(key=lambda run: run.date_run or dt.datetime.min)
    night = runs[0].night or getattr(snap.raw_by_name.get(name), "night", None)
    return TargetReport(
        name=name, night=night,
        gto_logs=[] if recipes else gto_logs(database, name),
        weather=weather_of(database, night) if weather and not recipes and night else [],
        runs=runs,
    )


def info_exp(settings, database: Database, selectors: Sequence[str], night: bool = False,
             recipes: Sequence[str] = (), short: bool = False) -> list[TargetReport]:
    """The reports of the names the selectors pick (module docstring); MuseredError when
    no selector is given or one picks nothing."""
    from .dateselect import select_dates

    if not selectors:
        raise MuseredError("info-exp: give an exposure name, a night (with --night) or a glob")
    table = "reduced" if night else "raw"
    names = select_dates(settings, database, list(selectors), column="name", table=table,
                         include_excluded=True, option="--night" if night else "info-exp")
    snap = Snapshot.load(settings, database)
    reports = [target_report(settings, database, name, recipes, weather=not night, full=not short, snap=snap)
               for name in names]
    return [r for r in reports if r is not None]


def _recipe_run(records: list[dict], frames: dict[int, dict], snap: Snapshot) -> RecipeRun:
    first = records[0]
    declared = _declared_inputs(first["recipe_name"])
    inputs: dict[str, list[str]] = defaultdict(list)
    calib: dict[str, list[str]] = defaultdict(list)
    for record in records[:1]:  # every product of a run records the same frames
        for tag, items in sorted((frames.get(record["id"]) or {}).items()):
            target = inputs if tag in declared else calib
            for item in items if isinstance(items, list) else [items]:
                path = item.get("path") if isinstance(item, dict) else item
                target[tag].append(Path(str(path)).name if path else "?")
    paths = list(dict.fromkeys(str(r.get("output_dir") or Path(r["path"]).parent) for r in records))
    return RecipeRun(
        recipe_name=first["recipe_name"], name=first["name"], night=first["night"], date_run=first["date_run"],
        products=list(dict.fromkeys(r["PRO_CATG"] for r in records)), paths=paths, log_path=first.get("log_path"),
        runtime=first.get("runtime"), status="missing" if all(r["status"] == "missing" for r in records) else "ok",
        warnings=warning_count(first), inputs=dict(inputs), calib=dict(calib),
    )


def _declared_inputs(recipe_name: str) -> set[str]:
    try:
        from recipes.registry import all_recipes

        recipe = all_recipes().get(recipe_name)
    except Exception:  # an unregistered (imported) recipe: every frame is listed as calib
        return set()
    return set(recipe.inputs) if recipe is not None else set()


def _frames(database: Database, ids: list[int]) -> dict[int, dict]:
    with database.session() as session:
        return dict(session.execute(select(Reduced.id, Reduced.frames).where(Reduced.id.in_(ids))).all())


def gto_logs(database: Database, name: str) -> list[dict[str, Any]]:
    """The GTO log rows of an exposure (table ``gto_logs``, imported from MuseRed)."""
    if "gto_logs" not in inspect(database.engine).get_table_names():
        return []
    logs = Table("gto_logs", MetaData(), autoload_with=database.engine)
    if "name" not in logs.c:
        return []
    with database.session() as session:
        return [dict(row._mapping) for row in session.execute(select(logs).where(logs.c.name == name))]


def weather_of(database: Database, night: str) -> list[dict[str, Any]]:
    """The night log's weather observations of a night, by time."""
    with database.session() as session:
        rows = session.scalars(select(WeatherCondition).where(WeatherCondition.night == night)
                               .order_by(WeatherCondition.time)).all()
        return [{"time": r.time, "conditions": r.conditions, "comment": r.comment} for r in rows]


def report_items(report: TargetReport, full: bool = True) -> list:
    """Lines and headings of a report, MuseRed's layout (``★ Recipe: muse_bias``)."""
    items: list = ["", Heading(f" {report.name} ", style="bold reverse green"), ""]
    if report.gto_logs:
        items.append(Heading("★ GTO logs:"))
        for log in report.gto_logs:
            if log.get("flag"):
                items.append(f"- {text_of(log.get('date'))}\t{text_of(log.get('author'))}\t"
                             f"Rank {log['flag']}\t{text_of(log.get('comment'))}")
            if log.get("fdate"):
                items.append(f"- {text_of(log.get('fdate'))}\t{text_of(log.get('fauthor'))}\t\t"
                             f"{text_of(log.get('fcomment'))}")
        items.append("")
    if report.weather:
        items.append(Heading("★ Weather Conditions:"))
        for w in report.weather:
            time = w["time"].strftime("%H:%M") if isinstance(w["time"], dt.datetime) else text_of(w["time"])
            items.append(f"- {time}\t{(w['conditions'] or ''):12s}\t{w['comment'] or ''}")
        items.append("")
    for run in report.runs:
        items.append(Heading(f"★ Recipe: {run.recipe_name}"))
        items += [
            f"- date     : {text_of(run.date_run)}",
            f"- log      : {run.log_path or '--'}",
            f"- products : {', '.join(run.products)}",
            f"- path     : {', '.join(run.paths)}" + (" (files missing)" if run.status == "missing" else ""),
            f"- runtime  : {run.runtime:.1f} s" if run.runtime is not None else "- runtime  : --",
        ]
        if run.warnings:
            items.append(Heading(f"- warnings : {run.warnings}", style="bold red"))
        if full:
            for label, frames in (("inputs", run.inputs), ("calib", run.calib)):
                if frames:
                    items.append(f"- {label:8s} :")
                    width = max(len(tag) for tag in frames)
                    items += [f"  - {tag:{width}s} : {name}" for tag, names in frames.items() for name in names]
        items.append("")
    return items


def info_exp_items(settings, database: Database, selectors: Sequence[str], night: bool = False,
                   recipes: Sequence[str] = (), short: bool = False) -> list:
    """What ``info-exp`` prints: the :func:`report_items` of every report of
    :func:`info_exp`, or one line saying nothing was processed for the selection."""
    reports = info_exp(settings, database, selectors, night=night, recipes=recipes, short=short)
    items = [item for report in reports for item in report_items(report, full=not short)]
    return items or [f"no processed data in version {settings.version} for {', '.join(selectors)}"]
