"""Benchmark: cartpk.nca against a per-subject numpy/pandas loop, in one run.

10,000 virtual CAR-T subjects × 13 qPCR samples over a year (the Stein et al. 2019
expansion–contraction–persistence profile at its B-ALL typical values, log-normal
between-subject variability, Cmax ∝ sqrt(dose), 30 % proportional noise, LLOQ 5 copies/µg),
NCA with lin-up/log-down, PKNCA's default BLQ rules and auc_0_28.

Run:  .venv/bin/python benches/bench_nca.py [--subjects 10000] [--seed 1]

Reports the first call in a fresh interpreter with an empty numba cache (compilation), the
first call in a fresh interpreter with a warm cache, the steady state (best of several) of the
whole ``nca()`` call on a DataFrame and on an already validated Dataset, the loop time and
the ratio, and checks that both implementations agree on a sample of subjects.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from fresh_process import first_call_seconds

from cartpk.data import as_dataset
from cartpk.nca import nca

# tests/references.py: the ck_stein closed form the tests check against, shared here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import references  # noqa: E402

DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 56, 90, 180, 270, 365], dtype=float)
LLOQ = 5.0
CHECKED = ["cmax", "tmax", "tlast", "clast", "auclast", "aucall", "aucinf_obs", "aucinf_pred"]
CHECKED += ["lambda_z", "half_life", "adj_r_squared", "lambda_z_npoints", "auc_0_28"]


def trial(n_subjects: int, seed: int) -> pd.DataFrame:
    """Long table: ID, TIME (day), DV (copies/µg), CENS, LLOQ, DOSE (cells/kg)."""
    rng = np.random.default_rng(seed)
    dose = rng.choice([1e6, 2e6, 3e6], n_subjects)

    def typical(value: float, sd: float) -> np.ndarray:
        return value * np.exp(rng.normal(0.0, sd, n_subjects))

    cmax = typical(24_000.0, 1.1) * np.sqrt(dose / 2e6)
    fold, tmax = typical(3900.0, 0.5), typical(9.3, 0.3)
    fb, alpha, beta = typical(0.0079, 0.8), typical(0.16, 0.4), typical(0.0032, 0.5)
    rho = np.log(fold) / tmax
    column = [x[:, None] for x in (cmax / fold, rho, tmax, fb, alpha, beta)]
    level = references.stein_level(DAYS[None, :], *column)
    conc = level * np.exp(rng.normal(0.0, 0.3, level.shape))
    cens = conc < LLOQ
    return pd.DataFrame(
        {
            "ID": np.repeat(np.arange(1, n_subjects + 1), DAYS.size),
            "TIME": np.tile(DAYS, n_subjects),
            "DV": np.where(cens, LLOQ, conc).ravel(),
            "CENS": cens.ravel().astype(int),
            "LLOQ": LLOQ,
            "DOSE": np.repeat(dose, DAYS.size),
        }
    )


# --------------------------------------------------------------------------- reference loop


def _clean_blq(t: np.ndarray, c: np.ndarray, blq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PKNCA default: leading BLQ kept as 0, BLQ between quantified values dropped, last kept."""
    quantified = np.flatnonzero(~blq)
    if quantified.size == 0:
        return t, np.zeros_like(c)
    middle = blq & (np.arange(t.size) > quantified[0]) & (np.arange(t.size) < quantified[-1])
    return t[~middle], np.where(blq, 0.0, c)[~middle]


