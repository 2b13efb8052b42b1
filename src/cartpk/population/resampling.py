"""Bootstrap and simulation–estimation of population fits, here or on a dask cluster.

:func:`bootstrap` refits a :class:`PopulationFit` to case-resampled copies of its data (whole
subjects drawn with replacement) and gives percentile intervals; :func:`simest` simulates
data sets from a population on a design, fits each and reports bias, RMSE and the coverage
of the fits' 95 % intervals.

Every replicate is one task. Replicate r draws all its random numbers (the resampling or
the simulation, then the refit's seed) from ``numpy.random.SeedSequence(seed).spawn(n)[r]``
(built directly as ``SeedSequence(seed, spawn_key=(r,))``, the same sequence), so its result
depends on the seed and r only: not on ``n``, the order the tasks run in, or where they run.
With a ``dask.distributed.Client`` as ``scheduler`` the tasks are submitted to its workers
and give the same numbers as the local run. A task carries the model without its loaded
kernels (picklable); a worker loads them from its disk cache, compiling them on first use.

A replicate fails when its simulation or fit raises, or when the fit's notes say that it did
not converge (a subject's conditional mode). Failed replicates stay in the table
(``converged`` False, ``error`` saying why) and count in the converged share; intervals
and bias statistics are computed over the converged ones.

Estimates are reported on the natural scale, as in :attr:`PopulationFit.fixed_effects`,
``omega_table`` and ``sigma``: the typical value of every estimated parameter (its name),
covariate coefficients (their label, e.g. ``C0~DOSE``), between-subject SDs on the
estimation scale (``omega_<param>``), correlations of a block Omega (``corr_<a>,<b>``)
and the estimated residual error parameters (``<analyte>_<name>``). Typical values hold
at a reference covariate (the median of a continuous covariate, the most frequent level of
a categorical one), which moves with the data: bootstrap estimates are re-expressed at the
original fit's references and simest's truth at the design's, so that the numbers compare.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..data import Dataset, as_dataset, read_dataset
from ..errors import FitError, FitWarning
from ..individual.fit import check_count, check_seed, error_spec
from ..likelihood import (
    ERROR_MODELS,
    SubjectRows,
    derived_dose,
    pack_observations,
    residual_sd,
)
from ..model import Model
from ..scales import to_estimation, to_natural
from ..scenarios import Population
from ..solve import METHODS, Doses, solve_batch
from .design import covariate_columns
from .result import PopulationFit
from .saem import fit_population

__all__ = ["BootstrapResult", "SimestResult", "bootstrap", "simest"]

#: A fit note that marks a replicate as not converged.
NOT_CONVERGED = "not converged"


# --- what a refit needs and what it reports -------------------------------------------------


@dataclass(frozen=True)
class _Refit:
    """A refit's model and :func:`fit_population` keywords (seed and data excepted), and the
    covariate references (a ``covariate_model`` list) its estimates are reported at."""

    model: Model
    options: dict[str, Any]
    reference: list[dict[str, Any]]


def _refit_options(fit: PopulationFit) -> dict[str, Any]:
    """The fit's own settings, started from its estimates (typical values, SDs, error)."""
    covariates: dict[str, list[str]] = {}
    for c in fit.covariate_model:
        names = covariates.setdefault(c["parameter"], [])
        if c["covariate"] not in names:
            names.append(c["covariate"])
    typical = fit.typical()
    params: dict[str, Any] = {
        name: {"value": typical[name], "vary": name in fit.estimated}
        for name in fit.model.param_names
    }
    sd = np.sqrt(np.diag(fit.omega))
    params.update({f"omega_{name}": float(s) for name, s in zip(fit.random, sd, strict=True)})
    for analyte, (kind, fixed) in fit.errors.items():
        for name in ERROR_MODELS[kind]:
            if name not in fixed:
                params[f"{analyte}_{name}"] = float(fit.sigma_values[analyte][name])
    names = {code: name for name, code in METHODS.items()}
    settings = fit.settings
    return {
        "random": list(fit.random),
        "covariates": covariates or None,
        "error": {a: (kind, dict(fixed)) for a, (kind, fixed) in fit.errors.items()},
        "omega": fit.omega_kind,
        "params": params,
        "n_iter": tuple(int(k) for k in settings["n_iter"]),
        "n_is": int(settings["n_is"]),
        "method": names[int(settings["method"])],
        "rtol": float(settings["rtol"]),
        "atol": float(settings["atol"]),
        "analytes": list(fit.errors),
    }


