"""Solving models: the batch entry used by fitting and scenarios, and ``simulate()``.

The integrators themselves are the numba kernels of :mod:`cartpk.kernels`, compiled once
and given each model's functions: Dormand–Prince 5(4) with dense output (``"dopri5"``),
the stiffly accurate Rosenbrock method Rodas (``"rodas"``) and ``"auto"``, Dormand–Prince
that switches a subject to Rodas when its stiffness test fires. Integration starts at t = 0 from the
model's initial state, restarts exactly at breakpoints and dose times (a reset and dose,
EVID 4, starts the subject afresh: see :mod:`cartpk.dosing`), and reports every output at
the requested times. Times are in days; outputs are in the model's output units.

Conventions: outputs are right-continuous (a time equal to a dose time sees the dose; the
output at t = 0 sees the infusion built into the initial state and any dose at 0).
:func:`simulate` refuses times before 0: the model's initial state already holds the
infusion, so it has no pre-infusion state to report (``solve_batch`` gives such times the
initial state's outputs). A DOSE covariate must be > 0 CAR-T cells/kg, as in scenarios.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from .data import numeric, sort_order
from .dose_units import check_dose_table
from .dosing import DOSE, DOSE_ITEMS, RESET_DOSE, check_records, dose_events, ragged
from .errors import NOT_FINITE, DataError, SolverError, fail
from .kernels.codes import (
    METHODS,
    STATUS_MAX_STEPS,
    STATUS_NO_SOLVER,
    STATUS_NOT_FINITE,
    STATUS_STEP_UNDERFLOW,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .model import Model

__all__ = ["METHODS", "BatchSolution", "Doses", "simulate", "solve_batch"]

#: Kernel status codes: what went wrong, and what to try.
STATUS_REASONS = {
    STATUS_MAX_STEPS: (
        "step budget (max_steps) exceeded",
        "raise max_steps, or use method='rodas' if the problem is stiff",
    ),
    STATUS_STEP_UNDERFLOW: (
        "step size underflow (the step fell below the floating-point resolution of t)",
        "the solution may blow up at this time; check the parameter values",
    ),
    STATUS_NOT_FINITE: (
        "non-finite state or right-hand side",
        "check the parameter values (a state may have left the domain of log, sqrt or **)",
    ),
    STATUS_NO_SOLVER: (
        "the method's compiled solver was not prepared",
        "this is a bug in cartpk: please report it",
    ),
}


class Doses(NamedTuple):
    """Doses as ragged arrays: subject i's doses are ``[offsets[i]:offsets[i+1]]``.

    ``time`` in days (>= 0), ``amount`` in the unit of the model's ``[dosing]`` amount (AMT,
    e.g. CAR-T cells/kg). ``offsets=None``: the same doses for every subject. ``reset``
    (None: none) is 1 (or True) for a dose that starts the subject afresh, at a time > 0:
    a reset and dose, NONMEM's EVID 4, whose amount becomes the DOSE covariate of a new
    start (see :mod:`cartpk.dosing`); the other doses are boluses added through the model's
    ``[dosing]`` section.
    """

    time: np.ndarray
    amount: np.ndarray
    offsets: np.ndarray | None = None
    reset: np.ndarray | None = None


@dataclass(frozen=True)
class BatchSolution:
    """Outputs of a batch solve.

    ``values``: (n_obs, n_outputs), rows in the order of the flat times; subject i's rows
    are ``values[offsets[i]:offsets[i+1]]``. ``status`` (n_subjects,): 0 ok, 1 step budget
    exceeded, 2 step size underflow, 3 non-finite state. ``fail_time`` (n_subjects,): the
    time (days) reached by a failed subject, NaN otherwise. Failed subjects' rows are NaN.
    """

    values: np.ndarray
    status: np.ndarray
    fail_time: np.ndarray
    offsets: np.ndarray
    outputs: tuple[str, ...]

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the subjects solved successfully."""
        return self.status == 0


# --- the batch entry ---------------------------------------------------------------------


