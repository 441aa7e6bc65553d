"""Run one recipe step over its targets: associate, execute, install, record.

The process-calib / process-exp / exp-* commands are thin wrappers on :func:`run_step`::

    summary = run_step(
        settings, database, recipe,          # Settings, Database, recipes.base.Recipe
        selection=["2017-06-16*"],           # nights, runs, datasets, TPL_STARTs, names, globs; None = all
        params_block=None,                   # --params BLOCK (default: the block named after the recipe)
        cli_params=None,                     # {param: value} from the command line
        force=False,                         # re-run targets already done
        dry_run=False,                       # print the association of every target, run nothing
        executor=None,                       # an executors.Executor to share between steps;
        jobs=None,                           #   else one from settings.executor and --jobs
        progress=True,                       # one rich progress bar for the step
        console=None,                        # rich Console for the dry-run text, bar and table
        report=True,                         # print the summary table at the end
        dataset_suffix="",                   # dataset targets: name suffix (e.g. "_drs")
    )
    if summary.failed:
        raise MuseredError(summary.failure_message())   # exit non-zero naming what failed

    # several steps on one executor (process-calib: bias, flat, wavecal, lsf, twilight)
    summaries = run_steps(settings, database, [bias, flat], selection, jobs=2, force=False)
    if (message := failure_message(summaries)):
        raise MuseredError(message)

For each selected target (see :mod:`musered.targets`), in time order:

1. skip it when done: ``reduced`` holds status-ok products of this block (recipe name or
   ``--params`` block) and target inside its final folder, and those files exist
   (``--force`` re-runs);
2. associate (:mod:`musered.association`); a missing calibration fails this target only;
3. merge the parameters once per step: recipe defaults < ``recipes.common.params`` <
   the block's ``params`` < ``cli_params`` (:meth:`Settings.recipe_params`);
4. run ``recipe.run(frames, params, tmpdir)`` on the executor in a sibling folder
   ``{final}.tmp-XXXX``; the ``recipes`` loggers of that run go to ``log.txt`` there;
5. on success, rename the folder into place (an older one is replaced only after the new
   one is in place, and restored if recording fails) and record every product in
   ``reduced`` in one transaction, with provenance: merged params, inputs and
   calibrations with md5 (``frames``), software versions, runtime, ``log.txt`` path,
   QC, night, OBJECT, INS_MODE, TPL_START, DATE_OBS, settings version and revision.

A failure (``RecipeError``: its one-line message; any other exception: the message and
a traceback saved under ``{reduced_path}/logs/failed/``) leaves no folder and no row;
the other targets go on. Only this (parent) process writes to the database.

Reduced folders: ``{reduced_path}/{target.folder}``, e.g.
``MASTER_BIAS/2017-06-16T10:40:27.WFM-NOAO-N`` or ``scibasic/2017-06-16T01:34:56.867``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from recipes.base import Product, Recipe, RecipeError

from . import __version__
from .association import Association, associate, describe
from .db.models import Reduced
from .errors import MuseredError
from .executors import Executor, make_executor
from .targets import Catalog, Target, check_selection, discover_targets, select_targets, target_matches

logger = logging.getLogger(__name__)

LOG_NAME = "log.txt"
RECIPES_LOGGER = "recipes"


# ---------------------------------------------------------------- results

@dataclass
class TargetResult:
    """What happened to one target: ``ok``, ``failed``, ``done`` (already reduced,
    skipped), ``excluded`` (its raw files are excluded or flagged) or ``dry-run``."""

    name: str
    folder: str
    status: str
    reason: str = ""
    runtime: float | None = None
    qc: dict[str, Any] = field(default_factory=dict)
    products: list[Path] = field(default_factory=list)
    log_path: Path | None = None


@dataclass
class StepSummary:
    """The outcome of :func:`run_step`, in target order."""

    recipe: str            # block name: the recipe name or the --params block
    results: list[TargetResult] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def failure_message(self) -> str:
        """One line naming every failed target and why."""
        parts = [f"{r.name} ({r.reason})" for r in self.failed]
        return f"{self.recipe}: {len(parts)} target(s) failed: " + "; ".join(parts)

    def table(self, summary_qc: Sequence[tuple[str, str]] = ()):
        """A rich Table: target, status, time, main QC values (see :func:`main_qc`)."""
        from rich.table import Table

        table = Table(title=f"{self.recipe}: {self.count('ok')} ok, {self.count('failed')} failed, "
                            f"{self.count('done')} already done, {self.count('excluded')} excluded")
        for column in ("target", "status", "time", "QC / reason"):
            table.add_column(column)
        for r in self.results:
            runtime = f"{r.runtime:.1f} s" if r.runtime is not None else "--"
            detail = r.reason if r.status != "ok" else "  ".join(
                f"{k}={v}" for k, v in main_qc(r.qc, summary_qc).items())
            table.add_row(r.name, r.status, runtime, detail)
        return table


_PER_INPUT = re.compile(r"\bINPUT\d*\b")  # QC of one input frame (DRS: QC BIAS INPUTi ...)


def main_qc(qc: Mapping[str, Any], summary_qc: Sequence[tuple[str, str]] = (), n: int = 3) -> dict[str, str]:
    """The QC values worth a glance: per (label, pattern) of the recipe's ``summary_qc``,
    the mean of the matching numeric values (``"2.51 (mean of 8)"``); without a
    declaration, the first ``n`` keys that are not about one input frame."""
    out: dict[str, str] = {}
    for label, pattern in summary_qc:
        values = [v for k, v in qc.items() if fnmatch.fnmatchcase(k, pattern)
                  and isinstance(v, (int, float)) and not isinstance(v, bool)]
        if values:
            mean = sum(values) / len(values)
            out[label] = _fmt(mean) + (f" (mean of {len(values)})" if len(values) > 1 else "")
    if not summary_qc:
        keys = [k for k in qc if not _PER_INPUT.search(k)] or list(qc)
        out = {k: _fmt(qc[k]) for k in keys[:n]}
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------- worker side

@dataclass
class Job:
    """Everything a worker needs for one run (picklable)."""

    recipe: Recipe
    frames: dict[str, list[Path]]
    params: dict[str, Any]
    outdir: Path
    loglevel: int = logging.INFO


@dataclass
class JobResult:
    ok: bool
    runtime: float
    products: list[Product] = field(default_factory=list)
    reason: str = ""
    traceback: str = ""
    md5: dict[str, str] = field(default_factory=dict)


def execute(job: Job) -> JobResult:
    """Run a recipe in a worker; never raises (failures come back as a JobResult)."""
    start = time.perf_counter()
    with capture_recipe_log(job.outdir / LOG_NAME, job.loglevel):
        try:
            products = job.recipe.run(job.frames, dict(job.params), job.outdir)
            if not isinstance(products, list) or not all(isinstance(p, Product) for p in products):
                raise TypeError(f"recipe {job.recipe.name} must return a list of Product, "
                                f"not {type(products).__name__}")
        except RecipeError as exc:
            logging.getLogger(RECIPES_LOGGER).error("%s", exc)
            return JobResult(False, time.perf_counter() - start, reason=_one_line(exc) or "RecipeError")
        except Exception as exc:  # a crash: keep the traceback for the failure log
            logging.getLogger(RECIPES_LOGGER).error("%s", exc, exc_info=True)
            return JobResult(False, time.perf_counter() - start,
                             reason=f"{type(exc).__name__}: {_one_line(exc)}",
                             traceback=traceback.format_exc())
    runtime = time.perf_counter() - start
    md5 = {str(p): file_md5(p) for paths in job.frames.values() for p in paths}
    return JobResult(True, runtime, products=products, md5=md5)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


_md5_cache: dict[tuple[str, int, int], str] = {}
_md5_lock = threading.Lock()


def file_md5(path: Path | str, chunk: int = 1 << 22) -> str:
    """MD5 hex digest of a file, cached per process by (path, size, mtime)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _md5_lock:
        if key in _md5_cache:
            return _md5_cache[key]
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    with _md5_lock:
        _md5_cache[key] = digest.hexdigest()
    return _md5_cache[key]


