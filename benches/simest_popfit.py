"""Simulation-estimation study of cartpk.fit_population (SAEM) on ck_stein.

Each data set: ``--n-subjects`` subjects in three dose groups (1, 2 and 3 ×10^6 CAR-T
cells/kg, assigned in turn), 13 qPCR samples on the phase 1 days (0, 1, 4, 7, 10, 14, 21,
28, 60, 90, 180, 270, 365), simulated from the ck_stein closed form of DESIGN.md

    C(t) = C0·(DOSE/10^6)·e^(rho·min(t,tmax))·[(1−Fb)·e^(−alpha·(t−tmax)+) + Fb·e^(−beta·(t−tmax)+)]

with the typical values of data/README.md (Stein et al. 2019), log-normal between-subject
variability on C0, rho and alpha (SDs 0.5, 0.15 and 0.3 on the log scale), additive
residual error on the log scale (SD 0.2) and censoring below ``--lloq`` (DV = LLOQ,
CENS = 1; at the default 30 copies/µg most day 0 and about half the day 1 samples are
censored, and 5-20 % of those on days 60-365). Every data set is fitted with the README's
population model (random effects on C0, rho and alpha, covariate C0~DOSE whose truth is 0
because the model's dose link already carries dose_exp = 1) from start values away from the
truth (each typical value times e^N(0, ``--start-spread``²), drawn per data set).

Reported per parameter: relative bias (mean of (estimate − truth)/truth, in %) with its
Monte Carlo SE, relative RMSE, coverage of the 95 % CIs (Wald, on the estimation scale, from
the linearisation SEs) and PASS/FAIL against the targets of issue 5 (|relative bias| <= 10 %
for typical values, <= 25 % for between-subject SDs). C0~DOSE has truth 0: its bias and RMSE
are absolute. The per-data-set estimates go to ``--out`` (appended as each fit ends, so an
interrupted run keeps what it did; ``--resume`` skips data sets already there).
``--likelihood-check`` adds a convergence check that does not use cartpk: each data set's
−2LL at the estimates and at the generating truth by adaptive Gauss–Hermite quadrature on
the closed form (a maximum-likelihood estimate is never less likely than the truth), and
its distance from the maximum of that likelihood (L-BFGS-B iterations from the estimate).

Run:  .venv/bin/python benches/simest_popfit.py [--n-datasets 100] [--n-subjects 40]
      [--seed 1] [--n-iter 300 150] [--out benches/results/simest_popfit.csv]
      [--resume] [--likelihood-check]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from numpy.polynomial.hermite import hermgauss
from scipy import stats
from scipy.optimize import minimize
from scipy.special import log_ndtr, logsumexp

from cartpk.errors import FitWarning
from cartpk.model import load_model
from cartpk.population import fit_population

# tests/references.py: the ck_stein closed form the tests check against, shared here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import references  # noqa: E402

DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
DOSES = (1.0e6, 2.0e6, 3.0e6)  # CAR-T cells/kg
TYPICAL = {
    "C0": 24000 / 3900,  # copies/µg at 10^6 cells/kg
    "rho": np.log(3900) / 9.3,  # 1/day
    "tmax": 9.3,  # day
    "Fb": 0.0079,
    "alpha": 0.16,  # 1/day
    "beta": 0.0032,  # 1/day
}
OMEGA = {"C0": 0.5, "rho": 0.15, "alpha": 0.3}  # between-subject SD, log scale
SIGMA = 0.2  # residual SD, log scale
RANDOM = list(OMEGA)
COVARIATES = {"C0": ["DOSE"]}
TARGETS = {"typical": 10.0, "omega": 25.0}  # |relative bias| limits, %
LOG_2PI = float(np.log(2 * np.pi))
TRUTH = {
    **{(name, "typical"): value for name, value in TYPICAL.items()},
    ("C0~DOSE", "covariate"): 0.0,
    **{(name, "omega"): value for name, value in OMEGA.items()},
    ("CART_sigma", "sigma"): SIGMA,
}


def closed_form(t: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """ck_stein transgene level (copies/µg), subjects in rows, times t (days) in columns."""
    col = [np.asarray(p[name], dtype=float)[:, None] for name in TYPICAL]
    return references.stein_level(t[None, :], *col)


def simulate_trial(
    rng: np.random.Generator, n_subjects: int, lloq: float, days: np.ndarray = DAYS
) -> pd.DataFrame:
    """One simulated trial in the long data format (dose records and observations), sampled
    on ``days``."""
    dose = np.array([DOSES[k % len(DOSES)] for k in range(n_subjects)])
    p = {name: np.full(n_subjects, value) for name, value in TYPICAL.items()}
    for name, sd in OMEGA.items():
        p[name] = p[name] * np.exp(rng.normal(0.0, sd, n_subjects))
    p["C0"] = p["C0"] * dose / 1e6
    value = closed_form(days, p) * np.exp(rng.normal(0.0, SIGMA, (n_subjects, days.size)))
    censored = value < lloq
    ids = np.arange(1, n_subjects + 1)
    obs = pd.DataFrame(
        {
            "ID": np.repeat(ids, days.size),
            "TIME": np.tile(days, n_subjects),
            "DV": np.where(censored, lloq, value).ravel(),
            "CENS": censored.astype(int).ravel(),
            "EVID": 0,
            "AMT": np.nan,
            "DOSE": np.repeat(dose, days.size),
        }
    )
    doses = pd.DataFrame(
        {"ID": ids, "TIME": 0.0, "DV": np.nan, "CENS": 0, "EVID": 1, "AMT": dose, "DOSE": dose}
    )
    frame = pd.concat([doses, obs]).sort_values(["ID", "TIME", "EVID"], ascending=[1, 1, 0])
    return frame.assign(ANALYTE="CART", LLOQ=lloq).reset_index(drop=True)


def start_values(rng: np.random.Generator, spread: float) -> dict[str, float]:
    """Typical values times e^N(0, spread²), kept inside the model's bounds."""
    model = load_model("ck_stein")
    starts = {}
    for name, value in TYPICAL.items():
        p = model.parameters[name]
        starts[name] = float(np.clip(value * np.exp(rng.normal(0.0, spread)), p.lower, p.upper))
    return starts


