"""t-SNE maps of labelled vectors, one panel per embedding method, coloured by label (matplotlib Agg, no pyplot)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubdelta.kernel.errors import MissingDependencyError

PANEL_IN, DPI = 4.2, 100
MAX_LEGEND = 20


@dataclass(frozen=True)
class Panel:
    """One map: a title, the vectors ``(N, C)`` and one label per row."""

    title: str
    vectors: np.ndarray
    labels: Sequence[str]


def tsne_2d(vectors: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """``(N, C)`` → ``(N, 2)`` t-SNE coordinates under cosine distance (deterministic for a seed).

    Perplexity follows the sample size (t-SNE needs it below N): min(30, (N − 1) / 3), at least 2.

    Raises:
        MissingDependencyError: scikit-learn is not installed (the ``report`` extra).
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise MissingDependencyError("scikit-learn", extra="report") from e
    n = len(vectors)
    if n < 4:
        return np.zeros((n, 2))
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(v))


def draw_panels(panels: Sequence[Panel], path: Path, *, columns: int = 3, seed: int = 0) -> Path:
    """Write the panels' t-SNE maps side by side as one PNG, labels in the same colours in every panel.

    Raises:
        MissingDependencyError: matplotlib or scikit-learn is not installed (the ``report`` extra).
    """
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError as e:
        raise MissingDependencyError("matplotlib", extra="report") from e
    names = sorted({label for p in panels for label in p.labels})
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colour = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    cols = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(PANEL_IN * cols, PANEL_IN * rows + 0.6), dpi=DPI)
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        xy = tsne_2d(panel.vectors, seed=seed)
        for name in names:
            own = np.asarray(panel.labels) == name
            if own.any():
                ax.scatter(xy[own, 0], xy[own, 1], s=36, color=colour[name], label=name, edgecolors="white")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = names[:MAX_LEGEND]
    handles = [Line2D([], [], marker="o", linestyle="", color=colour[n], markersize=7) for n in shown]
    fig.legend(handles, shown, loc="lower center", ncol=min(len(shown), 8), frameon=False)
    fig.tight_layout(rect=(0, 0.08 if rows == 1 else 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
