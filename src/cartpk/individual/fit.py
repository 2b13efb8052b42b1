"""Individual fits with lmfit: maximum likelihood (or MAP with priors), subject by subject.

The objective is −2 log-likelihood over all analytes (error model per analyte, censored
points by the probability of their interval: below the LLOQ by Beal's M3, an
interval-censored point, CENS=1 with a LIMIT, by −2 log(Φ(z_U) − Φ(z_L))) plus a Gaussian
prior penalty, evaluated by the model's numba likelihood kernel (``m2ll_one``: solve and
sum in one compiled call, no scipy inside the loop). Parameters are estimated on their
model scale (log, logit or none) and error parameters on the log scale. Standard errors
come from a finite-difference Hessian of the objective on that scale (covariance =
2·H⁻¹), back-transformed by the delta method, with 95 % intervals transformed from the
estimation scale.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import lmfit
import numpy as np
import pandas as pd

from ..data import Dataset, as_dataset, shown
from ..dose_units import check_dataset_doses
from ..dosing import DOSE, RESET_DOSE
from ..errors import DataError, FitError, FitWarning
from ..likelihood import ERROR_MODELS, KIND_CODES, ObservationArrays, pack_observations
from ..model import Model, load_model
from ..scales import SCALE_CODES, estimation_bounds, natural_rows, to_estimation
from ..solve import METHODS, check_tolerances, method_code
from .result import FitResult, FitTable

FAILED_OBJECTIVE = 1e12
ERROR_STARTS = {"sigma": 0.3, "b": 0.2, "a": 1.0}


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer >= ``minimum``; else a FitError naming the
    argument ``name`` and what is expected."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise FitError(f"{name} {shown(value)}: expected an integer >= {minimum}")
    if value < minimum:
        raise FitError(f"{name} {value}: expected an integer >= {minimum}")
    return int(value)


def check_seed(seed: Any) -> int:
    """A seed must be a non-negative integer: the same seed gives the same fit (None, which
    would draw fresh entropy and make the fit irreproducible, is refused)."""
    if seed is None:
        raise FitError(
            "seed None: expected a non-negative integer (fits are reproducible: the same "
            "seed gives the same result)"
        )
    return check_count(seed, "seed", minimum=0)


def error_spec(
    error: Any, analytes: tuple[str, ...], known: tuple[str, ...] | None = None
) -> dict[str, tuple[str, dict[str, float]]]:
    """Normalise ``error`` for ``analytes``: analyte -> (kind, {fixed error parameters}).

    ``error`` may name any analyte in ``known`` (default: ``analytes``), e.g. one that this
    subject happens not to have.
    """
    given = error or {}
    unknown = set(given) - set(known or analytes)
    if unknown:
        raise FitError(f"error model for {sorted(unknown)}: no such analyte in the data")
    spec = {}
    for analyte in analytes:
        entry = given.get(analyte, "log")
        kind, fixed = (entry, {}) if isinstance(entry, str) else (entry[0], dict(entry[1]))
        if kind not in ERROR_MODELS:
            raise FitError(
                f"error model {kind!r} for {analyte}: expected {', '.join(ERROR_MODELS)}"
            )
        unknown = set(fixed) - set(ERROR_MODELS[kind])
        if unknown:
            raise FitError(f"error model {kind} for {analyte} has no parameter {unknown}")
        spec[analyte] = (kind, fixed)
    return spec


def build_parameters(model: Model, params: Any, errors: dict) -> lmfit.Parameters:
    """lmfit Parameters on the estimation scale: model parameters then error parameters.

    ``params`` maps a name to a start value or to {"value", "min", "max", "vary"}, or is an
    ``lmfit.Parameters`` on the natural scale.
    """
    given = as_mapping(params)
    error_names = {f"{a}_{n}" for a, (kind, _) in errors.items() for n in ERROR_MODELS[kind]}
    unknown = set(given) - set(model.param_names) - error_names
    if unknown:
        raise FitError(f"unknown parameters {sorted(unknown)}; the model has {model.param_names}")
    out = lmfit.Parameters()
    for name, p in model.parameters.items():
        entry = given.get(name, {})
        entry = entry if isinstance(entry, dict) else {"value": entry}
        lower, upper = entry.get("min", p.lower), entry.get("max", p.upper)
        value = entry.get("value", p.value)
        if not lower <= value <= upper:
            raise FitError(f"parameter {name}: start {value} outside [{lower}, {upper}]")
        vary = entry.get("vary", not p.fixed)
        x = to_estimation(value, p.scale, p.lower, p.upper)
        bounds = estimation_bounds(p.scale, lower, upper, p.lower, p.upper)
        out.add(name, value=x, vary=vary, min=bounds[0], max=bounds[1])
    for analyte, (kind, fixed) in errors.items():
        for name in ERROR_MODELS[kind]:
            full = f"{analyte}_{name}"
            entry = given.get(full, {})
            entry = entry if isinstance(entry, dict) else {"value": entry}
            value = fixed.get(name, entry.get("value", ERROR_STARTS[name]))
            if not value > 0:
                raise FitError(f"error parameter {full}: must be > 0, got {value}")
            vary = name not in fixed and entry.get("vary", True)
            out.add(full, value=np.log(value), vary=vary)
    return out


def as_mapping(params: Any) -> dict[str, Any]:
    """``params`` as name -> value or {"value", "min", "max", "vary"} (natural scale)."""
    if params is None:
        return {}
    if isinstance(params, lmfit.Parameters):
        return {
            name: {"value": p.value, "min": p.min, "max": p.max, "vary": p.vary}
            for name, p in params.items()
        }
    return dict(params)


@dataclass
class Problem:
    """One subject's objective on the estimation scale, evaluated by the numba kernels.

    ``x`` is the vector of every parameter in ``names`` order (model parameters on their
    scale, then error parameters on the log scale). Several points ``X`` (k, len(names))
    are evaluated in one parallel kernel call (finite differences, Hessians).
    """

    model: Model
    obs: ObservationArrays
    errors: dict[str, tuple[str, dict[str, float]]]
    priors: dict[str, tuple[float, float]]
    names: list[str]
    solver: np.ndarray
    failures: int = 0
    evaluations: int = 0
    _c: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        pars = list(self.model.parameters.values())
        kind = np.array([KIND_CODES[self.errors[a][0]] for a in self.obs.analyte], dtype=np.int64)
        self._c.update(
            n_par=len(pars),
            scale=np.array([SCALE_CODES[p.scale] for p in pars]),
            lower=np.array([p.lower for p in pars]),
            upper=np.array([p.upper for p in pars]),
            kind=kind,
            ea_index=self._error_index(("sigma", "a")),
            eb_index=self._error_index(("b",)),
            prior_index=np.array([self.names.index(n) for n in self.priors], dtype=int),
            prior_mean=np.array([m for m, _ in self.priors.values()]),
            prior_sd=np.array([sd for _, sd in self.priors.values()]),
        )

    def _error_index(self, which: tuple[str, ...]) -> np.ndarray:
        """Per observation row, the index in ``names`` of its error parameter (or -1)."""
        index = np.full(self.obs.analyte.size, -1)
        for analyte, (kind, _) in self.errors.items():
            for name in ERROR_MODELS[kind]:
                if name in which:
                    index[self.obs.analyte == analyte] = self.names.index(f"{analyte}_{name}")
        return index

    def natural(self, X: np.ndarray) -> np.ndarray:
        """Model parameters on the natural scale from estimation-scale points (k, n) or (n,)."""
        c = self._c
        phi = np.atleast_2d(X)[:, : c["n_par"]]
        out = natural_rows(phi, c["scale"], c["lower"], c["upper"])
        return out if np.ndim(X) == 2 else out[0]

    def points(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals (k, 2·n_obs) and −2LL (k,) at estimation-scale points X (k, n)."""
        c, obs = self._c, self.obs
        k = X.shape[0]
        self.evaluations += k
        P = np.hstack([self.natural(X), np.repeat(obs.covariates[:1], k, axis=0)])
        EA = np.where(c["ea_index"] >= 0, np.exp(X[:, c["ea_index"]]), 0.0)
        EB = np.where(c["eb_index"] >= 0, np.exp(X[:, c["eb_index"]]), 0.0)
        R = np.empty((k, 2 * obs.time.size))
        m2ll = np.empty(k)
        pred = np.empty((k, obs.time.size, len(self.model.outputs)))
        self.model.kernels.points_batch(
            P, EA, EB, obs.time, obs.out, obs.dv, obs.cens, obs.lloq, obs.limit, c["kind"],
            obs.d_time, obs.d_amt, obs.d_reset, self.solver, pred, R, m2ll,
        )  # fmt: skip
        failed = ~np.isfinite(m2ll)
        self.failures += int(failed.sum())
        return R, np.where(failed, FAILED_OBJECTIVE, m2ll)

    def prior_residuals(self, X: np.ndarray) -> np.ndarray:
        """(θ − μ) / SD of each prior on the estimation scale, per point."""
        c = self._c
        return (np.atleast_2d(X)[:, c["prior_index"]] - c["prior_mean"]) / c["prior_sd"]

    def objective(self, x: np.ndarray) -> tuple[float, float]:
        """(−2LL, prior penalty) at the estimation-scale vector x."""
        _, m2ll = self.points(x[None, :])
        z = self.prior_residuals(x)[0]
        return float(m2ll[0]), float(z @ z)

    def totals(self, X: np.ndarray) -> np.ndarray:
        """−2LL + prior penalty at each point of X (k, n)."""
        _, m2ll = self.points(X)
        return m2ll + np.sum(self.prior_residuals(X) ** 2, axis=1)

    def total(self, x: np.ndarray) -> float:
        """−2LL + prior penalty at x."""
        return float(self.totals(x[None, :])[0])

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """Residuals whose sum of squares is −2LL + prior penalty + a constant."""
        R, _ = self.points(x[None, :])
        return np.concatenate([R[0], self.prior_residuals(x)[0]])

    def jacobian(self, x: np.ndarray, varied: list[int]) -> np.ndarray:
        """Finite-difference Jacobian (varied entries × residuals) of :meth:`residuals`.

        Steps are 1e-5·max(1, |x_j|), far above the solver's tolerance; all points are
        solved in one parallel call. Forward differences (n + 1 points), or central ones
        (2n points) when the subject has censored points: their residuals
        sqrt(−2 log P) are curved enough that a forward-difference Jacobian moves the
        optimiser's fixed point (by ~1e-4 on the estimation scale along a poorly
        determined direction, for titres that are all interval-censored), which central
        differences remove.
        """
        k = len(varied)
        steps = 1e-5 * np.maximum(1.0, np.abs(x[varied]))
        if not self.obs.cens.any():
            X = np.repeat(x[None, :], k + 1, axis=0)
            X[np.arange(1, k + 1), varied] += steps
            R, _ = self.points(X)
            full = np.hstack([R, self.prior_residuals(X)])
            return (full[1:] - full[0]) / steps[:, None]
        X = np.repeat(x[None, :], 2 * k, axis=0)
        X[np.arange(k), varied] += steps
        X[np.arange(k, 2 * k), varied] -= steps
        R, _ = self.points(X)
        full = np.hstack([R, self.prior_residuals(X)])
        return (full[:k] - full[k:]) / (2 * steps[:, None])


