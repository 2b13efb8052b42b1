"""A second CAR-T infusion at day 30 or later with ck_stein (issue 17, deliverable 5).

Reference: the closed form derived by hand in tests/references.py ``stein_reinfused``. The
first infusion gives Stein's curve; after tmax the model is linear, and the second infusion
adds B = C0 (AMT / 1e6)^dose_exp to the effector state E at its time t2, after which E
contracts at alpha and feeds memory at Fb (alpha - beta) E, so the bolus adds
B [(1 - Fb) e^(-alpha s) + Fb e^(-beta s)], s = t - t2: no second expansion. simulate,
a dataset with an EVID = 1 row at TIME 35 (read into the fit's dose arrays) and an
individual fit's predictions are all held to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from references import STEIN_PARAMS, stein_reinfused

import cartpk as ck
from cartpk.likelihood import pack_observations

# A patient whose first infusion expanded little (fold expansion e^(0.25 * 12) = 20), the
# usual reason for a second: its bolus, C0 = 1/20 of the first peak, then stands out. (After
# a typical expansion, fold 3,900, the same bolus adds 1/3,900 of the first peak.)
TRUTH = {"C0": 3.0, "rho": 0.25, "tmax": 12.0, "Fb": 0.015, "alpha": 0.18, "beta": 0.005}
T2 = 35.0
DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 34, 35, 36, 38, 42, 49, 60, 90, 180, 365.0])
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def level(t, dose1=1e6, dose2=1e6, dose_exp=1.0, **truth) -> np.ndarray:
    par = {**TRUTH, **truth}
    return stein_reinfused(t, T2, dose1, dose2, *(par[n] for n in STEIN_PARAMS), dose_exp)


def test_closed_form_by_hand() -> None:
    """The jump at t2 is exactly B = C0 (AMT/1e6)^dose_exp, and well after it the memory
    share Fb of B remains, decaying at beta."""
    just_before, at = level([T2 - 1e-12, T2], dose2=4e6, dose_exp=0.5)
    assert at - just_before == pytest.approx(TRUTH["C0"] * 2.0, rel=1e-9)
    late = level([365.0], dose2=4e6, dose_exp=0.5) - level([365.0], dose2=1e-300)
    expected = 6.0 * TRUTH["Fb"] * np.exp(-TRUTH["beta"] * (365 - T2))
    assert late[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("dose1", "dose2", "dose_exp"),
    [(1e6, 1e6, 1.0), (2e6, 5e5, 1.0), (1e6, 3e6, 0.5)],
)
def test_simulate_matches_the_closed_form(dose1: float, dose2: float, dose_exp: float) -> None:
    times = np.concatenate([DAYS, [T2 - 1e-9, 300.0]])
    sim = ck.simulate(
        "ck_stein",
        {**TRUTH, "dose_exp": dose_exp, "DOSE": dose1},
        times,
        doses=[(T2, dose2)],
        **TIGHT,
    ).set_index("TIME")["CART"]
    expected = level(sim.index.to_numpy(), dose1, dose2, dose_exp)
    np.testing.assert_allclose(sim.to_numpy(), expected, rtol=1e-8)
    assert sim[T2] / sim[T2 - 1e-9] > 1  # the dose is seen at its own time


def trial(noise: float = 0.0, seed: int = 1) -> pd.DataFrame:
    """One subject, 1e6 cells/kg at TIME 0 and again at TIME 35 (EVID = 1 rows)."""
    rng = np.random.default_rng(seed)
    dv = level(DAYS) * np.exp(rng.normal(0.0, noise, DAYS.size))
    obs = pd.DataFrame({"ID": 1, "TIME": DAYS, "DV": dv, "EVID": 0, "AMT": np.nan})
    doses = pd.DataFrame({"ID": 1, "TIME": [0.0, T2], "DV": np.nan, "EVID": 1, "AMT": 1e6})
    return pd.concat([doses, obs], ignore_index=True).sort_values("TIME", kind="stable")


def test_the_second_dose_record_reaches_the_fit() -> None:
    ds = ck.read_dataset(trial())
    packed = pack_observations(ds, ck.load_model("ck_stein"), [1])
    np.testing.assert_array_equal(packed.d_time, [T2])
    np.testing.assert_array_equal(packed.d_amt, [1e6])
    np.testing.assert_array_equal(packed.covariates, [[1e6]])  # DOSE: the AMT at TIME 0


def test_fit_to_noise_free_data_recovers_the_truth() -> None:
    """Data from the closed form with the second dose: the fit finds the truth, and its
    predictions are the closed form."""
    result = ck.fit("ck_stein", trial(), error={"CART": ("log", {"sigma": 0.1})}, **TIGHT)
    assert result.success
    for name, value in TRUTH.items():
        assert result.estimates[name] == pytest.approx(value, rel=1e-5), name
    np.testing.assert_allclose(result.predict(DAYS)["CART"], level(DAYS), rtol=1e-6)


def test_noisy_fit_predicts_the_closed_form_at_its_estimates() -> None:
    """With noise: IPRED and predict() are the closed form at the fit's own estimates, and
    the same data without the second dose record fit far worse (the jump at day 35 is the
    dose's, not noise)."""
    data = trial(0.15, seed=5)
    result = ck.fit("ck_stein", data, n_starts=2, seed=2, **TIGHT)
    assert result.success
    estimates = {name: result.estimates[name] for name in STEIN_PARAMS}
    grid = np.linspace(0.0, 365.0, 731)
    np.testing.assert_allclose(result.predict(grid)["CART"], level(grid, **estimates), rtol=1e-7)
    residuals = result.residuals()
    expected = level(residuals["TIME"].to_numpy(), **estimates)
    np.testing.assert_allclose(residuals["IPRED"], expected, rtol=1e-7)
    one_dose = data[~((data["EVID"] == 1) & (data["TIME"] == T2))]
    ignored = ck.fit("ck_stein", one_dose, n_starts=2, seed=2, standard_errors=False, **TIGHT)
    assert ignored.ofv > result.ofv + 15
