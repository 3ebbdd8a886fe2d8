"""The timing every benchmark shares, with no dependency but NumPy (the PyTorch peers' process imports it too)."""

from __future__ import annotations

import time

import numpy as np


def median_seconds(run, steps: int) -> float:
    """``run()`` once to warm up, then the median wall time of ``steps`` more calls."""
    run()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: ``header``, the rule, a line per row of cells."""
    line = lambda cells: "| " + " | ".join(cells) + " |"
    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]
