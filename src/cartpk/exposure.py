"""Model-based exposure: Cmax, Tmax and AUC of one output over a time window.

Computed from the ODE solution itself, not from a grid of output times:

* AUC: the integral of the output is added to the ODE system as an extra state (reset to
  0 at the window start), so it is integrated under the same error control as the states.
* Cmax/Tmax: the output is checked at every step end, breakpoint and post-dose time in
  the window (a kink maximum such as ck_stein's peak at ``tmax`` sits on a breakpoint),
  and inside every step where the output's slope changes from positive to negative the
  maximum is located on the solver's continuous extension (Brent's method on the slope,
  to ~1e-13 of the step). The first occurrence wins on ties.

Times in days; cmax in the output's unit, auc in unit·day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import DataError
from .solve import (
    as_model,
    check_tolerances,
    dose_arrays,
    method_code,
    method_name,
    raise_failures,
    subject_doses,
    subjects,
)

if TYPE_CHECKING:
    from .model import Model

__all__ = ["exposure"]


def exposure(
    model: Model | str,
    params: Mapping[str, float] | pd.DataFrame | None = None,
    output: str = "CART",
    interval: tuple[float, float] = (0, 28),
    *,
    covariates: Mapping[str, float] | pd.DataFrame | None = None,
    doses: pd.DataFrame | Sequence[tuple[float, float]] | None = None,
    method: str | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    on_failure: str = "raise",
) -> pd.DataFrame:
    """Cmax, Tmax and AUC of a model output over ``interval`` for each subject.

    Args:
        model: a loaded model, or a built-in model name / path to a ``.toml`` file.
        params: None, a dict (one subject) or a DataFrame (one row per subject), as in
            :func:`cartpk.simulate`.
        output: the model output, e.g. ``"CART"``.
        interval: (start, end) in days, 0 <= start < end; gives the column
            ``auc_<start>_<end>`` (e.g. ``auc_0_28``).
        covariates, doses, method: as in :func:`cartpk.simulate` (without resets).
        rtol, atol: tolerances of the local error control (tighter than ``simulate``'s
            defaults: exposure metrics are often compared across scenarios).
        max_steps: step budget per subject.
        on_failure: ``"raise"`` raises :class:`cartpk.SolverError` naming the first subject
            that could not be solved; ``"nan"`` gives that subject NaN metrics and adds a
            ``status`` column (0: solved; otherwise the solver's failure code, as
            ``BatchSolution.status``) so that failures are counted, not lost.

    Returns:
        A DataFrame with columns ID, cmax (output unit), tmax (days, first occurrence) and
        ``auc_<start>_<end>`` (output unit × day), and ``status`` with ``on_failure="nan"``.
        Inputs are never modified.

    Raises:
        ValueError / cartpk.DataError: invalid input, named; cartpk.SolverError: a subject
        could not be solved.
    """
    model = as_model(model)
    k_out = _output_index(model, output)
    start, end, column = _interval(interval)
    code = method_code(model, method)
    check_tolerances(rtol, atol, max_steps)
    if on_failure not in ("raise", "nan"):
        raise ValueError(f"on_failure {on_failure!r}: expected 'raise' or 'nan'")
    people = subjects(model, params, covariates)
    n = len(people.ids)
    d_time, d_amt, d_reset, d_off = dose_arrays(model, subject_doses(model, doses, people.ids), n)
    if d_reset.any():
        raise DataError(
            "doses: exposure over a window does not support a reset (EVID=4): simulate the "
            "subject's course after the reset as a subject of its own, infused at the reset"
        )
    cmax, tmax, auc, fail_time = (np.full(n, np.nan) for _ in range(4))
    status = np.zeros(n, dtype=np.int64)
    model.kernels.exposure_batch(
        people.p,
        k_out,
        start,
        end,
        d_time,
        d_amt,
        d_off,
        code,
        float(rtol),
        float(atol),
        int(max_steps),
        cmax,
        tmax,
        auc,
        status,
        fail_time,
    )
    frame = pd.DataFrame({"ID": people.ids, "cmax": cmax, "tmax": tmax, column: auc})
    if on_failure == "raise":
        raise_failures(model, status, fail_time, people.ids, method_name(model, method))
        return frame
    failed = status != 0
    frame.loc[failed, ["cmax", "tmax", column]] = np.nan
    return frame.assign(status=status)


def _output_index(model: Model, output: str) -> int:
    if output not in model.outputs:
        raise ValueError(
            f"output {output!r}: model {model.name} has outputs {', '.join(model.outputs)}"
        )
    return model.outputs.index(output)


def _interval(interval: Any) -> tuple[float, float, str]:
    """(start, end, column name) of a window in days, 0 <= start < end < inf."""
    try:
        start, end = (float(x) for x in interval)
    except (TypeError, ValueError):
        raise ValueError(
            f"interval {interval!r}: expected a pair of numbers (start, end) in days"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start < end):
        raise ValueError(
            f"interval {interval!r}: expected 0 <= start < end, both finite (days since infusion)"
        )
    return start, end, f"auc_{_format(start)}_{_format(end)}"


def _format(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)
