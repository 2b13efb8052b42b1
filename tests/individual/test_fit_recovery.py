"""Issue 4 validation: individual ck_stein fits recover the truth they were simulated from.

Every data set is simulated with the closed form of ck_stein (tests/references.py ``stein_level``)
at the 13 sampling days, with multiplicative log-normal noise; the references are the
truth, an independent closed-form likelihood minimised by scipy, and hand calculations.
The truth has tmax between two sampling days: with tmax on a sampling day (day 10, as in
test_fit.py) the optimum often sits on the kink the likelihood has there (that sample
switches from the expansion to the contraction branch), where derivative-based
optimisers and finite-difference Hessians are unreliable.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from references import central_hessian
from references import stein_level as closed_form
from scipy.optimize import minimize
from scipy.special import log_ndtr
from scipy.stats import t as student_t
from test_fit import DAYS

from cartpk.individual import FitWarning, fit
from cartpk.model import Model

KINETIC = ["C0", "rho", "tmax", "Fb", "alpha", "beta"]
TRUTH = {"C0": 3.0, "rho": 0.8, "tmax": 12.0, "Fb": 0.015, "alpha": 0.18, "beta": 0.005}
NOISE_SD = 0.2
SEEDS = range(1, 21)
LOG_2PI = float(np.log(2 * np.pi))
SIGMA_ROW = {"CART_sigma": "sigma"}


def simulate(truth: dict, seed: int, sd: float, days: np.ndarray = DAYS) -> pd.DataFrame:
    """One subject: ID, TIME (day), DV (copies/µg) = closed form × exp(N(0, sd))."""
    rng = np.random.default_rng(seed)
    dv = closed_form(days, *truth.values()) * np.exp(rng.normal(0.0, sd, days.size))
    return pd.DataFrame({"ID": 1, "TIME": days, "DV": dv})


def censor(data: pd.DataFrame, lloq: float) -> pd.DataFrame:
    """Points below ``lloq`` become CENS = 1 with DV = LLOQ (a new frame)."""
    below = data["DV"] < lloq
    return data.assign(DV=np.where(below, lloq, data["DV"]), CENS=below.astype(int), LLOQ=lloq)


def quiet_fit(model: Model, data: pd.DataFrame, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit(model, data, **kwargs)


# --------------------------------------------------------------------------- closed-form reference
# Estimation scale as in models/ck_stein.toml: log, Fb logit on (0, 1); then log sigma.


def to_natural(x: np.ndarray) -> np.ndarray:
    """C0, rho, tmax, Fb, alpha, beta, sigma from the estimation scale."""
    values = np.exp(x)
    values[3] = 1 / (1 + np.exp(-x[3]))
    return values


def to_estimation(values: np.ndarray) -> np.ndarray:
    x = np.log(values)
    x[3] = np.log(values[3] / (1 - values[3]))
    return x


def closed_form_m2ll(data: pd.DataFrame):
    """-2LL at estimation-scale x of the log error model (M3 for CENS = 1 rows), with the
    closed form of ck_stein: a function of x."""
    time, log_dv = data["TIME"].to_numpy(), np.log(data["DV"].to_numpy())
    cens = data["CENS"].to_numpy() == 1 if "CENS" in data else np.zeros(time.size, bool)

    def m2ll(x: np.ndarray) -> float:
        values = to_natural(x)
        sigma = values[6]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            log_pred = np.log(closed_form(time, *values[:6]))
        if not np.all(np.isfinite(log_pred)):
            return np.inf
        z = (log_dv - log_pred) / sigma
        quantified = np.sum(z[~cens] ** 2 + 2 * np.log(sigma) + LOG_2PI)
        return float(quantified - 2 * np.sum(log_ndtr(z[cens])))

    return m2ll


def reference_optimum(data: pd.DataFrame, start: dict) -> tuple[float, np.ndarray]:
    """Minimum of the closed-form -2LL by scipy Nelder-Mead from ``start`` (natural scale,
    with sigma), restarted once at its end point: (OFV, estimation-scale optimum)."""
    m2ll = closed_form_m2ll(data)
    x = to_estimation(np.array([start[n] for n in [*KINETIC, "sigma"]]))
    for _ in range(2):
        result = minimize(
            m2ll,
            x,
            method="Nelder-Mead",
            options={"xatol": 1e-9, "fatol": 1e-11, "maxfev": 40_000, "maxiter": 40_000},
        )
        x = result.x
    return float(result.fun), result.x


def estimation_sd(table: pd.DataFrame, name: str) -> float:
    """SD on the estimation scale from the table's natural-scale SE (delta method inverted)."""
    row = table.loc[name]
    if name == "Fb":
        return row["se"] / (row["estimate"] * (1 - row["estimate"]))
    return row["se"] / row["estimate"]