def estimates_table(fit, truth: dict) -> pd.DataFrame:
    """One row per estimated population parameter: kind, truth, estimate, se, 95 % CI."""
    parts = {
        "typical": fit.fixed_effects[~fit.fixed_effects["parameter"].str.contains("~")],
        "covariate": fit.fixed_effects[fit.fixed_effects["parameter"].str.contains("~")],
        "omega": fit.omega_table,
        "sigma": fit.sigma,
    }
    rows = []
    for kind, table in parts.items():
        for row in table.itertuples():
            if (row.parameter, kind) in truth:
                rows.append(
                    {
                        "parameter": row.parameter,
                        "kind": kind,
                        "truth": truth[(row.parameter, kind)],
                        "estimate": row.estimate,
                        "se": row.se,
                        "ci95_low": row.ci95_low,
                        "ci95_high": row.ci95_high,
                    }
                )
    return pd.DataFrame(rows)


def fit_dataset(k: int, args: argparse.Namespace) -> pd.DataFrame:
    """Simulate data set k, fit it and return its estimates table."""
    rng = np.random.default_rng([args.seed, k])
    data = simulate_trial(rng, args.n_subjects, args.lloq)
    starts = start_values(rng, args.start_spread)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        fit = fit_population(
            "ck_stein", data, random=RANDOM, covariates=COVARIATES, params=starts,
            seed=args.seed * 100_003 + k, n_iter=tuple(args.n_iter), n_is=args.n_is,
            progress=False,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    table = estimates_table(fit, TRUTH)
    observed = data[data["EVID"] == 0]
    return table.assign(
        dataset=k,
        seconds=seconds,
        ofv=fit.ofv,
        censored_pct=100 * observed["CENS"].mean(),
        n_warnings=len(caught),
    )


# --- the marginal −2LL without cartpk: adaptive Gauss–Hermite quadrature on the closed form ---


def subject_arrays(frame: pd.DataFrame, theta: float) -> list[dict]:
    """Per subject: times, DV, censoring flags and the factor on C0 (dose link and the
    power-model covariate effect (DOSE/median)^theta)."""
    dose = frame.groupby("ID", sort=False)["DOSE"].first()
    median = float(np.median(dose))
    out = []
    for subject, g in frame[frame["EVID"] == 0].groupby("ID", sort=False):
        d = float(dose[subject])
        out.append(
            {
                "t": g["TIME"].to_numpy(float),
                "y": g["DV"].to_numpy(float),
                "cens": g["CENS"].to_numpy(bool),
                "c0_factor": d / 1e6 * (d / median) ** theta,
            }
        )
    return out


def data_m2ll(eta: np.ndarray, s: dict, typical: dict, random: list[str], sigma: float):
    """Data −2LL of subject s at random effects eta (k, d): Gaussian on log DV with the
    constant of log DV, M3 (−2 log Φ) for censored points; +inf where it overflows."""
    p = {name: np.full(eta.shape[0], typical[name]) for name in TYPICAL}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for j, name in enumerate(random):
            p[name] = p[name] * np.exp(eta[:, j])
        p["C0"] = p["C0"] * s["c0_factor"]
        z = (np.log(s["y"])[None, :] - np.log(closed_form(s["t"], p))) / sigma
        m2ll = np.where(s["cens"], -2 * log_ndtr(z), z**2 + 2 * np.log(sigma) + LOG_2PI)
        total = m2ll.sum(axis=1)
    return np.where(np.isnan(total), np.inf, total)


def marginal_m2ll(s, typical, random, omega_sd, sigma, nodes: int = 7) -> float:
    """−2 log ∫ p(y|eta) N(eta; 0, diag omega_sd²) d eta of one subject, by adaptive
    Gauss–Hermite quadrature (nodes per dimension) around the mode of the integrand."""
    d = len(random)
    omega_sd = np.asarray(omega_sd, dtype=float)

    def half_joint(eta):  # −log of the integrand, without the prior's normalising constant
        eta = np.atleast_2d(eta)
        prior = 0.5 * np.sum((eta / omega_sd) ** 2, axis=1)
        return 0.5 * data_m2ll(eta, s, typical, random, sigma) + prior

    with np.errstate(invalid="ignore"):  # BFGS probing where the model overflows
        mode = minimize(lambda e: half_joint(e)[0], np.zeros(d), method="BFGS").x
    h = 1e-4
    signs = np.array([1.0, -1.0, -1.0, 1.0])
    hessian = np.array(
        [
            [
                half_joint(np.array([mode + a + b, mode + a - b, mode - a + b, mode - a - b]))
                @ signs
                / (4 * h * h)
                for b in np.eye(d) * h
            ]
            for a in np.eye(d) * h
        ]
    )
    L = np.sqrt(2) * np.linalg.cholesky(np.linalg.inv(hessian))
    x, w = hermgauss(nodes)
    grid = np.stack(np.meshgrid(*[x] * d, indexing="ij"), -1).reshape(-1, d)
    weight = np.prod(np.stack(np.meshgrid(*[w] * d, indexing="ij"), -1).reshape(-1, d), axis=1)
    log_f = -half_joint(mode + grid @ L.T) + np.sum(grid**2, axis=1)
    log_prior_norm = -0.5 * d * LOG_2PI - np.log(omega_sd).sum()
    return float(-2 * (logsumexp(log_f, b=weight) + np.linalg.slogdet(L)[1] + log_prior_norm))


def to_vector(typical: dict, theta: float, omega_sd, sigma: float) -> np.ndarray:
    """The eleven population parameters on the estimation scale (log; logit for Fb; log
    SDs), in the order typical values (TYPICAL), C0~DOSE, omegas (RANDOM), sigma."""
    mu = [np.log(typical[n]) for n in TYPICAL]
    mu[list(TYPICAL).index("Fb")] = np.log(typical["Fb"] / (1 - typical["Fb"]))
    return np.array([*mu, theta, *np.log(omega_sd), np.log(sigma)])


def from_vector(x: np.ndarray) -> tuple[dict, float, np.ndarray, float]:
    """Inverse of :func:`to_vector`: (typical, theta, omega SDs, sigma)."""
    n = len(TYPICAL)
    typical = dict(zip(TYPICAL, np.exp(x[:n]), strict=True))
    typical["Fb"] = 1 / (1 + np.exp(-x[list(TYPICAL).index("Fb")]))
    return typical, float(x[n]), np.exp(x[n + 1 : n + 1 + len(RANDOM)]), float(np.exp(x[-1]))


def maximum_m2ll(
    frame, start: np.ndarray, gtol: float = 1e-5, maxiter: int = 15000
) -> tuple[float, np.ndarray, int]:
    """The maximum of the quadrature likelihood without cartpk: :func:`population_m2ll`
    minimised by scipy L-BFGS-B (finite-difference gradient) from the vector ``start``
    until the largest gradient component is below ``gtol`` or after ``maxiter``
    iterations; (−2LL, estimates, evaluations)."""
    found = minimize(
        lambda x: population_m2ll(frame, *from_vector(x)), start, method="L-BFGS-B",
        options={"ftol": 1e-12, "gtol": gtol, "eps": 1e-6, "maxfun": 3000, "maxiter": maxiter},
    )  # fmt: skip
    return float(found.fun), found.x, int(found.nfev)


def population_m2ll(frame, typical, theta, omega_sd, sigma, random=RANDOM, nodes=7) -> float:
    """−2LL of a trial under the population model (random effects on ``random``)."""
    return sum(
        marginal_m2ll(s, typical, random, omega_sd, sigma, nodes)
        for s in subject_arrays(frame, theta)
    )


def likelihood_check(args: argparse.Namespace, estimates: pd.DataFrame) -> pd.DataFrame:
    """Per data set (in parallel over the CPUs): the −2LL by quadrature at the estimates, at
    the generating truth and at the maximum found from the estimates.

    A maximum-likelihood estimate cannot be less likely than the truth; the difference
    −2LL(truth) − −2LL(estimate) is ~ chi²(11) when the fit is at the maximum. The maximum:
    up to CHECK_ITERATIONS L-BFGS-B iterations from the estimate (near a maximum each one
    takes most of what is left; the 0.5-unit question needs no more)."""
    groups = [(k, g, args) for k, g in estimates.groupby("dataset")]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = list(pool.map(check_dataset, groups))
    return pd.DataFrame(rows)


CHECK_ITERATIONS = 5


def check_dataset(item: tuple[int, pd.DataFrame, argparse.Namespace]) -> dict:
    k, g, args = item
    data = simulate_trial(np.random.default_rng([args.seed, k]), args.n_subjects, args.lloq)
    e = g.set_index(["kind", "parameter"])["estimate"]
    typical = {n: e[("typical", n)] for n in TYPICAL}
    population = (
        typical, e[("covariate", "C0~DOSE")], [e[("omega", n)] for n in RANDOM],
        e[("sigma", "CART_sigma")],
    )  # fmt: skip
    at_estimate = population_m2ll(data, *population)
    at_truth = population_m2ll(data, TYPICAL, 0.0, [OMEGA[n] for n in RANDOM], SIGMA)
    at_max, _, _ = maximum_m2ll(data, to_vector(*population), maxiter=CHECK_ITERATIONS)
    at_max = min(at_max, at_estimate)
    return {
        "dataset": k,
        "ofv_is": g["ofv"].iloc[0],
        "m2ll_estimate": at_estimate,
        "m2ll_truth": at_truth,
        "m2ll_max": at_max,
        "truth_minus_estimate": at_truth - at_estimate,
        "estimate_minus_max": at_estimate - at_max,
    }


def summarise(estimates: pd.DataFrame) -> pd.DataFrame:
    """Per parameter: bias, its Monte Carlo SE, RMSE, CI coverage and PASS/FAIL."""
    rows = []
    for (kind, name), g in estimates.groupby(["kind", "parameter"], sort=False):
        truth = g["truth"].iloc[0]
        error = g["estimate"] - truth
        relative = truth != 0
        e = 100 * error / truth if relative else error
        covered = (g["ci95_low"] <= truth) & (truth <= g["ci95_high"])
        with_ci = g["se"].notna()
        bias = e.mean()
        target = TARGETS.get(kind)
        verdict = "-" if target is None else ("PASS" if abs(bias) <= target else "FAIL")
        rows.append(
            {
                "parameter": name,
                "kind": kind,
                "truth": truth,
                "n": len(g),
                "mean_estimate": g["estimate"].mean(),
                "bias": bias,
                "bias_mcse": e.std(ddof=1) / np.sqrt(len(g)) if len(g) > 1 else np.nan,
                "rmse": float(np.sqrt(np.mean(e**2))),
                "relative": relative,
                "coverage_pct": 100 * covered[with_ci].mean() if with_ci.any() else np.nan,
                "n_with_se": int(with_ci.sum()),
                "target_pct": target,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| parameter | truth | mean estimate | bias | MC SE of bias | RMSE | 95 % CI coverage "
        "| target | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary.itertuples():
        unit = " %" if r.relative else " (abs.)"
        name = r.parameter if r.kind in ("typical", "covariate") else f"{r.kind} {r.parameter}"
        target = "-" if pd.isna(r.target_pct) else f"±{r.target_pct:g} %"
        lines.append(
            f"| {name} | {r.truth:.4g} | {r.mean_estimate:.4g} | {r.bias:+.2f}{unit} | "
            f"{r.bias_mcse:.2f} | {r.rmse:.2f}{unit} | {r.coverage_pct:.1f} % "
            f"({r.n_with_se}) | {target} | {r.verdict} |"
        )
    return "\n".join(lines)


def source_version() -> str:
    """The git commit of the checkout, marked when src/ has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return run.stdout.strip() if run.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted src/ changes" if git("status", "--porcelain", "src") else "")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-datasets", type=int, default=100)
    parser.add_argument("--n-subjects", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-iter", type=int, nargs=2, default=[300, 150])
    parser.add_argument("--n-is", type=int, default=1000)
    parser.add_argument("--lloq", type=float, default=30.0, help="copies/µg")
    parser.add_argument("--start-spread", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=Path("benches/results/simest_popfit.csv"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--likelihood-check",
        action="store_true",
        help="also compute each data set's −2LL at the estimates and at the truth by quadrature",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done: set[int] = set()
    if args.resume and args.out.exists():
        done = set(pd.read_csv(args.out)["dataset"])
    elif args.out.exists():
        args.out.unlink()
    started = time.perf_counter()
    version = source_version()
    for k in range(args.n_datasets):
        if k in done:
            continue
        table = fit_dataset(k, args)
        header = not args.out.exists()
        table.to_csv(args.out, mode="a", header=header, index=False, float_format="%.8g")
        print(f"data set {k}: {table['seconds'].iloc[0]:.1f} s", file=sys.stderr, flush=True)
    estimates = pd.read_csv(args.out)
    print(
        f"ck_stein simulation-estimation: {estimates['dataset'].nunique()} data sets of "
        f"{args.n_subjects} subjects × {DAYS.size} samples, LLOQ {args.lloq:g} copies/µg "
        f"({estimates.groupby('dataset')['censored_pct'].first().mean():.1f} % censored), "
        f"n_iter {tuple(args.n_iter)}, n_is {args.n_is}, seed {args.seed}, numba threads "
        f"{numba.get_num_threads()}; fit time per data set: median "
        f"{estimates.groupby('dataset')['seconds'].first().median():.1f} s; wall time of this "
        f"run {time.perf_counter() - started:.0f} s; cartpk at {version}\n"
    )
    print(markdown(summarise(estimates)))
    command = f"{os.path.relpath(sys.executable)} benches/simest_popfit.py " + " ".join(
        sys.argv[1:]
    )
    print(f"\nper-data-set estimates: {args.out}; command: `{command.strip()}`")
    if args.likelihood_check:
        report_likelihood(likelihood_check(args, estimates), args.out)


def report_likelihood(check: pd.DataFrame, out: Path) -> None:
    """Print how often the fit is less likely than the truth; save the per-data-set table."""
    path = out.with_name(f"{out.stem}_m2ll.csv")
    check.to_csv(path, index=False, float_format="%.8g")
    n_params = len(TRUTH)
    worse = int((check["truth_minus_estimate"] < 0).sum())
    print(
        f"\nconvergence check (−2LL by adaptive Gauss–Hermite quadrature on the closed form, "
        f"7 nodes per random effect): the estimate is less likely than the generating truth "
        f"in {worse} of {len(check)} data sets (expected ~0 at the maximum: "
        f"−2LL(truth) − −2LL(estimate) ~ chi²({n_params}), median "
        f"{stats.chi2.median(n_params):.1f}); observed median "
        f"{check['truth_minus_estimate'].median():.1f}, min "
        f"{check['truth_minus_estimate'].min():.1f}; |IS − quadrature| −2LL at the estimate: "
        f"median {np.median(np.abs(check['ofv_is'] - check['m2ll_estimate'])):.2f}. "
        f"Table: {path}"
    )
    gap = check["estimate_minus_max"]
    print(
        f"distance from the maximum (the same quadrature, {CHECK_ITERATIONS} L-BFGS-B "
        f"iterations from each estimate): {100 * (gap <= 0.5).mean():.0f} % of fits within "
        f"0.5 −2LL units, "
        f"{100 * (gap <= 0.1).mean():.0f} % within 0.1; median {gap.median():.4f}, max "
        f"{gap.max():.4f}"
    )


if __name__ == "__main__":
    main()
