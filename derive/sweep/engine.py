"""Where a sweep's chunks run: in this process on every core (local), or on a Dask cluster.

Both engines take chunks (:class:`~derive.sweep.worker.Chunk`) with :meth:`submit` and hand
back each finished chunk once with :meth:`wait`, in any order; the driver decides what to run
and writes what comes back. A chunk is a pure function of (model, fold, runs), so its results do
not depend on the engine, the worker or the order.

* :class:`LocalEngine` (default, no extra dependency) runs one chunk at a time in this process;
  each chunk is one ``train_many`` call spreading its runs over every core.
* :class:`DaskEngine` (``pip install 'derive[dask]'``) starts an embedded
  ``distributed.LocalCluster`` or joins a scheduler by address. The data goes to the cluster
  once per fold, as a task that holds the arrays (if the worker keeping them dies, the
  scheduler recomputes them from the task; scattered data would be lost with it). Workers
  import the generated module by name, warmed once with ``client.run`` before the first
  chunk. Each chunk is a task with its own key and retries; a worker that dies mid-chunk has
  its chunk run again elsewhere, and the driver keeps each run's first result only.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import deque
from types import ModuleType

import numpy as np

from .space import SweepError
from .worker import Chunk, ModelRef, import_model, run_chunk, warm

#: Seconds the Dask engine waits for a scheduler to answer (``--timeout``).
CONNECT_TIMEOUT = 10.0
#: Seconds a chunk should take: long enough that the call and task overheads vanish, short enough
#: that progress, Ctrl-C and the journal stay responsive.
LOCAL_CHUNK_SECONDS = 0.5
DASK_CHUNK_SECONDS = 1.0


class LocalEngine:
    """Chunks run here, one after another, each on every core (Numba's threads)."""

    name = "local"

    def __init__(self) -> None:
        self._queue: deque[Chunk] = deque()

    def start(self, module: ModuleType, folds: list[tuple[np.ndarray, ...]]) -> None:
        import numba

        self.module, self.folds = module, folds
        self.slots = 1  # chunks in flight
        self.threads = numba.get_num_threads()  # threads each chunk runs on
        self.chunk_seconds = LOCAL_CHUNK_SECONDS
        self.where = f"this process, {self.threads} thread{'s' if self.threads > 1 else ''}"

    def submit(self, chunk: Chunk) -> None:
        self._queue.append(chunk)

    def in_flight(self) -> int:
        return len(self._queue)

    def wait(self) -> tuple[Chunk, dict]:
        chunk = self._queue.popleft()
        return chunk, run_chunk(self.module, self.folds[chunk.fold], chunk)

    def close(self) -> None:
        self._queue.clear()


def require_dask():
    """Import distributed or raise one line saying what to install."""
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as exc:
        raise SweepError("the Dask engine needs dask and distributed, which are not installed: "
                         f"pip install 'derive[dask]' [{exc}]") from None
    return distributed


def _warm(ref: ModelRef, fold: tuple[np.ndarray, ...]) -> str:
    """Import the model on a worker and load its kernels (from Numba's cache, which the sweep's
    process has written), once, before any chunk."""
    warm(import_model(ref), fold[0][:1], fold[1][:1])
    return ref.name


def _hold(fold: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return fold


class DaskEngine:
    """Chunks run as Dask tasks: on an embedded LocalCluster, or on the cluster at ``scheduler``."""

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int | None = None,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self.scheduler, self.workers, self.timeout = scheduler, workers, timeout
        self.client = self.cluster = None
        self._futures: dict = {}
        self._done = None

    def connect(self) -> None:
        """Start or join the cluster (before any file of the sweep is written)."""
        distributed = require_dask()
        import logging

        if self.scheduler:
            try:
                self.client = distributed.Client(self.scheduler, timeout=self.timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise SweepError(f"cannot reach the Dask scheduler at {self.scheduler} within {self.timeout:g} s "
                                 f"({_reason(exc)}): start one with `dask scheduler` and workers with `dask worker "
                                 f"{self.scheduler}`, or check the address") from None
            except ValueError as exc:
                raise SweepError(f"--scheduler {self.scheduler}: {exc}") from None
        else:
            n = self.workers or os.cpu_count() or 1
            for name in ("distributed", "distributed.core"):
                logging.getLogger(name).setLevel(logging.ERROR)
            self.cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                    dashboard_address=None, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except (TimeoutError, OSError):
            self.close()
            raise SweepError(f"the Dask scheduler at {self.scheduler} has no worker after {self.timeout:g} s: start "
                             f"some with `dask worker {self.scheduler}`") from None

    def start(self, module: ModuleType, folds: list[tuple[np.ndarray, ...]]) -> None:
        if self.client is None:
            self.connect()
        distributed = require_dask()
        self.ref = ModelRef.of(module)
        if sys.modules.get(self.ref.name) is not module:
            raise SweepError(f"the Dask engine needs a model module importable by name; {module.__name__} was "
                             "loaded from a file path: build it into a package (derive build --out)")
        self.client.run(_warm, self.ref, tuple(a[:1] for a in folds[0]))
        tag = uuid.uuid4().hex[:10]
        self.folds = [self.client.submit(_hold, fold, key=f"derive-sweep-fold{f}-{tag}", pure=False)
                      for f, fold in enumerate(folds)]
        nthreads = self.client.nthreads()
        self.slots = max(1, 2 * len(nthreads))
        self.threads = max(1, min(nthreads.values()))
        self.chunk_seconds = DASK_CHUNK_SECONDS
        self.where = (f"Dask {'scheduler ' + self.scheduler if self.scheduler else 'LocalCluster'}, "
                      f"{len(nthreads)} worker{'s' if len(nthreads) > 1 else ''}, "
                      f"{sum(nthreads.values())} thread{'s' if sum(nthreads.values()) > 1 else ''}")
        self._done = distributed.as_completed(loop=self.client.loop, with_results=True, raise_errors=True)
        self._tag = tag

    def submit(self, chunk: Chunk) -> None:
        future = self.client.submit(run_chunk, self.ref, self.folds[chunk.fold], chunk, pure=False, retries=2,
                                    key=f"derive-sweep-{chunk.key}-{self._tag}")
        self._futures[future.key] = (future, chunk)
        self._done.add(future)

    def in_flight(self) -> int:
        return len(self._futures)

    def wait(self) -> tuple[Chunk, dict]:
        distributed = require_dask()
        try:
            future, result = next(self._done)
        except distributed.KilledWorker as exc:  # the same chunk took down worker after worker
            last = getattr(getattr(exc, "last_worker", None), "address", "?")
            raise SweepError(f"a chunk of the sweep was running on {last} when its worker died, "
                             f"{getattr(exc, 'allowed_failures', '?')} + 1 times in a row: the workers run out of "
                             "memory or crash on it; the finished runs are in the journal (--resume)") from None
        _, chunk = self._futures.pop(future.key)
        future.release()
        return chunk, result

    def close(self) -> None:
        """Cancel what is still running (after Ctrl-C or an error) and leave the cluster: an embedded
        LocalCluster is shut down, a scheduler given by address keeps running."""
        try:
            if self.client is not None:
                if self._futures:
                    self.client.cancel([f for f, _ in self._futures.values()])
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
            self.client = self.cluster = None
            self._futures.clear()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def make_engine(engine: str, scheduler: str | None = None, workers: int | None = None,
                timeout: float = CONNECT_TIMEOUT) -> LocalEngine | DaskEngine:
    """``"local"`` or ``"dask"`` (a scheduler address implies Dask)."""
    if engine not in ("local", "dask"):
        raise SweepError(f"unknown engine {engine!r}: choose local or dask")
    if scheduler and engine == "local":
        engine = "dask"
    if engine == "local":
        if workers is not None:
            raise SweepError("workers is for the Dask engine's LocalCluster (--engine dask)")
        return LocalEngine()
    if scheduler is not None and not isinstance(scheduler, str):
        raise SweepError(f"the scheduler address must be text such as tcp://host:8786, got {scheduler!r}")
    if timeout is None or not timeout > 0:
        raise SweepError(f"the timeout must be a positive number of seconds, got {timeout!r}")
    require_dask()
    return DaskEngine(scheduler, workers, float(timeout))
