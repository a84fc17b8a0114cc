"""Timing helpers shared by the benchmarks: one thread everywhere, timed calls, percentile stats,
interleaved and one-library-at-a-time passes, machine facts and the load of other processes.

Import this module before numpy, torch, onnxruntime or OpenCV: it sets the thread variables the
numeric libraries read when they load, and :func:`pin_library_threads` sets the rest after.
"""
from __future__ import annotations

import os

#: Thread-count variables read once, when OpenMP / MKL / OpenBLAS / numexpr load.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
for _v in THREAD_VARS:
    os.environ[_v] = "1"

import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional, Sequence, Union  # noqa: E402

import numpy as np  # noqa: E402


def pin_library_threads() -> None:
    """One thread in OpenCV and torch (each has its own pool, which would use every core)."""
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or torch already ran parallel work
        pass


def pin_cpu(cpu: Optional[int]) -> Optional[list[int]]:
    """Restrict this process to one CPU (``None``: leave it). Returns the CPUs it may use."""
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None


# ------------------------------------------------------------------------------------------------
# timed calls


@dataclass(frozen=True)
class Timed:
    """A call to time, with an untimed ``setup`` run just before it (e.g. priming a tracker)."""

    call: Callable[[], Any]
    setup: Optional[Callable[[], Any]] = None


Task = Union[Callable[[], Any], Timed]


def _as_timed(task: Task) -> Timed:
    return task if isinstance(task, Timed) else Timed(task)


def timed(task: Task) -> tuple[float, float]:
    """Run one task; (wall seconds, CPU seconds of this process) of its call, not its setup."""
    t = _as_timed(task)
    if t.setup is not None:
        t.setup()
    c0, t0 = time.process_time(), time.perf_counter()
    t.call()
    t1, c1 = time.perf_counter(), time.process_time()
    return t1 - t0, c1 - c0


def stats(wall_s: Sequence[float], cpu_s: Optional[Sequence[float]] = None) -> dict[str, float]:
    """Median, best and 10/90th percentile wall time (ms), the number of calls and, with CPU
    times, CPU time per wall time (1.0 = one thread busy all the time; below 1 the process
    waited for a CPU, above 1 it ran threads in parallel)."""
    w = np.asarray(wall_s, dtype=np.float64) * 1e3
    out = {"median_ms": float(np.median(w)), "best_ms": float(np.min(w)),
           "p10_ms": float(np.percentile(w, 10)), "p90_ms": float(np.percentile(w, 90)), "calls": len(w)}
    if cpu_s is not None:
        out["cpu_per_wall"] = float(np.sum(cpu_s) / max(float(np.sum(wall_s)), 1e-12))
    return out


def repeat(task: Task, repeats: int, warmup: int = 3) -> dict[str, float]:
    """One task called ``repeats`` times after ``warmup`` untimed calls: :func:`stats`."""
    for _ in range(warmup):
        timed(task)
    wall, cpu = zip(*[timed(task) for _ in range(repeats)])
    return stats(wall, cpu)


def _rotated(names: list[str], k: int) -> list[str]:
    k %= len(names)
    return names[k:] + names[:k]


def interleaved(tasks: dict[str, list[Task]], repeats: int, warmup: int = 3) -> dict[str, dict]:
    """Every method's calls interleaved call by call, their order rotated each time.

    ``tasks[name]`` is one task per image; call ``i`` of every method runs back to back, so all
    methods see the same background load. Returns :func:`stats` per method.
    """
    names = list(tasks)
    n = min(len(v) for v in tasks.values())
    for name in names:
        for task in tasks[name][:warmup]:
            timed(task)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    step = 0
    for _ in range(repeats):
        for i in range(n):
            for name in _rotated(names, step):
                w, c = timed(tasks[name][i])
                wall[name].append(w)
                cpu[name].append(c)
            step += 1
    return {k: stats(wall[k], cpu[k]) for k in names}


def blocked(tasks: dict[str, list[Task]], repeats: int, warmup: int = 3) -> dict[str, dict]:
    """One method at a time: each round runs a method's whole list back to back, then the next
    method's (the order rotated each round).

    This is how a program using one library sees it. Interleaving call by call also charges each
    method for what the others cost it (caches and allocator state refilled after the other ran):
    measured here, that doubled dlib's predictor time and added a quarter to lightmark's. Same
    result layout as :func:`interleaved`.
    """
    names = list(tasks)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for name in _rotated(names, r):
            for task in tasks[name][:warmup]:
                timed(task)
            for task in tasks[name]:
                w, c = timed(task)
                wall[name].append(w)
                cpu[name].append(c)
    return {k: stats(wall[k], cpu[k]) for k in names}


# ------------------------------------------------------------------------------------------------
# the machine and its load


def machine_info() -> dict[str, Any]:
    """CPU model, logical and usable CPUs, platform and Python version."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable: Optional[int] = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "platform": platform.platform(), "python": platform.python_version()}


class LoadMeter:
    """CPU used by *other* processes during a run: all CPUs' busy time from /proc/stat minus this
    process's own (and its children's) CPU time, over the wall time since construction."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = self._busy()
        self.self0 = self._self()
        self.load0 = os.getloadavg()

    @staticmethod
    def _busy() -> Optional[float]:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            v = [float(x) for x in fields]
            idle = v[3] + (v[4] if len(v) > 4 else 0.0)  # idle + iowait
            return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _self() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

    def read(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        busy1 = self._busy()
        mine = self._self() - self.self0
        out: dict[str, Any] = {"wall_s": round(wall, 1), "cpus": os.cpu_count() or 1,
                               "this_process_cpu_s": round(mine, 1),
                               "loadavg_start": [round(x, 2) for x in self.load0],
                               "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
        if busy1 is not None and self.busy0 is not None and wall > 0:
            other = max(0.0, (busy1 - self.busy0) - mine)
            out["other_processes_cpu_s"] = round(other, 1)
            out["other_processes_cores_mean"] = round(other / wall, 2)
        return out