def _at_reference(
    mu: Mapping[str, float],
    theta: Mapping[str, float],
    model_of: list[dict[str, Any]],
    target: list[dict[str, Any]],
    absent: float,
) -> tuple[dict[str, float], dict[str, float]]:
    """Typical values (estimation scale) and covariate coefficients of a fit whose covariate
    design is ``model_of``, re-expressed at the references of ``target`` (labels of
    ``target``). A continuous effect: mu + theta·log(new median / old median). A categorical
    one: the new reference level's effect moves into mu; a level without an estimate gives
    NaN. An effect of ``target`` that ``model_of`` lacks altogether is ``absent``: 0 for a
    truth without it, NaN for a refit whose data had a single level."""
    mu = dict(mu)
    out: dict[str, float] = {}
    for key in dict.fromkeys((t["parameter"], t["covariate"]) for t in target):
        mine = [c for c in model_of if (c["parameter"], c["covariate"]) == key]
        wanted = [t for t in target if (t["parameter"], t["covariate"]) == key]
        if not mine:
            mu[key[0]] += absent
            out.update({t["label"]: absent for t in wanted})
            continue
        if wanted[0]["kind"] == "continuous":
            coefficient = theta[mine[0]["label"]]
            mu[key[0]] += coefficient * np.log(wanted[0]["reference"] / mine[0]["reference"])
            out[wanted[0]["label"]] = coefficient
            continue
        effect = {c["level"]: theta[c["label"]] for c in mine}
        effect[mine[0]["reference"]] = 0.0
        shift = effect.get(wanted[0]["reference"], np.nan)
        mu[key[0]] += shift
        out.update({t["label"]: effect.get(t["level"], np.nan) - shift for t in wanted})
    return mu, out


def _values(
    model: Model,
    mu: Mapping[str, float],
    theta: Mapping[str, float],
    omega: Mapping[str, float],
    correlation: np.ndarray | None,
    sigma: Mapping[str, Mapping[str, float]],
) -> dict[str, float]:
    """The reported values (natural scale, see the module docstring) of the given
    parameters: ``mu`` on the estimation scale, ``omega`` name -> SD, ``sigma`` the error
    parameters to report."""
    out = {}
    for name, x in mu.items():
        p = model.parameters[name]
        out[name] = float(to_natural(x, p.scale, p.lower, p.upper))
    out.update({label: float(v) for label, v in theta.items()})
    out.update({f"omega_{name}": float(sd) for name, sd in omega.items()})
    if correlation is not None:
        names = list(omega)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                out[f"corr_{names[a]},{names[b]}"] = float(correlation[a, b])
    for analyte, values in sigma.items():
        out.update({f"{analyte}_{name}": float(v) for name, v in values.items()})
    return out


def _estimates(fit: PopulationFit, reference: list[dict[str, Any]]) -> dict[str, float]:
    """A fit's estimates, at the covariate references ``reference``."""
    mu, theta = _at_reference(fit.mu, fit.theta, fit.covariate_model, reference, np.nan)
    sd = np.sqrt(np.diag(fit.omega))
    block = fit.omega_kind == "block"
    sigma = {
        a: {n: v for n, v in values.items() if n not in fit.errors[a][1]}
        for a, values in fit.sigma_values.items()
    }
    return _values(
        fit.model,
        {name: mu[name] for name in fit.estimated},
        theta,
        dict(zip(fit.random, sd.tolist(), strict=True)),
        fit.omega / np.outer(sd, sd) if block else None,
        sigma,
    )


def _intervals(fit: PopulationFit) -> dict[str, float]:
    """Each estimate's 95 % interval from the fit's SEs: ``<label>_low``, ``<label>_high``."""
    out = {}
    tables = [
        (fit.fixed_effects, ""),
        (fit.omega_table, "omega_"),
        (fit.sigma, ""),
    ]
    for table, prefix in tables:
        for row in table.itertuples():
            out[f"{prefix}{row.parameter}_low"] = float(row.ci95_low)
            out[f"{prefix}{row.parameter}_high"] = float(row.ci95_high)
    return out