_capture_lock = threading.Lock()
_capture_state: dict[str, Any] = {"count": 0}


@contextmanager
def capture_recipe_log(path: Path, level: int = logging.INFO):
    """Copy the records of the ``recipes`` loggers emitted by this thread to ``path``.

    The ``recipes`` logger is lowered to ``level`` for the run, while its existing
    handlers keep the level they showed before, so the terminal sees no change. The
    thread filter keeps concurrent runs in one process (Dask threads) apart.
    """
    log = logging.getLogger(RECIPES_LOGGER)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == thread)
    with _capture_lock:
        if _capture_state["count"] == 0:
            effective = log.getEffectiveLevel()
            _capture_state["level"] = log.level
            _capture_state["handlers"] = [h for h in log.handlers if h.level == logging.NOTSET]
            for h in _capture_state["handlers"]:
                h.setLevel(effective)
            log.setLevel(min(level, effective))
        _capture_state["count"] += 1
        log.addHandler(handler)
    try:
        yield
    finally:
        with _capture_lock:
            log.removeHandler(handler)
            _capture_state["count"] -= 1
            if _capture_state["count"] == 0:
                log.setLevel(_capture_state.pop("level"))
                for h in _capture_state.pop("handlers"):
                    h.setLevel(logging.NOTSET)
        handler.close()


