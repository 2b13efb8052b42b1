"""Model specifications: TOML files compiled to numba kernels, cached on disk.

A model file declares parameters, covariates, derived quantities, states with their
initial values, one equation (time derivative) per state, outputs, breakpoints and a dose
link; ``models/README.md`` documents the format. :func:`load_model` validates the file,
checks every expression against the whitelist of :mod:`cartpk.expr`, generates the
module of five small numba functions that :mod:`cartpk.kernels.contract` defines (initial
state, right-hand side, outputs, breakpoints, dose) and imports it from the cache
directory, so that numba's own on-disk cache is reused by later processes. The solver,
exposure, likelihood and MCMC kernels are not part of it: they are compiled once per
installation and reach the model's functions through function pointers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import keyword
import math
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelError
from .expr import FUNCTIONS, Expression, parse_expression
from .kernels import ModelKernels
from .kernels.codes import METHODS, SCALE_CODES
from .kernels.contract import SIGNATURE
from .parameter_sets import ParameterSet, correlation_pairs, load_parameter_set

if TYPE_CHECKING:
    import pandas as pd

SCALES = tuple(SCALE_CODES)
SOLVERS = tuple(METHODS)
RESERVED = frozenset({"t", "AMT", *FUNCTIONS})
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
JIT = '@numba.njit(SIGNATURE, cache=True, fastmath=False, error_model="numpy")'

SECTIONS = {
    "model": ("name", "description", "source", "solver"),
    "parameters": ("value", "lower", "upper", "unit", "scale", "omega", "fixed", "description"),
    "covariates": ("reference", "unit", "description"),
    "derived": (),
    "states": ("initial", "unit", "description"),
    "equations": (),
    "outputs": ("expression", "unit", "description"),
    "breakpoints": ("times",),
    "dosing": ("state", "amount"),
    "correlations": (),
}
REQUIRED_SECTIONS = ("model", "states", "equations", "outputs")


@dataclass(frozen=True)
class Parameter:
    """One model parameter; ``value`` is the typical value on the natural scale.

    ``omega`` is the default between-subject SD on the estimation scale (``scale``:
    log, logit or none), ``None`` when the model gives none.
    """

    name: str
    value: float
    lower: float
    upper: float
    unit: str
    scale: str
    omega: float | None
    fixed: bool
    description: str


@dataclass(frozen=True)
class Covariate:
    """A subject covariate; ``reference`` is used for subjects without a value."""

    name: str
    reference: float
    unit: str
    description: str


@dataclass(frozen=True)
class _Output:
    expression: Expression
    unit: str
    description: str


@dataclass(frozen=True)
class _State:
    initial: Expression
    unit: str
    description: str


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


# --- reading and validating a model file -------------------------------------------------


class _Spec:
    """A parsed and validated model file (every section checked, every expression parsed)."""

    def __init__(self, path: Path, text: str | None = None) -> None:
        self.file = str(path)
        self.path = path
        raw = self._read(path, text)
        self._check_sections(raw)
        model = self._keys(raw["model"], "[model]", SECTIONS["model"])
        if "name" not in model:
            raise self.error("[model] name", "missing (the model's name)")
        self.name = self._name(model["name"], "[model] name")
        self.description = self._text(model, "description", "[model]")
        self.source = self._text(model, "source", "[model]")
        self.solver = model.get("solver", "auto")
        if self.solver not in SOLVERS:
            raise self.error("[model] solver", f"{self.solver!r} is not one of {SOLVERS}")
        self.declared: dict[str, str] = {}
        self.parameters = self._parameters(raw.get("parameters", {}))
        self.covariates = self._covariates(raw.get("covariates", {}))
        self.state_specs = self._states_declared(raw)
        self.derived, self.dynamic = self._derived(raw.get("derived", {}))
        self.states = self._states(self.state_specs)
        self.equations = self._equations(raw["equations"])
        self.outputs = self._outputs(raw["outputs"])
        self.breakpoints = self._breakpoints(raw.get("breakpoints", {}))
        self.dosing = self._dosing(raw.get("dosing"))
        where = f"{self.file}: [correlations]"
        self.correlations = correlation_pairs(raw.get("correlations", {}), where)
        _check_correlations(self.correlations, self.parameters, where)

    def error(self, key: str, problem: str) -> ModelError:
        return ModelError(f"{self.file}: {key}: {problem}")

    def uses(self, names: frozenset[str] | set[str]) -> set[str]:
        """``names`` plus every name the derived values among them use, transitively."""
        needed = set(names)
        for name in reversed(self.derived):
            if name in needed:
                needed |= self.derived[name].names
        return needed

    def _read(self, path: Path, text: str | None = None) -> dict[str, Any]:
        try:
            self.text = path.read_text(encoding="utf-8") if text is None else text
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as err:
            raise ModelError(f"{self.file}: TOML syntax error: {err}") from None
        except UnicodeDecodeError as err:
            raise ModelError(f"{self.file}: not UTF-8 text ({err.reason})") from None
        except RecursionError:
            raise ModelError(f"{self.file}: TOML nested too deeply to read") from None

    def _check_sections(self, raw: dict[str, Any]) -> None:
        for section in raw:
            if section not in SECTIONS:
                raise self.error(
                    f"[{section}]", f"unknown section (sections: {', '.join(SECTIONS)})"
                )
        for section in REQUIRED_SECTIONS:
            if section not in raw:
                raise self.error(f"[{section}]", "required section is missing")

    def _keys(self, table: object, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """Check that ``table`` is a table holding only ``allowed`` keys."""
        if not isinstance(table, dict):
            raise self.error(key, f"must be a table, got {table!r}")
        for name in table:
            if name not in allowed:
                raise self.error(f"{key} {name}", f"unknown key (keys: {', '.join(allowed)})")
        return table

    def _entries(self, raw: object, section: str) -> dict[str, dict[str, Any]]:
        """The sub-tables ``[section.NAME]``, each checked for unknown keys."""
        if not isinstance(raw, dict):
            raise self.error(f"[{section}]", f"must be a table of [{section}.NAME] tables")
        entries = {}
        for name, body in raw.items():
            key = f"[{section}.{name}]"
            self._declare(name, key, section)
            entries[name] = self._keys(body, key, SECTIONS[section])
        return entries

    def _name(self, name: object, key: str) -> str:
        if not isinstance(name, str) or not NAME_PATTERN.match(name) or keyword.iskeyword(name):
            raise self.error(
                key, f"{name!r} is not a valid name (a letter, then letters, digits or _)"
            )
        return name

    def _declare(self, name: str, key: str, section: str) -> None:
        self._name(name, key)
        if name in RESERVED:
            raise self.error(key, f"{name!r} is a reserved name ({', '.join(sorted(RESERVED))})")
        if name in self.declared and section != "outputs":
            raise self.error(key, f"{name!r} is already declared in [{self.declared[name]}]")
        if section != "outputs":
            self.declared[name] = section

    def _text(self, table: Mapping[str, Any], key: str, section: str) -> str:
        value = table.get(key, "")
        if not isinstance(value, str):
            raise self.error(f"{section} {key}", f"expected a string, got {value!r}")
        return value

    def _parameters(self, raw: Mapping[str, Any]) -> dict[str, Parameter]:
        entries = self._entries(raw, "parameters")
        return {name: self._parameter(name, body) for name, body in entries.items()}

    def _parameter(self, name: str, body: Mapping[str, Any]) -> Parameter:
        key = f"[parameters.{name}]"
        where = f"{self.file}: {key}"
        if "value" not in body:
            raise self.error(key, "missing 'value'")
        scale = body.get("scale", "log")
        if scale not in SCALES:
            raise self.error(f"{key} scale", f"{scale!r} is not one of {SCALES}")
        if scale == "logit" and not {"lower", "upper"} <= body.keys():
            raise self.error(key, "scale 'logit' needs finite 'lower' and 'upper' bounds")
        fixed = body.get("fixed", False)
        if not isinstance(fixed, bool):
            raise self.error(f"{key} fixed", f"expected true or false, got {fixed!r}")
        lower = body.get("lower", 0.0 if scale == "log" else -math.inf)
        omega = body.get("omega")
        par = Parameter(
            name=name,
            value=_number(body["value"], where, "value"),
            lower=_number(lower, where, "lower", infinite=True),
            upper=_number(body.get("upper", math.inf), where, "upper", infinite=True),
            unit=self._text(body, "unit", key),
            scale=scale,
            omega=None if omega is None else _number(omega, where, "omega"),
            fixed=fixed,
            description=self._text(body, "description", key),
        )
        _check_parameter(par, where)
        return par

    def _covariates(self, raw: Mapping[str, Any]) -> dict[str, Covariate]:
        out = {}
        for name, body in self._entries(raw, "covariates").items():
            key = f"[covariates.{name}]"
            if "reference" not in body:
                raise self.error(key, "missing 'reference' (the value for subjects without one)")
            out[name] = Covariate(
                name=name,
                reference=_number(body["reference"], f"{self.file}: {key}", "reference"),
                unit=self._text(body, "unit", key),
                description=self._text(body, "description", key),
            )
        return out

    def _states_declared(self, raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        states = self._entries(raw["states"], "states")
        if not states:
            raise self.error("[states]", "a model needs at least one state")
        return states

    def _derived(self, raw: Mapping[str, Any]) -> tuple[dict[str, Expression], set[str]]:
        if not isinstance(raw, dict):
            raise self.error("[derived]", 'must be a table of NAME = "expression"')
        static = set(self.parameters) | set(self.covariates)
        states = set(self.state_specs)
        derived: dict[str, Expression] = {}
        dynamic: set[str] = set()
        later = {
            name: "is defined later in [derived] (derived values are evaluated in order)"
            for name in raw
        }
        for name, text in raw.items():
            self._declare(name, f"[derived] {name}", "derived")
            del later[name]
            expr = self._expression(
                text,
                f"[derived] {name}",
                static | set(derived) | states | {"t"},
                {**later, name: "refers to itself", "AMT": "is only available in [dosing] amount"},
            )
            if expr.names & (states | {"t"} | dynamic):
                dynamic.add(name)
            derived[name] = expr
        return derived, dynamic

    def _expression(
        self, text: object, key: str, allowed: set[str], unavailable: Mapping[str, str]
    ) -> Expression:
        where = f"{self.file}: {key}"
        expr = parse_expression(text, where)
        for name in sorted(expr.names):
            if name in allowed:
                continue
            if name in unavailable:
                raise ModelError(f"{where}: {name!r} {unavailable[name]}")
            raise ModelError(
                f"{where}: unknown name {name!r} (names allowed here: "
                f"{', '.join(sorted(allowed)) or 'none'})"
            )
        return expr

    def _static_scope(
        self, key: str, extra: frozenset[str] = frozenset()
    ) -> tuple[set[str], dict[str, str]]:
        """Names for expressions evaluated outside the time course (no t, no states)."""
        allowed = set(self.parameters) | set(self.covariates) | (set(self.derived) - self.dynamic)
        unavailable = {
            name: f"depends on t or a state, so it cannot be used in {key}" for name in self.dynamic
        }
        unavailable.update(
            {name: f"is a state; states cannot be used in {key}" for name in self.state_specs}
        )
        unavailable["t"] = f"cannot be used in {key}"
        if "AMT" not in extra:
            unavailable["AMT"] = "is only available in [dosing] amount"
        return allowed | extra, unavailable

    def _dynamic_scope(self) -> tuple[set[str], dict[str, str]]:
        allowed = set(self.parameters) | set(self.covariates) | set(self.derived)
        allowed |= set(self.state_specs) | {"t"}
        return allowed, {"AMT": "is only available in [dosing] amount"}

    def _states(self, specs: Mapping[str, dict[str, Any]]) -> dict[str, _State]:
        states = {}
        for name, body in specs.items():
            key = f"[states.{name}]"
            if "initial" not in body:
                raise self.error(key, "missing 'initial' (the value at t = 0)")
            allowed, unavailable = self._static_scope(f"{key} initial")
            initial = self._expression(body["initial"], f"{key} initial", allowed, unavailable)
            states[name] = _State(
                initial, self._text(body, "unit", key), self._text(body, "description", key)
            )
        return states

    def _equations(self, raw: Mapping[str, Any]) -> dict[str, Expression]:
        if not isinstance(raw, dict):
            raise self.error("[equations]", 'must be a table of STATE = "expression"')
        allowed, unavailable = self._dynamic_scope()
        equations = {}
        for name, text in raw.items():
            if name not in self.states:
                raise self.error(
                    f"[equations] {name}",
                    f"{name!r} is not a state (states: {', '.join(self.states)})",
                )
            equations[name] = self._expression(text, f"[equations] {name}", allowed, unavailable)
        for name in self.states:
            if name not in equations:
                raise self.error(f"[equations] {name}", f"state {name!r} has no equation")
        return {name: equations[name] for name in self.states}

    def _outputs(self, raw: Mapping[str, Any]) -> dict[str, _Output]:
        allowed, unavailable = self._dynamic_scope()
        outputs = {}
        for name, body in self._entries(raw, "outputs").items():
            key = f"[outputs.{name}]"
            if "expression" not in body:
                raise self.error(key, "missing 'expression' (what the output measures)")
            expr = self._expression(body["expression"], f"{key} expression", allowed, unavailable)
            if not self.uses(expr.names) & set(self.states):
                raise self.error(
                    f"{key} expression",
                    f"{expr.text!r} names no state (directly or through [derived]), "
                    "so it observes nothing",
                )
            outputs[name] = _Output(
                expr, self._text(body, "unit", key), self._text(body, "description", key)
            )
        if not outputs:
            raise self.error("[outputs]", "a model needs at least one output")
        return outputs

    def _breakpoints(self, raw: Mapping[str, Any]) -> list[Expression]:
        table = self._keys(raw, "[breakpoints]", SECTIONS["breakpoints"])
        times = table.get("times", [])
        if not isinstance(times, list):
            raise self.error("[breakpoints] times", "expected a list of expressions")
        allowed, unavailable = self._static_scope("[breakpoints] times")
        return [
            self._expression(text, f"[breakpoints] times[{i}]", allowed, unavailable)
            for i, text in enumerate(times)
        ]

    def _dosing(self, raw: Mapping[str, Any] | None) -> tuple[str, Expression] | None:
        if raw is None:
            return None
        table = self._keys(raw, "[dosing]", SECTIONS["dosing"])
        for key in ("state", "amount"):
            if key not in table:
                raise self.error(f"[dosing] {key}", "missing")
        state = table["state"]
        if state not in self.states:
            raise self.error(
                "[dosing] state", f"{state!r} is not a state (states: {', '.join(self.states)})"
            )
        allowed, unavailable = self._static_scope("[dosing] amount", frozenset({"AMT"}))
        return state, self._expression(table["amount"], "[dosing] amount", allowed, unavailable)


def _number(value: object, where: str, key: str, infinite: bool = False) -> float:
    """A finite float (or +-inf when ``infinite``) from a TOML value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ModelError(f"{where} {key}: expected a number, got {value!r}")
    number = float(value)
    if math.isnan(number) or (math.isinf(number) and not infinite):
        raise ModelError(f"{where} {key}: expected a finite number, got {value!r}")
    return number


