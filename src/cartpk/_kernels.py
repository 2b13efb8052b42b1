"""ODE solver kernels: a template appended to every model's generated module.

This file is never imported on its own. ``model.py`` writes, for each model, a module that
defines the model's numba functions ``initial(p, y0)``, ``rhs(t, y, p, dydt)``,
``outputs(t, y, p, out)``, ``breakpoints(p, tb)``, ``dose_into(p, amt, y)`` and the
constants ``N_STATES``, ``N_OUTPUTS``, ``N_P``, ``N_BREAKS``, then appends this source
unchanged. The names that look undefined here (hence ``noqa: F821``) are those globals.
Calling the model through module globals, never by passing functions as arguments, is what
lets numba's ``cache=True`` reuse the compiled code in later processes.

Times are in days. Everything works on plain float64 arrays, one workspace per subject.

Methods
-------
* ``METHOD_DOPRI5``: Dormand–Prince 5(4), 7 stages with FSAL, local extrapolation (the
  5th-order solution is propagated), Hairer's error norm
  ``sqrt(mean((err_i / (atol + rtol * max(|y_i|, |ynew_i|)))**2))``, Hairer's stabilised
  (PI) step-size controller (safety 0.9, exponents 0.17 and 0.04, step ratio in
  [0.2, 10]), Hairer's initial-step heuristic, and Shampine's 4th-order continuous
  extension (``dopri5.f``'s ``contd5``) for output times inside a step.
* ``METHOD_RODAS``: Hairer and Wanner's Rodas, a stiffly accurate Rosenbrock method of order
  4(3) with 6 stages and gamma = 1/4 (``rodas.f``, coefficient set 1), finite-difference
  Jacobian and time derivative, an LU factorisation with partial pivoting written here,
  the same error norm, Gustafsson's predictive controller (safety 0.9, step ratio in
  [0.2, 6]) and Rodas's own 3rd-order continuous extension.

Pieces, breakpoints and doses
-----------------------------
A subject's time course is integrated piece by piece between consecutive event times:
the model's breakpoints (switch times such as ck_stein's ``tmax``), dose times and, for
exposure, the start of the window. Each piece restarts exactly at its start (new initial
step, FSAL reset, controller memory cleared) and its last step ends exactly at its end.

Inside a piece ``[a, b]`` the right-hand side is evaluated at the *branch time*
``min(max(t, nextafter(a, +inf)), nextafter(b, -inf))``: a time strictly inside the piece.
A stage that falls on ``b`` (e.g. the last stages of the step that ends at ``tmax``) so
sees the pre-switch branch and a stage at ``a`` the post-switch one, whether the model
writes ``t < tmax`` or ``t <= tmax``. The shift is one unit in the last place, so it is
invisible for right-hand sides that depend on t smoothly.

At a dose time the integrator stops, ``dose_into`` adds the bolus, and integration
restarts. Outputs are right-continuous: an output time equal to a dose time sees the state
just after the dose (as the output at t = 0 sees the infused dose). Output times before 0
get the outputs of ``initial(p)`` (before any dose at 0).

Exposure
--------
``exposure_batch`` integrates the state augmented with Q' = output ``k_out``; the window
start t0 is a piece boundary where Q is reset to 0, so the AUC over [t0, t1] is Q(t1),
integrated under the same error control as the states. Cmax/Tmax: the output is checked at
t0, at every step end and after every dose in the window (a kink maximum sits on a
breakpoint, which is a step end); inside a step whose output slope along the continuous
extension goes from positive to negative, the interior maximum is the root of that slope
found by Brent's method (slope by a 5-point central difference in theta, exact for
polynomials of degree <= 4). A step holding a minimum and then a maximum is not searched:
at the tolerances used, steps are short against the dynamics. Ties keep the first time.

Status codes per subject: 0 ok, 1 step budget (``max_steps`` attempted steps) exceeded,
2 step size underflow, 3 non-finite state (or non-finite right-hand side that step-size
reduction could not avoid). A failed subject gets NaN outputs and its ``fail_time``; the
other subjects are solved regardless. Kernels use ``error_model="numpy"`` (as the
generated model functions do): a division by zero gives inf/NaN, caught as status 3,
never an exception inside the parallel loop.
"""