# ---------------------------------------------------------------- parent side

def run_step(settings, database, recipe: Recipe, selection: Sequence[str] | None = None, *,
             params_block: str | None = None, cli_params: Mapping[str, Any] | None = None,
             force: bool = False, dry_run: bool = False, executor: Executor | None = None,
             jobs: int | None = None, progress: bool = True, console=None, report: bool = True,
             dataset_suffix: str = "") -> StepSummary:
    """Run ``recipe`` on the selected targets (see the module docstring)."""
    from rich.console import Console

    console = console or Console()
    block_name = params_block or recipe.name
    params = settings.recipe_params(recipe, params_block, cli_params)
    block = settings.recipe_block(block_name)
    catalog = Catalog.from_database(database, settings, block.get("exclude_flags", True))
    check_selection(selection, catalog, settings)
    targets, skipped = discover_targets(recipe, catalog, settings, block, dataset_suffix)
    targets = select_targets(targets, selection, settings)
    summary = StepSummary(recipe=block_name)
    for s in skipped:
        if not selection or any(_skipped_matches(s, sel, settings) for sel in selection):
            summary.results.append(TargetResult(s.name, "", "excluded", s.reason))

    reduced_path = Path(settings.reduced_path)
    results: dict[int, TargetResult] = {}
    work: list[tuple[int, Target, Association]] = []
    for index, target in enumerate(targets):
        final = reduced_path / target.folder
        if not force and _is_done(catalog, block_name, target, final):
            results[index] = TargetResult(target.name, str(target.folder), "done", "already done")
            if dry_run:
                console.print(f"{target.name} -> {target.folder}: already done, skipped (--force to redo)",
                              markup=False, highlight=False)
            continue
        try:
            assoc = associate(recipe, target, catalog, settings, block)
        except MuseredError as exc:
            results[index] = TargetResult(target.name, str(target.folder), "failed", str(exc))
            if not dry_run:
                logger.error("%s %s: %s", block_name, target.name, exc)
            else:
                console.print(f"{target.name} ({target.kind}, night {target.night}, "
                              f"{target.INS_MODE}) -> {target.folder}\n  ERROR: {exc}",
                              markup=False, highlight=False)
            continue
        problem = _input_problem(recipe, assoc)
        if problem:
            results[index] = TargetResult(target.name, str(target.folder), "failed", problem)
            if not dry_run:
                logger.error("%s %s: %s", block_name, target.name, problem)
                continue
        if dry_run:
            summary.associations.append(assoc)
            console.print("\n".join(describe([assoc])), markup=False, highlight=False)
            console.print(f"  params ({block_name}): "
                          + (", ".join(f"{k}={v}" for k, v in params.items()) or "none"),
                          markup=False, highlight=False)
            if not problem:
                results[index] = TargetResult(target.name, str(target.folder), "dry-run", "not run (--dry-run)")
            else:
                console.print(f"  ERROR: {problem}", markup=False, highlight=False)
            continue
        work.append((index, target, assoc))

    if work:
        results.update(_execute_all(settings, database, recipe, block_name, params, work,
                                    executor, jobs, progress, console))
    summary.results.extend(results[i] for i in sorted(results))
    if report and not dry_run and summary.results:
        console.print(summary.table(recipe.summary_qc))
    elif report and not summary.results:
        console.print(f"{block_name}: nothing to do" + (f" for {', '.join(selection)}" if selection else ""),
                      markup=False, highlight=False)
    return summary


def run_steps(settings, database, recipes: Sequence[Recipe], selection: Sequence[str] | None = None, *,
              jobs: int | None = None, executor: Executor | None = None, **options: Any) -> list[StepSummary]:
    """Run several steps in order (bias, flat, wavecal ...) on one shared executor.

    Each step sees the products of the previous ones (the catalog is re-read per step); a
    failed target does not stop the following steps. ``options`` go to :func:`run_step`
    (``force``, ``dry_run``, ``params_block``, ``cli_params``, ``progress``, ``console``).
    The caller raises ``MuseredError(failure_message(summaries))`` when any target failed.
    """
    own = executor is None and not options.get("dry_run")
    if own:
        executor = make_executor(getattr(settings, "executor", None), jobs)
    try:
        return [run_step(settings, database, recipe, selection, executor=executor, jobs=jobs, **options)
                for recipe in recipes]
    finally:
        if own:
            executor.close()


