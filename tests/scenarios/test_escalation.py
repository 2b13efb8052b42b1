"""The dose-escalation table (cartpk.scenarios.escalation) and the population draws it takes
(PopulationFit.populations).

References: the ck_stein closed form (tests/references.py) for a population without
variability, hand-computed logistic risks, numpy's sample moments of the draws against the
fit's estimates and covariance, and interpolation in log dose done by hand.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import STEIN_PARAMS, stein_auc

import cartpk as ck
from cartpk.scenarios import Population
from cartpk.scenarios.escalation import DoseEscalation

DOSES = (1e6, 2e6, 3e6)
TRIAL = Path(__file__).resolve().parents[2] / "data" / "phase1_trial.csv"


class KnownLogistic:
    """A binary exposure–response stand-in with known coefficients: P = expit(a + b log2 x);
    its draws are fixed rows, so the risks can be computed by hand."""

    kind = "binary"

    def __init__(self, a: float, b: float, exposure: str = "cmax", draws=None):
        self.a, self.b, self.exposure = a, b, exposure
        self.draws = draws

    def probability(self, values, at_least=None, params=None):
        a, b = (self.a, self.b) if params is None else params
        return 1 / (1 + np.exp(-(a + b * np.log2(values))))

    def sample_params(self, n, seed):
        return np.tile(self.draws, (n // len(self.draws) + 1, 1))[:n]


@pytest.fixture(scope="module")
def fixed_population(stein) -> Population:
    """ck_stein's typical values, no variability: every patient is the typical patient."""
    return Population.from_model(stein, omega={})


def test_no_variability_gives_the_closed_form(fixed_population):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = ck.dose_escalation(fixed_population, DOSES, n=5, n_draws=2, rtol=1e-10, atol=1e-12)
    par = fixed_population.typical
    for dose in DOSES:
        scaled = {**{k: par[k] for k in STEIN_PARAMS}}
        scaled["C0"] *= (dose / 1e6) ** par["dose_exp"]
        cmax = scaled["C0"] * np.exp(scaled["rho"] * scaled["tmax"])
        auc = stein_auc(0.0, 28.0, *(scaled[k] for k in STEIN_PARAMS))
        rows = result.table[result.table["dose"] == dose].set_index("quantity")
        assert rows.loc["cmax_CART", "estimate"] == pytest.approx(cmax, rel=1e-6)
        assert rows.loc["tmax_CART", "estimate"] == pytest.approx(scaled["tmax"], rel=1e-6)
        assert rows.loc["auc_0_28_CART", "estimate"] == pytest.approx(auc, rel=1e-6)
        # no uncertainty anywhere: the interval is the point
        assert rows.loc["cmax_CART", "low"] == pytest.approx(cmax, rel=1e-6)
        assert rows.loc["cmax_CART", "high"] == pytest.approx(cmax, rel=1e-6)


def test_risks_are_the_patient_mean_of_the_exposure_response(stein):
    population = Population.from_model(stein, omega={"C0": 0.5})
    draws = np.array([[-20.0, 1.5], [-18.0, 1.3], [-22.0, 1.7]])
    er = KnownLogistic(-20.0, 1.5, draws=draws)
    result = ck.dose_escalation(
        population, DOSES, {"CRS>=2": er}, n=50, n_draws=3, seed=7, level=0.5
    )
    # the same patients, by hand: their cmax from the closed form
    from cartpk.scenarios.population import Cohort

    cohort = Cohort(population, None, np.array(DOSES), 50, 7)
    names = list(stein.param_names)
    for d, dose in enumerate(DOSES):
        params, _, _ = cohort.patients(d, 0, 50)
        p = pd.DataFrame(params, columns=names)
        c0 = p["C0"] * (dose / 1e6) ** p["dose_exp"]
        cmax = (c0 * np.exp(p["rho"] * p["tmax"])).to_numpy()
        risk = [np.mean(1 / (1 + np.exp(-(a + b * np.log2(cmax))))) for a, b in draws]
        point = np.mean(1 / (1 + np.exp(-(-20.0 + 1.5 * np.log2(cmax)))))
        row = result.table[
            (result.table["dose"] == dose) & (result.table["quantity"] == "P(CRS>=2)")
        ]
        assert row["estimate"].iloc[0] == pytest.approx(point, rel=1e-6)
        assert row["low"].iloc[0] == pytest.approx(np.quantile(risk, 0.25), rel=1e-6)
        assert row["high"].iloc[0] == pytest.approx(np.quantile(risk, 0.75), rel=1e-6)
        drawn = result.draws[(result.draws["dose"] == dose) & (result.draws["draw"] > 0)]
        np.testing.assert_allclose(drawn["P(CRS>=2)"], risk, rtol=1e-6)


