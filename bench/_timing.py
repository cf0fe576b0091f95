"""Small timing helpers shared by the benchmarks (not part of the package)."""

from __future__ import annotations

import dataclasses
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import torch


@dataclasses.dataclass(frozen=True)
class Timings:
    """Per-round milliseconds per call of several functions timed in interleaved rounds."""

    rounds: Mapping[str, list[float]]

    def ms(self, name: str) -> float:
        """Median milliseconds per call of ``name``."""
        return statistics.median(self.rounds[name])

    def ratio(self, num: str, den: str | Sequence[str]) -> float:
        """Median over rounds of ``num / den`` timed in the same round (robust to drift).

        ``den`` may name several variants: each round divides by the fastest
        of them in that round ("the best of" the baselines).
        """
        names = [den] if isinstance(den, str) else list(den)
        best = [min(values) for values in zip(*(self.rounds[n] for n in names), strict=True)]
        return statistics.median(a / b for a, b in zip(self.rounds[num], best, strict=True))


def measure(
    fns: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 21,
    min_time_s: float = 0.03,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], object] | None = None,
) -> Timings:
    """Time every function in interleaved rounds.

    Each round times every function back to back, in a shuffled order, each
    as a block of calls lasting about ``min_time_s``, so slow drifts of a
    shared machine hit all variants alike; :meth:`Timings.ratio` pairs the
    variants round by round. ``clock`` is wall time by default;
    ``time.thread_time`` measures the CPU time of the calling thread (with
    one intra-op thread this ignores time the machine spent on other
    processes). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before every
    clock reading, so queued device work is counted.
    """
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    numbers = {}
    for name, fn in fns.items():
        sync()
        start = clock()
        fn()
        sync()
        once = max(clock() - start, 1e-6)
        numbers[name] = max(1, int(min_time_s / once))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)  # no variant always runs right after another (cache and allocator state)
        for name in order:
            fn, n = fns[name], numbers[name]
            sync()
            start = clock()
            for _ in range(n):
                fn()
            sync()
            samples[name].append((clock() - start) / n * 1e3)
    return Timings(samples)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain, aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=False))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def setup_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None``: leave torch's default); return the count."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}


def stable_allocator() -> None:
    """Re-run this script with glibc malloc tuned to keep freed memory (once).

    By default glibc serves every allocation above 128 KiB with a fresh
    ``mmap``, so each new activation tensor page-faults in; on small virtual
    machines those faults dominate memory-bound kernels and make timings
    swing by several times between runs. Raising the mmap and trim
    thresholds lets the allocator reuse warm pages. Both variants of every
    comparison run under the same setting.
    """
    if all(os.environ.get(k) == v for k, v in _MALLOC_ENV.items()):
        return
    env = {**os.environ, **_MALLOC_ENV}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