def prior_means(model: Model, priors: Any) -> dict[str, tuple[float, float]]:
    """Priors given as name -> (mean on the natural scale, SD on the estimation scale)."""
    out = {}
    for name, (mean, sd) in (priors or {}).items():
        if name not in model.parameters:
            raise FitError(f"prior on {name!r}: not a parameter of {model.name}")
        if not sd > 0:
            raise FitError(f"prior on {name!r}: SD must be > 0, got {sd}")
        p = model.parameters[name]
        out[name] = (to_estimation(mean, p.scale, p.lower, p.upper), float(sd))
    return out


def hessian(totals, x: np.ndarray, step: float = 2e-4) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function f, all points in one call.

    ``totals`` maps points (k, n) to values (k,). With h = ``step``, e_i the unit vectors
    and f0 = f(x): H_ii = (f(x + h·e_i) − 2·f0 + f(x − h·e_i)) / h², and for i < j
    H_ij = (f(x + h·e_i + h·e_j) + f(x − h·e_i − h·e_j) − 2·f0 − h²·(H_ii + H_jj)) / (2·h²),
    both with O(h²) error, from 1 + 2n + n(n − 1) points. The default h = 2e-4 puts the
    diagonal on the points of the four-point formula with step 1e-4 (x ± 2e-4·e_i): finite
    differences amplify the ODE solver's error by 1/h², and a smaller h made the SEs noisier.
    """
    n = x.size
    i, j = np.triu_indices(n, k=1)
    eye = np.eye(n) * step
    X = np.vstack([x, x + eye, x - eye, x + eye[i] + eye[j], x - eye[i] - eye[j]])
    f = totals(X)
    f0, plus, minus = f[0], f[1 : n + 1], f[n + 1 : 2 * n + 1]
    both_plus, both_minus = f[2 * n + 1 :].reshape(2, i.size)
    second = plus + minus - 2 * f0
    h = np.diag(second) / step**2
    h[i, j] = h[j, i] = (both_plus + both_minus - 2 * f0 - second[i] - second[j]) / (2 * step**2)
    return h


def fit(
    model: Model | str,
    data: Any,
    id: Any = None,
    params: Any = None,
    error: Any = None,
    priors: Any = None,
    n_starts: int = 1,
    seed: int = 1,
    method: str | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    standard_errors: bool = True,
    analytes: Any = None,
    dvid: Any = None,
    max_steps: int = 100_000,
) -> FitResult | FitTable:
    """Fit a model to one subject's observations by maximum likelihood (MAP with priors).

    Args:
        model: a Model or a built-in name / path.
        data: anything :func:`cartpk.read_dataset` accepts.
        id: the subject to fit; None fits every subject and returns a :class:`FitTable`
            (a FitResult when the data hold one subject).
        params: start values, bounds and fixed flags on the natural scale: name -> value,
            or name -> {"value", "min", "max", "vary"}, or an ``lmfit.Parameters``; error
            parameters are named ``<ANALYTE>_sigma|a|b``.
        error: analyte -> "log" | "proportional" | "additive" | "combined", or
            (kind, {name: fixed value}); default "log" for every analyte.
        priors: name -> (mean on the natural scale, SD on the estimation scale).
        n_starts: number of starts (an integer >= 1: the first at the given values, the
            others drawn around them with SD 0.5 on the estimation scale, seeded by ``seed``).
        seed: a non-negative integer (None is refused: a fit is reproducible).
        method: "auto", "dopri5", "rodas" or "closed" (the model's closed form); None
            takes the model's.
        rtol, atol: solver tolerances (relative, in [1e-14, 1); absolute, > 0, in the
            outputs' units).
        standard_errors: compute the covariance (a finite-difference Hessian); False
            skips it (covariance None, no identifiability checks) when only the
            estimates are wanted.
        analytes: fit only these analytes (a name or a list; None: every analyte in the
            data); the other analytes' observations are left out.
        dvid: ANALYTE / DVID value -> model output name, e.g. ``{1: "CART", 2: "VEGF"}``
            for NONMEM's numeric DVID (see :func:`cartpk.read_dataset`).
        max_steps: the solver's step budget per subject and solve (an integer >= 1).
    """
    model = model if isinstance(model, Model) else load_model(model)
    n_starts = check_count(n_starts, "n_starts")
    seed = check_seed(seed)
    check_tolerances(rtol, atol, max_steps)
    ds = as_dataset(data, dvid)
    if id is None and len(ds.ids) > 1:
        check_dataset_doses(ds, model)  # one error for the data, not one per subject
        return fit_each(
            model,
            ds,
            params=params,
            error=error,
            priors=priors,
            n_starts=n_starts,
            seed=seed,
            method=method,
            rtol=rtol,
            atol=atol,
            standard_errors=standard_errors,
            analytes=analytes,
            max_steps=max_steps,
        )
    subject = pick_subject(ds, id)
    obs = pack_observations(ds, model, [subject], analytes)
    errors = error_spec(error, tuple(pd.unique(obs.analyte)), ds.analytes)
    for analyte, (kind, _) in errors.items():
        if kind == "log":
            ds.require_positive(analyte)
    start = build_parameters(model, params, errors)
    solver = np.array([method_code(model, method), rtol, atol, max_steps], dtype=np.float64)
    problem = Problem(model, obs, errors, prior_means(model, priors), list(start), solver)
    best, reached = multistart(problem, start, n_starts, seed)
    return summarise(problem, best, subject, n_starts, reached, standard_errors)


def fit_each(model: Model, ds: Dataset, **options: Any) -> FitTable:
    """Fit every subject in turn (``options`` as :func:`fit` takes them); a subject whose
    fit raises is recorded, not dropped."""
    results, errors = {}, {}
    for subject in ds.ids:
        try:
            results[subject] = fit(model, ds, subject, **options)
        except (FitError, DataError) as err:
            errors[subject] = str(err)
    return FitTable(results, errors)


def pick_subject(ds: Dataset, subject: Any) -> Any:
    """The subject to fit: ``subject`` if given and present, else the only one."""
    if subject is None:
        return ds.ids[0]
    if subject not in set(ds.ids):
        listed = ", ".join(shown(i) for i in ds.ids[:10])
        more = f" and {len(ds.ids) - 10} more" if len(ds.ids) > 10 else ""
        raise FitError(f"id {shown(subject)} is not in the data (its IDs: {listed}{more})")
    return subject


def multistart(problem: Problem, start: lmfit.Parameters, n_starts: int, seed: int):
    """Minimise from ``n_starts`` starts; return the best result and how many reached it.

    Each start runs lmfit's Levenberg–Marquardt (``leastsq``) on :meth:`Problem.residuals`,
    whose sum of squares is the objective up to a constant, with the Jacobian of
    :meth:`Problem.jacobian` (one parallel kernel call per Jacobian).
    """
    rng = np.random.default_rng(seed)
    names = problem.names
    varied = [k for k, n in enumerate(names) if start[n].vary]
    if not varied:
        return Fixed(start), 1

    def residuals(params: lmfit.Parameters) -> np.ndarray:
        return problem.residuals(np.array([params[n].value for n in names]))

    def jacobian(params: lmfit.Parameters) -> np.ndarray:
        return problem.jacobian(np.array([params[n].value for n in names]), varied)

    results = []
    for k in range(max(1, n_starts)):
        params = start.copy()
        if k:
            for p in params.values():
                if p.vary:
                    p.value = float(np.clip(p.value + rng.normal(0, 0.5), p.min, p.max))
        results.append(
            lmfit.minimize(
                residuals,
                params,
                method="leastsq",
                Dfun=jacobian,
                col_deriv=1,
                ftol=1e-10,
                xtol=1e-10,
                max_nfev=4000,
                scale_covar=False,
            )
        )
    values = np.array(
        [problem.total(np.array([r.params[n].value for n in names])) for r in results]
    )
    best = results[int(np.argmin(values))]
    return best, int(np.sum(values <= values.min() + 1e-3))


@dataclass
class Fixed:
    """Stands in for an lmfit result when every parameter is fixed (nothing to minimise)."""

    params: lmfit.Parameters
    success: bool = True
    message: str = "every parameter fixed: nothing estimated"


def summarise(
    problem: Problem, best, subject: Any, n_starts: int, reached: int, standard_errors: bool
) -> FitResult:
    """Covariance, warnings and the FitResult from the best minimisation."""
    x = np.array([best.params[n].value for n in problem.names])
    varied = [k for k, n in enumerate(problem.names) if best.params[n].vary]
    names = [problem.names[k] for k in varied]

    def totals_at(V: np.ndarray) -> np.ndarray:
        full = np.repeat(x[None, :], V.shape[0], axis=0)
        full[:, varied] = V
        return problem.totals(full)

    covariance, identifiability = None, []
    if standard_errors and varied:
        covariance, identifiability = covariance_from(hessian(totals_at, x[varied]), names)
    notes = list(identifiability)
    m2ll, penalty = problem.objective(x)
    model = problem.model
    estimates = dict(zip(model.param_names, problem.natural(x), strict=False))
    estimates.update(
        {n: float(np.exp(x[k])) for k, n in enumerate(problem.names) if k >= len(model.param_names)}
    )
    success = bool(best.success) and m2ll < FAILED_OBJECTIVE
    if not best.success:
        notes.append(f"the optimiser did not converge: {best.message}")
    if m2ll >= FAILED_OBJECTIVE:
        notes.append("the model could not be solved at the final estimates")
    notes += problem.obs.notes
    result = FitResult(
        model=model,
        subject=subject,
        estimates=estimates,
        estimation=dict(zip(problem.names, map(float, x), strict=True)),
        names=names,
        covariance=covariance,
        ofv=m2ll,
        objective=m2ll + penalty,
        success=success,
        message=str(best.message),
        n_starts=n_starts,
        n_at_best=reached,
        errors=problem.errors,
        priors=problem.priors,
        observations=observation_frame(problem.obs),
        doses=pd.DataFrame(
            {
                "TIME": problem.obs.d_time,
                "AMT": problem.obs.d_amt,
                "EVID": np.where(problem.obs.d_reset != 0, RESET_DOSE, DOSE),
            }
        ),
        covariates=dict(
            zip(model.covariate_names, map(float, problem.obs.covariates[0]), strict=True)
        ),
        rtol=float(problem.solver[1]),
        atol=float(problem.solver[2]),
        notes=notes,
        method=next(k for k, v in METHODS.items() if v == int(problem.solver[0])),
    )
    table = result.table()
    poor = [
        f"{row.parameter} is poorly determined (RSE {row.rse_pct:.0f} %)"
        for row in table[table["rse_pct"] > 100].itertuples()
    ]
    notes += poor
    notes += local_optimum_notes(bool(identifiability or poor), n_starts, reached)
    for note in notes:
        warnings.warn(f"ID {subject}: {note}", FitWarning, stacklevel=3)
    return result


def local_optimum_notes(ill_determined: bool, n_starts: int, reached: int) -> list[str]:
    """Say when the optimum found may be local: other starts did better or none were tried
    and the estimates look ill-determined (which a local optimum often does)."""
    if n_starts > 1 and reached < n_starts:
        return [
            f"{reached} of {n_starts} starts reached the best objective: the others ended in "
            "local optima; try more starts (n_starts) if few reached it"
        ]
    if n_starts == 1 and ill_determined:
        return [
            "with a single start, poorly determined or correlated estimates can also mean a "
            "local optimum: refit with n_starts=5 to check"
        ]
    return []


def observation_frame(obs: ObservationArrays) -> pd.DataFrame:
    """The fitted rows of one subject: TIME, DV, CENS, LLOQ (a censored row's upper bound),
    LIMIT (its lower bound, NaN for none), ANALYTE."""
    return pd.DataFrame(
        {
            "TIME": obs.time,
            "DV": obs.dv,
            "CENS": obs.cens,
            "LLOQ": obs.lloq,
            "LIMIT": np.where(np.isfinite(obs.limit), obs.limit, np.nan),
            "ANALYTE": obs.analyte,
        }
    )


def covariance_from(h: np.ndarray, names: list[str]) -> tuple[np.ndarray | None, list[str]]:
    """Covariance 2·H⁻¹ on the estimation scale, with identifiability warnings."""
    notes: list[str] = []
    try:
        cov = 2 * np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return None, ["Hessian is singular: standard errors not computable"]
    var = np.diag(cov)
    symmetric = (h + h.T) / 2
    if (
        np.any(~np.isfinite(var))
        or np.any(var <= 0)
        or not np.all(np.isfinite(symmetric))
        or np.linalg.eigvalsh(symmetric)[0] <= 0
    ):
        # An indefinite Hessian gives "correlations" beyond +-1: report none of them.
        return None, [
            "Hessian is not positive definite (the data do not determine every parameter, "
            "or the optimum is a saddle): standard errors not computable"
        ]
    corr = cov / np.sqrt(np.outer(var, var))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if abs(corr[i, j]) > 0.95:
                notes.append(f"{names[i]} and {names[j]} are correlated ({corr[i, j]:.3f})")
    return cov, notes
