"""Where a study's simulations run: one method, `map_unordered(fn, items)`, yielding each
result as soon as it is done (so the caller stores it at once).

- `SerialExecutor`: in this process, in order (tests, and `--workers 1`).
- `ProcessExecutor`: local worker processes (concurrent.futures, spawn start method: no fork
  of a process that holds threads).
- `DaskExecutor`: a Dask distributed cluster: an existing scheduler by address, or a
  `LocalCluster` started for the run and closed after it.

`fn` must be a top-level function and the items picklable; a simulation is deterministic, so
every executor gives the same results (only their order differs). Items are drawn from the
iterable lazily, only when a worker is free to take one, so a caller (the planner) can decide
what to run next from the results it has already seen.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from enum import StrEnum
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from hwsim.errors import ConfigError

__all__ = ["Executor", "ExecutorKind", "SerialExecutor", "ProcessExecutor", "DaskExecutor", "make_executor"]

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Run fn on every item; yield each result when it is done, in any order."""
        ...


class ExecutorKind(StrEnum):
    LOCAL = "local"
    DASK = "dask"


class SerialExecutor:
    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)


class ProcessExecutor:
    """`workers` local processes, one item each at a time (`workers <= 1`: in this process)."""

    def __init__(self, workers: int):
        self.workers = workers

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self.workers <= 1:
            yield from SerialExecutor().map_unordered(fn, items)
            return
        source = iter(items)
        first = next(source, _END)
        if first is _END:
            return
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            running: set[Future] = {pool.submit(fn, first)}
            try:
                yield from _drain(pool.submit, running, source, self.workers, fn)
            finally:
                for fut in running:
                    fut.cancel()


class DaskExecutor:
    """A Dask distributed `Client`: to `address` (tcp://host:8786), or to a new `LocalCluster`
    of `workers` workers (processes, unless `processes=False`: threads of this process)."""

    def __init__(self, address: str | None = None, workers: int = 2, processes: bool = True):
        self.address = address
        self.workers = workers
        self.processes = processes

    def _client(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("--executor dask: the dask distributed package is not installed; "
                              "pip install 'dask[distributed]', or use --executor local") from None
        if self.address:
            try:
                return Client(self.address, timeout="20s"), None
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"--scheduler: cannot reach a Dask scheduler at {self.address!r} ({exc}); "
                                  f"start one with `dask scheduler` or leave --scheduler out for a "
                                  f"LocalCluster") from None
        cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=self.processes,
                               dashboard_address=":0")
        return Client(cluster), cluster

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        source = iter(items)
        first = next(source, _END)
        if first is _END:
            return
        from distributed import wait as dask_wait

        client, cluster = self._client()
        try:
            slots = max(1, sum(client.nthreads().values()))

            def submit(f, item):
                return client.submit(f, item, pure=False)

            running = {submit(fn, first)}

            def wait_first(futures):
                done, pending = dask_wait(list(futures), return_when="FIRST_COMPLETED")
                return set(done), set(pending)

            yield from _drain(submit, running, source, slots, fn, wait_first)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


_END = object()


def _concurrent_wait(futures):
    return wait(futures, return_when=FIRST_COMPLETED)


def _drain(submit, running: set, source: Iterator, slots: int, fn, wait_first=_concurrent_wait) -> Iterator:
    """Keep `slots` items running, pulling the next item only when one finishes."""
    while running:
        while len(running) < slots:
            item = next(source, _END)
            if item is _END:
                break
            running.add(submit(fn, item))
        done, pending = wait_first(running)
        running.clear()
        running.update(pending)
        for fut in done:
            yield fut.result()
        if not running:   # everything finished: is there more?
            item = next(source, _END)
            if item is not _END:
                running.add(submit(fn, item))


def make_executor(kind: str, workers: int = 2, scheduler: str | None = None) -> Executor:
    """The executor for the CLI's --executor, --workers and --scheduler."""
    try:
        kind = ExecutorKind(kind)
    except ValueError:
        raise ConfigError(f"--executor: {kind!r} is not an executor; use one of "
                          f"{', '.join(k.value for k in ExecutorKind)}") from None
    if workers < 1:
        raise ConfigError(f"--workers: {workers} must be at least 1")
    if scheduler and kind != ExecutorKind.DASK:
        raise ConfigError("--scheduler: a scheduler address needs --executor dask")
    if kind == ExecutorKind.DASK:
        return DaskExecutor(scheduler, workers)
    return ProcessExecutor(workers)
