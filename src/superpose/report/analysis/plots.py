"""PNG figures for the analyses: each function draws one figure, writes it to `path` and returns the path.

Figures are built on the Agg canvas directly (no pyplot), so plotting never depends on a display,
never switches the process-wide backend, and leaves no open figures behind.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "plot_embedding_panels",
    "plot_trajectories",
    "plot_layer_distances",
    "plot_alpha",
    "plot_grouped_bars",
    "plot_stack_weights",
    "plot_gate_heatmap",
]

DPI = 110
# Fixed colours so a model looks the same in every figure of the report.
MODEL_COLOURS = {"superposed": "tab:green", "base": "tab:blue", "expert": "tab:orange"}
_FALLBACK = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]


def colour_for(name: str, index: int) -> str:
    """Colour of a model/series: the fixed one for known names, else a stable fallback by position."""
    return MODEL_COLOURS.get(name, _FALLBACK[index % len(_FALLBACK)])


def _panels(n: int, title: str, panel_size: tuple[float, float] = (4.6, 4.0)) -> tuple[Figure, list[Axes]]:
    """A figure with `n` panels on a grid of at most 3 columns; unused grid cells are hidden."""
    if n < 1:
        raise ValueError("nothing to plot: no panels given")
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows + 0.6))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes[:n]


def _save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PNG (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _check_layers(series: np.ndarray, layer_ids: Sequence[int], what: str) -> None:
    if len(series) != len(layer_ids):
        raise ValueError(f"{what} has {len(series)} layers but layer_ids has {len(layer_ids)}")


def plot_embedding_panels(
    points_by_panel: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, title: str
) -> Path:
    """Scatter 2-D embeddings: one panel per input domain, one colour per model.

    Shows whether the superposed model's hidden states sit with the base model's on base text and
    with the expert's on expert text. `points_by_panel[domain][model]` is an `(N, 2)` array.
    """
    fig, axes = _panels(len(points_by_panel), title)
    for ax, (domain, by_model) in zip(axes, points_by_panel.items()):
        for i, (model, pts) in enumerate(by_model.items()):
            pts = np.asarray(pts, dtype=np.float64)  # (N, 2)
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise ValueError(f"points for {domain}/{model} must be (N, 2), got {pts.shape}")
            ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.6, color=colour_for(model, i), label=model)
        ax.set_title(f"input: {domain}")
        ax.set_xlabel("dim 1")
        ax.set_ylabel("dim 2")
        ax.legend(loc="best", fontsize="small", markerscale=1.5)
    return _save(fig, path)


def _annotation_step(n_layers: int, max_labels: int = 12) -> int:
    """Label every layer for shallow models, every k-th for deep ones so labels stay legible."""
    return max(1, math.ceil(n_layers / max_labels))


def plot_trajectories(
    traj: Mapping[str, Mapping[str, np.ndarray]], layer_ids: Sequence[int], path: str | Path
) -> Path:
    """Per-layer mean hidden-state paths in a shared PCA plane: one panel per domain, one line per model.

    `traj[domain][model]` is `(L, 2)`; points are labelled with their layer number so one can see
    at which depth the superposed path leaves or joins the base and expert paths.
    """
    fig, axes = _panels(len(traj), "Layer-wise trajectory of mean hidden states (PCA)")
    step = _annotation_step(len(layer_ids))
    for ax, (domain, by_model) in zip(axes, traj.items()):
        for i, (model, pts) in enumerate(by_model.items()):
            pts = np.asarray(pts, dtype=np.float64)  # (L, 2)
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise ValueError(f"trajectory for {domain}/{model} must be (L, 2), got {pts.shape}")
            _check_layers(pts, layer_ids, f"trajectory {domain}/{model}")
            colour = colour_for(model, i)
            ax.plot(pts[:, 0], pts[:, 1], "-o", ms=3, lw=1.2, color=colour, label=model)
            for j, layer in enumerate(layer_ids):
                if j % step == 0 or j == len(layer_ids) - 1:
                    ax.annotate(str(layer), pts[j], textcoords="offset points", xytext=(3, 3),
                                fontsize=7, color=colour)
        ax.set_title(f"input: {domain}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_layer_distances(
    dist: Mapping[str, Mapping[str, Sequence[float]]], layer_ids: Sequence[int], path: str | Path
) -> Path:
    """Mean L2 distance between models' hidden states per layer: one panel per domain, one line per pair.

    `dist[domain][pair]` (pairs such as "base–superposed", "expert–superposed", "base–expert") holds
    one value per layer; a superposed model close to the base on base text and to the expert on
    expert text is what the method aims for.
    """
    fig, axes = _panels(len(dist), "Hidden-state distance between models per layer")
    for ax, (domain, by_pair) in zip(axes, dist.items()):
        for i, (pair, values) in enumerate(by_pair.items()):
            _check_layers(values, layer_ids, f"distances {domain}/{pair}")
            ax.plot(list(layer_ids), list(values), "-o", ms=3, color=_FALLBACK[i % len(_FALLBACK)], label=pair)
        ax.set_title(f"input: {domain}")
        ax.set_xlabel("layer")
        ax.set_ylabel("mean L2 distance")
        ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_alpha(
    alpha: np.ndarray, path: str | Path, layer_ids: Sequence[int] | None = None, title: str = "Blend weights α"
) -> Path:
    """The learned blend weights: a curve over layers for `(L,)`, a layers × dimensions heat-map for `(L, D)`.

    α near 1 means the layer follows the expert, near 0 the base (the convention of the caller's
    blend); the plot shows where in depth the superposed model switches between them.
    """
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"alpha must be a non-empty (L,) or (L, D) array, got shape {a.shape}")
    layers = list(layer_ids) if layer_ids is not None else list(range(a.shape[0]))
    _check_layers(a, layers, "alpha")
    fig = Figure(figsize=(7.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if a.ndim == 1:  # (L,)
        ax.plot(layers, a, "-o", ms=4, color=MODEL_COLOURS["superposed"], label="α")
        ax.set_ylim(min(0.0, a.min()) - 0.02, max(1.0, a.max()) + 0.02)  # [0, 1] unless α leaves it
        ax.set_xlabel("layer")
        ax.set_ylabel("α")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    else:  # (L, D)
        image = ax.imshow(a, aspect="auto", interpolation="nearest", cmap="viridis",
                          vmin=min(0.0, a.min()), vmax=max(1.0, a.max()),
                          extent=(-0.5, a.shape[1] - 0.5, len(layers) - 0.5, -0.5))
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels([str(layer) for layer in layers])
        if len(layers) > 24:  # keep tick labels legible on deep models
            for k, label in enumerate(ax.get_yticklabels()):
                label.set_visible(k % _annotation_step(len(layers), 24) == 0)
        ax.set_xlabel("hidden dimension")
        ax.set_ylabel("layer")
        fig.colorbar(image, ax=ax, label="α")
    ax.set_title(title)
    return _save(fig, path)


def plot_grouped_bars(
    values: Mapping[str, Mapping[str, float]], path: str | Path, title: str, ylabel: str, log: bool = False
) -> Path:
    """Grouped bars, `values[group][series]`: e.g. perplexity per domain (group) and model (series).

    Series are ordered by first appearance; a missing or non-finite value leaves a gap instead of a
    misleading bar. With `log=True` all drawn values must be positive.
    """
    if not values:
        raise ValueError("values is empty")
    groups = list(values)
    series: list[str] = []
    for by_series in values.values():
        series.extend(s for s in by_series if s not in series)
    if not series:
        raise ValueError("values holds no series")
    table = np.array([[float(values[g].get(s, np.nan)) for s in series] for g in groups])  # (G, S)
    finite = np.isfinite(table)
    if log and np.any(table[finite] <= 0):
        raise ValueError("log scale needs positive values")
    fig = Figure(figsize=(max(6.0, 0.5 * len(groups) * len(series) + 2.5), 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    x = np.arange(len(groups))  # (G,)
    for j, name in enumerate(series):
        heights = np.where(finite[:, j], table[:, j], 0.0)  # (G,)
        offsets = x - 0.4 + width * (j + 0.5)
        bars = ax.bar(offsets[finite[:, j]], heights[finite[:, j]], width=width,
                      color=colour_for(name, j), label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_stack_weights(
    weights: np.ndarray, stack_names: Sequence[str], path: str | Path, title: str = "Static blend weight of each stack"
) -> Path:
    """Each stack's static blend weight over layers, one line per stack (several experts, where α is no longer one
    number). `weights` is `(L, M)` or `(L, M, D)`; a per-dimension blend is averaged over D."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 3:
        w = w.mean(axis=2)  # (L, M)
    if w.ndim != 2 or w.size == 0 or w.shape[1] != len(stack_names):
        raise ValueError(f"weights must be (L, M) or (L, M, D) with M = {len(stack_names)} stacks, "
                         f"got {np.shape(weights)}")
    fig = Figure(figsize=(7.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    layers = np.arange(w.shape[0])
    for m, name in enumerate(stack_names):
        ax.plot(layers, w[:, m], "-o", ms=4, color=colour_for(name, m), label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("weight")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def _tick_label(token: str) -> str:
    """A token as a tick label: '$' escaped so matplotlib does not read it as mathtext."""
    return token.replace("$", r"\$")


def plot_gate_heatmap(
    weights: np.ndarray, tokens: Sequence[str], stack_names: Sequence[str], path: str | Path,
    boundaries: Sequence[int] = (), title: str = "Gate weight per token and layer",
) -> Path:
    """One panel per stack: rows = layers, columns = tokens, colour = that stack's weight (0..1).

    `weights` is `(L, T, M)`; `tokens` label the columns and `boundaries` (token indices where the text
    changes language) are drawn as dashed lines, so one sees whether the weight follows the switch.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 3 or w.size == 0 or w.shape[1] != len(tokens) or w.shape[2] != len(stack_names):
        raise ValueError(f"weights must be (L, T, M) with T = {len(tokens)} tokens and M = {len(stack_names)} "
                         f"stacks, got {w.shape}")
    n_layers, n_tokens, n_stacks = w.shape
    fig = Figure(figsize=(max(6.0, 0.16 * n_tokens + 2.0), (0.22 * n_layers + 1.4) * n_stacks + 0.8))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(n_stacks, 1, m + 1) for m in range(n_stacks)]
    for m, (ax, name) in enumerate(zip(axes, stack_names)):
        image = ax.imshow(w[:, :, m], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
        for boundary in boundaries:
            ax.axvline(boundary - 0.5, color="white", ls="--", lw=1.0)
        ax.set_title(f"stack: {name}", fontsize="medium")
        ax.set_ylabel("layer")
        ax.set_yticks(range(0, n_layers, _annotation_step(n_layers)))
        ax.set_xticks(range(n_tokens))
        ax.set_xticklabels([_tick_label(t) for t in tokens] if m == n_stacks - 1 else [], rotation=90, fontsize=7)
    fig.colorbar(image, ax=axes, label="weight", fraction=0.03, pad=0.01)
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")  # colorbar spans all panels: no tight_layout
    return path
