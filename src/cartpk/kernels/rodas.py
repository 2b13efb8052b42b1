"""Rodas: a stiffly accurate Rosenbrock method of order 4(3) for stiff problems.

Hairer & Wanner, *Solving Ordinary Differential Equations II*, 2nd ed. (1996), IV.7, and
their code ``rodas.f`` (coefficient set METH = 1): 6 stages, gamma = 1/4, in the form

    (I / (h gamma) − J) k_i = f(t + c_i h, y + Σ_j a_ij k_j) + h g_i ∂f/∂t + Σ_j c_ij / h k_j,

``y_new = y + Σ_j a_6j k_j + k_6`` with error estimate ``k_6``. Row 5 of A is row 4 plus
k5: stage 6 is evaluated at the embedded solution. The Jacobian and ∂f/∂t are forward
differences (Hairer's increments), the LU factorisation uses partial pivoting, the step
size follows Gustafsson's predictive controller (safety 0.9, step ratio in [0.2, 6]) and
the continuous extension is Rodas's own, of order 3.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .workspace import (
    _D,
    _DY,
    _EPS,
    _ERRACC,
    _F0,
    _FX,
    _HACC,
    _HI,
    _K,
    _NACC,
    _T,
    _Y,
    _YN,
    _YS,
    error_norm,
    f,
)

ORDER = 4.0
GAMMA = 0.25
CT = np.array([0.0, 0.386, 0.21, 0.63, 1.0, 1.0])
G = np.array([0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0])
A = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.1544e01, 0.0, 0.0, 0.0, 0.0],
        [0.9466785280815826, 0.2557011698983284, 0.0, 0.0, 0.0],
        [0.3314825187068521e01, 0.2896124015972201e01, 0.9986419139977817, 0.0, 0.0],
        [
            0.1221224509226641e01,
            0.6019134481288629e01,
            0.1253708332932087e02,
            -0.6878860361058950,
            0.0,
        ],
        [
            0.1221224509226641e01,
            0.6019134481288629e01,
            0.1253708332932087e02,
            -0.6878860361058950,
            1.0,
        ],
    ]
)
CM = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [-0.56688e01, 0.0, 0.0, 0.0, 0.0],
        [-0.2430093356833875e01, -0.2063599157091915, 0.0, 0.0, 0.0],
        [-0.1073529058151375, -0.9594562251023355e01, -0.2047028614809616e02, 0.0, 0.0],
        [
            0.7496443313967647e01,
            -0.1024680431464352e02,
            -0.3399990352819905e02,
            0.1170890893206160e02,
            0.0,
        ],
        [
            0.8083246795921522e01,
            -0.7981132988064893e01,
            -0.3152159432874371e02,
            0.1631930543123136e02,
            -0.6058818238834054e01,
        ],
    ]
)
# Continuous extension: y(theta) = (1 - theta) y0 + theta (y1 + (1 - theta) (q1 + theta q2)),
# q1 = sum_j DENSE[0, j] k_j, q2 = sum_j DENSE[1, j] k_j (k1..k5).
DENSE = np.array(
    [
        [
            0.1012623508344586e02,
            -0.7487995877610167e01,
            -0.3480091861555747e02,
            -0.7992771707568823e01,
            0.1025137723295662e01,
        ],
        [
            -0.6762803392801253,
            0.6087714651680015e01,
            0.1643084320892478e02,
            0.2476722511418386e02,
            -0.6594389125716872e01,
        ],
    ]
)
SAFE, FAC_MIN, FAC_MAX = 0.9, 0.2, 6.0


@numba.njit(cache=True, error_model="numpy")
def lu_factor(E, piv):
    """In-place LU with partial pivoting (row swaps in ``piv``); False if singular."""
    n = E.shape[0]
    for k in range(n):
        m = k
        big = abs(E[k, k])
        for i in range(k + 1, n):
            if abs(E[i, k]) > big:
                big = abs(E[i, k])
                m = i
        piv[k] = m
        if big == 0.0 or not math.isfinite(big):
            return False
        if m != k:
            for j in range(n):
                E[k, j], E[m, j] = E[m, j], E[k, j]
        inv = 1.0 / E[k, k]
        for i in range(k + 1, n):
            E[i, k] *= inv
            factor = E[i, k]
            if factor != 0.0:
                for j in range(k + 1, n):
                    E[i, j] -= factor * E[k, j]
    return True


@numba.njit(cache=True, error_model="numpy")
def lu_solve(E, piv, b):
    """Solve E x = b in place with the factors of :func:`lu_factor`."""
    n = E.shape[0]
    for k in range(n):
        m = piv[k]
        if m != k:
            b[k], b[m] = b[m], b[k]
    for i in range(1, n):
        acc = b[i]
        for j in range(i):
            acc -= E[i, j] * b[j]
        b[i] = acc
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for j in range(i + 1, n):
            acc -= E[i, j] * b[j]
        b[i] = acc / E[i, i]


_SQRT_EPS = math.sqrt(_EPS)
_SQRT_1E5 = math.sqrt(1e-5)


@numba.njit(cache=True, error_model="numpy")
def jacobian(model, p, W, J, s, k_out, obuf):
    """J = df/dy by forward differences (Hairer's increments), W[_FX] = df/dt.

    The increment of y_j is sqrt(eps) max(sqrt(1e-5), |y_j|), Hairer's sqrt(eps max(1e-5,
    y_j^2)) without overflow: relative to y_j for large states (an increment of
    sqrt(eps |y_j|) is lost in rounding once |y_j| > 1/eps, and the column came out 0).
    """
    n = W.shape[1]
    t = s[_T]
    y = W[_Y]
    for j in range(n):
        saved = y[j]
        delta = _SQRT_EPS * max(_SQRT_1E5, abs(saved))
        y[j] = saved + delta
        f(model, p, t, s, y, W[_DY], k_out, obuf)
        y[j] = saved
        for i in range(n):
            J[i, j] = (W[_DY, i] - W[_F0, i]) / delta
    delta = math.sqrt(_EPS * max(1e-5, abs(t)))
    if t + delta > s[_HI]:
        delta = -delta
    f(model, p, t + delta, s, y, W[_DY], k_out, obuf)
    for i in range(n):
        W[_FX, i] = (W[_DY, i] - W[_F0, i]) / delta


@numba.njit(cache=True, error_model="numpy")
def attempt(model, p, W, J, E, piv, s, h, rtol, atol, k_out, obuf):
    """One trial Rodas step of size h; W[_YN] is the 4th-order result, k6 its error.

    Stages k1..k6 go to W[_K .. _K+5]. Returns the error norm, or inf when
    ``I / (h gamma) - J`` is singular.
    """
    n = W.shape[1]
    t = s[_T]
    fac = 1.0 / (h * GAMMA)
    for i in range(n):
        for j in range(n):
            E[i, j] = -J[i, j]
        E[i, i] += fac
    if not lu_factor(E, piv):
        return np.inf
    for stage in range(6):
        if stage == 0:
            for i in range(n):
                W[_DY, i] = W[_F0, i]
        else:
            for i in range(n):
                acc = W[_Y, i]
                for j in range(stage):
                    acc += A[stage, j] * W[_K + j, i]
                W[_YS, i] = acc
            f(model, p, t + CT[stage] * h, s, W[_YS], W[_DY], k_out, obuf)
        for i in range(n):
            acc = W[_DY, i] + h * G[stage] * W[_FX, i]
            for j in range(stage):
                acc += CM[stage, j] / h * W[_K + j, i]
            W[_K + stage, i] = acc
        lu_solve(E, piv, W[_K + stage])
    for i in range(n):
        W[_YN, i] = W[_YS, i] + W[_K + 5, i]
    return error_norm(W, _K + 5, 1.0, rtol, atol)


@numba.njit(cache=True, error_model="numpy")
def dense(W):
    """Rodas's 3rd-order continuous extension, stored in the common form (last row 0)."""
    for i in range(W.shape[1]):
        q1 = 0.0
        q2 = 0.0
        for j in range(5):
            q1 += DENSE[0, j] * W[_K + j, i]
            q2 += DENSE[1, j] * W[_K + j, i]
        W[_D, i] = W[_Y, i]
        W[_D + 1, i] = W[_YN, i] - W[_Y, i]
        W[_D + 2, i] = q1
        W[_D + 3, i] = q2
        W[_D + 4, i] = 0.0


@numba.njit(cache=True, error_model="numpy")
def new_step(s, h, err, accepted):
    """The next trial step: Hairer's controller with Gustafsson's predictive correction."""
    lo, hi = 1.0 / FAC_MAX, 1.0 / FAC_MIN
    fac = max(lo, min(hi, err**0.25 / SAFE))
    if accepted:
        if s[_NACC] > 0.0:
            gus = (s[_HACC] / h) * (err * err / s[_ERRACC]) ** 0.25 / SAFE
            fac = max(fac, max(lo, min(hi, gus)))
        s[_HACC] = h
        s[_ERRACC] = max(1e-2, err)
    return h / fac
