"""Population fits: nonlinear mixed effects by SAEM (stochastic approximation EM).

:func:`fit_population` checks the request and builds the design (:mod:`.design`), runs the
iterations of :class:`Saem`, then hands the finished run, frozen (:class:`.state.SaemState`),
to the post-fit steps (:mod:`.after`).

The statistical model (as in Monolix and saemix). For subject i and model parameter j on its
estimation scale (log, logit or none):

    phi_ij = mu_j + sum_c theta_jc * x_ic + eta_ij,    eta_i ~ N(0, Omega),

with covariate columns x_ic: log(COV / median COV) for a continuous covariate (a power model,
param · (COV/median)^theta for log-scaled parameters) and [COV == level] for each non-reference
level of a categorical one (param · e^theta). Parameters without a random effect have
eta = 0; fixed parameters keep their value. Residual error per analyte: log, proportional,
additive or combined; censored points by the probability of their interval (M3 below the
LLOQ; −2 log(Φ(z_U) − Φ(z_L)) for an interval-censored point, CENS=1 with a LIMIT), in the
MCMC, the M-step of the error parameters and the importance-sampling −2LL alike.

SAEM (Kuhn and Lavielle 2004; Delyon, Lavielle and Moulines 1999), one iteration:

1. Simulation: Metropolis–Hastings moves of each subject's eta (the numba kernel
   ``mh_batch``, parallel over subjects): 2 independent proposals from N(0, Omega), 2 joint
   random walks and one one-component random walk per estimated parameter; step sizes adapt
   towards 40 % acceptance during the first phase.
2. Stochastic approximation of the sufficient statistics (each subject's phi and sum of
   phi phi') with step 1 during the first ``n_iter[0]`` iterations (exploration) and 1/k
   during the last ``n_iter[1]`` (smoothing).
3. Maximisation: mu and theta by least squares on the averaged phi, Omega from the averaged
   second moments, the residual error parameters by maximising the data likelihood at the
   current individual predictions (closed form for log/additive without censoring),
   averaged in the same way. During the first half of the exploration phase, Omega and the
   error SDs shrink by at most 5 % per iteration (simulated annealing).

Parameters estimated without a random effect are given a vanishing one during exploration,
so that the same M-step moves them: its SD falls geometrically from the start omega to
``PSEUDO_END`` over the exploration phase, slowly enough for them to travel with the
random-effect parameters they trade off against (tmax against rho). In the smoothing phase
they have none and are estimated by maximising the data likelihood at the current random
effects (Nelder–Mead, stochastically averaged), as Monolix does; this leaves them short of
the maximum likelihood, which the post-fit polishing (:mod:`.polish`) reaches. All random
numbers come
from one seeded generator and are drawn before each kernel call, so the estimates do not
depend on the number of threads.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from tqdm.auto import tqdm

from ..data import as_dataset, shown
from ..errors import FitError
from ..individual.fit import check_count, check_seed
from ..likelihood import (
    ERROR_MODELS,
    KIND_CODES,
    ObservationArrays,
    m2ll_interval,
    m2ll_observed,
)
from ..model import Model, load_model
from ..scales import SCALE_CODES, estimation_bounds, natural_rows
from ..solve import check_tolerances, method_code
from .after import OMEGA_FLOOR, finish
from .design import Design, build_design
from .result import PopulationFit
from .state import SaemState, error_arrays

ANNEAL = 0.95
TARGET_ACCEPTANCE = 0.4
PSEUDO_END = 0.01  # SD the vanishing pseudo-random effect reaches at the end of exploration
ERROR_START = {"sigma": 0.5, "b": 0.3, "a": 1.0}


def fit_population(
    model: Model | str,
    data: Any,
    random: Any = ("C0", "rho", "alpha"),
    covariates: dict[str, Any] | None = None,
    error: Any = None,
    omega: str = "diagonal",
    params: dict[str, Any] | None = None,
    seed: int = 1,
    n_iter: tuple[int, int] = (300, 150),
    n_is: int = 1000,
    progress: bool | None = None,
    method: str | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    analytes: Any = None,
    dvid: Any = None,
    max_steps: int = 100_000,
    polish: bool = True,
) -> PopulationFit:
    """Fit a nonlinear mixed-effects model to a trial by SAEM.

    Args:
        model: a Model or a built-in name / path.
        data: anything :func:`cartpk.read_dataset` accepts (several subjects).
        random: parameters with a random effect (log-normal or logit-normal).
        covariates: parameter -> covariate name(s), e.g. {"C0": ["DOSE"]}; numeric columns
            other than 0/1 flags enter as power models centred on their median, others as
            categorical with the most frequent level as reference.
        error: as in :func:`cartpk.fit` (default "log" for every analyte).
        omega: "diagonal" or "block" (full covariance among the random effects).
        params: start values and fixed flags, name -> value or {"value", "vary"}; omega
            starts from the model file's omegas (0.5 where none), name ``omega_<param>``.
        seed: seed of every random draw (MCMC, importance sampling): a non-negative
            integer (None is refused: a fit is reproducible).
        n_iter: (exploration, smoothing) iterations, each an integer >= 1.
        n_is: importance-sampling draws per subject for the −2LL (an integer >= 1).
        progress: show a progress bar (default: only on an interactive terminal).
        method, rtol, atol: ODE solver and tolerances (relative, in [1e-14, 1); absolute,
            > 0, in the outputs' units).
        analytes: fit only these analytes (a name or a list; None: every analyte in the
            data).
        dvid: ANALYTE / DVID value -> model output name, e.g. ``{1: "CART", 2: "VEGF"}``
            (see :func:`cartpk.read_dataset`).
        max_steps: the solver's step budget per subject and solve (an integer >= 1).
        polish: after the iterations, move the estimates to the maximum of the −2LL by
            quadrature (quasi-Newton steps, :mod:`cartpk.population.polish`; models with
            at most four random effects). False keeps the SAEM estimates as they are.

    Between-subject SDs are kept above ``OMEGA_FLOOR`` (1e-3 on the estimation scale); one
    that ends below ``COLLAPSED`` (0.01) is reported as collapsed in ``notes`` and in
    ``summary()``, without an SE (the data do not determine that random effect).

    Returns:
        A :class:`cartpk.PopulationFit`.
    """
    model = model if isinstance(model, Model) else load_model(model)
    seed = check_seed(seed)
    n_is = check_count(n_is, "n_is")
    check_tolerances(rtol, atol, max_steps)
    whole = [
        isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_) and v >= 1
        for v in (n_iter if isinstance(n_iter, tuple | list) else ())
    ]
    if len(whole) != 2 or not all(whole):
        raise FitError(
            f"n_iter {shown(n_iter)}: both phases need at least 1 iteration (expected "
            "(exploration, smoothing), two integers >= 1)"
        )
    n_iter = (int(n_iter[0]), int(n_iter[1]))
    if not isinstance(polish, bool | np.bool_):
        raise FitError(f"polish {shown(polish)}: expected True or False")
    ds = as_dataset(data, dvid)
    design = build_design(model, ds, random, covariates, error, omega, params, analytes)
    solver = np.array([method_code(model, method), rtol, atol, max_steps], dtype=np.float64)
    run = Saem(design, solver, np.random.default_rng(seed), params or {})
    run.iterate(n_iter, progress)
    return run.result(n_is, seed, polish)


class Saem:
    """The state of one SAEM run."""

    def __init__(
        self, design: Design, solver: np.ndarray, rng: np.random.Generator, params: dict
    ) -> None:
        self.d, self.solver, self.rng = design, solver, rng
        model = design.model
        pars = list(model.parameters.values())
        self.scale = np.array([SCALE_CODES[p.scale] for p in pars], dtype=np.int64)
        self.lower = np.array([p.lower for p in pars])
        self.upper = np.array([p.upper for p in pars])
        self.mu = design.start.copy()
        # typical values stay within the model file's bounds (on the estimation scale)
        self.mu_bounds = np.array(
            [estimation_bounds(p.scale, p.lower, p.upper, p.lower, p.upper) for p in pars]
        )
        self.theta = np.zeros(len(design.columns))
        n_par = len(pars)
        self.active = np.array([n in design.estimated for n in model.param_names])
        self.is_random = np.array([n in design.random for n in model.param_names])
        omega0 = [
            float(params.get(f"omega_{n}", p.omega if p.omega else 0.5))
            for n, p in model.parameters.items()
        ]
        self.omega = np.diag(np.where(self.active, np.square(omega0), 0.0))
        self.pseudo0 = np.where(self.active & ~self.is_random, np.square(omega0), 0.0)
        self.error = {
            a: {
                n: float(fixed.get(n, params.get(f"{a}_{n}", ERROR_START[n])))
                for n in ERROR_MODELS[kind]
            }
            for a, (kind, fixed) in design.errors.items()
        }
        self.kind = np.array([KIND_CODES[design.errors[a][0]] for a in design.obs.analyte])
        self.eta = np.zeros((design.n, n_par))
        self.step = {1: np.where(self.active, 0.3, 0.0), 2: np.where(self.active, 0.3, 0.0)}
        self.s_phi = np.zeros((design.n, n_par))
        self.s_phi_sq = np.zeros((design.n, n_par))
        self.s_phi2 = np.zeros((n_par, n_par))
        self.history: list[dict[str, float]] = []
        self.pred = np.empty((design.obs.time.size, len(model.outputs)))
        self.work = np.empty_like(self.pred)
        self.m2ll = np.empty(design.n)

    # --- the kernels ---------------------------------------------------------------------

    def observation_args(self) -> tuple:
        obs = self.d.obs
        ea, eb = error_arrays(self.d, self.error)
        return (
            obs.off, obs.time, obs.out, obs.dv, obs.cens, obs.lloq, obs.limit, self.kind, ea, eb,
            obs.d_time, obs.d_amt, obs.d_reset, obs.d_off, self.solver,
        )  # fmt: skip

    def natural(self, phi: np.ndarray) -> np.ndarray:
        """Packed kernel rows (natural-scale parameters, covariates) of every subject's phi."""
        return self.natural_rows(phi, self.d.obs.covariates)

    def natural_rows(self, phi: np.ndarray, covariates: np.ndarray) -> np.ndarray:
        """Packed kernel rows for estimation-scale rows phi (k, n_par) and covariates (k, c)."""
        nat = natural_rows(np.atleast_2d(phi), self.scale, self.lower, self.upper).reshape(
            np.shape(phi)
        )
        return np.ascontiguousarray(np.hstack([nat, covariates]))

    def evaluate(self) -> None:
        """−2LL per subject and predictions at the current individual parameters."""
        mean = self.d.mean(self.mu, self.theta)
        self.d.model.kernels.m2ll_batch(
            self.natural(mean + self.eta), *self.observation_args(), self.pred, self.m2ll
        )
        bad = ~np.isfinite(self.m2ll)
        if bad.any():
            ids = [self.d.obs.ids[k] for k in np.flatnonzero(bad)[:10]]
            raise FitError(
                f"SAEM: the model cannot be solved (or predicts impossible values) for IDs "
                f"{ids} at the current parameters; check the start values"
            )

    def rescore(self) -> None:
        """−2LL per subject under new error parameters, from the kept predictions."""
        obs = self.d.obs
        ea, eb = error_arrays(self.d, self.error)
        self.d.model.kernels.m2ll_predicted(
            obs.off,
            obs.out,
            obs.dv,
            obs.cens,
            obs.lloq,
            obs.limit,
            self.kind,
            ea,
            eb,
            self.pred,
            self.m2ll,
        )

    def omega_for_mcmc(self, k: int) -> np.ndarray:
        """Omega with the vanishing variance of estimated parameters without random effect
        (none in the smoothing phase, where :meth:`optimise_fixed` estimates them)."""
        if k >= self.n_explore:
            return self.omega
        fading = (PSEUDO_END**2 / np.maximum(self.pseudo0, PSEUDO_END**2)) ** (k / self.n_explore)
        return self.omega + np.diag(self.pseudo0 * fading)

    def moving(self, k: int) -> np.ndarray:
        """Parameters the MCMC and the M-step move at iteration k: every estimated one during
        exploration (those without random effect through their pseudo-variance), then the
        random ones."""
        return self.active if k < self.n_explore else self.is_random

    def simulate(self, k: int) -> None:
        """Metropolis–Hastings moves of every subject's eta (numba, parallel)."""
        omega = self.omega_for_mcmc(k)
        active = np.flatnonzero(self.moving(k))
        if active.size == 0:
            return
        sub = omega[np.ix_(active, active)]
        chol = np.zeros_like(omega)
        inv = np.zeros_like(omega)
        chol[np.ix_(active, active)] = np.linalg.cholesky(sub)
        inv[np.ix_(active, active)] = np.linalg.inv(sub)
        mean = self.d.mean(self.mu, self.theta)
        n, n_par = self.eta.shape
        kernels = self.d.model.kernels
        args = self.observation_args()
        for mode, moves in ((0, 2), (1, 2), (2, active.size)):
            z = self.rng.standard_normal((n, moves, n_par))
            u = self.rng.random((n, moves))
            accepted = np.zeros(n, dtype=np.int64)
            step = self.step.get(mode, np.zeros(n_par)) * np.sqrt(np.diag(omega))
            kernels.mh_batch(
                mean, self.eta, self.m2ll, mode, step, chol, inv, z, u, self.scale,
                self.lower, self.upper, self.d.obs.covariates, *args, self.work, self.pred,
                accepted,
            )  # fmt: skip
            if mode and k < self.n_explore:
                rate = accepted.sum() / (n * moves)
                self.step[mode] *= 1 + 0.4 * (rate - TARGET_ACCEPTANCE)

    # --- stochastic approximation and maximisation ----------------------------------------

    def approximate(self, gamma: float) -> None:
        phi = self.d.mean(self.mu, self.theta) + self.eta
        self.s_phi += gamma * (phi - self.s_phi)
        self.s_phi_sq += gamma * (phi**2 - self.s_phi_sq)
        self.s_phi2 += gamma * (phi.T @ phi - self.s_phi2)

    def maximise(self, k: int, gamma: float) -> None:
        d = self.d
        coefficients = {c.label: t for c, t in zip(d.columns, self.theta, strict=True)}
        for j in np.flatnonzero(self.moving(k)):
            name = d.model.param_names[j]
            cols = [c for c in d.columns if c.parameter == name]
            X = np.column_stack([np.ones(d.n), *[c.values for c in cols]])
            beta = np.linalg.lstsq(X, self.s_phi[:, j], rcond=None)[0]
            self.mu[j] = np.clip(beta[0], *self.mu_bounds[j])
            coefficients.update(zip([c.label for c in cols], beta[1:], strict=True))
        self.theta = np.array([coefficients[c.label] for c in d.columns])
        mean = d.mean(self.mu, self.theta)
        full = (self.s_phi2 - self.s_phi.T @ mean - mean.T @ self.s_phi + mean.T @ mean) / d.n
        random = self.is_random
        new = np.zeros_like(self.omega)
        if d.block:
            new[np.ix_(random, random)] = full[np.ix_(random, random)]
        else:
            new[random, random] = np.diag(full)[random]
        if k < self.n_explore // 2:
            floor = ANNEAL**2 * np.diag(self.omega)
            np.fill_diagonal(new, np.maximum(np.diag(new), np.where(random, floor, 0.0)))
        self.omega = floored(new, random)
        self.update_error(k, gamma)

    def fixed_vector(self) -> tuple[np.ndarray, list[int], list[int]]:
        """Typical values and covariate coefficients of parameters without random effect."""
        fixed = list(np.flatnonzero(self.active & ~self.is_random))
        names = [self.d.model.param_names[j] for j in fixed]
        cols = [k for k, c in enumerate(self.d.columns) if c.parameter in names]
        return np.concatenate([self.mu[fixed], self.theta[cols]]), fixed, cols

    def optimise_fixed(self, k: int, gamma: float) -> bool:
        """Smoothing phase: maximise the data likelihood over the parameters without random
        effect, at the current random effects (their pseudo-random effects are dropped;
        Nelder–Mead on the summed −2LL, the numba kernel evaluating all subjects), then
        average stochastically (step 1 at the start). False when there are none."""
        start, fixed, cols = self.fixed_vector()
        if not fixed:
            return False
        self.eta[:, fixed] = 0.0
        mu, theta = self.mu.copy(), self.theta.copy()
        scratch = np.empty_like(self.pred)
        m2ll = np.empty(self.d.n)
        args = self.observation_args()

        def objective(v: np.ndarray) -> float:
            mu[fixed], theta[cols] = v[: len(fixed)], v[len(fixed) :]
            phi = self.d.mean(mu, theta) + self.eta
            self.d.model.kernels.m2ll_batch(self.natural(phi), *args, scratch, m2ll)
            total = float(m2ll.sum())
            return total if np.isfinite(total) else 1e300

        first = k == self.n_explore
        size = 0.1 if first else 0.01
        simplex = np.vstack([start, start + size * np.eye(start.size)])
        found = minimize(
            objective,
            start,
            method="Nelder-Mead",
            options={
                "maxfev": 400 if first else 15,
                "xatol": 1e-6,
                "fatol": 1e-6,
                "initial_simplex": simplex,
            },
        )
        step = 1.0 if first else gamma
        best = start + step * (found.x - start)
        low, high = self.mu_bounds[fixed].T
        self.mu[fixed] = np.clip(best[: len(fixed)], low, high)
        self.theta[cols] = best[len(fixed) :]
        return True

    def update_error(self, k: int, gamma: float) -> None:
        """Residual error parameters: maximise the data likelihood at the current fit."""
        f = self.pred[np.arange(self.kind.size), self.d.obs.out]
        for analyte, (kind, fixed) in self.d.errors.items():
            names = [n for n in ERROR_MODELS[kind] if n not in fixed]
            if not names:
                continue
            rows = self.d.obs.analyte == analyte
            best = best_error(kind, fixed, names, self.d.obs, rows, f, self.error[analyte])
            for name in names:
                old = self.error[analyte][name]
                value = old + gamma * (best[name] - old)
                if k < self.n_explore // 2:
                    value = max(value, ANNEAL * old)
                self.error[analyte][name] = value

    # --- the run ----------------------------------------------------------------------------

    def iterate(self, n_iter: tuple[int, int], progress: bool | None) -> None:
        self.n_explore, n_smooth = (int(v) for v in n_iter)
        if self.n_explore < 1 or n_smooth < 1:
            raise FitError(f"n_iter {n_iter}: both phases need at least 1 iteration")
        total = self.n_explore + n_smooth
        self.evaluate()
        show = _interactive() if progress is None else progress
        bar = tqdm(range(total), desc=f"SAEM {self.d.model.name}", disable=not show, leave=False)
        for k in bar:
            gamma = 1.0 if k < self.n_explore else 1.0 / (k - self.n_explore + 2)
            self.simulate(k)
            self.approximate(gamma)
            phi = self.d.mean(self.mu, self.theta) + self.eta
            self.maximise(k, gamma)
            self.eta = phi - self.d.mean(self.mu, self.theta)
            if k >= self.n_explore and self.optimise_fixed(k, gamma):
                self.evaluate()
            else:
                self.rescore()
            self.history.append(self.snapshot())
        bar.close()

    def snapshot(self) -> dict[str, float]:
        out = {f"mu_{n}": float(v) for n, v in zip(self.d.model.param_names, self.mu, strict=True)}
        out.update({c.label: float(t) for c, t in zip(self.d.columns, self.theta, strict=True)})
        for j, name in enumerate(self.d.model.param_names):
            if self.is_random[j]:
                out[f"omega_{name}"] = float(np.sqrt(self.omega[j, j]))
        for analyte, values in self.error.items():
            out.update({f"{analyte}_{n}": float(v) for n, v in values.items()})
        return out

    def state(self) -> SaemState:
        """The finished run, frozen (copies of the estimates and smoothed statistics)."""
        return SaemState(
            design=self.d,
            solver=self.solver.copy(),
            n_explore=self.n_explore,
            mu=self.mu.copy(),
            mu_bounds=self.mu_bounds.copy(),
            theta=self.theta.copy(),
            omega=self.omega.copy(),
            error={a: dict(values) for a, values in self.error.items()},
            kind=self.kind.copy(),
            s_phi=self.s_phi.copy(),
            s_phi_sq=self.s_phi_sq.copy(),
            history=[dict(row) for row in self.history],
            observation_args=self.observation_args(),
            natural_rows=self.natural_rows,
        )

    def result(self, n_is: int, seed: int, polish: bool = True) -> PopulationFit:
        """The PopulationFit of the finished run (the post-fit steps on :meth:`state`)."""
        return finish(self.state(), n_is, seed, polish)


def floored(omega: np.ndarray, random: np.ndarray) -> np.ndarray:
    """Omega with its random-effect block kept positive definite: eigenvalues (variances of
    a diagonal Omega) of at least ``OMEGA_FLOOR`` squared, so that an SD the data do not
    support collapses to the floor instead of to 0 (no Cholesky factor)."""
    index = np.flatnonzero(random)
    if index.size == 0:
        return omega
    block = omega[np.ix_(index, index)]
    if not np.any(block - np.diag(np.diag(block))):
        block = np.diag(np.maximum(np.diag(block), OMEGA_FLOOR**2))
    else:
        values, vectors = np.linalg.eigh((block + block.T) / 2)
        if values.min() < OMEGA_FLOOR**2:
            block = (vectors * np.maximum(values, OMEGA_FLOOR**2)) @ vectors.T
    out = omega.copy()
    out[np.ix_(index, index)] = block
    return out


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()


def best_error(
    kind: str,
    fixed: dict[str, float],
    names: list[str],
    obs: ObservationArrays,
    rows: np.ndarray,
    f: np.ndarray,
    current: dict[str, float],
) -> dict[str, float]:
    """Error parameters maximising the likelihood of ``rows`` given predictions f."""
    dv, cens, fr = obs.dv[rows], obs.cens[rows] == 1, f[rows]
    upper, lower = obs.lloq[rows][cens], obs.limit[rows][cens]
    if kind in ("log", "additive") and not cens.any():
        resid = np.log(dv / fr) if kind == "log" else dv - fr
        return {names[0]: float(np.sqrt(np.mean(resid**2)))}

    def objective(log_values: np.ndarray) -> float:
        error = {**fixed, **dict(zip(names, np.exp(log_values), strict=True))}
        total = m2ll_observed(kind, dv[~cens], fr[~cens], error).sum()
        return float(total + m2ll_interval(kind, lower, upper, fr[cens], error).sum())

    start = np.log([current[n] for n in names])
    if len(names) == 1:
        found = minimize_scalar(
            lambda x: objective(np.array([x])),
            bounds=(start[0] - 2.0, start[0] + 2.0),
            method="bounded",
            options={"xatol": 1e-7},
        )
        return {names[0]: float(np.exp(found.x))}
    found = minimize(objective, start, method="Nelder-Mead", options={"xatol": 1e-8})
    return dict(zip(names, np.exp(found.x), strict=True))
