"""The engine that runs per-galaxy tasks: dask.distributed, or the calling process for debugging.

    with engine(workers=2) as client:                 # a LocalCluster of 2 single-threaded worker processes
        for item, result in run_tasks(client, prepare_unit, units, desc="prepare"):
            ...

``workers=None`` starts one worker per core; ``workers=0`` runs every task in this process (no Dask);
``scheduler="tcp://host:8786"`` joins an existing cluster (`dask scheduler` + `dask worker` by hand,
dask-jobqueue on SLURM/PBS, Kubernetes). Results come back in the order of ``items`` whatever the engine, so every
cluster gives the same bundle (in-process runs may differ in the last bits: BLAS threads). A task lost with its worker is rerun by Dask; an exception raised by a task is
raised here (expected per-input failures are returned by the task as values, not raised).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm.auto import tqdm


def add_engine_arguments(parser) -> None:
    """The command-line options that choose the engine (build, prepare, assign)."""
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes of a local Dask cluster (default: one per core; 0 = in this process)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler to run on (tcp://host:8786)")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextmanager
def engine(workers: int | None = None, scheduler: str | None = None):
    """Yield a dask.distributed Client, or None to run in-process (``workers == 0`` and no scheduler)."""
    if scheduler is None and workers == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    n = default_workers() if workers is None else workers
    if n < 0:
        raise ValueError(f"workers must be ≥ 0 (0 = in-process), got {n}")
    # One thread per worker process: the tasks are numpy/vorbin/torch code that holds the GIL or spawns its own
    # threads; processes give real parallelism and a memory limit per galaxy task.
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        yield client


def run_tasks(client, function: Callable, items: list, desc: str, **kwargs) -> Iterator[tuple[object, object]]:
    """Yield ``(item, function(item, **kwargs))`` for every item, in the order of ``items``, with a progress bar.

    On a cluster the tasks run in parallel (at most one retry each beyond Dask's own rescheduling of tasks lost
    with a worker); results are yielded as soon as every earlier item's is in, so the caller can stream them."""
    items = list(items)
    with tqdm(total=len(items), desc=desc, unit="task") as progress:
        if client is None:
            # In this process BLAS keeps its threads: the order of a multi-threaded sum can change the last bits of
            # a prepared spectrum compared with Dask's single-threaded workers (the clusters agree bit for bit)
            for item in items:
                result = function(item, **kwargs)
                progress.update()
                yield item, result
            return
        from distributed import as_completed

        # Shared arguments (config, catalogue) go to each worker once; a list keeps a dict from being split up
        shared = {key: client.scatter([value], broadcast=True)[0] for key, value in kwargs.items()}
        futures = client.map(function, items, pure=False, retries=1, **shared)
        position = {future.key: i for i, future in enumerate(futures)}
        done: dict[int, object] = {}
        next_index = 0
        for future in as_completed(futures):
            done[position[future.key]] = future.result()  # raises a task's unexpected exception here
            future.release()
            progress.update()
            while next_index in done:
                yield items[next_index], done.pop(next_index)
                next_index += 1
