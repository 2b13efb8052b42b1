"""Estimation scales of model parameters: log, logit on [lower, upper], or none.

Fits and random effects work on the estimation scale, where a parameter is unbounded (or
nearly so) and its uncertainty roughly Gaussian; reports are on the natural scale.
"""

from __future__ import annotations

import numpy as np

SCALE_CODES = {"none": 0, "log": 1, "logit": 2}


def to_estimation(value: float, scale: str, lower: float, upper: float) -> float:
    """Map a natural-scale value to its estimation scale."""
    if scale == "log":
        return float(np.log(value))
    if scale == "logit":
        return float(np.log((value - lower) / (upper - value)))
    return float(value)


def to_natural(x: np.ndarray | float, scale: str, lower: float, upper: float) -> np.ndarray:
    """Inverse of :func:`to_estimation`."""
    x = np.asarray(x, dtype=float)
    if scale == "log":
        return np.exp(x)
    if scale == "logit":
        return lower + (upper - lower) / (1 + np.exp(-x))
    return x


def delta_se(x: float, sd: float, scale: str, lower: float, upper: float) -> float:
    """SE on the natural scale, by the delta method, from SD ``sd`` on the estimation scale."""
    if scale == "log":
        return float(np.exp(x) * sd)
    if scale == "logit":
        e = np.exp(-x)
        return float((upper - lower) * e / (1 + e) ** 2 * sd)
    return float(sd)


def estimation_bounds(
    scale: str, lower: float, upper: float, p_lower: float, p_upper: float
) -> tuple[float, float]:
    """Bounds [lower, upper] of a parameter declared on [p_lower, p_upper], estimation scale."""
    if scale == "log":
        return (float(np.log(lower)) if lower > 0 else -np.inf, float(np.log(upper)))
    if scale == "logit":
        inner = [
            to_estimation(v, scale, p_lower, p_upper) if p_lower < v < p_upper else None
            for v in (lower, upper)
        ]
        return (
            inner[0] if inner[0] is not None else -np.inf,
            inner[1] if inner[1] is not None else np.inf,
        )
    return (lower, upper)
