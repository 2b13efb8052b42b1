"""Persistence: per-subject rules, Kaplan-Meier against hand-worked and published
references, model-based loss times against the ck_stein closed form, the seed checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import stein_level
from scipy import stats
from scipy.optimize import brentq

import cartpk as ck
from cartpk.persistence import kaplan_meier, km_band, logrank_test, loss_times, persistence
from cartpk.persistence.km import _survdiff
from cartpk.scenarios.persistence_checks import (
    LLOQ,
    PUBLISHED,
    bcma_population,
    nmosd_population,
)
from cartpk.solve import method_code


def long_table(profiles: dict[int, list[tuple[float, float | None]]], **extra) -> pd.DataFrame:
    """ID -> [(TIME, DV or None for BLQ)], LLOQ 10, as a long table."""
    rows = []
    for subject, samples in profiles.items():
        for time, dv in samples:
            rows.append(
                {
                    "ID": subject,
                    "TIME": time,
                    "DV": 10.0 if dv is None else dv,
                    "LLOQ": 10.0,
                    "CENS": int(dv is None),
                    **{k: v.get((subject, time), 0) for k, v in extra.items()},
                }
            )
    return pd.DataFrame(rows)


PROFILES = {
    1: [(0, 50), (30, 40), (90, 20), (180, None), (365, None)],  # lost: tlast 90, tbql 180
    2: [(0, 50), (30, 40), (90, 20), (180, 15)],  # detectable at the last sample
    3: [(0, 50), (30, None), (90, 12), (180, None)],  # BLQ, back, then one trailing BLQ
    4: [(0, None), (30, None)],  # never quantifiable
}


def test_rules_per_subject_by_hand():
    table = persistence(long_table(PROFILES)).set_index("ID")
    assert table.loc[1, ["tlast", "tbql", "persistence", "event"]].tolist() == [90, 180, 90, True]
    assert table.loc[2, ["tlast", "persistence", "event"]].tolist() == [180, 180, False]
    assert np.isnan(table.loc[2, "tbql"])
    assert table.loc[2, "censored_by"] == "detectable at last sample"
    assert table.loc[3, ["tlast", "tbql", "persistence", "event"]].tolist() == [90, 180, 90, True]
    assert table.loc[4, ["persistence", "event"]].tolist() == [0.0, True]
    two = persistence(long_table(PROFILES), rule="consecutive", k=2).set_index("ID")
    assert two.loc[1, ["persistence", "event"]].tolist() == [180, True]  # first of 180, 365
    assert two.loc[3, ["persistence", "event", "censored_by"]].tolist() == [
        90,
        False,
        "loss not confirmed",
    ]
    one = persistence(long_table(PROFILES), rule="consecutive", k=1).set_index("ID")
    assert one.loc[3, ["persistence", "event"]].tolist() == [30, True]  # first BLQ after 0


def test_lloq_from_the_call_and_censoring_columns():
    data = long_table(PROFILES, NEWTHERAPY={(1, 180): 1, (1, 365): 1})
    table = persistence(data, censor=["NEWTHERAPY"]).set_index("ID")
    assert table.loc[1, ["persistence", "event", "censored_by"]].tolist() == [
        90,
        False,
        "NEWTHERAPY",
    ]
    called = persistence(long_table(PROFILES), lloq=30.0).set_index("ID")
    assert called.loc[2, ["tlast", "tbql", "event"]].tolist() == [30, 90, True]


def test_bad_input_is_named():
    data = long_table(PROFILES).drop(columns=["LLOQ"]).assign(CENS=0)
    with pytest.raises(ck.DataError, match="LLOQ: no LLOQ for CART"):
        persistence(data)
    with pytest.raises(ck.DataError, match="column DROPOUT: not in the data"):
        persistence(long_table(PROFILES), censor=["DROPOUT"])
    with pytest.raises(ValueError, match="rule 'last'"):
        persistence(long_table(PROFILES), rule="last")


def test_km_hand_worked():
    """t = 2, 3+, 5, 7+, 8: S = 4/5 at 2, 4/5 * 2/3 at 5, 0 at 8 (one at risk), median 8.
    Log-log CI at 2 by hand: v = sum d/(n(n-d)) / log(S)^2 = (1/20) / log(0.8)^2,
    S^exp(+-z sqrt(v))."""
    table = pd.DataFrame({"persistence": [2, 3, 5, 7, 8], "event": [1, 0, 1, 0, 1]})
    km = kaplan_meier(table, landmarks=[4, 6])
    curve = km.curves["all"]
    np.testing.assert_allclose(curve["survival"], [0.8, 0.8 * 2 / 3, 0.0], rtol=1e-12)
    assert curve["n_at_risk"].tolist() == [5, 3, 1]
    z = stats.norm.ppf(0.975)
    v = (1 / 20) / np.log(0.8) ** 2
    np.testing.assert_allclose(
        [curve["lower"][0], curve["upper"][0]],
        [0.8 ** np.exp(z * v**0.5), 0.8 ** np.exp(-z * v**0.5)],
        rtol=1e-10,
    )
    assert km.summary["median"].iloc[0] == 8
    np.testing.assert_allclose(km.landmarks["survival"], [0.8, 0.8 * 2 / 3], rtol=1e-12)
    assert km.landmarks["n_at_risk"].tolist() == [3, 2]
    np.testing.assert_allclose(km.survival_at([1, 2, 6, 9]), [1, 0.8, 0.8 * 2 / 3, 0])


AML_MAINTAINED = ([9, 13, 13, 18, 23, 28, 31, 34, 45, 48, 161], [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0])
AML_NONMAINTAINED = (
    [5, 5, 8, 8, 12, 16, 23, 27, 30, 33, 43, 45],
    [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1],
)


def aml() -> pd.DataFrame:
    """R survival's ``aml`` data set (acute myelogenous leukaemia, weeks)."""
    (t1, e1), (t2, e2) = AML_MAINTAINED, AML_NONMAINTAINED
    return pd.DataFrame(
        {
            "persistence": t1 + t2,
            "event": np.array(e1 + e2, bool),
            "x": ["Maintained"] * 11 + ["Nonmaintained"] * 12,
        }
    )


