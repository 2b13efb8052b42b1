"""The exposure-response figure: observed rates per exposure bin, the fitted probability
with its confidence band, and the subjects, on a log exposure axis.

The function returns the Figure and saves it (and closes it) when given a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_exposure_response"]

#: Markers of the groups, in order (colours are matplotlib's C0, C1, ...).
MARKERS = "osD^vP*Xph"

#: Half-height of the subjects' vertical jitter around 0 and 1 (probability units).
JITTER = 0.03


def plot_exposure_response(
    panels: Sequence[tuple[str, pd.DataFrame, pd.DataFrame]],
    subjects: pd.DataFrame,
    exposure_label: str,
    ylabel: str,
    by: str | None,
    level: float,
    ax: Axes | None = None,
    path: str | PathLike[str] | None = None,
    title: str = "",
) -> Figure:
    """Draw an exposure-response fit.

    Args:
        panels: per threshold drawn, (label such as ``"= 1"`` or ``">= 2"``, band,
            observed): band has exposure, probability, low, high on a fine grid; observed
            has exposure_median, rate, ci_low, ci_high per exposure bin. One panel is
            drawn in black; several in shades of a sequential colour map.
        subjects: per subject: exposure, group, and event (0/1) when one threshold is
            drawn (the subjects are then points at 0 and 1, jittered vertically with a
            fixed seed); without event, a rug beneath the axis.
        exposure_label: the exposure's name (and unit) for the x axis, which is log.
        ylabel: the probability drawn; by: the grouping column's name, or None.
        level: the level of the band and the CIs (for the legend).
        ax: axes to draw on (default a new figure); path: where to save it, or None.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5)) if ax is None else (ax.figure, ax)
    percent = f"{100 * level:g} %"
    if len(panels) == 1:
        colours = ["black"]
    else:
        colours = [plt.get_cmap("viridis")(v) for v in np.linspace(0.0, 0.85, len(panels))]
    for (label, band, observed), colour in zip(panels, colours, strict=True):
        name = "" if len(panels) == 1 else f" {label}"
        ax.fill_between(band["exposure"], band["low"], band["high"], color=colour, alpha=0.15)
        ax.plot(
            band["exposure"],
            band["probability"],
            color=colour,
            lw=1.8,
            label=f"fitted{name} ({percent} CI)",
        )
        ax.errorbar(
            observed["exposure_median"],
            observed["rate"],
            yerr=[
                observed["rate"] - observed["ci_low"],
                observed["ci_high"] - observed["rate"],
            ],
            fmt="s",
            color=colour,
            mfc="white",
            ms=6,
            capsize=3,
            label=f"observed{name} per quartile (exact {percent} CI)",
        )
    groups = sorted(pd.unique(subjects["group"]), key=lambda g: (str(type(g)), g))
    if "event" in subjects:
        jitter = np.random.default_rng(0).uniform(-JITTER, JITTER, len(subjects))
        heights = subjects["event"].to_numpy() + jitter
    else:
        heights = np.full(len(subjects), -0.06)
    for k, group in enumerate(groups):
        inside = (subjects["group"] == group).to_numpy()
        ax.scatter(
            subjects["exposure"].to_numpy()[inside],
            heights[inside],
            s=18,
            alpha=0.7,
            color=f"C{k}" if by is not None else "C7",
            marker=MARKERS[k % len(MARKERS)] if "event" in subjects else "|",
            label=_group_label(by, group),
        )
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones collide
    ax.set_ylim(-0.1, 1.08)
    ax.set_xlabel(f"{exposure_label} (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig


def _group_label(by: str | None, group: object) -> str:
    """``DOSE 2e+06`` (numbers by ``:g``), or ``subjects`` without groups."""
    if by is None:
        return "subjects"
    value = f"{group:g}" if isinstance(group, int | float | np.number) else str(group)
    return f"{by} {value}"
