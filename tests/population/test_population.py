"""Population fits (SAEM): validation against independent references.

References: the generating truth of the bundled phase 1 trial (data/README.md); data sets
simulated here from the ck_stein closed form (the simulation-estimation script in benches/,
run reduced); the marginal −2LL computed without cartpk, by scipy quad (one random effect)
or adaptive Gauss–Hermite quadrature (three), on the closed form; hand-computed covariate
design columns. Fits use reduced iterations where the check allows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import central_hessian, marginal_m2ll_1d
from scipy import integrate, optimize, stats
from scripts import load_script

from cartpk.data import as_dataset
from cartpk.errors import FitError
from cartpk.individual import FitWarning
from cartpk.population import build_design, fit_population
from cartpk.scales import to_estimation, to_natural

ROOT = Path(__file__).resolve().parents[2]
TRIAL = ROOT / "data" / "phase1_trial.csv"


def _load_simest():
    """benches/simest_popfit.py as a module: its simulator, truth and summary."""
    return load_script(ROOT / "benches" / "simest_popfit.py")


SIMEST = _load_simest()
TRUTH = SIMEST.TYPICAL  # the generating truth of data/README.md (same numbers)
OMEGA = SIMEST.OMEGA
README_MODEL = {"random": ["C0", "rho", "alpha"], "covariates": {"C0": ["DOSE"]}}
WITHIN_SE = 2.5


# --- independent references: the marginal -2LL without cartpk ------------------------------
# benches/simest_popfit.py holds the closed form, the data −2LL (log error, M3) and its
# adaptive Gauss–Hermite integral over the random effects; scipy quad checks it in 1-D.

data_m2ll = SIMEST.data_m2ll
subject_arrays = SIMEST.subject_arrays
population_m2ll = SIMEST.population_m2ll
marginal_aghq = SIMEST.marginal_m2ll


def marginal_quad(s, typical, omega_sd, sigma) -> float:
    """−2 log ∫ p(y|eta) N(eta; 0, omega²) d eta over a random effect on C0, by scipy quad
    (the posterior SD is < 0.1 here, so ± 3 around the mode holds the whole mass)."""

    def m2ll(e: float) -> float:
        return data_m2ll(np.array([[e]]), s, typical, ["C0"], sigma)[0]

    return marginal_m2ll_1d(m2ll, omega_sd, 3.0)


# --- fits shared by several tests ----------------------------------------------------------


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return fit_population(*args, progress=False, **kwargs)


@pytest.fixture(scope="module")
def trial_fit():
    """The README's population model on the bundled trial, default iterations."""
    return quiet_fit("ck_stein", TRIAL, seed=1, **README_MODEL)


@pytest.fixture(scope="module")
def trial_frame() -> pd.DataFrame:
    return pd.read_csv(TRIAL)


@pytest.fixture(scope="module")
def reduced_study() -> pd.DataFrame:
    """The simulation-estimation script, reduced: 3 data sets of 40, fewer iterations."""
    args = SIMEST.parse(["--n-datasets", "3", "--n-iter", "100", "50", "--n-is", "100"])
    return pd.concat([SIMEST.fit_dataset(k, args) for k in range(args.n_datasets)])


def small_trial(n: int, seed: int, lloq: float = 30.0) -> pd.DataFrame:
    return SIMEST.simulate_trial(np.random.default_rng(seed), n, lloq)


# --- determinism ------------------------------------------------------------------------------

FIT_AND_PRINT = """
import json, sys, warnings
import numpy as np, pandas as pd
from cartpk.population import fit_population
warnings.simplefilter("ignore")
data = pd.read_csv(sys.argv[1])
for seed in sys.argv[2:]:
    fit = fit_population("ck_stein", data, random=["C0", "rho", "alpha"],
                         covariates={"C0": ["DOSE"]}, seed=int(seed), n_iter=(6, 4),
                         n_is=50, progress=False)
    print(json.dumps({"mu": fit.mu, "theta": fit.theta, "omega": fit.omega.ravel().tolist(),
                      "sigma": fit.sigma_values["CART"]["sigma"], "ofv": fit.ofv,
                      "modes": fit.phi_mode.ravel().tolist(),
                      "history": fit.history.to_numpy().ravel().tolist()}))
"""


