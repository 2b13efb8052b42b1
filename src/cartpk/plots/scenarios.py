"""Figures of dose scenarios: exposure distributions and prediction bands per dose.

Every function returns the Figure and saves it (and closes it) when given a path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["dose_label", "plot_bands", "plot_exposure"]

#: One band per dose: (name, band table, log axis, upper limit of normal or None).
Panel = tuple[str, pd.DataFrame, bool, float | None]


def dose_label(dose: float) -> str:
    """A dose in cells/kg as the usual ×10^6 label, e.g. ``2.0×10⁶/kg``."""
    return f"{dose / 1e6:g}×10⁶/kg"


def plot_exposure(
    patients: pd.DataFrame,
    metrics: Sequence[str],
    output: str,
    unit: str,
    path: str | PathLike[str] | None = None,
    note: str | None = None,
) -> Figure:
    """One panel per metric (cmax, tmax, AUC): a box per dose, whiskers at 5-95 %.

    Args:
        patients: a ScenarioResult's ``patients`` table (DOSE, status and the metrics).
        metrics: the metric columns, e.g. ``("cmax", "tmax", "auc_0_28")``; cmax and AUC
            are drawn on a log axis.
        output, unit: the output's name and unit, for the axis labels.
        path: where to save the figure, or None.
        note: appended to the title (e.g. how many patient-doses could not be solved and
            why); None: the count of rows with status != 0.
    """
    solved = patients[patients["status"] == 0]
    doses = list(dict.fromkeys(patients["DOSE"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), squeeze=False)
    units = {"cmax": unit, "tmax": "day"}
    for ax, metric in zip(axes[0], metrics, strict=True):
        data = [solved.loc[solved["DOSE"] == d, metric].to_numpy(dtype=float) for d in doses]
        ax.boxplot(data, whis=(5, 95), showfliers=False, medianprops={"color": "black"})
        ax.set_xticks(range(1, len(doses) + 1), [dose_label(d) for d in doses])
        if metric != "tmax" and any((values > 0).any() for values in data):
            ax.set_yscale("log")  # not when no patient was solved: nothing to draw
        ax.set_title(f"{output} {metric} ({units.get(metric, f'{unit}·day')})", fontsize=10)
        ax.set_xlabel("dose")
        ax.grid(alpha=0.3, which="both", axis="y")
    if note is None:
        failed = len(patients) - len(solved)
        note = f"; {failed} not solved, left out" if failed else ""
    fig.suptitle(f"{len(patients) // len(doses)} virtual patients per dose{note}", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def plot_bands(
    panels: Sequence[Panel],
    units: Mapping[str, str],
    path: str | PathLike[str] | None = None,
    note: str = "",
) -> Figure:
    """One panel per output against time: median line and 5-95 % band per dose.

    Args:
        panels: (output, bands table with DOSE, TIME, median, p5, p95, log axis?, upper
            limit of normal drawn as a dashed line or None).
        units: output name -> unit.
        path: where to save the figure, or None.
        note: appended to the title (e.g. how many patients could not be solved).
    """
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3 * len(panels)), squeeze=False)
    colours = plt.get_cmap("viridis")
    for ax, (name, bands, log, normal) in zip(axes[:, 0], panels, strict=True):
        doses = list(dict.fromkeys(bands["DOSE"]))
        for i, dose in enumerate(doses):
            rows = bands[bands["DOSE"] == dose]
            colour = colours(i / max(len(doses) - 1, 1) * 0.85)
            ax.fill_between(rows["TIME"], rows["p5"], rows["p95"], color=colour, alpha=0.2)
            ax.plot(rows["TIME"], rows["median"], color=colour, lw=1.8, label=dose_label(dose))
        if normal is not None:
            ax.axhline(
                normal, color="grey", ls="--", lw=1, label=f"upper limit of normal {normal:g}"
            )
        if log and (bands["p5"] > 0).any():
            ax.set_yscale("log")
        unit = units.get(name)
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0, 0].set_title(f"median and 5-95 % of virtual patients per dose{note}", fontsize=10)
    axes[-1, 0].set_xlabel("time since infusion (day)")
    fig.tight_layout()
    return _finish(fig, path)


def _finish(fig: Figure, path: str | PathLike[str] | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
