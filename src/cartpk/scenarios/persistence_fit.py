"""Fitting the between-subject variability of persistence from detection data.

Data: for each subject, whether each sample was quantifiable (``DV >= LLOQ`` and CENS 0)
at its sampling days, e.g. a trial sampled densely in the first month and then every 12
months. Model: a :class:`Population` whose SDs (estimation scale) of some parameters are
estimated, the rest held. Given a virtual patient with predicted level C(t), a sample at
t is quantifiable with probability Phi((log C(t) - log LLOQ) / sigma): log-normal
residual error of SD ``sigma`` (log scale) around the prediction. A subject's likelihood
is the mean over ``n_sim`` virtual patients of the product of these probabilities over
its samples (Monte Carlo integration over the random effects, the same standard-normal
draws for every candidate: common random numbers, so the objective is smooth in the SDs),
and the SDs maximise the sum of the log-likelihoods (Nelder-Mead on log SD). Standard
errors come from a central finite-difference Hessian on log SD.

Times are in days, the LLOQ in the output's unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from ..persistence.predicted import levels_at
from .population import Cohort, Population

__all__ = ["VariabilityFit", "detection_pattern", "fit_persistence_variability"]


@dataclass(frozen=True)
class VariabilityFit:
    """Estimated SDs (estimation scale) with SEs (delta method from log SD), the
    -2 log-likelihood at the optimum and whether the optimiser converged."""

    omega: dict[str, float]
    se: dict[str, float]
    m2ll: float
    converged: bool
    population: Population

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "parameter": list(self.omega),
                "omega": list(self.omega.values()),
                "se": [self.se[k] for k in self.omega],
            }
        )


def detection_pattern(observations: pd.DataFrame, lloq: float) -> tuple[np.ndarray, np.ndarray]:
    """Sampling days and the (n_subjects, n_days) 0/1 matrix of quantifiable samples, from a
    table with ID, TIME, DV, CENS in which every subject has the same days."""
    table = observations.assign(Q=((observations["CENS"] == 0) & (observations["DV"] >= lloq)))
    wide = table.pivot(index="ID", columns="TIME", values="Q")
    if wide.isna().any().any():
        raise ValueError("detection_pattern: every subject needs the same sampling days")
    return wide.columns.to_numpy(float), wide.to_numpy(float)


def _patients(population: Population, n: int, seed: int, dose: float) -> np.ndarray:
    return Cohort(population, None, np.array([dose]), n, seed).patients(0, 0, n)[1]


def fit_persistence_variability(
    days: Sequence[float],
    quantifiable: np.ndarray,
    population: Population,
    names: Sequence[str],
    lloq: float,
    sigma: float,
    dose: float = 1e6,
    start: Sequence[float] | None = None,
    n_sim: int = 2000,
    seed: int = 1,
    output: str = "CART",
) -> VariabilityFit:
    """Estimate the SDs of ``names`` (the population's other values held) from the
    detection pattern ``quantifiable`` (n_subjects, len(days)) at ``days``.

    Args:
        population: typical values, the held SDs and correlations (module docstring).
        lloq: the limit (output unit); sigma: residual SD on the log scale.
        dose: every subject's dose (cells/kg).
        start: starting SDs (default: the population's).
        n_sim: virtual patients of the Monte Carlo integral; seed: their draws.
    """
    q = np.asarray(quantifiable, float)
    days = np.asarray(days, float)
    if q.ndim != 2 or q.shape[1] != days.size:
        raise ValueError(f"quantifiable: expected shape (n_subjects, {days.size})")
    for name in names:
        if name not in population.omega:
            raise ValueError(
                f"{name}: no random effect in the population ({list(population.omega)})"
            )
    x0 = np.log([population.omega[k] for k in names] if start is None else list(start))
    model = population.model

    def with_sd(x: np.ndarray) -> Population:
        return replace(
            population, omega={**population.omega, **dict(zip(names, np.exp(x), strict=True))}
        )

    def m2ll(x: np.ndarray) -> float:
        level, _ = levels_at(model, _patients(with_sd(x), n_sim, seed, dose), days, output)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.log(np.maximum(level, 1e-300)) - np.log(lloq)) / sigma
        log_p, log_not = stats.norm.logcdf(z), stats.norm.logsf(z)
        per = q @ log_p.T + (1 - q) @ log_not.T  # (subjects, virtual patients)
        per = np.where(np.isfinite(per), per, -np.inf)
        like = special.logsumexp(per, axis=1) - np.log(per.shape[1])
        return float(-2 * like.sum())

    found = optimize.minimize(
        m2ll, x0, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-3}
    )
    h = 0.02
    k = found.x.size
    hess = np.empty((k, k))
    for i in range(k):
        for j in range(k):
            e_i, e_j = np.eye(k)[i] * h, np.eye(k)[j] * h
            hess[i, j] = (
                m2ll(found.x + e_i + e_j)
                - m2ll(found.x + e_i - e_j)
                - m2ll(found.x - e_i + e_j)
                + m2ll(found.x - e_i - e_j)
            ) / (4 * h * h)
    cov = np.linalg.inv(hess / 2)  # -2LL: the information is half its Hessian
    sd = np.exp(found.x)
    se = sd * np.sqrt(np.clip(np.diag(cov), 0, None))
    return VariabilityFit(
        dict(zip(names, sd.tolist(), strict=True)),
        dict(zip(names, se.tolist(), strict=True)),
        float(found.fun),
        bool(found.success),
        with_sd(found.x),
    )