def _refit(refit: _Refit, data: Dataset, seed: int, intervals: bool) -> dict[str, Any]:
    """One refit: converged, error, notes and the estimates (with their intervals if asked)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            fit = fit_population(refit.model, data, seed=seed, progress=False, **refit.options)
    except Exception as problem:  # a failed replicate is counted, never dropped
        return {"converged": False, "error": f"{type(problem).__name__}: {problem}", "notes": ""}
    stuck = [note for note in fit.notes if NOT_CONVERGED in note]
    row = {
        "converged": not stuck,
        "error": "; ".join(stuck),
        "notes": "; ".join(fit.notes),
        **_estimates(fit, refit.reference),
    }
    if intervals:
        row.update(_intervals(fit))
    return row


# --- running the replicates -------------------------------------------------------------------


def _replicate_rng(seed: int, r: int) -> np.random.Generator:
    """Replicate r's generator: ``SeedSequence(seed).spawn(n)[r]`` for any n > r."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(r,)))


def _fit_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _without_kernels(model: Model) -> Model:
    """A copy of the model that holds no loaded kernel module (picklable)."""
    model = copy.copy(model)
    vars(model).pop("kernels", None)
    return model


def _run(task: Callable[[Any, int], dict], job: Any, n: int, scheduler: Any) -> list[dict]:
    """Replicates 0..n-1 of ``task``, here in turn or as dask tasks, in replicate order."""
    if scheduler is None:
        return [task(job, r) for r in range(n)]
    if not (hasattr(scheduler, "submit") and hasattr(scheduler, "scatter")):
        raise ValueError(
            f"scheduler: expected None or a dask.distributed Client, got {type(scheduler).__name__}"
        )
    shared = scheduler.scatter(job, broadcast=True, hash=False)
    futures = [scheduler.submit(task, shared, r, pure=False) for r in range(n)]
    return scheduler.gather(futures)


def _checked_level(level: Any) -> float:
    if isinstance(level, bool) or not (isinstance(level, numbers.Real) and 0 < level < 1):
        raise ValueError(f"level {level!r}: expected a coverage strictly between 0 and 1")
    return float(level)


#: The leading columns of a replicate table.
FIRST = ["replicate", "seed", "converged", "error", "notes"]


def _table(rows: list[dict[str, Any]], names: list[str]) -> pd.DataFrame:
    """The replicate table: FIRST, the estimates ``names`` (NaN where a replicate failed),
    then any other columns."""
    table = pd.DataFrame(rows)
    head = [*FIRST, *names]
    return table.reindex(columns=[*head, *(c for c in table.columns if c not in head)])


# --- bootstrap --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BootJob:
    """What every bootstrap replicate needs (picklable with a kernel-less model)."""

    frame: pd.DataFrame
    ids: list[Any]
    refit: _Refit
    seed: int


def _draw(job: _BootJob, r: int) -> tuple[np.ndarray, np.random.Generator]:
    """Replicate r's subjects (positions in ``job.ids``) and its generator, drawn from."""
    rng = _replicate_rng(job.seed, r)
    return rng.integers(0, len(job.ids), size=len(job.ids)), rng


def _resampled(job: _BootJob, drawn: np.ndarray) -> Dataset:
    """The data of the subjects ``drawn`` (positions, repeats allowed), renumbered 1..N in
    draw order so that a subject drawn twice is two subjects."""
    rows = job.frame.groupby("ID", sort=False).indices
    parts = [rows[job.ids[k]] for k in drawn]
    frame = job.frame.iloc[np.concatenate(parts)].copy()
    frame["ID"] = np.repeat(np.arange(1, drawn.size + 1), [p.size for p in parts])
    return read_dataset(frame.reset_index(drop=True))


def _bootstrap_replicate(job: _BootJob, r: int) -> dict[str, Any]:
    drawn, rng = _draw(job, r)
    data = _resampled(job, drawn)
    seed = _fit_seed(rng)
    return {"replicate": r, "seed": seed, **_refit(job.refit, data, seed, intervals=False)}


