"""How many torch threads few-shot training should use, given what other processes do with the CPUs.

A batch-1 training step is thousands of small ops, each ending at a barrier across torch's threads. When another
process holds a core, every barrier waits for the scheduler: measured on 2 cores with another torch job running,
2 threads took 30-40 s a step and 1 thread 0.7 s (idle: 0.5 s with 2 threads, 0.75 s with 1). So training uses
torch's threads while the other cores are free and one thread while other processes keep them busy, looking
again every few steps (a benchmark may start mid-training).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

BUSY_CORES = 0.5  # other processes using at least this many cores: train on one thread


class OtherLoad:
    """CPU use of other processes since the previous look, from ``/proc/stat`` (Linux; unknown elsewhere)."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(wall seconds, CPU seconds busy on the whole machine, CPU seconds of this process)."""
        try:
            first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
            ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
            per_second = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / per_second
        return time.monotonic(), busy, time.process_time()

    def cores(self) -> float | None:
        """How many cores other processes kept busy, on average, since the previous call (or creation)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] < 0.05:
            return None
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0]))


def train_threads(other_cores: float | None, default: int) -> int:
    """Torch's ``default`` threads, or 1 while other processes keep at least :data:`BUSY_CORES` busy."""
    if other_cores is None or default <= 1:
        return default
    return 1 if other_cores >= BUSY_CORES else default
