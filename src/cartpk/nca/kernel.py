"""The numba NCA kernel: all subjects at once over ragged arrays, parallel over subjects.

Also the codes the kernel and the Python side share, each declared once: the order of the
output columns (:data:`PARAMETERS` and their indices), the reason bits and their texts,
and the BLQ rule codes. They stay in this file because the kernels compile them in as
constants and numba's on-disk cache (``cache=True``) checks only the source file of each
compiled function: a code declared in another file could change under a stale cache.
"""

from __future__ import annotations

import math

import numba
import numpy as np

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
#: A fitted terminal decline smaller than this over the fit's span (in log concentration) is
#: rounding, not a decline: flat or alternating points (2, 1, 2, 1) give a slope of order
#: 1e-17 whose sign is chance, and a "lambda_z" from it an AUCinf of 1e16.
LZ_ROUNDOFF = 1e-12
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
    (_ONE_OBSERVATION, "one observation: auclast and aucall not computed"),
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
#: The interval AUCs, named as PKNCA names them, and the prefix of their columns
#: (``<prefix>_<start>_<end>``); the kind code the kernel receives is the position here.
INTERVAL_AUCS = {
    "aucint.last": "auc",
    "aucint.inf.obs": "aucint_inf_obs",
    "aucint.all": "aucint_all",
}
_AUCINT_LAST, _AUCINT_INF_OBS, _AUCINT_ALL = range(len(INTERVAL_AUCS))
# Interval reason bits.
_ORIGIN = 1
_ZERO_AFTER_LAST_SAMPLE = 2
_EXTRAPOLATED = 4
_NEEDS_LAMBDA_Z = 8
_INTERVAL_REASONS = (
    (_ORIGIN, "starts before the first observation: concentration 0 assumed there"),
    (_ZERO_AFTER_LAST_SAMPLE, "ends after the last sample: counted as 0 after it"),
    (_EXTRAPOLATED, "extrapolated with lambda_z after tlast"),
    (_NEEDS_LAMBDA_Z, "needs lambda_z after tlast, which is not available"),
)

# BLQ rule codes: what happens to a BLQ row in a given position.
_KEEP, _DROP, _SET, _LLOQ_FRACTION = 0, 1, 2, 3


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
        declines = fit[row, 1] * (tlast - fit[row, 4]) > LZ_ROUNDOFF
        if declines and fit[row, 0] > best_adj - ADJ_R2_TOLERANCE:
            best_n = k
    return best_n


@numba.njit(cache=True)
def _log_segment_auc(t1: float, t2: float, c1: float, c2: float) -> float:
    """Log trapezoid over [t1, t2], 0 when an end is 0 (the limit; PKNCA's formula gives 0,
    or 0/0 when both ends are 0)."""
    if c1 <= 0.0 or c2 <= 0.0:
        return 0.0
    if c1 == c2:
        return (t2 - t1) * c1
    return (t2 - t1) * (c1 - c2) / math.log1p((c1 - c2) / c2)


@numba.njit(cache=True)
def _conc_at(ct, cc, lo, m, last, t, kind, lambda_z, log_down):
    """(concentration at an unobserved time t, reason bits), as PKNCA's interp.extrap.conc:
    0 before the first observation, interpolated up to tlast; after tlast 0 (aucint.last),
    the line from clast down to the next (BLQ) sample (aucint.all) or
    clast·exp(−λz·(t − tlast)) (aucint.inf.obs; NaN without λz)."""
    if t < ct[lo]:
        return 0.0, _ORIGIN
    tlast = ct[last]
    if t <= tlast:
        for j in range(lo, last):
            if ct[j + 1] >= t:
                return _interpolate(ct[j], ct[j + 1], cc[j], cc[j + 1], t, log_down), 0
        return cc[last], 0
    if kind == _AUCINT_INF_OBS:
        if not lambda_z > 0.0:
            return np.nan, _NEEDS_LAMBDA_Z
        return cc[last] * math.exp(-lambda_z * (t - tlast)), 0
    if kind == _AUCINT_ALL and last < lo + m - 1 and t < ct[last + 1]:
        return cc[last] * (ct[last + 1] - t) / (ct[last + 1] - tlast), 0
    return 0.0, 0