def solve_batch(
    model: Model,
    params: Any,
    covariates: Any = None,
    *,
    times: ArrayLike,
    offsets: ArrayLike | None = None,
    doses: Doses | tuple[ArrayLike, ...] | None = None,
    method: str | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_steps: int = 100_000,
    on_failure: str = "raise",
    ids: Sequence[Any] | None = None,
) -> BatchSolution:
    """Solve many subjects at once (parallel over subjects) and return their outputs.

    Args:
        model: a loaded model (``cartpk.load_model``).
        params: parameters on the natural scale, as accepted by ``Model.pack``: an array
            (n, n_par) / (n_par,) or a mapping name -> value(s).
        covariates: covariates as accepted by ``Model.pack`` (None: reference values).
        times: output times in days: one 1-D array shared by all subjects when ``offsets``
            is None, else the flat concatenation of each subject's sorted times.
        offsets: int array (n + 1,): subject i's times are ``times[offsets[i]:offsets[i+1]]``.
        doses: doses (:class:`Doses` or a ``(time, amount[, offsets[, reset]])`` tuple).
        method: ``"auto"``, ``"dopri5"``, ``"rodas"`` or ``"closed"`` (the model's closed form);
            None uses the model's default solver.
        rtol, atol: relative and absolute tolerances of the local error control.
        max_steps: step budget per subject (attempted steps, rejected ones included).
        on_failure: ``"raise"`` raises :class:`cartpk.SolverError` naming the first failed
            subject (``ids[i]`` if given, else its index), the time reached and the reason;
            ``"nan"`` returns NaN rows for failed subjects (see ``BatchSolution.status``).
        ids: subject labels used in error messages.

    Returns:
        A :class:`BatchSolution`.
    """
    code = method_code(model, method)
    check_tolerances(rtol, atol, max_steps)
    if on_failure not in ("raise", "nan"):
        raise ValueError(f"on_failure {on_failure!r}: expected 'raise' or 'nan'")
    p = model.pack(params, covariates)
    n = p.shape[0]
    t_flat, t_off = _flat_times(times, offsets, n)
    d_time, d_amt, d_reset, d_off = dose_arrays(model, doses, n)
    kernels = model.kernels
    values = np.empty((t_flat.size, len(model.outputs)))
    status = np.zeros(n, dtype=np.int64)
    fail_time = np.full(n, np.nan)
    kernels.solve_batch(
        p,
        t_flat,
        t_off,
        d_time,
        d_amt,
        d_reset,
        d_off,
        code,
        float(rtol),
        float(atol),
        int(max_steps),
        values,
        status,
        fail_time,
    )
    if on_failure == "raise":
        raise_failures(model, status, fail_time, ids, method_name(model, method))
    return BatchSolution(values, status, fail_time, t_off, tuple(model.outputs))


def method_name(model: Model, method: str | None) -> str:
    """The solver name used: ``method`` or the model's default."""
    return model.solver if method is None else str(method).lower()


def method_code(model: Model, method: str | None) -> int:
    """Kernel code of a method name; unknown names raise ``ValueError`` listing the known."""
    name = method_name(model, method)
    if name not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(map(repr, METHODS))}")
    if name == "closed" and model.solution is None:
        raise ValueError(
            f"method 'closed': model {model.name!r} declares no closed-form [solution]; "
            "use 'auto', 'dopri5' or 'rodas'"
        )
    return METHODS[name]


def check_tolerances(rtol: float, atol: float, max_steps: int) -> None:
    """Refuse tolerances and step budgets the integrators cannot honour."""
    if not (_is_real(rtol) and 1e-14 <= rtol < 1.0):
        raise ValueError(f"rtol {rtol!r}: expected a number in [1e-14, 1)")
    if not (_is_real(atol) and 0.0 < atol < math.inf):
        raise ValueError(f"atol {atol!r}: expected a positive finite number")
    if not (isinstance(max_steps, numbers.Integral) and max_steps >= 1):
        raise ValueError(f"max_steps {max_steps!r}: expected a positive integer")


def raise_failures(
    model: Model,
    status: np.ndarray,
    fail_time: np.ndarray,
    ids: Sequence[Any] | None,
    method: str,
) -> None:
    """Raise ``SolverError`` for the first failed subject (and count the others)."""
    failed = np.flatnonzero(status != 0)
    if failed.size == 0:
        return
    i = int(failed[0])
    who = f"ID {ids[i]!r}" if ids is not None else f"index {i}"
    others = f" ({failed.size - 1} other subject(s) failed too)" if failed.size > 1 else ""
    reason, hint = STATUS_REASONS[int(status[i])]
    raise SolverError(
        f"{model.name}: subject {who}: {reason} at t = {fail_time[i]:.6g} days with method "
        f"{method!r}{others}; {hint}"
    )


