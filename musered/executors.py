"""Where recipe runs execute: in this process, in a process pool, or on Dask workers.

:func:`make_executor` builds one from the settings' ``executor`` block and ``--jobs``:

- ``{kind: serial}`` (the default): one run after the other in this process; with
  ``jobs > 1`` it becomes a process pool;
- ``{kind: process, jobs: N}``: a :class:`concurrent.futures.ProcessPoolExecutor`;
- ``{kind: dask, address: tcp://host:8786}``: an existing Dask scheduler;
  ``{kind: dask, cluster: {kind: slurm | pbs, ...}}``: a dask-jobqueue cluster built with
  the remaining keys (``cores``, ``memory``, ``queue``, ``walltime`` ...) and scaled to
  ``jobs`` workers; ``{kind: dask}`` alone: a LocalCluster of ``jobs`` single-threaded
  worker processes (``processes: false`` for threads). Dask goes through the Client's
  concurrent.futures interface, so every executor has the same ``submit`` / ``result``
  semantics.

Functions and arguments sent to an executor must be picklable (module-level functions,
plain data). Workers never touch the database: they return results to the parent.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .errors import MuseredError

logger = logging.getLogger(__name__)

EXECUTOR_KEYS = {"kind", "jobs", "address", "cluster", "processes", "timeout"}
CLUSTER_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


class Executor:
    """The interface the runner uses: ``submit``, ``as_completed``, ``close``."""

    kind = "base"
    workers = 1

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        raise NotImplementedError

    def as_completed(self, futures: Iterable[cf.Future]) -> Iterator[cf.Future]:
        return cf.as_completed(list(futures))

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.kind} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class SerialExecutor(Executor):
    """Runs each call in this process when its result is first needed (so a progress
    bar advances between runs), in submission order."""

    kind = "serial"

    def __init__(self) -> None:
        self._pending: dict[cf.Future, tuple[Callable, tuple]] = {}

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        self._pending[future] = (fn, args)
        original_result = future.result

        def result(timeout: float | None = None):
            self._run(future)
            return original_result(timeout)

        future.result = result  # type: ignore[method-assign]
        return future

    def _run(self, future: cf.Future) -> None:
        call = self._pending.pop(future, None)
        if call is None:
            return
        fn, args = call
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # delivered through result(), as the other executors do
            future.set_exception(exc)

    def as_completed(self, futures: Iterable[cf.Future]) -> Iterator[cf.Future]:
        for future in list(futures):
            self._run(future)
            yield future

    def close(self) -> None:
        for future in list(self._pending):
            future.cancel()
        self._pending.clear()


class ProcessExecutor(Executor):
    kind = "process"

    def __init__(self, jobs: int):
        self.workers = jobs
        self._pool = cf.ProcessPoolExecutor(max_workers=jobs)

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """A distributed Client (and the cluster it started, if any) seen as an executor."""

    kind = "dask"

    def __init__(self, client, cluster=None, workers: int = 1):
        self.client = client
        self.cluster = cluster
        self.workers = workers
        # pure=False: a re-run with identical arguments (--force) must run again
        self._executor = client.get_executor(pure=False)

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        try:
            self._executor.shutdown(wait=False)
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def describe(self) -> str:
        return f"dask ({self.client.scheduler.address if self.client.scheduler else '?'})"


def make_executor(settings_executor: Mapping[str, Any] | str | None, jobs: int | None = None) -> Executor:
    """An executor from the settings ``executor`` block; ``jobs`` (``--jobs``) wins over
    its ``jobs``. Bad settings give a MuseredError naming the key."""
    conf: dict[str, Any]
    if settings_executor is None:
        conf = {}
    elif isinstance(settings_executor, str):
        conf = {"kind": settings_executor}
    elif isinstance(settings_executor, Mapping):
        conf = dict(settings_executor)
    else:
        raise MuseredError(f"settings executor must be a kind or a mapping, not {settings_executor!r}")
    unknown = set(conf) - EXECUTOR_KEYS
    if unknown:
        raise MuseredError(f"settings executor: unknown key(s) {', '.join(sorted(unknown))}; "
                           f"valid: {', '.join(sorted(EXECUTOR_KEYS))}")
    kind = str(conf.get("kind", "serial")).lower()
    n = jobs if jobs is not None else conf.get("jobs")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise MuseredError(f"executor jobs must be a positive integer, not {n!r}")
    if kind == "serial":
        return ProcessExecutor(n) if n and n > 1 else SerialExecutor()
    if kind == "process":
        return ProcessExecutor(n or 1)
    if kind == "dask":
        return _dask_executor(conf, n)
    raise MuseredError(f"settings executor.kind must be serial, process or dask, not {kind!r}")


def _dask_executor(conf: Mapping[str, Any], jobs: int | None) -> DaskExecutor:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise MuseredError("executor kind dask needs the 'distributed' package "
                           "(pip install 'musered[dask]')") from None
    timeout = conf.get("timeout", 60)
    if conf.get("address"):
        try:
            client = Client(conf["address"], timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise MuseredError(f"cannot connect to the Dask scheduler {conf['address']}: "
                               f"{' '.join(str(exc).split())}") from None
        return DaskExecutor(client, workers=jobs or len(client.scheduler_info().get("workers", {})) or 1)
    cluster_conf = conf.get("cluster")
    if cluster_conf:
        if not isinstance(cluster_conf, Mapping):
            raise MuseredError("settings executor.cluster must be a mapping with kind: slurm or pbs")
        cluster_conf = dict(cluster_conf)
        cluster_kind = str(cluster_conf.pop("kind", "")).lower()
        if cluster_kind not in CLUSTER_CLASSES:
            raise MuseredError(f"settings executor.cluster.kind must be slurm or pbs, not {cluster_kind!r}")
        try:
            import dask_jobqueue
        except ImportError:
            raise MuseredError("a slurm/pbs cluster needs the 'dask-jobqueue' package "
                               "(pip install 'musered[dask]')") from None
        try:
            cluster = getattr(dask_jobqueue, CLUSTER_CLASSES[cluster_kind])(**cluster_conf)
        except (TypeError, ValueError) as exc:
            raise MuseredError(f"settings executor.cluster: {' '.join(str(exc).split())}") from None
        cluster.scale(jobs or 1)
        return DaskExecutor(Client(cluster, timeout=timeout), cluster, workers=jobs or 1)
    n = jobs or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=bool(conf.get("processes", True)),
                           dashboard_address=None)
    return DaskExecutor(Client(cluster, timeout=timeout), cluster, workers=n)
