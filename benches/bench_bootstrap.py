"""Benchmark: bootstrap throughput, here against a 2-worker dask LocalCluster.

The problem: ``--subjects`` subjects of the bundled phase 1 trial (every k-th), ck_stein with
random effects on C0, rho and alpha, a DOSE effect on C0, ``--iter`` SAEM iterations and
``--n-is`` importance-sampling draws; then ``cartpk.bootstrap`` with ``--n`` replicates:

* here: replicates one after the other in this process (numba threads = cores);
* dask: a ``LocalCluster`` of 2 worker processes, 1 dask thread each (loopback only), one
  task per replicate. ``--worker-threads`` sets each worker's ``NUMBA_NUM_THREADS``
  (default 1: 2 workers × 1 thread use the 2 cores without oversubscription).

Reported: wall time and replicates per minute of each run (the dask run after the cluster
has started and loaded the model once, the start-up timed apart), and whether the two
tables are identical (they must be).

Run:  .venv/bin/python benches/bench_bootstrap.py [--n 8] [--subjects 12] [--iter 60 30]
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd

import cartpk
from cartpk.data import bundled
from cartpk.errors import FitWarning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="bootstrap replicates")
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--iter", type=int, nargs=2, default=(60, 30))
    parser.add_argument("--n-is", type=int, default=100)
    parser.add_argument("--worker-threads", type=int, default=1)
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    frame = pd.read_csv(bundled("phase1_trial.csv"))
    ids = pd.unique(frame["ID"])  # spread over the dose levels (10 subjects each, in order)
    frame = frame[frame["ID"].isin(ids[:: max(1, ids.size // args.subjects)][: args.subjects])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        fit = cartpk.fit_population(
            "ck_stein",
            frame,
            random=["C0", "rho", "alpha"],
            covariates={"C0": ["DOSE"]},
            n_iter=tuple(args.iter),
            n_is=args.n_is,
            progress=False,
        )

    start = time.perf_counter()
    local = cartpk.bootstrap(fit, n=args.n, seed=1)
    here = time.perf_counter() - start

    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"NUMBA_NUM_THREADS": str(args.worker_threads)},
    )
    client = Client(cluster)
    cartpk.bootstrap(fit, n=2, seed=1, scheduler=client)  # start-up: workers load the model
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    remote = cartpk.bootstrap(fit, n=args.n, seed=1, scheduler=client)
    dask = time.perf_counter() - start
    client.close()
    cluster.close()

    same = local.table.equals(remote.table)
    print(
        f"bootstrap of {args.subjects} subjects, {args.n} replicates, n_iter {tuple(args.iter)}, "
        f"n_is {args.n_is}"
    )
    print(f"here:            {here:7.1f} s  {60 * args.n / here:6.1f} replicates/min")
    print(
        f"dask 2 workers:  {dask:7.1f} s  {60 * args.n / dask:6.1f} replicates/min "
        f"(start-up and 2 warm-up replicates {warm_up:.1f} s; NUMBA_NUM_THREADS "
        f"{args.worker_threads} per worker)"
    )
    print(f"tables identical: {same}; converged {local.converged_share:.0%}")


if __name__ == "__main__":
    main()