@dataclass
class BootstrapResult:
    """The outcome of :func:`bootstrap`.

    Attributes:
        fit: the original fit.
        table: one row per replicate: ``replicate``, ``seed`` (of its refit), ``converged``,
            ``error`` (why it failed, else ""), ``notes`` (the refit's), then the estimates
            on the natural scale (columns named as in the module docstring; NaN when the
            replicate failed).
        seed: the bootstrap seed.
        level: the default coverage of :meth:`ci`.
    """

    fit: PopulationFit
    table: pd.DataFrame
    seed: int
    level: float
    _job: _BootJob = field(repr=False)

    @property
    def parameters(self) -> list[str]:
        """The estimate columns of :attr:`table`."""
        return list(_estimates(self.fit, self.fit.covariate_model))

    @property
    def converged_share(self) -> float:
        """Share of the replicates that converged (failed ones count)."""
        return float(self.table["converged"].mean())

    def ci(self, level: float | None = None) -> pd.DataFrame:
        """Percentile intervals, one row per parameter: ``parameter``, ``estimate`` (the
        original fit's), ``median``, ``low`` and ``high`` (the (1 − level)/2 and
        (1 + level)/2 percentiles, numpy's linear interpolation, of the converged
        replicates' estimates; a NaN estimate, a level absent from a replicate, is left
        out) and ``n`` (replicates used)."""
        level = self.level if level is None else _checked_level(level)
        ok = self.table[self.table["converged"]]
        original = _estimates(self.fit, self.fit.covariate_model)
        rows = []
        for name in self.parameters:
            values = ok[name].to_numpy(float)
            values = values[np.isfinite(values)]
            q = (
                np.percentile(values, [50, (100 - 100 * level) / 2, (100 + 100 * level) / 2])
                if values.size
                else np.full(3, np.nan)
            )
            rows.append(
                {
                    "parameter": name,
                    "estimate": original[name],
                    "median": q[0],
                    "low": q[1],
                    "high": q[2],
                    "n": values.size,
                }
            )
        return pd.DataFrame(rows)

    def sample(self, r: int) -> Dataset:
        """Replicate r's data set (subjects renumbered 1..N in draw order)."""
        return _resampled(self._job, _draw(self._job, r)[0])

    def drawn(self, r: int) -> list[Any]:
        """The original IDs replicate r drew, in order (its subjects 1..N)."""
        return [self._job.ids[k] for k in _draw(self._job, r)[0]]

    def summary(self) -> str:
        """The intervals and the converged share as text."""
        n = len(self.table)
        head = (
            f"Bootstrap of {self.fit.model.name}: {n} replicates (seed {self.seed}), "
            f"{self.converged_share:.1%} converged; {self.level:.0%} percentile intervals"
        )
        return head + "\n" + self.ci().to_string(index=False, float_format=lambda x: f"{x:.4g}")

    def __repr__(self) -> str:
        return self.summary()


def bootstrap(
    popfit: PopulationFit,
    n: int = 500,
    seed: int = 1,
    scheduler: Any = None,
    *,
    data: Any = None,
    level: float = 0.95,
) -> BootstrapResult:
    """Case-resampling bootstrap of a population fit, with percentile intervals.

    Each replicate draws N subjects with replacement from the fit's N subjects (all of each
    drawn subject's rows, renumbered 1..N so that a subject drawn twice counts twice) and
    refits them with the fit's own settings: model, random effects, covariate model, error
    models, Omega kind, fixed parameters, iterations, importance-sampling draws and solver
    method and tolerances (``max_steps`` is not kept by a fit: the default). The refit starts
    from the fit's estimates (typical values, between-subject SDs, residual error; covariate
    coefficients start from 0, as in every :func:`cartpk.fit_population` run).

    Args:
        popfit: the fit to bootstrap.
        n: replicates (an integer >= 1).
        seed: an integer >= 0; replicate r uses ``SeedSequence(seed).spawn(n)[r]`` for its
            draw and its refit's seed.
        scheduler: None (replicates run here, one after the other) or a
            ``dask.distributed.Client`` (one task per replicate on its workers, same
            results).
        data: the data set the fit was made on (anything :func:`cartpk.read_dataset`
            takes, with the fit's analyte names); it must hold the fit's subjects and
            observations. None: rebuilt from the fit (its observations and the model's
            covariates, kept per subject), which is refused when the covariate model uses
            a covariate the model does not declare or the subjects have re-infusions: a
            fit does not keep those.
        level: coverage of the percentile intervals (default 95 %: the 2.5 and 97.5 %
            percentiles).

    Returns:
        A :class:`BootstrapResult`.

    Raises:
        ValueError / FitError: bad arguments, or data that are not the fit's.
    """
    if not isinstance(popfit, PopulationFit):
        raise ValueError(f"bootstrap: expected a PopulationFit, got {type(popfit).__name__}")
    n, seed, level = check_count(n, "n"), check_seed(seed), _checked_level(level)
    ds = _fit_data(popfit) if data is None else _given_data(popfit, data)
    frame = ds.frame[ds.frame["ID"].isin(popfit.ids)].drop(columns="ROW")
    refit = _Refit(popfit.model, _refit_options(popfit), popfit.covariate_model)
    job = _BootJob(frame, list(popfit.ids), refit, seed)
    remote = job if scheduler is None else replace(job, refit=_remote(refit))
    rows = _run(_bootstrap_replicate, remote, n, scheduler)
    table = _table(rows, list(_estimates(popfit, popfit.covariate_model)))
    return BootstrapResult(popfit, table, seed, level, job)


