"""Exceptions raised by cartpk, one per kind of failure a user must act on, the warning
of a fit whose result needs care, and how a :class:`DataError` names rows and values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SHOWN_ROWS = 5  # a message names this many offending rows, then counts the rest
SHOWN_CHARS = 40  # a value echoed in a message is cut to this many characters


class DataError(ValueError):
    """A dataset failed validation; the message names column, rows and the problem."""


class ModelError(ValueError):
    """A model specification is invalid; the message names the file and the key or line."""


class SolverError(RuntimeError):
    """An ODE could not be solved; the message names the subject and the time reached."""


class FitError(RuntimeError):
    """A fit could not be carried out (as opposed to one that ran and did not converge)."""


class FitWarning(UserWarning):
    """A fit ran but its result needs care: not converged, or not identifiable."""


NOT_FINITE = "value is not finite (inf: a number too large for a float?)"


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (IDs in messages read 1, not np.int64(1))."""
    return value.item() if isinstance(value, np.generic) else value


def shown(value: Any, quoted: bool = True) -> str:
    """``repr(value)`` (``str`` if not ``quoted``), cut to :data:`SHOWN_CHARS` characters:
    a 50 MB cell is not echoed in full."""
    value = plain(value)
    text = repr(value) if quoted else str(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[: SHOWN_CHARS - 3]}... ({len(text)} characters)"


def rows_text(rows: pd.Series | np.ndarray) -> str:
    """Describe offending row numbers: the first few and how many in all."""
    rows = list(rows)
    shown = ", ".join(str(int(r)) for r in rows[:SHOWN_ROWS])
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def fail(mask: np.ndarray, column: str, problem: str) -> None:
    """Raise a DataError for the rows selected by the boolean array ``mask``, if any.

    ``mask`` is in the order of the user's table, so row k is user row k + 1.
    """
    if mask.any():
        raise DataError(f"column {column}: {problem} ({rows_text(np.flatnonzero(mask) + 1)})")