def _check_parameter(par: Parameter, where: str) -> None:
    """Bounds and scale rules: value within [lower, upper]; log > 0; logit strictly inside."""
    if not par.lower < par.upper:
        raise ModelError(f"{where}: lower ({par.lower:g}) must be below upper ({par.upper:g})")
    if not par.lower <= par.value <= par.upper:
        raise ModelError(
            f"{where} value: {par.value:g} is outside [lower, upper] = "
            f"[{par.lower:g}, {par.upper:g}]"
        )
    if par.scale == "log" and (par.lower < 0 or par.value <= 0):
        raise ModelError(
            f"{where} scale: 'log' needs value > 0 and lower >= 0 "
            f"(value {par.value:g}, lower {par.lower:g}); use scale = 'none' otherwise"
        )
    if par.scale == "logit" and not (
        math.isfinite(par.lower) and math.isfinite(par.upper) and par.lower < par.value < par.upper
    ):
        raise ModelError(
            f"{where} scale: 'logit' (for fractions) needs finite bounds and a value strictly "
            f"between them (value {par.value:g}, bounds [{par.lower:g}, {par.upper:g}])"
        )
    if par.omega is not None and par.omega < 0:
        raise ModelError(f"{where} omega: must be >= 0, got {par.omega:g}")


def _pair_matrix(names: list[str], pairs: Mapping[tuple[str, str], float]) -> np.ndarray:
    """The correlation matrix over ``names`` with ``pairs`` set (both names in ``names``)."""
    index = {name: k for k, name in enumerate(names)}
    c = np.eye(len(names))
    for (a, b), r in pairs.items():
        c[index[a], index[b]] = c[index[b], index[a]] = r
    return c