def _remote(refit: _Refit) -> _Refit:
    return replace(refit, model=_without_kernels(refit.model))


def _fit_data(fit: PopulationFit) -> Dataset:
    """The fit's data, rebuilt from what it keeps (see :func:`bootstrap`'s ``data``)."""
    model = fit.model
    foreign = [
        c["covariate"] for c in fit.covariate_model if c["covariate"] not in model.covariates
    ]
    if foreign:
        raise FitError(
            f"bootstrap: the covariate model uses {sorted(set(foreign))}, which the fit does "
            f"not keep (only {model.name}'s covariates: "
            f"{', '.join(model.covariate_names) or 'none'}); pass the data with data="
        )
    if fit.doses is not None and not fit.doses.empty:
        raise FitError(
            "bootstrap: the subjects have re-infusions or resets, which the fit keeps only "
            "as solver input; pass the data with data="
        )
    frame = fit.observations.assign(EVID=0, MDV=0)
    if fit.covariates.size:
        index = pd.Index(fit.ids).get_indexer(frame["ID"])
        for k, name in enumerate(model.covariate_names):
            frame[name] = fit.covariates[index, k]
    return read_dataset(frame)


def _given_data(fit: PopulationFit, data: Any) -> Dataset:
    """``data``, checked to hold the fit's subjects and their observations."""
    ds = as_dataset(data)
    missing = [i for i in fit.ids if i not in set(ds.ids)]
    if missing:
        raise FitError(f"bootstrap data: the fit's IDs {missing[:10]} are not in the data")
    obs = pack_observations(ds, fit.model, list(fit.ids), list(fit.errors))
    if obs.time.size != fit.n_obs:
        raise FitError(
            f"bootstrap data: {obs.time.size} observations of the fit's subjects and "
            f"analytes, the fit has {fit.n_obs}: not the data it was fitted to"
        )
    return ds


# --- simulation–estimation ---------------------------------------------------------------------


@dataclass(frozen=True)
class _SimJob:
    """What every simest replicate needs (picklable with a kernel-less model)."""

    population: Population
    errors: dict[str, tuple[str, dict[str, float]]]
    sigma: dict[str, dict[str, float]]
    frame: pd.DataFrame
    rows: np.ndarray
    time: np.ndarray
    off: np.ndarray
    out: np.ndarray
    analyte: np.ndarray
    lloq: np.ndarray
    covariates: np.ndarray
    effect_covariates: dict[str, np.ndarray]
    doses: Doses | None
    solver: dict[str, Any]
    refit: _Refit
    seed: int


