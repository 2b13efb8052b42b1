"""Warm speed of this tree against another (e.g. the previous main), in one run.

Each workload runs in a new interpreter per tree, alternating A, B, A, B ... with the tree's
``src`` first on ``sys.path``; inside, one untimed call warms the caches, then the median
of ``--repeats`` timed calls (default :data:`REPEATS`) is printed. The table gives both
medians per pair and the median of the pair ratios (this tree / the other), so that a
drift of the machine's speed cancels. Workloads (the calls of the benches they are named
after):

* solve: ``bench_solve`` — ck_vegf, 10,000 virtual subjects, 13 times, rtol 1e-6;
* fit: ``bench_fit`` — ck_stein individual fits of data set 1 (all subjects);
* popfit: ``bench_popfit`` — SAEM of ck_stein on its 100-subject trial, with modes, −2LL
  and SEs.

    python benches/bench_versus.py --against /path/to/old/checkout [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKLOADS = {
    "solve": (
        "import bench_solve as b\n"
        "m = b.load_model('ck_vegf'); params, dose = b.cohort(m, 10_000, 1)\n"
        "call = lambda: b.run_cartpk(m, params, dose)"
    ),
    "fit": (
        "import bench_fit as b\n"
        "m = b.load_model('ck_stein'); data = b.dataset(1)\n"
        "call = lambda: b.cartpk_fit(m, data)"
    ),
    "popfit": (
        "import bench_popfit as b\n"
        "data = b.trial(100, 1)\n"
        "call = lambda: b.time_cartpk_fit(data, 1)"
    ),
}

#: Timed calls per run: enough that a 30 ms fit is not one scheduler hiccup.
REPEATS = {"solve": 5, "fit": 25, "popfit": 1}

CHILD = """
import statistics, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {benches!r})
{setup}
call()
times = []
for _ in range({repeats}):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def run(tree: Path, name: str, repeats: int) -> float:
    code = CHILD.format(benches=str(HERE), setup=WORKLOADS[name], repeats=repeats)
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {name}\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per run (default: per workload)"
    )
    args = parser.parse_args()
    this, other = HERE.parent, args.against.resolve()
    load = os.getloadavg()[0]
    rows = []
    for name in args.only.split(","):
        pairs = []
        for _ in range(args.pairs):
            repeats = args.repeats or REPEATS[name]
            a = run(this, name, repeats)
            b = run(other, name, repeats)
            pairs.append((a, b))
            print(f"{name}: {a:.3f} s / {b:.3f} s", file=sys.stderr)
        ratio = statistics.median(a / b for a, b in pairs)
        rows.append((name, statistics.median(a for a, _ in pairs),
                     statistics.median(b for _, b in pairs), ratio))  # fmt: skip
    print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"| workload | {this.name} (s) | {other.name} (s) | ratio |")
    print("|---|---|---|---|")
    for name, a, b, ratio in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
