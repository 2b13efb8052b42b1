"""Pieces of the fitting objective: residual error models, the M3 term, priors.

All functions return contributions to −2 log-likelihood (the full Gaussian constant
included), so that objective values are comparable with NONMEM/nlmixr2 OFVs computed on
the same scale. The ``log`` error model is Gaussian on log(DV): its −2LL is that of log(DV).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

ERROR_MODELS = {
    "log": ("sigma",),
    "proportional": ("b",),
    "additive": ("a",),
    "combined": ("a", "b"),
}
LOG_2PI = float(np.log(2 * np.pi))


def residual_sd(kind: str, pred: np.ndarray, error: dict[str, float]) -> np.ndarray:
    """SD of the residual error at predictions ``pred``, on the error model's scale.

    ``log``: sigma (log scale); ``proportional``: b·f; ``additive``: a; ``combined``:
    sqrt(a² + b²·f²) (the "combined2" form of Monolix and nlmixr2).
    """
    if kind == "log":
        return np.full_like(pred, error["sigma"])
    if kind == "proportional":
        return error["b"] * np.abs(pred)
    if kind == "additive":
        return np.full_like(pred, error["a"])
    if kind == "combined":
        return np.sqrt(error["a"] ** 2 + (error["b"] * pred) ** 2)
    raise ValueError(f"error model {kind!r}: expected one of {', '.join(ERROR_MODELS)}")


def on_scale(kind: str, values: np.ndarray) -> np.ndarray:
    """Values on the scale where the error is Gaussian (log for ``log``, else as is)."""
    if kind == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(values)
    return values


def m2ll_observed(kind: str, dv: np.ndarray, pred: np.ndarray, error: dict) -> np.ndarray:
    """−2 log-likelihood of each quantified observation."""
    sd = residual_sd(kind, pred, error)
    z = (on_scale(kind, dv) - on_scale(kind, pred)) / sd
    return z**2 + 2 * np.log(sd) + LOG_2PI


def m2ll_censored(kind: str, lloq: np.ndarray, pred: np.ndarray, error: dict) -> np.ndarray:
    """−2 log P(Y < LLOQ) of each censored observation (Beal's M3 method)."""
    sd = residual_sd(kind, pred, error)
    z = (on_scale(kind, lloq) - on_scale(kind, pred)) / sd
    return -2 * log_ndtr(z)


def prior_penalty(estimates: np.ndarray, means: np.ndarray, sds: np.ndarray) -> float:
    """−2 log of Gaussian priors on the estimation scale, without constants: Σ((θ−μ)/sd)²."""
    return float(np.sum(((estimates - means) / sds) ** 2))
