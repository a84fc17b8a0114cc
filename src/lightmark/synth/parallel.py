"""Run a data engine's image range as contiguous slices, in this process or in worker processes.

Every image of both engines depends only on the run's seed and its own index, so the slices can be
rendered in any order by any process and the output is byte-identical to a single-process run.
Each slice returns its images' manifest entries; the caller concatenates them in slice order and
writes the one manifest.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator, Optional, TypeVar

import numpy as np

from lightmark.core.errors import SynthError

T = TypeVar("T")

# Images per task, at most. Small enough that the progress bar moves, that the workers share the load
# evenly and that a failure stops the run soon (queued slices are cancelled); large enough that
# the per-task overhead (a pickled list of manifest entries) does not matter.
SLICE = 25
# Set in the workers' environment before they start, i.e. before they import numpy / OpenCV:
# each worker is one process on one core; nested BLAS / OpenMP threads only contend.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def check_workers(workers: int) -> int:
    """``workers`` as a process count: a positive integer, or 0 for one per CPU core."""
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 0:
        raise SynthError(f"workers must be a non-negative integer (0: one per CPU core), got {workers!r}")
    return int(workers) or (os.cpu_count() or 1)


def split(start: int, n: int, workers: int) -> list[range]:
    """Images ``start .. start + n - 1`` as contiguous slices: at most :data:`SLICE` images each,
    and at least one slice per worker."""
    size = max(1, min(SLICE, -(-n // workers)))
    return [range(a, min(a + size, start + n)) for a in range(start, start + n, size)]


def _init_worker() -> None:
    """Each worker is one process on one core: OpenCV's own thread pool would only contend."""
    import cv2

    cv2.setNumThreads(1)


@contextlib.contextmanager
def _one_thread_env() -> Iterator[None]:
    """Set :data:`ONE_THREAD` in this process's environment (inherited by the workers it starts)
    and restore the previous values afterwards."""
    old = {k: os.environ.get(k) for k in ONE_THREAD}
    os.environ.update(ONE_THREAD)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_slices(fn: Callable[[range], T], slices: list[range], workers: int,
               progress: Optional[str] = None) -> list[T]:
    """``[fn(s) for s in slices]``, with ``workers`` processes ("spawn" context) when > 1.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one) and
    should raise an error naming the image that failed; that error is raised here unchanged. A
    worker that dies (killed, out of memory) raises :class:`SynthError` naming its images. On the
    first failure the slices not yet started are cancelled. ``progress``: a tqdm description.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(s) for s in slices), desc=progress, unit="img")
    try:
        workers = min(workers, len(slices))
        if workers <= 1:
            results = []
            for s in slices:
                results.append(fn(s))
                if bar is not None:
                    bar.update(len(s))
            return results
        ctx = multiprocessing.get_context("spawn")
        with _one_thread_env(), ProcessPoolExecutor(workers, ctx, _init_worker) as pool:
            futures = {pool.submit(fn, s): s for s in slices}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    err, s = f.exception(), futures[f]
                    if err is not None:
                        pool.shutdown(wait=True, cancel_futures=True)
                        if isinstance(err, BrokenProcessPool):
                            raise SynthError(f"a worker process died while rendering images "
                                             f"{s.start}..{s.stop - 1}") from err
                        raise err
                    if bar is not None:
                        bar.update(len(s))
            return [f.result() for f in futures]
    finally:
        if bar is not None:
            bar.close()
