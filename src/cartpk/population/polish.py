"""Polishing: the SAEM estimates moved to the maximum of the −2LL by quadrature.

SAEM ends within Monte Carlo noise of the maximum likelihood, but not at it: the parameters
without a random effect are set in the smoothing phase by a stochastic search that leaves
them short (tmax 0.7 SE from the maximum over seeds, on a 60-subject design; fits 1–4 −2LL
units below the maximum). For models with at most :data:`QUADRATURE_MAX` random effects,
quasi-Newton steps on the −2LL by adaptive Gauss–Hermite quadrature finish the job:

    θ ← θ − t C g / 2,

* θ: the estimates as the standard errors report them (typical values and covariate effects
  on the estimation scale, between-subject SDs, block-Omega covariances, log residual error
  parameters; a typical value at a bound and a collapsed SD stay where they are);
* C: their covariance, the inverse Fisher information of the linearised model at the SAEM
  estimates (:mod:`.fisher`), then updated by BFGS from the gradients met (quasi-Newton);
* g: the gradient of the −2LL by differences (steps of :data:`STEP_SE` of each SE; central
  where only the prior moves, forward where the data term must be solved again), on the
  quadrature grid of the current conditional modes held fixed;
* t: 1, shortened (safeguarded quadratic backtracking) until the −2LL by quadrature at
  recomputed modes falls.

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
    random_columns,
)
from .modes import conditional_modes
from .state import SaemState

TOLERANCE = 1e-4
#: A predicted decrease left above this (−2LL units) when polishing stops is a note.
NOTE_ABOVE = 0.01
MAX_STEPS = 10
MAX_BACKTRACKS = 8
STEP_SE = 3e-3


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
        point: the modes, grid and −2LL at the polished estimates (None when not polished:
            the steps after compute them).
    """

    run: SaemState
    steps: int
    gain: float
    remaining: float
    reason: str
    point: Point | None = None

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
    here = Point.at(run)
    if not np.isfinite(here.m2ll):
        return not_polished(run, "the −2LL by quadrature is not finite")
    _, covariance = fisher_covariance(run, here.modes, [])
    if covariance is None:
        return not_polished(run, "no Fisher information")
    space = Space(run)
    free = space.free(run)
    information = np.linalg.inv(covariance)[np.ix_(free, free)]
    C = np.linalg.inv(information)
    h = STEP_SE * np.sqrt(np.diag(C))
    start, steps = here.m2ll, 0
    v = space.vector(here.run)
    g = space.gradient(here, v, free, h)
    for _ in range(MAX_STEPS + 1):
        direction = -0.5 * C @ g
        remaining = -0.5 * g @ direction if np.all(np.isfinite(direction)) else np.inf
        if remaining < TOLERANCE or steps == MAX_STEPS:
            break
        t, better, slope = 1.0, None, g @ direction
        for _ in range(MAX_BACKTRACKS):
            trial = v.copy()
            trial[free] += t * direction
            candidate = space.state(run, trial)
            point = None if candidate is None else Point.at(candidate)
            if point is not None and point.m2ll < here.m2ll:
                better = point
                break
            t = shorter(t, here.m2ll, slope, np.inf if point is None else point.m2ll)
        if better is None:
            break
        here, steps = better, steps + 1
        moved = trial[free] - v[free]
        v = trial
        new = space.gradient(here, v, free, h)
        C = bfgs(C, moved, 0.5 * (new - g))
        g = new
    return Polished(here.run, steps, start - here.m2ll, float(remaining), "", here)


def not_polished(run: SaemState, reason: str) -> Polished:
    return Polished(run, 0, float("nan"), float("nan"), reason)