def fits_in_subprocess(path: Path, threads: int, seeds: list[int]) -> list[np.ndarray]:
    """Estimates (flattened) of fits with the given seeds, in a fresh interpreter."""
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    run = subprocess.run(
        [sys.executable, "-c", FIT_AND_PRINT, str(path), *map(str, seeds)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [flat(json.loads(line)) for line in run.stdout.strip().splitlines()[-len(seeds) :]]


def flat(result: dict) -> np.ndarray:
    values = [*result["mu"].values(), *result["theta"].values(), *result["omega"]]
    return np.array([*values, result["sigma"], result["ofv"], *result["modes"], *result["history"]])


def test_same_seed_same_estimates_whatever_the_thread_count(tmp_path, trial_frame) -> None:
    path = tmp_path / "eight.csv"
    trial_frame[trial_frame["ID"].isin([1, 2, 11, 12, 13, 21, 22, 23])].to_csv(path, index=False)
    (one,) = fits_in_subprocess(path, 1, [7])
    two, other_seed = fits_in_subprocess(path, 2, [7, 8])
    np.testing.assert_allclose(one, two, rtol=1e-12, atol=0)
    assert not np.allclose(two, other_seed, rtol=1e-6)


# --- the bundled phase 1 trial against its generating truth -----------------------------------


@pytest.mark.parametrize("name", ["C0", "rho", "tmax", "Fb", "alpha", "beta"])
def test_trial_typical_values_within_se_of_truth(trial_fit, name: str) -> None:
    row = trial_fit.fixed_effects.set_index("parameter").loc[name]
    assert abs(row["estimate"] - TRUTH[name]) <= WITHIN_SE * row["se"], row


def test_trial_dose_coefficient_and_residual_sd(trial_fit) -> None:
    dose = trial_fit.fixed_effects.set_index("parameter").loc["C0~DOSE"]
    assert abs(dose["estimate"]) <= WITHIN_SE * dose["se"]  # truth 0: dose_exp = 1 carries it
    sigma = trial_fit.sigma.set_index("parameter").loc["CART_sigma"]
    assert abs(sigma["estimate"] - 0.2) <= WITHIN_SE * sigma["se"]
    assert trial_fit.errors["CART"][0] == "log"


@pytest.mark.parametrize("name", ["C0", "rho", "alpha"])
def test_trial_between_subject_sds_within_se_of_truth(trial_fit, name: str) -> None:
    row = trial_fit.omega_table.set_index("parameter").loc[name]
    assert abs(row["estimate"] - OMEGA[name]) <= WITHIN_SE * row["se"], row


def fitted_population(fit) -> tuple[dict, float, np.ndarray, float]:
    omega_sd = np.sqrt(np.diag(fit.omega))
    return fit.typical(), fit.theta["C0~DOSE"], omega_sd, fit.sigma_values["CART"]["sigma"]


def test_trial_ofv_by_importance_sampling_matches_quadrature(trial_fit, trial_frame) -> None:
    typical, theta, omega_sd, sigma = fitted_population(trial_fit)
    random = README_MODEL["random"]
    reference = population_m2ll(trial_frame, typical, theta, omega_sd, sigma, random)
    assert abs(trial_fit.ofv - reference) <= 3 * trial_fit.ofv_se
    # at the default 1,000 draws the mode-centred, correlated proposal is within half a
    # unit of the quadrature value (the issue-18 target for a trustworthy -2LL)
    assert abs(trial_fit.ofv - reference) <= 0.5, (trial_fit.ofv, reference, trial_fit.ofv_se)
    # the fit's own quadrature (7^3 nodes, centred on its conditional modes) against the
    # reference's (7^3 nodes, centred by BFGS on its own closed form)
    assert trial_fit.ofv_quadrature == pytest.approx(reference, abs=1e-5)
    assert trial_fit.aic == pytest.approx(trial_fit.ofv + 2 * 11)


def test_trial_conditional_modes_match_scipy_bfgs(trial_fit, trial_frame) -> None:
    """Each subject's mode (batched Newton on the kernels) against scipy BFGS at gtol 1e-9
    on the independent closed form, at the fitted population parameters."""
    typical, theta, omega_sd, sigma = fitted_population(trial_fit)
    random = README_MODEL["random"]
    columns = [trial_fit.model.param_names.index(n) for n in random]
    eta = (trial_fit.phi_mode - trial_fit.design)[:, columns]

    def posterior(e, s):
        return data_m2ll(e[None], s, typical, random, sigma)[0] + np.sum((e / omega_sd) ** 2)

    for i, s in enumerate(subject_arrays(trial_frame, theta)):
        found = optimize.minimize(posterior, np.zeros(len(random)), args=(s,), method="BFGS",
                                  options={"gtol": 1e-9})  # fmt: skip
        np.testing.assert_allclose(eta[i], found.x, atol=1e-6, err_msg=f"subject {i}")


def test_importance_sampling_proposal_density_is_scipy_multivariate_t() -> None:
    from cartpk.population.marginal import IS_DF, multivariate_t_logpdf

    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    scale = a @ a.T + np.eye(3)
    centre = rng.normal(size=3)
    x = rng.normal(size=(1, 5, 3))
    got = multivariate_t_logpdf(x, centre[None, None, :], np.linalg.cholesky(scale)[None])
    expected = stats.multivariate_t(centre, scale, df=IS_DF).logpdf(x[0])
    np.testing.assert_allclose(got[0], expected, rtol=1e-12)


def test_trial_estimates_at_least_as_likely_as_the_truth(trial_fit, trial_frame) -> None:
    """A maximum-likelihood estimate cannot have a higher −2LL than the generating truth."""
    typical, theta, omega_sd, sigma = fitted_population(trial_fit)
    random = README_MODEL["random"]
    at_estimate = population_m2ll(trial_frame, typical, theta, omega_sd, sigma, random)
    omega_true = [OMEGA[n] for n in random]
    at_truth = population_m2ll(trial_frame, TRUTH, 0.0, omega_true, SIMEST.SIGMA, random)
    assert at_estimate <= at_truth


# --- reduced simulation-estimation study ----------------------------------------------------


def test_reduced_study_bias_within_targets_where_the_study_can_tell(reduced_study) -> None:
    """Bias target ± 3 Monte Carlo SEs, the SE of a mean of m estimates being
    rms(SE)/sqrt(m) from the fits' own SEs; parameters whose 3 MC SEs exceed the target
    are not judged by a study this small (at least the well-determined ones must be)."""
    summary = SIMEST.summarise(reduced_study).set_index(["kind", "parameter"])
    judged, misses = [], []
    for (kind, name), g in reduced_study.groupby(["kind", "parameter"]):
        target = SIMEST.TARGETS.get(kind)
        if target is None:
            continue
        mcse = 100 * np.sqrt(np.mean(g["se"] ** 2)) / g["truth"].iloc[0] / np.sqrt(len(g))
        if 3 * mcse > target:
            continue
        judged.append(name if kind == "typical" else f"omega_{name}")
        bias = summary.loc[(kind, name), "bias"]
        if abs(bias) > target + 3 * mcse:
            misses.append(f"{kind} {name}: bias {bias:+.1f} % > {target} + 3 x {mcse:.1f} %")
    assert {"rho", "alpha", "tmax", "omega_rho", "omega_alpha"} <= set(judged), judged
    assert not misses, misses


def test_reduced_study_ci_coverage(reduced_study) -> None:
    """Pooled 95 % CIs over parameters and data sets: misses no more than the 0.999
    binomial quantile at 5 %."""
    covered = (reduced_study["ci95_low"] <= reduced_study["truth"]) & (
        reduced_study["truth"] <= reduced_study["ci95_high"]
    )
    n = len(covered)
    assert (~covered).sum() <= stats.binom.ppf(0.999, n, 0.05), reduced_study[~covered]


# --- covariate design -------------------------------------------------------------------------


def test_covariate_design_power_model_and_indicators(stein) -> None:
    data = small_trial(6, seed=3)
    subject = pd.DataFrame(
        {
            "ID": range(1, 7),
            "WT": [50.0, 60.0, 70.0, 80.0, 90.0, 100.0],
            "SEX": ["F", "F", "F", "M", "M", "F"],
            "PRIOR_SCT": [0, 1, 0, 0, 1, 0],
        }
    )
    data = data.merge(subject, on="ID")
    design = build_design(
        stein, as_dataset(data), ["C0", "alpha"],
        {"C0": ["WT", "DOSE"], "alpha": ["SEX", "PRIOR_SCT"]}, None, "diagonal", None,
    )  # fmt: skip
    columns = {c.label: c for c in design.columns}
    assert list(columns) == ["C0~WT", "C0~DOSE", "alpha~SEX[M]", "alpha~PRIOR_SCT[1]"]
    np.testing.assert_allclose(columns["C0~WT"].values, np.log(subject["WT"] / 75.0))
    doses = np.array([1e6, 2e6, 3e6, 1e6, 2e6, 3e6])
    np.testing.assert_allclose(columns["C0~DOSE"].values, np.log(doses / 2e6))
    np.testing.assert_array_equal(columns["alpha~SEX[M]"].values, [0, 0, 0, 1, 1, 0])
    assert columns["alpha~SEX[M]"].reference == "F"
    np.testing.assert_array_equal(columns["alpha~PRIOR_SCT[1]"].values, [0, 1, 0, 0, 1, 0])
    mu = np.log([6.0, 0.9, 9.3, 0.0079, 0.16, 0.0032, 1.0])
    mu[stein.param_names.index("Fb")] = np.log(0.0079 / (1 - 0.0079))
    mu[stein.param_names.index("dose_exp")] = 1.0
    theta = np.array([0.75, -0.2, 0.4, -0.3])
    mean = design.mean(mu, theta)
    c0 = 6.0 * (subject["WT"] / 75.0) ** 0.75 * (doses / 2e6) ** -0.2
    alpha = 0.16 * np.exp(0.4 * (subject["SEX"] == "M") - 0.3 * subject["PRIOR_SCT"])
    np.testing.assert_allclose(np.exp(mean[:, stein.param_names.index("C0")]), c0)
    np.testing.assert_allclose(np.exp(mean[:, stein.param_names.index("alpha")]), alpha)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"random": ["C0", "gamma"]}, "unknown parameters ['gamma']"),
        ({"covariates": {"kgrow": ["DOSE"]}}, "unknown parameters ['kgrow']"),
        ({"random": ["C0", "dose_exp"]}, "['dose_exp'] are fixed"),
        (
            {"random": ["C0", "beta"], "params": {"beta": {"value": 0.003, "vary": False}}},
            "['beta'] are fixed",
        ),
        ({"covariates": {"C0": ["AGE"]}}, "covariate 'AGE' (on C0) is not a column"),
        ({"omega": "full"}, "omega 'full'"),
        ({"n_iter": (0, 10)}, "n_iter (0, 10)"),
        ({"n_iter": (10, 0)}, "both phases need at least 1 iteration"),
        ({"polish": "yes"}, "polish 'yes': expected True or False"),
    ],
)
def test_bad_requests_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(FitError) as caught:
        fit_population("ck_stein", small_trial(4, seed=1), **{"random": ["C0"], **kwargs})
    assert message in str(caught.value)


