"""Persistence from a model: when the predicted level falls below the LLOQ for good.

For each subject (a row of ``Model.pack``) the output is solved on a coarse grid from 0 to
the horizon (one batched solve of all subjects, parallel in the numba kernels); the last
grid time at or above the LLOQ and the next one bracket the final crossing, which is then
narrowed on the ODE solution itself (``crossings.narrow``): each round cuts every bracket
into ZOOM_POINTS pieces and solves all subjects at those times in one batch (a vectorised
K-section search, K = ZOOM_POINTS), ZOOM_ROUNDS times, and the last piece is interpolated
on the log scale. A
7-day grid so ends with pieces of 7 / 32^4 = 7e-6 day. A subject still at or above the
LLOQ at the horizon is "beyond the horizon" (censored there); one never at or above it on
the grid has loss time 0. An excursion above the LLOQ that starts and ends between two
grid times after the last grid time above it is not seen (the grid step bounds what is
resolved).

Times are in days, the LLOQ in the output's unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..crossings import narrow, solve_at
from ..model import Model
from ..solve import method_code

__all__ = [
    "GRID_STEP",
    "ZOOM_POINTS",
    "ZOOM_ROUNDS",
    "fraction_detectable",
    "km_band",
    "levels_at",
    "loss_times",
    "predicted_table",
]

#: Coarse grid step (days): a choice of cartpk, fine against CAR-T kinetics, whose fastest
#: phase after the peak (contraction, half-life ~5 days) spans several steps.
GRID_STEP = 7.0
#: Pieces per bracket and rounds of the refinement on the ODE solution.
ZOOM_POINTS = 32
ZOOM_ROUNDS = 4


def _solve(model: Model, p: np.ndarray, t: np.ndarray, solver: tuple) -> tuple:
    """Outputs at each subject's row of times ``t`` (m, k), shape (m, k, n_outputs), and
    the status per subject."""
    m, k = t.shape
    offsets = np.arange(m + 1, dtype=np.int64) * k
    values, status = solve_at(model.kernels, p, t.ravel(), offsets, solver)
    return values.reshape(m, k, -1), status


def levels_at(
    model: Model,
    p: np.ndarray,
    times: np.ndarray,
    output: str = "CART",
    solver: tuple[int, float, float, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``output`` of every subject (rows of ``p``) at the sorted ``times`` (days), shape
    (m, len(times)), and the solver status per subject (NaN rows where it is not 0)."""
    if output not in model.outputs:
        raise ValueError(f"output {output!r}: not an output of {model.name} ({model.outputs})")
    solver = solver or (method_code(model, None), 1e-8, 1e-10, 100_000)
    times = np.asarray(times, float)
    values, status = _solve(model, p, np.tile(times, (p.shape[0], 1)), solver)
    level = values[:, :, model.outputs.index(output)]
    level[status != 0] = np.nan
    return level, status


