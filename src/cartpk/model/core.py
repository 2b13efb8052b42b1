"""Model specifications: TOML files compiled to numba kernels, cached on disk.

A model file declares parameters, covariates, derived quantities, states with their
initial values, one equation (time derivative) per state, outputs, breakpoints and a dose
link; ``models/README.md`` documents the format. :func:`load_model` validates the file,
checks every expression against the whitelist of :mod:`cartpk.expr`, generates the
module of six small numba functions that :mod:`cartpk.kernels.contract` defines (initial
state, right-hand side, outputs, breakpoints, dose) and imports it from the cache
directory, so that numba's own on-disk cache is reused by later processes. The solver,
exposure, likelihood and MCMC kernels are not part of it: they are compiled once per
installation and reach the model's functions through function pointers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from ..kernels import ModelKernels
from .cache import compiled_kernels
from .codegen import _generate
from .parameter_sets import ParameterSet, load_parameter_set
from .spec import (
    Covariate,
    Parameter,
    _check_correlations,
    _check_parameter,
    _number,
    _pair_matrix,
    _Spec,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, eq=False)
class Model:
    """A validated model and its compiled kernels (see ``docs/architecture.md``).

    Times are in days; each parameter, state and output carries its unit.
    """

    name: str
    description: str
    source: str
    path: Path
    solver: str
    parameters: dict[str, Parameter]
    covariates: dict[str, Covariate]
    states: tuple[str, ...]
    state_units: dict[str, str]
    equations: dict[str, str]
    outputs: tuple[str, ...]
    output_units: dict[str, str]
    breakpoints: tuple[str, ...]
    dose_state: str | None
    source_code: str
    correlations: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    parameter_set: str | None = None
    text: str = ""  # the model file's TOML text, as read (saved fits carry it)
    dose_unit: str | None = None  # [dosing] unit: what AMT and DOSE mean ("cells/kg", "cells")
    solution: dict[str, str] | None = None  # [solution]: each state's closed form (None: none)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Parameter names in declared order (the first columns of :meth:`pack`)."""
        return tuple(self.parameters)

    @property
    def covariate_names(self) -> tuple[str, ...]:
        """Covariate names in declared order (the last columns of :meth:`pack`)."""
        return tuple(self.covariates)

    @property
    def values(self) -> np.ndarray:
        """Typical parameter values, natural scale, in :attr:`param_names` order."""
        return np.array([par.value for par in self.parameters.values()], dtype=np.float64)

    @cached_property
    def kernels(self) -> ModelKernels:
        """The kernels bound to this model's functions (the functions are compiled by numba
        on first use and cached on disk; the kernels themselves are compiled once)."""
        return compiled_kernels(self.name, self.source_code)

    def pack(self, params: Any, covariates: Any = None) -> np.ndarray:
        """Build the float64 ``p`` matrix ``(n, n_par + n_cov)`` that the kernels take.

        ``params``: array ``(n, n_par)`` or ``(n_par,)`` on the natural scale, or a mapping
        name -> scalar or length-n array (missing parameters take their typical value; the
        mapping may also hold covariates). ``covariates``: array ``(n, n_cov)`` /
        ``(n_cov,)``, a mapping, or None; a missing covariate takes its reference value.
        """
        if isinstance(params, Mapping):
            params, extra = _split_mapping(params, self.parameters, self.covariates)
            covariates = _merge_covariates(covariates, extra)
        par = _as_matrix(params, self.param_names, self.values, "parameter")
        references = np.array([cov.reference for cov in self.covariates.values()])
        cov = _as_matrix(covariates, self.covariate_names, references, "covariate")
        n = _common_rows(par, cov)
        rows = [np.broadcast_to(part, (n, part.shape[1])) for part in (par, cov)]
        return np.ascontiguousarray(np.hstack(rows), dtype=np.float64)

    def with_values(self, **values: float) -> Model:
        """A copy whose typical parameter values are replaced, e.g. ``with_values(rho=0.9)``."""
        changed = dict(self.parameters)
        for name, value in values.items():
            if name not in self.parameters:
                kind = "a covariate; give it as a covariate" if name in self.covariates else None
                known = ", ".join(self.parameters)
                raise ModelError(
                    f"{self.name}: {name!r} is {kind or 'not a parameter'} (parameters: {known})"
                )
            where = f"{self.name}: parameter {name}"
            new = dataclasses.replace(changed[name], value=_number(value, where, "value"))
            _check_parameter(new, where)
            changed[name] = new
        return dataclasses.replace(self, parameters=changed)

    def correlation_matrix(self, names: tuple[str, ...] | list[str]) -> np.ndarray | None:
        """Correlation matrix of the random effects of ``names`` (in that order) from the
        model's ``[correlations]``; None when no pair among them is correlated."""
        pairs = {pair: r for pair, r in self.correlations.items() if set(pair) <= set(names)}
        return _pair_matrix(list(names), pairs) if pairs else None

    def with_parameter_set(self, pset: ParameterSet | str | os.PathLike[str]) -> Model:
        """A copy with a named parameter set's typical values, omegas and correlations.

        The set replaces the value and the omega of each parameter it lists (a parameter
        listed without an omega gets no between-subject variability) and every correlation
        that involves one of them; other parameters keep the model file's values.
        """
        if not isinstance(pset, ParameterSet):
            pset = load_parameter_set(pset)
        where = f"parameter set {pset.name!r} ({pset.path})"
        missing = [name for name in pset.values if name not in self.parameters]
        if missing:
            raise ModelError(
                f"{where} sets {', '.join(missing)}, which {self.name} does not have "
                f"(parameters: {', '.join(self.parameters)})"
            )
        changed = dict(self.parameters)
        for name, value in pset.values.items():
            new = dataclasses.replace(changed[name], value=value, omega=pset.omega.get(name))
            _check_parameter(new, f"{where}: {name}")
            changed[name] = new
        kept = {
            pair: r for pair, r in self.correlations.items() if not set(pair) & set(pset.values)
        }
        correlations = {**kept, **pset.correlations}
        _check_correlations(correlations, changed, where)
        return dataclasses.replace(
            self, parameters=changed, correlations=correlations, parameter_set=pset.name
        )

    def describe(self) -> pd.DataFrame:
        """The parameter table: name, value, lower, upper, unit, scale, omega, fixed, ..."""
        import pandas as pd

        rows = [dataclasses.asdict(par) for par in self.parameters.values()]
        return pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(Parameter)])