def _flat_times(
    times: ArrayLike, offsets: ArrayLike | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (flat times, offsets) for n subjects."""
    t = np.ascontiguousarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"times: expected a 1-D array, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times: must be finite (no NaN or inf)")
    if offsets is None:
        if np.any(np.diff(t) < 0):
            raise ValueError("times: must be sorted (non-decreasing)")
        return np.tile(t, n), np.arange(n + 1, dtype=np.int64) * t.size
    off = np.ascontiguousarray(offsets, dtype=np.int64)
    if off.shape != (n + 1,) or off[0] != 0 or off[-1] != t.size or np.any(np.diff(off) < 0):
        raise ValueError(
            f"offsets: expected {n + 1} non-decreasing integers from 0 to len(times) = {t.size}"
        )
    decreasing = np.diff(t) < 0
    decreasing[off[1:-1] - 1] = False  # a new subject may start earlier
    if np.any(decreasing):
        raise ValueError("times: each subject's times must be sorted (non-decreasing)")
    return t, off


def dose_arrays(
    model: Model, doses: Doses | tuple[ArrayLike, ...] | None, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated ragged dose arrays (time, amount, reset as int64, offsets) for n subjects."""
    if doses is None:
        return np.empty(0), np.empty(0), np.empty(0, dtype=np.int64), np.zeros(n + 1, np.int64)
    given = Doses(*doses)
    d_time = np.ascontiguousarray(given.time, dtype=np.float64)
    d_amt = np.ascontiguousarray(given.amount, dtype=np.float64)
    if d_time.ndim != 1 or d_time.shape != d_amt.shape:
        raise ValueError("doses: time and amount must be 1-D arrays of the same length")
    reset = np.zeros(d_time.size) if given.reset is None else np.asarray(given.reset)
    if reset.shape != d_time.shape:
        raise ValueError("doses: reset must be a 1-D array as long as time")
    d_reset = np.ascontiguousarray(reset != 0, dtype=np.int64)
    if model.dose_state is None and not d_reset.all():
        raise ValueError(f"model {model.name!r} has no [dosing] section: it cannot take doses")
    if not (np.all(np.isfinite(d_time)) and np.all(np.isfinite(d_amt))):
        raise ValueError("doses: times and amounts must be finite")
    if np.any(d_time < 0):
        raise ValueError("doses: dose times must be >= 0 days (t = 0 is the infusion)")
    if np.any((d_reset != 0) & ~((d_time > 0) & (d_amt > 0))):
        raise ValueError(
            "doses: a reset must be after t = 0 (the infusion is the DOSE covariate) and its "
            "amount > 0 (the DOSE of the new start)"
        )
    if given.offsets is None:
        m = d_time.size
        tiled = (np.tile(d_time, n), np.tile(d_amt, n), np.tile(d_reset, n))
        return (*tiled, np.arange(n + 1, dtype=np.int64) * m)
    off = np.ascontiguousarray(given.offsets, dtype=np.int64)
    if off.shape != (n + 1,) or off[0] != 0 or off[-1] != d_time.size or np.any(np.diff(off) < 0):
        raise ValueError(
            f"doses: offsets must be {n + 1} non-decreasing integers from 0 to {d_time.size}"
        )
    return d_time, d_amt, d_reset, off


def _is_real(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


# --- subjects from user input --------------------------------------------------------------


@dataclass(frozen=True)
class PackedSubjects:
    """Subjects built from user input: labels and the packed ``p`` matrix."""

    ids: list[Any]
    p: np.ndarray


def subjects(model: Model, params: Any, covariates: Any) -> PackedSubjects:
    """Build and check subjects from ``params`` and ``covariates`` (see :func:`simulate`)."""
    if params is None:
        params = {}
    if isinstance(params, pd.DataFrame):
        ids, columns = _frame_columns(model, params, "params")
    elif isinstance(params, Mapping):
        ids, columns = [1], _mapping_columns(model, params, "params")
    else:
        raise ValueError(
            "params: expected None (the model's typical values), a dict of name -> value "
            f"(one subject) or a DataFrame (one row per subject), got {type(params).__name__}"
        )
    _merge(columns, _covariate_columns(model, covariates, ids))
    p = model.pack(columns)
    if p.shape[0] != len(ids):
        p = np.repeat(p, len(ids), axis=0)
    _check_values(model, ids, p)
    return PackedSubjects(ids, p)


def _known(model: Model) -> str:
    return ", ".join([*model.param_names, *model.covariate_names])


def _mapping_columns(model: Model, values: Mapping[str, Any], what: str) -> dict[str, np.ndarray]:
    """One subject's values from a name -> number mapping."""
    columns = {}
    for name, value in values.items():
        if name not in model.parameters and name not in model.covariates:
            raise ValueError(
                f"{what}: unknown name {name!r} for model {model.name} (known: {_known(model)})"
            )
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)):
            raise ValueError(
                f"{what}: {name} = {value!r} is not a number (a dict describes one subject; "
                "use a DataFrame with one row per subject for several)"
            )
        columns[name] = np.array([float(value)])
    return columns


