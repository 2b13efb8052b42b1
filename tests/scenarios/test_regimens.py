"""Dosing regimens (cartpk.scenarios.regimens): the Regimen forms, and compare_regimens
against ck_stein's closed form by superposition.

Reference: after a dose at t_d of amount A, ck_stein is linear in its states, so each
infusion adds its own Stein curve: C0 (A / 1e6)^dose_exp expanding at rho until tmax (not
at all when t_d >= tmax) and then contracting, i.e. stein_level(t - t_d, ...) with tmax
replaced by max(tmax - t_d, 0) (tests/references.py; the model file's [dosing] link). The
time above a level is found by brute force on a 1e-5-day grid of that closed form.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from references import stein_auc, stein_level

import cartpk as ck
from cartpk.scenarios import Population, Regimen, compare_regimens

OMEGA = {"C0": 0.4, "rho": 0.1, "alpha": 0.2}


def test_regimen_forms() -> None:
    every = Regimen.every(7, n=3, amount=1e7)
    assert every.times == (0.0, 7.0, 14.0) and every.amounts == (1e7,) * 3
    assert every.total == pytest.approx(3e7) and every.label == "3 x 1e+07 every 7 d"
    assert Regimen.parse("1e7x3/7") == every
    assert Regimen.parse("0:1e7,7:1e7,14:1e7").times == every.times
    assert Regimen.parse("3e7").times == (0.0,)
    assert every.windows() == [(0.0, 7.0), (7.0, 14.0), (14.0, 21.0)]
    assert Regimen.parse("3e7").windows(28) == [(0.0, 28.0)]
    assert every.later_doses() == [(7.0, 1e7), (14.0, 1e7)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7:1e7,14:1e7", "must be day 0"),
        ("0:1e7,0:1e7", "must increase"),
        ("0:-1", "must be > 0"),
        ("1e7x0/7", "n 0"),
        ("often", "expected an amount"),
        ("1e7x3/0", "interval 0"),
    ],
)
def test_bad_regimens_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Regimen.parse(text)


def superposed(t, regimen: Regimen, p: pd.Series) -> np.ndarray:
    total = np.zeros_like(np.asarray(t, dtype=float))
    for t_d, amount in zip(regimen.times, regimen.amounts, strict=True):
        c0 = p["C0"] * (amount / 1e6) ** p["dose_exp"]
        s = np.asarray(t) - t_d
        level = stein_level(np.maximum(s, 0), c0, p["rho"], max(p["tmax"] - t_d, 0.0), p["Fb"],
                            p["alpha"], p["beta"])  # fmt: skip
        total = total + np.where(s >= 0, level, 0.0)
    return total


def superposed_auc(a, b, regimen: Regimen, p: pd.Series) -> float:
    total = 0.0
    for t_d, amount in zip(regimen.times, regimen.amounts, strict=True):
        if t_d >= b:
            continue
        c0 = p["C0"] * (amount / 1e6) ** p["dose_exp"]
        total += stein_auc(max(a - t_d, 0.0), b - t_d, c0, p["rho"], max(p["tmax"] - t_d, 0.0),
                           p["Fb"], p["alpha"], p["beta"])  # fmt: skip
    return total


@pytest.fixture(scope="module")
def comparison():
    model = ck.load_model("ck_stein")
    typical = {name: par.value for name, par in model.parameters.items()}
    population = Population(model, typical, OMEGA)
    regimens = [Regimen.parse("3e6"), Regimen.every(7, 3, 1e6), Regimen.every(14, 3, 1e6),
                Regimen((0.0, 35.0), (1e6, 2e6))]  # fmt: skip
    return compare_regimens(population, regimens, n=8, seed=4, level=500.0)


def test_exposure_per_infusion_against_the_closed_form(comparison) -> None:
    for regimen in comparison.regimens:
        rows = comparison.infusions[comparison.infusions["regimen"] == regimen.label]
        people = comparison.patients[comparison.patients["regimen"] == regimen.label]
        for _, row in rows.iterrows():
            p = people[people["ID"] == row["ID"]].iloc[0]
            start, end = row["start"], row["end"]
            last = row["infusion"] == len(regimen.times)
            stop = end if last else end - 1e-12  # the window ends just before an infusion
            # the sum grows before tmax and falls after it: the peak is at one of these
            candidates = np.array([start, min(max(p["tmax"], start), stop), stop])
            expected = superposed(candidates, regimen, p).max()
            assert row["cmax"] == pytest.approx(expected, rel=1e-6)
            assert row["auc"] == pytest.approx(superposed_auc(start, end, regimen, p), rel=1e-6)
        for _, p in people.iterrows():
            cumulative = superposed_auc(0.0, comparison.horizon, regimen, p)
            assert p["auc_cumulative"] == pytest.approx(cumulative, rel=1e-6)


def test_time_above_level_against_brute_force(comparison) -> None:
    grid = np.arange(0.0, comparison.horizon, 1e-5) + 0.5e-5
    for regimen in comparison.regimens:
        people = comparison.patients[comparison.patients["regimen"] == regimen.label]
        for _, p in people.iterrows():
            above = superposed(grid, regimen, p) >= 500.0
            assert p["days_above"] == pytest.approx(above.sum() * 1e-5, abs=2e-3)
            assert bool(p["reached"]) == bool(above.any())


def test_same_patients_and_the_summary(comparison) -> None:
    patients = comparison.patients
    for name in OMEGA:
        assert patients.groupby("ID")[name].nunique().max() == 1  # one patient, every regimen
    summary = comparison.summary().set_index("regimen")
    single = summary.loc["1 x 3e+06"]
    assert single["accumulation_cmax"] == 1.0 and single["infusions"] == 1
    # a re-infusion after tmax does not expand: it adds its C0 and contracts
    late = summary.loc["d0: 1e+06, d35: 2e+06"]
    assert late["cmax_last"] < late["cmax_first"]
    assert set(summary["total"]) == {3e6}
    assert 0 <= summary["reached"].min() and summary["reached"].max() <= 1