def test_km_and_logrank_against_r_survival_on_aml():
    """R survival's documented output on aml: ``survfit(Surv(time, status) ~ x)`` gives
    medians 31 (Maintained) and 23 (Nonmaintained); ``survdiff`` gives observed 7 / 11,
    expected 10.69 / 7.31, chi-square 3.4 on 1 df, p = 0.0653 (survival 3.8-3, as quoted
    in its users' published checks). S of Maintained by hand: 10/11 at 9, then * 9/10 at 13,
    * 7/8 at 18."""
    km = kaplan_meier(aml(), by="x", landmarks=[20])
    assert km.summary["median"].tolist() == [31, 23]
    maintained = km.curves["Maintained"]
    np.testing.assert_allclose(
        maintained["survival"][:3], [10 / 11, 10 / 11 * 9 / 10, 10 / 11 * 9 / 10 * 7 / 8]
    )
    np.testing.assert_allclose(km.logrank["p"], 0.0653, atol=5e-5)
    assert km.logrank["df"] == 1
    frame = aml()
    found = _survdiff(
        frame["persistence"].to_numpy(float), frame["event"].to_numpy(), frame["x"].to_numpy()
    )
    np.testing.assert_allclose(found["expected"], [10.69, 7.31], atol=5e-3)
    np.testing.assert_allclose(found["chisq"], km.logrank["chisq"], rtol=1e-10)