# --------------------------------------------------------------------------- rich-data recovery


@pytest.fixture(scope="module")
def recovery(stein: Model) -> list[dict]:
    """20 seeded data sets (13 samples, log-error SD 0.2), each fitted from the model's
    default start values: data, estimates, table, success, OFV."""
    out = []
    for seed in SEEDS:
        data = simulate(TRUTH, seed, NOISE_SD)
        result = quiet_fit(stein, data)
        out.append(
            {
                "data": data,
                "estimates": {**result.estimates, "sigma": result.estimates["CART_sigma"]},
                "table": result.table().set_index("parameter").rename(index=SIGMA_ROW),
                "success": result.success,
                "ofv": result.ofv,
            }
        )
    return out


def test_every_recovery_fit_converges(recovery: list[dict]) -> None:
    assert [fit_["success"] for fit_ in recovery] == [True] * len(SEEDS)


def test_median_estimate_within_15_percent_of_the_truth(recovery: list[dict]) -> None:
    """Issue 4: over the fixed seeds, every estimate is within 15 % of the truth on median.

    The criterion is the median of the signed relative error est/truth - 1 (a median
    bias). The median of |est/truth - 1| is a precision measure and is not asserted: in
    400 closed-form ML fits of this design it is 16.5 % for Fb (9 % C0, 2 % rho and tmax,
    8 % alpha, 12 % beta), so 13 samples at SD 0.2 do not pin Fb to 15 % and a 20-seed
    median of it exceeds 15 % in 64 % of seed sets whatever the software does. It is shown
    in the failure message.
    """
    errors = {n: np.array([f["estimates"][n] / v - 1 for f in recovery]) for n, v in TRUTH.items()}
    median = {n: float(np.median(e)) for n, e in errors.items()}
    spread = {n: round(float(np.median(np.abs(e))), 3) for n, e in errors.items()}
    assert all(abs(m) <= 0.15 for m in median.values()), (median, spread)


def test_truth_inside_the_95_ci_in_at_least_80_percent_of_pairs(recovery: list[dict]) -> None:
    """Issue 4: coverage of the 95 % CIs over all parameter-seed pairs is at least 80 %.

    Expected value, by hand: for a model linear in its 6 parameters, a Wald interval using
    the ML sigma (RSS/n, not RSS/(n - p)) covers with probability
    P(|t_7| < 1.96·sqrt(7/13)) = 80.6 % at n = 13, p = 6; in 400 closed-form fits of this
    design (Hessian intervals) it was 80.9 %, and a set of 20 seeds reached 80 % in 62 % of
    cases. The issue's bar sits at the expectation, so this criterion alone is close to a
    coin flip over seed sets; the test below widens the same intervals by the known
    small-sample factor (expected coverage 95 %) and asks for at least 88 %.
    """
    hits = [
        f["table"].loc[n, "ci95_low"] < v < f["table"].loc[n, "ci95_high"]
        for f in recovery
        for n, v in TRUTH.items()
    ]
    assert np.mean(hits) >= 0.80, f"coverage {np.mean(hits):.3f}"


