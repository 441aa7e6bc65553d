"""The worker side of a recipe run: everything that happens where the recipe runs (a
process of the pool, a Dask worker or the parent itself), with no database.

:func:`execute` runs ``recipe.run`` on a :class:`Job` (or, for ``engine="drs"``, the ESO
DRS through esorex: :func:`recipes.drs.run_esorex`, with the same frames, parameters and
folder) and never raises: a failure comes
back as a :class:`JobResult` with its one-line reason (and the traceback of a crash).
The records of the ``recipes`` loggers go to the run's ``log.txt`` (:func:`capture_recipe_log`);
the md5 of every input is computed there, next to the files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.base import Product, Recipe, RecipeError

LOG_NAME = "log.txt"
RECIPES_LOGGER = "recipes"


@dataclass
class Job:
    """Everything a worker needs for one run (picklable)."""

    recipe: Recipe
    frames: dict[str, list[Path]]
    params: dict[str, Any]
    outdir: Path
    loglevel: int = logging.INFO
    engine: str = "musered"      # or "drs": esorex runs the DRS recipe of the same name
    esorex: str = "esorex"       # the esorex command or path (settings ``esorex``)


@dataclass
class JobResult:
    ok: bool
    runtime: float
    products: list[Product] = field(default_factory=list)
    reason: str = ""
    traceback: str = ""
    md5: dict[str, str] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=dict)  # engine and, for drs, its versions


def execute(job: Job) -> JobResult:
    """Run a recipe in a worker; never raises (failures come back as a JobResult)."""
    start = time.perf_counter()
    with capture_recipe_log(job.outdir / LOG_NAME, job.loglevel):
        try:
            software = {"engine": job.engine}
            if job.engine == "drs":
                from recipes.drs import engine_versions, run_esorex

                products = run_esorex(job.recipe, job.frames, dict(job.params), job.outdir, job.esorex)
                software.update(engine_versions(products, job.recipe.name, job.esorex))
            else:
                products = job.recipe.run(job.frames, dict(job.params), job.outdir)
            if not isinstance(products, list) or not all(isinstance(p, Product) for p in products):
                raise TypeError(f"recipe {job.recipe.name} must return a list of Product, "
                                f"not {type(products).__name__}")
        except RecipeError as exc:
            logging.getLogger(RECIPES_LOGGER).error("%s", exc)
            return JobResult(False, time.perf_counter() - start, reason=one_line(exc) or "RecipeError")
        except Exception as exc:  # a crash: keep the traceback for the failure log
            logging.getLogger(RECIPES_LOGGER).error("%s", exc, exc_info=True)
            return JobResult(False, time.perf_counter() - start,
                             reason=f"{type(exc).__name__}: {one_line(exc)}",
                             traceback=traceback.format_exc())
    runtime = time.perf_counter() - start
    md5 = {str(p): file_md5(p) for paths in job.frames.values() for p in paths}
    return JobResult(True, runtime, products=products, md5=md5, software=software)


def one_line(exc: BaseException) -> str:
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
