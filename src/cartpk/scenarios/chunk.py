"""The solve of one chunk of patients: exposure metrics, outputs at times, response times.

Every function here takes the model's compiled kernels (a ``ModelKernels``) and packed
patient rows (``Model.pack``), and calls ``kernels.exposure_batch`` or
``kernels.solve_batch``; each patient is solved on its own, so the numbers do not depend
on who else is in the chunk. Getting the kernels in a worker is
``cartpk.scenarios.run._KernelSource``; the task around a chunk (drawing its patients,
the table rows) is ``cartpk.scenarios.run``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..crossings import narrow, solve_at
from ..kernels import ModelKernels

__all__ = [
    "LOCAL_CHUNK",
    "ChunkSettings",
    "solve_chunk",
]

#: Patients per chunk when the caller gives no chunk size (bounds the memory of one solve).
LOCAL_CHUNK = 10_000
#: Refinement of biomarker crossings on the ODE solution: pieces per bracket, rounds.
ZOOM_POINTS = 64
ZOOM_ROUNDS = 2


@dataclass(frozen=True)
class ChunkSettings:
    """Everything a chunk needs besides the patients: output indices, window, solver."""

    k_out: int
    start: float
    end: float
    method: int
    rtol: float
    atol: float
    max_steps: int
    times: np.ndarray
    k_bio: int
    partial: float
    normal: float

    @property
    def solver(self) -> tuple[int, float, float, int]:
        return self.method, self.rtol, self.atol, self.max_steps


def solve_chunk(kernels: ModelKernels, p: np.ndarray, s: ChunkSettings) -> dict[str, np.ndarray]:
    m = p.shape[0]
    out = {name: np.full(m, np.nan) for name in ("cmax", "tmax", "auc")}
    out["status"] = np.zeros(m, dtype=np.int64)
    out["method"] = np.full(m, s.method, dtype=np.int64)
    no_doses = (np.empty(0), np.empty(0), np.zeros(m + 1, dtype=np.int64))
    metrics = (out["cmax"], out["tmax"], out["auc"], out["status"], np.empty(m))
    kernels.exposure_batch(p, s.k_out, s.start, s.end, *no_doses, *s.solver, *metrics)
    if s.k_bio >= 0:
        out.update(_responses(kernels, p, s, out["status"]))
    return out


def _responses(
    kernels: ModelKernels, p: np.ndarray, s: ChunkSettings, status: np.ndarray
) -> dict[str, np.ndarray]:
    """Baseline and first times at or below the PR and CR thresholds (NaN: not reached)."""
    m, n_t = p.shape[0], s.times.size
    offsets = np.arange(m + 1, dtype=np.int64) * n_t
    values, grid_status = solve_at(kernels, p, np.tile(s.times, m), offsets, s.solver)
    curve = values[:, s.k_bio].reshape(m, n_t)
    np.copyto(status, grid_status, where=status == 0)
    baseline = curve[:, 0]
    thresholds = np.column_stack([s.partial * baseline, np.full(m, s.normal)])
    times = _first_crossings(kernels, p, s, curve, thresholds, status)
    evaluable = baseline > s.normal
    times[~evaluable, 1] = np.nan
    return {
        "baseline": baseline,
        "time_to_pr": times[:, 0],
        "time_to_cr": times[:, 1],
        "cr_evaluable": evaluable,
    }


def _first_crossings(
    kernels: ModelKernels,
    p: np.ndarray,
    s: ChunkSettings,
    curve: np.ndarray,
    thresholds: np.ndarray,
    status: np.ndarray,
) -> np.ndarray:
    """First time (m, n_criteria) each patient's biomarker is <= each threshold.

    The crossing is bracketed on the grid, then the bracket is cut into ZOOM_POINTS
    pieces on the ODE solution ZOOM_ROUNDS times, and the last piece is interpolated
    linearly (0.25-day grid: pieces of 6e-5 day, interpolation error ~1e-9 day). Each
    patient's times depend on its own values only, so the result does not depend on who
    else is in the batch. A dip below the threshold that recovers between two grid
    times is not seen.
    """
    out = np.full(thresholds.shape, np.nan)
    rows, which, a, b = [], [], [], []
    for k in range(thresholds.shape[1]):
        below = curve <= thresholds[:, k, None]
        reached = below.any(axis=1) & (status == 0)
        j = np.argmax(below, axis=1)
        out[reached & (j == 0), k] = 0.0
        hit = np.flatnonzero(reached & (j > 0))
        rows.append(hit)
        which.append(np.full(hit.size, k))
        a.append(s.times[j[hit] - 1])
        b.append(s.times[j[hit]])
    rows, which, a, b = (np.concatenate(x) for x in (rows, which, a, b))
    if rows.size == 0:
        return out
    level = thresholds[rows, which]
    a, b, fa, fb = narrow(
        kernels, p, s.solver, s.k_bio, rows, a, b, level, status, ZOOM_POINTS, ZOOM_ROUNDS
    )
    fa, fb = fa - level, fb - level
    width = np.where(fa > fb, fa / (fa - fb), 1.0)
    out[rows, which] = np.where(status[rows] == 0, a + width * (b - a), np.nan)
    return out
