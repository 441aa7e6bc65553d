"""make_executor: kinds, settings errors, submit/result semantics on each backend."""

from __future__ import annotations

import os
import socket

import pytest

from musered.errors import MuseredError
from musered.executors import DaskExecutor, ProcessExecutor, SerialExecutor, make_executor


def square(x: int) -> int:
    return x * x


def pid_of(_x: int) -> int:
    return os.getpid()


def explode(x: int) -> int:
    raise ValueError(f"bad {x}")


def test_kinds_from_settings_and_jobs():
    assert isinstance(make_executor(None), SerialExecutor)
    assert isinstance(make_executor("serial", jobs=1), SerialExecutor)
    with make_executor({"kind": "serial", "jobs": None}, jobs=2) as pool:  # --jobs 2 -> a pool
        assert isinstance(pool, ProcessExecutor) and pool.workers == 2
    with make_executor({"kind": "process", "jobs": 3}) as pool:
        assert pool.workers == 3
    with make_executor({"kind": "process", "jobs": 3}, jobs=1) as pool:  # --jobs wins
        assert pool.workers == 1


@pytest.mark.parametrize("conf, message", [
    ({"kind": "mpi"}, "executor.kind must be serial, process or dask, not 'mpi'"),
    ({"kind": "process", "jobs": 0}, "jobs must be a positive integer"),
    ({"kind": "serial", "workers": 2}, "unknown key.*workers"),
    ({"kind": "dask", "cluster": {"kind": "sge"}}, "cluster.kind must be slurm or pbs, not 'sge'"),
    ({"kind": "dask", "cluster": {"kind": "slurm", "no_such_option": 1}}, "executor.cluster"),
    (["serial"], "must be a kind or a mapping"),
])
def test_bad_settings_are_one_line_errors(conf, message):
    with pytest.raises(MuseredError, match=message) as err:
        make_executor(conf)
    assert "\n" not in str(err.value)


def test_serial_runs_lazily_in_order_and_delivers_exceptions():
    calls = []

    def record(x):
        calls.append(x)
        return x

    executor = SerialExecutor()
    futures = [executor.submit(record, i) for i in range(3)]
    assert calls == []  # nothing ran yet: the progress bar advances between runs
    assert [f.result() for f in executor.as_completed(futures)] == [0, 1, 2]
    failing = executor.submit(explode, 7)
    with pytest.raises(ValueError, match="bad 7"):
        failing.result()
    pending = executor.submit(record, 9)
    executor.close()
    assert pending.cancelled() and calls == [0, 1, 2]


def test_process_pool_runs_in_other_processes():
    with make_executor({"kind": "process"}, jobs=2) as executor:
        futures = [executor.submit(square, i) for i in range(6)]
        assert sorted(f.result() for f in executor.as_completed(futures)) == [0, 1, 4, 9, 16, 25]
        assert executor.submit(pid_of, 0).result() != os.getpid()
        with pytest.raises(ValueError, match="bad 1"):
            executor.submit(explode, 1).result()


def test_dask_local_cluster_threads():
    with make_executor({"kind": "dask", "processes": False, "timeout": 30}, jobs=2) as executor:
        assert isinstance(executor, DaskExecutor) and executor.workers == 2
        futures = [executor.submit(square, i) for i in range(5)]
        assert sorted(f.result(timeout=30) for f in executor.as_completed(futures)) == [0, 1, 4, 9, 16]
        # identical calls run again (pure=False), as a --force re-run must
        assert executor.submit(square, 3).result(timeout=30) == 9
        with pytest.raises(ValueError, match="bad 2"):
            executor.submit(explode, 2).result(timeout=30)
    assert executor.client.status == "closed"


def test_dask_worker_processes_and_scheduler_address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with make_executor({"kind": "dask", "address": cluster.scheduler_address, "timeout": 30}) as executor:
            assert executor.cluster is None  # connected, not owned
            assert executor.submit(pid_of, 0).result(timeout=60) != os.getpid()
        assert cluster.status.name == "running"  # closing the client leaves the scheduler alone


def test_dask_jobqueue_cluster_gets_the_settings_and_is_scaled(monkeypatch):
    import dask_jobqueue
    from distributed import LocalCluster

    seen = {}

    class FakeSLURMCluster(LocalCluster):
        """Stands in for SLURMCluster (no sbatch here): records its options, runs locally."""

        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(n_workers=0, processes=False, dashboard_address=None)

        def scale(self, n=None, **kwargs):
            seen["scaled"] = n
            return super().scale(n, **kwargs)

    monkeypatch.setattr(dask_jobqueue, "SLURMCluster", FakeSLURMCluster)
    conf = {"kind": "dask", "cluster": {"kind": "slurm", "cores": 4, "memory": "24GB", "queue": "short"}}
    with make_executor(conf, jobs=1) as executor:
        assert seen == {"cores": 4, "memory": "24GB", "queue": "short", "scaled": 1}
        assert executor.submit(square, 4).result(timeout=60) == 16
    assert executor.cluster.status.name == "closed"
    assert conf["cluster"]["kind"] == "slurm"  # the settings are not modified


def test_dask_unreachable_scheduler_is_an_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MuseredError, match=f"cannot connect to the Dask scheduler tcp://127.0.0.1:{port}"):
        make_executor({"kind": "dask", "address": f"tcp://127.0.0.1:{port}", "timeout": 2})
