"""`derive sweep` on Dask: an embedded LocalCluster gives the local engine's table bit for bit; a
worker killed mid-sweep loses no run and duplicates none; a scheduler and two workers started as
processes by hand (`dask scheduler`, `dask worker`) run a sweep pointed at their address; an
unreachable scheduler, a scheduler without workers and a missing extra are one clear line each,
with nothing written.

Each test starts its own small cluster (2 workers, 1 thread each: the CI machines have 2 cores),
so they run in the normal suite in a few seconds each (marker ``dask``)."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from derive.data import load_dataset
from derive.sweep import engine as engine_module
from derive.sweep import results, sweep
from derive.sweep.progress import SweepProgress
from derive.sweep.space import SweepError

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.dask

VOLATILE = ["wall_time", "worker"]


@pytest.fixture(scope="module")
def adam():
    return importlib.import_module("generated.xor_adam")


@pytest.fixture(scope="module")
def xor_data():
    return load_dataset("xor")


SWEEP = dict(grid=["lr=0.01,0.05,0.2", "width1=8,4"], seeds=2, folds=2, epochs=5, batch_size=16, seed=3)


@pytest.fixture(scope="module")
def local_table(adam, xor_data):
    return sweep(adam, data=xor_data, **SWEEP)


def test_local_cluster_equals_the_local_engine(adam, xor_data, local_table, tmp_path):
    df = sweep(adam, data=xor_data, engine="dask", workers=2, out=tmp_path / "s", **SWEEP)
    assert len(df) == 24 and df["worker"].str.startswith("tcp://").all()
    assert df.drop(columns=VOLATILE).equals(local_table.drop(columns=VOLATILE))
    saved = results.read_table(tmp_path / "s")  # Parquet, or CSV (floats written exactly)
    cols = ["run_id", "seed", "lr", "width1", "status", "train_loss", "val_loss", "val_accuracy"]
    assert saved[cols].equals(local_table[cols])


def test_a_worker_killed_mid_sweep_loses_and_duplicates_no_run(adam, xor_data, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "DASK_CHUNK_SECONDS", 0.3)
    moons = importlib.import_module("generated.moons")
    data = load_dataset("moons")
    kw = dict(data=data, grid=["lr=0.01,0.03,0.1,0.3"], seeds=12, epochs=100, batch_size=8)
    local = sweep(moons, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        killed = {}

        class Killer(SweepProgress):
            """After a chunk has come back, SIGKILL a worker that is running a chunk now."""

            def update(self, done, running, diverged, best):
                if killed:
                    return
                for address, keys in client.processing().items():
                    if any(str(k).startswith("derive-sweep-c") for k in keys):
                        pid = client.run(os.getpid, workers=[address])[address]
                        killed.update(address=address, keys=list(keys), pid=pid)
                        os.kill(pid, signal.SIGKILL)
                        return

        df = sweep(moons, scheduler=cluster.scheduler_address, out=tmp_path / "s", progress=Killer(), **kw)
    assert killed, "no chunk was running on a worker to kill"
    with pytest.raises(ProcessLookupError):  # it is gone (its nanny started a fresh one)
        os.kill(killed["pid"], 0)
    journal = [json.loads(line) for line in open(tmp_path / "s" / results.JOURNAL)]
    assert len(journal) == len(df) == 48 and len({r["run_id"] for r in journal}) == 48
    assert sorted(r["number"] for r in journal) == list(range(48))
    assert df.drop(columns=VOLATILE).equals(local.drop(columns=VOLATILE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scheduler_and_workers_started_by_hand(adam, xor_data, local_table, tmp_path):
    """As a user would: `dask scheduler` in one terminal, `dask worker ADDRESS` in two others."""
    dask = Path(sys.executable).parent / "dask"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "dask.log", "wb")
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler listens: start the workers (a client connecting earlier backs off for seconds)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and procs[0].poll() is None, "the scheduler did not start"
                time.sleep(0.05)
        for i in range(2):
            procs.append(subprocess.Popen([str(dask), "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--name", f"worker-{i}"], cwd=tmp_path, stdout=log,
                                          stderr=subprocess.STDOUT))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        df = sweep(adam, data=xor_data, scheduler=address, timeout=30, **SWEEP)
        assert df.drop(columns=VOLATILE).equals(local_table.drop(columns=VOLATILE))
        assert df["worker"].isin([w for w in df["worker"].unique() if w.startswith("tcp://127.0.0.1:")]).all()
    finally:
        try:  # as a user ends it: the scheduler closes the workers, then itself
            with distributed.Client(address, timeout=10) as client:
                client.shutdown()
        except (OSError, TimeoutError):
            pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def test_unreachable_scheduler_is_a_clear_error_in_bounded_time(adam, xor_data, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    tick = time.perf_counter()
    with pytest.raises(SweepError) as info:
        sweep(adam, data=xor_data, grid=["lr=0.1"], epochs=1, scheduler=address, timeout=2, out=tmp_path / "s")
    took = time.perf_counter() - tick
    text = str(info.value)
    assert text.startswith(f"cannot reach the Dask scheduler at {address} within 2 s") and "\n" not in text
    assert "dask scheduler" in text and took < 15
    assert not (tmp_path / "s").exists()


def test_scheduler_without_workers_is_one_line_after_the_timeout(tmp_path, monkeypatch):
    """A scheduler that answers but has no worker: `derive sweep --scheduler` waits --timeout
    seconds for one to join, then stops with one line saying so and what to start; nothing written."""
    monkeypatch.chdir(tmp_path)
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address
        tick = time.perf_counter()
        res = CliRunner().invoke(main, ["sweep", "xor_adam", "--data", "xor", "--grid", "lr=0.1", "--epochs", "1",
                                        "--out", "out", "--scheduler", address, "--timeout", "2"],
                                 catch_exceptions=False)
        took = time.perf_counter() - tick
        assert not cluster.scheduler_info["workers"]
    assert res.exit_code == 1
    lines = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert lines == [f"error: the Dask scheduler at {address} has no worker after 2 s: start some with "
                     f"`dask worker {address}`"], res.output
    assert 2 <= took < 15
    assert not (tmp_path / "out").exists()


def test_missing_dask_is_one_line(adam, xor_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(SweepError, match=r"^the Dask engine needs dask and distributed, which are not installed: "
                                         r"pip install 'derive\[dask\]'"):
        sweep(adam, data=xor_data, grid=["lr=0.1"], epochs=1, engine="dask", out=tmp_path / "s")
    assert not (tmp_path / "s").exists()
