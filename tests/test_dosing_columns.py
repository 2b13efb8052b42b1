"""NONMEM dosing columns: ADDL/II equal the same doses row by row (in simulate, the fits'
objective and predictions), a reset (EVID 3/4) is a fresh start (against a separate
simulation and ck_stein's closed form), and bad combinations are named."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from references import stein_level

import cartpk as ck
from cartpk.data import read_dataset
from cartpk.errors import DataError
from cartpk.individual import FitResult, FitWarning
from cartpk.likelihood import pack_observations
from cartpk.population import fit_population

TRUTH = {"C0": 6.0, "rho": 0.85, "tmax": 10.0, "Fb": 0.01, "alpha": 0.2, "beta": 0.004}
KINETICS = tuple(TRUTH[k] for k in ("rho", "tmax", "Fb", "alpha", "beta"))
DAYS = np.array([1.0, 4, 7, 10, 14, 21, 27, 28, 30, 35, 42, 55, 56, 60, 70, 90, 120])
SIGMA = 0.25


def quiet(function, *args, **kwargs):
    """A fit whose FitWarnings (nothing estimated, few iterations) are not the point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return function(*args, **kwargs)


def observations(ids, seed: int = 4) -> pd.DataFrame:
    """CART observations at DAYS of subjects ``ids``, noisy around a plausible level."""
    rng = np.random.default_rng(seed)
    rows = []
    for subject in ids:
        level = stein_level(DAYS, **TRUTH) * np.exp(rng.normal(0, SIGMA, DAYS.size))
        rows.append(pd.DataFrame({"ID": subject, "TIME": DAYS, "DV": level, "EVID": 0}))
    return pd.concat(rows, ignore_index=True)


def with_doses(obs: pd.DataFrame, doses: pd.DataFrame) -> pd.DataFrame:
    """Observation and dose rows, each subject's rows in time order (doses first)."""
    table = pd.concat([doses.assign(DV=np.nan, MDV=1), obs.assign(MDV=0)], ignore_index=True)
    return table.sort_values(["ID", "TIME"], kind="stable", ignore_index=True)


def regimen_addl(ids) -> pd.DataFrame:
    """1e6 cells/kg at day 0 and again at days 28 and 56, written with ADDL/II."""
    return pd.DataFrame({"ID": ids, "TIME": 0.0, "EVID": 1, "AMT": 1e6, "ADDL": 2, "II": 28.0})


def regimen_rows(ids) -> pd.DataFrame:
    """The same doses as :func:`regimen_addl`, one row each."""
    return pd.DataFrame(
        {"ID": np.repeat(ids, 3), "TIME": np.tile([0.0, 28.0, 56.0], len(ids)), "EVID": 1,
         "AMT": 1e6}
    )  # fmt: skip


# --- ADDL / II ------------------------------------------------------------------------------