def test_k_sample_logrank_by_hand():
    """Three groups, one event each at distinct times 1, 2, 3, three subjects at risk then
    two then one... groups a: t=1 (event), b: t=2 (event), c: t=3 (event): at t=1, n=3:
    E = (1/3, 1/3, 1/3); at t=2, n=2 (b, c): E += (0, 1/2, 1/2); at t=3 only c: E += (0,0,1).
    O - E = (2/3, 1/6, -5/6). V at t=1: (diag(s) - s s^T) with s = 1/3; at t=2 over (b, c):
    1/4 (d(n-d)/(n-1) = 1). Chi-square over (a, b) = 2 (worked: V = [[2/9, -1/9],
    [-1/9, 2/9 + 1/4]], solve)."""
    t = np.array([1.0, 2.0, 3.0])
    e = np.array([True, True, True])
    g = np.array(["a", "b", "c"])
    v = np.array([[2 / 9, -1 / 9], [-1 / 9, 2 / 9 + 1 / 4]])
    d = np.array([2 / 3, 1 / 6])
    expected = d @ np.linalg.solve(v, d)
    found = logrank_test(t, e, g)
    np.testing.assert_allclose(found["chisq"], expected, rtol=1e-12)
    assert found["df"] == 2


@pytest.mark.parametrize("beta", [0.0032, 0.01, 0.05])
def test_loss_times_against_the_stein_closed_form(stein, beta):
    rows = np.array(
        [[6.15, 0.889, 9.3, 0.0079, 0.16, beta, 1.0], [6.15, 0.889, 9.3, 0.0, 0.16, beta, 1.0]]
    )
    p = stein.pack(rows, {"DOSE": np.full(2, 1e6)})
    found = loss_times(
        stein, p, 10.0, horizon=3000.0, solver=(method_code(stein, "dopri5"), 1e-11, 1e-14, 100_000)
    )
    for row, time in zip(rows, found["time"], strict=True):
        truth = brentq(lambda t, r=row: stein_level(t, *r[:6]) - 10.0, row[2], 3000.0, xtol=1e-12)
        assert time == pytest.approx(truth, abs=1e-5)
    assert not found["beyond"].any()
    beyond = loss_times(stein, p[:1], 10.0, horizon=20.0, step=7.0)
    assert beyond["beyond"].all() and beyond["time"][0] == 20.0


def test_scenario_persistence_same_seed_same_numbers():
    population = bcma_population()
    first = ck.scenarios(population, doses=[1e6], n=300, seed=4).persistence(LLOQ)
    again = ck.scenarios(population, doses=[1e6], n=300, seed=4).persistence(LLOQ)
    pd.testing.assert_frame_equal(first, again)
    assert first["n_failed"].iloc[0] == 0


def test_equecabtagene_and_nmosd_seed_checks():
    """Published: median 307.5 d (within 15 %), 50 % / 40 % detectable at 12 / 24 months
    (within 5 points); NMOSD 17 % beyond 6 months (within 5 points). 5,000 virtual
    patients, seed 1."""
    eq = ck.scenarios(bcma_population(), doses=[1e6], n=5000, seed=1)
    row = eq.persistence(LLOQ, landmarks=(365, 730)).iloc[0]
    published = PUBLISHED["equecabtagene"]
    assert abs(row["median_persistence"] / published["median"] - 1) <= 0.15
    assert abs(row["detectable_365"] - published["detectable_365"]) <= 0.05
    assert abs(row["detectable_730"] - published["detectable_730"]) <= 0.05
    nmosd = ck.scenarios(nmosd_population(), doses=[1e6], n=5000, seed=1)
    six = nmosd.persistence(LLOQ, landmarks=(182.5,)).iloc[0]["detectable_182.5"]
    assert abs(six - PUBLISHED["nmosd"]["detectable_182.5"]) <= 0.05


