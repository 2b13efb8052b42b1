"""Benchmark: cartpk.solve.solve_batch against a per-subject scipy ``solve_ivp`` loop.

ck_vegf (CAR-T kinetics + clone kill + VEGF turnover, 4 states, a switch at tmax), virtual
subjects with log-normal between-subject variability (seeded): C0 (SD 0.5), fold expansion
(0.5) and tmax (0.3) giving rho = ln(fold)/tmax, Fb (0.5), alpha (0.4), beta (0.5), kkill
(0.5), kout (0.3), B0 (0.3), Bnorm (0.3) on the log scale, and a dose of 1, 2 or 3 ×10^6
cells/kg. Outputs CART and VEGF at 13 times over 0-365 days; rtol 1e-6 and atol 1e-9 for
every solver. The scipy loop uses a hand-written right-hand side and is split at tmax (as
cartpk is), with LSODA and RK45.

Run:  .venv/bin/python benches/bench_solve.py [--subjects 1000 10000] [--scipy-subjects 1000]

Reports, per cohort size: the first call in a fresh interpreter with an empty compiled-model
cache (``CARTPK_CACHE_DIR`` set to a new temporary directory: code generation and numba
compilation included), the steady state (best of several), the scipy loops and the
speed-ups. The scipy loops run on the first ``--scipy-subjects`` subjects and are scaled
linearly to the cohort size when it is larger (the table says so). Accuracy: every
solver's largest relative error on the scipy subset against a tight reference (scipy
DOP853 at rtol 1e-12, split at tmax).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np
from fresh_process import first_call_seconds
from scipy.integrate import solve_ivp

from cartpk.model import Model, load_model
from cartpk.solve import solve_batch

DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
RTOL, ATOL = 1e-6, 1e-9
SPREAD = {"C0": 0.5, "tmax": 0.3, "Fb": 0.5, "alpha": 0.4, "beta": 0.5, "kkill": 0.5}
SPREAD |= {"kout": 0.3, "B0": 0.3, "Bnorm": 0.3}


def cohort(model: Model, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Parameters (n, n_par) on the natural scale and DOSE (n, 1) in cells/kg."""
    rng = np.random.default_rng(seed)
    params = np.tile(model.values, (n, 1))
    column = {name: k for k, name in enumerate(model.param_names)}
    for name, sd in SPREAD.items():
        params[:, column[name]] *= np.exp(rng.normal(0.0, sd, n))
    par = model.parameters
    fold = np.exp(par["rho"].value * par["tmax"].value) * np.exp(rng.normal(0.0, 0.5, n))
    params[:, column["rho"]] = np.log(fold) / params[:, column["tmax"]]
    dose = rng.choice([1e6, 2e6, 3e6], n).reshape(-1, 1)
    return params, dose


def vegf_rhs(p: dict, after_tmax: bool):
    """ck_vegf from DESIGN.md, one side of tmax."""

    def rhs(t, y):
        E, M, P, B = y
        if after_tmax:
            dE = -p["alpha"] * E
            dM = p["Fb"] * (p["alpha"] - p["beta"]) * E - p["beta"] * M
        else:
            dE, dM = p["rho"] * E, 0.0
        dP = p["kgrow"] * P - p["kkill"] * (E + M) * P
        return [dE, dM, dP, p["kout"] * (p["Bnorm"] + (p["B0"] - p["Bnorm"]) * P - B)]

    return rhs


def scipy_subject(p: dict, dose: float, method: str, rtol: float, atol: float) -> np.ndarray:
    """(13, 2) outputs of one subject by solve_ivp, split at tmax."""
    y0 = [p["C0"] * (dose / 1e6) ** p["dose_exp"], 0.0, 1.0, p["B0"]]
    tmax = p["tmax"]
    before, after = DAYS[DAYS < tmax], DAYS[DAYS >= tmax]
    opts = {"method": method, "rtol": rtol, "atol": atol}
    first = solve_ivp(vegf_rhs(p, False), (0.0, tmax), y0, t_eval=[*before, tmax], **opts)
    second = solve_ivp(vegf_rhs(p, True), (tmax, DAYS[-1]), first.y[:, -1], t_eval=after, **opts)
    y = np.hstack([first.y[:, :-1], second.y])
    return np.column_stack([y[0] + y[1], y[3]])


