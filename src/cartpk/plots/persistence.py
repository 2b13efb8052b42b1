"""Figures of persistence: Kaplan-Meier curves with numbers at risk, and the observed
curve over a model's prediction band (VPC-style).

Every function returns the Figure and saves it (and closes it) when given a path. Times
are in days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["plot_km", "plot_km_vpc"]


def _steps(curve: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    times = np.concatenate([[0.0], curve["time"].to_numpy()])
    values = np.concatenate([[1.0], curve[column].to_numpy()])
    if curve["n_events"].sum() == 0:
        values = np.ones_like(values)
    return times, values


def _finish(fig: Figure, path: str | PathLike[str] | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig


def plot_km(
    data: pd.DataFrame,
    curves: Mapping[Any, pd.DataFrame],
    by: str | None,
    landmarks: Sequence[float],
    path: str | PathLike[str] | None = None,
    title: str = "",
) -> Figure:
    """KM step curves (CI shaded, censored subjects as ticks) and numbers at risk.

    ``data``: time, event, group per subject; ``curves``: group -> the KM table.
    """
    fig, (ax, table_ax) = plt.subplots(
        2, 1, figsize=(7.5, 5.5), gridspec_kw={"height_ratios": [4, 1]}, sharex=True
    )
    end = float(data["time"].max()) if len(data) else 1.0
    ticks = np.linspace(0.0, end, 6) if not landmarks else np.array([0.0, *landmarks])
    ticks = ticks[ticks <= max(end, ticks.min())]
    for k, (group, curve) in enumerate(curves.items()):
        color = f"C{k}"
        label = (
            "all subjects"
            if by is None
            else f"{by} {group:g}"
            if isinstance(group, float | int)
            else f"{by} {group}"
        )
        times, s = _steps(curve, "survival")
        times = np.append(times, end)
        s = np.append(s, s[-1])
        ax.step(times, s, where="post", color=color, label=label)
        if curve["n_events"].sum() > 0:
            _, lo = _steps(curve, "lower")
            _, hi = _steps(curve, "upper")
            ax.fill_between(
                times,
                np.append(lo, lo[-1]),
                np.append(hi, hi[-1]),
                step="post",
                color=color,
                alpha=0.15,
            )
        rows = data[(data["group"] == group) & ~data["event"]]
        idx = np.searchsorted(times, rows["time"].to_numpy(), side="right") - 1
        ax.plot(rows["time"], s[np.clip(idx, 0, s.size - 1)], "|", color=color, ms=8)
        at_risk = [(data.loc[data["group"] == group, "time"] >= x).sum() for x in ticks]
        for x, n in zip(ticks, at_risk, strict=True):
            table_ax.text(x, -k, str(n), ha="center", va="center", color=color, fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("fraction still detectable")
    ax.set_title(title or "Persistence (Kaplan-Meier, 95 % CI; | censored)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    table_ax.set_ylim(-len(curves) + 0.5, 0.5)
    table_ax.set_yticks([])
    table_ax.set_xticks(ticks)
    table_ax.set_xlabel("days since infusion")
    table_ax.set_title("numbers at risk", fontsize=8, loc="left")
    for side in ("top", "right", "left"):
        table_ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _finish(fig, path)


def plot_km_vpc(
    observed: Mapping[Any, pd.DataFrame],
    band: pd.DataFrame,
    path: str | PathLike[str] | None = None,
    title: str = "",
) -> Figure:
    """Observed KM curve(s) over the model's band: ``band`` has time (days), median, p5,
    p95 of the predicted fraction still detectable in trials of the observed size."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(
        band["time"],
        band["p5"],
        band["p95"],
        color="C7",
        alpha=0.3,
        label="model: 5-95 % of simulated trials",
    )
    ax.plot(band["time"], band["median"], color="C7", lw=1.5, label="model: median")
    end = float(band["time"].max())
    for k, (group, curve) in enumerate(observed.items()):
        times, s = _steps(curve, "survival")
        ax.step(
            np.append(times, end),
            np.append(s, s[-1]),
            where="post",
            color=f"C{k}",
            label=f"observed ({group})",
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("days since infusion")
    ax.set_ylabel("fraction still detectable")
    ax.set_title(title or "Persistence: observed Kaplan-Meier over the model's prediction")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _finish(fig, path)