def test_one_subject_and_missing_covariate_values_are_refused() -> None:
    data = small_trial(4, seed=1)
    with pytest.raises(FitError, match="at least 2 subjects"):
        fit_population("ck_stein", data[data["ID"] == 1])
    gappy = data.assign(WT=np.where(data["ID"] == 3, np.nan, 70.0))
    with pytest.raises(FitError, match=r"covariate WT: missing for IDs \[3\]"):
        fit_population("ck_stein", gappy, covariates={"C0": ["WT"]})


# --- residual error models and censoring -------------------------------------------------------

FIXED_KINETICS = {n: {"value": TRUTH[n], "vary": False} for n in ("rho", "tmax", "Fb", "beta")}


def error_model_trial(kind: str, a: float, b: float, n: int, seed: int, lloq: float):
    """Subjects with IIV on C0 and alpha and a linear-scale residual error; M3 below lloq."""
    rng = np.random.default_rng(seed)
    dose = np.array([SIMEST.DOSES[k % 3] for k in range(n)])
    p = {name: np.full(n, value) for name, value in TRUTH.items()}
    p["C0"] = p["C0"] * dose / 1e6 * np.exp(rng.normal(0, OMEGA["C0"], n))
    p["alpha"] = p["alpha"] * np.exp(rng.normal(0, OMEGA["alpha"], n))
    f = SIMEST.closed_form(SIMEST.DAYS, p)
    y = f + np.sqrt(a**2 + (b * f) ** 2) * rng.standard_normal(f.shape)
    censored = y < lloq
    frame = pd.DataFrame(
        {
            "ID": np.repeat(np.arange(1, n + 1), SIMEST.DAYS.size),
            "TIME": np.tile(SIMEST.DAYS, n),
            "DV": np.where(censored, lloq, y).ravel(),
            "CENS": censored.ravel().astype(int),
            "LLOQ": lloq,
            "DOSE": np.repeat(dose, SIMEST.DAYS.size),
        }
    )
    return frame, censored.mean()