def scipy_loop(model, params, dose, method, rtol=RTOL, atol=ATOL) -> np.ndarray:
    names = model.param_names
    rows = [
        scipy_subject(dict(zip(names, row, strict=True)), float(d[0]), method, rtol, atol)
        for row, d in zip(params, dose, strict=True)
    ]
    return np.vstack(rows)


def run_cartpk(model: Model, params: np.ndarray, dose: np.ndarray) -> np.ndarray:
    return solve_batch(model, params, dose, times=DAYS, rtol=RTOL, atol=ATOL).values


def best_of(repeats: int, function, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def max_rel(values: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(values / reference - 1.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--scipy-subjects", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--first-call", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = load_model("ck_vegf")
    if args.first_call:
        params, dose = cohort(model, args.subjects[0], args.seed)
        print(timed(run_cartpk, model, params, dose)[0])
        return
    largest = max(args.subjects)
    params, dose = cohort(model, largest, args.seed)
    n_scipy = min(args.scipy_subjects, largest)
    sub_p, sub_d = params[:n_scipy], dose[:n_scipy]
    loops = {m: timed(scipy_loop, model, sub_p, sub_d, m) for m in ("LSODA", "RK45")}
    reference = scipy_loop(model, sub_p, sub_d, "DOP853", 1e-12, 1e-14)
    run_cartpk(model, params[:10], dose[:10])  # compile or load from the disk cache
    ours = run_cartpk(model, sub_p, sub_d)
    rows = []
    for n in args.subjects:
        call = [f"--subjects={n}", f"--seed={args.seed}"]
        cold = first_call_seconds(__file__, call, "CARTPK_CACHE_DIR", empty=True)
        steady = best_of(args.repeats, run_cartpk, model, params[:n], dose[:n])
        scale = n / n_scipy
        lsoda, rk45 = (loops[m][0] * scale for m in ("LSODA", "RK45"))
        rows.append((n, cold, steady, lsoda, rk45, scale))
    report(args, rows, n_scipy, ours, loops, reference)
    error = max_rel(ours, reference)
    if error > 10 * RTOL:
        raise SystemExit(f"cartpk's error {error:.1e} exceeds 10 x rtol: the answers disagree")


def report(args, rows, n_scipy, ours, loops, reference) -> None:
    command = f"{os.path.relpath(sys.executable)} benches/bench_solve.py " + " ".join(sys.argv[1:])
    print(
        f"\nck_vegf, {DAYS.size} output times over 0-365 days, rtol {RTOL:g}, atol {ATOL:g}, "
        f"numba threads {numba.get_num_threads()}, seed {args.seed}"
    )
    print(
        f"max relative error vs scipy DOP853 at rtol 1e-12 (first {n_scipy:,} subjects, "
        f"CART and VEGF): cartpk {max_rel(ours, reference):.1e}, "
        f"LSODA {max_rel(loops['LSODA'][1], reference):.1e}, "
        f"RK45 {max_rel(loops['RK45'][1], reference):.1e}\n"
    )
    print(
        "| subjects | cartpk first call, fresh process, empty cache (s) | cartpk steady, "
        f"best of {args.repeats} (s) | scipy LSODA loop (s) | scipy RK45 loop (s) | "
        "speed-up vs LSODA | speed-up vs RK45 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, cold, steady, lsoda, rk45, scale in rows:
        note = f" (×{scale:g} of {n_scipy:,})" if scale != 1 else ""
        print(
            f"| {n:,} | {cold:.2f} | {steady:.3f} | {lsoda:.1f}{note} | {rk45:.1f}{note} | "
            f"{lsoda / steady:.0f}× | {rk45 / steady:.0f}× |"
        )
    print(
        f"\nscipy loops timed on the first {n_scipy:,} subjects; larger cohorts scale that "
        "time linearly. Agreement check: cartpk's largest relative error must be <= 10 x rtol "
        "(global error of a local-error-controlled solve)."
    )
    print(f"command: `{command.strip()}`")


if __name__ == "__main__":
    main()
