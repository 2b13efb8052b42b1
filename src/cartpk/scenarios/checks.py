"""Argument checks shared by the scenario modules: a finite number, the doses, the
number of patients, the output grid of a run and the days of prediction bands."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_TIMES",
    "checked_band_times",
    "checked_count",
    "checked_doses",
    "checked_times",
    "is_number",
]

#: Default output grid (days): detection of biomarker crossings and prediction bands.
DEFAULT_TIMES = np.linspace(0.0, 90.0, 361)


def is_number(value: Any) -> bool:
    """A finite real number, not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def checked_doses(doses: Any) -> np.ndarray:
    values = np.atleast_1d(np.asarray(doses, dtype=object))
    if values.ndim != 1 or values.size == 0:
        raise ValueError("doses: expected one or more doses in CAR-T cells/kg")
    for k, dose in enumerate(values):
        if not (is_number(dose) and dose > 0):
            raise ValueError(
                f"doses: entry {k} is {dose!r}; a dose must be a positive number of cells/kg"
            )
    out = values.astype(float)
    if np.unique(out).size != out.size:
        raise ValueError(f"doses: {out.tolist()} has repeated doses")
    return out


def checked_count(n: Any) -> int:
    if not (isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"n = {n!r}: the number of virtual patients must be an integer >= 1")
    return int(n)


def checked_times(times: Any) -> np.ndarray:
    if times is None:
        return DEFAULT_TIMES.copy()
    try:
        t = np.array(times, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("times: expected numbers (days)") from None
    if t.ndim != 1 or t.size < 2 or not np.all(np.isfinite(t)):
        raise ValueError("times: expected a 1-D array of at least 2 finite days")
    if t[0] != 0 or np.any(np.diff(t) <= 0):
        raise ValueError("times: must start at 0 (the baseline) and increase strictly")
    return t


def checked_band_times(times: Any) -> np.ndarray:
    try:
        t = np.array(times, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("times: expected numbers (days)") from None
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
        raise ValueError("times: expected a sorted 1-D array of finite days")
    return t
