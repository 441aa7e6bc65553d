"""The runs of ``musered report``: the ``reduced`` table grouped per recipe run, and QC.

A :class:`Run` is one recipe on one target (recipe block, target name, output folder) with
the products (:class:`ProductRow`) it wrote; :func:`collect_runs` reads them all, in night
and step order. :func:`summarize_qc` shortens a run's QC keywords for the page (keys that
differ only by a slice, IFU or input number become one row).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from .db import Database, Reduced

# A numbered word of a QC key (CHAN01, SLICE12, INPUT3, MASTER4, THRU0500): keys that differ
# only by such numbers are summarised together (48 slices, 24 IFUs, 4 quadrants...).
_NUMBERED = re.compile(r"\b([A-Z][A-Z_]*?)?(\d+)\b")


@dataclass
class ProductRow:
    """One product file of a run: its PRO.CATG, path, QC keywords and input frames."""

    PRO_CATG: str
    path: Path
    qc: dict
    frames: dict = field(default_factory=dict)  # input tag -> [{path, md5}]


@dataclass
class Run:
    """The products of one recipe run on one target."""

    recipe_name: str
    name: str
    night: str | None
    output_dir: str | None
    status: str
    runtime: float | None
    date_run: dt.datetime | None
    log_path: Path | None
    OBJECT: str | None
    products: list[ProductRow] = field(default_factory=list)

    @property
    def qc(self) -> dict:
        """The QC keywords of all the run's products, merged."""
        out: dict = {}
        for product in self.products:
            out.update(product.qc or {})
        return out

    def first(self, *tags: str) -> ProductRow | None:
        """The first existing product with one of ``tags`` (in the order given)."""
        for tag in tags:
            for product in self.products:
                if product.PRO_CATG == tag and product.path.is_file():
                    return product
        return None

    @property
    def slug(self) -> str:
        """A file- and anchor-safe name of the run (its PNG name and HTML id)."""
        text = f"{self.recipe_name}_{self.output_dir or ''}_{self.name}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def collect_runs(database: Database, version: str | None = None) -> list[Run]:
    """Every run recorded in ``reduced`` for reduction ``version`` (None: every version;
    the report passes the settings' version), sorted by night (dataset runs last), recipe
    order and target name."""
    query = select(Reduced).order_by(Reduced.id)
    if version is not None:
        query = query.where(Reduced.version == str(version))
    with database.session() as session:
        rows = session.scalars(query).all()
    runs: dict[tuple, Run] = {}
    for row in rows:
        key = (row.recipe_name, row.name, row.output_dir or "", row.night)
        run = runs.get(key)
        if run is None:
            run = runs[key] = Run(
                recipe_name=row.recipe_name, name=row.name, night=row.night, output_dir=row.output_dir,
                status=row.status, runtime=row.runtime, date_run=row.date_run,
                log_path=Path(row.log_path) if row.log_path else None, OBJECT=row.OBJECT,
            )
        elif row.status != "ok":
            run.status = row.status
        run.products.append(ProductRow(row.PRO_CATG, Path(row.path), dict(row.qc or {}), dict(row.frames or {})))
    order = recipe_order()
    return sorted(runs.values(), key=lambda r: (r.night is None, r.night or "", order.get(r.recipe_name, 99),
                                                r.recipe_name, r.name, r.output_dir or ""))


def step_label(recipe_name: str) -> str:
    """A column label: the recipe's step name (``bias``), else the block name as it is."""
    from recipes.registry import all_recipes

    recipe = all_recipes().get(recipe_name)
    return recipe.step_name if recipe is not None else recipe_name


def recipe_order() -> dict[str, int]:
    """Recipe name -> its rank in the step order of the registry (others follow by name)."""
    from recipes.registry import all_recipes

    return {name: i for i, name in enumerate(all_recipes())}


def summarize_qc(qc: Mapping[str, object], limit: int = 40) -> list[tuple[str, str]]:
    """(key, value text) rows: keys that differ only by a number (slice, IFU, input...) are
    merged into one row ``median (min … max, N values)``; at most ``limit`` rows."""
    groups: dict[str, list] = defaultdict(list)
    for key, value in qc.items():
        groups[_NUMBERED.sub(lambda m: f"{m.group(1) or ''}*", key)].append((key, value))
    rows = []
    for pattern in sorted(groups):
        members = groups[pattern]
        values = [v for _, v in members]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(members) == 1:
            rows.append((members[0][0], _fmt(values[0])))
        elif len(numbers) == len(values):
            import numpy as np

            arr = np.array(numbers)
            rows.append((pattern, f"{_fmt(float(np.median(arr)))} ({_fmt(float(arr.min()))} … "
                                  f"{_fmt(float(arr.max()))}, {arr.size} values)"))
        else:
            rows.append((pattern, ", ".join(sorted({_fmt(v) for v in values}))[:120]))
    if len(rows) > limit:
        rows = rows[:limit] + [("…", f"{len(rows) - limit} more QC rows")]
    return rows


def _fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