@pytest.mark.parametrize(
    ("kind", "truth", "lloq"),
    [("proportional", {"b": 0.15}, 1e-3), ("combined", {"a": 20.0, "b": 0.15}, 10.0)],
)
def test_error_models_recover_their_parameters(kind: str, truth: dict, lloq: float) -> None:
    data, censored = error_model_trial(kind, truth.get("a", 0.0), truth["b"], 30, 11, lloq)
    assert (censored > 0.02) == (lloq > 1)  # the combined case goes through M3
    fit = quiet_fit(
        "ck_stein", data, random=["C0", "alpha"], error={"CART": kind},
        params=FIXED_KINETICS, n_iter=(150, 80), n_is=200, seed=2,
    )  # fmt: skip
    table = fit.sigma.set_index("parameter")
    for name, value in truth.items():
        row = table.loc[f"CART_{name}"]
        assert row["error_model"] == kind
        assert abs(row["estimate"] - value) <= WITHIN_SE * row["se"], row
    omega = fit.omega_table.set_index("parameter")
    for name in ("C0", "alpha"):
        assert abs(omega.loc[name, "estimate"] - OMEGA[name]) <= WITHIN_SE * omega.loc[name, "se"]


def test_censored_ofv_matches_quad_one_random_effect() -> None:
    """One random effect (C0), everything else fixed: each subject's −2LL is a 1-D integral
    (M3 terms included); the IS total must agree within 3 Monte Carlo SEs."""
    data = small_trial(8, seed=21, lloq=60.0)
    assert data["CENS"].sum() >= 8
    fixed = {n: {"value": TRUTH[n], "vary": False} for n in TRUTH if n != "C0"}
    fit = quiet_fit(
        "ck_stein", data, random=["C0"], params=fixed, n_iter=(20, 20), n_is=4000, seed=3
    )
    typical = fit.typical()
    omega_sd = float(np.sqrt(fit.omega[0, 0]))
    sigma = fit.sigma_values["CART"]["sigma"]
    subjects = subject_arrays(data, theta=0.0)
    by_quad = sum(marginal_quad(s, typical, omega_sd, sigma) for s in subjects)
    assert abs(fit.ofv - by_quad) <= 3 * fit.ofv_se
    by_aghq = sum(marginal_aghq(s, typical, ["C0"], [omega_sd], sigma, 9) for s in subjects)
    assert by_aghq == pytest.approx(by_quad, abs=1e-6)  # the 3-D reference, checked in 1-D
    assert fit.ofv_quadrature == pytest.approx(by_quad, abs=1e-6)