def test_addl_expands_to_the_doses_written_out() -> None:
    addl = read_dataset(with_doses(observations([1, 2]), regimen_addl([1, 2])))
    rows = read_dataset(with_doses(observations([1, 2]), regimen_rows([1, 2])))
    columns = ["ID", "TIME", "AMT", "EVID"]
    pd.testing.assert_frame_equal(addl.doses()[columns], rows.doses()[columns])
    assert addl.doses()["TIME"].tolist() == [0.0, 28.0, 56.0] * 2
    assert addl.covariates == ()  # ADDL and II are dose items, not covariates
    model = ck.load_model("ck_stein")
    a, b = (pack_observations(ds, model, [1, 2]) for ds in (addl, rows))
    for name in ("d_time", "d_amt", "d_reset", "d_off", "covariates"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_addl_simulates_as_the_doses_written_out(stein) -> None:
    times = np.linspace(0.0, 120.0, 61)
    addl = pd.DataFrame({"TIME": [28.0], "AMT": [1e6], "ADDL": [3], "II": [14.0]})
    rows = pd.DataFrame({"TIME": [28.0, 42.0, 56.0, 70.0], "AMT": 1e6})
    a = ck.simulate(stein, TRUTH, times, doses=addl)
    b = ck.simulate(stein, TRUTH, times, doses=rows)
    pd.testing.assert_frame_equal(a, b)
    assert (a["CART"] != ck.simulate(stein, TRUTH, times)["CART"]).any()


def test_addl_gives_the_same_individual_fit(stein) -> None:
    obs = observations([1])
    fits = [
        quiet(
            ck.fit,
            stein,
            with_doses(obs, regimen([1])),
            params={"Fb": {"value": 0.01, "vary": False}},
            standard_errors=False,
        )  # fmt: skip
        for regimen in (regimen_addl, regimen_rows)
    ]
    assert fits[0].ofv == fits[1].ofv
    assert fits[0].estimates == fits[1].estimates
    pd.testing.assert_frame_equal(fits[0].doses, fits[1].doses)
    assert fits[0].doses["TIME"].tolist() == [28.0, 56.0]
    pd.testing.assert_frame_equal(fits[0].predict(DAYS), fits[1].predict(DAYS))


def test_addl_gives_the_same_population_fit() -> None:
    ids = [1, 2, 3, 4]
    obs = observations(ids, seed=7)
    fits = [
        quiet(
            fit_population,
            "ck_stein",
            with_doses(obs, regimen(ids)),
            random=["C0"],
            n_iter=(4, 3),
            n_is=20,
            seed=3,
            progress=False,
        )  # fmt: skip
        for regimen in (regimen_addl, regimen_rows)
    ]
    assert fits[0].ofv == fits[1].ofv
    np.testing.assert_array_equal(fits[0].phi_mode, fits[1].phi_mode)
    pd.testing.assert_frame_equal(fits[0].doses, fits[1].doses)
    assert len(fits[0].doses) == 2 * len(ids)


# --- resets ---------------------------------------------------------------------------------


def test_reset_and_dose_is_a_fresh_start(stein) -> None:
    """EVID 4 at day 40: from then on, a subject infused at day 40 with the reset's AMT (its
    own clock: expansion again until day 40 + tmax), and a later bolus counts from there."""
    times = np.array([0.0, 5.0, 20.0, 39.0, 40.0, 41.0, 45.0, 50.0, 55.0, 80.0, 200.0])
    doses = pd.DataFrame({"TIME": [40.0, 50.0], "AMT": [3e6, 1e6], "EVID": [4, 1]})
    got = ck.simulate(stein, {**TRUTH, "DOSE": 1e6}, times, doses=doses)
    later = times >= 40.0
    fresh = ck.simulate(stein, {**TRUTH, "DOSE": 3e6}, times[later] - 40.0, doses=[(10.0, 1e6)])
    np.testing.assert_allclose(got["CART"][later], fresh["CART"], rtol=1e-12)
    before = ck.simulate(stein, {**TRUTH, "DOSE": 1e6}, times[~later])
    np.testing.assert_allclose(got["CART"][~later], before["CART"], rtol=1e-6)
    # the closed form, up to the bolus at day 50
    upto = later & (times < 50.0)
    expected = stein_level(times[upto] - 40.0, TRUTH["C0"] * 3.0, *KINETICS)
    np.testing.assert_allclose(got["CART"][upto], expected, rtol=1e-6)


def test_doses_at_a_reset_time_make_its_dose(stein) -> None:
    times = np.array([30.0, 35.0, 60.0])
    split = pd.DataFrame({"TIME": [30.0, 30.0], "AMT": [1e6, 2e6], "EVID": [4, 1]})
    whole = pd.DataFrame({"TIME": [30.0], "AMT": [3e6], "EVID": [4]})
    pd.testing.assert_frame_equal(
        ck.simulate(stein, TRUTH, times, doses=split),
        ck.simulate(stein, TRUTH, times, doses=whole),
    )


def reset_trial(ids, evid3: bool = False) -> pd.DataFrame:
    """Subjects infused with 1e6 cells/kg at day 0 and reset and infused with 2e6 at day 60
    (EVID 4, or EVID 3 at day 58 and a dose at day 60); observations before and after."""
    rng = np.random.default_rng(11)
    rows = []
    days = np.array([1.0, 4, 7, 10, 14, 28, 56, 60, 61, 65, 70, 80, 100, 150])
    for subject in ids:
        level = np.where(
            days < 60,
            stein_level(days, **TRUTH),
            stein_level(days - 60, TRUTH["C0"] * 2, *KINETICS),
        ) * np.exp(rng.normal(0, SIGMA, days.size))
        rows.append(pd.DataFrame({"ID": subject, "TIME": days, "DV": level, "EVID": 0}))
        if evid3:
            events = {"TIME": [0.0, 58.0, 60.0], "EVID": [1, 3, 1], "AMT": [1e6, np.nan, 2e6]}
        else:
            events = {"TIME": [0.0, 60.0], "EVID": [1, 4], "AMT": [1e6, 2e6]}
        rows.append(pd.DataFrame({"ID": subject, **events}))
    table = pd.concat(rows, ignore_index=True)
    return table.sort_values(["ID", "TIME"], kind="stable", ignore_index=True)


def reset_prediction(times: np.ndarray, p: dict[str, float]) -> np.ndarray:
    kinetics = (p["rho"], p["tmax"], p["Fb"], p["alpha"], p["beta"])
    return np.where(
        times < 60,
        stein_level(times, p["C0"], *kinetics),
        stein_level(times - 60, p["C0"] * 2, *kinetics),
    )


def test_a_reset_three_then_a_dose_is_a_reset_and_dose(stein) -> None:
    four, three = (read_dataset(reset_trial([1], evid3=e)) for e in (False, True))
    columns = ["ID", "TIME", "AMT", "EVID"]
    pd.testing.assert_frame_equal(four.doses()[columns], three.doses()[columns])
    assert four.doses()["EVID"].tolist() == [1, 4]
    a, b = (pack_observations(ds, stein, [1]) for ds in (four, three))
    for name in ("d_time", "d_amt", "d_reset", "d_off", "time", "dv"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.d_reset, [1])


def test_the_fit_objective_after_a_reset_is_the_closed_forms(stein) -> None:
    """The individual −2LL the kernels compute (log error, sigma 0.25) against the closed
    form: the level from day 60 is a fresh start with DOSE 2e6."""
    obs = pack_observations(read_dataset(reset_trial([1])), stein, [1])
    p = stein.pack({**TRUTH, "DOSE": 1e6})[0]
    n = obs.time.size
    args = (
        p, obs.time, obs.out, obs.dv, obs.cens, obs.lloq, obs.limit,
        np.zeros(n, dtype=np.int64), np.full(n, SIGMA), np.zeros(n), obs.d_time, obs.d_amt,
        obs.d_reset, np.array([0.0, 1e-10, 1e-12, 1e5]), np.empty((n, 1)),
    )  # fmt: skip
    f = reset_prediction(obs.time, TRUTH)
    z = (np.log(obs.dv) - np.log(f)) / SIGMA
    expected = np.sum(z**2 + 2 * np.log(SIGMA) + np.log(2 * np.pi))
    assert stein.kernels.m2ll_one(*args) == pytest.approx(expected, rel=1e-8)


def test_an_individual_fit_across_a_reset(stein) -> None:
    fixed = {name: {"value": value, "vary": False} for name, value in TRUTH.items()}
    fixed["C0"] = {"value": 3.0, "vary": True}
    result = quiet(ck.fit, stein, reset_trial([1]), params=fixed, standard_errors=False)
    assert result.doses.to_dict("list") == {"TIME": [60.0], "AMT": [2e6], "EVID": [4]}
    assert abs(np.log(result.estimates["C0"] / TRUTH["C0"])) < 0.3
    times = np.array([5.0, 59.0, 60.0, 65.0, 120.0])
    expected = reset_prediction(times, {**TRUTH, "C0": result.estimates["C0"]})
    np.testing.assert_allclose(result.predict(times)["CART"], expected, rtol=1e-6)
    back = FitResult.from_json(result.to_json())
    pd.testing.assert_frame_equal(back.doses, result.doses)
    pd.testing.assert_frame_equal(back.predict(times), result.predict(times))
    with pytest.raises(DataError, match=r"exposure over a window does not support a reset"):
        result.exposure()


def test_a_population_fit_across_a_reset() -> None:
    ids = [1, 2, 3]
    fixed = {name: {"value": value, "vary": False} for name, value in TRUTH.items()}
    fixed.pop("C0")
    result = quiet(fit_population, "ck_stein", reset_trial(ids), random=["C0"],
                   params=fixed, n_iter=(20, 10), n_is=50, seed=2, progress=False)  # fmt: skip
    assert result.doses["EVID"].tolist() == [4, 4, 4]
    table = result.predictions(n_sim=20, seed=1)
    individual = result.individual_parameters().set_index("ID")
    for subject, rows in table.groupby("ID"):
        p = {**TRUTH, "C0": individual.loc[subject, "C0"]}
        expected = reset_prediction(rows["TIME"].to_numpy(), p)
        np.testing.assert_allclose(rows["IPRED"], expected, rtol=1e-4)
    assert np.isfinite(result.ofv)


def test_other_type_events_are_accepted_and_ignored(stein) -> None:
    """EVID 2 rows (a covariate recorded on its own row, a DV to ignore) change nothing."""
    base = with_doses(observations([1]), regimen_rows([1])).assign(WT=70.0)
    other = pd.DataFrame({"ID": [1, 1], "TIME": [3.0, 40.0], "DV": [1e9, 5.0], "EVID": 2,
                          "MDV": 0, "WT": 70.0})  # fmt: skip
    table = pd.concat([base, other], ignore_index=True)
    before = table.copy(deep=True)
    ds = read_dataset(table)
    pd.testing.assert_frame_equal(table, before)
    plain = read_dataset(base)
    pd.testing.assert_frame_equal(
        ds.observations().reset_index(drop=True), plain.observations().reset_index(drop=True)
    )
    a, b = (pack_observations(d, stein, [1]) for d in (ds, plain))
    for name in ("time", "dv", "d_time", "d_amt", "d_reset", "covariates"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# --- bad combinations -----------------------------------------------------------------------


def events(**columns) -> pd.DataFrame:
    """One subject: a dose at day 0, observations at days 1, 7 and 28; columns override."""
    base = {
        "ID": [1, 1, 1, 1],
        "TIME": [0.0, 1.0, 7.0, 28.0],
        "DV": [np.nan, 10.0, 500.0, 40.0],
        "EVID": [1, 0, 0, 0],
        "AMT": [1e6, np.nan, np.nan, np.nan],
    }
    return pd.DataFrame({**base, **columns})


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (events(II=[7.0, 0, 0, 0]), r"column II: II without ADDL.* \(row 1\)"),
        (events(ADDL=[2, 0, 0, 0]), r"column ADDL: ADDL without a positive II.* \(row 1\)"),
        (
            events(ADDL=[2, 0, 0, 0], II=[0.0, 0, 0, 0]),
            r"column ADDL: ADDL without a positive II.* \(row 1\)",
        ),
        (events(ADDL=[2, 0, 0, 0], II=[-7.0, 0, 0, 0]), r"column II: negative II.* \(row 1\)"),
        (events(ADDL=[-1, 0, 0, 0], II=[7.0, 0, 0, 0]), r"column ADDL: negative ADDL.* \(row 1\)"),
        (
            events(ADDL=[1.5, 0, 0, 0], II=[7.0, 0, 0, 0]),
            r"column ADDL: ADDL is not a whole number.* \(row 1\)",
        ),
        (
            events(ADDL=[0, 0, 2, 0], II=[0, 0, 7.0, 0]),
            r"column ADDL: ADDL on a row that is not a dose record.* \(row 3\)",
        ),
        (
            events(EVID=[1, 0, 4, 0]),
            r"column AMT: reset and dose \(EVID=4\) without a positive AMT.* \(row 3\)",
        ),
        (
            events(EVID=[1, 0, 5, 0]),
            r"column EVID: must be one of 0 observation, 1 dose, 2 "
            r"other-type event, 3 reset, 4 reset and dose \(row 3\)",
        ),  # fmt: skip
        (events(EVID=[1, -1, 1.5, 0]), r"column EVID: must be one of .* \(rows 2, 3\)"),
        (
            events(EVID=[1, 0, 3, 0], AMT=[1e6, np.nan, 1e6, np.nan]),
            r"column AMT: AMT on a row that gives no dose .* \(row 3\)",
        ),
        (
            events(EVID=[1, 2, 0, 0], AMT=[1e6, 5e5, np.nan, np.nan]),
            r"column AMT: AMT on a row that gives no dose .* \(row 2\)",
        ),
        (
            events(SS=[1, 0, 0, 0]),
            r"column SS: steady state \(SS != 0\) is not supported.*\(row 1\)",
        ),
        (events(RATE=[2e6, 0, 0, 0]), r"column RATE: infusion rate or duration.*\(row 1\)"),
        (events(RATE=[-2, ".", ".", "."]), r"column RATE: infusion rate or duration.*\(row 1\)"),
        (
            events(
                EVID=[3, 1, 0, 0],
                DV=[np.nan, np.nan, 1.0, 2.0],
                AMT=[0, 1e6, 0, 0],
                TIME=[0.0, 0.0, 7.0, 28.0],
            ),  # fmt: skip
            r"column EVID: reset \(EVID=3\) before the subject's first dose record.* \(row 1\)",
        ),
        (
            events(EVID=[1, 0, 3, 0], AMT=[1e6, np.nan, 0, np.nan]),
            r"column EVID: observation after a reset \(EVID=3\) \(the reset at TIME 7, row 3\) "
            r"and before the subject's next dose.* \(row 4\)",
        ),
        (
            events(
                EVID=[1, 0, 4, 0],
                AMT=[1e6, np.nan, 1e6, np.nan],
                ADDL=[1, 0, 0, 0],
                II=[7.0, 0, 0, 0],
            ),  # fmt: skip
            r"column ADDL: additional doses \(ADDL, II\) reach a later reset .* \(row 1\)",
        ),
        (
            pd.DataFrame(
                {
                    "ID": 1,
                    "TIME": [0.0, 1.0, 7.0, 7.0, 28.0],
                    "EVID": [1, 0, 1, 4, 0],
                    "AMT": [1e6, 0, 1e6, 1e6, 0],
                    "DV": [np.nan, 5.0, np.nan, np.nan, 9.0],
                }
            ),
            r"column EVID: dose listed before a reset \(EVID=3 or 4\) at the same TIME.* \(row 3\)",
        ),
        (
            events(EVID=[4, 0, 0, 0], TIME=[3.0, 4.0, 7.0, 28.0]),
            r"column TIME: the first dose record \(EVID=1 or 4\) is not at TIME 0",
        ),
    ],
)
def test_bad_dosing_is_named(frame: pd.DataFrame, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        read_dataset(frame)


def test_a_first_dose_with_evid_4_is_a_dose() -> None:
    ds = read_dataset(events(EVID=[4, 0, 0, 0]))
    assert ds.doses()["EVID"].tolist() == [1]


@pytest.mark.parametrize(
    ("doses", "pattern"),
    [
        (
            pd.DataFrame({"TIME": [10.0], "AMT": [1e6], "EVID": [3]}),
            r"doses: column EVID: must be one of 1 dose, 4 reset and dose \(row 1\)",
        ),
        (
            pd.DataFrame({"TIME": [0.0], "AMT": [1e6], "EVID": [4]}),
            r"doses: column TIME: reset and dose \(EVID=4\) at TIME 0.* \(row 1\)",
        ),
        (
            pd.DataFrame({"TIME": [5.0, 10.0], "AMT": [1e6, 1e6], "II": [7.0, np.nan]}),
            r"doses: column II: II without ADDL.* \(row 1\)",
        ),
        (
            pd.DataFrame({"TIME": [5.0], "AMT": [1e6], "ADDL": ["two"], "II": [7.0]}),
            r"doses: column ADDL: not a number \(found 'two'\) \(row 1\)",
        ),
        (
            pd.DataFrame(
                {
                    "TIME": [10.0, 20.0],
                    "AMT": [1e6, 1e6],
                    "EVID": [1, 4],
                    "ADDL": [2, 0],
                    "II": [7.0, 0],
                }
            ),  # fmt: skip
            r"doses: column ADDL: additional doses \(ADDL, II\) reach a later reset .* \(row 1\)",
        ),
    ],
)
def test_bad_dose_tables_are_named(stein, doses: pd.DataFrame, pattern: str) -> None:
    before = doses.copy(deep=True)
    with pytest.raises(DataError, match=pattern):
        ck.simulate(stein, TRUTH, [0.0, 30.0], doses=doses)
    pd.testing.assert_frame_equal(doses, before)
