"""Dormand–Prince 5(4): the explicit method for non-stiff problems.

Dormand & Prince, J Comput Appl Math 6:19–26 (1980); the implementation follows Hairer,
Nørsett & Wanner, *Solving Ordinary Differential Equations I*, 2nd ed. (1993), II.4–II.6,
and their code ``dopri5.f``: 7 stages with FSAL, local extrapolation (the 5th-order
solution is propagated), the stabilised (PI) step-size controller (safety 0.9, exponents
0.17 and 0.04, step ratio in [0.2, 10]), Shampine's 4th-order continuous extension
(``contd5``) and the stiffness test ``h·|k7 − k6| / |y1 − y6| > 3.25`` (HNW II.6 and
IV.2, ``dopri5.f``'s ``HLAMB``), taken here component by component (:func:`stiffness`).
"""

from __future__ import annotations

import numba
import numpy as np

from .workspace import _D, _DY, _F0, _FACOLD, _K, _T, _Y, _YN, _YS, error_norm, f

ORDER = 5.0

# Row k of A holds the coefficients of k1..k6 in the argument of stage k + 1; the last
# row is b, so the 7th stage argument is the new 5th-order solution (FSAL).
C = np.array([0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0])
A = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
        [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
        [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0, 0.0, 0.0],
        [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0, 0.0],
        [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
    ]
)
# Error weights b − bhat.
E = np.array(
    [
        71.0 / 57600.0,
        0.0,
        -71.0 / 16695.0,
        71.0 / 1920.0,
        -17253.0 / 339200.0,
        22.0 / 525.0,
        -1.0 / 40.0,
    ]
)
# Shampine's dense-output weights.
DENSE = np.array(
    [
        -12715105075.0 / 11282082432.0,
        0.0,
        87487479700.0 / 32700410799.0,
        -10690763975.0 / 1880347072.0,
        701980252875.0 / 199316789632.0,
        -1453857185.0 / 822651844.0,
        69997945.0 / 29380423.0,
    ]
)
SAFE, BETA, EXPO = 0.9, 0.04, 0.2 - 0.04 * 0.75
FAC_MIN, FAC_MAX = 0.2, 10.0  # bounds of hnew / h
#: h·λ above which a step counts as stiff (the stability boundary is near 3.3).
STIFF_HLAMBDA = 3.25


@numba.njit(cache=True, error_model="numpy")
def attempt(model, p, W, s, h, rtol, atol, k_out, obuf):
    """One trial step of size h from (s[_T], W[_Y]); W[_YN] is the 5th-order result.

    k1 is W[_F0] (FSAL); k2..k7 go to W[_K .. _K+5], k7 = f(t + h, ynew) being the next
    step's k1; W[_YS] keeps the 6th stage's argument. Returns the error norm.
    """
    n = W.shape[1]
    t = s[_T]
    y, k1, ys = W[_Y], W[_F0], W[_YS]
    k2, k3, k4, k5, k6, k7 = W[_K], W[_K + 1], W[_K + 2], W[_K + 3], W[_K + 4], W[_K + 5]
    a = A
    for i in range(n):
        ys[i] = y[i] + h * a[1, 0] * k1[i]
    f(model, p, t + C[1] * h, s, ys, k2, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (a[2, 0] * k1[i] + a[2, 1] * k2[i])
    f(model, p, t + C[2] * h, s, ys, k3, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (a[3, 0] * k1[i] + a[3, 1] * k2[i] + a[3, 2] * k3[i])
    f(model, p, t + C[3] * h, s, ys, k4, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (a[4, 0] * k1[i] + a[4, 1] * k2[i] + a[4, 2] * k3[i] + a[4, 3] * k4[i])
    f(model, p, t + C[4] * h, s, ys, k5, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (
            a[5, 0] * k1[i] + a[5, 1] * k2[i] + a[5, 2] * k3[i] + a[5, 3] * k4[i] + a[5, 4] * k5[i]
        )
    f(model, p, t + h, s, ys, k6, k_out, obuf)
    yn = W[_YN]
    for i in range(n):
        yn[i] = y[i] + h * (
            a[6, 0] * k1[i] + a[6, 2] * k3[i] + a[6, 3] * k4[i] + a[6, 4] * k5[i] + a[6, 5] * k6[i]
        )
    f(model, p, t + h, s, yn, k7, k_out, obuf)
    e = E
    err = W[_DY]
    for i in range(n):
        err[i] = (
            e[0] * k1[i] + e[2] * k3[i] + e[3] * k4[i] + e[4] * k5[i] + e[5] * k6[i] + e[6] * k7[i]
        )
    return error_norm(W, _DY, h, rtol, atol)


@numba.njit(cache=True, error_model="numpy")
def stiffness(W, h):
    """h·λ, λ the largest per-component ratio |k7_i − k6_i| / |ynew_i − y6_i| of the last
    attempt (0 if undefined).

    Hairer's test takes the ratio of Euclidean norms; a component per component maximum
    also finds stiffness in a state many orders of magnitude below the others (a killed
    clone beside 1e8 CAR-T copies), which the norms leave to the large components.
    """
    best = 0.0
    for i in range(W.shape[1]):
        den = abs(W[_YN, i] - W[_YS, i])
        if den > 0.0:
            best = max(best, abs(W[_K + 5, i] - W[_K + 4, i]) / den)
    return h * best


@numba.njit(cache=True, error_model="numpy")
def dense(W, h):
    """Shampine's 4th-order continuous extension of the accepted step (before y <- ynew)."""
    for i in range(W.shape[1]):
        ydiff = W[_YN, i] - W[_Y, i]
        bspl = h * W[_F0, i] - ydiff
        acc = DENSE[0] * W[_F0, i]
        for j in range(1, 7):
            acc += DENSE[j] * W[_K + j - 1, i]
        W[_D, i] = W[_Y, i]
        W[_D + 1, i] = ydiff
        W[_D + 2, i] = bspl
        W[_D + 3, i] = ydiff - h * W[_K + 5, i] - bspl
        W[_D + 4, i] = h * acc


@numba.njit(cache=True, error_model="numpy")
def new_step(s, h, err, accepted):
    """The next trial step after a step of size h with error err (Hairer's PI controller)."""
    fac11 = err**EXPO
    if not accepted:
        return h / min(1.0 / FAC_MIN, fac11 / SAFE)
    fac = fac11 / s[_FACOLD] ** BETA
    fac = max(1.0 / FAC_MAX, min(1.0 / FAC_MIN, fac / SAFE))
    s[_FACOLD] = max(err, 1e-4)
    return h / fac