def _segments(t, c):
    """Per-segment AUC and log flag (lin-up/log-down)."""
    c1, c2, dt = c[:-1], c[1:], np.diff(t)
    log = (c2 < c1) & (c2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        area = np.where(log, dt * (c1 - c2) / np.log(c1 / c2), dt * (c1 + c2) / 2)
    return area, log


def _lambda_z(t, c, imax):
    tt, cc = t[imax + 1 :], c[imax + 1 :]
    tt, y = tt[cc > 0], np.log(cc[cc > 0])
    fits = []
    for n in range(3, tt.size + 1):
        x, yy = tt[-n:], y[-n:]
        slope, intercept = np.polyfit(x, yy, 1)
        ss_tot = np.sum((yy - yy.mean()) ** 2)
        r2 = 1 - np.sum((yy - (intercept + slope * x)) ** 2) / ss_tot if ss_tot > 0 else np.nan
        fits.append((1 - (1 - r2) * (n - 1) / (n - 2), -slope, n, intercept + slope * tt[-1]))
    if not fits:
        return None
    best = np.nanmax([f[0] for f in fits])
    good = [f for f in fits if f[1] > 0 and f[0] > best - 1e-4]
    return max(good, key=lambda f: f[2]) if good else None


def _interval(t, c, last, a, b):
    """PKNCA's aucint.last over a finite [a, b]: the samples inside it plus its ends (0 before
    the first sample and after tlast, interpolated between), segment by segment; the segment
    to an end after tlast is a log trapezoid to 0, so it adds nothing."""

    def conc_at(x):
        if x < t[0] or x > t[last]:
            return 0.0
        j = min(int(np.searchsorted(t, x, side="right")) - 1, last - 1)
        w = (x - t[j]) / (t[j + 1] - t[j])
        if c[j + 1] < c[j] and c[j + 1] > 0:
            return c[j] * (c[j + 1] / c[j]) ** w
        return c[j] + w * (c[j + 1] - c[j])

    inside = (t >= a) & (t <= b)
    times, conc = list(t[inside]), list(c[inside])
    if a not in times:
        times.insert(0, a)
        conc.insert(0, conc_at(a))
    extrapolated_end = b not in times and b > t[last]
    if b not in times:
        times.append(b)
        conc.append(conc_at(b))
    area, _ = _segments(np.array(times), np.array(conc))
    return float(area[:-1].sum() if extrapolated_end else area.sum())


def reference_one(t: np.ndarray, c: np.ndarray, blq: np.ndarray) -> dict[str, float]:
    t, c = _clean_blq(t, c, blq)
    imax = int(np.argmax(c))
    positive = np.flatnonzero(c > 0)
    if positive.size == 0:
        return {"cmax": 0.0, "auclast": 0.0, "aucall": 0.0, "auc_0_28": 0.0}
    last = int(positive[-1])
    area, _ = _segments(t, c)
    auclast = float(area[:last].sum())
    aucall = auclast + (c[last] * (t[last + 1] - t[last]) / 2 if last < t.size - 1 else 0.0)
    row = {"cmax": c[imax], "tmax": t[imax], "tlast": t[last], "clast": c[last]}
    row |= {"auclast": auclast, "aucall": aucall}
    fit = _lambda_z(t, c, imax)
    lz = None
    if fit is not None:
        adj, lz, n, log_pred = fit
        row |= {"lambda_z": lz, "half_life": math.log(2) / lz, "adj_r_squared": adj}
        row |= {"lambda_z_npoints": n, "aucinf_obs": auclast + c[last] / lz}
        row["aucinf_pred"] = auclast + math.exp(log_pred) / lz
    row["auc_0_28"] = _interval(t, c, last, 0.0, 28.0)
    return row


def reference(frame: pd.DataFrame) -> pd.DataFrame:
    """The obvious implementation: a groupby loop, one subject at a time."""
    rows = {}
    for subject, group in frame.groupby("ID", sort=True):
        group = group.sort_values("TIME")
        blq = group["CENS"].to_numpy() == 1
        rows[subject] = reference_one(group["TIME"].to_numpy(), group["DV"].to_numpy(), blq)
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=CHECKED)


# --------------------------------------------------------------------------- timing


def best_of(repeats: int, function, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def check_agreement(table: pd.DataFrame, expected: pd.DataFrame, n_sample: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(table), size=min(n_sample, len(table)), replace=False)
    ours = table.set_index("ID").loc[expected.index[sample], CHECKED].astype(float)
    theirs = expected.iloc[sample].astype(float)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-8, equal_nan=True)
    return sample.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--first-call", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    frame = trial(args.subjects, args.seed)
    if args.first_call:
        start = time.perf_counter()
        nca(frame)
        print(time.perf_counter() - start)
        return
    call = [f"--subjects={args.subjects}", f"--seed={args.seed}"]
    cold = first_call_seconds(__file__, call, "NUMBA_CACHE_DIR", empty=True)
    warm = first_call_seconds(__file__, call, "NUMBA_CACHE_DIR", empty=False)
    dataset = as_dataset(frame)
    steady = best_of(args.repeats, nca, frame)
    steady_ds = best_of(args.repeats, nca, dataset)
    start = time.perf_counter()
    expected = reference(frame)
    loop = time.perf_counter() - start
    checked = check_agreement(nca(frame), expected, 500, args.seed)
    command = f"{os.path.relpath(sys.executable)} benches/bench_nca.py " + " ".join(sys.argv[1:])
    n, threads = args.subjects, numba.get_num_threads()
    print(f"\n{n:,} subjects × {DAYS.size} samples ({len(frame):,} rows), numba threads {threads}")
    print(f"agreement with the reference loop: {checked} random subjects, rtol 1e-8\n")
    print("| what | time (s) | per subject (µs) |")
    print("|---|---:|---:|")
    for label, seconds in [
        ("first `nca()` call, fresh process, empty numba cache (compiles)", cold),
        ("first `nca()` call, fresh process, warm numba cache", warm),
        (f"`nca(DataFrame)` steady state, best of {args.repeats}", steady),
        (f"`nca(Dataset)` steady state, best of {args.repeats}", steady_ds),
        ("per-subject numpy/pandas loop (groupby + np.polyfit)", loop),
    ]:
        print(f"| {label} | {seconds:.3f} | {1e6 * seconds / n:.1f} |")
    print(f"| **speed-up, loop / `nca(DataFrame)`** | **{loop / steady:.0f}×** | |")
    print(f"\ncommand: `{command.strip()}`")


if __name__ == "__main__":
    main()
