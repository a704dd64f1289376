"""A 2-D map of one space: PCA of the normalised vectors, clusters coloured and named, new models starred.

The projection is numpy (deterministic: each axis's sign is fixed so that its largest loading is positive);
drawing uses matplotlib's object API on the Agg canvas (no pyplot, no global figure state, no display), so it
runs in a daemon and gives the same PNG for the same input.

Up to ``SCATTER_MAX`` models every point is drawn, coloured by cluster. A larger space (a million models would
be one solid blot, and slow to draw) is drawn as its density: a 2-D histogram on a log scale in grey, with the
largest clusters marked and named at their centres. New models are drawn on top in both, always, every one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hubdelta.kernel.errors import MissingDependencyError
from hubdelta.report import pca
from hubdelta.report.match import id_order
from hubdelta.report.records import MapLayer, SpaceMap

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 7.0, 100  # 1000 x 700 px
NOISE_COLOUR = "#b0b0b0"
LEGEND_MAX = 20  # largest clusters named in the legend
LABELS_MAX = 40  # largest clusters labelled on the map: more would hide the points
SCATTER_MAX = 20_000  # points drawn one by one; above, the density
SVD_MAX = 50_000  # rows projected by an exact SVD; above, by the blocked PCA (the same axes, without a copy)
BINS = (350, 245)  # the density's cells: ~2 x 2 px each on the plot area


def project_2d(unit: np.ndarray) -> np.ndarray:
    """``(N, C)`` rows → ``(N, 2)`` coordinates on their first two principal axes (zeros when N < 2)."""
    n = len(unit)
    out = np.zeros((n, 2), dtype=np.float64 if n <= SVD_MAX else unit.dtype)
    if n < 2:
        return out
    if n > SVD_MAX:
        mean, axes = pca.principal_axes(unit, 2)
        out[:, : axes.shape[1]] = pca.project(unit, mean, axes)
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
    fig = map_figure(space_map)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No metadata: the default one names the matplotlib version, which would change the bytes across upgrades.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def map_figure(space_map: SpaceMap) -> Any:
    """The map as a matplotlib ``Figure`` on an Agg canvas (one axes), ready to save.

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
    layer = space_map.arrays()
    dense = len(layer.xy) > SCATTER_MAX
    if dense:
        _density(ax, layer, space_map.names)
    else:
        _scatter(ax, layer, space_map.names)
    _new(ax, layer, on_top=dense)
    ax.set_title(space_map.title, fontsize=11)
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.grid(True, alpha=0.25)
    if len(layer.xy):
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.07, right=0.70, top=0.93, bottom=0.08)
    return fig


def _ranked(layer: MapLayer) -> tuple[list[int], np.ndarray, set[int], set[int]]:
    """Cluster indices in id order, sizes by index, and the indices named in the legend and on the map."""
    order = sorted(range(len(layer.cluster_ids)), key=lambda i: id_order(layer.cluster_ids[i]))
    sizes = np.bincount(layer.cluster[layer.cluster >= 0], minlength=len(layer.cluster_ids))
    largest = sorted(order, key=lambda i: (-sizes[i], id_order(layer.cluster_ids[i])))
    return order, sizes, set(largest[:LEGEND_MAX]), set(largest[:LABELS_MAX])


def _scatter(ax: Any, layer: MapLayer, names: dict[str, str]) -> None:
    """Every point, coloured by cluster, each of the largest clusters named at its mean."""
    order, sizes, legend, labelled = _ranked(layer)
    colours = _colours(len(order))
    noise = layer.cluster < 0
    if noise.any():
        grey = f"unclustered ({int(noise.sum())})"
        ax.scatter(layer.xy[noise, 0].tolist(), layer.xy[noise, 1].tolist(), s=18, c=NOISE_COLOUR, label=grey)
    for rank, i in enumerate(order):
        cid, members = layer.cluster_ids[i], layer.xy[layer.cluster == i]
        label = f"{cid}: {names.get(cid, cid)} ({sizes[i]})" if i in legend else None
        ax.scatter(members[:, 0].tolist(), members[:, 1].tolist(), s=30, color=colours[rank], label=label)
        if i in labelled:
            _name(ax, names.get(cid, cid), members.mean(axis=0), colours[rank])


def _density(ax: Any, layer: MapLayer, names: dict[str, str]) -> None:
    """The points' density (log scale, grey), and the largest clusters marked and named at their centres."""
    from matplotlib.colors import LogNorm

    x, y = layer.xy[:, 0], layer.xy[:, 1]
    counts, xs, ys = np.histogram2d(x, y, bins=BINS)
    shown = np.ma.masked_equal(counts.T, 0)  # empty cells stay white
    ax.imshow(shown, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]), aspect="auto", cmap="Greys",
              norm=LogNorm(vmin=1, vmax=max(2.0, float(counts.max()))), interpolation="nearest")  # fmt: skip
    ax.scatter([], [], s=30, marker="s", c="#777777", label=f"{len(x):,} models (density, log scale)")
    order, sizes, legend, labelled = _ranked(layer)
    colours = _colours(len(order))
    members = np.flatnonzero(layer.cluster >= 0)
    total = np.maximum(sizes, 1)[:, None]
    centres = np.stack([np.bincount(layer.cluster[members], weights=layer.xy[members, k],
                                    minlength=len(sizes)) for k in (0, 1)], axis=1) / total  # fmt: skip
    for rank, i in enumerate(order):
        if i not in labelled:
            continue
        cid = layer.cluster_ids[i]
        label = f"{cid}: {names.get(cid, cid)} ({sizes[i]:,})" if i in legend else None
        ax.scatter([centres[i, 0]], [centres[i, 1]], s=45, color=colours[rank], edgecolors="black",
                   linewidths=0.6, label=label)  # fmt: skip
        _name(ax, names.get(cid, cid), centres[i], colours[rank])


def _name(ax: Any, text: str, at: np.ndarray, colour: Any) -> None:
    ax.annotate(text, (float(at[0]), float(at[1])), textcoords="offset points", xytext=(0, 9), ha="center",
                fontsize=9, weight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "alpha": 0.85})  # fmt: skip


def _new(ax: Any, layer: MapLayer, on_top: bool) -> None:
    """Every new model, starred; over a density, above the names too, and smaller when there are hundreds."""
    new = layer.xy[layer.new]
    if not len(new):
        return
    size, width, extra = 180, 1.2, {}
    if on_top:  # the scatter map draws them last, as it always has
        size, width = (180, 1.2) if len(new) <= 200 else (40, 0.7) if len(new) <= 2000 else (10, 0.5)
        extra = {"zorder": 5}
    ax.scatter(new[:, 0].tolist(), new[:, 1].tolist(), s=size, marker="*", facecolors="none", edgecolors="black",
               linewidths=width, label=f"new since last report ({len(new)})", **extra)  # fmt: skip


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
