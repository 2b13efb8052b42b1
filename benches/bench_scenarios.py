"""Benchmark: cartpk.scenarios against a per-patient scipy ``solve_ivp`` loop.

A dose-scenario run on ck_stein: 1,000 virtual patients × 3 doses (1, 2, 3 ×10^6 CAR-T
cells/kg), Cmax, Tmax and AUC0-28 of CART for each. Variability: the between-subject SDs
that generated data/phase1_trial.csv (C0 0.5, rho 0.15, tmax 0.2, Fb 0.5, alpha 0.3,
beta 0.3 on the estimation scale; see data/README.md), seed 1.

cartpk: ``cartpk.scenarios`` end to end (draws, packing, the numba exposure kernel with
Cmax/Tmax located on the continuous solution and AUC integrated as an extra state, the
per-patient table), rtol 1e-8, atol 1e-10.

The obvious alternative: for each patient and dose, scipy ``solve_ivp`` (LSODA, the same
tolerances, ``dense_output=True``) of the same two-state ODE over 0-28 days, split at tmax
(one solve over the switch in the right-hand side made LSODA hang on one patient of this
cohort), then Cmax and Tmax as the maximum over a 0.01-day grid of the dense output and
AUC0-28 by the trapezoidal rule on that grid. It runs on the first ``--scipy-patients``
patients of each dose and its time is scaled linearly to the full run (the report says so).

Accuracy: both against the ck_stein closed form (DESIGN.md) on the scipy subset.

Run:  .venv/bin/python benches/bench_scenarios.py [--patients 1000] [--scipy-patients 200]

Reports the first call in a fresh interpreter with an empty compiled-model cache (code
generation and numba compilation included, ``CARTPK_CACHE_DIR`` set to a new temporary
directory), the first call with a warm disk cache, the steady state (best of several),
the scipy loop and the speed-up; and, for information, the same scenario on ck_vegf with
VEGF response days (no scipy counterpart timed).
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
from stein_scipy import stein_rhs

from cartpk.model import Model, load_model
from cartpk.scenarios import scenarios

DOSES = (1e6, 2e6, 3e6)
OMEGA = {"C0": 0.5, "rho": 0.15, "tmax": 0.2, "Fb": 0.5, "alpha": 0.3, "beta": 0.3}
RTOL, ATOL = 1e-8, 1e-10
GRID = np.linspace(0.0, 28.0, 2801)


def run_cartpk(model: Model | str, n: int, seed: int):
    return scenarios(model, doses=DOSES, n=n, seed=seed, omega=OMEGA, rtol=RTOL, atol=ATOL)


def scipy_patient(p: dict) -> tuple[float, float, float]:
    """Cmax, Tmax, AUC0-28 of one patient: LSODA split at tmax, dense output, 0.01-day grid."""
    y0 = [p["C0"] * (p["DOSE"] / 1e6) ** p["dose_exp"], 0.0]
    split = min(p["tmax"], 28.0)
    opts = {"method": "LSODA", "rtol": RTOL, "atol": ATOL, "dense_output": True}
    first = solve_ivp(stein_rhs(p, False), (0.0, split), y0, **opts)
    level = first.sol(GRID[GRID <= split]).sum(axis=0)
    if split < 28.0:
        second = solve_ivp(stein_rhs(p, True), (split, 28.0), first.y[:, -1], **opts)
        level = np.concatenate([level, second.sol(GRID[GRID > split]).sum(axis=0)])
    k = int(np.argmax(level))
    return float(level[k]), float(GRID[k]), float(np.trapezoid(level, GRID))


def scipy_loop(rows: list[dict]) -> np.ndarray:
    return np.array([scipy_patient(p) for p in rows])


def closed_form(p: dict) -> tuple[float, float, float]:
    """Cmax, Tmax, AUC0-28 of the ck_stein closed form (peak at min(tmax, 28))."""
    f = p["C0"] * (p["DOSE"] / 1e6) ** p["dose_exp"]
    peak_time = min(p["tmax"], 28.0)
    cmax = f * np.exp(p["rho"] * peak_time)
    auc = f * (np.exp(p["rho"] * peak_time) - 1.0) / p["rho"]
    s = 28.0 - p["tmax"]
    if s > 0:
        auc += cmax * (1 - p["Fb"]) * (1 - np.exp(-p["alpha"] * s)) / p["alpha"]
        auc += cmax * p["Fb"] * (1 - np.exp(-p["beta"] * s)) / p["beta"]
    return cmax, peak_time, auc


def patient_rows(table, per_dose: int) -> list[dict]:
    """The first ``per_dose`` patients of each dose, as dicts of the closed form's names."""
    subset = table[table["ID"] <= per_dose].rename(columns={"tmax_param": "tmax_p"})
    keys = ["DOSE", "C0", "rho", "tmax_p", "Fb", "alpha", "beta", "dose_exp"]
    return [
        {k.replace("tmax_p", "tmax"): float(v) for k, v in zip(keys, row, strict=True)}
        for row in subset[keys].itertuples(index=False)
    ]


