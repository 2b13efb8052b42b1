"""Polishing: the SAEM estimates moved to the maximum of the −2LL by quadrature.

SAEM ends within Monte Carlo noise of the maximum likelihood, but not at it: the parameters
without a random effect are set in the smoothing phase by a stochastic search that leaves
them short (tmax 0.7 SE from the maximum over seeds, on a 60-subject design; fits 1–4 −2LL
units below the maximum). For models with at most :data:`QUADRATURE_MAX` random effects,
quasi-Newton steps on the −2LL by adaptive Gauss–Hermite quadrature finish the job:

    θ ← θ − t C g / 2,

* θ: the estimates as the standard errors report them (typical values and covariate effects
  on the estimation scale, between-subject SDs, block-Omega covariances, residual error
  parameters; a typical value at a bound and a collapsed SD stay where they are);
* C: their covariance, the inverse Fisher information of the linearised model at the SAEM
  estimates (:mod:`.fisher`), then updated by BFGS from the gradients met (quasi-Newton);
* g: the gradient of the −2LL by central differences (steps of :data:`STEP_SE` of each
  SE), on the quadrature grid of the current conditional modes held fixed;
* t: 1, halved until the −2LL by quadrature at recomputed modes falls.

It stops when the predicted decrease g'Cg/4 is below :data:`TOLERANCE` −2LL units, or after
:data:`MAX_STEPS` steps (then with a note, as when no step along the direction lowers the
−2LL). Deterministic (no random draws), and as parallel as the kernels.
Saemix and Monolix stop at the SAEM estimates; nlme and NONMEM's FOCE maximise an
approximate likelihood. This is the maximum of the quadrature likelihood the fit reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fisher import estimated_parameters, fisher_covariance
from .marginal import (
    QUADRATURE_MAX,
    Grid,
    data_log,
    log_prior,
    quadrature_m2ll,
    random_columns,
)
from .modes import conditional_modes
from .state import SaemState

TOLERANCE = 1e-4
#: A predicted decrease left above this (−2LL units) when polishing stops is a note.
NOTE_ABOVE = 0.01
MAX_STEPS = 10
MAX_HALVINGS = 8
STEP_SE = 1e-2


@dataclass(frozen=True)
class Polished:
    """The outcome of :func:`polish`.

    Attributes:
        run: the run at the polished estimates (the input run when not polished).
        steps: quasi-Newton steps taken.
        gain: −2LL by quadrature at the SAEM estimates minus at the polished ones (>= 0;
            NaN when not polished).
        remaining: the −2LL decrease the last quasi-Newton model still predicted (below
            ``TOLERANCE`` when converged; NaN when not polished).
        reason: why the estimates were not polished ("" when they were).
    """

    run: SaemState
    steps: int
    gain: float
    remaining: float
    reason: str

    def record(self) -> dict:
        return {
            "steps": self.steps,
            "gain": self.gain,
            "remaining": self.remaining,
            "reason": self.reason,
        }

    def notes(self) -> list[str]:
        """A note when polishing stopped with more than ``NOTE_ABOVE`` still to gain."""
        if not self.remaining > NOTE_ABOVE:
            return []
        return [
            f"polishing stopped after {self.steps} quasi-Newton steps with a further −2LL "
            f"decrease of {self.remaining:.3g} still predicted: the estimates may be short "
            "of the maximum likelihood"
        ]


def polish(run: SaemState) -> Polished:
    """The run moved to the maximum of the −2LL by quadrature (see the module notes)."""
    if random_columns(run).size > QUADRATURE_MAX:
        return not_polished(run, f"more than {QUADRATURE_MAX} random effects")
    state = Point.at(run)
    if not np.isfinite(state.m2ll):
        return not_polished(run, "the −2LL by quadrature is not finite")
    _, covariance = fisher_covariance(run, state.modes, [])
    if covariance is None:
        return not_polished(run, "no Fisher information")
    space = Space(run)
    free = space.free(run)
    information = np.linalg.inv(covariance)[np.ix_(free, free)]
    C = np.linalg.inv(information)
    h = STEP_SE * np.sqrt(np.diag(C))
    start, steps = state.m2ll, 0
    v = space.vector(state.run)
    g = space.gradient(state, v, free, h)
    for _ in range(MAX_STEPS + 1):
        direction = -0.5 * C @ g
        remaining = -0.5 * g @ direction if np.all(np.isfinite(direction)) else np.inf
        if remaining < TOLERANCE or steps == MAX_STEPS:
            break
        t, better = 1.0, None
        for _ in range(MAX_HALVINGS):
            trial = v.copy()
            trial[free] += t * direction
            candidate = space.state(run, trial)
            if candidate is not None:
                point = Point.at(candidate)
                if point.m2ll < state.m2ll:
                    better = point
                    break
            t /= 2
        if better is None:
            break
        state, steps = better, steps + 1
        moved = trial[free] - v[free]
        v = trial
        new = space.gradient(state, v, free, h)
        C = bfgs(C, moved, 0.5 * (new - g))
        g = new
    return Polished(state.run, steps, start - state.m2ll, float(remaining), "")


def not_polished(run: SaemState, reason: str) -> Polished:
    return Polished(run, 0, float("nan"), float("nan"), reason)


def bfgs(C: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The BFGS update of an inverse Hessian C by a step s and the change y of the gradient
    (Nocedal & Wright, Numerical Optimization, 2nd ed., eq. 6.17); C as it is where the
    curvature condition y's > 0 fails."""
    ys = y @ s
    if not ys > 0:
        return C
    rho = 1.0 / ys
    left = np.eye(s.size) - rho * np.outer(s, y)
    return left @ C @ left.T + rho * np.outer(s, s)