def list_models() -> list[str]:
    """Names of the built-in models, sorted."""
    names = (entry.name for entry in files("cartpk.models").iterdir())
    return sorted(name[: -len(".toml")] for name in names if name.endswith(".toml"))


def load_model(
    name_or_path: str | os.PathLike[str], parameters: str | os.PathLike[str] | None = None
) -> Model:
    """Load a built-in model by name (see :func:`list_models`) or a model file by path.

    A plain string without a directory separator or ``.toml`` suffix is a built-in name;
    anything else (including every ``Path``) is a file. ``parameters``: a named parameter
    set (see :func:`cartpk.list_parameter_sets`, e.g. ``"cilta-cel"``) or the path of a
    set file, applied with :meth:`Model.with_parameter_set`.
    """
    text = os.fspath(name_or_path)
    is_name = isinstance(name_or_path, str) and not (
        "/" in text or os.sep in text or text.endswith(".toml")
    )
    if is_name:
        if text not in list_models():
            raise ModelError(
                f"unknown model {text!r}: built-in models are {', '.join(list_models())}; "
                "or give the path of a .toml model file"
            )
        path = Path(str(files("cartpk.models").joinpath(f"{text}.toml")))
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"model file {text!r} does not exist")
    model = _build(_Spec(path))
    return model if parameters is None else model.with_parameter_set(parameters)


