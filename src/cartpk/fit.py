"""Individual fits with lmfit: maximum likelihood (or MAP with priors) for one subject.

The objective is −2 log-likelihood over all analytes (error model per analyte, censored
points by the M3 likelihood) plus a Gaussian prior penalty. Parameters are estimated on
their model scale (log, logit or none); standard errors come from a finite-difference
Hessian of the objective on that scale (covariance = 2·H⁻¹), back-transformed by the
delta method, with 95 % intervals transformed from the estimation scale.
Predictions come from the numba solver (:func:`cartpk.solve.solve_batch`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import lmfit
import numpy as np
import pandas as pd

from .data import Dataset, as_dataset
from .errors import FitError
from .likelihood import ERROR_MODELS, m2ll_censored, m2ll_observed
from .model import Model, load_model
from .solve import solve_batch

FAILED_OBJECTIVE = 1e12
ERROR_STARTS = {"sigma": 0.3, "b": 0.2, "a": 1.0}


class FitWarning(UserWarning):
    """A fit ran but its result needs care: not converged, or not identifiable."""


def to_estimation(value: float, scale: str, lower: float, upper: float) -> float:
    """Map a natural-scale value to its estimation scale."""
    if scale == "log":
        return float(np.log(value))
    if scale == "logit":
        return float(np.log((value - lower) / (upper - value)))
    return float(value)


def to_natural(x: np.ndarray | float, scale: str, lower: float, upper: float) -> np.ndarray:
    """Inverse of :func:`to_estimation`."""
    x = np.asarray(x, dtype=float)
    if scale == "log":
        return np.exp(x)
    if scale == "logit":
        return lower + (upper - lower) / (1 + np.exp(-x))
    return x


@dataclass
class Observations:
    """One subject's observations as flat arrays, in solver order (sorted by time)."""

    time: np.ndarray
    dv: np.ndarray
    censored: np.ndarray
    lloq: np.ndarray
    output: np.ndarray
    analyte: np.ndarray
    covariates: dict[str, float]
    excluded_before_infusion: int


def subject_observations(ds: Dataset, subject: Any, model: Model) -> Observations:
    """Collect one subject's observations; rows before TIME 0 are counted, not used."""
    obs = ds.observations()
    obs = obs[obs["ID"] == subject]
    ds.require_analytes(model.outputs)
    early = int((obs["TIME"] < 0).sum())
    obs = obs[obs["TIME"] >= 0].sort_values("TIME", kind="stable")
    covariates = ds.subject_covariates().loc[subject]
    return Observations(
        time=obs["TIME"].to_numpy(float),
        dv=obs["DV"].to_numpy(float),
        censored=obs["CENS"].to_numpy() == 1,
        lloq=obs["LLOQ"].to_numpy(float),
        output=np.array([model.outputs.index(a) for a in obs["ANALYTE"]], dtype=int),
        analyte=obs["ANALYTE"].to_numpy(str),
        covariates={c: float(covariates[c]) for c in model.covariate_names if c in covariates},
        excluded_before_infusion=early,
    )


def error_spec(error: Any, analytes: tuple[str, ...]) -> dict[str, tuple[str, dict[str, float]]]:
    """Normalise ``error``: analyte -> (kind, {fixed error parameters})."""
    given = error or {}
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
    """lmfit Parameters on the estimation scale: model parameters then error parameters."""
    given = params or {}
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
            value = fixed.get(name, given.get(f"{analyte}_{name}", ERROR_STARTS[name]))
            out.add(f"{analyte}_{name}", value=np.log(value), vary=name not in fixed)
    return out


def estimation_bounds(scale: str, lower: float, upper: float, p_lower: float, p_upper: float):
    """Bounds of a parameter on its estimation scale."""
    if scale == "log":
        return (np.log(lower) if lower > 0 else -np.inf, np.log(upper))
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