def _simulated(job: _SimJob, rng: np.random.Generator) -> Dataset:
    """One simulated data set on the design: random effects, then residual errors."""
    population = job.population
    n_subjects = job.off.size - 1
    params = population.individual(population.draw_etas(n_subjects, rng), job.effect_covariates)
    eps = rng.standard_normal(job.time.size)
    sol = solve_batch(
        population.model,
        params,
        job.covariates if job.covariates.size else None,
        times=job.time,
        offsets=job.off,
        doses=job.doses,
        **job.solver,
    )
    f = sol.values[np.arange(job.time.size), job.out]
    y = np.empty_like(f)
    for analyte, (kind, _) in job.errors.items():
        on = job.analyte == analyte
        sd = residual_sd(kind, f[on], job.sigma[analyte])
        y[on] = np.exp(np.log(f[on]) + sd * eps[on]) if kind == "log" else f[on] + sd * eps[on]
    below = np.isfinite(job.lloq) & (job.lloq > 0) & (y < job.lloq)
    frame = job.frame.copy()
    at = frame.index[job.rows]
    frame.loc[at, "DV"] = np.where(below, job.lloq, y)
    frame.loc[at, "CENS"] = below.astype(np.int64)
    frame.loc[at, "LIMIT"] = np.nan
    return read_dataset(frame)


def _simest_replicate(job: _SimJob, r: int) -> dict[str, Any]:
    rng = _replicate_rng(job.seed, r)
    try:
        data = _simulated(job, rng)
    except Exception as problem:  # a failed replicate is counted, never dropped
        error = f"simulation: {type(problem).__name__}: {problem}"
        return {"replicate": r, "seed": -1, "converged": False, "error": error, "notes": ""}
    seed = _fit_seed(rng)
    return {"replicate": r, "seed": seed, **_refit(job.refit, data, seed, intervals=True)}


@dataclass
class SimestResult:
    """The outcome of :func:`simest`.

    Attributes:
        truth: the simulated population's values, named as the estimates (typical values
            at the design's covariate references).
        table: one row per replicate: ``replicate``, ``seed`` (of its fit; -1 when the
            simulation failed), ``converged``, ``error``, ``notes``, each estimate (natural
            scale) and its 95 % interval from the fit's SEs, ``<name>_low`` and
            ``<name>_high`` (NaN without SEs).
        seed: the seed.
    """

    truth: dict[str, float]
    table: pd.DataFrame
    seed: int

    @property
    def converged_share(self) -> float:
        """Share of the replicates that converged (failed ones count)."""
        return float(self.table["converged"].mean())

    @property
    def parameters(self) -> list[str]:
        """Estimated parameters that have a true value."""
        return [name for name in self.truth if name in self.table]

    def summary(self) -> pd.DataFrame:
        """One row per parameter, over the converged replicates with an estimate:
        ``parameter``, ``truth``, ``mean``, ``bias`` (mean − truth), ``rel_bias_pct``
        (100 · bias / truth), ``rmse``, ``coverage_pct`` (share of the intervals holding
        the truth, among those that could be computed), ``n`` and ``n_ci``."""
        ok = self.table[self.table["converged"]]
        rows = []
        for name in self.parameters:
            truth = self.truth[name]
            values = ok[name].to_numpy(float)
            values = values[np.isfinite(values)]
            low = ok.get(f"{name}_low", pd.Series(np.nan, index=ok.index)).to_numpy(float)
            high = ok.get(f"{name}_high", pd.Series(np.nan, index=ok.index)).to_numpy(float)
            has = np.isfinite(low) & np.isfinite(high)
            bias = float(np.mean(values) - truth) if values.size else np.nan
            rows.append(
                {
                    "parameter": name,
                    "truth": truth,
                    "mean": float(np.mean(values)) if values.size else np.nan,
                    "bias": bias,
                    "rel_bias_pct": 100 * bias / truth if truth else np.nan,
                    "rmse": float(np.sqrt(np.mean((values - truth) ** 2)))
                    if values.size
                    else np.nan,
                    "coverage_pct": 100
                    * float(np.mean((low <= truth) & (truth <= high), where=has))
                    if has.any()
                    else np.nan,
                    "n": values.size,
                    "n_ci": int(has.sum()),
                }
            )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        head = (
            f"Simulation-estimation: {len(self.table)} replicates (seed {self.seed}), "
            f"{self.converged_share:.1%} converged"
        )
        return (
            head + "\n" + self.summary().to_string(index=False, float_format=lambda x: f"{x:.4g}")
        )


