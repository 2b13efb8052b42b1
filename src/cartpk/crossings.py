"""Outputs of packed subjects at given times, and level crossings narrowed on the ODE solution.

Shared by dose scenarios (the first time a biomarker reaches a response threshold,
``scenarios/chunk.py``) and predicted persistence (the day the level falls below the LLOQ
for good, ``persistence/predicted.py``). Subjects are rows of ``Model.pack``; each is
solved on its own, so a subject's numbers do not depend on who else is in the batch.
Times are in days.
"""

from __future__ import annotations

import numpy as np

from .kernels import ModelKernels

__all__ = ["narrow", "solve_at"]


def solve_at(
    kernels: ModelKernels,
    p: np.ndarray,
    t_flat: np.ndarray,
    t_off: np.ndarray,
    solver: tuple[int, float, float, int],
) -> tuple[np.ndarray, np.ndarray]:
    """All outputs (n_obs, n_outputs) at each subject's sorted times
    ``t_flat[t_off[i]:t_off[i+1]]``, and the solver status per subject (0: solved).
    ``solver`` is (method code, rtol, atol, max_steps); no dose records."""
    m = p.shape[0]
    values = np.empty((t_flat.size, kernels.n_outputs))
    status = np.zeros(m, dtype=np.int64)
    no_resets = np.empty(0, dtype=np.int64)
    no_doses = (np.empty(0), np.empty(0), no_resets, np.zeros(m + 1, dtype=np.int64))
    kernels.solve_batch(p, t_flat, t_off, *no_doses, *solver, values, status, np.empty(m))
    return values, status


def narrow(
    kernels: ModelKernels,
    p: np.ndarray,
    solver: tuple[int, float, float, int],
    k: int,
    rows: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    level: np.ndarray,
    status: np.ndarray,
    points: int,
    rounds: int,
    final: bool = False,
) -> tuple[np.ndarray, ...]:
    """Narrow each bracket [a, b] (days) of a downward crossing of ``level`` by output ``k``.

    ``rows`` is the subject (row of ``p``) of each bracket; a subject may have several.
    Each of ``rounds`` rounds cuts every bracket into ``points`` pieces, solves every
    subject once at all its brackets' cut times (merged and sorted), and keeps the piece
    holding the crossing: the first cut at or below ``level`` (the first crossing), or with
    ``final`` the cut after the last one at or above it (the crossing for good). A
    subject's first solver failure goes into ``status`` (per subject). Returns the last
    pieces' ends and the output there: (a, b, value at a, value at b).
    """
    fa = fb = np.full(a.size, np.nan)
    for _ in range(rounds):
        grid = a[:, None] + (b - a)[:, None] * np.linspace(0.0, 1.0, points + 1)
        subjects, inverse = np.unique(rows, return_inverse=True)
        flat = grid.ravel()
        owner = np.repeat(inverse, points + 1)
        order = np.lexsort((flat, owner))
        offsets = np.zeros(subjects.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=subjects.size), out=offsets[1:])
        merged, solved = solve_at(kernels, p[subjects], flat[order], offsets, solver)
        values = np.empty_like(merged)
        values[order] = merged
        solved = solved[inverse]
        first_failure = (solved != 0) & (status[rows] == 0)
        status[rows[first_failure]] = solved[first_failure]
        v = values[:, k].reshape(grid.shape)
        if final:
            above = v >= level[:, None]
            j = np.clip(points + 1 - np.argmax(above[:, ::-1], axis=1), 1, points)
        else:
            below = v - level[:, None] <= 0
            j = np.clip(np.argmax(below, axis=1), 1, points)
            j[~below.any(axis=1)] = points
        i = np.arange(a.size)
        a, b, fa, fb = grid[i, j - 1], grid[i, j], v[i, j - 1], v[i, j]
    return a, b, fa, fb
