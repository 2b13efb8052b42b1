"""Likelihood kernels: −2 log-likelihood of subjects' observations under the model.

Everything works on plain float64/int64 arrays; the model comes as the function tuple and
``dims`` of ``contract.py``.

Observations
------------
Subject i's observations are rows ``o_off[i]:o_off[i+1]`` of flat arrays, sorted by time:
``o_time`` (day), ``o_out`` (output index), ``o_dv``, ``o_cens`` (1 = censored: the value
lies in the interval (``o_lower``, ``o_lloq``]), ``o_lloq`` (the interval's upper bound: the
LLOQ for a point below the LLOQ), ``o_lower`` (its lower bound; −inf for none, which gives
Beal's M3 likelihood P(Y < LLOQ)), and the residual error model of the row, ``o_kind``
(``codes.KIND_*``: log, Gaussian on log(DV) with SD ``o_ea``; proportional, SD ``o_eb``·f;
additive, SD ``o_ea``; combined, SD sqrt(``o_ea``² + (``o_eb``·f)²)). A censored point
contributes −2 log(Φ(z_U) − Φ(z_L)), its bounds standardised on the error model's scale
(log bounds for ``log``, where a lower bound of 0 is −inf, the M3 term).
Contributions are −2 log-likelihood with the Gaussian constant (for ``log``, that of log DV).
A failed solve, a non-finite prediction or a non-positive one under the log or proportional
model gives +inf. ``solver`` = (method code, rtol, atol, max_steps).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .codes import KIND_ADDITIVE, KIND_LOG, KIND_PROPORTIONAL, STATUS_OK
from .contract import N_OUTPUTS
from .integrate import solve_subject

_LOG_2PI = math.log(2.0 * math.pi)


@numba.njit(cache=True, error_model="numpy")
def _log_ndtr(z):
    """log Φ(z), accurate in the far lower tail (asymptotic series below z = -30)."""
    if z > -30.0:
        return math.log(0.5 * math.erfc(-z / math.sqrt(2.0)))
    z2 = z * z
    series = 1.0 - 1.0 / z2 + 3.0 / (z2 * z2) - 15.0 / (z2 * z2 * z2)
    return -0.5 * z2 - math.log(-z) - 0.5 * _LOG_2PI + math.log(series)


@numba.njit(cache=True, error_model="numpy")
def _log_ndtr_diff(a, b):
    """log(Φ(b) − Φ(a)) for a < b (either may be infinite), without cancellation.

    a = −inf is log Φ(b) itself (the M3 term, bit for bit). An interval in the upper half
    (a + b > 0) is turned round, Φ(b) − Φ(a) = Φ(−a) − Φ(−b), so that both CDFs are taken
    where they are small and accurate; then log Φ(b) + log(1 − e^(log Φ(a) − log Φ(b))),
    the second term by expm1. −inf when the interval is empty (b <= a).
    """
    if not b > a:
        return -np.inf
    if a == -np.inf:
        return _log_ndtr(b)
    if b == np.inf:
        return _log_ndtr(-a)
    if a + b > 0.0:
        a, b = -b, -a
    high = _log_ndtr(b)
    return high + math.log(-math.expm1(_log_ndtr(a) - high))


@numba.njit(cache=True, error_model="numpy")
def _scale_sd(kind, f, ea, eb):
    """SD of the residual error at prediction f on its error model's scale (NaN if f is
    impossible: not finite, or <= 0 under the log or proportional model)."""
    if not math.isfinite(f) or ((kind == KIND_LOG or kind == KIND_PROPORTIONAL) and f <= 0.0):
        return np.nan
    if kind == KIND_LOG:
        return ea
    if kind == KIND_PROPORTIONAL:
        return eb * f
    if kind == KIND_ADDITIVE:
        return ea
    return math.sqrt(ea * ea + eb * eb * f * f)


@numba.njit(cache=True, error_model="numpy")
def _z(kind, y, f, sd):
    """(y − f) / SD on the error model's scale (log y − log f for ``log``, where y <= 0 is
    −inf); ±inf for an infinite bound y."""
    if kind == KIND_LOG:
        if y <= 0.0:
            return -np.inf
        return (math.log(y) - math.log(f)) / sd
    return (y - f) / sd


@numba.njit(cache=True, error_model="numpy")
def _standardised(kind, dv, f, cens, lloq, ea, eb):
    """(z, SD) of one observation on its error model's scale; SD is NaN if f is impossible.

    z = (y − prediction) / SD with y = DV, or LLOQ (the upper bound) for a censored point
    (log scale for ``log``).
    """
    sd = _scale_sd(kind, f, ea, eb)
    if not math.isfinite(sd):
        return np.nan, np.nan
    return _z(kind, lloq if cens else dv, f, sd), sd


@numba.njit(cache=True, error_model="numpy")
def _censored_m2ll(kind, f, lloq, lower, ea, eb):
    """−2 log P(lower < Y <= lloq) of a censored point (+inf if f is impossible)."""
    sd = _scale_sd(kind, f, ea, eb)
    if not math.isfinite(sd):
        return np.inf
    low = -np.inf if lower == -np.inf else _z(kind, lower, f, sd)
    return -2.0 * _log_ndtr_diff(low, _z(kind, lloq, f, sd))


@numba.njit(cache=True, error_model="numpy")
def _point_m2ll(kind, dv, f, cens, lloq, lower, ea, eb):
    """−2 log-likelihood of one observation given the prediction f (+inf if impossible)."""
    if cens:
        return _censored_m2ll(kind, f, lloq, lower, ea, eb)
    z, sd = _standardised(kind, dv, f, cens, lloq, ea, eb)
    if not math.isfinite(sd):
        return np.inf
    return z * z + 2.0 * math.log(sd) + _LOG_2PI


# Inlined into its callers (numba IR): compiled on its own, this thin layer would make numba
# re-optimise the whole solver graph linked under it once more (seconds of a cold start).
@numba.njit(cache=True, error_model="numpy", inline="always")
def _subject_m2ll(
    model,
    dims,
    p,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_lower,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_reset,
    solver,
    pred,
):
    """−2LL of one subject's observations under parameters p (row of the packed matrix).

    ``solver`` = (method, rtol, atol, max_steps); ``pred`` a workspace (n_obs, N_OUTPUTS)
    that holds the predictions afterwards.
    """
    code, _ = solve_subject(
        model,
        dims,
        p,
        o_time,
        pred,
        d_time,
        d_amt,
        d_reset,
        int(solver[0]),
        solver[1],
        solver[2],
        int(solver[3]),
    )
    if code != STATUS_OK:
        return np.inf
    total = 0.0
    for k in range(o_time.size):
        total += _point_m2ll(
            o_kind[k],
            o_dv[k],
            pred[k, o_out[k]],
            o_cens[k],
            o_lloq[k],
            o_lower[k],
            o_ea[k],
            o_eb[k],
        )
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def m2ll_batch(
    model,
    dims,
    p,
    o_off,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_lower,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_reset,
    d_off,
    solver,
    pred,
    m2ll,
    first,
    last,
):
    """−2LL of subjects ``first <= i < last`` into ``m2ll`` (n,), predictions into ``pred``
    (n_obs, N_OUTPUTS)."""
    for i in range(first, last):
        lo, hi = o_off[i], o_off[i + 1]
        m2ll[i] = _subject_m2ll(
            model,
            dims,
            p[i],
            o_time[lo:hi],
            o_out[lo:hi],
            o_dv[lo:hi],
            o_cens[lo:hi],
            o_lloq[lo:hi],
            o_lower[lo:hi],
            o_kind[lo:hi],
            o_ea[lo:hi],
            o_eb[lo:hi],
            d_time[d_off[i] : d_off[i + 1]],
            d_amt[d_off[i] : d_off[i + 1]],
            d_reset[d_off[i] : d_off[i + 1]],
            solver,
            pred[lo:hi],
        )


@numba.njit(cache=True, error_model="numpy")
def m2ll_one(
    model,
    dims,
    p,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_lower,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_reset,
    solver,
    pred,
):
    """One subject's −2LL on the calling thread (for individual fits)."""
    return _subject_m2ll(
        model,
        dims,
        p,
        o_time,
        o_out,
        o_dv,
        o_cens,
        o_lloq,
        o_lower,
        o_kind,
        o_ea,
        o_eb,
        d_time,
        d_amt,
        d_reset,
        solver,
        pred,
    )


