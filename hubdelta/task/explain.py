"""``hubdelta task --explain``: the task vector's length against the space, and how stable its neighbours were.

Pure: given the checkpoints measured along training and a way to list a vector's top-k, it says how long the
vector is against the space's median vector and how much of the final top-k each checkpoint already had. A
task whose top-k keeps changing until the last step is a task the index cannot answer firmly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hubdelta.task.records import CheckpointView, TaskExplain
from hubdelta.task.tracking import Checkpoint

TopK = Callable[[np.ndarray], Sequence[str]]  # a vector's k nearest visible models, best first


def _ratio(norm: float, space_norm: float | None) -> float | None:
    return round(norm / space_norm, 4) if space_norm else None


def explain(space_id: str, schedule: str, space_norm: float | None, vector: np.ndarray, steps: int,
            checkpoints: Sequence[Checkpoint], final_top: Sequence[str], top_k: TopK) -> TaskExplain:  # fmt: skip
    """The explanation of a task vector (``vector``: the saved adapter's, embedded; ``final_top``: its top-k)."""
    final = set(final_top)
    views = []
    for point in checkpoints:
        shared = len(final & set(top_k(point.vector))) / len(final) if final else 0.0
        views.append(CheckpointView(point.step, round(point.norm, 6), _ratio(point.norm, space_norm), round(shared, 4)))
    late = [v.top_k_shared for v in views if v.step * 2 >= steps]
    norm = float(np.linalg.norm(vector))
    stability = round(float(np.mean(late)), 4) if late else None
    ratio = _ratio(norm, space_norm)
    return TaskExplain(space_id, schedule, space_norm, round(norm, 6), ratio, steps, tuple(views), stability)
