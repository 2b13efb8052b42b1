"""Benchmark: cartpk.fit against the same individual fit written with lmfit + scipy solve_ivp.

One subject, ck_stein, 13 samples over 0-365 days (days 0, 1, 4, 7, 10, 14, 21, 28, 60, 90,
180, 270, 365), simulated with the closed form at C0 3 copies/µg, rho 0.8/day, tmax 12 days,
Fb 0.015, alpha 0.18/day, beta 0.005/day with log-normal noise SD 0.2 (seeded, one data set
per seed). Both fits estimate the six kinetic parameters and the log-error SD sigma by
maximum likelihood: -2LL of log(DV) minimised by L-BFGS-B on the estimation scales (log;
logit for Fb), from the model file's values and sigma 0.3, then a central finite-difference
Hessian for the standard errors (what ``cartpk.fit`` returns too).

The reference is written as a user would: lmfit ``minimize(method="lbfgsb")`` on a
hand-written right-hand side integrated by ``solve_ivp`` (LSODA by default, rtol 1e-8,
atol 1e-10, the tolerances cartpk's fit uses), split at tmax where the right-hand side
switches.

Run:  .venv/bin/python benches/bench_fit.py [--datasets 5] [--repeats 7] [--method LSODA]

Reports the first cartpk fit in a fresh interpreter with an empty compiled-model cache
(code generation and numba compilation) and with the cache filled, then per data set the
median wall time of the fits each way, each fit's OFV against the optimum of the closed-form
likelihood (scipy Nelder-Mead from the truth: the arbiter of "same optimum") and the largest
relative difference between the two fits' estimates, and PASS/FAIL against the targets
(cartpk >= 20x faster than the reference, <= 50 ms per fit after compilation, cartpk at the
closed-form optimum).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import lmfit
import numpy as np
import pandas as pd
from fresh_process import first_call_seconds
from scipy.optimize import minimize
from stein_scipy import stein_level

import cartpk
from cartpk.model import Model, load_model

# tests/references.py: the ck_stein closed form the tests check against, shared here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import references  # noqa: E402

DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
TRUTH = {"C0": 3.0, "rho": 0.8, "tmax": 12.0, "Fb": 0.015, "alpha": 0.18, "beta": 0.005}
NOISE_SD = 0.2
SIGMA_START = 0.3
RTOL, ATOL = 1e-8, 1e-10
KINETIC = list(TRUTH)
SPEEDUP_TARGET, MS_TARGET = 20.0, 50.0
OFV_TOL = 1e-3
LOG_2PI = float(np.log(2 * np.pi))
FAILED = 1e12
# Line searches can try rho·tmax in the hundreds; solve_ivp's step-size norm squares the
# state, overflows above ~1e154 and LSODA then never returns: such points are rejected.
LOG_PEAK_LIMIT = float(np.log(1e150))


def dataset(seed: int) -> pd.DataFrame:
    """One subject: ID, TIME (day), DV (copies/µg)."""
    rng = np.random.default_rng(seed)
    level = references.stein_level(DAYS, *TRUTH.values())
    dv = level * np.exp(rng.normal(0.0, NOISE_SD, DAYS.size))
    return pd.DataFrame({"ID": 1, "TIME": DAYS, "DV": dv})


# --------------------------------------------------------------------------- reference fit


def natural(model: Model, values: dict) -> dict:
    """Kinetic parameters and sigma on the natural scale from estimation-scale values."""
    out = {"sigma": float(np.exp(values["sigma"]))}
    for name in KINETIC:
        p = model.parameters[name]
        x = values[name]
        out[name] = (
            p.lower + (p.upper - p.lower) / (1 + np.exp(-x)) if p.scale == "logit" else np.exp(x)
        )
    return out


def reference_m2ll(model: Model, values: dict, log_dv: np.ndarray, method: str) -> float:
    """-2 log-likelihood of log(DV) under the log error model."""
    p = natural(model, values)
    if np.log(p["C0"]) + p["rho"] * p["tmax"] > LOG_PEAK_LIMIT:
        return FAILED
    pred = stein_level(p, p["C0"], DAYS, method, RTOL, ATOL)
    if pred is None or not np.all(pred > 0):
        return FAILED
    z = (log_dv - np.log(pred)) / p["sigma"]
    return float(np.sum(z**2 + 2 * np.log(p["sigma"]) + LOG_2PI))


def estimation_value(model: Model, name: str, value: float) -> float:
    """A kinetic parameter on its estimation scale (log; logit for Fb)."""
    p = model.parameters[name]
    if p.scale == "logit":
        return float(np.log((value - p.lower) / (p.upper - value)))
    return float(np.log(value))


def reference_start(model: Model) -> lmfit.Parameters:
    """Model-file start values and bounds on the estimation scale; sigma 0.3 on the log scale."""
    params = lmfit.Parameters()
    for name in KINETIC:
        p = model.parameters[name]
        x = estimation_value(model, name, p.value)
        if p.scale == "logit":
            params.add(name, value=x)
        else:
            params.add(name, value=x, min=np.log(p.lower), max=np.log(p.upper))
    params.add("sigma", value=np.log(SIGMA_START))
    return params


def reference_fit(model: Model, data: pd.DataFrame, method: str) -> dict:
    """lmfit L-BFGS-B fit and Hessian standard errors: estimates, ofv, se (estimation scale)."""
    log_dv = np.log(data["DV"].to_numpy())

    def objective(params: lmfit.Parameters) -> float:
        return reference_m2ll(model, params.valuesdict(), log_dv, method)

    result = lmfit.minimize(
        objective,
        reference_start(model),
        method="lbfgsb",
        options={"ftol": 1e-12, "gtol": 1e-6, "maxiter": 2000},
    )
    best = result.params.valuesdict()
    names = list(best)

    def at(x: np.ndarray) -> float:
        return reference_m2ll(model, dict(zip(names, x, strict=True)), log_dv, method)

    h = references.central_hessian(at, np.array([best[n] for n in names]))
    se = np.sqrt(np.diag(2 * np.linalg.inv(h)))
    return {"estimates": natural(model, best), "ofv": at(np.array(list(best.values()))), "se": se}


# --------------------------------------------------------------------------- timing


def cartpk_fit(model: Model, data: pd.DataFrame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return cartpk.fit(model, data)


def median_time(repeats: int, function, *args) -> tuple[float, object]:
    """Median wall time (s) of ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def first_call() -> None:
    start = time.perf_counter()
    cartpk_fit(load_model("ck_stein"), dataset(1))
    print(time.perf_counter() - start)


