"""A 2-D map of one space: PCA of the normalised vectors, points coloured by cluster, new models starred.

The projection is numpy (deterministic: each axis's sign is fixed so that its largest loading is positive);
drawing uses matplotlib's object API on the Agg canvas (no pyplot, no global figure state, no display), so it
runs in a daemon and gives the same PNG for the same input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hubdelta.kernel.errors import MissingDependencyError
from hubdelta.report.match import id_order
from hubdelta.report.records import SpaceMap

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 7.0, 100  # 1000 x 700 px
NOISE_COLOUR = "#b0b0b0"
LEGEND_MAX = 20  # largest clusters named in the legend
LABELS_MAX = 40  # largest clusters labelled on the map: more would hide the points


def project_2d(unit: np.ndarray) -> np.ndarray:
    """``(N, C)`` rows → ``(N, 2)`` coordinates on their first two principal axes (zeros when N < 2)."""
    n = len(unit)
    out = np.zeros((n, 2))
    if n < 2:
        return out
    centred = unit - unit.mean(axis=0)  # (N, C)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(N, C), C)
    axes = vt[:2]  # (k, C), k <= 2
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])  # largest loading positive
    coords = centred @ (axes * signs[:, None]).T  # (N, k)
    out[:, : coords.shape[1]] = coords
    return out


def draw_map(space_map: SpaceMap, path: Path) -> Path:
    """Write ``space_map`` as a PNG at ``path`` (about 1000 x 700 px).

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``report`` extra).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependencyError("matplotlib", extra="report") from e
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = space_map.points
    ids = sorted({p.cluster_id for p in points if p.cluster_id is not None}, key=id_order)
    colours = _colours(len(ids))
    sizes = Counter(p.cluster_id for p in points if p.cluster_id is not None)
    largest = sorted(ids, key=lambda c: (-sizes[c], id_order(c)))
    legend, labelled = set(largest[:LEGEND_MAX]), set(largest[:LABELS_MAX])
    noise = [p for p in points if p.cluster_id is None]
    if noise:
        grey = f"unclustered ({len(noise)})"
        ax.scatter([p.x for p in noise], [p.y for p in noise], s=18, c=NOISE_COLOUR, label=grey)
    for i, cid in enumerate(ids):
        members = [p for p in points if p.cluster_id == cid]
        label = f"{cid}: {space_map.names.get(cid, cid)} ({len(members)})" if cid in legend else None
        ax.scatter([p.x for p in members], [p.y for p in members], s=30, color=colours[i], label=label)
        if cid not in labelled:
            continue
        cx, cy = float(np.mean([p.x for p in members])), float(np.mean([p.y for p in members]))
        ax.annotate(space_map.names.get(cid, cid), (cx, cy), textcoords="offset points", xytext=(0, 9),
                    ha="center", fontsize=9, weight="bold",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colours[i], "alpha": 0.85})  # fmt: skip
    new = [p for p in points if p.new]
    if new:
        ax.scatter([p.x for p in new], [p.y for p in new], s=180, marker="*", facecolors="none",
                   edgecolors="black", linewidths=1.2, label=f"new since last report ({len(new)})")  # fmt: skip
    ax.set_title(space_map.title, fontsize=11)
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.grid(True, alpha=0.25)
    if points:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.07, right=0.70, top=0.93, bottom=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No metadata: the default one names the matplotlib version, which would change the bytes across upgrades.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _colours(n: int) -> Sequence[tuple[float, float, float, float]]:
    """``n`` distinct colours: tab10 first, then tab20's lighter ones, then evenly spaced hues."""
    from matplotlib import colormaps

    base = [colormaps["tab10"](i) for i in range(10)] + [colormaps["tab20"](i) for i in range(1, 20, 2)]
    base = [c for c in base if not _greyish(c)]
    if n <= len(base):
        return base[:n]
    return [colormaps["hsv"](i / n) for i in range(n)]


def _greyish(colour: tuple[float, float, float, float]) -> bool:
    r, g, b, _ = colour
    return max(r, g, b) - min(r, g, b) < 0.08  # would read as noise