# --- building the Model and packing parameters ---------------------------------------------


def _build(spec: _Spec) -> Model:
    return Model(
        name=spec.name,
        description=spec.description,
        source=spec.source,
        path=spec.path,
        solver=spec.solver,
        parameters=spec.parameters,
        covariates=spec.covariates,
        states=tuple(spec.states),
        state_units={name: state.unit for name, state in spec.states.items()},
        equations={name: expr.text for name, expr in spec.equations.items()},
        outputs=tuple(spec.outputs),
        output_units={name: output.unit for name, output in spec.outputs.items()},
        breakpoints=tuple(expr.text for expr in spec.breakpoints),
        dose_state=spec.dosing[0] if spec.dosing else None,
        source_code=_generate(spec),
        correlations=spec.correlations,
        text=spec.text,
        dose_unit=spec.dose_unit,
        solution=None if spec.solution is None else {k: e.text for k, e in spec.solution.items()},
    )


def model_from_text(text: str, path: Path) -> Model:
    """Build a model from a model file's TOML ``text`` (as if read from ``path``, which is
    named in messages and need not exist): how a saved fit rebuilds the model it used."""
    return _build(_Spec(Path(path), text))


def _split_mapping(
    values: Mapping[str, Any], parameters: Mapping[str, Any], covariates: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a name -> value mapping into parameters and covariates; refuse unknown names."""
    for name in values:
        if name not in parameters and name not in covariates:
            known = ", ".join([*parameters, *covariates])
            raise ValueError(f"unknown parameter or covariate {name!r} (known: {known})")
    par = {name: value for name, value in values.items() if name in parameters}
    cov = {name: value for name, value in values.items() if name in covariates}
    return par, cov


def _merge_covariates(covariates: Any, extra: dict[str, Any]) -> Any:
    if not extra:
        return covariates
    if covariates is None:
        return extra
    if isinstance(covariates, Mapping):
        clash = sorted(set(covariates) & set(extra))
        if clash:
            raise ValueError(f"covariate(s) {clash} given twice (in params and covariates)")
        return {**covariates, **extra}
    raise ValueError("covariates given both in the params mapping and as an array")


def _as_matrix(values: Any, names: tuple[str, ...], defaults: np.ndarray, what: str) -> np.ndarray:
    """A float64 matrix (rows, len(names)) from an array, a mapping or None (defaults)."""
    if values is None:
        return defaults.reshape(1, -1).astype(np.float64)
    if isinstance(values, Mapping):
        columns = [
            _column(values.get(name, default), f"{what} {name!r}")
            for name, default in zip(names, defaults, strict=True)
        ]
        rows = _common_rows(*(column.reshape(-1, 1) for column in columns))
        stacked = [np.broadcast_to(column, (rows,)) for column in columns]
        values = np.column_stack(stacked) if stacked else np.empty((rows, 0))
    matrix = _column(values, f"{what}s", ndim=2)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.shape[1] != len(names):
        raise ValueError(
            f"{what}s: expected shape (n, {len(names)}) for {', '.join(names) or 'none'}, "
            f"got {matrix.shape}"
        )
    return matrix


def _column(value: Any, what: str, ndim: int = 1) -> np.ndarray:
    """``value`` as a float64 array of at most ``ndim`` dimensions (scalars become 1-D)."""
    try:
        array = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected numbers, got {value!r}") from None
    if array.ndim > ndim:
        raise ValueError(f"{what}: expected at most {ndim} dimension(s), got {array.shape}")
    return array


def _common_rows(*parts: np.ndarray) -> int:
    """The common number of rows; parts with one row broadcast."""
    rows = {part.shape[0] for part in parts} - {1}
    if len(rows) > 1:
        raise ValueError(f"row counts differ: {sorted(rows)} (each must be n or 1)")
    return rows.pop() if rows else 1
