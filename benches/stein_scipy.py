"""ck_stein written for scipy ``solve_ivp``: the reference the benches time cartpk against.

The right-hand side switches at tmax (expansion before, contraction and persistence after),
so it is integrated in two pieces split there, as a careful user would.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp


def stein_rhs(p: dict[str, float], after_tmax: bool):
    """ck_stein (DESIGN.md) on one side of tmax: states E (effector), M (memory), per day."""

    def rhs(t, y):
        E, M = y
        if after_tmax:
            return [-p["alpha"] * E, p["Fb"] * (p["alpha"] - p["beta"]) * E - p["beta"] * M]
        return [p["rho"] * E, 0.0]

    return rhs


def stein_level(
    p: dict[str, float], e0: float, times: np.ndarray, method: str, rtol: float, atol: float
) -> np.ndarray | None:
    """CAR-T level E + M (copies/µg) at ``times`` (days) from E(0) = e0, by solve_ivp split at
    tmax; None if either piece fails."""
    tmax = p["tmax"]
    before, after = times[times < tmax], times[times >= tmax]
    opts = {"method": method, "rtol": rtol, "atol": atol}
    first = solve_ivp(stein_rhs(p, False), (0.0, tmax), [e0, 0.0], t_eval=[*before, tmax], **opts)
    if not first.success:
        return None
    if after.size == 0:
        return first.y[0, :-1] + first.y[1, :-1]
    second = solve_ivp(stein_rhs(p, True), (tmax, after[-1]), first.y[:, -1], t_eval=after, **opts)
    if not second.success:
        return None
    y = np.hstack([first.y[:, :-1], second.y])
    return y[0] + y[1]
