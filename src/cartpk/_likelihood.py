"""Likelihood and Metropolis–Hastings kernels: a template appended after ``_kernels.py``.

Like ``_kernels.py`` this file is never imported on its own: ``model.py`` appends it to each
model's generated module, where ``_solve_subject``, ``N_PARAMS`` and the model functions are
globals. Everything works on plain float64/int64 arrays.

Observations
------------
Subject i's observations are rows ``o_off[i]:o_off[i+1]`` of flat arrays, sorted by time:
``o_time`` (day), ``o_out`` (output index), ``o_dv``, ``o_cens`` (1 = below LLOQ, the M3
likelihood P(Y < LLOQ)), ``o_lloq``, and the residual error model of the row, ``o_kind``
(0 log: Gaussian on log(DV) with SD ``o_ea``; 1 proportional: SD ``o_eb``·f;
2 additive: SD ``o_ea``; 3 combined: SD sqrt(``o_ea``² + (``o_eb``·f)²)).
Contributions are −2 log-likelihood with the Gaussian constant (for ``log``, that of log DV).
A failed solve, a non-finite prediction or a non-positive one under the log or proportional
model gives +inf.

Individual parameters
---------------------
``mh_batch`` works on the estimation scale: phi = mu + eta, mapped to the natural scale per
parameter (``scale`` 0 none, 1 log, 2 logit on [lower, upper]). All random numbers are drawn
by the caller (seeded numpy) and passed in, so results do not depend on the thread count.
"""

# ruff: noqa: F821

import math

import numba
import numpy as np

KIND_LOG = 0
KIND_PROPORTIONAL = 1
KIND_ADDITIVE = 2
KIND_COMBINED = 3

SCALE_NONE = 0
SCALE_LOG = 1
SCALE_LOGIT = 2

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
def _standardised(kind, dv, f, cens, lloq, ea, eb):
    """(z, SD) of one observation on its error model's scale; SD is NaN if f is impossible.

    z = (y − prediction) / SD with y = DV, or LLOQ for a censored point (log scale for
    ``log``).
    """
    if not math.isfinite(f) or ((kind == KIND_LOG or kind == KIND_PROPORTIONAL) and f <= 0.0):
        return np.nan, np.nan
    y = lloq if cens else dv
    if kind == KIND_LOG:
        return (math.log(y) - math.log(f)) / ea, ea
    if kind == KIND_PROPORTIONAL:
        sd = eb * f
    elif kind == KIND_ADDITIVE:
        sd = ea
    else:
        sd = math.sqrt(ea * ea + eb * eb * f * f)
    return (y - f) / sd, sd


@numba.njit(cache=True, error_model="numpy")
def _point_m2ll(kind, dv, f, cens, lloq, ea, eb):
    """−2 log-likelihood of one observation given the prediction f (+inf if impossible)."""
    z, sd = _standardised(kind, dv, f, cens, lloq, ea, eb)
    if not math.isfinite(sd):
        return np.inf
    if cens:
        return -2.0 * _log_ndtr(z)
    return z * z + 2.0 * math.log(sd) + _LOG_2PI


@numba.njit(cache=True, error_model="numpy")
def _subject_m2ll(
    p, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, o_ea, o_eb, d_time, d_amt, solver, pred
):
    """−2LL of one subject's observations under parameters p (row of the packed matrix).

    ``solver`` = (method, rtol, atol, max_steps); ``pred`` a workspace (n_obs, N_OUTPUTS)
    that holds the predictions afterwards.
    """
    code, _ = _solve_subject(
        p, o_time, pred, d_time, d_amt, int(solver[0]), solver[1], solver[2], int(solver[3])
    )
    if code != 0:
        return np.inf
    total = 0.0
    for k in range(o_time.size):
        total += _point_m2ll(
            o_kind[k], o_dv[k], pred[k, o_out[k]], o_cens[k], o_lloq[k], o_ea[k], o_eb[k]
        )
    return total


@numba.njit(cache=True, parallel=True, error_model="numpy")
def m2ll_batch(
    p,
    o_off,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_off,
    solver,
    pred,
    m2ll,
):
    """Per-subject −2LL into ``m2ll`` (n,) and predictions into ``pred`` (n_obs, N_OUTPUTS)."""
    for i in numba.prange(p.shape[0]):
        lo, hi = o_off[i], o_off[i + 1]
        m2ll[i] = _subject_m2ll(
            p[i],
            o_time[lo:hi],
            o_out[lo:hi],
            o_dv[lo:hi],
            o_cens[lo:hi],
            o_lloq[lo:hi],
            o_kind[lo:hi],
            o_ea[lo:hi],
            o_eb[lo:hi],
            d_time[d_off[i] : d_off[i + 1]],
            d_amt[d_off[i] : d_off[i + 1]],
            solver,
            pred[lo:hi],
        )