def failure_message(summaries: Sequence[StepSummary]) -> str | None:
    """One line naming the failed targets of every step, or None when all went well."""
    failed = [s.failure_message() for s in summaries if s.failed]
    return " | ".join(failed) if failed else None


def _skipped_matches(skipped, selector: str, settings) -> bool:
    probe = Target(kind="", name=skipped.name, output_dir="", folder=Path(), night=skipped.night, DATE_OBS=None,
                   INS_MODE=None, TPL_START=None, OBJECT=None)
    return target_matches(probe, selector, settings)


def _input_problem(recipe: Recipe, assoc: Association) -> str | None:
    """Checks worth doing before a run: the declared minimum of raw inputs, and every
    file still on disk (a raw file deleted since update-db)."""
    n_inputs = sum(len(assoc.frames.get(tag, [])) for tag in recipe.inputs)
    if n_inputs < recipe.min_inputs:
        return (f"{recipe.name} needs at least {recipe.min_inputs} {'/'.join(recipe.inputs)} "
                f"frame(s), found {n_inputs}")
    for tag, paths in assoc.frames.items():
        for path in paths:
            if not Path(path).is_file():
                return f"{tag} file {path} does not exist (deleted since update-db?)"
    return None


def _is_done(catalog: Catalog, block_name: str, target: Target, final: Path) -> bool:
    products = [p for p in catalog.products
                if p.recipe_name == block_name and p.name == target.name and p.path.is_relative_to(final)]
    return bool(products) and all(p.path.is_file() for p in products)


def _recipes_loglevel() -> int:
    return min(logging.INFO, logging.getLogger(RECIPES_LOGGER).getEffectiveLevel())


def _execute_all(settings, database, recipe, block_name, params, work, executor, jobs,
                 progress, console) -> dict[int, TargetResult]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    own_executor = executor is None
    executor = executor or make_executor(getattr(settings, "executor", None), jobs)
    reduced_path = Path(settings.reduced_path)
    results: dict[int, TargetResult] = {}
    pending: dict[Any, tuple[int, Target, Association, Path, Path]] = {}
    umask = os.umask(0o022)
    os.umask(umask)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, disable=not progress, transient=False)
    try:
        for index, target, assoc in work:
            final = reduced_path / target.folder
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=final.parent))
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the final folder must not be
            job = Job(recipe, assoc.frames, params, tmp, _recipes_loglevel())
            pending[executor.submit(execute, job)] = (index, target, assoc, tmp, final)
        with bar:
            task = bar.add_task(f"{block_name} ({executor.describe()})", total=len(pending))
            for future in executor.as_completed(list(pending)):
                index, target, assoc, tmp, final = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker itself died (pickling, lost process)
                    outcome = JobResult(False, 0.0, reason=f"{type(exc).__name__}: {_one_line(exc)}",
                                        traceback=traceback.format_exc())
                try:
                    results[index] = _conclude(settings, database, recipe, block_name, params,
                                               target, assoc, tmp, final, outcome)
                except Exception as exc:  # a bug here must not stop the other targets
                    shutil.rmtree(tmp, ignore_errors=True)
                    logger.error("%s %s: failed while installing: %s", block_name, target.name, exc,
                                 exc_info=True)
                    results[index] = TargetResult(target.name, str(target.folder), "failed",
                                                  f"{type(exc).__name__}: {_one_line(exc)}")
                bar.advance(task)
    finally:
        if own_executor:  # first let running work stop, then remove its folders
            executor.close()
        for _index, _target, _assoc, tmp, _final in pending.values():
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def _conclude(settings, database, recipe, block_name, params, target, assoc, tmp, final,
              outcome: JobResult) -> TargetResult:
    folder = str(target.folder)
    if outcome.ok:
        try:
            products = _check_products(recipe, outcome.products, tmp)
            paths = _install(settings, database, block_name, params, target, assoc, tmp, final,
                             products, outcome)
        except _InstallError as exc:
            outcome = JobResult(False, outcome.runtime, reason=str(exc), traceback=exc.details)
        else:
            qc: dict[str, Any] = {}
            for product, _rel in products:
                qc.update(product.qc)
            logger.info("%s %s: ok (%.1f s)", block_name, target.name, outcome.runtime)
            return TargetResult(target.name, folder, "ok", runtime=outcome.runtime, qc=qc,
                                products=paths, log_path=final / LOG_NAME)
    log_path = _failure_log(settings, block_name, target, tmp, outcome)
    shutil.rmtree(tmp, ignore_errors=True)
    reason = outcome.reason + (f" (traceback in {log_path})" if outcome.traceback and log_path else "")
    logger.error("%s %s: failed: %s", block_name, target.name, reason)
    return TargetResult(target.name, folder, "failed", reason, runtime=outcome.runtime,
                        log_path=log_path)