# ruff: noqa: F821

import math

import numba
import numpy as np

METHOD_DOPRI5 = 0
METHOD_RODAS = 1

STATUS_OK = 0
STATUS_MAX_STEPS = 1
STATUS_STEP_UNDERFLOW = 2
STATUS_NOT_FINITE = 3

_EPS = 2.220446049250313e-16

# --- Dormand–Prince 5(4): tableau, error weights (b - bhat), Shampine's dense output ---
# Row k of _DP_A holds the coefficients of k1..k6 in the argument of stage k + 1; the last
# row is b, so the 7th stage argument is the new 5th-order solution (FSAL).
_DP_C = np.array([0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0])
_DP_A = np.array(
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
_DP_E = np.array(
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
_DP_D = np.array(
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
_DP_SAFE, _DP_BETA, _DP_EXPO = 0.9, 0.04, 0.2 - 0.04 * 0.75
_DP_FAC_MIN, _DP_FAC_MAX = 0.2, 10.0  # bounds of hnew / h

# --- Rodas (Hairer & Wanner, rodas.f, coefficient set METH = 1), in the form
# (I / (h gamma) - J) k_i = f(t + c_i h, y + sum_j a_ij k_j) + h g_i df/dt + sum_j c_ij / h k_j,
# y_new = y + sum_j a_6j k_j + k_6, error estimate k_6. Row 5 of _RO_A is row 4 plus k5:
# the method is stiffly accurate (stage 6 is evaluated at the embedded solution).
_RO_GAMMA = 0.25
_RO_CT = np.array([0.0, 0.386, 0.21, 0.63, 1.0, 1.0])
_RO_G = np.array([0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0])
_RO_A = np.array(
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
_RO_CM = np.array(
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
# q1 = sum_j _RO_DENSE[0, j] k_j, q2 = sum_j _RO_DENSE[1, j] k_j (k1..k5).
_RO_DENSE = np.array(
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
_RO_SAFE, _RO_FAC_MIN, _RO_FAC_MAX = 0.9, 0.2, 6.0

# --- workspace layout: rows of W (n_rows, n) and slots of the scalar array s ---
_Y, _YN, _YS, _DY, _F0 = 0, 1, 2, 3, 4  # state, new state, stage state, rhs, f(t, y)
_K = 5  # six stage rows: DOPRI5 k2..k7, Rodas k1..k6
_FX = 11  # Rodas: df/dt
_D = 12  # five rows of dense-output coefficients
_N_ROWS = 17
_T, _H, _TOLD, _HOLD, _TEND, _LO, _HI = 0, 1, 2, 3, 4, 5, 6
_FACOLD, _HACC, _ERRACC, _NACC, _REJECT, _NSTEP, _HMAX = 7, 8, 9, 10, 11, 12, 13
_N_SLOTS = 14

# Exposure: 5-point central difference of the output along the dense output (exact for
# polynomials of degree <= 4), and the tolerance of the root of that derivative in theta.
_DIFF_STEP = 1e-3
_ROOT_TOL = 1e-13


@numba.njit(cache=True, error_model="numpy")
def _f(p, t, s, y, dydt, k_out, obuf):
    """Right-hand side at the branch time; with ``k_out >= 0`` also d/dt of its integral."""
    tb = min(max(t, s[_LO]), s[_HI])
    rhs(tb, y, p, dydt)
    if k_out >= 0:
        outputs(tb, y, p, obuf)
        dydt[N_STATES] = obuf[k_out]


@numba.njit(cache=True, error_model="numpy")
def _all_finite(y):
    for i in range(y.size):
        if not math.isfinite(y[i]):
            return False
    return True


@numba.njit(cache=True, error_model="numpy")
def _error_norm(W, row, factor, rtol, atol):
    """Hairer's RMS norm of ``factor * W[row]`` scaled by the tolerances at both step ends."""
    n = W.shape[1]
    total = 0.0
    for i in range(n):
        sk = atol + rtol * max(abs(W[_Y, i]), abs(W[_YN, i]))
        q = factor * W[row, i] / sk
        total += q * q
    return math.sqrt(total / n)


@numba.njit(cache=True, error_model="numpy")
def _initial_step(p, W, s, order, rtol, atol, k_out, obuf):
    """Hairer's starting step: an Euler probe estimates the second derivative."""
    n = W.shape[1]
    t, hmax = s[_T], s[_HMAX]
    dnf = 0.0
    dny = 0.0
    for i in range(n):
        sk = atol + rtol * abs(W[_Y, i])
        dnf += (W[_F0, i] / sk) ** 2
        dny += (W[_Y, i] / sk) ** 2
    if dnf <= 1e-10 or dny <= 1e-10:
        h = 1e-6
    else:
        h = 0.01 * math.sqrt(dny / dnf)
    h = min(h, hmax)
    for i in range(n):
        W[_YS, i] = W[_Y, i] + h * W[_F0, i]
    _f(p, t + h, s, W[_YS], W[_DY], k_out, obuf)
    der2 = 0.0
    for i in range(n):
        sk = atol + rtol * abs(W[_Y, i])
        der2 += ((W[_DY, i] - W[_F0, i]) / sk) ** 2
    der12 = max(math.sqrt(der2 / n) / h, math.sqrt(dnf / n))
    if der12 <= 1e-15:
        h1 = max(1e-6, h * 1e-3)
    else:
        h1 = (0.01 / der12) ** (1.0 / order)
    return min(100.0 * h, h1, hmax)


@numba.njit(cache=True, error_model="numpy")
def _begin_piece(method, p, W, s, a, b, rtol, atol, k_out, obuf):
    """Start a piece [a, b] from W[_Y]: branch-time bounds, f(a, y), a fresh initial step.

    Returns STATUS_NOT_FINITE when f(a, y) is not finite, else STATUS_OK.
    """
    s[_T] = a
    s[_TEND] = b
    s[_HMAX] = b - a
    s[_LO] = np.nextafter(a, np.inf)
    s[_HI] = max(np.nextafter(b, -np.inf), s[_LO])
    s[_FACOLD] = 1e-4
    s[_HACC] = 0.0
    s[_ERRACC] = 1e-2
    s[_NACC] = 0.0
    s[_REJECT] = 0.0
    _f(p, a, s, W[_Y], W[_F0], k_out, obuf)
    if not _all_finite(W[_F0]):
        return STATUS_NOT_FINITE
    order = 5.0 if method == METHOD_DOPRI5 else 4.0
    s[_H] = _initial_step(p, W, s, order, rtol, atol, k_out, obuf)
    return STATUS_OK


# --- Dormand–Prince 5(4) ---------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _dopri_attempt(p, W, s, h, rtol, atol, k_out, obuf):
    """One trial step of size h from (s[_T], W[_Y]); W[_YN] is the 5th-order result.

    k1 is W[_F0] (FSAL); k2..k7 go to W[_K .. _K+5], k7 = f(t + h, ynew) being the next
    step's k1. Returns the error norm.
    """
    n = W.shape[1]
    t = s[_T]
    y, k1, ys = W[_Y], W[_F0], W[_YS]
    k2, k3, k4, k5, k6, k7 = W[_K], W[_K + 1], W[_K + 2], W[_K + 3], W[_K + 4], W[_K + 5]
    a = _DP_A
    for i in range(n):
        ys[i] = y[i] + h * a[1, 0] * k1[i]
    _f(p, t + _DP_C[1] * h, s, ys, k2, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (a[2, 0] * k1[i] + a[2, 1] * k2[i])
    _f(p, t + _DP_C[2] * h, s, ys, k3, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (a[3, 0] * k1[i] + a[3, 1] * k2[i] + a[3, 2] * k3[i])
    _f(p, t + _DP_C[3] * h, s, ys, k4, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (a[4, 0] * k1[i] + a[4, 1] * k2[i] + a[4, 2] * k3[i] + a[4, 3] * k4[i])
    _f(p, t + _DP_C[4] * h, s, ys, k5, k_out, obuf)
    for i in range(n):
        ys[i] = y[i] + h * (
            a[5, 0] * k1[i] + a[5, 1] * k2[i] + a[5, 2] * k3[i] + a[5, 3] * k4[i] + a[5, 4] * k5[i]
        )
    _f(p, t + h, s, ys, k6, k_out, obuf)
    yn = W[_YN]
    for i in range(n):
        yn[i] = y[i] + h * (
            a[6, 0] * k1[i] + a[6, 2] * k3[i] + a[6, 3] * k4[i] + a[6, 4] * k5[i] + a[6, 5] * k6[i]
        )
    _f(p, t + h, s, yn, k7, k_out, obuf)
    e = _DP_E
    err = W[_DY]
    for i in range(n):
        err[i] = (
            e[0] * k1[i] + e[2] * k3[i] + e[3] * k4[i] + e[4] * k5[i] + e[5] * k6[i] + e[6] * k7[i]
        )
    return _error_norm(W, _DY, h, rtol, atol)


@numba.njit(cache=True, error_model="numpy")
def _dopri_dense(W, h):
    """Shampine's 4th-order continuous extension of the accepted step (before y <- ynew)."""
    for i in range(W.shape[1]):
        ydiff = W[_YN, i] - W[_Y, i]
        bspl = h * W[_F0, i] - ydiff
        acc = _DP_D[0] * W[_F0, i]
        for j in range(1, 7):
            acc += _DP_D[j] * W[_K + j - 1, i]
        W[_D, i] = W[_Y, i]
        W[_D + 1, i] = ydiff
        W[_D + 2, i] = bspl
        W[_D + 3, i] = ydiff - h * W[_K + 5, i] - bspl
        W[_D + 4, i] = h * acc


# --- Rodas -------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _lu_factor(E, piv):
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
def _lu_solve(E, piv, b):
    """Solve E x = b in place with the factors of :func:`_lu_factor`."""
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


@numba.njit(cache=True, error_model="numpy")
def _rodas_jacobian(p, W, J, s, k_out, obuf):
    """J = df/dy by forward differences (Hairer's increments), W[_FX] = df/dt."""
    n = W.shape[1]
    t = s[_T]
    y = W[_Y]
    for j in range(n):
        saved = y[j]
        delta = math.sqrt(_EPS * max(1e-5, abs(saved)))
        y[j] = saved + delta
        _f(p, t, s, y, W[_DY], k_out, obuf)
        y[j] = saved
        for i in range(n):
            J[i, j] = (W[_DY, i] - W[_F0, i]) / delta
    delta = math.sqrt(_EPS * max(1e-5, abs(t)))
    if t + delta > s[_HI]:
        delta = -delta
    _f(p, t + delta, s, y, W[_DY], k_out, obuf)
    for i in range(n):
        W[_FX, i] = (W[_DY, i] - W[_F0, i]) / delta


@numba.njit(cache=True, error_model="numpy")
def _rodas_attempt(p, W, J, E, piv, s, h, rtol, atol, k_out, obuf):
    """One trial Rodas step of size h; W[_YN] is the 4th-order result, k6 its error.

    Stages k1..k6 go to W[_K .. _K+5]. Returns the error norm, or inf when
    ``I / (h gamma) - J`` is singular.
    """
    n = W.shape[1]
    t = s[_T]
    fac = 1.0 / (h * _RO_GAMMA)
    for i in range(n):
        for j in range(n):
            E[i, j] = -J[i, j]
        E[i, i] += fac
    if not _lu_factor(E, piv):
        return np.inf
    for stage in range(6):
        if stage == 0:
            for i in range(n):
                W[_DY, i] = W[_F0, i]
        else:
            for i in range(n):
                acc = W[_Y, i]
                for j in range(stage):
                    acc += _RO_A[stage, j] * W[_K + j, i]
                W[_YS, i] = acc
            _f(p, t + _RO_CT[stage] * h, s, W[_YS], W[_DY], k_out, obuf)
        for i in range(n):
            acc = W[_DY, i] + h * _RO_G[stage] * W[_FX, i]
            for j in range(stage):
                acc += _RO_CM[stage, j] / h * W[_K + j, i]
            W[_K + stage, i] = acc
        _lu_solve(E, piv, W[_K + stage])
    for i in range(n):
        W[_YN, i] = W[_YS, i] + W[_K + 5, i]
    return _error_norm(W, _K + 5, 1.0, rtol, atol)


@numba.njit(cache=True, error_model="numpy")
def _rodas_dense(W):
    """Rodas's 3rd-order continuous extension, stored in the DOPRI5 form (last row 0)."""
    for i in range(W.shape[1]):
        q1 = 0.0
        q2 = 0.0
        for j in range(5):
            q1 += _RO_DENSE[0, j] * W[_K + j, i]
            q2 += _RO_DENSE[1, j] * W[_K + j, i]
        W[_D, i] = W[_Y, i]
        W[_D + 1, i] = W[_YN, i] - W[_Y, i]
        W[_D + 2, i] = q1
        W[_D + 3, i] = q2
        W[_D + 4, i] = 0.0


@numba.njit(cache=True, error_model="numpy")
def _dense(W, theta, out):
    """The last accepted step's continuous extension at ``theta`` in [0, 1]."""
    th1 = 1.0 - theta
    for i in range(W.shape[1]):
        inner = W[_D + 2, i] + theta * (W[_D + 3, i] + th1 * W[_D + 4, i])
        out[i] = W[_D, i] + theta * (W[_D + 1, i] + th1 * inner)


# --- the adaptive step ---------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _new_step(method, s, h, err, accepted):
    """The next trial step after an accepted or rejected step of size h with error err.

    DOPRI5: Hairer's stabilised (PI) controller. Rodas: Hairer's controller with
    Gustafsson's predictive correction on accepted steps.
    """
    if method == METHOD_DOPRI5:
        fac11 = err**_DP_EXPO
        if not accepted:
            return h / min(1.0 / _DP_FAC_MIN, fac11 / _DP_SAFE)
        fac = fac11 / s[_FACOLD] ** _DP_BETA
        fac = max(1.0 / _DP_FAC_MAX, min(1.0 / _DP_FAC_MIN, fac / _DP_SAFE))
        s[_FACOLD] = max(err, 1e-4)
        return h / fac
    lo, hi = 1.0 / _RO_FAC_MAX, 1.0 / _RO_FAC_MIN
    fac = max(lo, min(hi, err**0.25 / _RO_SAFE))
    if accepted:
        if s[_NACC] > 0.0:
            gus = (s[_HACC] / h) * (err * err / s[_ERRACC]) ** 0.25 / _RO_SAFE
            fac = max(fac, max(lo, min(hi, gus)))
        s[_HACC] = h
        s[_ERRACC] = max(1e-2, err)
    return h / fac


@numba.njit(cache=True, error_model="numpy")
def _accept(method, W, s, t, h, hnew, last):
    """Store the dense output of [t, t + h], move to the new state, set the next step."""
    if method == METHOD_DOPRI5:
        _dopri_dense(W, h)
    else:
        _rodas_dense(W)
    n = W.shape[1]
    for i in range(n):
        W[_Y, i] = W[_YN, i]
    if method == METHOD_DOPRI5:
        for i in range(n):
            W[_F0, i] = W[_K + 5, i]
    s[_TOLD] = t
    s[_HOLD] = h
    s[_T] = s[_TEND] if last else t + h
    if s[_REJECT] != 0.0:
        hnew = min(hnew, h)
    s[_H] = min(hnew, s[_HMAX])
    s[_REJECT] = 0.0
    s[_NACC] += 1.0


@numba.njit(cache=True, error_model="numpy")
def _advance(method, p, W, J, E, piv, s, rtol, atol, max_steps, k_out, obuf):
    """Take one accepted step from s[_T] towards the piece end s[_TEND]; return a status.

    On success W[_Y] is the new state at s[_T] and W[_D..] the continuous extension over
    [s[_TOLD], s[_TOLD] + s[_HOLD]].
    """
    if method == METHOD_RODAS:
        _f(p, s[_T], s, W[_Y], W[_F0], k_out, obuf)
        _rodas_jacobian(p, W, J, s, k_out, obuf)
    t, b = s[_T], s[_TEND]
    hmin = max(10.0 * _EPS * abs(t), 1e-300)  # Hairer: 0.1 |h| <= |t| * unit roundoff
    not_finite = False
    while True:
        if s[_NSTEP] >= max_steps:
            return STATUS_MAX_STEPS
        h = s[_H]
        last = t + 1.01 * h >= b or b - t <= hmin
        if last:
            h = b - t
        elif not h >= hmin:
            return STATUS_NOT_FINITE if not_finite else STATUS_STEP_UNDERFLOW
        s[_NSTEP] += 1.0
        if method == METHOD_DOPRI5:
            err = _dopri_attempt(p, W, s, h, rtol, atol, k_out, obuf)
        else:
            err = _rodas_attempt(p, W, J, E, piv, s, h, rtol, atol, k_out, obuf)
        not_finite = not math.isfinite(err)
        if not_finite:
            s[_H] = 0.2 * h
            s[_REJECT] = 1.0
            continue
        accepted = err <= 1.0
        if accepted and not _all_finite(W[_YN]):
            return STATUS_NOT_FINITE
        hnew = _new_step(method, s, h, err, accepted)
        if accepted:
            _accept(method, W, s, t, h, hnew, last)
            return STATUS_OK
        s[_H] = hnew
        s[_REJECT] = 1.0


# --- events and doses ------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _event_times(p, d_time, t_end, t_extra):
    """Sorted distinct piece ends: breakpoints, doses and t_extra in (0, t_end), then t_end."""
    tb = np.empty(N_BREAKS)
    breakpoints(p, tb)
    cand = np.empty(N_BREAKS + d_time.size + 2)
    m = 0
    for x in tb:
        if 0.0 < x < t_end:
            cand[m] = x
            m += 1
    for x in d_time:
        if 0.0 < x < t_end:
            cand[m] = x
            m += 1
    if 0.0 < t_extra < t_end:
        cand[m] = t_extra
        m += 1
    for i in range(1, m):
        x = cand[i]
        j = i - 1
        while j >= 0 and cand[j] > x:
            cand[j + 1] = cand[j]
            j -= 1
        cand[j + 1] = x
    k = 0
    for i in range(m):
        if k == 0 or cand[i] > cand[k - 1]:
            cand[k] = cand[i]
            k += 1
    cand[k] = t_end
    return cand[: k + 1]


@numba.njit(cache=True, error_model="numpy")
def _apply_doses(p, d_time, d_amt, lo, hi, y):
    """Add every dose with lo < time <= hi to y; return how many were given."""
    given = 0
    for k in range(d_time.size):
        if lo < d_time[k] <= hi:
            dose_into(p, d_amt[k], y)
            given += 1
    return given


@numba.njit(cache=True, error_model="numpy")
def _workspace(n):
    W = np.zeros((_N_ROWS, n))
    J = np.zeros((n, n))
    E = np.zeros((n, n))
    piv = np.zeros(n, dtype=np.int64)
    s = np.zeros(_N_SLOTS)
    obuf = np.zeros(max(N_OUTPUTS, 1))
    return W, J, E, piv, s, obuf


# --- solve: outputs at given times ---------------------------------------------------------


@numba.njit(cache=True, error_model="numpy")
def _emit_dense(p, W, s, times, out, j):
    """Outputs for times in (t_old, t_new] that lie before the piece end; next index."""
    t_new, t_old, h = s[_T], s[_TOLD], s[_HOLD]
    while j < times.size and times[j] <= t_new and times[j] < s[_TEND]:
        if times[j] == t_new:
            outputs(t_new, W[_Y], p, out[j])
        else:
            _dense(W, (times[j] - t_old) / h, W[_YS])
            outputs(times[j], W[_YS], p, out[j])
        j += 1
    return j


@numba.njit(cache=True, error_model="numpy")
def _emit_at(p, y, t, times, out, j):
    """Outputs of state y for every time equal to t (or, for t = 0, up to 0); next index."""
    while j < times.size and times[j] <= t:
        outputs(times[j], y, p, out[j])
        j += 1
    return j


@numba.njit(cache=True, error_model="numpy")
def _solve_subject(p, times, out, d_time, d_amt, method, rtol, atol, max_steps):
    """One subject's outputs at ``times`` (sorted, days) into ``out``; (status, fail time)."""
    W, J, E, piv, s, obuf = _workspace(N_STATES)
    y = W[_Y]
    initial(p, y)
    j = 0
    while j < times.size and times[j] < 0.0:
        outputs(times[j], y, p, out[j])
        j += 1
    _apply_doses(p, d_time, d_amt, -np.inf, 0.0, y)
    if not _all_finite(y):
        return STATUS_NOT_FINITE, 0.0
    j = _emit_at(p, y, 0.0, times, out, j)
    if j == times.size:
        return STATUS_OK, np.nan
    a = 0.0
    for b in _event_times(p, d_time, times[-1], -1.0):
        status = _begin_piece(method, p, W, s, a, b, rtol, atol, -1, obuf)
        while status == STATUS_OK and s[_T] < b:
            status = _advance(method, p, W, J, E, piv, s, rtol, atol, max_steps, -1, obuf)
            if status == STATUS_OK:
                j = _emit_dense(p, W, s, times, out, j)
        if status != STATUS_OK:
            return status, s[_T]
        _apply_doses(p, d_time, d_amt, np.nextafter(b, -np.inf), b, y)
        j = _emit_at(p, y, b, times, out, j)
        a = b
    return STATUS_OK, np.nan


@numba.njit(cache=True, parallel=True, error_model="numpy")
def solve_batch(
    p, t_flat, t_off, d_time, d_amt, d_off, method, rtol, atol, max_steps, out, status, fail_time
):
    """Outputs of every subject at its times: out (n_obs, N_OUTPUTS), status, fail_time.

    Subject i: parameters ``p[i]``, sorted times ``t_flat[t_off[i]:t_off[i+1]]`` (days),
    bolus doses ``d_time/d_amt[d_off[i]:d_off[i+1]]``. A failed subject's rows are NaN.
    """
    for i in numba.prange(p.shape[0]):
        lo, hi = t_off[i], t_off[i + 1]
        d_lo, d_hi = d_off[i], d_off[i + 1]
        block = out[lo:hi]
        code, when = _solve_subject(
            p[i],
            t_flat[lo:hi],
            block,
            d_time[d_lo:d_hi],
            d_amt[d_lo:d_hi],
            method,
            rtol,
            atol,
            max_steps,
        )
        if code != STATUS_OK:
            block[:, :] = np.nan
        status[i] = code
        fail_time[i] = when


# --- exposure: Cmax, Tmax and AUC of one output over a window --------------------------------


@numba.njit(cache=True, error_model="numpy")
def _output_on_step(p, W, s, k_out, theta, obuf):
    """Output k_out on the last accepted step's continuous extension at ``theta``."""
    _dense(W, theta, W[_YS])
    t = s[_TOLD] + min(max(theta, 0.0), 1.0) * s[_HOLD]
    outputs(t, W[_YS], p, obuf)
    return obuf[k_out]


@numba.njit(cache=True, error_model="numpy")
def _output_slope(p, W, s, k_out, theta, obuf):
    """d/dtheta of the output along the continuous extension (5-point central difference)."""
    e = _DIFF_STEP
    f_m2 = _output_on_step(p, W, s, k_out, theta - 2.0 * e, obuf)
    f_m1 = _output_on_step(p, W, s, k_out, theta - e, obuf)
    f_p1 = _output_on_step(p, W, s, k_out, theta + e, obuf)
    f_p2 = _output_on_step(p, W, s, k_out, theta + 2.0 * e, obuf)
    return (f_m2 - 8.0 * f_m1 + 8.0 * f_p1 - f_p2) / (12.0 * e)


@numba.njit(cache=True, error_model="numpy")
def _slope_root(p, W, s, k_out, obuf, g0, g1):
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
        fb = _output_slope(p, W, s, k_out, b, obuf)
    return min(max(b, 0.0), 1.0)


@numba.njit(cache=True, error_model="numpy")
def _step_maximum(p, W, s, k_out, obuf, best):
    """Update best = [cmax, tmax] with an interior maximum of the last accepted step."""
    g0 = _output_slope(p, W, s, k_out, 0.0, obuf)
    if not g0 > 0.0:
        return
    g1 = _output_slope(p, W, s, k_out, 1.0, obuf)
    if not g1 < 0.0:
        return
    theta = _slope_root(p, W, s, k_out, obuf, g0, g1)
    value = _output_on_step(p, W, s, k_out, theta, obuf)
    if value > best[0]:
        best[0] = value
        best[1] = s[_TOLD] + theta * s[_HOLD]


@numba.njit(cache=True, error_model="numpy")
def _point_maximum(p, y, t, k_out, obuf, best):
    """Update best = [cmax, tmax] with the output of state y at time t."""
    outputs(t, y, p, obuf)
    if obuf[k_out] > best[0]:
        best[0] = obuf[k_out]
        best[1] = t


@numba.njit(cache=True, error_model="numpy")
def _exposure_subject(p, k_out, t0, t1, d_time, d_amt, method, rtol, atol, max_steps, best):
    """Fill best = [cmax, tmax, auc] over [t0, t1] (0 <= t0 < t1); return (status, time).

    The state is augmented with the integral of output k_out, reset to 0 at t0, so the AUC
    is integrated with the ODE under the same error control.
    """
    n = N_STATES + 1
    W, J, E, piv, s, obuf = _workspace(n)
    y = W[_Y]
    initial(p, y)
    y[N_STATES] = 0.0
    _apply_doses(p, d_time, d_amt, -np.inf, 0.0, y)
    if not _all_finite(y):
        return STATUS_NOT_FINITE, 0.0
    best[0] = -np.inf
    best[1] = np.nan
    if t0 <= 0.0:
        _point_maximum(p, y, 0.0, k_out, obuf, best)
    a = 0.0
    for b in _event_times(p, d_time, t1, t0):
        status = _begin_piece(method, p, W, s, a, b, rtol, atol, k_out, obuf)
        while status == STATUS_OK and s[_T] < b:
            status = _advance(method, p, W, J, E, piv, s, rtol, atol, max_steps, k_out, obuf)
            if status == STATUS_OK and s[_TOLD] >= t0:
                _step_maximum(p, W, s, k_out, obuf, best)
                _point_maximum(p, y, s[_T], k_out, obuf, best)
        if status != STATUS_OK:
            return status, s[_T]
        given = _apply_doses(p, d_time, d_amt, np.nextafter(b, -np.inf), b, y)
        if b == t0:
            y[N_STATES] = 0.0
        if b == t0 or (b > t0 and given > 0):
            _point_maximum(p, y, b, k_out, obuf, best)
        a = b
    best[2] = y[N_STATES]
    return STATUS_OK, np.nan


@numba.njit(cache=True, parallel=True, error_model="numpy")
def exposure_batch(
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
):
    """Cmax, Tmax (first occurrence) and AUC of output k_out over [t0, t1] days per subject.

    Step ends, breakpoints and post-dose values are checked, and interior maxima inside a
    step are located on the continuous extension. NaN for failed subjects.
    """
    for i in numba.prange(p.shape[0]):
        best = np.empty(3)
        d_lo, d_hi = d_off[i], d_off[i + 1]
        code, when = _exposure_subject(
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