def _check_correlations(
    pairs: Mapping[tuple[str, str], float], parameters: Mapping[str, Parameter], where: str
) -> None:
    """Each pair names two parameters with an omega > 0 that are not fixed, |r| < 1, and
    the correlation matrix over them is positive definite."""
    for (a, b), r in pairs.items():
        for name in (a, b):
            par = parameters.get(name)
            if par is None:
                raise ModelError(
                    f'{where} "{a}:{b}": {name!r} is not a parameter '
                    f"(parameters: {', '.join(parameters)})"
                )
            if not par.omega or par.fixed:
                raise ModelError(
                    f'{where} "{a}:{b}": {name} has no between-subject variability '
                    "(an omega > 0 and not fixed), so it cannot be correlated"
                )
        if not -1 < r < 1:
            raise ModelError(f'{where} "{a}:{b}": correlation {r:g} must lie in (-1, 1)')
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    if names and np.linalg.eigvalsh(_pair_matrix(names, pairs))[0] <= 1e-10:
        raise ModelError(
            f"{where}: the correlations of {', '.join(names)} do not form a positive "
            "definite matrix (no joint distribution has them)"
        )


# --- code generation ---------------------------------------------------------------------


def _generate(spec: _Spec) -> str:
    """The generated module: header, constants and the five model functions of the kernel
    contract (:mod:`cartpk.kernels.contract`), nothing else."""
    dose_state = list(spec.states).index(spec.dosing[0]) if spec.dosing else -1
    functions = [
        _function(spec, "initial", [state.initial for state in spec.states.values()]),
        _function(spec, "rhs", list(spec.equations.values())),
        _function(spec, "outputs", [out.expression for out in spec.outputs.values()]),
        _function(spec, "breakpoints", spec.breakpoints),
        _function(
            spec,
            "dose",
            [spec.dosing[1]] if spec.dosing else [],
            first=max(dose_state, 0),
            op="+=",
        ),
    ]
    names = ", ".join(f"{role}" for role in ROLES)
    tail = [
        f"FUNCTIONS = ({names})",
        f"DIMS = np.array([{len(spec.states)}, {len(spec.outputs)}, {len(spec.breakpoints)}])",
    ]
    return "\n\n\n".join([_header(spec, dose_state), *functions, "\n".join(tail)]) + "\n"