class _InstallError(Exception):
    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


def _check_products(recipe: Recipe, products: list[Product], tmp: Path) -> list[tuple[Product, Path]]:
    """Each product as (product, path relative to the run folder); the contract is checked."""
    if not products:
        raise _InstallError(f"recipe {recipe.name} wrote no products")
    out = []
    root = tmp.resolve()
    for product in products:
        path = Path(product.path)
        path = (path if path.is_absolute() else root / path).resolve()
        if not path.is_relative_to(root):
            raise _InstallError(f"recipe {recipe.name} returned {path}, outside its output folder")
        if not path.is_file():
            raise _InstallError(f"recipe {recipe.name} returned {path.name}, which it did not write")
        if product.tag not in recipe.outputs:
            raise _InstallError(f"recipe {recipe.name} returned tag {product.tag}, not one of its "
                                f"outputs ({', '.join(recipe.outputs)})")
        out.append((product, path.relative_to(root)))
    return out


def _install(settings, database, block_name, params, target, assoc, tmp, final, products,
             outcome) -> list[Path]:
    """Rename the run folder into place and record its products in one transaction."""
    old = None
    try:
        if final.exists():
            old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(old)
        tmp.rename(final)
    except OSError as exc:
        if old is not None and not final.exists():
            old.rename(final)
        raise _InstallError(f"could not move the products into {final}: {exc.strerror or exc}",
                            traceback.format_exc()) from None
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    frames = {tag: [{"path": str(p), "md5": outcome.md5.get(str(p))} for p in paths]
              for tag, paths in assoc.frames.items()}
    software = _software()
    paths = [final / rel for _product, rel in products]
    try:
        with database.session() as session:
            stale = session.scalars(select(Reduced).where(
                Reduced.recipe_name == block_name, Reduced.name == target.name)).all()
            for row in stale:
                if Path(row.path).is_relative_to(final):
                    session.delete(row)
            for (product, _rel), path in zip(products, paths):
                session.add(Reduced(
                    recipe_name=block_name, name=target.name, PRO_CATG=product.tag, path=str(path),
                    night=target.night, DATE_OBS=target.DATE_OBS, OBJECT=target.OBJECT,
                    INS_MODE=target.INS_MODE, TPL_START=target.TPL_START,
                    version=str(settings.version), revision=_text(getattr(settings, "revision", None)),
                    date_run=now, params=_json_safe(params), frames=frames,
                    qc=_json_safe(dict(product.qc)), status="ok", runtime=outcome.runtime,
                    log_path=str(final / LOG_NAME), output_dir=target.output_dir,
                    ifus=[int(i) for i in product.ifus], software=software,
                ))
    except Exception as exc:
        shutil.rmtree(final, ignore_errors=True)
        if old is not None:
            old.rename(final)
        raise _InstallError(f"could not record the products in the database: {_one_line(exc)}",
                            traceback.format_exc()) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return paths


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _software() -> dict[str, str]:
    import numpy

    import recipes

    return {"musered": __version__, "recipes": getattr(recipes, "__version__", "?"),
            "numpy": numpy.__version__}


def _json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN/inf to None, paths to text."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _failure_log(settings, block_name: str, target: Target, tmp: Path, outcome: JobResult) -> Path | None:
    """Save reason, traceback and the run's recipe log under logs/failed/; None if it fails."""
    folder = Path(settings.reduced_path) / "logs" / "failed"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = folder / f"{block_name}.{target.folder.name}.{stamp}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        recipe_log = (tmp / LOG_NAME).read_text(encoding="utf-8", errors="replace") \
            if (tmp / LOG_NAME).is_file() else ""
        path.write_text(f"{block_name} {target.name}: {outcome.reason}\n\n"
                        + (outcome.traceback + "\n" if outcome.traceback else "")
                        + ("--- recipe log ---\n" + recipe_log if recipe_log else ""), encoding="utf-8")
    except OSError as exc:
        logger.warning("could not write the failure log %s: %s", path, exc)
        return None
    return path
