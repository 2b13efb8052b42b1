"""Non-compartmental analysis (NCA) of observed concentration–time data.

The semantics follow PKNCA (R), the reference named in the design:

* ``cmax``/``tmax``: the maximum concentration and the time of its first occurrence.
* ``tlast``/``clast``: the last concentration above zero and its time.
* ``auclast``: AUC from the first observation to ``tlast``; ``aucall`` adds the triangle
  from ``clast`` linearly down to the first zero after ``tlast``.
* ``"lin-up/log-down"``: the log trapezoid on segments where the concentration falls and
  both ends are above zero, the linear trapezoid elsewhere; ``"linear"``: linear everywhere.
* ``lambda_z``: log-linear least squares over the last n ≥ 3 positive points after ``tmax``
  (``tmax`` itself excluded); among all n, the fits with λz > 0 whose adjusted R² is within
  1e-4 of the best adjusted R² qualify, and the one with the most points wins.
* After a re-infusion (a dose record later than the first observation) λz is not taken
  across a dose (PKNCA's intervals are per dose): it uses only the points after the peak
  that follows the last dose, and the table says so (``last_dose``, ``exclude``).
* ``aucinf_obs = auclast + clast/λz``; ``aucinf_pred = auclast + clast_pred/λz``, where
  ``clast_pred`` is the λz regression line at ``tlast``.
* ``auc_<start>_<end>``: the AUC of the interpolant between ``start`` and ``end`` (log
  interpolation inside log-down segments), extrapolated past ``tlast`` with
  ``clast·exp(−λz·(t − tlast))``; NaN when ``start`` is before the first observation or when
  ``end`` is past ``tlast`` and λz is not available.

Units: times are the dataset's TIME unit (days for CAR-T data), concentrations are the
analyte's unit, AUCs are concentration × time, ``lambda_z`` is 1/time.

Times before zero (pre-infusion samples) are data and are included like any other time.
A row is below the limit of quantification (BLQ) when ``CENS == 1`` or ``DV == 0``. Rows with
a missing DV that are not BLQ are dropped (PKNCA's ``conc.na = "drop"``).

All subjects are computed at once by one numba kernel over ragged arrays (flat times and
concentrations plus int64 offsets), parallel over subjects.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numba
import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["AUC_METHODS", "PARAMETERS", "nca", "nca_summary"]

AUC_METHODS = ("lin-up/log-down", "linear")

PARAMETERS = (
    "cmax",
    "tmax",
    "tlast",
    "clast",
    "auclast",
    "aucall",
    "aucinf_obs",
    "aucinf_pred",
    "auc_pct_extrap_obs",
    "auc_pct_extrap_pred",
    "lambda_z",
    "half_life",
    "r_squared",
    "adj_r_squared",
    "lambda_z_npoints",
    "lambda_z_time_first",
    "span_ratio",
)
(
    _CMAX,
    _TMAX,
    _TLAST,
    _CLAST,
    _AUCLAST,
    _AUCALL,
    _AUCINF_OBS,
    _AUCINF_PRED,
    _PCT_OBS,
    _PCT_PRED,
    _LAMBDA_Z,
    _HALF_LIFE,
    _R2,
    _ADJ_R2,
    _NPOINTS,
    _TIME_FIRST,
    _SPAN_RATIO,
) = range(len(PARAMETERS))

MIN_LAMBDA_Z_POINTS = 3
ADJ_R2_TOLERANCE = 1e-4

# Subject reason bits (kernel -> Python).
_NO_ROWS = 1
_NO_ROWS_AFTER_BLQ = 2
_ALL_BLQ = 4
_ONE_OBSERVATION = 8
_TOO_FEW_LZ_POINTS = 16
_NO_POSITIVE_LZ = 32
_REDOSED = 64
_REASONS = (
    (_NO_ROWS, "no observations"),
    (_NO_ROWS_AFTER_BLQ, "no observations left after the BLQ rules"),
    (_ALL_BLQ, "all concentrations BLQ"),
    (_ONE_OBSERVATION, "one observation: AUCs not computed"),
    (
        _TOO_FEW_LZ_POINTS,
        f"fewer than {MIN_LAMBDA_Z_POINTS} points after tmax: lambda_z not computed",
    ),
    (_NO_POSITIVE_LZ, "no terminal fit with lambda_z > 0: lambda_z not computed"),
    (
        _REDOSED,
        "dosed again after the first observation: lambda_z from the points after the last "
        "dose only (see last_dose)",
    ),
)
# Interval reason codes.
_BEFORE_FIRST = 1
_NEEDS_LAMBDA_Z = 2
_INTERVAL_REASONS = {
    _BEFORE_FIRST: "starts before the first observation",
    _NEEDS_LAMBDA_Z: "ends after tlast and lambda_z is not available",
}

# BLQ rule codes: what happens to a BLQ row in a given position.
_KEEP, _DROP, _SET, _LLOQ_FRACTION = 0, 1, 2, 3
_BLQ_POSITIONS = ("first", "middle", "last")
_BLQ_WORDS = {"keep": (_KEEP, 0.0), "drop": (_DROP, 0.0), "lloq/2": (_LLOQ_FRACTION, 0.5)}
DEFAULT_BLQ = {"first": "keep", "middle": "drop", "last": "keep"}


# --------------------------------------------------------------------------- kernel


@numba.njit(cache=True)
def _is_log_segment(c1: float, c2: float, log_down: bool) -> bool:
    return log_down and c2 < c1 and c2 > 0.0


@numba.njit(cache=True)
def _segment_auc(t1: float, t2: float, c1: float, c2: float, log_down: bool) -> float:
    if _is_log_segment(c1, c2, log_down):
        return (t2 - t1) * (c1 - c2) / math.log1p((c1 - c2) / c2)
    return 0.5 * (t2 - t1) * (c1 + c2)


@numba.njit(cache=True)
def _interpolate(t1: float, t2: float, c1: float, c2: float, t: float, log_down: bool) -> float:
    if t == t1:
        return c1
    if t == t2:
        return c2
    w = (t - t1) / (t2 - t1)
    if _is_log_segment(c1, c2, log_down):
        return c1 * math.exp(w * math.log(c2 / c1))
    return c1 + w * (c2 - c1)


@numba.njit(cache=True)
def _auc_between(ct, cc, lo, last, a, b, log_down):
    """AUC of the interpolant over [a, b], with ct[lo] <= a < b <= ct[last]."""
    total = 0.0
    for j in range(lo, last):
        t1 = ct[j]
        t2 = ct[j + 1]
        if t1 >= b:
            break
        s1 = max(a, t1)
        s2 = min(b, t2)
        if s2 > s1:
            c1 = _interpolate(t1, t2, cc[j], cc[j + 1], s1, log_down)
            c2 = _interpolate(t1, t2, cc[j], cc[j + 1], s2, log_down)
            total += _segment_auc(s1, s2, c1, c2, log_down)
    return total


@numba.njit(cache=True)
def _blq_position(j, first, last):
    """0 first, 1 middle, 2 last (PKNCA: all-BLQ profiles are all 'first')."""
    if first < 0 or j < first:
        return 0
    if j > last:
        return 2
    return 1


@numba.njit(cache=True)
def _apply_blq_rules(time, conc, blq, lloq, lo, hi, rules, fills, ct, cc):
    """Write the cleaned profile of rows lo..hi-1 to ct/cc[lo:]; return its length."""
    first = -1
    last = -1
    for j in range(lo, hi):
        if not blq[j]:
            if first < 0:
                first = j
            last = j
    m = 0
    for j in range(lo, hi):
        value = conc[j]
        if blq[j]:
            position = _blq_position(j, first, last)
            rule = rules[position]
            if rule == _DROP:
                continue
            if rule == _KEEP:
                value = 0.0
            elif rule == _SET:
                value = fills[position]
            else:
                value = fills[position] * lloq[j]
        ct[lo + m] = time[j]
        cc[lo + m] = value
        m += 1
    return m


@numba.njit(cache=True)
def _fit_lambda_z(ct, cc, lo, m, imax, tlast, fit):
    """Best terminal log-linear fit; fills fit[lo + n - 1, :] per n and returns the best n.

    fit columns: adj_r_squared, lambda_z, r_squared, log clast_pred, time_first.
    Returns 0 when fewer than 3 points are available, -1 when no fit qualifies.
    """
    n = 0
    mx = 0.0
    my = 0.0
    cxx = 0.0
    cxy = 0.0
    cyy = 0.0
    best_adj = -np.inf
    for j in range(lo + m - 1, lo + imax, -1):
        if cc[j] <= 0.0:
            continue
        x = ct[j]
        y = math.log(cc[j])
        n += 1
        dx = x - mx
        dy = y - my
        mx += dx / n
        my += dy / n
        cxx += dx * (x - mx)
        cxy += dx * (y - my)
        cyy += dy * (y - my)
        if n < MIN_LAMBDA_Z_POINTS:
            continue
        slope = cxy / cxx
        ss_res = max(cyy - slope * cxy, 0.0)
        r2 = 1.0 - ss_res / cyy if cyy > 0.0 else np.nan
        adj = 1.0 - (1.0 - r2) * (n - 1) / (n - 2)
        row = lo + n - 1
        fit[row, 0] = adj
        fit[row, 1] = -slope
        fit[row, 2] = r2
        fit[row, 3] = my + slope * (tlast - mx)
        fit[row, 4] = x
        if adj > best_adj:
            best_adj = adj
    if n < MIN_LAMBDA_Z_POINTS:
        return 0
    best_n = -1
    for k in range(MIN_LAMBDA_Z_POINTS, n + 1):
        row = lo + k - 1
        if fit[row, 1] > 0.0 and fit[row, 0] > best_adj - ADJ_R2_TOLERANCE:
            best_n = k
    return best_n


@numba.njit(cache=True)
def _extrapolated_auc(clast, tlast, lambda_z, a, b):
    """Integral of clast·exp(−λz·(t − tlast)) over [a, b], with tlast <= a < b."""
    return clast / lambda_z * math.exp(-lambda_z * (a - tlast)) * -math.expm1(-lambda_z * (b - a))


@numba.njit(cache=True)
def _interval_auc(ct, cc, lo, last, clast, lambda_z, a, b, log_down):
    """Return (AUC over [a, b], reason code)."""
    tlast = ct[last]
    if a < ct[lo]:
        return np.nan, _BEFORE_FIRST
    if b > tlast and not lambda_z > 0.0:
        return np.nan, _NEEDS_LAMBDA_Z
    total = 0.0
    if a < tlast:
        total += _auc_between(ct, cc, lo, last, a, min(b, tlast), log_down)
    if b > tlast:
        total += _extrapolated_auc(clast, tlast, lambda_z, max(a, tlast), b)
    return total, 0


@numba.njit(cache=True)
def _terminal_phase(ct, cc, lo, m, imax, last, fit, out):
    """Fill λz and the AUC-to-infinity parameters; return reason bits."""
    tlast = ct[last]
    best_n = _fit_lambda_z(ct, cc, lo, m, imax, tlast, fit)
    if best_n == 0:
        return _TOO_FEW_LZ_POINTS
    if best_n < 0:
        return _NO_POSITIVE_LZ
    row = lo + best_n - 1
    lambda_z = fit[row, 1]
    half_life = math.log(2.0) / lambda_z
    out[_LAMBDA_Z] = lambda_z
    out[_HALF_LIFE] = half_life
    out[_R2] = fit[row, 2]
    out[_ADJ_R2] = fit[row, 0]
    out[_NPOINTS] = best_n
    out[_TIME_FIRST] = fit[row, 4]
    out[_SPAN_RATIO] = (tlast - fit[row, 4]) / half_life
    auclast = out[_AUCLAST]
    aucinf_obs = auclast + cc[last] / lambda_z
    aucinf_pred = auclast + math.exp(fit[row, 3]) / lambda_z
    out[_AUCINF_OBS] = aucinf_obs
    out[_AUCINF_PRED] = aucinf_pred
    out[_PCT_OBS] = 100.0 * (1.0 - auclast / aucinf_obs)
    out[_PCT_PRED] = 100.0 * (1.0 - auclast / aucinf_pred)
    return 0


@numba.njit(cache=True)
def _observed_parameters(ct, cc, lo, m, log_down, out):
    """Fill cmax … aucall; return (index of tmax, index of tlast or -1)."""
    imax = 0
    last = -1
    for k in range(m):
        if cc[lo + k] > cc[lo + imax]:
            imax = k
        if cc[lo + k] > 0.0:
            last = lo + k
    out[_CMAX] = cc[lo + imax]
    if last < 0:
        out[_CLAST] = 0.0
        out[_AUCLAST] = 0.0
        out[_AUCALL] = 0.0
        return imax, last
    out[_TMAX] = ct[lo + imax]
    out[_TLAST] = ct[last]
    out[_CLAST] = cc[last]
    if m > 1:
        auclast = _auc_between(ct, cc, lo, last, ct[lo], ct[last], log_down)
        out[_AUCLAST] = auclast
        out[_AUCALL] = auclast
        if last < lo + m - 1:
            out[_AUCALL] += 0.5 * cc[last] * (ct[last + 1] - ct[last])
    return imax, last


@numba.njit(cache=True)
def _last_dose_peak(ct, cc, lo, m, start):
    """Index (relative to lo) of the first maximum among points at or after ``start``;
    ``m`` when there is none."""
    best = m
    for k in range(m):
        if ct[lo + k] >= start and (best == m or cc[lo + k] > cc[lo + best]):
            best = k
    return best


@numba.njit(cache=True)
def _nca_subject(i, rows, offsets, blq_rules, intervals, log_down, scratch, outputs, last_dose):
    time, conc, blq, lloq = rows
    rules, fills = blq_rules
    starts, ends = intervals
    ct, cc, fit = scratch
    res, auc_int, code, int_code = outputs
    lo = offsets[i]
    hi = offsets[i + 1]
    out = res[i]
    out[:] = np.nan
    auc_int[i, :] = np.nan
    if hi == lo:
        code[i] = _NO_ROWS
        return
    m = _apply_blq_rules(time, conc, blq, lloq, lo, hi, rules, fills, ct, cc)
    if m == 0:
        code[i] = _NO_ROWS_AFTER_BLQ
        return
    imax, last = _observed_parameters(ct, cc, lo, m, log_down, out)
    if last < 0:
        code[i] = _ALL_BLQ
        auc_int[i, :] = 0.0
        return
    bits = _ONE_OBSERVATION if m == 1 else 0
    if last_dose[i] > ct[lo]:
        # PKNCA: lambda_z is not taken across a dose; the terminal phase starts after the
        # peak that follows the last dose
        imax = min(_last_dose_peak(ct, cc, lo, m, last_dose[i]), m - 1)
        bits |= _REDOSED
    bits |= _terminal_phase(ct, cc, lo, m, imax, last, fit, out)
    for k in range(starts.size):
        auc_int[i, k], int_code[i, k] = _interval_auc(
            ct, cc, lo, last, cc[last], out[_LAMBDA_Z], starts[k], ends[k], log_down
        )
    code[i] = bits


@numba.njit(cache=True, parallel=True)
def _nca_kernel(rows, offsets, blq_rules, intervals, log_down, scratch, outputs, last_dose):
    """NCA of every subject; subject i owns rows offsets[i]:offsets[i + 1] of the flat arrays.

    rows = (time, conc, blq, lloq), each (n_rows,), sorted by time within a subject;
    blq_rules = (rule code, fill value) per BLQ position; intervals = (starts, ends);
    scratch = (ct, cc (n_rows,), fit (n_rows, 5)); outputs = (res (n_subjects,
    len(PARAMETERS)), auc_int (n_subjects, n_intervals), code (n_subjects,),
    int_code (n_subjects, n_intervals)); last_dose (n_subjects,): the time of the last dose
    (-inf without dose records): when it is after the first observation, lambda_z uses only
    the points after the peak that follows it.
    """
    for i in numba.prange(offsets.size - 1):
        _nca_subject(i, rows, offsets, blq_rules, intervals, log_down, scratch, outputs, last_dose)


# --------------------------------------------------------------------------- validation


def _format_number(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return str(int(x)) if x.is_integer() else repr(x)


def _check_intervals(
    intervals: Iterable[Sequence[float]],
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(starts, ends, column names); a single (start, end) pair is accepted as one interval."""
    pairs = list(intervals)
    if len(pairs) == 2 and all(isinstance(x, numbers.Real) for x in pairs):
        pairs = [tuple(pairs)]
    starts, ends, names = [], [], []
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
        name = f"auc_{_format_number(start)}_{_format_number(end)}"
        if name in names:
            raise ValueError(f"interval {interval!r} is given twice")
        starts.append(start)
        ends.append(end)
        names.append(name)
    return np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64), names


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


