"""The finished state of a SAEM run, frozen: what the post-fit steps take.

:class:`cartpk.population.saem.Saem` iterates; when it is done, :meth:`Saem.state` freezes
its estimates and smoothed individual statistics into a :class:`SaemState`, and the steps
after the iterations (:mod:`cartpk.population.after` calls them: polishing, conditional
modes, importance sampling and quadrature, Fisher information) are called in turn on that
state, as saemix does on its result object. None of them sees, or can change, the live run;
polishing returns a new state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .design import Design

#: An SD below this at the end is reported as collapsed (fixed, no SE).
COLLAPSED = 1e-2
#: A typical value this close to a bound (estimation scale) is said to be at it.
AT_BOUND = 0.02
#: Rows per kernel call of :meth:`SaemState.data_m2ll` (bounds the packed-row copies).
CHUNK = 20_000


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

    def data_m2ll(self, phi: np.ndarray, subject: np.ndarray) -> np.ndarray:
        """Data −2LL of subject ``subject[r]`` at individual parameters ``phi[r]``
        (estimation scale), +inf where the model cannot be solved; chunks of
        :data:`CHUNK` rows."""
        out = np.empty(phi.shape[0])
        kernels = self.design.model.kernels
        covariates = self.design.obs.covariates
        for lo in range(0, phi.shape[0], CHUNK):
            rows = slice(lo, lo + CHUNK)
            nat = self.natural_rows(phi[rows], covariates[subject[rows]])
            subjects = subject[rows].astype(np.int64)
            kernels.m2ll_rows(nat, subjects, *self.observation_args, out[rows])
        return np.where(np.isfinite(out), out, np.inf)

    @property
    def chain_sd(self) -> np.ndarray:
        """Each subject's conditional SDs of phi from the chain (n, n_par)."""
        return np.sqrt(np.maximum(self.s_phi_sq - self.s_phi**2, 0.0))

    def collapsed(self) -> list[int]:
        """Indices (model parameter order) of random effects whose SD ended below
        ``COLLAPSED``: the data do not determine them; they are reported without an SE."""
        sd = np.sqrt(np.diag(self.omega))
        return [
            j
            for j, name in enumerate(self.design.model.param_names)
            if name in self.design.random and sd[j] < COLLAPSED
        ]

    def at_bound(self, j: int) -> str | None:
        """ "lower" or "upper" where typical value ``j`` is within ``AT_BOUND`` of that bound
        (estimation scale), else None."""
        low, high = self.mu_bounds[j]
        for edge, word in ((low, "lower"), (high, "upper")):
            if np.isfinite(edge) and abs(self.mu[j] - edge) <= AT_BOUND:
                return word
        return None

    def with_estimates(
        self,
        mu: np.ndarray,
        theta: np.ndarray,
        omega: np.ndarray,
        error: dict[str, dict[str, float]],
    ) -> SaemState:
        """The same run at other population estimates (the kernels' error arrays rebuilt)."""
        ea, eb = error_arrays(self.design, error)
        args = (*self.observation_args[:8], ea, eb, *self.observation_args[10:])
        return dataclasses.replace(
            self, mu=mu, theta=theta, omega=omega, error=error, observation_args=args
        )


def error_arrays(
    design: Design, error: dict[str, dict[str, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per observation row, the kernels' error parameters (ea: sigma or a; eb: b)."""
    analyte = design.obs.analyte
    ea = np.zeros(analyte.size)
    eb = np.zeros(analyte.size)
    for name, values in error.items():
        rows = analyte == name
        ea[rows] = values.get("sigma", values.get("a", 0.0))
        eb[rows] = values.get("b", 0.0)
    return ea, eb