def loss_times(
    model: Model,
    p: np.ndarray,
    lloq: float,
    output: str = "CART",
    horizon: float = 1825.0,
    step: float = GRID_STEP,
    solver: tuple[int, float, float, int] | None = None,
) -> dict[str, np.ndarray]:
    """Time (days) each subject's predicted ``output`` falls below ``lloq`` for good.

    Args:
        model: the model; ``p``: packed subject rows (``Model.pack``), shape (m, ...).
        lloq: the limit (output unit, > 0).
        horizon: last day considered (default 5 years, a choice of cartpk).
        step: coarse grid step (days).
        solver: (method code, rtol, atol, max_steps); default the model's method at rtol
            1e-8, atol 1e-10.

    Returns:
        ``time`` (days; the horizon for subjects beyond it, NaN if not solved),
        ``beyond`` (bool), ``status`` (0 solved, else the solver's failure code).
    """
    if not (np.isfinite(lloq) and lloq > 0):
        raise ValueError(f"lloq {lloq!r}: expected a positive number (the output's unit)")
    if not (np.isfinite(horizon) and horizon > 0 and np.isfinite(step) and 0 < step <= horizon):
        raise ValueError(f"horizon {horizon!r} / step {step!r}: expected 0 < step <= horizon")
    if output not in model.outputs:
        raise ValueError(f"output {output!r}: not an output of {model.name} ({model.outputs})")
    k_out = model.outputs.index(output)
    solver = solver or (method_code(model, None), 1e-8, 1e-10, 100_000)
    m = p.shape[0]
    grid = np.unique(np.append(np.arange(0.0, horizon, step), horizon))
    values, status = _solve(model, p, np.tile(grid, (m, 1)), solver)
    above = values[:, :, k_out] >= lloq
    seen = above.any(axis=1)
    last = grid.size - 1 - np.argmax(above[:, ::-1], axis=1)
    beyond = seen & (last == grid.size - 1)
    time = np.where(beyond, horizon, 0.0)
    todo = np.flatnonzero(seen & ~beyond & (status == 0))
    if todo.size:
        a, b, fa, fb = narrow(
            model.kernels,
            p,
            solver,
            k_out,
            todo,
            grid[last[todo]],
            grid[last[todo] + 1],
            np.full(todo.size, float(lloq)),
            status,
            ZOOM_POINTS,
            ZOOM_ROUNDS,
            final=True,
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            width = np.where(fb > 0, np.log(fa / lloq) / np.log(fa / fb), 1.0)
        time[todo] = a + np.clip(width, 0.0, 1.0) * (b - a)
    time = np.where(status == 0, time, np.nan)
    return {"time": time, "beyond": beyond & (status == 0), "status": status}


def predicted_table(found: dict[str, np.ndarray], ids: Sequence | None = None) -> pd.DataFrame:
    """The loss times as a persistence table (the columns :func:`kaplan_meier` takes):
    ID, persistence (day), event (False beyond the horizon), beyond_horizon, status.
    Subjects that could not be solved are kept with NaN persistence and status != 0."""
    n = found["time"].size
    return pd.DataFrame(
        {
            "ID": np.arange(1, n + 1) if ids is None else list(ids),
            "persistence": found["time"],
            "event": ~found["beyond"],
            "beyond_horizon": found["beyond"],
            "status": found["status"],
        }
    )


def fraction_detectable(table: pd.DataFrame, landmarks: Sequence[float], horizon: float) -> dict:
    """Fraction of the solved subjects whose predicted level is still at or above the LLOQ
    at each landmark (days <= horizon): ``{landmark: fraction}``."""
    marks = np.asarray(landmarks, float)
    if np.any(marks > horizon) or np.any(marks < 0):
        raise ValueError(f"landmarks {list(landmarks)}: expected days in [0, horizon {horizon:g}]")
    solved = table.loc[table["status"] == 0, "persistence"].to_numpy()
    if solved.size == 0:
        return {float(x): np.nan for x in marks}
    return {float(x): float((solved > x).mean()) for x in marks}


def km_band(
    table: pd.DataFrame,
    n: int,
    times: Sequence[float] | np.ndarray,
    n_rep: int = 200,
    seed: int = 1,
) -> pd.DataFrame:
    """The model's prediction band for a trial of ``n`` subjects: ``n_rep`` trials drawn
    with replacement from the solved virtual patients of ``table`` (predicted persistence,
    days), each trial's fraction still detectable at ``times`` (days; no later than the
    horizon), and per time the median, p5 and p95 over trials. Seeded: the same seed gives
    the same band."""
    solved = table.loc[table["status"] == 0, "persistence"].to_numpy()
    if solved.size == 0:
        raise ValueError("km_band: no solved virtual patients")
    if not (isinstance(n, int | np.integer) and n >= 1 and n_rep >= 1):
        raise ValueError(f"n {n!r} / n_rep {n_rep!r}: expected integers >= 1")
    grid = np.asarray(times, float)
    rng = np.random.default_rng(seed)
    draws = solved[rng.integers(0, solved.size, size=(n_rep, n))]
    fractions = (draws[:, :, None] > grid[None, None, :]).mean(axis=1)
    q = np.percentile(fractions, [50, 5, 95], axis=0)
    return pd.DataFrame({"time": grid, "median": q[0], "p5": q[1], "p95": q[2]})
