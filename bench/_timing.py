"""Small timing helpers shared by the benchmarks (not part of the package)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch


def interleaved_median_ms(
    fns: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 7,
    min_time_s: float = 0.05,
    warmup: int = 3,
) -> dict[str, float]:
    """Median milliseconds per call of each function, measured in interleaved rounds.

    Each round times every function back to back (a block of calls lasting at
    least ``min_time_s``), so slow drifts of the machine hit all variants alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    numbers = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-6)
        numbers[name] = max(1, int(min_time_s / once))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = numbers[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain, aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def setup_threads(threads: int | None) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