@dataclass
class Problem:
    """Everything the objective needs, precomputed once per fit."""

    model: Model
    obs: Observations
    errors: dict[str, tuple[str, dict[str, float]]]
    priors: dict[str, tuple[float, float]]
    rtol: float
    atol: float
    failures: int = 0

    def natural(self, values: dict[str, float]) -> np.ndarray:
        """Model parameters on the natural scale, in declared order."""
        return np.array(
            [
                float(to_natural(values[n], p.scale, p.lower, p.upper))
                for n, p in self.model.parameters.items()
            ]
        )

    def predict(self, natural: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Model outputs (n_times, n_outputs) for one subject, NaN if the solve failed."""
        sol = solve_batch(
            self.model,
            natural[None, :],
            self.obs.covariates or None,
            times=times,
            rtol=self.rtol,
            atol=self.atol,
            on_failure="nan",
        )
        return sol.values

    def objective(self, values: dict[str, float]) -> tuple[float, float]:
        """(−2LL, prior penalty) at the given estimation-scale values."""
        pred_all = self.predict(self.natural(values), self.obs.time)
        pred = pred_all[np.arange(self.obs.time.size), self.obs.output]
        m2ll = 0.0
        for analyte, (kind, _) in self.errors.items():
            error = {n: float(np.exp(values[f"{analyte}_{n}"])) for n in ERROR_MODELS[kind]}
            rows = self.obs.analyte == analyte
            m2ll += self.analyte_m2ll(kind, rows, pred, error)
        penalty = sum(((values[name] - mean) / sd) ** 2 for name, (mean, sd) in self.priors.items())
        return m2ll, penalty

    def analyte_m2ll(self, kind: str, rows: np.ndarray, pred: np.ndarray, error: dict) -> float:
        """−2LL of one analyte's rows; a failed or non-positive prediction is penalised."""
        f = pred[rows]
        if not np.all(np.isfinite(f)) or (kind in ("log", "proportional") and np.any(f <= 0)):
            self.failures += 1
            return FAILED_OBJECTIVE
        cens = self.obs.censored[rows]
        quantified = m2ll_observed(kind, self.obs.dv[rows][~cens], f[~cens], error)
        censored = m2ll_censored(kind, self.obs.lloq[rows][cens], f[cens], error)
        return float(quantified.sum() + censored.sum())

    def total(self, params: lmfit.Parameters) -> float:
        """The scalar lmfit minimises: −2LL + prior penalty."""
        m2ll, penalty = self.objective(params.valuesdict())
        return m2ll + penalty


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


def hessian(fun, x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function."""
    n = x.size
    h = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            e_i, e_j = np.eye(n)[i] * step, np.eye(n)[j] * step
            h[i, j] = h[j, i] = (
                fun(x + e_i + e_j) - fun(x + e_i - e_j) - fun(x - e_i + e_j) + fun(x - e_i - e_j)
            ) / (4 * step * step)
    return h


@dataclass
class FitResult:
    """The outcome of :func:`fit` for one subject.

    ``estimates`` are on the natural scale; ``covariance`` is on the estimation scale of
    the estimated parameters (``names``); ``ofv`` is −2LL at the optimum (prior excluded),
    ``objective`` includes the prior penalty.
    """

    model: Model
    subject: Any
    estimates: dict[str, float]
    estimation: dict[str, float]
    names: list[str]
    covariance: np.ndarray | None
    ofv: float
    objective: float
    n_obs: int
    success: bool
    message: str
    n_starts: int
    n_at_best: int
    priors: dict[str, tuple[float, float]]
    notes: list[str] = field(default_factory=list)
    problem: Problem | None = field(default=None, repr=False)

    @property
    def aic(self) -> float:
        """Akaike information criterion: OFV + 2·(estimated parameters)."""
        return self.ofv + 2 * len(self.names)

    @property
    def bic(self) -> float:
        """Bayesian information criterion: OFV + log(n observations)·(estimated parameters)."""
        return self.ofv + np.log(self.n_obs) * len(self.names)

    def table(self) -> pd.DataFrame:
        """Estimate, SE, RSE %, 95 % CI (natural scale), unit, fixed, prior per parameter."""
        rows = []
        for name, value in self.estimates.items():
            scale, lower, upper, unit = self.scale_of(name)
            se = ci_low = ci_high = np.nan
            if self.covariance is not None and name in self.names:
                k = self.names.index(name)
                sd = float(np.sqrt(self.covariance[k, k]))
                x = self.estimation[name]
                ci_low, ci_high = to_natural(
                    np.array([x - 1.96 * sd, x + 1.96 * sd]), scale, lower, upper
                )
                se = delta_se(x, sd, scale, lower, upper)
            rows.append(
                {
                    "parameter": name,
                    "estimate": value,
                    "se": se,
                    "rse_pct": 100 * se / abs(value) if value else np.nan,
                    "ci95_low": ci_low,
                    "ci95_high": ci_high,
                    "unit": unit,
                    "fixed": name not in self.names,
                    "prior": name in self.priors,
                }
            )
        return pd.DataFrame(rows)

    def scale_of(self, name: str) -> tuple[str, float, float, str]:
        """Estimation scale, bounds and unit of a model or error parameter."""
        if name in self.model.parameters:
            p = self.model.parameters[name]
            return p.scale, p.lower, p.upper, p.unit
        return "log", 0.0, np.inf, "-"

    def predict(self, times: Any) -> pd.DataFrame:
        """Model outputs at the estimates: TIME (day) and one column per output."""
        times = np.sort(np.asarray(times, dtype=float))
        natural = np.array([self.estimates[n] for n in self.model.param_names])
        values = self.problem.predict(natural, times)
        return pd.DataFrame({"TIME": times, **dict(zip(self.model.outputs, values.T, strict=True))})


def delta_se(x: float, sd: float, scale: str, lower: float, upper: float) -> float:
    """SE on the natural scale by the delta method."""
    if scale == "log":
        return float(np.exp(x) * sd)
    if scale == "logit":
        e = np.exp(-x)
        return float((upper - lower) * e / (1 + e) ** 2 * sd)
    return sd


def fit(
    model: Model | str,
    data: Any,
    id: Any = None,
    params: Any = None,
    error: Any = None,
    priors: Any = None,
    n_starts: int = 1,
    seed: int = 1,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> FitResult:
    """Fit a model to one subject's observations by maximum likelihood (MAP with priors).

    Args:
        model: a Model or a built-in name / path.
        data: anything :func:`cartpk.data.as_dataset` accepts.
        id: the subject to fit (required when the data hold several subjects).
        params: start values and bounds: name -> value, or name -> {"value", "min",
            "max", "vary"}; error parameters are named ``<ANALYTE>_sigma|a|b``.
        error: analyte -> "log" | "proportional" | "additive" | "combined", or
            (kind, {name: fixed value}); default "log" for every analyte.
        priors: name -> (mean on the natural scale, SD on the estimation scale).
        n_starts: number of starts (the first at the given values, the others drawn
            around them with SD 0.5 on the estimation scale, seeded by ``seed``).
        rtol, atol: solver tolerances.
    """
    model = model if isinstance(model, Model) else load_model(model)
    ds = as_dataset(data)
    subject = pick_subject(ds, id)
    obs = subject_observations(ds, subject, model)
    errors = error_spec(error, tuple(pd.unique(obs.analyte)))
    for analyte, (kind, _) in errors.items():
        if kind == "log":
            ds.require_positive(analyte)
    problem = Problem(model, obs, errors, prior_means(model, priors), rtol, atol)
    start = build_parameters(model, params, errors)
    best, reached = multistart(problem, start, n_starts, seed)
    return summarise(problem, best, subject, n_starts, reached)


def pick_subject(ds: Dataset, subject: Any) -> Any:
    """The subject to fit: ``subject`` if given and present, else the only one."""
    if subject is None:
        if len(ds.ids) > 1:
            raise FitError(
                f"the data hold {len(ds.ids)} subjects: choose one with id= "
                f"(IDs: {', '.join(map(str, ds.ids[:10]))})"
            )
        return ds.ids[0]
    if subject not in set(ds.ids):
        raise FitError(f"id {subject!r} is not in the data")
    return subject


def multistart(problem: Problem, start: lmfit.Parameters, n_starts: int, seed: int):
    """Minimise from ``n_starts`` starts; return the best result and how many reached it."""
    rng = np.random.default_rng(seed)
    results = []
    for k in range(max(1, n_starts)):
        params = start.copy()
        if k:
            for p in params.values():
                if p.vary:
                    p.value = float(np.clip(p.value + rng.normal(0, 0.5), p.min, p.max))
        results.append(
            lmfit.minimize(
                problem.total,
                params,
                method="lbfgsb",
                options={"ftol": 1e-12, "gtol": 1e-6, "maxiter": 2000},
            )
        )
    values = np.array([problem.total(r.params) for r in results])
    best = results[int(np.argmin(values))]
    return best, int(np.sum(values <= values.min() + 1e-3))


def summarise(problem: Problem, best, subject: Any, n_starts: int, reached: int) -> FitResult:
    """Covariance, warnings and the FitResult from the best minimisation."""
    values = best.params.valuesdict()
    names = [n for n, p in best.params.items() if p.vary]
    x0 = np.array([values[n] for n in names])

    def total_at(x: np.ndarray) -> float:
        return sum(problem.objective({**values, **dict(zip(names, x, strict=True))}))

    covariance, notes = covariance_from(hessian(total_at, x0), names)
    m2ll, penalty = problem.objective(values)
    estimates = dict(zip(problem.model.param_names, problem.natural(values), strict=True))
    for n, v in values.items():
        if n not in problem.model.parameters:
            estimates[n] = float(np.exp(v))
    success = bool(best.success) and problem.failures < best.nfev
    if not best.success:
        notes.append(f"the optimiser did not converge: {best.message}")
    if problem.obs.excluded_before_infusion:
        notes.append(f"{problem.obs.excluded_before_infusion} observations before TIME 0 not used")
    for note in notes:
        warnings.warn(note, FitWarning, stacklevel=3)
    return FitResult(
        model=problem.model,
        subject=subject,
        estimates=estimates,
        estimation=values,
        names=names,
        covariance=covariance,
        ofv=m2ll,
        objective=m2ll + penalty,
        n_obs=problem.obs.time.size,
        success=success,
        message=str(best.message),
        n_starts=n_starts,
        n_at_best=reached,
        priors=problem.priors,
        notes=notes,
        problem=problem,
    )


def covariance_from(h: np.ndarray, names: list[str]) -> tuple[np.ndarray | None, list[str]]:
    """Covariance 2·H⁻¹ on the estimation scale, with identifiability warnings."""
    notes: list[str] = []
    try:
        cov = 2 * np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return None, ["Hessian is singular: standard errors not computable"]
    var = np.diag(cov)
    if np.any(~np.isfinite(var)) or np.any(var <= 0):
        return None, ["Hessian is not positive definite: standard errors not computable"]
    corr = cov / np.sqrt(np.outer(var, var))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if abs(corr[i, j]) > 0.95:
                notes.append(f"{names[i]} and {names[j]} are correlated ({corr[i, j]:.3f})")
    return cov, notes
