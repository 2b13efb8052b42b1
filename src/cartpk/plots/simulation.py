"""Figures of simulations: model outputs of simulated subjects against time.

Every function returns the Figure and saves it (and closes it) when given a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["plot_simulation"]

UNITS = {"CART": "copies/µg DNA", "VEGF": "ng/L"}


def plot_simulation(
    frame: pd.DataFrame,
    outputs: Sequence[str],
    path: str | PathLike[str] | None = None,
    log_outputs: Sequence[str] = ("CART",),
) -> Figure:
    """One panel per model output against time (days), one line per subject.

    Args:
        frame: a ``simulate()`` result: ID, TIME (day) and one column per output.
        outputs: the outputs to draw, in panel order.
        path: where to save the figure (format from the suffix), or None.
        log_outputs: outputs drawn on a log axis (CAR-T levels span orders of magnitude).
    """
    fig, axes = plt.subplots(
        len(outputs), 1, figsize=(7, 2.8 * len(outputs)), sharex=True, squeeze=False
    )
    for ax, output in zip(axes[:, 0], outputs, strict=True):
        for subject, rows in frame.groupby("ID", sort=False):
            ax.plot(rows["TIME"], rows[output], lw=1.5, label=f"ID {subject}")
        if output in log_outputs:
            ax.set_yscale("log")
        unit = UNITS.get(output)
        ax.set_ylabel(f"{output} ({unit})" if unit else output)
        ax.grid(alpha=0.3, which="both")
    axes[-1, 0].set_xlabel("time since infusion (day)")
    if frame["ID"].nunique() <= 8 and frame["ID"].nunique() > 1:
        axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
