"""Cmax, Tmax and AUC of one model output over a window, on the continuous solution.

``exposure_batch`` integrates the state augmented with Q' = output ``k_out``; the window
start t0 is a piece boundary where Q is reset to 0, so the AUC over [t0, t1] is Q(t1),
integrated under the same error control as the states. Cmax/Tmax: the output is checked at
t0, at every step end and after every dose in the window (a kink maximum sits on a
breakpoint, which is a step end); inside a step whose output slope along the continuous
extension goes from positive to negative, the interior maximum is the root of that slope
found by Brent's method (slope by a 5-point central difference in theta, exact for
polynomials of degree <= 4). A step holding a minimum and then a maximum is not searched:
at the tolerances used, steps are short against the dynamics. Ties keep the first time.

A model's closed form (method ``closed``) gives the state at chosen times, not the
continuous extension this search and the AUC need: ``closed`` integrates with ``auto``
here, under the same tolerances.
"""

from __future__ import annotations

import numba
import numpy as np

from .codes import METHOD_AUTO, METHOD_CLOSED, METHOD_RODAS, STATUS_NOT_FINITE, STATUS_OK
from .contract import N_OUTPUTS, N_STATES, OUTPUTS, call
from .integrate import advance, apply_doses, begin_piece, event_times, initial_state, start
from .workspace import _EPS, _HOLD, _T, _TOLD, _Y, _YS, all_finite, allocate, dense

# 5-point central difference of the output along the dense output (exact for polynomials
# of degree <= 4), and the tolerance of the root of that derivative in theta.
_DIFF_STEP = 1e-3
_ROOT_TOL = 1e-13


@numba.njit(cache=True, error_model="numpy")
def _output_on_step(model, p, W, s, k_out, theta, obuf):
    """Output k_out on the last accepted step's continuous extension at ``theta``."""
    dense(W, theta, W[_YS])
    t = s[_TOLD] + min(max(theta, 0.0), 1.0) * s[_HOLD]
    call(model[OUTPUTS], t, 0.0, p, W[_YS], obuf)
    return obuf[k_out]


@numba.njit(cache=True, error_model="numpy")
def _output_slope(model, p, W, s, k_out, theta, obuf):
    """d/dtheta of the output along the continuous extension (5-point central difference)."""
    e = _DIFF_STEP
    f_m2 = _output_on_step(model, p, W, s, k_out, theta - 2.0 * e, obuf)
    f_m1 = _output_on_step(model, p, W, s, k_out, theta - e, obuf)
    f_p1 = _output_on_step(model, p, W, s, k_out, theta + e, obuf)
    f_p2 = _output_on_step(model, p, W, s, k_out, theta + 2.0 * e, obuf)
    return (f_m2 - 8.0 * f_m1 + 8.0 * f_p1 - f_p2) / (12.0 * e)


@numba.njit(cache=True, error_model="numpy")
def _slope_root(model, p, W, s, k_out, obuf, g0, g1):
    """Brent's root of the output slope on theta in [0, 1], given its signs at both ends."""
    a, b, fa, fb = 0.0, 1.0, g0, g1
    c, fc = a, fa
    d = b - a
    e = d
    for _ in range(200):
        if (fb > 0.0) == (fc > 0.0):
            c, fc = a, fa
            d = b - a
            e = d
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol = 2.0 * _EPS * abs(b) + 0.5 * _ROOT_TOL
        m = 0.5 * (c - b)
        if abs(m) <= tol or fb == 0.0:
            break
        if abs(e) >= tol and abs(fa) > abs(fb):
            r = fb / fa
            if a == c:
                num = 2.0 * m * r
                den = 1.0 - r
            else:
                q = fa / fc
                u = fb / fc
                num = r * (2.0 * m * q * (q - u) - (b - a) * (u - 1.0))
                den = (q - 1.0) * (u - 1.0) * (r - 1.0)
            if num > 0.0:
                den = -den
            else:
                num = -num
            if 2.0 * num < min(3.0 * m * den - abs(tol * den), abs(e * den)):
                e = d
                d = num / den
            else:
                d = m
                e = m
        else:
            d = m
            e = m
        a, fa = b, fb
        b += d if abs(d) > tol else (tol if m > 0.0 else -tol)
        fb = _output_slope(model, p, W, s, k_out, b, obuf)
    return min(max(b, 0.0), 1.0)