def shorter(t: float, f0: float, slope: float, f1: float) -> float:
    """The next step length after ``t`` failed (−2LL ``f1`` there, ``f0`` and derivative
    ``slope`` at 0): the minimum of the quadratic through them, kept within [0.1 t, 0.5 t]
    (safeguarded backtracking, Nocedal & Wright, Numerical Optimization, 2nd ed., 3.5)."""
    curvature = f1 - f0 - slope * t
    best = -slope * t * t / (2 * curvature) if np.isfinite(f1) and curvature > 0 else 0.5 * t
    return float(np.clip(best, 0.1 * t, 0.5 * t))


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
    """A run with its conditional modes and covariances (and the notes of the mode search),
    quadrature grid, the data term at the nodes (log p(y_i | phi), (n, m)) and the −2LL by
    quadrature there."""

    run: SaemState
    modes: np.ndarray
    covariances: np.ndarray
    notes: list[str]
    grid: Grid
    data: np.ndarray
    m2ll: float

    @classmethod
    def at(cls, run: SaemState) -> Point:
        design = run.design.mean(run.mu, run.theta)
        random = random_columns(run)
        notes: list[str] = []
        modes, covariances = conditional_modes(run, design, notes)
        grid = Grid.at(run, modes, covariances, run.chain_sd)
        data = data_log(run, design, grid.x, random)
        m2ll = grid.m2ll(data + log_prior(run, design, grid.x, random))
        return cls(run, modes, covariances, notes, grid, data, m2ll)


class Space:
    """The polished estimates as a vector, in the order and on the scales of the Fisher
    information: typical values and covariate effects on the estimation scale, Omega's
    diagonal as SDs and its other elements as covariances, error parameters on the log
    scale."""

    def __init__(self, run: SaemState) -> None:
        self.active, self.kept, self.blocks, self.errors = estimated_parameters(run)
        self.n_theta = run.theta.size
        self.random = random_columns(run)
        others = np.ones(run.mu.size, dtype=bool)
        others[self.random] = False
        self.others = others

    def vector(self, run: SaemState) -> np.ndarray:
        omega = [np.sqrt(run.omega[a, a]) if a == b else run.omega[a, b] for a, b in self.blocks]
        error = [np.log(run.error[a][n]) for a, n in self.errors]
        return np.concatenate([run.mu[self.active], run.theta, omega, error])

    def free(self, run: SaemState) -> np.ndarray:
        """Positions of the vector polished: all but typical values at a bound
        (:meth:`SaemState.at_bound`)."""
        held = np.array([run.at_bound(j) is not None for j in self.active], dtype=bool)
        size = len(self.active) + self.n_theta + len(self.blocks) + len(self.errors)
        return np.flatnonzero(np.concatenate([~held, np.ones(size - held.size, dtype=bool)]))

    def state(self, run: SaemState, v: np.ndarray) -> SaemState | None:
        """The run at vector ``v``; None where it is not a valid parameter set (an SD not
        positive, Omega not positive definite, a bound crossed)."""
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
            error[name][parameter] = float(np.exp(value))
        return run.with_estimates(mu, v[a:b].copy(), omega, error)

    def gradient(self, point: Point, v: np.ndarray, free: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Differences of the −2LL on the point's grid held fixed. Central where only the
        prior changes (no solving), forward from the point where the data term changes (a
        parameter without a random effect, an error parameter): one solve of every node per
        such parameter."""
        grid, random = point.grid, self.random

        def data_key(state: SaemState, design: np.ndarray) -> bytes:
            args = state.observation_args
            return design[:, self.others].tobytes() + args[8].tobytes() + args[9].tobytes()

        home = data_key(point.run, point.run.design.mean(point.run.mu, point.run.theta))

        def m2ll(trial: np.ndarray) -> tuple[float, bool]:
            state = self.state(point.run, trial)
            if state is None:
                return np.inf, False
            design = state.design.mean(state.mu, state.theta)
            moved = data_key(state, design) != home
            data = data_log(state, design, grid.x, random) if moved else point.data
            return grid.m2ll(data + log_prior(state, design, grid.x, random)), moved

        g = np.zeros(free.size)
        for k, (position, step) in enumerate(zip(free, h, strict=True)):
            up = v.copy()
            up[position] += step
            above, moved = m2ll(up)
            if moved:
                g[k] = (above - point.m2ll) / step
                continue
            down = v.copy()
            down[position] -= step
            g[k] = (above - m2ll(down)[0]) / (2 * step)
        return g
