"""Estimation scales of model parameters: log, logit on [lower, upper], or none.

Fits and random effects work on the estimation scale, where a parameter is unbounded (or
nearly so) and its uncertainty roughly Gaussian; reports are on the natural scale.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .kernels.codes import SCALE_CODES, SCALE_LOG, SCALE_LOGIT


@numba.njit(cache=True, error_model="numpy")
def natural_value(x: float, code: int, lower: float, upper: float) -> float:
    """The estimation-scale value x on the natural scale: exp(x) for log, lower + (upper −
    lower)/(1 + exp(−x)) for logit on [lower, upper], x itself for none. This is the one
    implementation of the transform; kernels and Python both call it."""
    if code == SCALE_LOG:
        return math.exp(x)
    if code == SCALE_LOGIT:
        return lower + (upper - lower) / (1.0 + math.exp(-x))
    return x


@numba.njit(cache=True, error_model="numpy")
def natural_into(phi, code, lower, upper, out) -> None:
    """out[j] = natural_value(phi[j], code[j], lower[j], upper[j]) for j < phi.size."""
    for j in range(phi.size):
        out[j] = natural_value(phi[j], code[j], lower[j], upper[j])


@numba.njit(cache=True, error_model="numpy")
def _natural_rows(phi, code, lower, upper):
    out = np.empty(phi.shape)
    for i in range(phi.shape[0]):
        natural_into(phi[i], code, lower, upper, out[i])
    return out


def natural_rows(
    phi: np.ndarray, code: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Rows of estimation-scale parameters phi (k, n) on the natural scale (k, n), with
    per-column scale codes (``SCALE_CODES``) and bounds (n,)."""
    phi = np.ascontiguousarray(phi, dtype=float)
    return _natural_rows(
        phi,
        np.ascontiguousarray(code, dtype=np.int64),
        np.ascontiguousarray(lower, dtype=float),
        np.ascontiguousarray(upper, dtype=float),
    )


def to_estimation(value: float, scale: str, lower: float, upper: float) -> float:
    """Map a natural-scale value to its estimation scale."""
    if scale == "log":
        return float(np.log(value))
    if scale == "logit":
        return float(np.log((value - lower) / (upper - value)))
    return float(value)


def to_natural(x: np.ndarray | float, scale: str, lower: float, upper: float) -> np.ndarray:
    """Inverse of :func:`to_estimation`, for one parameter (any shape of x)."""
    x = np.asarray(x, dtype=float)
    flat = natural_rows(x.reshape(-1, 1), [SCALE_CODES[scale]], [lower], [upper])
    return flat.reshape(x.shape)


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
