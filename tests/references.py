"""Reference solutions shared by the tests and the benches, written without cartpk.

Each is worked out by hand from a model file's header and equations (never from the
generated model code), so that cartpk can be checked against it. Units are the model
files': time in days, CAR-T levels in transgene copies/µg, rates per day.

The tests import this module by name (pytest puts tests/ on sys.path); the benches add
tests/ to sys.path themselves.
"""

from __future__ import annotations

import numpy as np
from scipy import integrate, optimize, stats
from scipy.integrate import solve_ivp

STEIN_PARAMS = ("C0", "rho", "tmax", "Fb", "alpha", "beta")


def stein_level(t, C0, rho, tmax, Fb, alpha, beta):
    """ck_stein's CAR-T level (copies/µg) at times ``t`` (days), by its closed form.

        C(t) = C0 e^(rho min(t, tmax)) [(1 - Fb) e^(-alpha (t - tmax)+) + Fb e^(-beta (t - tmax)+)]

    Source: Stein AM et al., CPT Pharmacometrics Syst Pharmacol 2019;8(5):285-295, as in the
    header of src/cartpk/models/ck_stein.toml (and DESIGN.md). C0 (copies/µg) is the level
    at t = 0, so at a dose other than the reference 1e6 cells/kg pass
    C0 (DOSE / 1e6)^dose_exp. rho, alpha, beta in 1/day, tmax in days, Fb a fraction.
    Every argument may be a numpy array (or scalar); they broadcast together.
    """
    after = np.maximum(t - tmax, 0.0)
    peak = C0 * np.exp(rho * np.minimum(t, tmax))
    return peak * ((1 - Fb) * np.exp(-alpha * after) + Fb * np.exp(-beta * after))


def stein_auc(a, b, C0, rho, tmax, Fb, alpha, beta):
    """Integral of :func:`stein_level` over [a, b] (copies/µg × day), by hand, piece by piece.

    Before tmax: C0 e^(rho t) integrates to C0 (e^(rho b') - e^(rho a')) / rho on
    [a', b'] = [a, b] ∩ [0, tmax]. After tmax, with the peak P = C0 e^(rho tmax) and
    s = t - tmax: P (1 - Fb) (e^(-alpha s_a) - e^(-alpha s_b)) / alpha + P Fb (e^(-beta s_a)
    - e^(-beta s_b)) / beta on [s_a, s_b] = [a, b] ∩ [tmax, inf) shifted by tmax.
    A piece of zero length adds exactly 0. 0 <= a <= b; every argument may be a numpy
    array (or scalar); they broadcast together.
    """
    lo, hi = np.minimum(a, tmax), np.minimum(b, tmax)
    rise = np.where(hi > lo, C0 * (np.exp(rho * hi) - np.exp(rho * lo)) / rho, 0.0)
    lo, hi = np.maximum(np.subtract(a, tmax), 0.0), np.maximum(np.subtract(b, tmax), 0.0)
    peak = C0 * np.exp(rho * tmax)
    effector = (1 - Fb) * (np.exp(-alpha * lo) - np.exp(-alpha * hi)) / alpha
    memory = Fb * (np.exp(-beta * lo) - np.exp(-beta * hi)) / beta
    return rise + np.where(hi > lo, peak * (effector + memory), 0.0)


def stein_exposure(end, C0, rho, tmax, Fb, alpha, beta):
    """Cmax (copies/µg), Tmax (day) and AUC(0, end) (copies/µg × day) of :func:`stein_level`.

    The level rises until tmax and falls after it, so the peak is at min(tmax, end), where
    it is C0 e^(rho min(tmax, end)). The arguments broadcast as in :func:`stein_auc`.
    """
    peak_time = np.minimum(tmax, end)
    return (
        C0 * np.exp(rho * peak_time),
        peak_time,
        stein_auc(0.0, end, C0, rho, tmax, Fb, alpha, beta),
    )


def vegf_rhs(before_tmax: bool, par: dict):
    """ck_vegf's right-hand side on one side of tmax, written out from its model file.

    States E, M (CAR-T effector and memory, copies/µg), P (tumour burden relative to
    baseline) and B (VEGF, ng/L); ``par`` maps the model's parameter names to values.
    """

    def rhs(t, y):
        E, M, P, B = y
        if before_tmax:
            dE, dM = par["rho"] * E, 0.0
        else:
            dE = -par["alpha"] * E
            dM = par["Fb"] * (par["alpha"] - par["beta"]) * E - par["beta"] * M
        dP = par["kgrow"] * P - par["kkill"] * (E + M) * P
        dB = par["kout"] * (par["Bnorm"] + (par["B0"] - par["Bnorm"]) * P - B)
        return [dE, dM, dP, dB]

    return rhs