def errors(values: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """Largest relative error of cmax and AUC, largest absolute error of tmax (days)."""
    rel = np.abs(values / reference - 1.0)
    return (
        float(rel[:, 0].max()),
        float(np.abs(values[:, 1] - reference[:, 1]).max()),
        float(rel[:, 2].max()),
    )


def best_of(repeats: int, function, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000)
    parser.add_argument("--scipy-patients", type=int, default=200, help="per dose")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--first-call", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call:
        start = time.perf_counter()
        run_cartpk(args.first_call, args.patients, args.seed)
        print(time.perf_counter() - start)
        return
    stein, vegf_model = load_model("ck_stein"), load_model("ck_vegf")
    call = ["ck_stein", f"--patients={args.patients}", f"--seed={args.seed}"]
    cold = first_call_seconds(__file__, call, "CARTPK_CACHE_DIR", empty=True)
    warm = first_call_seconds(__file__, call, "CARTPK_CACHE_DIR", empty=False)
    result = run_cartpk(stein, args.patients, args.seed)  # compiles or loads the kernels
    steady = best_of(args.repeats, run_cartpk, stein, args.patients, args.seed)
    per_dose = min(args.scipy_patients, args.patients)
    rows = patient_rows(result.patients, per_dose)
    start = time.perf_counter()
    theirs = scipy_loop(rows)
    scipy_time = time.perf_counter() - start
    subset = result.patients[result.patients["ID"] <= per_dose]
    ours = subset[["cmax", "tmax", "auc_0_28"]].to_numpy()
    reference = np.array([closed_form(p) for p in rows])
    run_cartpk(vegf_model, 10, args.seed)  # compile or load ck_vegf before timing it
    vegf = best_of(args.repeats, run_cartpk, vegf_model, args.patients, args.seed)
    report(args, cold, warm, steady, scipy_time, len(rows), ours, theirs, reference, vegf)
    if max(errors(ours, reference)[0], errors(ours, reference)[2]) > 1e-6:
        raise SystemExit("cartpk disagrees with the closed form by more than 1e-6")


def report(args, cold, warm, steady, scipy_time, n_scipy, ours, theirs, reference, vegf) -> None:
    n_total = args.patients * len(DOSES)
    scale = n_total / n_scipy
    scipy_scaled = scipy_time * scale
    command = f"{os.path.relpath(sys.executable)} benches/bench_scenarios.py " + " ".join(
        sys.argv[1:]
    )
    print(
        f"\nck_stein scenarios: {args.patients:,} patients × {len(DOSES)} doses, cmax/tmax/"
        f"auc_0_28 of CART, rtol {RTOL:g}, atol {ATOL:g}, numba threads "
        f"{numba.get_num_threads()}, seed {args.seed}; load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name, values in (("cartpk", ours), ("scipy LSODA + 0.01-day grid", theirs)):
        c, t, a = errors(values, reference)
        print(
            f"  {name}: largest error vs closed form on {n_scipy:,} patient-doses: cmax "
            f"{c:.1e} (relative), tmax {t:.1e} day, auc_0_28 {a:.1e} (relative)"
        )
    print("\n| task | cartpk | scipy solve_ivp loop | speed-up |\n|---|---|---|---|")
    print(
        f"| {args.patients:,} patients × {len(DOSES)} doses, cmax/tmax/auc_0_28 | "
        f"{steady:.3f} s (best of {args.repeats}) | {scipy_scaled:.1f} s "
        f"({n_scipy:,} timed: {scipy_time:.2f} s, ×{scale:g}) | {scipy_scaled / steady:.0f}× |"
    )
    print(
        f"| first call, fresh process, empty model cache (code generation + compile) | "
        f"{cold:.1f} s | | |"
    )
    print(f"| first call, fresh process, compiled model on disk | {warm:.2f} s | | |")
    print(
        f"| ck_vegf, same patients and doses, with VEGF PR/CR days (0-90 d) | {vegf:.3f} s "
        f"(best of {args.repeats}) | not timed | |"
    )
    print(f"\ncommand: `{command.strip()}`")


if __name__ == "__main__":
    main()