@numba.njit(cache=True, error_model="numpy")
def m2ll_one(
    p, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, o_ea, o_eb, d_time, d_amt, solver, pred
):
    """One subject's −2LL without the parallel machinery (for individual fits)."""
    return _subject_m2ll(
        p, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, o_ea, o_eb, d_time, d_amt, solver, pred
    )


# Offset that keeps 2·log(SD) + _SD_OFFSET >= 0 for any SD above 1e-300.
_SD_OFFSET = -2.0 * math.log(1e-300)


@numba.njit(cache=True, error_model="numpy")
def residuals_one(
    p, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, o_ea, o_eb, d_time, d_amt, solver, pred, r
):
    """One subject's −2LL written as a sum of squares, for least-squares optimisers.

    Fills r (2·n_obs): r[k] = z_k for a quantified point (sqrt(−2 log Φ(z_k)) for a censored
    one) and r[n_obs + k] = sqrt(2·log SD_k + _SD_OFFSET) for a quantified point (0 for a
    censored one), so that Σ r² = −2LL − n_quantified·(log 2π − _SD_OFFSET). Returns False
    (r filled with 1e6) when the model cannot be solved or predicts an impossible value.
    """
    n = o_time.size
    code, _ = _solve_subject(
        p, o_time, pred, d_time, d_amt, int(solver[0]), solver[1], solver[2], int(solver[3])
    )
    for k in range(n):
        z, sd = _standardised(
            o_kind[k], o_dv[k], pred[k, o_out[k]], o_cens[k], o_lloq[k], o_ea[k], o_eb[k]
        )
        if code != 0 or not math.isfinite(z) or not sd > 0.0:
            r[:] = 1e6
            return False
        if o_cens[k]:
            r[k] = math.sqrt(max(-2.0 * _log_ndtr(z), 0.0))
            r[n + k] = 0.0
        else:
            r[k] = z
            r[n + k] = math.sqrt(max(2.0 * math.log(sd) + _SD_OFFSET, 0.0))
    return True


@numba.njit(cache=True, error_model="numpy")
def _point(
    k, P, EA, EB, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, d_time, d_amt, solver, pred, R, m2ll
):
    """Residuals R[k] and −2LL m2ll[k] of one subject at parameter point k."""
    solved = residuals_one(
        P[k], o_time, o_out, o_dv, o_cens, o_lloq, o_kind, EA[k], EB[k], d_time, d_amt,
        solver, pred[k], R[k],
    )  # fmt: skip
    m2ll[k] = 0.0 if solved else np.inf
    for j in range(o_time.size):
        m2ll[k] += _point_m2ll(
            o_kind[j], o_dv[j], pred[k, j, o_out[j]], o_cens[j], o_lloq[j], EA[k, j], EB[k, j]
        )


@numba.njit(cache=True, parallel=True, error_model="numpy")
def points_batch(
    P, EA, EB, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, d_time, d_amt, solver, pred, R, m2ll
):
    """One subject at many parameter points, in parallel (finite differences, Hessians).

    Point k has parameters ``P[k]`` and error parameters ``EA[k]``, ``EB[k]`` per row; its
    residuals (:func:`residuals_one`) go to ``R[k]`` and its −2LL to ``m2ll[k]``;
    ``pred`` is a workspace (k, n_obs, N_OUTPUTS).
    """
    for k in numba.prange(P.shape[0]):
        _point(k, P, EA, EB, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, d_time, d_amt,
               solver, pred, R, m2ll)  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def points_serial(
    P, EA, EB, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, d_time, d_amt, solver, pred, R, m2ll
):
    """:func:`points_batch` on the calling thread (a few points: no thread hand-off)."""
    for k in range(P.shape[0]):
        _point(k, P, EA, EB, o_time, o_out, o_dv, o_cens, o_lloq, o_kind, d_time, d_amt,
               solver, pred, R, m2ll)  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def _to_natural(phi, scale, lower, upper, p):
    """Estimation-scale phi -> natural-scale parameters in the first N_PARAMS slots of p."""
    for j in range(phi.size):
        if scale[j] == SCALE_LOG:
            p[j] = math.exp(phi[j])
        elif scale[j] == SCALE_LOGIT:
            p[j] = lower[j] + (upper[j] - lower[j]) / (1.0 + math.exp(-phi[j]))
        else:
            p[j] = phi[j]


@numba.njit(cache=True, error_model="numpy")
def _eta_m2lp(eta, omega_inv):
    """eta' Ω⁻¹ eta (−2 log prior density of eta without constants)."""
    total = 0.0
    n = eta.size
    for a in range(n):
        for b in range(n):
            total += eta[a] * omega_inv[a, b] * eta[b]
    return total