# --------------------------------------------------------------------------- packing


def _pack(obs: pd.DataFrame, ids: np.ndarray, rules: np.ndarray) -> dict[str, np.ndarray]:
    """Flat, per-subject sorted arrays and int64 offsets from the observation rows."""
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


def _run_kernel(
    packed: dict[str, np.ndarray],
    n_subjects: int,
    blq_rules,
    intervals,
    log_down: bool,
    last_dose: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    n_rows = packed["time"].size
    n_intervals = intervals[0].size
    outputs = (
        np.empty((n_subjects, len(PARAMETERS))),
        np.empty((n_subjects, n_intervals)),
        np.zeros(n_subjects, dtype=np.int64),
        np.zeros((n_subjects, n_intervals), dtype=np.int64),
    )
    rows = (packed["time"], packed["conc"], packed["blq"], packed["lloq"])
    scratch = (np.empty(n_rows), np.empty(n_rows), np.empty((n_rows, 5)))
    if last_dose is None:
        last_dose = np.full(n_subjects, -np.inf)
    _nca_kernel(
        rows, packed["offsets"], blq_rules, intervals, log_down, scratch, outputs, last_dose
    )
    return outputs


def _reasons(code: np.ndarray, int_code: np.ndarray, names: list[str]) -> np.ndarray:
    """Reason strings, built once per distinct combination of codes."""
    codes = np.column_stack([code, int_code])
    flagged = np.flatnonzero(codes.any(axis=1))
    combos, inverse = np.unique(codes[flagged], axis=0, return_inverse=True)
    texts = []
    for combo in combos:
        parts = [text for bit, text in _REASONS if combo[0] & bit]
        parts += [
            f"{name}: {_INTERVAL_REASONS[c]}" for name, c in zip(names, combo[1:], strict=True) if c
        ]
        texts.append("; ".join(parts))
    reasons = np.full(code.size, "", dtype=object)
    reasons[flagged] = np.array(texts, dtype=object)[inverse.ravel()]
    return reasons


# --------------------------------------------------------------------------- public API


def _observations(
    data: Any, analyte: str | None
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    """Observation rows, subject IDs, baseline covariates and each subject's last dose time
    (day; -inf without dose records)."""
    from ..data import as_dataset

    ds = as_dataset(data)
    if analyte is None and len(ds.analytes) > 1:
        raise DataError(
            f"ANALYTE: the data hold {len(ds.analytes)} analytes "
            f"({', '.join(map(str, ds.analytes))}); choose one with analyte=..."
        )
    obs = ds.observations(analyte)
    ids = np.asarray(ds.ids)
    doses = ds.doses()
    last = doses.groupby("ID", sort=False)["TIME"].max()
    last_dose = last.reindex(ids).to_numpy(dtype=np.float64, na_value=-np.inf)
    return obs, ids, ds.subject_covariates(), last_dose


def nca(
    data: Any,
    analyte: str | None = None,
    intervals: Iterable[Sequence[float]] = ((0, 28),),
    auc_method: str = "lin-up/log-down",
    blq: Mapping[str, Any] | None = None,
    by: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Non-compartmental analysis, one row per subject.

    Args:
        data: anything :func:`cartpk.data.as_dataset` accepts (Dataset, DataFrame, CSV path).
            TIME in days (negative = before infusion; included), DV in the analyte's unit;
            ``CENS == 1`` (or ``DV == 0``) marks a BLQ row.
        analyte: the analyte to analyse; may be None only if the data hold one analyte.
        intervals: (start, end) pairs in days; each gives a column ``auc_<start>_<end>``.
            ``end`` may be ``inf``.
        auc_method: ``"lin-up/log-down"`` (PKNCA's default) or ``"linear"``.
        blq: what to do with BLQ rows before the first, between the first and last, and
            after the last quantified concentration: ``{"first": ..., "middle": ...,
            "last": ...}``, each ``"keep"`` (as 0), ``"drop"``, ``"lloq/2"`` or a number
            to substitute. Default PKNCA's ``{"first": "keep", "middle": "drop",
            "last": "keep"}``. Substituted values count as measured concentrations (for
            tlast, λz and the AUCs), as in PKNCA.
        by: the baseline covariate(s) to carry into the table (e.g. ``"DOSE"``, for
            :func:`nca_summary`); None carries all of them. An unknown name raises
            :class:`cartpk.DataError`.

    Returns:
        DataFrame with ``ID``, the subjects' baseline covariates, then the columns of
        :data:`PARAMETERS` (concentrations in the analyte's unit, times in days, AUCs in
        unit·day, ``lambda_z`` in 1/day, ``auc_pct_extrap_*`` in %, ``span_ratio``
        unitless), one ``auc_<start>_<end>`` per interval, ``last_dose`` (day of the last
        dose when a subject was dosed again after its first observation, else NaN) and
        ``exclude``: why some values are NaN or were restricted (empty when everything was
        computed from the whole profile). After a re-infusion, as in PKNCA, λz is not taken
        across a dose: it is fitted only to the points after the peak that follows the last
        dose, and ``aucinf_*``, ``auc_pct_extrap_*`` and the extrapolated interval AUCs use
        that λz; ``cmax``, ``tmax`` and ``auclast`` still cover the whole profile.
    """
    log_down = _check_auc_method(auc_method)
    rules, fills = _check_blq(blq)
    starts, ends, names = _check_intervals(intervals)
    obs, ids, covariates, last_dose = _observations(data, analyte)
    covariates = _select_covariates(covariates, by)
    return _nca_table(
        obs, ids, covariates, (starts, ends, names), (rules, fills), log_down, last_dose
    )


def _select_covariates(covariates: pd.DataFrame, by: str | Sequence[str] | None) -> pd.DataFrame:
    if by is None:
        return covariates
    names = _as_list(by)
    missing = [name for name in names if name not in covariates.columns]
    if missing:
        raise DataError(
            f"by: no covariate {', '.join(map(repr, missing))}; "
            f"the data have {', '.join(map(repr, covariates.columns)) or 'none'}"
        )
    return covariates[names]


def _nca_table(
    obs, ids, covariates, intervals, blq_rules, log_down, last_dose=None
) -> pd.DataFrame:
    starts, ends, names = intervals
    packed = _pack(obs, ids, blq_rules[0])
    if last_dose is None:
        last_dose = np.full(ids.size, -np.inf)
    res, auc_int, code, int_code = _run_kernel(
        packed, ids.size, blq_rules, (starts, ends), log_down, last_dose
    )
    columns: dict[str, Any] = {"ID": ids}
    for name, values in covariates.reindex(ids).items():
        columns[str(name)] = values.to_numpy()
    for k, name in enumerate(PARAMETERS):
        columns[name] = res[:, k]
    columns["lambda_z_npoints"] = pd.array(res[:, _NPOINTS], dtype="Int64")
    for k, name in enumerate(names):
        columns[name] = auc_int[:, k]
    redosed = (code & _REDOSED) != 0
    columns["last_dose"] = np.where(redosed, last_dose, np.nan)
    columns["exclude"] = _reasons(code, int_code, names)
    return pd.DataFrame(columns)


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def _summary_parameters(table: pd.DataFrame, parameters: Sequence[str] | None) -> list[str]:
    if parameters is None:
        return [c for c in table.columns if c in PARAMETERS or c.startswith("auc_")]
    unknown = [p for p in parameters if p not in table.columns]
    if unknown:
        raise DataError(f"parameters: no column {', '.join(map(repr, unknown))} in the table")
    return list(parameters)


def nca_summary(
    table: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    parameters: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Descriptive statistics of an :func:`nca` table, per group and parameter (long format).

    Columns: the ``by`` columns, ``parameter``, ``n`` (non-missing values), ``n_geo``
    (positive values: the geometric statistics use only these, so ``n - n_geo`` values
    were excluded from them), ``geomean`` (exp of the mean log), ``geocv_pct``
    (100·sqrt(exp(sd_log²) − 1), sd_log with ddof 1), ``mean``, ``sd`` (ddof 1),
    ``median``, ``min``, ``max``. Units are those of each parameter. For ``tmax`` the
    median and range are the meaningful statistics; all are reported.
    """
    keys = _as_list(by)
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise DataError(f"by: no column {', '.join(map(repr, missing))} in the NCA table")
    names = _summary_parameters(table, parameters)
    long = table[keys + names].melt(id_vars=keys, var_name="parameter", value_name="value")
    values = pd.to_numeric(long["value"]).to_numpy(dtype=np.float64, na_value=np.nan)
    long["value"] = values
    long["log"] = np.log(np.where(values > 0, values, np.nan))
    long["parameter"] = pd.Categorical(long["parameter"], categories=names, ordered=True)
    grouped = long.groupby([*keys, "parameter"], observed=True, sort=True, dropna=False)
    stats = grouped.agg(
        n=("value", "count"),
        n_geo=("log", "count"),
        mean_log=("log", "mean"),
        sd_log=("log", "std"),
        mean=("value", "mean"),
        sd=("value", "std"),
        median=("value", "median"),
        min=("value", "min"),
        max=("value", "max"),
    ).reset_index()
    stats.insert(len(keys) + 3, "geomean", np.exp(stats.pop("mean_log")))
    stats.insert(len(keys) + 4, "geocv_pct", 100 * np.sqrt(np.expm1(stats.pop("sd_log") ** 2)))
    stats["parameter"] = stats["parameter"].astype(str)
    return stats
