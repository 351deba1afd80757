"""Seaborn figures the chapters share (chapter 1 introduces them)."""

from __future__ import annotations

import io
import math

import matplotlib

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .methods import row_title

MODALITY_PALETTE = {"fused": "#333333", "gray": "#7f7f7f", "color": "#d62728"}


def _palette(modalities):
    extra = iter(sns.color_palette("tab10"))
    return {m: MODALITY_PALETTE.get(m) or next(extra) for m in modalities}


def integer_epochs(target) -> None:
    """Whole-number ticks on the epoch axis of an Axes, a seaborn grid or a figure; call it after plotting.

    An axis that spans fewer than two whole numbers (a run with one recorded epoch plots one point) is
    widened to one epoch either side of its centre and ticked at that epoch only: left alone, matplotlib
    falls back to crowded fractional ticks."""
    from matplotlib.ticker import MaxNLocator

    axes = getattr(target, "axes", target)
    axes = axes.flat if hasattr(axes, "flat") else (axes if isinstance(axes, (list, tuple)) else [axes])
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        low, high = ax.get_xlim()
        if math.floor(high) - math.ceil(low) < 1:
            centre = round((low + high) / 2)
            ax.set_xlim(centre - 1, centre + 1)
            ax.set_xticks([centre])


def plot_curves(frame: pd.DataFrame, metric: str, split: str = "test", *, methods=None,
                ylabel: str | None = None, col_wrap: int = 4, height: float = 2.6, modalities=None):
    """One panel per method, titled as the tables name it (:func:`mmlab.methods.row_title`); one line per modality
    (mean over seeds, band = spread)."""
    data = frame[(frame.metric == metric) & (frame.split == split)]
    if methods is not None:
        data = data[data.method.isin(methods)]
    if modalities is not None:
        data = data[data.modality.isin(modalities)]
    if data.empty:
        raise ValueError(f"no values of {split}/{metric} in these records")
    order = list(dict.fromkeys(methods or data.method))
    grid = sns.relplot(data=data, x="epoch", y="value", hue="modality", col="method", col_order=order,
                       kind="line", marker="o", palette=_palette(data.modality.unique()),
                       col_wrap=min(col_wrap, len(order)), height=height, aspect=1.15,
                       facet_kws={"sharey": True})
    grid.set_axis_labels("epoch", ylabel or f"{split} {metric}")
    for ax, method in zip(grid.axes.flat, order):
        ax.set_title(row_title(method))
    integer_epochs(grid)
    return grid


def figure_png(fig, dpi: int = 90) -> bytes:
    """A matplotlib figure (or seaborn grid) as PNG bytes; the figure is closed."""
    fig = getattr(fig, "figure", fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def show_samples(split, n: int = 10, title: str | None = None, modalities=("gray", "color")):
    """The first sample of each class (up to ``n``), one row per modality."""
    labels = split.labels
    chosen = [int((labels == c).nonzero()[0]) for c in range(min(n, int(labels.max()) + 1)) if (labels == c).any()]
    fig, axes = plt.subplots(len(modalities), len(chosen), figsize=(1.1 * len(chosen), 1.2 * len(modalities)))
    for row, m in enumerate(modalities):
        for col, i in enumerate(chosen):
            image = split.inputs[m][i]
            ax = axes[row, col]
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(m)
            if row == 0:
                ax.set_title(str(int(labels[i])), fontsize=9)
    if title:
        fig.suptitle(title, y=1.02)
    return fig