def vegf_radau(par: dict, times: np.ndarray, dose: float = 1e6) -> np.ndarray:
    """ck_vegf's (CART, VEGF) at sorted ``times`` (days) by scipy Radau at rtol 1e-10.

    Integrated in two pieces split at tmax, where the right-hand side switches; E(0) is
    C0 (dose / 1e6)^dose_exp (dose in cells/kg), M(0) = 0, P(0) = 1, B(0) = B0.
    Returns an array of shape (len(times), 2): CART = E + M (copies/µg), VEGF = B (ng/L).
    """
    y0 = [par["C0"] * (dose / 1e6) ** par["dose_exp"], 0.0, 1.0, par["B0"]]
    states = radau_split(lambda before: vegf_rhs(before, par), y0, par["tmax"], times, 1e-20)
    return np.column_stack([states[0] + states[1], states[3]])


def radau_split(rhs, y0, tmax: float, times, atol: float) -> np.ndarray:
    """States (n_states, len(times)) at sorted ``times`` by scipy Radau at rtol 1e-10,
    integrated in two pieces split at ``tmax``, where ``rhs(before_tmax)`` switches."""
    t = np.asarray(times, dtype=float)
    tight = {"method": "Radau", "rtol": 1e-10, "atol": atol, "dense_output": True}
    first = solve_ivp(rhs(True), (0, tmax), y0, **tight)
    second = solve_ivp(rhs(False), (tmax, t[-1]), first.y[:, -1], **tight)
    assert first.success and second.success
    return np.where(t < tmax, first.sol(np.minimum(t, tmax)), second.sol(t))


def marginal_m2ll_1d(m2ll, omega: float, half_width: float) -> float:
    """One subject's marginal −2LL over one random effect, −2 log ∫ exp(−m2ll(e)/2)
    N(e; 0, omega²) de, by scipy quad (relative tolerance 1e-10) over the mode ± ``half_width``
    (the mode found by scipy's scalar minimiser on m2ll(e) + (e/omega)²); ``m2ll`` is the
    data −2LL at the random effect e."""
    mode = optimize.minimize_scalar(lambda e: m2ll(e) + (e / omega) ** 2).x
    peak = m2ll(mode)

    def integrand(e: float) -> float:
        return np.exp(-0.5 * (m2ll(e) - peak)) * stats.norm.pdf(e, 0.0, omega)

    lo, hi = mode - half_width, mode + half_width
    value, _ = integrate.quad(integrand, lo, hi, points=[mode], epsabs=0, epsrel=1e-10)
    return float(-2 * np.log(value) + peak)


