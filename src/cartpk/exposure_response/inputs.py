"""The subject table of an exposure-response analysis, checked: one row per subject, a
positive finite exposure, a 0/1 or integer-graded outcome, an optional grouping column.

Every refusal is one :class:`cartpk.DataError` naming the column and the rows (1-based
positions in the table, with the subjects' IDs when the table has an ``ID`` column). The
caller's table is only read, never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["ID_COLUMN", "KINDS", "ExposureOutcomes", "checked_subjects"]

#: The optional subject identifier column (one row per subject: duplicates are refused).
ID_COLUMN = "ID"

#: Outcome kinds: "binary" (0/1, logistic regression), "ordinal" (integer grades,
#: proportional odds).
KINDS = ("binary", "ordinal")


@dataclass(frozen=True, eq=False)
class ExposureOutcomes:
    """The checked columns of the subject table, as arrays (one entry per subject).

    Attributes:
        ids: the ``ID`` column, or None when the table has none.
        exposure: the exposure (the column's unit, e.g. copies/µg DNA for Cmax), > 0.
        outcome: the outcome as integers (0/1, or grades).
        grades: the observed outcome levels, ascending.
        kind: "binary" or "ordinal".
        groups: the ``by`` column, or None.
    """

    ids: np.ndarray | None
    exposure: np.ndarray
    outcome: np.ndarray
    grades: tuple[int, ...]
    kind: str
    groups: np.ndarray | None


def _rows(bad: np.ndarray, ids: np.ndarray | None, limit: int = 5) -> str:
    """``rows 3, 7 (ID 103, 107)`` for a mask, the first ``limit`` shown."""
    where = np.flatnonzero(bad)
    more = " ..." if where.size > limit else ""
    shown = where[:limit]
    text = f"row{'s' if where.size > 1 else ''} {', '.join(str(i + 1) for i in shown)}{more}"
    if ids is not None:
        text += f" (ID {', '.join(str(ids[i]) for i in shown)}{more})"
    return text


def _checked_ids(table: pd.DataFrame) -> np.ndarray | None:
    if ID_COLUMN not in table.columns:
        return None
    ids = table[ID_COLUMN].to_numpy()
    missing = pd.isna(ids)
    if missing.any():
        raise DataError(f"column {ID_COLUMN!r}: missing at {_rows(missing, None)}")
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if repeated.any():
        values = ", ".join(str(v) for v in pd.unique(ids[repeated])[:5])
        raise DataError(
            f"column {ID_COLUMN!r}: duplicate IDs {values} at {_rows(repeated, None)}; "
            "expected one row per subject"
        )
    return ids


def _checked_exposure(table: pd.DataFrame, column: str, ids: np.ndarray | None) -> np.ndarray:
    raw = table[column]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise DataError(f"column {column!r}: exposure missing at {_rows(missing, ids)}")
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    text = np.isnan(values)
    if text.any():
        raise DataError(f"column {column!r}: not a number at {_rows(text, ids)}")
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        raise DataError(
            f"column {column!r}: exposure must be positive and finite (it is log-transformed); "
            f"found {values[bad][0]:g} at {_rows(bad, ids)}"
        )
    return values


def _checked_outcome(
    table: pd.DataFrame, column: str, kind: str | None, ids: np.ndarray | None
) -> tuple[np.ndarray, tuple[int, ...], str]:
    raw = table[column]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise DataError(f"column {column!r}: outcome missing at {_rows(missing, ids)}")
    if raw.dtype == bool:
        values = raw.to_numpy(dtype=float)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        text = np.isnan(values)
        if text.any():
            raise DataError(
                f"column {column!r}: expected 0/1 or integer grades, found "
                f"{raw.to_numpy()[text][0]!r} at {_rows(text, ids)}"
            )
    fractional = ~np.isfinite(values) | (values != np.round(values))
    if fractional.any():
        raise DataError(
            f"column {column!r}: grades must be integers (e.g. CRS grade 0-4); found "
            f"{values[fractional][0]:g} at {_rows(fractional, ids)}"
        )
    outcome = values.astype(np.int64)
    grades = tuple(int(g) for g in np.unique(outcome))
    if len(grades) < 2:
        raise DataError(
            f"column {column!r}: the outcome is {grades[0]} for every subject; an "
            "exposure-response fit needs subjects with and without the outcome"
        )
    if kind is None:
        if grades == (0, 1):
            kind = "binary"
        elif len(grades) > 2:
            kind = "ordinal"
        else:
            raise DataError(
                f"column {column!r}: two levels {grades[0]} and {grades[1]}; a binary "
                "outcome is 0/1 (recode it), or give kind='ordinal'"
            )
    elif kind == "binary" and grades != (0, 1):
        raise DataError(
            f"column {column!r}: kind='binary' needs 0/1 (or True/False) values; found "
            f"{', '.join(str(g) for g in grades)}"
        )
    return outcome, grades, kind


def _checked_groups(table: pd.DataFrame, column: str, ids: np.ndarray | None) -> np.ndarray:
    groups = table[column].to_numpy()
    missing = pd.isna(groups)
    if missing.any():
        raise DataError(f"column {column!r}: group missing at {_rows(missing, ids)}")
    return groups


def checked_subjects(
    table: Any, exposure: str, outcome: str, by: str | None, kind: str | None
) -> ExposureOutcomes:
    """Check the subject table (see the module docstring) and return its columns."""
    if not isinstance(table, pd.DataFrame):
        raise DataError(
            f"table: expected a pandas DataFrame with one row per subject, got "
            f"{type(table).__name__}"
        )
    if len(table) == 0:
        raise DataError("table: no subjects (no rows)")
    if kind is not None and kind not in KINDS:
        raise DataError(
            f"kind {kind!r}: expected one of {', '.join(KINDS)}, or None (from the data)"
        )
    wanted = [exposure, outcome] + ([by] if by is not None else [])
    absent = [c for c in wanted if c not in table.columns]
    if absent:
        raise DataError(
            f"column {', '.join(repr(c) for c in absent)}: not in the table (columns: "
            f"{', '.join(str(c) for c in table.columns)})"
        )
    if exposure == outcome:
        raise DataError(f"column {exposure!r}: given as both the exposure and the outcome")
    ids = _checked_ids(table)
    values = _checked_exposure(table, exposure, ids)
    result, grades, kind = _checked_outcome(table, outcome, kind, ids)
    groups = _checked_groups(table, by, ids) if by is not None else None
    return ExposureOutcomes(ids, values, result, grades, kind, groups)