def test_polished_estimates_are_the_scipy_quad_maximum_one_random_effect() -> None:
    """One random effect (C0), the rest fixed, a short SAEM run (20 + 20 iterations): the
    −2LL by scipy quad per subject, by central differences along log C0, log omega and
    log sigma (2 % of each SE each way), is flat at the polished estimates: each slope
    times the SE within 0.02 (0.01 SE from the maximum)."""
    data = small_trial(8, seed=21, lloq=60.0)
    fixed = {n: {"value": TRUTH[n], "vary": False} for n in TRUTH if n != "C0"}
    fit = quiet_fit(
        "ck_stein", data, random=["C0"], params=fixed, n_iter=(20, 20), n_is=200, seed=3
    )
    subjects = subject_arrays(data, theta=0.0)

    def m2ll(x):
        typical = TRUTH | {"C0": float(np.exp(x[0]))}
        return sum(marginal_quad(s, typical, np.exp(x[1]), np.exp(x[2])) for s in subjects)

    x = np.log([fit.typical()["C0"], np.sqrt(fit.omega[0, 0]), fit.sigma_values["CART"]["sigma"]])
    se = np.sqrt(np.diag(fit.covariance))
    se[1] /= np.exp(x[1])  # omega's SE is of the SD; sigma's is already on the log scale
    slopes = [
        (m2ll(x + 0.02 * v * e) - m2ll(x - 0.02 * v * e)) / (0.04 * v) * v
        for v, e in zip(se, np.eye(3), strict=True)
    ]
    assert np.max(np.abs(slopes)) <= 0.02, slopes
    assert fit.ofv_quadrature == pytest.approx(m2ll(x), abs=1e-6)
    assert fit.settings["polish"]["reason"] == "" and fit.settings["polish"]["steps"] >= 1


