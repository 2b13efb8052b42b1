"""Reading and validating a model file: sections, names, parameters, expressions.

:class:`_Spec` reads one TOML model file (format in ``models/README.md``), checks every
key and expression (the whitelist of :mod:`cartpk.model.expr`) and holds what code
generation and :class:`cartpk.model.Model` need. Errors are :class:`cartpk.ModelError`
naming the file, the key and the problem.
"""

from __future__ import annotations

import keyword
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dose_units import UNITS
from ..errors import ModelError
from ..kernels.codes import METHODS, SCALE_CODES
from .expr import FUNCTIONS, Expression, parse_expression
from .parameter_sets import correlation_pairs

if TYPE_CHECKING:
    pass

SCALES = tuple(SCALE_CODES)
SOLVERS = tuple(METHODS)
RESERVED = frozenset({"t", "AMT", *FUNCTIONS})
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

SECTIONS = {
    "model": ("name", "description", "source", "solver"),
    "parameters": ("value", "lower", "upper", "unit", "scale", "omega", "fixed", "description"),
    "covariates": ("reference", "unit", "description"),
    "derived": (),
    "states": ("initial", "unit", "description"),
    "equations": (),
    "outputs": ("expression", "unit", "description"),
    "breakpoints": ("times",),
    "dosing": ("state", "amount", "unit"),
    "correlations": (),
    "solution": (),
}
#: The name of the step length (days) in ``[solution]`` expressions.
STEP = "dt"
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
        solver = model.get("solver")
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
        self.dose_unit = self._dose_unit(raw.get("dosing"))
        self.solution = self._solution(raw.get("solution"))
        self.solver = self._solver(solver)
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

    def _solver(self, solver: object) -> str:
        """The default method: as given, else ``closed`` with a [solution], else ``auto``."""
        if solver is None:
            return "closed" if self.solution else "auto"
        if solver not in SOLVERS:
            raise self.error("[model] solver", f"{solver!r} is not one of {SOLVERS}")
        if solver == "closed" and not self.solution:
            raise self.error(
                "[model] solver", "'closed' needs a [solution] section (the closed form)"
            )
        return str(solver)

    def _solution(self, raw: Mapping[str, Any] | None) -> dict[str, Expression] | None:
        """``[solution]``: every state ``dt`` days after the states at ``t`` (None: absent)."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.error("[solution]", 'must be a table of STATE = "expression"')
        if STEP in self.declared:
            raise self.error(
                "[solution]",
                f"{STEP!r} is the step length in [solution], but the model declares it in "
                f"[{self.declared[STEP]}]",
            )
        allowed, unavailable = self._dynamic_scope()
        solution = {}
        for name, text in raw.items():
            key = f"[solution] {name}"
            if name not in self.states:
                raise self.error(key, f"{name!r} is not a state (states: {', '.join(self.states)})")
            solution[name] = self._expression(text, key, allowed | {STEP}, unavailable)
        for name in self.states:
            if name not in solution:
                raise self.error(f"[solution] {name}", f"state {name!r} has no closed form")
        return {name: solution[name] for name in self.states}

    def _dose_unit(self, raw: Mapping[str, Any] | None) -> str | None:
        """The declared unit of AMT (and DOSE), one of :data:`cartpk.dose_units.UNITS`;
        None when the file declares none (then no dataset is checked against it)."""
        if raw is None or "unit" not in raw:
            return None
        unit = raw["unit"]
        if unit not in UNITS:
            raise self.error(
                "[dosing] unit", f"{unit!r} is not one of {', '.join(map(repr, UNITS))}"
            )
        return unit


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