@numba.njit(cache=True, error_model="numpy")
def _step_maximum(model, p, W, s, k_out, obuf, best):
    """Update best = [cmax, tmax] with an interior maximum of the last accepted step."""
    g0 = _output_slope(model, p, W, s, k_out, 0.0, obuf)
    if not g0 > 0.0:
        return
    g1 = _output_slope(model, p, W, s, k_out, 1.0, obuf)
    if not g1 < 0.0:
        return
    theta = _slope_root(model, p, W, s, k_out, obuf, g0, g1)
    value = _output_on_step(model, p, W, s, k_out, theta, obuf)
    if value > best[0]:
        best[0] = value
        best[1] = s[_TOLD] + theta * s[_HOLD]


@numba.njit(cache=True, error_model="numpy")
def _point_maximum(model, p, y, t, k_out, obuf, best):
    """Update best = [cmax, tmax] with the output of state y at time t."""
    call(model[OUTPUTS], t, 0.0, p, y, obuf)
    if obuf[k_out] > best[0]:
        best[0] = obuf[k_out]
        best[1] = t


@numba.njit(cache=True, error_model="numpy")
def exposure_subject(
    model, dims, p, k_out, t0, t1, d_time, d_amt, method, rtol, atol, max_steps, best
):
    """Fill best = [cmax, tmax, auc] over [t0, t1] (0 <= t0 < t1); return (status, time).

    The state is augmented with the integral of output k_out, reset to 0 at t0, so the AUC
    is integrated with the ODE under the same error control. auto: a subject that fails all
    the same is solved again from the start with Rodas.
    """
    tried = METHOD_AUTO if method == METHOD_CLOSED else method
    while True:  # one call site: the solver is compiled (and inlined) once, not twice
        code, when = _exposure_once(model, dims, p, k_out, t0, t1, d_time, d_amt, tried, rtol,
                                    atol, max_steps, best)  # fmt: skip
        if code == STATUS_OK or tried != METHOD_AUTO:
            return code, when
        tried = METHOD_RODAS


@numba.njit(cache=True, error_model="numpy")
def _exposure_once(
    model, dims, p, k_out, t0, t1, d_time, d_amt, method, rtol, atol, max_steps, best
):
    n_states = dims[N_STATES]
    W, J, E, piv, s, obuf = allocate(n_states + 1, dims[N_OUTPUTS])
    start(method, s)
    y = W[_Y]
    initial_state(model, p, y)
    y[n_states] = 0.0
    apply_doses(model, p, d_time, d_amt, -np.inf, 0.0, y)
    if not all_finite(y):
        return STATUS_NOT_FINITE, 0.0
    best[0] = -np.inf
    best[1] = np.nan
    if t0 <= 0.0:
        _point_maximum(model, p, y, 0.0, k_out, obuf, best)
    a = 0.0
    for b in event_times(model, dims, p, d_time, t1, t0):
        status = begin_piece(model, p, W, s, a, b, rtol, atol, k_out, obuf)
        while status == STATUS_OK and s[_T] < b:
            status = advance(method, model, p, W, J, E, piv, s, rtol, atol, max_steps, k_out, obuf)
            if status == STATUS_OK and s[_TOLD] >= t0:
                _step_maximum(model, p, W, s, k_out, obuf, best)
                _point_maximum(model, p, y, s[_T], k_out, obuf, best)
        if status != STATUS_OK:
            return status, s[_T]
        given = apply_doses(model, p, d_time, d_amt, np.nextafter(b, -np.inf), b, y)
        if b == t0:
            y[n_states] = 0.0
        if b == t0 or (b > t0 and given > 0):
            _point_maximum(model, p, y, b, k_out, obuf, best)
        a = b
    best[2] = y[n_states]
    return STATUS_OK, np.nan


@numba.njit(cache=True, nogil=True, error_model="numpy")
def exposure_batch(
    model,
    dims,
    p,
    k_out,
    t0,
    t1,
    d_time,
    d_amt,
    d_off,
    method,
    rtol,
    atol,
    max_steps,
    cmax,
    tmax,
    auc,
    status,
    fail_time,
    first,
    last,
):
    """Cmax, Tmax (first occurrence) and AUC of output k_out over [t0, t1] days for subjects
    ``first <= i < last``.

    Step ends, breakpoints and post-dose values are checked, and interior maxima inside a
    step are located on the continuous extension. NaN for failed subjects.
    """
    for i in range(first, last):
        best = np.empty(3)
        d_lo, d_hi = d_off[i], d_off[i + 1]
        code, when = exposure_subject(
            model,
            dims,
            p[i],
            k_out,
            t0,
            t1,
            d_time[d_lo:d_hi],
            d_amt[d_lo:d_hi],
            method,
            rtol,
            atol,
            max_steps,
            best,
        )
        if code != STATUS_OK:
            best[:] = np.nan
        cmax[i] = best[0]
        tmax[i] = best[1]
        auc[i] = best[2]
        status[i] = code
        fail_time[i] = when