@dataclass(frozen=True)
class Point:
    """A run with its conditional modes, quadrature grid and −2LL there."""

    run: SaemState
    modes: np.ndarray
    grid: Grid
    m2ll: float

    @classmethod
    def at(cls, run: SaemState) -> Point:
        d = run.design
        design = d.mean(run.mu, run.theta)
        random = random_columns(run)
        modes, covariances = conditional_modes(run, design, random, [])
        sd = np.sqrt(np.maximum(run.s_phi_sq - run.s_phi**2, 0.0))
        grid = Grid.at(run, modes, covariances, sd)
        return cls(run, modes, grid, quadrature_m2ll(run, design, grid))


class Space:
    """The polished estimates as a vector, in the order of the Fisher information."""

    def __init__(self, run: SaemState) -> None:
        self.active, self.kept, self.blocks, self.errors = estimated_parameters(run)
        self.n_theta = run.theta.size
        self.random = random_columns(run)
        others = np.ones(run.mu.size, dtype=bool)
        others[self.random] = False
        self.others = others

    def vector(self, run: SaemState) -> np.ndarray:
        omega = [np.sqrt(run.omega[a, a]) if a == b else run.omega[a, b] for a, b in self.blocks]
        error = [run.error[a][n] for a, n in self.errors]
        return np.concatenate([run.mu[self.active], run.theta, omega, error])

    def free(self, run: SaemState) -> np.ndarray:
        """Positions of the vector polished: all but typical values at a bound
        (:meth:`SaemState.at_bound`)."""
        held = np.array([run.at_bound(j) is not None for j in self.active], dtype=bool)
        size = len(self.active) + self.n_theta + len(self.blocks) + len(self.errors)
        return np.flatnonzero(np.concatenate([~held, np.ones(size - held.size, dtype=bool)]))

    def state(self, run: SaemState, v: np.ndarray) -> SaemState | None:
        """The run at vector ``v``; None where it is not a valid parameter set (an SD or an
        error parameter not positive, Omega not positive definite, a bound crossed)."""
        a = len(self.active)
        b = a + self.n_theta
        c = b + len(self.blocks)
        mu = run.mu.copy()
        mu[self.active] = v[:a]
        low, high = run.mu_bounds.T
        if np.any(mu < low) or np.any(mu > high):
            return None
        omega = run.omega.copy()
        for (i, j), value in zip(self.blocks, v[b:c], strict=True):
            if i == j:
                if value <= 0:
                    return None
                omega[i, i] = value**2
            else:
                omega[i, j] = omega[j, i] = value
        block = omega[np.ix_(self.random, self.random)]
        if np.any(np.linalg.eigvalsh(block) <= 0):
            return None
        error = {name: dict(values) for name, values in run.error.items()}
        for (name, parameter), value in zip(self.errors, v[c:], strict=True):
            if value <= 0:
                return None
            error[name][parameter] = float(value)
        return run.with_estimates(mu, v[a:b].copy(), omega, error)

    def gradient(self, point: Point, v: np.ndarray, free: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Central differences of the −2LL on the point's grid held fixed; the data term is
        solved again only where the others (parameters without a random effect) or the error
        parameters change."""
        grid, random = point.grid, self.random
        cache: dict[bytes, np.ndarray] = {}

        def m2ll(state: SaemState) -> float:
            design = state.design.mean(state.mu, state.theta)
            key = design[:, self.others].tobytes() + state.observation_args[8].tobytes()
            key += state.observation_args[9].tobytes()
            if key not in cache:
                cache[key] = data_log(state, design, grid.x, random)
            return grid.m2ll(cache[key] + log_prior(state, design, grid.x, random))

        g = np.zeros(free.size)
        for k, (position, step) in enumerate(zip(free, h, strict=True)):
            values = []
            for sign in (1.0, -1.0):
                trial = v.copy()
                trial[position] += sign * step
                state = self.state(point.run, trial)
                values.append(np.inf if state is None else m2ll(state))
            g[k] = (values[0] - values[1]) / (2 * step)
        return g
