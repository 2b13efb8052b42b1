"""Conditional modes: each subject's maximum a posteriori random effects, all subjects at once.

For subject i, with the population estimates fixed, the mode minimises on the estimation scale

    g_i(x) = −2 log p(y_i | phi(x)) + (x − m_i)' Omega^-1 (x − m_i),

x the parameters with a random effect, m_i their population means (covariates included) and
the other parameters at their population values. The prior term is the full Omega (a block
Omega's correlations included).

Damped Newton steps, batched over subjects: the data term's gradient and Hessian by finite
differences (:meth:`Posterior.derivatives`; the numba ``m2ll_rows`` kernel evaluates every
subject's points in one call, on threads), the prior's in closed form. A Hessian that is
not positive definite has its eigenvalues reflected and floored (a descent direction), and
each step is backtracked until g_i falls (Armijo). The conditional covariance at the mode
is 2 H^-1, H the Hessian of g_i (by second-order differences for up to QUADRATURE_MAX
random effects, whose quadrature grid it scales).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .marginal import QUADRATURE_MAX, random_columns
from .state import SaemState

#: Solver tolerances of the mode search (an integrating method: difference quotients need a
#: smooth objective); at least as tight as the fit's own.
MODE_RTOL, MODE_ATOL = 1e-8, 1e-10
#: Difference step, as a fraction of each random effect's SD in Omega.
STEP = 1e-3
MAX_NEWTON = 50
MAX_HALVINGS = 30
#: Converged when the Newton decrement g'H^-1 g falls below this (units of −2 log posterior).
DECREMENT = 1e-10


def conditional_modes(
    run: SaemState, design: np.ndarray, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Modes (n, n_par; estimation scale, the random-effect columns moved, the others at
    ``design``) and conditional covariances of the random effects there (n, k, k; NaN where
    the Hessian is not positive definite). Unconverged subjects are named in ``notes``."""
    random = random_columns(run)
    g = Posterior(tightened(run), design, random)
    n, k = design.shape[0], random.size
    x = run.s_phi[:, random].copy()
    everyone = np.arange(n)
    value = g(everyone, x[:, None, :])[:, 0]
    retry = np.flatnonzero(~np.isfinite(value))
    x[retry] = g.centre[retry]
    value[retry] = g(retry, x[retry, None, :])[:, 0]
    active = np.isfinite(value)
    converged = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    for _ in range(MAX_NEWTON):
        idx = np.flatnonzero(active & ~converged & ~failed)
        if idx.size == 0:
            break
        grad, hess = g.derivatives(idx, x[idx])
        broken = ~(np.isfinite(grad).all(axis=1) & np.isfinite(hess).all(axis=(1, 2)))
        failed[idx[broken]] = True
        idx, grad, hess = idx[~broken], grad[~broken], hess[~broken]
        step = -np.linalg.solve(positive(hess), grad[..., None])[..., 0]
        decrement = -(grad * step).sum(axis=1)
        done = decrement < DECREMENT
        converged[idx[done]] = True
        idx, step, slope = idx[~done], step[~done], -decrement[~done]
        t = np.ones(idx.size)
        for _ in range(MAX_HALVINGS):
            if idx.size == 0:
                break
            trial = x[idx] + t[:, None] * step
            new = g(idx, trial[:, None, :])[:, 0]
            ok = new <= value[idx] + 1e-4 * t * slope
            x[idx[ok]], value[idx[ok]] = trial[ok], new[ok]
            idx, step, slope, t = idx[~ok], step[~ok], slope[~ok], t[~ok] / 2
        # no decrease along a descent direction: at the mode to working precision
        converged[idx] = True
    ids = run.design.obs.ids
    for i in np.flatnonzero(~active):
        notes.append(f"ID {ids[i]}: conditional mode not computed (the model cannot be "
                     "solved at the population parameters)")  # fmt: skip
    for i in np.flatnonzero(failed):
        notes.append(f"ID {ids[i]}: conditional mode not converged (the model cannot be "
                     "solved near it)")  # fmt: skip
    for i in np.flatnonzero(active & ~converged & ~failed):
        notes.append(f"ID {ids[i]}: conditional mode not converged in {MAX_NEWTON} Newton steps")
    modes = design.copy()
    modes[:, random] = x
    covariances = np.full((n, k, k), np.nan)
    idx = np.flatnonzero(active)
    if idx.size:
        # second order where the quadrature grid is scaled by it, first order (the proposal
        # of importance sampling) beyond
        _, hess = g.derivatives(idx, x[idx], exact=k <= QUADRATURE_MAX)
        definite = np.all(np.isfinite(hess), axis=(1, 2))
        definite[definite] = np.all(np.linalg.eigvalsh(hess[definite]) > 0, axis=1)
        covariances[idx[definite]] = 2 * np.linalg.inv(hess[definite])
    return modes, covariances


