"""Figures beside the CSVs: one consistent look for every diagnostic's per-layer plots.

Most diagnostics produce "a value per layer, for a few series" (MLP vs attention, forget vs retain,
model A vs model B). `plot_by_layer` draws one or more panels of such curves and saves the PNG
atomically; anything more specific builds its own figure and calls `save_figure`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (CI, servers)
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from brittle.outputs import FILE_MODE

Series = tuple[Sequence[float], Sequence[float]]  # (x values, y values)

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                     "axes.spines.right": False, "legend.frameon": False})


def save_figure(figure: plt.Figure, path: str | Path) -> Path:
    """Save a PNG atomically (temporary file in the same folder, then rename) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.tight_layout()
        figure.savefig(temporary, format="png", bbox_inches="tight")
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
        plt.close(figure)
    return path


def plot_by_layer(path: str | Path, title: str, panels: Mapping[str, Mapping[str, Series]], ylabel: str,
                  xlabel: str = "layer", log_y: bool = False, reference: float | None = None,
                  reference_label: str | None = None) -> Path:
    """One panel per entry of `panels` (panel title -> {series label -> (x, y)}), side by side.

    `reference` draws a dashed horizontal line (e.g. chance accuracy, or ratio 1).
    """
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for axis, (panel_title, series) in zip(axes[0], panels.items(), strict=True):
        for label, (x_values, y_values) in series.items():
            axis.plot(list(x_values), list(y_values), marker="o", markersize=3.5, linewidth=1.6, label=label)
        if reference is not None:
            axis.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label)
        if log_y:
            axis.set_yscale("log")
        axis.set_title(panel_title)
        axis.set_xlabel(xlabel)
        if xlabel == "layer":
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
        axis.set_ylabel(ylabel)
        if len(series) > 1 or reference_label:
            axis.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    return save_figure(figure, path)
