"""The finished state of a SAEM run, frozen: what the post-fit steps take.

:class:`cartpk.population.saem.Saem` iterates; when it is done, :meth:`Saem.state` freezes
its estimates and smoothed individual statistics into a :class:`SaemState`, and the steps
after the iterations (:mod:`cartpk.population.after`: conditional modes, importance
sampling, Fisher information) are called in turn on that state, as saemix does on its
result object. None of them sees, or can change, the live run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .design import Design


@dataclass(frozen=True)
class SaemState:
    """A finished SAEM run.

    Attributes:
        design: the :class:`Design` (model, observations, random and estimated parameters,
            covariate columns, error models).
        solver: the kernels' solver settings (method code, rtol, atol, max_steps).
        n_explore: iterations of the exploration phase (``history`` holds every iteration).
        mu, theta, omega, error: the final estimates (estimation scale; ``error`` maps each
            analyte to its error parameters, natural scale).
        mu_bounds: (n_par, 2) bounds of the typical values on the estimation scale.
        kind: per observation row, the error model's kernel code.
        s_phi, s_phi_sq: the smoothed individual means of phi and of phi² (n, n_par).
        history: the estimates after every iteration.
        observation_args: the kernels' observation and solver arguments at the final
            error parameters (as ``Saem.observation_args`` gives them).
        natural_rows: the run's estimation-scale transform to packed kernel rows
            (``Saem.natural_rows``: phi (k, n_par), covariates (k, c) -> rows); it reads
            only the parameters' scales and bounds.
    """

    design: Design
    solver: np.ndarray
    n_explore: int
    mu: np.ndarray
    mu_bounds: np.ndarray
    theta: np.ndarray
    omega: np.ndarray
    error: dict[str, dict[str, float]]
    kind: np.ndarray
    s_phi: np.ndarray
    s_phi_sq: np.ndarray
    history: list[dict[str, float]]
    observation_args: tuple[Any, ...]
    natural_rows: Callable[[np.ndarray, np.ndarray], np.ndarray]
