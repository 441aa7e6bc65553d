"""``musered std-combine``: one STD_RESPONSE and STD_TELLURIC per run from several nights.

A standard star observed on a few nights of a run gives one response curve per night;
their combination is steadier than any one of them. :func:`std_combine` collects the
STD_RESPONSE and STD_TELLURIC products of ``from_recipe`` (default muse_standard) on the
nights selected, interpolates them onto the wavelength grid of the first one (restricted
to the range every input covers), and combines them per wavelength:

- ``median`` (default, as MuseRed): the median; error ``1.2533 · sqrt(mean(err²) / N)``
  (the standard error of a median of N Gaussian values; the plain mean formula for N ≤ 2);
- ``mean``: the inverse-variance weighted mean (equal weights when an error is 0);
  error ``1 / sqrt(Σ 1/err²)``.

The night-to-night scatter (1.4826 · MAD across the inputs, per wavelength) is kept as QC
(``ESO QC STDCOMBINE SCATTER MEDIAN|MAX``, in the unit of the column: mag for the response).

Selection: a selector is a run of the settings (all its nights) or a night
(``YYYY-MM-DD``, grouped under the run holding it); no selector means every run. With
``name``, everything selected is combined into one product of that name. Products made
from flagged or excluded exposures are left out (the recipe block's ``exclude_flags``), as
are those of other instrument modes when ``mode`` is given (inputs from several modes
without ``mode`` are an error).

Products: ``{reduced_path}/{output_dir or std_combine}/{name}/STD_RESPONSE.fits`` and
``STD_TELLURIC.fits`` (the muse_standard table formats, :mod:`recipes.fluxcal`) and a
``log.txt``, recorded in ``reduced`` as recipe ``muse_std_combine``, target ``name``
(the run), no night. Association uses them by name: ``frames: {STD_RESPONSE: GTO17,
STD_TELLURIC: GTO17}`` in the muse_scipost block (see :mod:`musered.association`).
A combination whose inputs are unchanged is not redone unless ``force``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from .db import Database, Reduced
from .errors import MuseredError

logger = logging.getLogger(__name__)

RECIPE_NAME = "muse_std_combine"
DEFAULT_FROM_RECIPE = "muse_standard"
DEFAULT_OUTPUT_DIR = "std_combine"
STD_TAGS = ("STD_RESPONSE", "STD_TELLURIC")
METHODS = ("median", "mean")
LOG_NAME = "log.txt"
# Standard error of the median of N Gaussian values, in units of sigma/sqrt(N).
MEDIAN_EFFICIENCY = 1.2533


@dataclass(frozen=True)
class StdInput:
    """One STD_RESPONSE or STD_TELLURIC product used as input."""

    tag: str
    path: Path
    name: str  # exposure name of the standard star
    night: str | None
    INS_MODE: str | None


@dataclass
class StdGroup:
    """What is combined into one product set: a run (or ``--name``), its nights and inputs."""

    name: str
    nights: list[str]
    INS_MODE: str | None = None
    inputs: dict[str, list[StdInput]] = field(default_factory=dict)

    def paths(self) -> dict[str, list[str]]:
        return {tag: sorted(str(i.path) for i in items) for tag, items in self.inputs.items()}


@dataclass
class StdResult:
    """The outcome of one group: ``status`` ok, done (already combined), dry-run or skipped."""

    name: str
    status: str
    message: str = ""
    products: list[Path] = field(default_factory=list)
    qc: dict = field(default_factory=dict)  # tag -> {QC key: value}


# --------------------------------------------------------------------------------------
# Combination (pure)


def combine_curves(curves: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], method: str = "median",
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Combine (λ [Å], value, error) curves; return (λ, value, error, scatter).

    λ is the first curve's grid within the range all curves cover; the others are
    linearly interpolated onto it. See the module docstring for the methods. ValueError
    when there is no curve, no common range or an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (valid: {', '.join(METHODS)})")
    if not curves:
        raise ValueError("nothing to combine")
    lo = max(float(np.min(c[0])) for c in curves)
    hi = min(float(np.max(c[0])) for c in curves)
    first = np.asarray(curves[0][0], dtype=float)
    grid = first[(first >= lo) & (first <= hi)]
    if grid.size < 2:
        raise ValueError(f"the inputs share no wavelength range ({lo:.0f} > {hi:.0f} Å)")
    values = np.array([np.interp(grid, c[0], c[1]) for c in curves])
    errors = np.array([np.interp(grid, c[0], c[2]) for c in curves])
    n = len(curves)
    if method == "median":
        combined = np.median(values, axis=0)
        factor = MEDIAN_EFFICIENCY if n > 2 else 1.0
        error = factor * np.sqrt(np.mean(errors**2, axis=0) / n)
    else:
        usable = np.all(errors > 0, axis=0)
        weights = np.where(usable, 1.0 / np.where(errors > 0, errors, 1.0) ** 2, 1.0)
        combined = np.sum(weights * values, axis=0) / np.sum(weights, axis=0)
        error = np.where(usable, 1.0 / np.sqrt(np.sum(weights, axis=0)), np.sqrt(np.mean(errors**2, axis=0) / n))
    scatter = 1.4826 * np.median(np.abs(values - np.median(values, axis=0)), axis=0) if n > 1 else np.zeros_like(grid)
    return grid, combined, error, scatter


# --------------------------------------------------------------------------------------
# Selection


def _night_range(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=k)).isoformat() for k in range((end - start).days + 1)]


def select_groups(settings, database: Database, selectors: Sequence[str] = (), *, name: str | None = None,
                  mode: str | None = None, from_recipe: str | None = None,
                  exclude_flags: bool | Sequence[str] = True) -> list[StdGroup]:
    """The groups to combine (see the module docstring); MuseredError for a selector that is
    neither a run nor a night, or a night outside every run without ``name``."""
    from .targets import Catalog

    runs = getattr(settings, "runs", {}) or {}
    nights_of: dict[str, list[str]] = {}
    if not selectors:
        if not runs:
            raise MuseredError("no runs in the settings: give the nights to combine (and --name)")
        selectors = list(runs)
    for selector in selectors:
        if selector in runs:
            run = runs[selector]
            nights_of.setdefault(name or selector, []).extend(_night_range(run.start_date, run.end_date))
            continue
        try:
            night = dt.date.fromisoformat(selector).isoformat()
        except ValueError:
            known = ", ".join(runs) or "none in the settings"
            raise MuseredError(f"{selector!r} is neither a run (known: {known}) nor a night (YYYY-MM-DD)") from None
        group = name or settings.run_of(night)
        if group is None:
            raise MuseredError(f"night {night} is in no run of the settings: add the run under 'runs' "
                               "or give --name")
        nights_of.setdefault(group, []).append(night)

    catalog = Catalog.from_database(database, settings, exclude_flags)
    excluded = catalog.excluded_products(settings)
    from_recipe = from_recipe or DEFAULT_FROM_RECIPE
    groups = []
    for group_name, nights in nights_of.items():
        nights = sorted(set(nights))
        wanted = set(nights)
        group = StdGroup(group_name, nights)
        latest: dict[tuple[str, str], tuple] = {}
        for p in catalog.products:
            if p.PRO_CATG not in STD_TAGS or p.recipe_name != from_recipe or p.night not in wanted:
                continue
            if p.path in excluded:
                logger.info("std-combine %s: %s not used: %s", group_name, p.path.name, excluded[p.path])
                continue
            if mode is not None and p.INS_MODE != mode:
                continue
            if not p.path.is_file():
                logger.warning("std-combine %s: %s is missing, not used", group_name, p.path)
                continue
            key = (p.PRO_CATG, p.name)  # one product per exposure: its latest run
            if key not in latest or (p.date_run or dt.datetime.min) > (latest[key][0] or dt.datetime.min):
                latest[key] = (p.date_run, StdInput(p.PRO_CATG, p.path, p.name, p.night, p.INS_MODE))
        modes = sorted({item.INS_MODE or "?" for _, item in latest.values()})
        if len(modes) > 1:
            raise MuseredError(f"std-combine {group_name}: standards of several modes ({', '.join(modes)}); "
                               "choose one with --mode")
        group.INS_MODE = modes[0] if modes else mode
        for _, item in sorted(latest.values(), key=lambda v: (v[1].night or "", v[1].name)):
            group.inputs.setdefault(item.tag, []).append(item)
        groups.append(group)
    return groups


# --------------------------------------------------------------------------------------
# Running


def std_combine(settings, database: Database, selectors: Sequence[str] = (), *, name: str | None = None,
                mode: str | None = None, method: str | None = None, params_block: str | None = None,
                force: bool = False, dry_run: bool = False) -> list[StdResult]:
    """Combine and record the groups selected; one :class:`StdResult` per group."""
    block_name = params_block or RECIPE_NAME
    recipes_section = getattr(settings, "recipes", {}) or {}
    if params_block and params_block not in recipes_section:
        raise MuseredError(f"--params {params_block}: no block recipes.{params_block} in the settings")
    block = settings.recipe_block(block_name)
    method = method or block.get("method") or (block.get("params") or {}).get("method") or "median"
    if method not in METHODS:
        raise MuseredError(f"std-combine: unknown method {method!r} (valid: {', '.join(METHODS)})")
    output_dir = (block.get("init") or {}).get("output_dir") or DEFAULT_OUTPUT_DIR
    groups = select_groups(settings, database, selectors, name=name, mode=mode,
                           from_recipe=block.get("from_recipe"), exclude_flags=block.get("exclude_flags", True))
    results = []
    for group in groups:
        responses = group.inputs.get("STD_RESPONSE", [])
        if not responses:
            nights = f"{group.nights[0]} to {group.nights[-1]}" if len(group.nights) > 1 else group.nights[0]
            results.append(StdResult(group.name, "skipped", f"no STD_RESPONSE from "
                                     f"{block.get('from_recipe') or DEFAULT_FROM_RECIPE} on nights {nights}"))
            continue
        summary = ", ".join(f"{len(items)} {tag}" for tag, items in group.inputs.items())
        if dry_run:
            lines = [f"{i.tag} {i.name} (night {i.night}): {i.path}" for items in group.inputs.values() for i in items]
            results.append(StdResult(group.name, "dry-run", f"{summary} ({method})\n  " + "\n  ".join(lines)))
            continue
        if not force and _already_done(database, block_name, group, method):
            results.append(StdResult(group.name, "done", "already combined from the same inputs (--force to redo)"))
            continue
        results.append(_combine_group(settings, database, block_name, group, method, output_dir, summary))
    return results


def _already_done(database: Database, block_name: str, group: StdGroup, method: str) -> bool:
    with database.session() as session:
        rows = session.scalars(select(Reduced).where(
            Reduced.recipe_name == block_name, Reduced.name == group.name, Reduced.status == "ok")).all()
    if not rows or not all(Path(r.path).is_file() for r in rows):
        return False
    stored = {tag: sorted(f["path"] for f in files) for tag, files in (rows[0].frames or {}).items()}
    return stored == group.paths() and (rows[0].params or {}).get("method") == method


def _md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _combine_group(settings, database: Database, block_name: str, group: StdGroup, method: str,
                   output_dir: str, summary: str) -> StdResult:
    from recipes.base import RecipeError
    from recipes.fluxcal import read_response, read_telluric, write_response, write_telluric
    from recipes.io import read_primary_header
    from recipes.provenance import add_qc, product_header

    started = time.perf_counter()
    final = Path(settings.reduced_path) / output_dir / group.name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    readers = {"STD_RESPONSE": (read_response, write_response), "STD_TELLURIC": (read_telluric, write_telluric)}
    params = {"method": method}
    written: list[tuple[str, Path, dict]] = []
    log = [f"{RECIPE_NAME} {group.name}: {method} of {summary}, nights {', '.join(group.nights)}"]
    try:
        for tag in STD_TAGS:
            items = group.inputs.get(tag, [])
            if not items:
                continue
            read, write = readers[tag]
            curves = [read(i.path) for i in items]
            lam, value, error, scatter = combine_curves(curves, method)
            if tag == "STD_TELLURIC":
                value = np.minimum(value, 1.0)  # a transmission: never above 1
            header = product_header(tag, RECIPE_NAME, params, [(i.path, tag) for i in items],
                                    template=read_primary_header(items[0].path))
            qc = {
                "NINPUT": len(items),
                "NNIGHT": len({i.night for i in items}),
                "SCATTER MEDIAN": float(np.median(scatter)),
                "SCATTER MAX": float(np.max(scatter)),
            }
            add_qc(header, [(f"ESO QC STDCOMBINE {k}", v, "") for k, v in qc.items()])
            path = write(tmp / f"{tag}.fits", header, lam, value, error)
            written.append((tag, path, {f"QC STDCOMBINE {k}": v for k, v in qc.items()}))
            log += [f"{tag}: {i.path} ({i.name}, night {i.night})" for i in items]
            log.append(f"{tag}: {lam.size} wavelengths {lam[0]:.1f}-{lam[-1]:.1f} A, night-to-night scatter "
                       f"median {qc['SCATTER MEDIAN']:.4g}, max {qc['SCATTER MAX']:.4g}")
    except (RecipeError, ValueError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MuseredError(f"std-combine {group.name}: {message}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    runtime = time.perf_counter() - started
    (tmp / LOG_NAME).write_text("\n".join(log) + "\n")
    _install(settings, database, block_name, group, params, tmp, final, written, runtime, output_dir)
    products = [final / path.name for _, path, _ in written]
    return StdResult(group.name, "ok", f"{summary} -> {final}", products, {tag: q for tag, _, q in written})


def _install(settings, database: Database, block_name: str, group: StdGroup, params: dict, tmp: Path,
             final: Path, written: list[tuple[str, Path, dict]], runtime: float, output_dir: str) -> None:
    """Move the run folder into place and replace the group's rows in one transaction."""
    import numpy

    from . import __version__

    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    tmp.rename(final)
    frames = {tag: [{"path": str(i.path), "md5": _md5(i.path)} for i in items] for tag, items in group.inputs.items()}
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    try:
        with database.session() as session:
            for row in session.scalars(select(Reduced).where(
                    Reduced.recipe_name == block_name, Reduced.name == group.name)).all():
                session.delete(row)
            for tag, path, qc in written:
                session.add(Reduced(
                    recipe_name=block_name, name=group.name, PRO_CATG=tag, path=str(final / path.name), night=None,
                    INS_MODE=group.INS_MODE, version=str(settings.version),
                    revision=None if getattr(settings, "revision", None) is None else str(settings.revision),
                    date_run=now, params=dict(params), frames=frames, qc=qc, status="ok", runtime=runtime,
                    log_path=str(final / LOG_NAME), output_dir=output_dir, ifus=[],
                    software={"musered": __version__, "numpy": numpy.__version__},
                ))
    except Exception:
        shutil.rmtree(final, ignore_errors=True)
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