@numba.njit(cache=True, parallel=True, error_model="numpy")
def mh_batch(
    mu,
    eta,
    m2ll,
    mode,
    step,
    omega_chol,
    omega_inv,
    z,
    u,
    scale,
    lower,
    upper,
    cov,
    o_off,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_off,
    solver,
    pred,
    kept,
    accepted,
):
    """Metropolis–Hastings sweeps over the random effects of every subject, in place.

    ``mu`` (n, n_par): each subject's mean on the estimation scale (typical value plus
    covariate effects); ``eta`` (n, n_par) the current random effects (0 where a parameter has
    none) and ``m2ll`` (n,) the data −2LL at the current state, both updated in place.
    ``z`` (n, n_moves, n_par) standard normal draws and ``u`` (n, n_moves) uniform draws.
    ``mode`` 0: independent proposals from the prior, eta* = L z (``omega_chol`` = L, zero
    rows for parameters without random effects), accepted on the likelihood ratio;
    mode 1: a joint random walk eta* = eta + step ∘ z; mode 2: a random walk on one
    component per move, cycling through those with ``step > 0``. Random walks are accepted
    on likelihood times prior. ``pred`` is a workspace; ``kept`` (n_obs, N_OUTPUTS) holds the
    predictions at the current state (updated on acceptance); ``accepted`` (n,) counts
    accepted moves.
    """
    n_par = mu.shape[1]
    for i in numba.prange(mu.shape[0]):
        lo, hi = o_off[i], o_off[i + 1]
        p = np.empty(n_par + cov.shape[1])
        p[n_par:] = cov[i]
        phi = np.empty(n_par)
        proposal = np.empty(n_par)
        current = eta[i].copy()
        m2lp = _eta_m2lp(current, omega_inv)
        n_accepted = 0
        k_component = 0
        for move in range(u.shape[1]):
            if mode == 0:
                for a in range(n_par):
                    proposal[a] = 0.0
                    for b in range(n_par):
                        proposal[a] += omega_chol[a, b] * z[i, move, b]
            elif mode == 1:
                for a in range(n_par):
                    proposal[a] = current[a] + step[a] * z[i, move, a]
            else:
                proposal[:] = current
                for _ in range(n_par):
                    k_component = (k_component + 1) % n_par
                    if step[k_component] > 0.0:
                        break
                proposal[k_component] += step[k_component] * z[i, move, k_component]
            for a in range(n_par):
                phi[a] = mu[i, a] + proposal[a]
            _to_natural(phi, scale, lower, upper, p)
            new = _subject_m2ll(
                p,
                o_time[lo:hi],
                o_out[lo:hi],
                o_dv[lo:hi],
                o_cens[lo:hi],
                o_lloq[lo:hi],
                o_kind[lo:hi],
                o_ea[lo:hi],
                o_eb[lo:hi],
                d_time[d_off[i] : d_off[i + 1]],
                d_amt[d_off[i] : d_off[i + 1]],
                solver,
                pred[lo:hi],
            )
            new_m2lp = m2lp if mode == 0 else _eta_m2lp(proposal, omega_inv)
            delta = (new - m2ll[i]) + (0.0 if mode == 0 else new_m2lp - m2lp)
            if math.isfinite(new) and math.log(u[i, move]) < -0.5 * delta:
                current[:] = proposal
                kept[lo:hi] = pred[lo:hi]
                m2ll[i] = new
                m2lp = new_m2lp
                n_accepted += 1
        eta[i] = current
        accepted[i] = n_accepted


@numba.njit(cache=True, parallel=True, error_model="numpy")
def m2ll_rows(
    P,
    subject,
    o_off,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_off,
    solver,
    m2ll,
):
    """−2LL of subject ``subject[r]``'s data under parameters ``P[r]``, for every row r.

    For importance sampling and other many-draws-per-subject evaluations: rows may repeat a
    subject. +inf where the model cannot be solved.
    """
    for r in numba.prange(P.shape[0]):
        i = subject[r]
        lo, hi = o_off[i], o_off[i + 1]
        pred = np.empty((hi - lo, N_OUTPUTS))
        m2ll[r] = _subject_m2ll(
            P[r],
            o_time[lo:hi],
            o_out[lo:hi],
            o_dv[lo:hi],
            o_cens[lo:hi],
            o_lloq[lo:hi],
            o_kind[lo:hi],
            o_ea[lo:hi],
            o_eb[lo:hi],
            d_time[d_off[i] : d_off[i + 1]],
            d_amt[d_off[i] : d_off[i + 1]],
            solver,
            pred,
        )


@numba.njit(cache=True, error_model="numpy")
def m2ll_predicted(o_off, o_out, o_dv, o_cens, o_lloq, o_kind, o_ea, o_eb, pred, m2ll):
    """Per-subject −2LL from given predictions ``pred`` (n_obs, N_OUTPUTS), without solving."""
    for i in range(o_off.size - 1):
        total = 0.0
        for k in range(o_off[i], o_off[i + 1]):
            total += _point_m2ll(
                o_kind[k], o_dv[k], pred[k, o_out[k]], o_cens[k], o_lloq[k], o_ea[k], o_eb[k]
            )
        m2ll[i] = total