def tightened(run: SaemState) -> SaemState:
    """The run with its solver tolerances tightened to MODE_RTOL / MODE_ATOL."""
    solver = run.solver.copy()
    solver[1], solver[2] = min(solver[1], MODE_RTOL), min(solver[2], MODE_ATOL)
    args = (*run.observation_args[:-1], solver)
    return dataclasses.replace(run, solver=solver, observation_args=args)


class Posterior:
    """g_i for every subject, its gradient and Hessian (data term by central differences)."""

    def __init__(self, run: SaemState, design: np.ndarray, random: np.ndarray) -> None:
        self.run, self.design, self.random = run, design, random
        omega = run.omega[np.ix_(random, random)]
        self.inv = np.linalg.inv(omega)
        self.h = STEP * np.sqrt(np.diag(omega))
        self.centre = design[:, random]

    def data(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Data −2LL of subjects ``idx`` at m points each, x (len(idx), m, k) -> (len(idx), m)."""
        n, m, _ = x.shape
        if n == 0:
            return np.empty((0, m))
        phi = np.repeat(self.design[idx, None, :], m, axis=1)
        phi[:, :, self.random] = x
        return self.run.data_m2ll(phi.reshape(n * m, -1), np.repeat(idx, m)).reshape(n, m)

    def __call__(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        eta = x - self.centre[idx, None, :]
        return self.data(idx, x) + ((eta @ self.inv) * eta).sum(axis=2)

    def derivatives(
        self, idx: np.ndarray, x: np.ndarray, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient (n, k) and Hessian (n, k, k) of g at x (n, k): central differences for
        the gradient and the Hessian's diagonal; its off-diagonal elements from one corner
        point each (first order, 1 + 2k + k(k-1)/2 points: the Newton steps), or with
        ``exact`` from four (second order, 1 + 2k + 2k(k-1): the covariance at the mode)."""
        k = x.shape[1]
        e = np.diag(self.h)
        pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
        corners = [(1, 1), (1, -1), (-1, 1), (-1, -1)] if exact else [(1, 1)]
        offsets = [np.zeros(k), *e, *(-e)]
        offsets += [sa * e[a] + sb * e[b] for a, b in pairs for sa, sb in corners]
        f = self.data(idx, x[:, None, :] + np.array(offsets)[None])
        centre, plus, minus = f[:, 0], f[:, 1 : k + 1], f[:, k + 1 : 2 * k + 1]
        grad = (plus - minus) / (2 * self.h)
        hess = np.empty((x.shape[0], k, k))
        hess[:, range(k), range(k)] = (plus - 2 * centre[:, None] + minus) / self.h**2
        width = len(corners)
        for p, (a, b) in enumerate(pairs):
            q = f[:, 2 * k + 1 + width * p : 2 * k + 1 + width * (p + 1)]
            if exact:
                value = (q[:, 0] - q[:, 1] - q[:, 2] + q[:, 3]) / 4
            else:
                value = q[:, 0] - plus[:, a] - plus[:, b] + centre
            hess[:, a, b] = hess[:, b, a] = value / (self.h[a] * self.h[b])
        eta = x - self.centre[idx]
        return grad + 2 * eta @ self.inv, hess + 2 * self.inv


def positive(hess: np.ndarray) -> np.ndarray:
    """Each Hessian with its eigenvalues made positive (absolute values, floored at 1e-8 of
    the largest): Newton steps along a descent direction where g is not convex."""
    values, vectors = np.linalg.eigh(hess)
    size = np.abs(values)
    size = np.maximum(size, 1e-8 * size.max(axis=1, keepdims=True) + 1e-300)
    return np.einsum("nab,nb,ncb->nac", vectors, size, vectors)
