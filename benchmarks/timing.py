"""The timing method of the speed benchmarks (``overhead.py``, ``local_vs_backprop.py``, ``compile_speed.py``).

A shared machine's load moves absolute times, so every figure is a *ratio taken within a round*: the candidates of
one measurement run in a freshly shuffled order, each for a block of calls, timed in **process CPU time**
(``time.process_time``: other processes' load does not count; on CUDA, wall time with a synchronisation at the end
of each block). The table reports the median of the rounds' ratios and its interquartile range.
"""
from __future__ import annotations

import ctypes
import random
import statistics
import time

import torch


def clock(device: torch.device):
    """The clock of one block: process CPU time, or on CUDA wall time after a synchronisation."""
    if device.type == "cuda":
        def now():
            torch.cuda.synchronize()
            return time.perf_counter()
        return now
    return time.process_time


def keep_heap() -> bool:
    """glibc only: fixed thresholds (mmap above 32 MiB, trim above 1 GiB) instead of the dynamic ones, so that freed
    large temporaries stay in the heap rather than go back to the system and fault back in at the next call (each
    fresh 8 MiB buffer costs ~5 ms of page faults on a 2-core VM). Returns whether it was set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 30))
    except OSError:
        return False


def rounds(candidates: dict, a, reps: int, n_rounds: int, now, rng: random.Random) -> dict[str, list[float]]:
    """Seconds per call of every candidate ``fn(a)`` (``a.grad`` cleared before each call), one entry per round;
    shuffled order within each round (:func:`timed_rounds`, after a warm-up that lets stateful estimators settle)."""
    def step(fn):
        def call():
            a.grad = None
            fn(a)
        return call

    steps = {k: step(fn) for k, fn in candidates.items()}
    for call in steps.values():
        for _ in range(3):
            call()
    return timed_rounds(steps, reps, n_rounds, now, rng)


def timed_rounds(fns: dict, reps: int, n_rounds: int, now, rng: random.Random) -> dict[str, list[float]]:
    """Seconds per call of every zero-argument function in ``fns``, one entry per round; shuffled order within
    each round. The one timing loop of the benchmarks."""
    out = {k: [] for k in fns}
    for _ in range(n_rounds):
        order = list(fns)
        rng.shuffle(order)
        for k in order:
            fn = fns[k]
            t = now()
            for _ in range(reps):
                fn()
            out[k].append((now() - t) / reps)
    return out


def ratio(times: dict, num: str, den: str) -> tuple[float, float, float]:
    """Median, first and third quartile of the within-round ratios ``num / den``."""
    r = sorted(x / y for x, y in zip(times[num], times[den]))
    if len(r) < 4:
        return statistics.median(r), r[0], r[-1]
    q = statistics.quantiles(r, n=4)
    return statistics.median(r), q[0], q[2]


def cell(r) -> str:
    """``median [first quartile, third quartile]``, two decimals."""
    return f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]"