def _frame_columns(
    model: Model, frame: pd.DataFrame, what: str
) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Subject IDs and named columns of a one-row-per-subject DataFrame (not modified)."""
    if len(frame) == 0:
        raise DataError(f"{what}: the DataFrame has no rows")
    id_column = next((c for c in frame.columns if str(c).upper() == "ID"), None)
    unknown = [
        c
        for c in frame.columns
        if c != id_column and c not in model.parameters and c not in model.covariates
    ]
    if unknown:
        raise DataError(
            f"{what}: column(s) {', '.join(map(repr, unknown))} are not parameters or "
            f"covariates of {model.name} (known: {_known(model)}; and ID)"
        )
    ids = frame[id_column].tolist() if id_column is not None else list(range(1, len(frame) + 1))
    if id_column is not None:
        duplicated = frame[id_column][frame[id_column].duplicated()].unique().tolist()
        if len(duplicated):
            raise DataError(f"{what}: ID(s) {list(duplicated)} appear more than once")
    columns = {}
    for name in frame.columns:
        if name == id_column:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            rows = ", ".join(str(r + 1) for r in bad[:5])
            raise DataError(
                f"{what}: column {name!r} has non-numeric or missing values in row(s) {rows}"
            )
        columns[str(name)] = values
    return ids, columns


def _covariate_columns(model: Model, covariates: Any, ids: list[Any]) -> dict[str, np.ndarray]:
    """Covariate columns from the ``covariates`` argument (None, a dict or a DataFrame)."""
    if covariates is None:
        return {}
    if isinstance(covariates, Mapping):
        columns = _mapping_columns(model, covariates, "covariates")
    elif isinstance(covariates, pd.DataFrame):
        cov_ids, columns = _frame_columns(model, covariates, "covariates")
        if any(str(c).upper() == "ID" for c in covariates.columns):
            columns = _by_id(columns, cov_ids, ids)
        elif len(cov_ids) != len(ids):
            raise DataError(
                f"covariates: {len(cov_ids)} rows for {len(ids)} subjects (one row per subject)"
            )
    else:
        raise ValueError(
            f"covariates: expected None, a dict or a DataFrame, got {type(covariates).__name__}"
        )
    not_covariates = [name for name in columns if name not in model.covariates]
    if not_covariates:
        raise ValueError(
            f"covariates: {', '.join(map(repr, not_covariates))} are parameters, not covariates "
            f"of {model.name} (covariates: {', '.join(model.covariate_names) or 'none'})"
        )
    return columns


def _by_id(
    columns: dict[str, np.ndarray], given: list[Any], ids: list[Any]
) -> dict[str, np.ndarray]:
    """Reorder one-row-per-subject columns from the order of ``given`` IDs to ``ids``."""
    if set(given) != set(ids) or len(given) != len(ids):
        raise DataError(
            f"covariates: the IDs {given} do not match the subjects' IDs {ids} (one row each)"
        )
    order = [given.index(i) for i in ids]
    return {name: values[order] for name, values in columns.items()}


def _merge(columns: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> None:
    for name, values in extra.items():
        if name in columns:
            raise ValueError(f"{name!r} is given twice (in params and in covariates)")
        columns[name] = values


def _check_values(model: Model, ids: list[Any], p: np.ndarray) -> None:
    """Every parameter within its bounds and every covariate finite, naming the subject."""
    for k, par in enumerate(model.parameters.values()):
        column = p[:, k]
        bad = np.flatnonzero(~((column >= par.lower) & (column <= par.upper)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"subject ID {ids[i]!r}: parameter {par.name} = {column[i]:g} is outside its "
                f"bounds [{par.lower:g}, {par.upper:g}] in model {model.name}"
            )
    n_par = len(model.parameters)
    for k, name in enumerate(model.covariate_names):
        bad = np.flatnonzero(~np.isfinite(p[:, n_par + k]))
        if bad.size:
            raise ValueError(f"subject ID {ids[int(bad[0])]!r}: covariate {name} is not finite")
        if name == "DOSE":
            bad = np.flatnonzero(~(p[:, n_par + k] > 0))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"subject ID {ids[i]!r}: DOSE = {p[i, n_par + k]:g}; a dose must be a "
                    "positive number of CAR-T cells/kg"
                )


# --- times and doses from user input -----------------------------------------------------


def _one_times(values: Any, where: str) -> np.ndarray:
    """A validated, sorted copy of one subject's output times (days)."""
    try:
        t = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected numbers (days)") from None
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D array of days, got shape {t.shape}")
    if t.size == 0:
        raise ValueError(f"{where}: no times given")
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ValueError(f"{where}: entry {int(bad[0])} is {t[bad[0]]} (times must be finite)")
    bad = np.flatnonzero(t < 0)
    if bad.size:
        raise ValueError(
            f"{where}: entry {int(bad[0])} is {t[bad[0]]:g} days, before the infusion; times "
            "must be >= 0 (day 0 is the infusion, which the model's initial state holds: it "
            "has no pre-infusion state)"
        )
    return np.sort(t)