def test_polished_trial_fit_is_at_the_independent_quadrature_maximum(
    trial_fit, trial_frame
) -> None:
    """The bundled trial, eleven parameters: the reference −2LL (the independent 3-D AGHQ)
    by central differences along each estimate, 2 % of its SE each way. At the maximum each
    directional slope times the SE is near 0; the unpolished SAEM fits of issue 18 sat 0.7
    SE off along tmax, a slope near 1.4 units per SE."""
    typical, theta, omega_sd, sigma = fitted_population(trial_fit)
    random = README_MODEL["random"]
    model = trial_fit.model
    se = pd.Series(np.sqrt(np.diag(trial_fit.covariance)), index=trial_fit.theta_names)

    def m2ll(name: str, delta: float) -> float:
        t, th, om, sg = dict(typical), theta, np.array(omega_sd), sigma
        if name.startswith("mu_"):
            p = model.parameters[name[3:]]
            x = to_estimation(t[name[3:]], p.scale, p.lower, p.upper) + delta
            t[name[3:]] = float(to_natural(x, p.scale, p.lower, p.upper))
        elif name == "C0~DOSE":
            th += delta
        elif name.startswith("omega_"):
            om[random.index(name[6:])] += delta
        else:  # the error parameter's SE is on the log scale
            sg *= np.exp(delta)
        return population_m2ll(trial_frame, t, th, om, sg, random)

    slopes = {}
    for name, value in se.items():
        step = 0.02 * value
        slopes[name] = (m2ll(name, step) - m2ll(name, -step)) / (2 * step) * value
    assert max(abs(v) for v in slopes.values()) <= 0.1, str(slopes)


def test_unpolished_fit_keeps_the_saem_estimates(trial_fit) -> None:
    fit = quiet_fit("ck_stein", TRIAL, seed=1, polish=False, **README_MODEL)
    last = fit.history.iloc[-1]
    for name, value in fit.mu.items():
        assert value == last[f"mu_{name}"]
    assert fit.settings["polish"]["reason"] == "not asked for"
    assert "not polished (not asked for)" in fit.summary()
    assert trial_fit.ofv_quadrature < fit.ofv_quadrature
    assert "estimates polished to the quadrature maximum" in trial_fit.summary()