#: The model functions in the order of the kernel contract's tuple.
ROLES = ("initial", "rhs", "outputs", "breakpoints", "dose")


def _header(spec: _Spec, dose_state: int) -> str:
    """Comment lines, imports and the module constants."""
    columns = [*spec.parameters, *spec.covariates]
    lines = [
        f"# Generated by cartpk {_cartpk_version()} (numba {version('numba')}) from model "
        f"{spec.name!r}.",
        "# Do not edit: cartpk regenerates it, and its name carries the hash of this text.",
        "# Every function is f(t, amt, p, y, out) on float64 pointers (cartpk.kernels.contract).",
        f"# p = [{', '.join(columns)}]",
        f"# y = [{', '.join(spec.states)}]; out = [{', '.join(spec.outputs)}]",
        f"# dose: out[{dose_state}] += amount (out is y); -1: the model takes no dose records",
        "import math",
        "",
        "import numba",
        "import numpy as np",
        "",
        f"SIGNATURE = {SIGNATURE!r}",
        f"N_PARAMS = {len(spec.parameters)}",
        f"N_COVARIATES = {len(spec.covariates)}",
        f"DOSE_STATE = {dose_state}",
    ]
    return "\n".join(lines)


def _function(
    spec: _Spec,
    name: str,
    expressions: list[Expression],
    first: int = 0,
    op: str = "=",
) -> str:
    """One compiled model function: load the names it needs, then set ``out[first + i]``."""
    needed = spec.uses(set().union(*(expr.names for expr in expressions)))
    rename = {name: f"_{name}" for name in spec.declared} | {"t": "t", "AMT": "amt"}
    body = [
        f"_{name} = p[{i}]"
        for i, name in enumerate([*spec.parameters, *spec.covariates])
        if name in needed
    ]
    body += [f"_{name} = y[{j}]" for j, name in enumerate(spec.states) if name in needed]
    body += [
        f"_{name} = {expr.emit(rename)}" for name, expr in spec.derived.items() if name in needed
    ]
    body += [f"out[{first + i}] {op} {expr.emit(rename)}" for i, expr in enumerate(expressions)]
    head = [JIT, f"def {name}(t, amt, p, y, out):"]
    lines = [*head, *(f"    {line}" for line in body or ["return"])]
    return "\n".join(lines)