@numba.njit(cache=True)
def _interval_auc(ct, cc, lo, m, last, lambda_z, a, b, kind, log_down):
    """Return (PKNCA's aucint of the given kind over [a, b], reason bits).

    As pk.calc.aucint: the observations inside [a, b] plus the concentrations at a and b
    (:func:`_conc_at`) when they are not observation times, integrated segment by segment
    with the AUC method (so down to a BLQ zero observed after tlast); the segment ending at
    an extrapolated b (after tlast) with the log trapezoid; for b = inf, aucint.inf.obs adds
    the λz tail from max(a, tlast).
    """
    hi = lo + m
    tlast = ct[last]
    j = lo
    while j < hi and ct[j] < a:
        j += 1
    bits = 0
    a_observed = j < hi and ct[j] == a
    if a_observed:
        c1 = cc[j]
        j += 1
    else:
        c1, bit = _conc_at(ct, cc, lo, m, last, a, kind, lambda_z, log_down)
        bits |= bit
    t1 = a
    total = 0.0
    while j < hi and ct[j] <= b:
        total += _segment_auc(t1, ct[j], c1, cc[j], log_down)
        t1 = ct[j]
        c1 = cc[j]
        j += 1
    inf_obs = kind == _AUCINT_INF_OBS
    extrapolated = inf_obs and a > tlast and not a_observed
    if math.isinf(b):
        if inf_obs:
            if not lambda_z > 0.0:
                return np.nan, bits | _NEEDS_LAMBDA_Z
            total += cc[last] * math.exp(-lambda_z * max(a - tlast, 0.0)) / lambda_z
        tail = inf_obs
    elif t1 < b:
        c2, bit = _conc_at(ct, cc, lo, m, last, b, kind, lambda_z, log_down)
        bits |= bit
        if b > tlast:
            total += _log_segment_auc(t1, b, c1, c2)
        else:
            total += _segment_auc(t1, b, c1, c2, log_down)
        tail = inf_obs and b > tlast and c1 > 0.0
    else:
        tail = False
    if tail or extrapolated:
        bits |= _EXTRAPOLATED
    if b > ct[hi - 1] and not tail:
        bits |= _ZERO_AFTER_LAST_SAMPLE
    if bits & _NEEDS_LAMBDA_Z:
        return np.nan, _NEEDS_LAMBDA_Z
    return total, bits


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
    starts, ends, kinds = intervals
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
            ct, cc, lo, m, last, out[_LAMBDA_Z], starts[k], ends[k], kinds[k], log_down
        )
    code[i] = bits


@numba.njit(cache=True, parallel=True)
def _nca_kernel(rows, offsets, blq_rules, intervals, log_down, scratch, outputs, last_dose):
    """NCA of every subject; subject i owns rows offsets[i]:offsets[i + 1] of the flat arrays.

    rows = (time, conc, blq, lloq), each (n_rows,), sorted by time within a subject;
    blq_rules = (rule code, fill value) per BLQ position; intervals = (starts, ends,
    kinds: positions in :data:`INTERVAL_AUCS`), one entry per interval AUC column;
    scratch = (ct, cc (n_rows,), fit (n_rows, 5)); outputs = (res (n_subjects,
    len(PARAMETERS)), auc_int (n_subjects, n_intervals), code (n_subjects,),
    int_code (n_subjects, n_intervals)); last_dose (n_subjects,): the time of the last dose
    (-inf without dose records): when it is after the first observation, lambda_z uses only
    the points after the peak that follows it.
    """
    for i in numba.prange(offsets.size - 1):
        _nca_subject(i, rows, offsets, blq_rules, intervals, log_down, scratch, outputs, last_dose)


def run_kernel(
    packed: dict[str, np.ndarray],
    n_subjects: int,
    blq_rules,
    intervals,
    log_down: bool,
    last_dose: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Run :func:`_nca_kernel` on packed observations (see inputs._pack); return its
    outputs (res, auc_int, code, int_code)."""
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