def test_cli_prints_the_table_and_writes_the_figure(tmp_path):
    """``cartpk persistence`` on the bundled trial (subject 8 is the one lost: quantifiable
    at day 270, BLQ at day 365)."""
    import subprocess
    import sys
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "data" / "phase1_trial.csv"
    figure, table = tmp_path / "km.png", tmp_path / "table.csv"
    args = [sys.executable, "-m", "cartpk.cli", "persistence", str(data), "--analyte", "CART"]
    args += ["--landmarks", "180,365,730", "--by", "DOSE", "--plot", str(figure)]
    done = subprocess.run([*args, "-o", str(table)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Kaplan-Meier" in done.stdout and "log-rank test across DOSE" in done.stdout
    assert figure.stat().st_size > 0
    written = pd.read_csv(table).set_index("ID")
    assert written.loc[8, ["tlast", "tbql", "event"]].tolist() == [270, 365, True]
    assert int(written["event"].sum()) == 1
    bad = subprocess.run([*args[:5], "--rule", "last"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: rule 'last': expected one of tlast, consecutive"
    ]


def test_variability_fitted_from_12_monthly_sampling_is_recovered():
    """A simulated trial of 200 patients from the equecabtagene population, sampled on days
    7, 14, 28 and every 12 months to 3 years, log-normal residual SD 0.3: the SDs of Fb and
    beta fitted from which samples were quantifiable are within 2 SEs of the truth, and the
    fitted population's fractions detectable at the sampled 12 and 24 months within 5
    points of the truth's."""
    from cartpk.persistence.predicted import levels_at
    from cartpk.scenarios.persistence_checks import PERSISTENCE_VARIABILITY
    from cartpk.scenarios.persistence_fit import _patients, fit_persistence_variability

    truth = bcma_population()
    days = np.array([7, 14, 28, 365, 730, 1095.0])
    level, _ = levels_at(truth.model, _patients(truth, 200, 11, 1e6), days)
    observed = level * np.exp(np.random.default_rng(12).normal(0.0, 0.3, level.shape))
    quantifiable = (observed >= LLOQ).astype(float)
    fit = fit_persistence_variability(
        days, quantifiable, truth, ["Fb", "beta"], LLOQ, 0.3, start=[2.0, 0.5], n_sim=1000
    )
    assert fit.converged
    for name, (_, sd) in PERSISTENCE_VARIABILITY.items():
        assert abs(fit.omega[name] - sd) <= 2 * fit.se[name], (name, fit.omega[name], fit.se)
    marks = (365, 730)
    rows = [
        ck.scenarios(pop, doses=[1e6], n=3000, seed=5).persistence(LLOQ, landmarks=marks)
        for pop in (truth, fit.population)
    ]
    for day in marks:
        column = f"detectable_{day}"
        assert abs(rows[1][column].iloc[0] - rows[0][column].iloc[0]) <= 0.05


def test_km_band_is_seeded_and_brackets_the_truth():
    table = pd.DataFrame({"persistence": np.linspace(1, 1000, 2001), "status": 0})
    band = km_band(table, 50, [250, 500], n_rep=400, seed=2)
    pd.testing.assert_frame_equal(band, km_band(table, 50, [250, 500], 400, 2))
    truth = np.array([(table["persistence"] > t).mean() for t in (250, 500)])
    assert np.all(band["p5"] < truth) and np.all(truth < band["p95"])


def test_fitted_subject_persistence_is_the_closed_form_at_its_estimates():
    data = ck.read_dataset(Path(__file__).resolve().parents[2] / "data" / "phase1_trial.csv")
    fit = ck.fit("ck_stein", data, id=3)
    found = fit.persistence(10.0, horizon=5000.0)
    e = fit.estimates
    c0 = e["C0"] * (fit.covariates["DOSE"] / 1e6) ** e["dose_exp"]
    args = (c0, e["rho"], e["tmax"], e["Fb"], e["alpha"], e["beta"])
    truth = brentq(lambda t: stein_level(t, *args) - 10.0, e["tmax"], 5000.0, xtol=1e-12)
    assert found["persistence"].iloc[0] == pytest.approx(truth, abs=1e-3)
    assert bool(found["event"].iloc[0])