def simest(
    source: PopulationFit | Population,
    design: Any,
    n: int = 100,
    seed: int = 1,
    scheduler: Any = None,
    *,
    sigma: Mapping[str, Mapping[str, float]] | None = None,
    **fit_options: Any,
) -> SimestResult:
    """Simulation–estimation: simulate ``n`` trials on a design, fit each, compare with truth.

    Each replicate draws every design subject's random effects from the population and adds
    residual error (log: on the log scale) to the model's predictions at the design's
    observation times; a value below the row's LLOQ is censored (CENS=1, DV=LLOQ). The design's
    doses (TIME 0 and re-infusions) and covariates are kept; its DV and CENS are replaced.
    Then :func:`cartpk.fit_population` fits the simulated trial, started from the truth.

    Args:
        source: a :class:`PopulationFit` (its population, residual error and settings: its
            random effects, covariate model, error models, Omega kind, iterations, draws and
            solver) or a :class:`cartpk.Population` without covariate effects (random
            effects: its omegas; give ``sigma``).
        design: a data set (anything :func:`cartpk.read_dataset` takes): IDs, observation
            times (days) and analytes, LLOQ, doses (cells/kg) and covariates. Its
            observations of the simulated analytes are replaced.
        n: replicates (an integer >= 1).
        seed: an integer >= 0; replicate r uses ``SeedSequence(seed).spawn(n)[r]`` for its
            random effects, residual errors and its fit's seed.
        scheduler: None (here) or a ``dask.distributed.Client`` (same results).
        sigma: residual error parameters, analyte -> {name: value} (e.g.
            ``{"CART": {"sigma": 0.5}}``); only with a Population source, whose error
            models come from ``error`` (default "log").
        fit_options: :func:`cartpk.fit_population` keywords overriding the source's
            settings (e.g. ``n_iter``, ``n_is``, ``random``, ``error``).

    Returns:
        A :class:`SimestResult`: :meth:`SimestResult.summary` gives bias, relative bias,
        RMSE and coverage per parameter; ``converged_share`` the converged share.
    """
    n, seed = check_count(n, "n"), check_seed(seed)
    if isinstance(source, PopulationFit):
        if sigma is not None:
            raise ValueError("simest: sigma is taken from the PopulationFit; do not give it")
        population, options = source.population(), _refit_options(source)
        errors, truth_sigma = source.errors, source.sigma_values
        mu, theta, covariate_model = source.mu, source.theta, source.covariate_model
    elif isinstance(source, Population):
        population, errors, truth_sigma, options = _population_source(source, sigma, fit_options)
        mu = {
            name: to_estimation(v, *_bounds(source.model, name))
            for name, v in source.typical.items()
        }
        theta, covariate_model = {}, []
    else:
        raise ValueError(
            f"simest: expected a PopulationFit or a Population, got {type(source).__name__}"
        )
    options = {**options, **fit_options}
    model = population.model
    ds = as_dataset(design)
    ids = list(ds.ids)
    analytes = list(errors)
    obs = pack_observations(ds, model, ids, analytes)
    reference = _reference(ds, ids, options.get("covariates"), model)
    truth_mu, truth_theta = _at_reference(mu, theta, covariate_model, reference, 0.0)
    omega = dict(population.omega)
    truth = _values(
        model,
        truth_mu,
        truth_theta,
        omega,
        population.correlation if options.get("omega") == "block" else None,
        truth_sigma,
    )
    typical = {
        name: float(to_natural(truth_mu[name], *_bounds(model, name))) for name in model.param_names
    }
    options["params"] = {
        **{
            name: {"value": typical[name], "vary": name not in _fixed(options, model)}
            for name in model.param_names
        },
        **{f"omega_{name}": sd for name, sd in omega.items() if sd > 0},
        **{
            f"{a}_{k}": truth_sigma[a][k]
            for a, (kind, fixed) in error_spec(options.get("error"), tuple(analytes)).items()
            for k in ERROR_MODELS[kind]
            if k in truth_sigma[a] and k not in fixed
        },
        **(fit_options.get("params") or {}),
    }
    job = _SimJob(
        population=population,
        errors=dict(errors),
        sigma={a: dict(v) for a, v in truth_sigma.items()},
        frame=ds.frame.drop(columns="ROW"),
        rows=_observation_rows(ds, ids, analytes, obs.time),
        time=obs.time,
        off=obs.off,
        out=obs.out,
        analyte=obs.analyte,
        lloq=obs.lloq,
        covariates=obs.covariates,
        effect_covariates=_effect_covariates(ds, ids, population),
        doses=Doses(obs.d_time, obs.d_amt, obs.d_off, obs.d_reset != 0)
        if obs.d_time.size
        else None,
        solver={k: options[k] for k in ("method", "rtol", "atol") if k in options},
        refit=_Refit(model, options, reference),
        seed=seed,
    )
    remote = job
    if scheduler is not None:
        population = replace(population, model=_without_kernels(model))
        remote = replace(job, population=population, refit=_remote(job.refit))
    rows = _run(_simest_replicate, remote, n, scheduler)
    return SimestResult(truth, _table(rows, []), seed)