def test_bfgs_update_meets_the_secant_equation() -> None:
    from cartpk.population.polish import bfgs

    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 4))
    C = a @ a.T + np.eye(4)
    s, y = rng.normal(size=4), rng.normal(size=4)
    y = y if y @ s > 0 else -y
    new = bfgs(C, s, y)
    np.testing.assert_allclose(new @ y, s, rtol=1e-10)
    np.testing.assert_allclose(new, new.T, rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(new) > 0)
    assert bfgs(C, s, -y) is C  # the curvature condition fails: no update


def brute_force_m2ll(s, typical, random, omega_sd, sigma, half_width=8.0, points=401) -> float:
    """−2 log ∫∫ p(y|eta) N(eta; 0, diag omega_sd²) d eta over two random effects by Simpson's
    rule on a dense grid around the mode of the integrand (found here by Nelder–Mead), the
    box ``half_width`` posterior SDs (from a finite-difference Hessian) wide each way."""

    def neg_log(eta):
        eta = np.atleast_2d(eta)
        return 0.5 * data_m2ll(eta, s, typical, random, sigma) + 0.5 * np.sum(
            (eta / omega_sd) ** 2, axis=1
        )

    mode = optimize.minimize(lambda e: neg_log(e)[0], np.zeros(2), method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12}).x  # fmt: skip
    hessian = central_hessian(lambda e: neg_log(e)[0], mode, 1e-4)
    sd = np.sqrt(np.diag(np.linalg.inv(hessian)))
    axes = [
        np.linspace(m - half_width * v, m + half_width * v, points)
        for m, v in zip(mode, sd, strict=True)
    ]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    peak = neg_log(mode[None, :])[0]
    values = np.exp(-(neg_log(grid) - peak)).reshape(points, points)
    inner = integrate.simpson(values, x=axes[1], axis=1)
    area = integrate.simpson(inner, x=axes[0])
    log_norm = -np.log(2 * np.pi) - np.log(omega_sd).sum()
    return float(-2 * (np.log(area) - peak + log_norm))


def test_quadrature_matches_brute_force_two_random_effects() -> None:
    """C0 and rho random (correlated a posteriori), the rest fixed, some points censored:
    the fit's quadrature −2LL against a dense Simpson grid at the fit's own estimates."""
    data = small_trial(6, seed=22, lloq=60.0)
    assert data["CENS"].sum() >= 4
    fixed = {n: {"value": TRUTH[n], "vary": False} for n in TRUTH if n not in ("C0", "rho")}
    fit = quiet_fit(
        "ck_stein", data, random=["C0", "rho"], params=fixed, n_iter=(30, 20), n_is=500, seed=4
    )
    typical = fit.typical()
    omega_sd = np.sqrt(np.diag(fit.omega))
    sigma = fit.sigma_values["CART"]["sigma"]
    subjects = subject_arrays(data, theta=0.0)
    brute = sum(brute_force_m2ll(s, typical, ["C0", "rho"], omega_sd, sigma) for s in subjects)
    assert fit.ofv_quadrature == pytest.approx(brute, abs=1e-6)
    assert abs(fit.ofv - brute) <= 3 * fit.ofv_se + 0.05


# --- block Omega ----------------------------------------------------------------------------


def test_block_omega_runs_and_is_positive_definite() -> None:
    fit = quiet_fit(
        "ck_stein", small_trial(20, seed=5), random=["C0", "rho", "alpha"], omega="block",
        params=FIXED_KINETICS | {"rho": TRUTH["rho"]}, n_iter=(40, 20), n_is=100, seed=4,
    )  # fmt: skip
    assert fit.omega.shape == (3, 3)
    np.testing.assert_array_equal(fit.omega, fit.omega.T)
    assert np.all(np.linalg.eigvalsh(fit.omega) > 0)
    assert fit.omega[0, 1] != 0 and fit.omega[0, 2] != 0
    assert "omega_rho,C0" in fit.theta_names
    corr = fit.correlation().to_numpy()
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 1)
