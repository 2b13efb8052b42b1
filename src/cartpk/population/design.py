"""The design of a population fit: what SAEM estimates and how individual parameters are
built from typical values, covariate effects and random effects.

For subject i and model parameter j on its estimation scale (log, logit or none):

    phi_ij = mu_j + sum_c theta_jc * x_ic + eta_ij,

with covariate columns x_ic: log(COV / median COV) for a continuous covariate (a power model,
param · (COV/median)^theta for log-scaled parameters) and [COV == level] for each non-reference
level of a categorical one (param · e^theta). :func:`build_design` checks a request against
the model and the data and builds the :class:`Design`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data import Dataset
from ..errors import FitError
from ..individual.fit import error_spec
from ..likelihood import (
    ERROR_MODELS,
    ObservationArrays,
    SubjectRows,
    baseline_notes,
    derived_dose,
    pack_observations,
)
from ..model import Model
from ..scales import to_estimation


@dataclass
class CovariateColumn:
    """One column of the covariate design: the parameter it acts on and its values."""

    parameter: str
    covariate: str
    kind: str
    reference: Any
    label: str
    values: np.ndarray
    level: Any = None

    def record(self) -> dict[str, Any]:
        """The column without its values, as a fit keeps it (``PopulationFit.covariate_model``)."""
        return {
            "parameter": self.parameter,
            "covariate": self.covariate,
            "kind": self.kind,
            "reference": self.reference,
            "label": self.label,
            "level": self.level,
        }


@dataclass
class Design:
    """What SAEM estimates and how individual parameters are built."""

    model: Model
    obs: ObservationArrays
    random: list[str]
    estimated: list[str]
    columns: list[CovariateColumn]
    errors: dict[str, tuple[str, dict[str, float]]]
    start: np.ndarray
    block: bool
    analytes: tuple[str, ...] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.obs.ids)

    def index(self, name: str) -> int:
        return self.model.param_names.index(name)

    def mean(self, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """(n, n_par) subject means on the estimation scale."""
        m = np.repeat(mu[None, :], self.n, axis=0)
        for column, coefficient in zip(self.columns, theta, strict=True):
            m[:, self.index(column.parameter)] += coefficient * column.values
        return m


def build_design(
    model: Model,
    ds: Dataset,
    random: Any,
    covariates: dict[str, Any] | None,
    error: Any,
    omega: str,
    params: dict[str, Any] | None,
    analytes: Any = None,
) -> Design:
    """Check the request against the model and data; the covariate design matrix."""
    if len(ds.ids) < 2:
        raise FitError("a population fit needs at least 2 subjects")
    random = [random] if isinstance(random, str) else list(random)
    given = params or {}
    obs = pack_observations(ds, model, list(ds.ids), analytes)
    errors = error_spec(error, tuple(pd.unique(obs.analyte)), ds.analytes)
    allowed = {
        *model.param_names,
        *(f"omega_{n}" for n in model.param_names),
        *(f"{a}_{n}" for a, (kind, _) in errors.items() for n in ERROR_MODELS[kind]),
    }
    unknown = [n for n in [*random, *(covariates or {})] if n not in model.parameters]
    unknown += [n for n in given if n not in allowed]
    if unknown:
        raise FitError(f"unknown parameters {unknown}; {model.name} has {list(model.param_names)}")
    if omega not in ("diagonal", "block"):
        raise FitError(f"omega {omega!r}: expected 'diagonal' or 'block'")
    for name, value in given.items():
        sd = value.get("value") if isinstance(value, dict) else value
        if name.startswith("omega_") and not (isinstance(sd, int | float) and 0 < sd < np.inf):
            raise FitError(f"params {name} = {sd!r}: a start SD must be a number > 0")
    fixed = {n for n, p in model.parameters.items() if p.fixed}
    fixed |= {n for n, v in given.items() if isinstance(v, dict) and v.get("vary") is False}
    clash = [n for n in random if n in fixed]
    if clash:
        raise FitError(f"parameters {clash} are fixed: they cannot have a random effect")
    for analyte, (kind, _) in errors.items():
        if kind == "log":
            ds.require_positive(analyte)
    start = np.array(
        [start_value(given.get(n, p.value), p) for n, p in model.parameters.items()], dtype=float
    )
    used = [
        n
        for names in (covariates or {}).values()
        for n in ([names] if isinstance(names, str) else names)
    ]
    extra = [n for n in used if n not in model.covariates]
    notes = [*obs.notes, *baseline_notes(ds, extra, SubjectRows(ds, obs.ids))]
    return Design(
        model=model,
        obs=obs,
        random=random,
        estimated=[n for n in model.param_names if n not in fixed],
        columns=covariate_columns(ds, obs.ids, covariates or {}, model),
        errors=errors,
        start=start,
        block=omega == "block",
        analytes=None if analytes is None else tuple(pd.unique(obs.analyte)),
        notes=notes,
    )


def start_value(entry: Any, p: Any) -> float:
    """A parameter's start on its estimation scale."""
    value = entry.get("value", p.value) if isinstance(entry, dict) else entry
    if not p.lower <= value <= p.upper:
        raise FitError(f"start value {value} outside [{p.lower}, {p.upper}]")
    return to_estimation(value, p.scale, p.lower, p.upper)


def covariate_columns(
    ds: Dataset, ids: list[Any], covariates: dict[str, Any], model: Model
) -> list[CovariateColumn]:
    """Design columns: log(COV/median) for continuous covariates, indicators otherwise."""
    table = ds.subject_covariates().reindex(ids) if ds.covariates else pd.DataFrame(index=ids)
    if "DOSE" not in table:
        dose = derived_dose(ds, SubjectRows(ds, ids))
        if dose is not None:  # the dose infused at TIME 0, as the model's DOSE covariate
            table = table.assign(DOSE=dose)
    columns = []
    for parameter, names in covariates.items():
        if model.parameters[parameter].fixed:
            raise FitError(f"covariate effect on {parameter}: the parameter is fixed")
        for name in [names] if isinstance(names, str) else list(names):
            if name not in table:
                derived = " nor derived from AMT at TIME 0" if name == "DOSE" else ""
                raise FitError(
                    f"covariate {name!r} (on {parameter}) is not a column of the data{derived} "
                    f"(covariates: {', '.join(table.columns) or 'none'})"
                )
            columns += design_columns(parameter, name, table[name])
    return columns


def design_columns(parameter: str, name: str, values: pd.Series) -> list[CovariateColumn]:
    """One continuous column, or one indicator per non-reference categorical level."""
    if values.isna().any():
        missing = list(values.index[values.isna()][:10])
        raise FitError(f"covariate {name}: missing for IDs {missing}")
    numeric = pd.api.types.is_numeric_dtype(values)
    if numeric and not set(np.unique(values)) <= {0, 1}:
        if (values <= 0).any():
            raise FitError(f"covariate {name}: a power model needs values > 0")
        median = float(np.median(values))
        ratio = np.log(values.to_numpy(float) / median)
        return [
            CovariateColumn(parameter, name, "continuous", median, f"{parameter}~{name}", ratio)
        ]
    levels = values.value_counts(sort=True)
    reference = levels.index[0]
    return [
        CovariateColumn(
            parameter,
            name,
            "categorical",
            reference,
            f"{parameter}~{name}[{level}]",
            (values == level).to_numpy(float),
            level,
        )
        for level in sorted(levels.index[1:], key=str)
    ]