def central_hessian(fun, x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Central finite-difference Hessian of the scalar function ``fun`` at ``x``."""
    n = x.size
    h = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            e_i, e_j = np.eye(n)[i] * step, np.eye(n)[j] * step
            h[i, j] = h[j, i] = (
                fun(x + e_i + e_j) - fun(x + e_i - e_j) - fun(x - e_i + e_j) + fun(x - e_i - e_j)
            ) / (4 * step * step)
    return h


NK_PARAMS = ("f_blood", "V_blood", "kel", "kexp", "texp", "krej", "t_rej", "w_rej", "rej_on")


def nk_exponent(t, kel, kexp, texp, krej, t_rej, w_rej, rej_on):
    """G(t) of ck_nk's header: the log of CAR-NK survival from 0 to ``t`` (days),

        G(t) = kexp min(t, texp) - kel t
               - rej_on krej w_rej [softplus((t - t_rej) / w_rej) - softplus(-t_rej / w_rej)],

    the integral of the net rate kexp [t < texp] - kel - krej(t) with the logistic rejection
    rate krej(t) = rej_on krej / (1 + exp(-(t - t_rej) / w_rej)), whose antiderivative is
    krej w_rej softplus((t - t_rej) / w_rej). Rates in 1/day, times in days.
    """
    t = np.asarray(t, dtype=float)
    rejected = w_rej * (np.logaddexp(0, (t - t_rej) / w_rej) - np.logaddexp(0, -t_rej / w_rej))
    return kexp * np.minimum(t, texp) - kel * t - rej_on * krej * rejected


def nk_level(t, doses, f_blood, V_blood, kel, kexp, texp, krej, t_rej, w_rej, rej_on):
    """ck_nk's CAR-NK level (cells/µL) at times ``t`` (days) by superposition, by hand.

    ``doses``: (time, cells) pairs, the first at t = 0. dN/dt = r(t) N is linear, so each
    infusion of AMT cells at t_d adds A_d = f_blood AMT / V_blood (V_blood in µL) and then
    follows the same survival: N(t) = sum over t_d <= t of A_d exp(G(t) - G(t_d)), G from
    :func:`nk_exponent`. Right-continuous: a dose at t counts at t.
    """
    t = np.asarray(t, dtype=float)
    rates = (kel, kexp, texp, krej, t_rej, w_rej, rej_on)
    total = np.zeros_like(t)
    for t_d, amount in doses:
        gain = f_blood * amount / V_blood
        total += np.where(
            t >= t_d, gain * np.exp(nk_exponent(t, *rates) - nk_exponent(t_d, *rates)), 0.0
        )
    return total


def nk_radau(par: dict, times: np.ndarray, dose: float) -> np.ndarray:
    """ck_nk's (CARNK, IL6) after one infusion of ``dose`` cells at t = 0, by scipy Radau
    at rtol 1e-10 on the right-hand side written out from the model file:

        dN/dt   = (kexp [t < texp] - kel - rej_on krej / (1 + exp(-(t - t_rej) / w_rej))) N
        dIL6/dt = kout_il6 (IL6_base (1 + emax_il6 N / (n50_il6 + N)) - IL6)

    with N(0) = f_blood dose / V_blood and IL6(0) = IL6_base, split at texp (where the
    expansion switches off). Returns shape (len(times), 2).
    """

    def rhs(before):
        def f(t, y):
            n, il6 = y
            rejection = (
                par["rej_on"] * par["krej"] / (1 + np.exp(-(t - par["t_rej"]) / par["w_rej"]))
            )
            rate = (par["kexp"] if before else 0.0) - par["kel"] - rejection
            stimulus = par["emax_il6"] * n / (par["n50_il6"] + n)
            return [rate * n, par["kout_il6"] * (par["IL6_base"] * (1 + stimulus) - il6)]

        return f

    y0 = [par["f_blood"] * dose / par["V_blood"], par["IL6_base"]]
    return radau_split(rhs, y0, par["texp"], times, 1e-14).T


def stein_reinfused(t, t2, dose1, dose2, C0, rho, tmax, Fb, alpha, beta, dose_exp=1.0):
    """ck_stein's CAR-T level (copies/µg) after an infusion of ``dose1`` cells/kg at t = 0
    and a second of ``dose2`` at ``t2`` >= tmax, by hand.

    The first infusion gives :func:`stein_level` with C0 (dose1 / 1e6)^dose_exp. After
    tmax the equations are linear and time-invariant, dE/dt = -alpha E and dM/dt =
    Fb (alpha - beta) E - beta M, and the second infusion adds B = C0 (dose2 / 1e6)^dose_exp
    to E at t2 (the [dosing] link) and nothing to M. With s = t - t2 >= 0 that bolus alone
    gives E_B(s) = B e^(-alpha s) and M_B(s) = Fb (alpha - beta) B integral_0^s e^(-alpha u)
    e^(-beta (s - u)) du = Fb B (e^(-beta s) - e^(-alpha s)), so it adds
    B [(1 - Fb) e^(-alpha s) + Fb e^(-beta s)]: no second expansion (the model has one
    expansion phase, until tmax after the first infusion), the same shape as the first
    infusion's decline from its peak. By superposition (linear after tmax) the level is the
    sum of the two.
    """
    t = np.asarray(t, dtype=float)
    first = stein_level(t, C0 * (dose1 / 1e6) ** dose_exp, rho, tmax, Fb, alpha, beta)
    bolus = C0 * (dose2 / 1e6) ** dose_exp
    s = np.maximum(t - t2, 0.0)
    second = bolus * ((1 - Fb) * np.exp(-alpha * s) + Fb * np.exp(-beta * s))
    return first + np.where(t >= t2, second, 0.0)