def test_small_sample_widened_intervals_cover_at_least_88_percent(recovery: list[dict]) -> None:
    """The reported SEs are right up to the known small-sample factor: widening each
    interval on its estimation scale by t_{0.975, 7}·sqrt(13/7)/1.96 (t quantile, RSS/(n-p)
    instead of RSS/n) turns them into exact t intervals of a linear model: coverage 95 %.
    By the same calculation SEs too small by a factor 1.5 would give 84 %. In 400
    closed-form fits the widened coverage was 95.2 %. SEs too large are caught by the
    comparison with the closed-form Hessian below."""
    n, p = DAYS.size, len(KINETIC)
    widen = student_t.ppf(0.975, n - p) * np.sqrt(n / (n - p)) / 1.96
    hits = []
    for f in recovery:
        x = to_estimation(np.array([f["estimates"][k] for k in [*KINETIC, "sigma"]]))[:6]
        truth = to_estimation(np.array([*TRUTH.values(), NOISE_SD]))[:6]
        sd = np.array([estimation_sd(f["table"], k) for k in KINETIC])
        hits.extend(np.abs(x - truth) < 1.96 * widen * sd)
    assert np.mean(hits) >= 0.88, f"coverage {np.mean(hits):.3f}"


def test_sigma_se_is_the_hand_calculated_one_and_its_coverage_is_reported(
    recovery: list[dict],
) -> None:
    """At the ML optimum the -2LL in u = log(sigma) is 2n·u + RSS·e^(-2u), second derivative
    4n, and its cross derivatives with the kinetic parameters vanish (the RSS gradient is
    zero there): SD(log sigma) = sqrt(2 / 4n) = 1/sqrt(26), so RSE = 19.61 % for every data
    set. sigma's 95 % CI coverage, by hand: sigma_hat²/sigma² ~ chi²_7/13, covered when
    |log(sigma_hat/sigma)| < 1.96/sqrt(26): P(13·e^(-0.769) < chi²_7 < 13·e^(0.769)) = 54 %;
    the observed coverage must lie in the 99 % binomial range around it for 20 seeds."""
    rse = np.array([f["table"].loc["sigma", "rse_pct"] for f in recovery])
    np.testing.assert_allclose(rse, 100 / np.sqrt(2 * DAYS.size), rtol=1e-3)
    covered = [
        f["table"].loc["sigma", "ci95_low"] < NOISE_SD < f["table"].loc["sigma", "ci95_high"]
        for f in recovery
    ]
    assert 0.25 <= np.mean(covered) <= 0.80, f"sigma coverage {np.mean(covered):.2f}"


def test_fits_reach_the_closed_form_optimum_with_its_standard_errors(recovery: list[dict]) -> None:
    """cartpk's OFV equals the minimum of the closed-form -2LL found by scipy Nelder-Mead
    from the truth, and its SDs on the estimation scale equal those from a finite-difference
    Hessian of the closed-form -2LL at that minimum (covariance 2·H⁻¹)."""
    for f in recovery:
        ofv, x = reference_optimum(f["data"], {**TRUTH, "sigma": NOISE_SD})
        assert f["ofv"] == pytest.approx(ofv, abs=1e-4)
        h = central_hessian(closed_form_m2ll(f["data"]), x)
        reference_sd = np.sqrt(np.diag(2 * np.linalg.inv(h)))
        sd = [estimation_sd(f["table"], n) for n in [*KINETIC, "sigma"]]
        np.testing.assert_allclose(sd, reference_sd, rtol=1e-3)


