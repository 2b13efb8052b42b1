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

ck_vegf from the bare built-in model (its file's correlated omegas, nothing overridden),
with VEGF PR/CR days (0-90 d): 1,000 × 3 and ``--vegf-large`` (20,000) × 3, warm (best of
``--repeats``, one run for the large one) and its first call in a fresh process.

Streaming at scale: ``--stream`` patients (1,000,000) × 3 doses of ``--stream-model``
(ck_stein, file omegas, Cmax/Tmax/AUC0-28) written to a Parquet file with ``write=``, each
run in a fresh interpreter (compiled model on disk): locally (numba threads = cores) and on
a dask LocalCluster of 2 worker processes with 1 thread each (loopback only). Reported: wall
time and peak RSS (``resource.getrusage`` ru_maxrss: of the driver and of the largest
worker), with a ``--stream-small`` (100,000) run beside it to show that memory does not
grow with n beyond the 28 bytes per patient-dose the result keeps. ``--stream 0`` skips it.

Run:  .venv/bin/python benches/bench_scenarios.py [--patients 1000] [--scipy-patients 200]

Reports the first call in a fresh interpreter with an empty compiled-model cache (code
generation and numba compilation included, ``CARTPK_CACHE_DIR`` set to a new temporary
directory), the first call with a warm disk cache, the steady state (best of several),
the scipy loop and the speed-up; then the ck_vegf and streamed rows below.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from fresh_process import first_call_seconds
from scipy.integrate import solve_ivp
from stein_scipy import stein_rhs

from cartpk.model import Model, load_model
from cartpk.scenarios import scenarios

# tests/references.py: the ck_stein closed form the tests check against, shared here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import references  # noqa: E402

DOSES = (1e6, 2e6, 3e6)
OMEGA = {"C0": 0.5, "rho": 0.15, "tmax": 0.2, "Fb": 0.5, "alpha": 0.3, "beta": 0.3}
RTOL, ATOL = 1e-8, 1e-10
GRID = np.linspace(0.0, 28.0, 2801)


def run_cartpk(model: Model | str, n: int, seed: int):
    return scenarios(model, doses=DOSES, n=n, seed=seed, omega=OMEGA, rtol=RTOL, atol=ATOL)


def run_bare(model: Model | str, n: int, seed: int):
    """The built-in model as shipped: file omegas and correlations, default settings."""
    return scenarios(model, doses=DOSES, n=n, seed=seed)


def stream_run(where: str, model: str, n: int, seed: int) -> dict:
    """One streamed run in this (fresh) process: wall time, peak RSS, summary check."""
    scenarios(model, doses=DOSES, n=10, seed=seed)  # load the compiled model first
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "patients.parquet"
        start = time.perf_counter()  # (dask: reset once the cluster is up)
        if where == "local":
            result = scenarios(model, doses=DOSES, n=n, seed=seed, write=path)
            workers = []
        else:
            from dask.distributed import Client, LocalCluster

            with (
                LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                ) as cluster,
                Client(cluster) as client,
            ):
                start = time.perf_counter()
                result = scenarios(model, doses=DOSES, n=n, seed=seed, write=path, scheduler=client)
                wall = time.perf_counter() - start
                workers = list(client.run(_peak_rss_mb).values())
        if where == "local":
            wall = time.perf_counter() - start
        summary = result.summary()
        size = path.stat().st_size / 1e6
    return {
        "wall": wall,
        "driver_mb": _peak_rss_mb(),
        "worker_mb": max(workers, default=float("nan")),
        "file_mb": size,
        "n_failed": int(summary["n_failed"].sum()),
        "cmax_median": summary["cmax_median"].tolist(),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stream_fresh(where: str, model: str, n: int, seed: int) -> dict:
    command = [sys.executable, __file__, "--stream-run", where, model, str(n), str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    kinetics = (p["rho"], p["tmax"], p["Fb"], p["alpha"], p["beta"])
    return references.stein_exposure(28.0, f, *kinetics)


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
    parser.add_argument("--vegf-large", type=int, default=20_000)
    parser.add_argument("--stream", type=int, default=1_000_000, help="0: skip")
    parser.add_argument("--stream-small", type=int, default=100_000)
    parser.add_argument("--stream-model", default="ck_stein")
    parser.add_argument("--first-call", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stream-run", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call:
        start = time.perf_counter()
        (run_bare if args.bare else run_cartpk)(args.first_call, args.patients, args.seed)
        print(time.perf_counter() - start)
        return
    if args.stream_run:
        where, model, n, seed = args.stream_run
        print(json.dumps(stream_run(where, model, int(n), int(seed))))
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
    vegf_call = ["ck_vegf", "--bare", f"--patients={args.patients}", f"--seed={args.seed}"]
    vegf_cold = first_call_seconds(__file__, vegf_call, "CARTPK_CACHE_DIR", empty=True)
    vegf_warm = first_call_seconds(__file__, vegf_call, "CARTPK_CACHE_DIR", empty=False)
    run_bare(vegf_model, 10, args.seed)  # compile or load ck_vegf before timing it
    vegf = best_of(args.repeats, run_bare, vegf_model, args.patients, args.seed)
    vegf_large = best_of(1, run_bare, vegf_model, args.vegf_large, args.seed)
    load = os.getloadavg()
    report(args, cold, warm, steady, scipy_time, len(rows), ours, theirs, reference)
    print(
        f"| ck_vegf (bare built-in) {args.patients:,} × {len(DOSES)} with VEGF PR/CR days | "
        f"{vegf:.3f} s warm (best of {args.repeats}); first call in a fresh process "
        f"{vegf_cold:.1f} s (empty model cache) / {vegf_warm:.2f} s (compiled on disk) | |"
    )
    print(
        f"| ck_vegf (bare built-in) {args.vegf_large:,} × {len(DOSES)} with VEGF PR/CR days | "
        f"{vegf_large:.2f} s warm (one run) | |"
    )
    print(f"load average after the ck_vegf rows: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.stream:
        stream_report(args)
    if max(errors(ours, reference)[0], errors(ours, reference)[2]) > 1e-6:
        raise SystemExit("cartpk disagrees with the closed form by more than 1e-6")


def stream_report(args) -> None:
    print(
        f"\nstreamed to Parquet: {args.stream_model} (file omegas) × {len(DOSES)} doses, "
        "each run in a fresh process (compiled model on disk)"
    )
    print(
        "| run | patients × doses | wall | peak RSS driver | peak RSS worker | file | "
        "failed | load average before / after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for where in ("local", "dask"):
        for n in (args.stream_small, args.stream):
            before = os.getloadavg()
            out = stream_fresh(where, args.stream_model, n, args.seed)
            after = os.getloadavg()
            name = (
                f"this process, {numba.get_num_threads()} numba threads"
                if where == "local"
                else "dask LocalCluster, 2 worker processes × 1 thread"
            )
            worker = "" if where == "local" else f"{out['worker_mb']:.0f} MB"
            print(
                f"| {name} | {n:,} × {len(DOSES)} | {out['wall']:.1f} s | "
                f"{out['driver_mb']:.0f} MB | {worker} | {out['file_mb']:.0f} MB | "
                f"{out['n_failed']} | {before[0]:.2f} / {after[0]:.2f} |",
                flush=True,
            )


def report(args, cold, warm, steady, scipy_time, n_scipy, ours, theirs, reference) -> None:
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
    print(f"\ncommand: `{command.strip()}`")


if __name__ == "__main__":
    main()