# Offset that keeps 2·log(SD) + _SD_OFFSET >= 0 for any SD above 1e-300.
_SD_OFFSET = -2.0 * math.log(1e-300)


@numba.njit(cache=True, error_model="numpy")
def residuals_one(
    model,
    dims,
    p,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_lower,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_reset,
    solver,
    pred,
    r,
):
    """One subject's −2LL written as a sum of squares, for least-squares optimisers.

    Fills r (2·n_obs): r[k] = z_k for a quantified point, sqrt(−2 log P_k) for a censored
    one (P_k = Φ(z_U) − Φ(z_L), the probability of its interval; Φ(z_U) under M3), and
    r[n_obs + k] = sqrt(2·log SD_k + _SD_OFFSET) for a quantified point (0 for a censored
    one), so that Σ r² = −2LL − n_quantified·(log 2π − _SD_OFFSET). Returns False (r filled
    with 1e6) when the model cannot be solved or predicts an impossible value.
    """
    n = o_time.size
    code, _ = solve_subject(
        model,
        dims,
        p,
        o_time,
        pred,
        d_time,
        d_amt,
        d_reset,
        int(solver[0]),
        solver[1],
        solver[2],
        int(solver[3]),
    )
    for k in range(n):
        f = pred[k, o_out[k]]
        if o_cens[k]:
            m = _censored_m2ll(o_kind[k], f, o_lloq[k], o_lower[k], o_ea[k], o_eb[k])
            if code != 0 or not math.isfinite(m):
                r[:] = 1e6
                return False
            r[k] = math.sqrt(max(m, 0.0))
            r[n + k] = 0.0
            continue
        z, sd = _standardised(o_kind[k], o_dv[k], f, 0, o_lloq[k], o_ea[k], o_eb[k])
        if code != 0 or not math.isfinite(z) or not sd > 0.0:
            r[:] = 1e6
            return False
        r[k] = z
        r[n + k] = math.sqrt(max(2.0 * math.log(sd) + _SD_OFFSET, 0.0))
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def points_batch(
    model,
    dims,
    P,
    EA,
    EB,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_lower,
    o_kind,
    d_time,
    d_amt,
    d_reset,
    solver,
    pred,
    R,
    m2ll,
    first,
    last,
):
    """One subject at parameter points ``first..last-1`` (finite differences, Hessians).

    Point k has parameters ``P[k]`` and error parameters ``EA[k]``, ``EB[k]`` per row; its
    residuals (:func:`residuals_one`) go to ``R[k]`` and its −2LL to ``m2ll[k]``;
    ``pred`` is a workspace (k, n_obs, N_OUTPUTS).
    """
    for k in range(first, last):
        solved = residuals_one(
            model,
            dims,
            P[k], o_time, o_out, o_dv, o_cens, o_lloq, o_lower, o_kind, EA[k], EB[k], d_time,
            d_amt,
            d_reset,
            solver, pred[k], R[k],
        )  # fmt: skip
        m2ll[k] = 0.0 if solved else np.inf
        for j in range(o_time.size):
            m2ll[k] += _point_m2ll(
                o_kind[j],
                o_dv[j],
                pred[k, j, o_out[j]],
                o_cens[j],
                o_lloq[j],
                o_lower[j],
                EA[k, j],
                EB[k, j],
            )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def m2ll_rows(
    model,
    dims,
    P,
    subject,
    o_off,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_lower,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_reset,
    d_off,
    solver,
    m2ll,
    first,
    last,
):
    """−2LL of subject ``subject[r]``'s data under parameters ``P[r]``, for rows
    ``first <= r < last``.

    For importance sampling and other many-draws-per-subject evaluations: rows may repeat a
    subject. +inf where the model cannot be solved.
    """
    for r in range(first, last):
        i = subject[r]
        lo, hi = o_off[i], o_off[i + 1]
        pred = np.empty((hi - lo, dims[N_OUTPUTS]))
        m2ll[r] = _subject_m2ll(
            model,
            dims,
            P[r],
            o_time[lo:hi],
            o_out[lo:hi],
            o_dv[lo:hi],
            o_cens[lo:hi],
            o_lloq[lo:hi],
            o_lower[lo:hi],
            o_kind[lo:hi],
            o_ea[lo:hi],
            o_eb[lo:hi],
            d_time[d_off[i] : d_off[i + 1]],
            d_amt[d_off[i] : d_off[i + 1]],
            d_reset[d_off[i] : d_off[i + 1]],
            solver,
            pred,
        )


@numba.njit(cache=True, error_model="numpy")
def m2ll_predicted(o_off, o_out, o_dv, o_cens, o_lloq, o_lower, o_kind, o_ea, o_eb, pred, m2ll):
    """Per-subject −2LL from given predictions ``pred`` (n_obs, N_OUTPUTS), without solving."""
    for i in range(o_off.size - 1):
        total = 0.0
        for k in range(o_off[i], o_off[i + 1]):
            total += _point_m2ll(
                o_kind[k],
                o_dv[k],
                pred[k, o_out[k]],
                o_cens[k],
                o_lloq[k],
                o_lower[k],
                o_ea[k],
                o_eb[k],
            )
        m2ll[i] = total