def _cartpk_version() -> str:
    from . import __version__

    return __version__


# --- the on-disk cache ---------------------------------------------------------------------


def cache_dir() -> Path:
    """Root of the compiled-model cache: ``$CARTPK_CACHE_DIR`` or ``~/.cache/cartpk``."""
    root = os.environ.get("CARTPK_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "cartpk"


#: Called with a model's name when its kernels are not in the cache yet, so that the
#: first use compiles them (the command line sets it to print a line on stderr).
COMPILE_NOTICE: Callable[[str], None] | None = None


def _import_generated(name: str, code: str) -> ModuleType:
    """Write ``code`` under the cache (once, atomically) and import it as a module."""
    digest = hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]
    module_name = f"cartpk_model_{name}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    directory = cache_dir() / f"{name}-{digest}"
    path = directory / f"{module_name}.py"
    if not path.is_file():
        if COMPILE_NOTICE is not None:
            COMPILE_NOTICE(name)
        _write_atomically(path, code)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


@cache
def compiled_kernels(name: str, code: str) -> ModelKernels:
    """The kernels bound to the functions of a generated module (``Model.source_code``);
    one object per distinct code in a process."""
    module = _import_generated(name, code)
    return ModelKernels(module.FUNCTIONS, module.DIMS, module.__file__)


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and ``os.replace`` so readers never see a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except OSError as err:
        raise ModelError(
            f"cannot write the compiled-model cache {path}: {err.strerror}; "
            "set CARTPK_CACHE_DIR to a writable directory"
        ) from None


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
