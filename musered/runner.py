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
        inputs_query=None,                   # only inputs matching it: {"night": [...]} (exp-align --date)
        exposure_selection=None,             # dataset targets: musered.selection.ExposureSelection
    )
    if summary.failed:
        raise MuseredError(summary.failure_message())   # exit non-zero naming what failed

    # several steps on one executor (process-calib: bias, flat, wavecal, lsf, twilight)
    summaries = run_steps(settings, database, [bias, flat], selection, jobs=2, force=False)
    if (message := failure_message(summaries)):
        raise MuseredError(message)

For each selected target (see :mod:`musered.targets`), in time order:

1. skip it when done: ``reduced`` holds status-ok products of this block (recipe name or
   ``--params`` block), target and settings ``version`` inside its final folder (or the
   same folder of another version's tree, for records copied by ``copy-reduced``), those
   files exist, and they were made from the same inputs with the same parameters
   by the same engine (``--force`` re-runs);
2. associate (:mod:`musered.association`); a missing calibration fails this target only;
3. merge the parameters once per step: recipe defaults < ``recipes.common.params`` <
   the block's ``params`` < ``cli_params`` (:meth:`Settings.recipe_params`);
4. run ``recipe.run(frames, params, tmpdir)`` (or, with ``engine: drs`` in the block or
   in ``recipes.common``, the DRS recipe through esorex: :func:`recipes.drs.run_esorex`)
   on the executor in a sibling folder
   ``{final}.tmp-XXXX``; ``log.txt`` there starts with the association (frames chosen and
   why, and for a dataset or run the exposures used and those left out, with the reason),
   then gets the records of the ``recipes`` loggers of that run;
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

import fnmatch
import logging
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.base import Recipe

from .association import Association, associate, describe
from .errors import MuseredError
from .executors import Executor, make_executor
from .flags import block_exclude_flags
from .install import InstallError, check_products, done_records, failure_log, install_products, is_done
from .catalog import Catalog
from .targets import Target, check_selection, discover_targets, select_targets, summarize_left_out, target_matches
from .worker import LOG_NAME, RECIPES_LOGGER, Job, JobResult, execute, one_line

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- results

@dataclass
class TargetResult:
    """What happened to one target: ``ok``, ``failed``, ``done`` (already reduced,
    skipped), ``excluded`` (its raw files are excluded, or flagged with the block's
    ``exclude_flags``) or ``dry-run``. ``left_out``: for a dataset or run target, the
    exposures not used and why."""

    name: str
    folder: str
    status: str
    reason: str = ""
    runtime: float | None = None
    qc: dict[str, Any] = field(default_factory=dict)
    products: list[Path] = field(default_factory=list)
    log_path: Path | None = None
    left_out: dict[str, str] = field(default_factory=dict)


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
            if r.left_out:
                detail += f"  left out: {summarize_left_out(r.left_out)}"
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

# ---------------------------------------------------------------- parent side

def run_step(settings, database, recipe: Recipe, selection: Sequence[str] | None = None, *,
             params_block: str | None = None, cli_params: Mapping[str, Any] | None = None,
             force: bool = False, dry_run: bool = False, executor: Executor | None = None,
             jobs: int | None = None, progress: bool = True, console=None, report: bool = True,
             dataset_suffix: str = "", inputs_query: Mapping[str, Any] | None = None,
             exposure_selection=None) -> StepSummary:
    """Run ``recipe`` on the selected targets (see the module docstring)."""
    from rich.console import Console

    console = console or Console()
    block_name = params_block or recipe.name
    params = settings.recipe_params(recipe, params_block, cli_params)
    block = settings.recipe_block(block_name)
    engine = settings.recipe_engine(recipe, params_block)
    # MuseRed's flag policy: flagged exposures are used unless the block says exclude_flags
    catalog = Catalog.from_database(database, settings, block_exclude_flags(settings, block_name))
    check_selection(selection, catalog, settings)
    targets, skipped = discover_targets(recipe, catalog, settings, block, dataset_suffix, inputs_query,
                                        exposure_selection)
    targets = select_targets(targets, selection, settings)
    summary = StepSummary(recipe=block_name)
    for s in skipped:
        if not selection or any(_skipped_matches(s, sel, settings) for sel in selection):
            summary.results.append(TargetResult(s.name, "", "excluded", s.reason))

    reduced_path = Path(settings.reduced_path)
    results: dict[int, TargetResult] = {}
    work: list[tuple[int, Target, Association]] = []
    records = {} if force else done_records(database, block_name, settings.version)
    for index, target in enumerate(targets):
        final = reduced_path / target.folder
        if not force and is_done(records, recipe, target, final, params, engine):
            results[index] = TargetResult(target.name, str(target.folder), "done", "already done",
                                          left_out=target.left_out)
            if dry_run:
                console.print(f"{target.name} -> {target.folder}: already done, skipped (--force to redo)",
                              markup=False, highlight=False, soft_wrap=True)
            continue
        try:
            if target.problem:
                raise MuseredError(target.problem)
            assoc = associate(recipe, target, catalog, settings, block, block_name)
        except MuseredError as exc:
            results[index] = TargetResult(target.name, str(target.folder), "failed", str(exc),
                                          left_out=target.left_out)
            if not dry_run:
                logger.error("%s %s: %s", block_name, target.name, exc)
            else:
                console.print(f"{target.name} ({target.kind}, night {target.night}, "
                              f"{target.INS_MODE}) -> {target.folder}\n  ERROR: {exc}",
                              markup=False, highlight=False, soft_wrap=True)
            continue
        problem = _input_problem(recipe, assoc)
        if problem:
            results[index] = TargetResult(target.name, str(target.folder), "failed", problem,
                                          left_out=target.left_out)
            if not dry_run:
                logger.error("%s %s: %s", block_name, target.name, problem)
                continue
        if dry_run:
            summary.associations.append(assoc)
            console.print("\n".join(describe([assoc])), markup=False, highlight=False, soft_wrap=True)
            if engine != "musered":
                console.print(f"  engine: {engine} ({_esorex_text(settings)})", markup=False, highlight=False)
            console.print(f"  params ({block_name}): "
                          + (", ".join(f"{k}={v}" for k, v in params.items()) or "none"),
                          markup=False, highlight=False, soft_wrap=True)
            if not problem:
                results[index] = TargetResult(target.name, str(target.folder), "dry-run", "not run (--dry-run)",
                                              left_out=target.left_out)
            else:
                console.print(f"  ERROR: {problem}", markup=False, highlight=False, soft_wrap=True)
            continue
        work.append((index, target, assoc))

    if work:
        if engine == "drs" and shutil.which(settings.esorex) is None:
            raise MuseredError(f"{settings.where}: {block_name} runs with engine drs, but esorex "
                               f"{settings.esorex!r} is not found (install esorex and cpl-plugin-muse, "
                               "or set the esorex key to its path)")
        results.update(_execute_all(settings, database, recipe, block_name, params, work,
                                    executor, jobs, progress, console, engine))
    summary.results.extend(results[i] for i in sorted(results))
    if report and not dry_run and summary.results:
        console.print(summary.table(recipe.summary_qc))
    elif report and not summary.results:
        console.print(f"{block_name}: nothing to do" + (f" for {', '.join(selection)}" if selection else ""),
                      markup=False, highlight=False, soft_wrap=True)
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


def _recipes_loglevel() -> int:
    return min(logging.INFO, logging.getLogger(RECIPES_LOGGER).getEffectiveLevel())


def _esorex_text(settings) -> str:
    found = shutil.which(settings.esorex)
    return f"esorex {found}" if found else f"esorex {settings.esorex!r} not found"


def _execute_all(settings, database, recipe, block_name, params, work, executor, jobs,
                 progress, console, engine: str = "musered") -> dict[int, TargetResult]:
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
            write_log_header(tmp / LOG_NAME, block_name, settings.version, assoc)
            job = Job(recipe, assoc.frames, params, tmp, _recipes_loglevel(), engine, settings.esorex)
            pending[executor.submit(execute, job)] = (index, target, assoc, tmp, final)
        with bar:
            label = f"{block_name}" + (f" [{engine}]" if engine != "musered" else "")
            task = bar.add_task(f"{label} ({executor.describe()})", total=len(pending))
            for future in executor.as_completed(list(pending)):
                index, target, assoc, tmp, final = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker itself died (pickling, lost process)
                    outcome = JobResult(False, 0.0, reason=f"{type(exc).__name__}: {one_line(exc)}",
                                        traceback=traceback.format_exc())
                try:
                    results[index] = _conclude(settings, database, recipe, block_name, params,
                                               target, assoc, tmp, final, outcome)
                except Exception as exc:  # a bug here must not stop the other targets
                    shutil.rmtree(tmp, ignore_errors=True)
                    logger.error("%s %s: failed while installing: %s", block_name, target.name, exc,
                                 exc_info=True)
                    results[index] = TargetResult(target.name, str(target.folder), "failed",
                                                  f"{type(exc).__name__}: {one_line(exc)}")
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
            products = check_products(recipe, outcome.products, tmp)
            paths = install_products(settings, database, block_name, params, target, assoc, tmp, final,
                             products, outcome)
        except InstallError as exc:
            outcome = JobResult(False, outcome.runtime, reason=str(exc), traceback=exc.details)
        else:
            qc: dict[str, Any] = {}
            for product, _rel in products:
                qc.update(product.qc)
            logger.info("%s %s: ok (%.1f s)", block_name, target.name, outcome.runtime)
            return TargetResult(target.name, folder, "ok", runtime=outcome.runtime, qc=qc,
                                products=paths, log_path=final / LOG_NAME, left_out=target.left_out)
    log_path = failure_log(settings, block_name, target, tmp, outcome)
    shutil.rmtree(tmp, ignore_errors=True)
    reason = outcome.reason + (f" (traceback in {log_path})" if outcome.traceback and log_path else "")
    logger.error("%s %s: failed: %s", block_name, target.name, reason)
    return TargetResult(target.name, folder, "failed", reason, runtime=outcome.runtime,
                        log_path=log_path, left_out=target.left_out)


def write_log_header(path: Path, block_name: str, version: str, assoc: Association) -> None:
    """Start a run's log with what it was given: the target, for a dataset or run the
    exposures used and those left out (with the reason), then every tag's frames and
    search log; in the recipe log's line format (the recipe's records follow)."""
    target = assoc.target
    lines = [f"{block_name} {target.name} ({target.kind}) -> {target.folder}, version {version}"]
    if target.kind in ("dataset", "run"):
        lines.append(f"{len(target.members)} exposure(s) used: {', '.join(target.members)}")
        lines.append(f"{len(target.left_out)} exposure(s) left out" + (":" if target.left_out else ""))
        lines.extend(f"  {name}: {reason}" for name, reason in sorted(target.left_out.items()))
    lines.extend(assoc.lines())
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(path, "a", encoding="utf-8") as log:
        for line in lines:
            record = logging.LogRecord(__name__, logging.INFO, __file__, 0, line, None, None)
            log.write(formatter.format(record) + "\n")