def subject_times(times: Any, ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Flat sorted times and offsets from one shared array or a dict {ID: times}."""
    if times is None:
        raise ValueError("times: required (days, a 1-D array or a dict {ID: array})")
    if isinstance(times, Mapping):
        missing = [i for i in ids if i not in times]
        extra = [key for key in times if key not in ids]
        if missing or extra:
            raise ValueError(
                f"times: the dict must have one entry per subject ID; missing {missing}, "
                f"unknown {extra}"
            )
        per = [_one_times(times[i], f"times[{i!r}]") for i in ids]
    else:
        per = [_one_times(times, "times")] * len(ids)
    sizes = np.array([t.size for t in per], dtype=np.int64)
    return np.concatenate(per), np.concatenate([[0], np.cumsum(sizes)])


def subject_doses(model: Model, doses: Any, ids: list[Any]) -> Doses | None:
    """Doses per subject from a dose table (see :func:`table_doses`) or (time, amount)
    pairs, the same doses for every subject."""
    if doses is None:
        return None
    if isinstance(doses, pd.DataFrame):
        check_dose_table(doses, model)
        return table_doses(doses, ids)
    try:
        pairs = np.array(doses, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ValueError(
            "doses: expected a DataFrame with TIME and AMT (and ID) or (time, amount) pairs"
        ) from None
    for name, values in (("TIME", pairs[:, 0]), ("AMT", pairs[:, 1])):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(f"doses: {name} is missing or not a number in row {int(bad[0]) + 1}")
    bad = np.flatnonzero(pairs[:, 0] < 0)
    if bad.size:
        raise DataError(
            f"doses: TIME {pairs[bad[0], 0]:g} in row {int(bad[0]) + 1} is before the infusion "
            "(t = 0); dose times must be >= 0 days"
        )
    return Doses(pairs[:, 0].copy(), pairs[:, 1].copy())


def table_doses(doses: pd.DataFrame, ids: list[Any]) -> Doses:
    """Doses per subject from a dose table, read and expanded as a data set's dose records
    (:mod:`cartpk.dosing`; the table is not modified).

    Columns (case-insensitive): TIME (days, >= 0), AMT (> 0, the model's dosing unit), and
    optionally ID (else the doses of every subject), EVID (1 dose, 4 reset and dose, after
    TIME 0; empty: 1), ADDL and II (additional doses at an interval of II days); SS and
    RATE must be 0 or empty. Other columns are not read.
    """
    upper = {str(c).strip().upper(): c for c in doses.columns}
    for name in ("TIME", "AMT"):
        if name not in upper:
            raise DataError(f"doses: column {name!r} is missing (need TIME, AMT and maybe ID)")
    n = len(doses)
    try:
        c = {
            name: numeric(doses[upper[name]], name)
            for name in ("TIME", "AMT", "EVID", *DOSE_ITEMS)
            if name in upper
        }
        c["EVID"] = np.nan_to_num(c["EVID"], nan=float(DOSE)) if "EVID" in c else np.ones(n)
        fail(~np.isfinite(c["TIME"]), "TIME", "missing or not a number")
        fail(c["TIME"] < 0, "TIME", "before the infusion (t = 0): dose times must be >= 0 days")
        fail(np.isinf(c["AMT"]), "AMT", NOT_FINITE)
        check_records(c, allowed=(DOSE, RESET_DOSE))
        who = doses[upper["ID"]] if "ID" in upper else pd.Series(np.zeros(n, dtype=np.int64))
        order = sort_order(who.reset_index(drop=True), c["TIME"])
        events = dose_events(
            who.to_numpy()[order],
            {name: values[order] for name, values in c.items()},
            np.arange(1, n + 1)[order],
            first_dose_starts=False,
        )
    except DataError as err:
        raise DataError(f"doses: {err}") from None
    if "ID" not in upper:
        d_time, d_amt, d_reset, _ = ragged(events, [0])
        return Doses(d_time, d_amt, None, d_reset)
    known = set(ids)
    unknown = sorted({i for i in events["ID"] if i not in known}, key=str)
    if unknown:
        raise DataError(f"doses: ID(s) {unknown} are not among the subjects")
    d_time, d_amt, d_reset, offsets = ragged(events, ids)
    return Doses(d_time, d_amt, offsets, d_reset)


def as_model(model: Any) -> Model:
    """A Model from a Model or a model name / path."""
    from .model import Model, load_model

    return model if isinstance(model, Model) else load_model(model)


# --- simulate -------------------------------------------------------------------------------


def simulate(
    model: Model | str,
    params: Mapping[str, float] | pd.DataFrame | None = None,
    times: ArrayLike | Mapping[Any, ArrayLike] | None = None,
    *,
    covariates: Mapping[str, float] | pd.DataFrame | None = None,
    doses: pd.DataFrame | Sequence[tuple[float, float]] | None = None,
    method: str | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> pd.DataFrame:
    """Simulate a model's outputs for one or more subjects.

    Args:
        model: a loaded model, or a built-in model name / path to a ``.toml`` file.
        params: None (the model's typical values, one subject); a dict name -> value (one
            subject; parameters and covariates, e.g. ``{"rho": 0.9, "DOSE": 2e6}``, the rest
            typical); or a DataFrame with one row per subject: an optional ID column (else
            IDs 1..n), parameter and covariate columns (the rest typical/reference).
        times: days (>= 0: day 0 is the infusion), a 1-D array shared by all subjects or a
            dict {ID: array}; unsorted times are sorted (in a copy).
        covariates: covariate values: a dict (all subjects) or a DataFrame with one row per
            subject (matched by its ID column, else in the order of ``params``); covariates
            drive the dose link (DOSE).
        doses: further doses: a DataFrame with TIME (days), AMT (the model's dosing unit,
            its ``[dosing] unit``) and optionally ID (else every subject), EVID (1 dose, 4
            reset and dose: the subject starts afresh, infused with AMT), ADDL and II
            (additional doses every II days), read as a data set's dose records
            (:mod:`cartpk.dosing`), and AMTU (the unit, which must then be the model's); or
            (time, amount) pairs.
        method: ``"auto"``, ``"dopri5"``, ``"rodas"`` or ``"closed"`` (the model's closed form);
            None uses the model's default.
        rtol, atol: tolerances of the local error control.

    Returns:
        A DataFrame with columns ID, TIME (days) and one column per model output, one row
        per subject and time. The inputs are never modified.

    Raises:
        ValueError / cartpk.DataError: invalid input, named; cartpk.SolverError: a subject
        could not be solved.
    """
    model = as_model(model)
    people = subjects(model, params, covariates)
    t_flat, t_off = subject_times(times, people.ids)
    given = subject_doses(model, doses, people.ids)
    solution = solve_batch(
        model,
        people.p[:, : len(model.param_names)],
        people.p[:, len(model.param_names) :],
        times=t_flat,
        offsets=t_off,
        doses=given,
        method=method,
        rtol=rtol,
        atol=atol,
        ids=people.ids,
    )
    ids = pd.Series(people.ids).repeat(np.diff(t_off)).reset_index(drop=True)
    frame = pd.DataFrame({"ID": ids, "TIME": t_flat})
    for k, name in enumerate(model.outputs):
        frame[name] = solution.values[:, k]
    return frame
