"""Checks of the NCA arguments and packing of the observations into the kernel's arrays."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .kernel import _DROP, _KEEP, _LLOQ_FRACTION, _SET, INTERVAL_AUCS

AUC_METHODS = ("lin-up/log-down", "linear")

_BLQ_POSITIONS = ("first", "middle", "last")
_BLQ_WORDS = {"keep": (_KEEP, 0.0), "drop": (_DROP, 0.0), "lloq/2": (_LLOQ_FRACTION, 0.5)}
DEFAULT_BLQ = {"first": "keep", "middle": "drop", "last": "keep"}


def _format_number(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return str(int(x)) if x.is_integer() else repr(x)


def _check_interval_aucs(interval_aucs: str | Sequence[str]) -> list[str]:
    """The interval AUC names (PKNCA's), each once, at least one."""
    names = [interval_aucs] if isinstance(interval_aucs, str) else list(interval_aucs)
    allowed = ", ".join(map(repr, INTERVAL_AUCS))
    unknown = [name for name in names if name not in INTERVAL_AUCS]
    if unknown or not names or len(set(names)) < len(names):
        raise ValueError(
            f"interval_aucs {interval_aucs!r}: expected one or more of {allowed}, each once"
        )
    return names


def _check_intervals(
    intervals: Iterable[Sequence[float]], interval_aucs: str | Sequence[str] = "aucint.last"
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[str]]:
    """((starts, ends, kind codes), column names), one entry per interval and interval AUC
    (interval-major); a single (start, end) pair is accepted as one interval."""
    kinds = _check_interval_aucs(interval_aucs)
    pairs = list(intervals)
    if len(pairs) == 2 and all(isinstance(x, numbers.Real) for x in pairs):
        pairs = [tuple(pairs)]
    starts, ends, codes, names = [], [], [], []
    seen = set()
    for interval in pairs:
        try:
            start, end = (float(x) for x in interval)
        except (TypeError, ValueError):
            raise ValueError(
                f"interval {interval!r}: expected a pair of numbers (start, end) in days"
            ) from None
        if not math.isfinite(start) or math.isnan(end):
            raise ValueError(f"interval {interval!r}: start must be finite and end not NaN")
        if start >= end:
            raise ValueError(f"interval {interval!r}: start must be before end")
        suffix = f"{_format_number(start)}_{_format_number(end)}"
        if suffix in seen:
            raise ValueError(f"interval {interval!r} is given twice")
        seen.add(suffix)
        for kind in kinds:
            starts.append(start)
            ends.append(end)
            codes.append(list(INTERVAL_AUCS).index(kind))
            names.append(f"{INTERVAL_AUCS[kind]}_{suffix}")
    arrays = (
        np.array(starts, dtype=np.float64),
        np.array(ends, dtype=np.float64),
        np.array(codes, dtype=np.int64),
    )
    return arrays, names


def _check_blq(blq: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """BLQ rules -> (rule code per position, fill value per position)."""
    given = DEFAULT_BLQ if blq is None else blq
    allowed = '"keep", "drop", "lloq/2" or a number >= 0'
    if not isinstance(given, Mapping) or set(given) != set(_BLQ_POSITIONS):
        raise ValueError(
            f"blq must be a dict with exactly the keys 'first', 'middle', 'last' "
            f"(each {allowed}); got {given!r}"
        )
    rules = np.zeros(3, dtype=np.int64)
    fills = np.zeros(3, dtype=np.float64)
    for k, position in enumerate(_BLQ_POSITIONS):
        value = given[position]
        if isinstance(value, str) and value in _BLQ_WORDS:
            rules[k], fills[k] = _BLQ_WORDS[value]
        elif _is_number(value) and 0 <= value < math.inf:
            rules[k], fills[k] = _SET, float(value)
        else:
            raise ValueError(f"blq[{position!r}] = {value!r}: expected {allowed}")
    return rules, fills


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _check_auc_method(auc_method: str) -> bool:
    if auc_method not in AUC_METHODS:
        raise ValueError(
            f"auc_method {auc_method!r}: expected one of {', '.join(map(repr, AUC_METHODS))}"
        )
    return auc_method == "lin-up/log-down"


def _pack(obs: pd.DataFrame, ids: np.ndarray, rules: np.ndarray) -> dict[str, np.ndarray]:
    """Flat, per-subject sorted arrays and int64 offsets from the observation rows.

    Rows with a missing DV that are not BLQ are dropped, as PKNCA's ``conc.na = "drop"``
    does before its BLQ rules; ``dropped_na`` counts them per subject.
    """
    position = pd.Index(ids).get_indexer(obs["ID"])
    time = obs["TIME"].to_numpy(dtype=np.float64)
    dv = obs["DV"].to_numpy(dtype=np.float64, na_value=np.nan)
    cens = obs["CENS"].to_numpy(dtype=np.float64, na_value=0.0)
    lloq = obs["LLOQ"].to_numpy(dtype=np.float64, na_value=np.nan)
    blq = (cens == 1) | (dv == 0)
    keep = blq | ~np.isnan(dv)
    order = _sorting_order(position, time)
    order = order[keep[order]]
    packed = {
        "time": time[order],
        "conc": np.where(blq, 0.0, dv)[order],
        "blq": blq[order],
        "lloq": np.where(np.isnan(lloq) & (cens == 1), dv, lloq)[order],
        "offsets": np.concatenate(
            ([0], np.cumsum(np.bincount(position[order], minlength=ids.size)))
        ).astype(np.int64),
        "row": obs["ROW"].to_numpy()[order],
        "position": position[order],
        "dropped_na": np.bincount(position[~keep], minlength=ids.size),
    }
    _check_packed(packed, ids, rules)
    return packed


def _sorting_order(position: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Rows ordered by subject then time (the identity when already sorted, as a Dataset is)."""
    step = np.diff(position)
    if np.all((step > 0) | ((step == 0) & (np.diff(time) >= 0))):
        return np.arange(position.size)
    return np.lexsort((time, position))


def _check_packed(packed: dict[str, np.ndarray], ids: np.ndarray, rules: np.ndarray) -> None:
    same = (np.diff(packed["position"]) == 0) & (np.diff(packed["time"]) == 0)
    if same.any():
        k = int(np.flatnonzero(same)[0])
        rows = packed["row"][k : k + 2].tolist()
        subject = ids[packed["position"][k]]
        subject = subject.item() if isinstance(subject, np.generic) else subject
        raise DataError(
            f"TIME: subject {subject!r} has two observations at time "
            f"{packed['time'][k]:g} (rows {rows}); NCA needs one concentration per time"
        )
    if (packed["conc"] < 0).any():
        rows = packed["row"][packed["conc"] < 0][:5].tolist()
        raise DataError(f"DV: negative concentrations in rows {rows}")
    needs_lloq = (rules == _LLOQ_FRACTION).any()
    missing = packed["blq"] & ~(packed["lloq"] > 0)
    if needs_lloq and missing.any():
        rows = packed["row"][missing][:5].tolist()
        raise DataError(
            f"LLOQ: the BLQ rule 'lloq/2' needs a positive LLOQ, missing in rows {rows}"
        )
