"""Virtual patients: a :class:`Population` and the seeded block sampling of its patients.

A :class:`Population` (typical values, between-subject variability, covariate effects) is
sampled in fixed blocks of RANDOM_BLOCK patients: block k (patients k·RANDOM_BLOCK + 1, ...)
takes its random effects, then its covariates, from its own child stream
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(k,)))``. Any chunk of patients (or
a dask task) can so draw its own patients (:meth:`Cohort.patients`), and each scenario dose
is given to the same patients (common random numbers), so that dose comparisons are paired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from ..data import Dataset, read_dataset
from ..errors import DataError, ModelError
from ..model import Model
from ..scales import to_estimation, to_natural
from ..solve import as_model
from .checks import is_number

__all__ = ["RANDOM_BLOCK", "Cohort", "CovariateEffect", "Population", "subject_values"]

#: Patients per block of random draws (each block its own seeded child stream). Part of the
#: seed -> patients mapping: changing it changes the patients of every seed.
RANDOM_BLOCK = 1_000


@dataclass(frozen=True)
class CovariateEffect:
    """A covariate effect on a parameter, applied to its typical value (natural scale).

    ``kind="power"``: param · (COV / reference)^theta (a continuous covariate, ``reference``
    typically its median, > 0). ``kind="categorical"``: param · exp(theta · [COV !=
    reference]) (``reference`` the reference level, coded as a number: a two-level
    covariate). ``kind="level"``: param · exp(theta · [COV == reference]), ``reference``
    holding the level the effect belongs to (one effect per non-reference level of a
    categorical covariate with more levels, as population fits estimate them).
    """

    parameter: str
    covariate: str
    kind: str
    theta: float
    reference: float

    def factor(self, values: np.ndarray) -> np.ndarray:
        """Multiplicative factor on the typical value for covariate ``values``."""
        values = np.asarray(values, dtype=float)
        if self.kind == "power":
            return (values / self.reference) ** self.theta
        if self.kind == "level":
            return np.exp(self.theta * (values == self.reference))
        return np.exp(self.theta * (values != self.reference))

    def check(self, model: Model) -> None:
        """Refuse unknown parameters and kinds, non-finite theta, a power reference <= 0."""
        where = f"covariate effect of {self.covariate} on {self.parameter}"
        if self.parameter not in model.parameters:
            raise ModelError(
                f"{where}: {self.parameter!r} is not a parameter of {model.name} "
                f"(parameters: {', '.join(model.param_names)})"
            )
        if self.kind not in ("power", "categorical", "level"):
            raise ModelError(
                f"{where}: kind {self.kind!r}, expected 'power', 'categorical' or 'level'"
            )
        if not (is_number(self.theta) and is_number(self.reference)):
            raise ModelError(f"{where}: theta and reference must be finite numbers")
        if self.kind == "power" and self.reference <= 0:
            raise ModelError(f"{where}: a power effect needs a reference > 0, not {self.reference}")


@dataclass(frozen=True, eq=False)
class Population:
    """Typical values, between-subject variability and covariate effects of a model.

    Attributes:
        model: the model.
        typical: parameter name -> typical value on the natural scale, every parameter.
        omega: parameter name -> between-subject SD on that parameter's estimation scale
            (log, logit or none), only the parameters with variability.
        correlation: correlation matrix of the random effects, rows and columns in the
            order of ``omega`` (None: independent).
        covariate_effects: :class:`CovariateEffect` s, applied to the typical value before
            the random effect.

    Individual parameters: x_i = to_estimation(typical · covariate factors) + eta_i with
    eta ~ N(0, diag(omega) C diag(omega)), mapped back to the natural scale (log: exp;
    logit: lower + (upper - lower) / (1 + exp(-x)); none: x). Parameter bounds are those of
    estimation and are not imposed on the draws.
    """

    model: Model
    typical: Mapping[str, float]
    omega: Mapping[str, float] = field(default_factory=dict)
    correlation: np.ndarray | None = None
    covariate_effects: Sequence[CovariateEffect] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "typical", self._checked_typical())
        object.__setattr__(self, "omega", self._checked_omega())
        object.__setattr__(self, "correlation", self._checked_correlation())
        effects = tuple(self.covariate_effects)
        for effect in effects:
            if not isinstance(effect, CovariateEffect):
                raise ModelError(
                    f"covariate_effects: expected CovariateEffect items, got {effect!r}"
                )
            effect.check(self.model)
        object.__setattr__(self, "covariate_effects", effects)

    @classmethod
    def from_model(
        cls,
        model: Model | str | PathLike[str],
        omega: Mapping[str, float] | None = None,
        correlation: np.ndarray | None = None,
    ) -> Population:
        """The model file's typical values, omegas and correlations (or ``omega`` if given).

        Without ``omega``, parameters whose omega is None or 0, and fixed parameters, get
        no variability, and the random effects are correlated as the model's
        ``[correlations]`` (or its parameter set's) say. ``correlation``: over the omega
        names in order (default: the model's when ``omega`` is None, else none). For a
        named parameter set, load it first: ``from_model(load_model("ck_stein",
        parameters="cilta-cel"))``.
        """
        model = as_model(model)
        typical = {name: par.value for name, par in model.parameters.items()}
        if omega is None:
            omega = {
                name: par.omega
                for name, par in model.parameters.items()
                if par.omega and not par.fixed
            }
            if correlation is None:
                correlation = model.correlation_matrix(list(omega))
        return cls(model, typical, dict(omega), correlation)

    @property
    def covariates_needed(self) -> tuple[str, ...]:
        """Covariates the model or a covariate effect uses, DOSE excluded (set per dose)."""
        names = [*self.model.covariate_names, *(e.covariate for e in self.covariate_effects)]
        return tuple(name for name in dict.fromkeys(names) if name != "DOSE")

    def draw_etas(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Random effects (n, len(omega)) on the estimation scale."""
        sd = np.array(list(self.omega.values()), dtype=float)
        z = rng.standard_normal((n, sd.size))
        if self.correlation is not None:
            z = z @ np.linalg.cholesky(self.correlation).T
        return z * sd

    def individual(self, etas: np.ndarray, covariates: Mapping[str, np.ndarray]) -> np.ndarray:
        """Individual parameters (n, n_par), natural scale, in the model's parameter order.

        ``covariates`` maps a name to n values and must hold every covariate a covariate
        effect uses (DOSE included when an effect uses it).
        """
        n = etas.shape[0]
        column = {name: j for j, name in enumerate(self.omega)}
        out = np.empty((n, len(self.model.parameters)))
        for k, (name, par) in enumerate(self.model.parameters.items()):
            base = np.full(n, float(self.typical[name]))
            for effect in self.covariate_effects:
                if effect.parameter == name:
                    base = base * effect.factor(covariates[effect.covariate])
            if name in column:
                x = _estimation(base, par, name) + etas[:, column[name]]
                out[:, k] = to_natural(x, par.scale, par.lower, par.upper)
            else:
                out[:, k] = base
        return out

    def _checked_typical(self) -> dict[str, float]:
        typical = dict(self.typical)
        names = self.model.param_names
        unknown = [name for name in typical if name not in self.model.parameters]
        missing = [name for name in names if name not in typical]
        if unknown or missing:
            raise ModelError(
                f"typical values for {self.model.name}: unknown {unknown}, missing {missing} "
                f"(every parameter needs one: {', '.join(names)})"
            )
        for name in names:
            if not is_number(typical[name]):
                raise ModelError(f"typical value of {name}: {typical[name]!r} is not a number")
            _estimation(np.array([float(typical[name])]), self.model.parameters[name], name)
        return {name: float(typical[name]) for name in names}

    def _checked_omega(self) -> dict[str, float]:
        omega = dict(self.omega)
        for name, sd in omega.items():
            if name not in self.model.parameters:
                raise ModelError(
                    f"omega: {name!r} is not a parameter of {self.model.name} "
                    f"(parameters: {', '.join(self.model.param_names)})"
                )
            if not (is_number(sd) and sd >= 0):
                raise ModelError(
                    f"omega of {name}: {sd!r}; expected a finite SD >= 0 on its "
                    f"{self.model.parameters[name].scale} scale"
                )
        return {name: float(sd) for name, sd in omega.items()}

    def _checked_correlation(self) -> np.ndarray | None:
        if self.correlation is None:
            return None
        k = len(self.omega)
        c = np.array(self.correlation, dtype=float)
        order = ", ".join(self.omega)
        if c.shape != (k, k):
            raise ModelError(f"correlation: shape {c.shape}, expected ({k}, {k}) over {order}")
        if not (np.all(np.isfinite(c)) and np.allclose(c, c.T) and np.allclose(np.diag(c), 1)):
            raise ModelError("correlation: must be symmetric with ones on the diagonal")
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise ModelError(
                f"correlation: not positive definite (random effects {order})"
            ) from None
        return c


def _estimation(base: np.ndarray, par: Any, name: str) -> np.ndarray:
    """Natural-scale values to the estimation scale, refusing values outside its domain."""
    if par.scale == "log":
        bad = ~(base > 0)
    elif par.scale == "logit":
        bad = ~((base > par.lower) & (base < par.upper))
    else:
        bad = ~np.isfinite(base)
    if np.any(bad):
        value = base[np.flatnonzero(bad)[0]]
        raise ModelError(
            f"parameter {name}: typical value {value:g} (after covariate effects) is outside "
            f"the domain of its {par.scale} scale"
            + (f" ({par.lower:g}, {par.upper:g})" if par.scale == "logit" else "")
        )
    if np.all(base == base[0]):
        return np.full(base.shape, to_estimation(float(base[0]), par.scale, par.lower, par.upper))
    return np.array([to_estimation(float(v), par.scale, par.lower, par.upper) for v in base])


# --- the patients of a seed ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Cohort:
    """The ``n`` virtual patients of one seed, given each of ``doses`` in turn: their
    random effects and covariates drawn block by block, their parameters at a dose.
    Picklable when the population's model holds no loaded kernels (a dask task's copy).

    ``covariates``: as :func:`cartpk.scenarios.scenarios` takes them, a dataset already
    reduced to its subjects' values (:func:`subject_values`).
    """

    population: Population
    covariates: Any
    doses: np.ndarray
    n: int
    seed: int

    def draw(self, lo: int, hi: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Random effects and covariates of patients lo..hi-1 (0-based), from their blocks."""
        etas, drawn = [], []
        for block in range(lo // RANDOM_BLOCK, (hi - 1) // RANDOM_BLOCK + 1):
            first = block * RANDOM_BLOCK
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(block,)))
            e = self.population.draw_etas(RANDOM_BLOCK, rng)
            c = _draw_covariates(self.population, self.covariates, RANDOM_BLOCK, rng)
            part = slice(max(lo, first) - first, min(hi, first + RANDOM_BLOCK) - first)
            etas.append(e[part])
            drawn.append({name: values[part] for name, values in c.items()})
        names = drawn[0].keys()
        return np.vstack(etas), {k: np.concatenate([d[k] for d in drawn]) for k in names}

    def patients(self, d: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """Individual parameters, packed ``p`` rows and covariates of patients lo..hi-1 at
        dose number d."""
        model = self.population.model
        etas, drawn = self.draw(lo, hi)
        values = {**drawn, "DOSE": np.full(hi - lo, self.doses[d])}
        params = self.population.individual(etas, values)
        packed = model.pack(params, {name: values[name] for name in model.covariate_names})
        return params, packed, drawn


def _draw_covariates(
    population: Population, covariates: Any, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Covariate values (n each) for every covariate the population needs, DOSE excluded."""
    needed = population.covariates_needed
    if covariates is None:
        drawn = {}
    elif isinstance(covariates, Dataset | pd.DataFrame):
        drawn = _resample(subject_values(covariates, needed), n, rng)
    elif isinstance(covariates, _Resampled):
        drawn = _resample(covariates, n, rng)
    elif isinstance(covariates, Mapping):
        drawn = {name: _draw_one(name, spec, n, rng, needed) for name, spec in covariates.items()}
    else:
        raise ValueError(
            "covariates: expected a mapping name -> distribution, a Dataset or a DataFrame, "
            f"got {type(covariates).__name__}"
        )
    model = population.model
    for name in needed:
        if name in drawn:
            continue
        if name not in model.covariates:
            raise ValueError(
                f"covariates: {name} is used by a covariate effect but not given; give a "
                "distribution, a constant or a dataset to resample"
            )
        drawn[name] = np.full(n, model.covariates[name].reference)
    return drawn


def _draw_one(
    name: str, spec: Any, n: int, rng: np.random.Generator, needed: tuple[str, ...]
) -> np.ndarray:
    if name == "DOSE":
        raise ValueError("covariates: DOSE is set by doses=, not drawn")
    if name not in needed:
        raise ValueError(
            f"covariates: {name!r} is neither a covariate of the model nor used by a "
            f"covariate effect (used: {', '.join(needed) or 'none'})"
        )
    if hasattr(spec, "rvs"):
        values = spec.rvs(size=n, random_state=rng)
    elif callable(spec):
        values = spec(rng, size=n)
    elif is_number(spec):
        values = np.full(n, float(spec))
    else:
        raise ValueError(
            f"covariates: {name} = {spec!r}; expected a scipy.stats distribution, a callable "
            "(rng, size) -> array or a number"
        )
    values = np.asarray(values, dtype=float)
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"covariates: {name} must give {n} finite values, got shape {values.shape}"
        )
    return values


def _resample(source: _Resampled, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Resample subjects (with replacement) and take their values of the needed covariates."""
    rows = rng.integers(0, source.size, size=n)
    return {name: values[rows] for name, values in source.values.items()}


def subject_values(source: Dataset | pd.DataFrame, needed: tuple[str, ...]) -> _Resampled:
    """The subjects' values of the needed covariates (checked numeric), to resample from."""
    table = _subject_table(source)
    upper = {str(c).upper(): c for c in table.columns}
    columns = {name: upper[name.upper()] for name in needed if name.upper() in upper}
    drawn = {}
    for name, column in columns.items():
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            who = ", ".join(str(i) for i in table.index[bad[:5]])
            raise DataError(
                f"covariates: column {column!r} is missing or not numeric for subject(s) {who}"
            )
        drawn[name] = values
    return _Resampled(drawn, len(table))


def _subject_table(source: Dataset | pd.DataFrame) -> pd.DataFrame:
    """One row per subject (covariates), from a Dataset, a long table or a subject table."""
    if isinstance(source, pd.DataFrame):
        upper = {str(c).upper() for c in source.columns}
        if {"ID", "TIME"} <= upper:
            source = read_dataset(source)
        elif "ID" in upper:
            column = next(c for c in source.columns if str(c).upper() == "ID")
            return source.groupby(column, sort=False).first()
        else:
            table = source.copy()
            table.index = pd.RangeIndex(1, len(table) + 1, name="row")
            return table
    if len(source.ids) == 0:
        raise DataError("covariates: the dataset has no subjects")
    return source.subject_covariates()


@dataclass(frozen=True, eq=False)
class _Resampled:
    """Covariate values of the subjects of a dataset, resampled with replacement."""

    values: dict[str, np.ndarray]
    size: int


def as_population(source: Any, omega: Mapping[str, float] | None = None) -> Population:
    """The Population of a scenario source: a Population, an object with a
    ``population()`` method (a ``PopulationFit``), a Model, or a built-in model name /
    model file path (the file's typical values and omegas, or ``omega``)."""
    if isinstance(source, Model | str | PathLike):
        return Population.from_model(source, omega)
    if omega is not None:
        raise ValueError(
            "omega: only for a model source; a Population or a population fit carries its own"
        )
    if isinstance(source, Population):
        return source
    if callable(getattr(source, "population", None)):
        population = source.population()
        if not isinstance(population, Population):
            raise ValueError(
                f"{type(source).__name__}.population() returned "
                f"{type(population).__name__}, not a cartpk Population"
            )
        return population
    raise ValueError(
        "source: expected a Population, a population fit (with .population()), a Model or a "
        f"model name / path, got {type(source).__name__}"
    )


def check_dose_link(population: Population) -> None:
    """Refuse a population whose answer a dose could not change (no DOSE covariate in the
    model and no DOSE covariate effect)."""
    model = population.model
    if "DOSE" in model.covariates:
        return
    if any(effect.covariate == "DOSE" for effect in population.covariate_effects):
        return
    raise ValueError(
        f"model {model.name} has no DOSE covariate and the population no DOSE covariate "
        "effect: a dose could not change the answer. Give the model a dose link "
        "([covariates.DOSE] used in an initial condition) or a CovariateEffect on DOSE"
    )