def test_noise_free_data_with_late_censoring_recover_the_truth(stein: Model) -> None:
    """Noise-free data at the truth censored at LLOQ 430 (days 0, 1, 4, 180, 270, 365: 6 of
    13). With sigma fixed at 0.05 every censored prediction is >= 8 SDs below the LLOQ, so
    its M3 term -2·log Phi(z) and that term's gradient are < 1e-14 and the truth stays the
    exact optimum; an M3 term with a wrong sign or scale would push the predictions of the
    censored points and move the estimates."""
    data = censor(simulate(TRUTH, 1, 0.0), lloq=430.0)
    assert data["CENS"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    result = quiet_fit(stein, data, error={"CART": ("log", {"sigma": 0.05})})
    assert result.success
    for name, value in TRUTH.items():
        assert result.estimates[name] == pytest.approx(value, rel=1e-4)


# --------------------------------------------------------------------------- M3 against dropping

CENSORED_TRUTH = {"C0": 5.0, "rho": 0.75, "tmax": 12.0, "Fb": 0.02, "alpha": 0.2, "beta": 0.008}
CENSORED_LLOQ = 80.0
CENSORED_SD = 0.5


@pytest.fixture(scope="module")
def censored_study(stein: Model) -> dict:
    """20 seeded data sets at CENSORED_TRUTH with log-error SD 0.5 and LLOQ 80 copies/µg,
    each fitted twice from the truth: with the censored rows (M3) and without them."""
    out = {"data": [], "m3": [], "drop": []}
    start = dict(CENSORED_TRUTH)
    for seed in SEEDS:
        data = censor(simulate(CENSORED_TRUTH, seed, CENSORED_SD), CENSORED_LLOQ)
        out["data"].append(data)
        out["m3"].append(quiet_fit(stein, data, params=start))
        out["drop"].append(quiet_fit(stein, data[data["CENS"] == 0], params=start))
    return out


def log_errors(results: list, name: str) -> np.ndarray:
    return np.log([r.estimates[name] / CENSORED_TRUTH[name] for r in results])


def test_m3_is_less_biased_than_dropping_the_censored_points(censored_study: dict) -> None:
    """Issue 4: on data with ~30 % censored points, M3 is less biased than dropping them.

    The typical profile is 0.06 and 0.13 × the LLOQ (80) at days 0 and 1, 1.3 × at days 4
    and 270, 2.6 × at day 180 and 0.6 × at day 365, so with noise SD 0.5 whether a late point
    is censored depends on its own noise: it is quantified only when its noise is high. The
    missingness is informative, so dropping the censored rows keeps a terminal phase
    biased upward and flattened: beta, which those late points determine, comes out too
    small. M3 uses P(Y < LLOQ) for those rows and is consistent.

    Both fits start at the truth so that the comparison is between the two likelihoods'
    optima, not between local optima (test_m3_fits_reach_the_closed_form_optimum checks the
    M3 optima). Expected sizes, from 300 closed-form fits of each kind (beta unbounded
    there): mean log(est/truth) of beta -0.06 (M3) against -1.9 (dropped), mean
    |log(est/truth)| 0.29 against 2.1; both
    comparisons favour M3 in ~98-99 % of 20-seed sets. Fb is not asserted: it is fixed by
    the days 28-90, which stay quantified, and is moved by dropping only through its
    correlation with beta (mean log error -0.02 against -0.12 for a per-fit SD of 0.6,
    favouring M3 in ~70 % of 20-seed sets: not resolvable with 20 seeds).
    """
    censored = np.mean([d["CENS"].mean() for d in censored_study["data"]])
    assert 0.2 <= censored <= 0.4
    assert all(r.success for r in censored_study["m3"] + censored_study["drop"])
    m3, drop = log_errors(censored_study["m3"], "beta"), log_errors(censored_study["drop"], "beta")
    assert drop.mean() < 0, "dropping should flatten the terminal phase"
    assert abs(m3.mean()) < abs(drop.mean()), (m3.mean(), drop.mean())
    assert np.abs(m3).mean() < np.abs(drop).mean(), (np.abs(m3).mean(), np.abs(drop).mean())


def test_m3_fits_reach_the_closed_form_optimum(censored_study: dict) -> None:
    """The M3 OFV equals the closed-form M3 -2LL minimised by scipy from the truth: the
    censored rows enter as -2·log Phi((log LLOQ - log f)/sigma)."""
    for data, result in zip(censored_study["data"], censored_study["m3"], strict=True):
        ofv, _ = reference_optimum(data, {**CENSORED_TRUTH, "sigma": CENSORED_SD})
        assert result.ofv == pytest.approx(ofv, abs=1e-4)


@pytest.mark.slow
def test_three_starts_from_the_defaults_find_the_m3_optimum(
    stein: Model, censored_study: dict
) -> None:
    """From the model's default start values (not the truth), n_starts=3 reaches the
    closed-form M3 optimum on every censored data set. With days 0, 1 and 4 censored the
    likelihood has a local optimum with C0 near 0; a single start ends there on some."""
    for data, at_truth in zip(censored_study["data"], censored_study["m3"], strict=True):
        result = quiet_fit(stein, data, n_starts=3, seed=1)
        assert result.ofv == pytest.approx(at_truth.ofv, abs=1e-4)


# --------------------------------------------------------------------------- priors

PRIOR_SDS = [2.0, 1.0, 0.5, 0.25]
PRIOR_SEEDS = [1, 2, 3]


def test_a_prior_shrinks_a_weak_estimate_monotonically(stein: Model) -> None:
    """beta from 10 samples up to day 90 (terminal phase: days 60 and 90 only; RSE >= 80 %)
    with a prior centred at 0.02/day (4 × the truth): as the prior SD on log(beta) falls,
    the estimate gets strictly closer to the prior mean, and once the prior SD is below the
    ML standard error of log(beta) the prior has more than half the say (exact for a
    Gaussian likelihood: weight se²/(se² + sd²)), so the estimate has moved more than half
    the way from the ML estimate to the prior mean on the log scale."""
    days = DAYS[DAYS <= 90]
    mean = np.log(0.02)
    for seed in PRIOR_SEEDS:
        data = simulate(TRUTH, seed, NOISE_SD, days)
        ml = quiet_fit(stein, data)
        x_ml = np.log(ml.estimates["beta"])
        se_ml = estimation_sd(ml.table().set_index("parameter"), "beta")
        distances = [abs(x_ml - mean)]
        for sd in PRIOR_SDS:
            x = np.log(quiet_fit(stein, data, priors={"beta": (0.02, sd)}).estimates["beta"])
            distances.append(abs(x - mean))
            if sd < se_ml:
                assert (x - x_ml) / (mean - x_ml) > 0.5, (seed, sd, se_ml)
        assert np.all(np.diff(distances) < 0), (seed, distances)


def test_the_same_prior_barely_moves_a_well_determined_estimate(
    stein: Model, recovery: list[dict]
) -> None:
    """tmax from the rich 13-sample data (RSE ~2.5 %) with priors of the same SDs centred at
    20 days (log distance 0.5 from the truth): it moves by less than 1 % of its value, and at
    SD 0.25 by the Gaussian amount w·log(20/tmax_ML), w = se²/(se² + 0.25²), within 10 %
    (a prior on the natural scale, or its SD taken as a variance, would not)."""
    for fitted in recovery[: len(PRIOR_SEEDS)]:
        x_ml = np.log(fitted["estimates"]["tmax"])
        se = estimation_sd(fitted["table"], "tmax")
        shift = {}
        for sd in PRIOR_SDS:
            result = quiet_fit(stein, fitted["data"], priors={"tmax": (20.0, sd)})
            shift[sd] = np.log(result.estimates["tmax"]) - x_ml
            assert abs(np.expm1(shift[sd])) < 0.01
        weight = se**2 / (se**2 + 0.25**2)
        assert shift[0.25] == pytest.approx(weight * (np.log(20.0) - x_ml), rel=0.1)


def test_a_single_start_in_a_local_optimum_is_flagged(stein: Model) -> None:
    """Censored data set 8 from the default starts: one start ends in the local optimum with
    C0 near 0 (its OFV is ~15 units above the closed-form M3 optimum reached from the truth)
    and the fit says a local optimum is possible; three starts find the optimum and say how
    many starts reached it."""
    data = censor(simulate(CENSORED_TRUTH, 8, CENSORED_SD), CENSORED_LLOQ)
    best = quiet_fit(stein, data, params=dict(CENSORED_TRUTH))
    with pytest.warns(FitWarning, match="local optimum: refit with n_starts"):
        single = fit(stein, data)
    assert single.ofv > best.ofv + 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        several = fit(stein, data, n_starts=3, seed=1)
    assert several.ofv == pytest.approx(best.ofv, abs=1e-4)
    said = [str(w.message) for w in caught if "starts reached the best" in str(w.message)]
    assert len(said) == (several.n_at_best < 3)
    assert all(f"{several.n_at_best} of 3 starts" in m for m in said)