def _bounds(model: Model, name: str) -> tuple[str, float, float]:
    p = model.parameters[name]
    return p.scale, p.lower, p.upper


def _fixed(options: Mapping[str, Any], model: Model) -> set[str]:
    """Parameters a fit with ``options`` keeps fixed (by the model file or ``params``)."""
    given = options.get("params") or {}
    fixed = {n for n, p in model.parameters.items() if p.fixed}
    return fixed | {n for n, v in given.items() if isinstance(v, dict) and v.get("vary") is False}


def _population_source(
    population: Population,
    sigma: Mapping[str, Mapping[str, float]] | None,
    fit_options: Mapping[str, Any],
) -> tuple[Population, dict, dict, dict]:
    """Population, error models, residual error and default fit options of a Population."""
    if population.covariate_effects:
        raise ValueError(
            "simest: a Population with covariate effects is not supported; simulate from "
            "the PopulationFit that has them"
        )
    if not sigma:
        raise ValueError("simest: a Population source needs sigma, e.g. {'CART': {'sigma': 0.5}}")
    errors = error_spec(fit_options.get("error"), tuple(sigma))
    for analyte, (kind, _) in errors.items():
        missing = set(ERROR_MODELS[kind]) - set(sigma[analyte])
        if missing:
            raise ValueError(f"simest: sigma of {analyte} ({kind} error) lacks {sorted(missing)}")
    values = {
        a: {k: float(sigma[a][k]) for k in ERROR_MODELS[kind]} for a, (kind, _) in errors.items()
    }
    options = {"random": [k for k, sd in population.omega.items() if sd > 0], "error": errors}
    return population, errors, values, options


def _reference(ds: Dataset, ids: list[Any], covariates: Any, model: Model) -> list[dict[str, Any]]:
    """The covariate design of a fit to the design's subjects (its references and labels)."""
    return [c.record() for c in covariate_columns(ds, ids, covariates or {}, model)]


def _observation_rows(
    ds: Dataset, ids: list[Any], analytes: list[str], time: np.ndarray
) -> np.ndarray:
    """Positions in ``ds.frame`` of the observations, in the order of pack_observations."""
    subjects = SubjectRows(ds, ids)
    times = ds.column("TIME")
    mine = ds.observed() & (subjects.code >= 0) & np.isin(ds.column("ANALYTE"), analytes)
    rows = np.flatnonzero(mine & (times >= 0))
    rows = rows[np.lexsort((times[rows], subjects.code[rows]))]
    if not np.array_equal(times[rows], time):
        raise FitError("simest: the design's observation rows could not be matched")
    return rows


def _effect_covariates(
    ds: Dataset, ids: list[Any], population: Population
) -> dict[str, np.ndarray]:
    """Per subject, the covariates the population's covariate effects use."""
    table = ds.subject_covariates().reindex(ids) if ds.covariates else pd.DataFrame(index=ids)
    if "DOSE" not in table:
        dose = derived_dose(ds, SubjectRows(ds, ids))
        if dose is not None:
            table = table.assign(DOSE=dose)
    out = {}
    for effect in population.covariate_effects:
        if effect.covariate not in table:
            raise ValueError(f"simest: the design has no covariate {effect.covariate!r}")
        out[effect.covariate] = table[effect.covariate].to_numpy()
    return out