def test_patients_that_cannot_be_solved_are_counted_and_left_out(stein):
    """With a step budget that the fastest-expanding patients exceed, those patients get
    NaN exposure (and a status) from exposure(on_failure="nan"), and the escalation's
    medians are those of the solved patients (closed form), with a warning."""
    population = Population.from_model(stein, omega={"rho": 0.6})
    with pytest.warns(UserWarning, match=r"patient-solves could not be solved"):
        result = ck.dose_escalation(population, (1e6,), n=40, n_draws=1, seed=4, max_steps=300,
                                    rtol=1e-10, atol=1e-12)  # fmt: skip
    from cartpk.scenarios.population import Cohort

    params, _, _ = Cohort(population, None, np.array([1e6]), 40, 4).patients(0, 0, 40)
    frame = pd.DataFrame(params, columns=list(stein.param_names))
    one = ck.exposure(stein, frame, covariates={"DOSE": 1e6}, max_steps=300, rtol=1e-10,
                      atol=1e-12, on_failure="nan")  # fmt: skip
    failed = one["status"].to_numpy() != 0
    assert 0 < failed.sum() < 40
    assert one.loc[failed, ["cmax", "tmax", "auc_0_28"]].isna().all().all()
    assert not one.loc[~failed, "cmax"].isna().any()
    solved = frame[~failed]
    cmax = solved["C0"] * np.exp(solved["rho"] * solved["tmax"])
    point = result.draws[result.draws["draw"] == 0].iloc[0]
    assert point["failed"] == failed.sum()
    assert point["cmax_CART"] == pytest.approx(np.median(cmax), rel=1e-6)
    with pytest.raises(ck.SolverError):
        ck.exposure(stein, frame, covariates={"DOSE": 1e6}, max_steps=300, rtol=1e-10)
    with pytest.raises(ValueError, match="on_failure"):
        ck.exposure(stein, frame, covariates={"DOSE": 1e6}, on_failure="skip")


def test_dose_for_interpolates_in_log_dose():
    table = pd.DataFrame(
        {
            "dose": [1e6, 2e6, 4e6],
            "quantity": ["P(x)"] * 3,
            "estimate": [0.02, 0.05, 0.20],
            "low": [0.01, 0.03, 0.10],
            "high": [0.04, 0.08, 0.30],
        }
    )
    result = DoseEscalation(np.array([1e6, 2e6, 4e6]), table, pd.DataFrame(), 0.9, ("x",))
    # high bound crosses 0.10 between 2e6 (0.08) and 4e6 (0.30): share 0.02 / 0.22
    expected = np.exp(np.log(2e6) + (0.02 / 0.22) * np.log(2))
    assert result.dose_for("x", 0.10)["dose"] == pytest.approx(expected, rel=1e-12)
    assert result.dose_for("x", 0.5)["dose"] == 4e6
    assert np.isnan(result.dose_for("x", 0.03)["dose"])
    # on the estimate: 0.10 between 2e6 (0.05) and 4e6 (0.20)
    expected = np.exp(np.log(2e6) + (0.05 / 0.15) * np.log(2))
    assert result.dose_for("x", 0.10, bound="estimate")["dose"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown risk"):
        result.dose_for("y", 0.1)
    with pytest.raises(ValueError, match="probability"):
        result.dose_for("x", 1.5)


def test_bad_arguments_are_named(fixed_population):
    er = KnownLogistic(0.0, 1.0, exposure="auc_0_90", draws=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="fitted on exposure 'auc_0_90'"):
        ck.dose_escalation(fixed_population, DOSES, {"x": er}, n=2, n_draws=1)
    with pytest.raises(ValueError, match="a binary fit takes no grade"):
        er.exposure = "cmax"
        ck.dose_escalation(fixed_population, DOSES, {"x": (er, 2)}, n=2, n_draws=1)
    with pytest.raises(ValueError, match="output 'IL6'"):
        ck.dose_escalation(fixed_population, DOSES, output="IL6", n=2, n_draws=1)
    with pytest.raises(TypeError, match="PopulationFit or a Population"):
        ck.dose_escalation("ck_stein", DOSES)
    with pytest.raises(ValueError, match="level"):
        ck.dose_escalation(fixed_population, DOSES, level=1.0)


@pytest.fixture(scope="module")
def small_fit():
    """A short SAEM run of ck_stein on the bundled trial (the draws, not the estimates,
    are under test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ck.fit_population(
            "ck_stein",
            TRIAL,
            covariates={"C0": ["DOSE"]},
            n_iter=(60, 30),
            n_is=100,
            progress=False,
        )


def test_population_draws_follow_the_estimates_uncertainty(small_fit):
    fit = small_fit
    draws = fit.populations(4000, seed=3)
    labels = [f"mu_{n}" for n in ("C0", "rho", "alpha")] + ["C0~DOSE", "omega_C0"]
    k = [fit.theta_names.index(label) for label in labels]
    model = fit.model
    values = []
    for population in draws:
        row = [np.log(population.typical[name]) for name in ("C0", "rho", "alpha")] + [
            population.covariate_effects[0].theta,
            population.omega["C0"],
        ]
        values.append(row)
    values = np.array(values)
    centre = np.array([fit.mu["C0"], fit.mu["rho"], fit.mu["alpha"], fit.theta["C0~DOSE"],
                       np.sqrt(fit.omega[0, 0])])  # fmt: skip
    cov = fit.covariance[np.ix_(k, k)]
    se = np.sqrt(np.diag(cov))
    # sample means within 4 Monte Carlo SEs, sample SDs within 5 %
    assert np.all(np.abs(values.mean(axis=0) - centre) < 4 * se / np.sqrt(len(draws)))
    np.testing.assert_allclose(values.std(axis=0, ddof=1), se, rtol=0.05)
    # parameters the fit did not estimate keep their values
    for name in model.param_names:
        if name not in fit.estimated:
            assert {p.typical[name] for p in draws[:20]} == {fit.typical()[name]}
    assert fit.populations(3, seed=3)[2].typical == draws[2].typical


def test_a_fit_gives_intervals_around_its_estimate(small_fit):
    result = ck.dose_escalation(small_fit, DOSES, n=40, n_draws=30, seed=2)
    table = result.table
    assert (table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all()
    cmax = table[table["quantity"] == "cmax_CART"]
    assert (cmax["high"] > cmax["low"]).all()
    assert list(result.wide()["dose"]) == list(DOSES)