def closed_form_optimum(model: Model, data: pd.DataFrame) -> float:
    """The arbiter: smallest -2LL of the closed form, by scipy Nelder-Mead from the truth
    (restarted once at its end point)."""
    log_dv = np.log(data["DV"].to_numpy())
    names = [*KINETIC, "sigma"]

    def m2ll(x: np.ndarray) -> float:
        p = natural(model, dict(zip(names, x, strict=True)))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            log_pred = np.log(references.stein_level(DAYS, *(p[n] for n in KINETIC)))
        if not np.all(np.isfinite(log_pred)):
            return np.inf
        z = (log_dv - log_pred) / p["sigma"]
        return float(np.sum(z**2 + 2 * np.log(p["sigma"]) + LOG_2PI))

    x = np.array([estimation_value(model, n, v) for n, v in TRUTH.items()] + [np.log(NOISE_SD)])
    for _ in range(2):
        options = {"xatol": 1e-9, "fatol": 1e-11, "maxfev": 40_000, "maxiter": 40_000}
        result = minimize(m2ll, x, method="Nelder-Mead", options=options)
        x = result.x
    return float(result.fun)


def largest_difference(ours, theirs: dict) -> float:
    """Largest relative difference between cartpk's and the reference's estimates."""
    estimates = {**ours.estimates, "sigma": ours.estimates["CART_sigma"]}
    return max(abs(estimates[n] / theirs["estimates"][n] - 1) for n in [*KINETIC, "sigma"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=5, help="data sets (seeds 1..N)")
    parser.add_argument("--repeats", type=int, default=7, help="cartpk fits per data set")
    parser.add_argument("--reference-repeats", type=int, default=3)
    parser.add_argument("--method", default="LSODA", choices=["LSODA", "RK45"])
    parser.add_argument("--first-call", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call:
        first_call()
        return
    cold = first_call_seconds(__file__, [], "CARTPK_CACHE_DIR", empty=True)
    warm = first_call_seconds(__file__, [], "CARTPK_CACHE_DIR", empty=False)
    model = load_model("ck_stein")
    cartpk_fit(model, dataset(1))
    rows = []
    for seed in range(1, args.datasets + 1):
        data = dataset(seed)
        ours_s, ours = median_time(args.repeats, cartpk_fit, model, data)
        ref_s, ref = median_time(args.reference_repeats, reference_fit, model, data, args.method)
        rows.append((seed, ours_s, ref_s, ours, ref, closed_form_optimum(model, data)))
    report(args, cold, warm, rows)


def report(args, cold: float, warm: float, rows: list) -> None:
    command = f"{os.path.relpath(sys.executable)} benches/bench_fit.py " + " ".join(sys.argv[1:])
    print(
        f"\nck_stein, one subject, {DAYS.size} samples over 0-365 days, log error SD "
        f"{NOISE_SD} (sigma estimated), 7 parameters; reference: lmfit L-BFGS-B + "
        f"solve_ivp {args.method} split at tmax, rtol {RTOL:g}, atol {ATOL:g}, Hessian SEs; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print(
        f"first cartpk fit in a new process: empty model cache {cold:.1f} s, "
        f"cache filled {warm:.1f} s\n"
    )
    print(
        f"| data set (seed) | cartpk fit, median of {args.repeats} (ms) | lmfit + solve_ivp "
        f"{args.method}, median of {args.reference_repeats} (ms) | speed-up | OFV at the "
        "closed-form optimum | cartpk OFV − optimum | reference OFV − optimum | largest "
        "relative difference of estimates |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    ours_at, theirs_at = [], []
    for seed, ours_s, ref_s, ours, ref, optimum in rows:
        ours_at.append(abs(ours.ofv - optimum) <= OFV_TOL)
        theirs_at.append(abs(ref["ofv"] - optimum) <= OFV_TOL)
        print(
            f"| {seed} | {1e3 * ours_s:.1f} | {1e3 * ref_s:.0f} | {ref_s / ours_s:.0f}× | "
            f"{optimum:.4f} | {ours.ofv - optimum:.1e} | {ref['ofv'] - optimum:.1e} | "
            f"{largest_difference(ours, ref):.1e} |"
        )
    ours_ms = 1e3 * float(np.median([r[1] for r in rows]))
    ratio = float(np.median([r[2] / r[1] for r in rows]))
    print(f"\nper fit, median over data sets: cartpk {ours_ms:.1f} ms, speed-up {ratio:.0f}×")
    print(verdict(ratio >= SPEEDUP_TARGET, f"speed-up >= {SPEEDUP_TARGET:g}×"))
    print(verdict(ours_ms <= MS_TARGET, f"cartpk <= {MS_TARGET:g} ms per fit"))
    print(verdict(all(ours_at), f"cartpk at the closed-form optimum (|ΔOFV| <= {OFV_TOL:g})"))
    print(
        f"reference at the closed-form optimum on {sum(theirs_at)} of {len(rows)} data sets "
        "(for information: a reference that stops short makes the speed-up conservative)"
    )
    print(f"command: `{command.strip()}`")


def verdict(ok: bool, what: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}: {what}"


if __name__ == "__main__":
    main()
