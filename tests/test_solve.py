"""ODE solving against independent references: closed forms and scipy at tight tolerance.

The scipy references use right-hand sides written out here by hand from DESIGN.md, never
the generated model code; parameter values are read from the model files by name.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import stein_level, vegf_radau
from scipy.integrate import solve_ivp

from cartpk.errors import DataError, SolverError
from cartpk.model import Model, load_model
from cartpk.solve import Doses, simulate, solve_batch

METHODS = ("dopri5", "rodas")
STEIN_PARAMS = ("C0", "rho", "tmax", "Fb", "alpha", "beta")
# Days 0-365 with every kind of awkward time around the switch at tmax (9.3 days).
STEIN_TMAX = 9.3
STEIN_TIMES = np.unique(
    np.concatenate(
        [
            np.linspace(0.0, 365.0, 146),
            STEIN_TMAX + np.array([-1e-3, -1e-6, -1e-9, 0.0, 1e-9, 1e-6, 1e-3]),
            [0.1, 1.0, 28.0, 100.0],
        ]
    )
)

ROBERTSON = """
[model]
name = "robertson"
description = "Robertson's stiff chemical kinetics (Hairer & Wanner, problem ROBER)"
solver = "rodas"

[parameters.k1]
value = 0.04
[parameters.k2]
value = 3e7
[parameters.k3]
value = 1e4

[states.y1]
initial = 1
[states.y2]
initial = 0
[states.y3]
initial = 0

[equations]
y1 = "-k1 * y1 + k3 * y2 * y3"
y2 = "k1 * y1 - k3 * y2 * y3 - k2 * y2 ** 2"
y3 = "k2 * y2 ** 2"

[outputs.y1]
expression = "y1"
[outputs.y2]
expression = "y2"
[outputs.y3]
expression = "y3"
"""

# dy/dt = -sqrt(y) - 1 reaches y = 0 at a finite time, after which sqrt gives NaN.
BREAKDOWN = """
[model]
name = "breakdown"
description = "test only: y reaches 0 at t = 2 (1 - ln 2), then sqrt(y) is NaN"

[parameters.k]
value = 1.0

[states.y]
initial = 1

[equations]
y = "-k * sqrt(y) - 1"

[outputs.Y]
expression = "y"
"""


@pytest.fixture(scope="module")
def robertson(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = tmp_path_factory.mktemp("models") / "robertson.toml"
    path.write_text(ROBERTSON)
    return load_model(path)


@pytest.fixture(scope="module")
def breakdown(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = tmp_path_factory.mktemp("models") / "breakdown.toml"
    path.write_text(BREAKDOWN)
    return load_model(path)


def typical(model: Model) -> dict[str, float]:
    return {name: par.value for name, par in model.parameters.items()}


def stein_response(t: np.ndarray, t_dose: float, amount: float, par: dict) -> np.ndarray:
    """CART from an amount added to E at t_dose (0 before it): the system is linear."""
    shifted = stein_level(
        np.maximum(t - t_dose, 0.0),
        amount,
        par["rho"],
        max(par["tmax"] - t_dose, 0.0),
        par["Fb"],
        par["alpha"],
        par["beta"],
    )
    return np.where(t >= t_dose, shifted, 0.0)


def stein_subjects() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": [1, 2, 3],
            "C0": [6.153846153846154, 20.0, 0.5],
            "rho": [0.8891109496900792, 0.3, 2.0],
            "tmax": [STEIN_TMAX, 30.5, 3.0],
            "Fb": [0.0079, 0.2, 0.5],
            "alpha": [0.16, 0.5, 1.5],
            "beta": [0.0032, 0.05, 0.001],
        }
    )


def rel_err(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(value / reference - 1.0)))


# --- accuracy ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_stein_matches_closed_form(stein: Model, method: str) -> None:
    subjects = stein_subjects()
    times = {
        i: np.concatenate([STEIN_TIMES, [t - 1e-6, t, t + 1e-6]])
        for i, t in zip(subjects["ID"], subjects["tmax"], strict=True)
    }
    frame = simulate(stein, subjects, times, method=method, rtol=1e-8, atol=1e-12)
    for _, row in subjects.iterrows():
        got = frame[frame["ID"] == row["ID"]]
        expected = stein_level(got["TIME"].to_numpy(), *row[list(STEIN_PARAMS)])
        assert rel_err(got["CART"].to_numpy(), expected) <= 1e-6
        assert got["TIME"].is_monotonic_increasing


@pytest.mark.parametrize("method", METHODS)
def test_stein_exact_at_the_switch(stein: Model, method: str) -> None:
    """The steps ending and starting at tmax see the right branches: E peaks exactly there."""
    times = STEIN_TMAX + np.array([-1e-9, 0.0, 1e-9])
    got = simulate(stein, None, times, method=method, rtol=1e-10, atol=1e-12)["CART"]
    par = typical(stein)
    peak = par["C0"] * np.exp(par["rho"] * STEIN_TMAX)
    np.testing.assert_allclose(got, peak, rtol=1e-8)


def test_methods_agree_on_stein(stein: Model) -> None:
    subjects = stein_subjects()
    dopri = simulate(stein, subjects, STEIN_TIMES, method="dopri5", rtol=1e-9, atol=1e-12)
    rodas = simulate(stein, subjects, STEIN_TIMES, method="rodas", rtol=1e-9, atol=1e-12)
    assert rel_err(dopri["CART"].to_numpy(), rodas["CART"].to_numpy()) <= 1e-7


@functools.cache
def vegf_reference(items: tuple[tuple[str, float], ...], times: tuple[float, ...]) -> np.ndarray:
    """(CART, VEGF) by scipy Radau at rtol 1e-10, split at tmax (cached per parameter set)."""
    return vegf_radau(dict(items), np.array(times))


@pytest.mark.parametrize("method", METHODS)
def test_vegf_matches_scipy_radau(vegf: Model, method: str) -> None:
    times = np.array([0, 1, 4, 7, 9.3, 10, 14, 21, 28, 60, 90, 180, 270, 365.0])
    for change in ({}, {"rho": 0.6, "tmax": 14.0, "kkill": 1e-4, "kgrow": 0.01, "kout": 0.5}):
        par = typical(vegf) | change
        frame = simulate(vegf, change, times, method=method, rtol=1e-8, atol=1e-14)
        expected = vegf_reference(tuple(par.items()), tuple(times))
        assert rel_err(frame[["CART", "VEGF"]].to_numpy(), expected) <= 1e-6


def target_rhs(par: dict):
    """ck_target written out from DESIGN.md."""

    def rhs(t, y):
        E, M, T = y
        dE = par["rho"] * T / (T + par["K"]) * E - (par["alpha"] + par["kmem"]) * E
        dM = par["kmem"] * E - par["beta"] * M
        dT = par["g"] * T - par["kkill"] * E * T
        return [dE, dM, dT]

    return rhs


def target_jacobian(par: dict):
    def jac(t, y):
        E, M, T = y
        growth = par["rho"] * T / (T + par["K"])
        dgrowth = par["rho"] * par["K"] / (T + par["K"]) ** 2 * E
        return [
            [growth - par["alpha"] - par["kmem"], 0.0, dgrowth],
            [par["kmem"], -par["beta"], 0.0],
            [-par["kkill"] * T, 0.0, par["g"] - par["kkill"] * E],
        ]

    return jac


@functools.cache
def target_reference(items: tuple[tuple[str, float], ...], t_end: float):
    """Dense scipy Radau solution of ck_target at rtol 1e-10 (E0 at the reference dose)."""
    par = dict(items)
    y0 = [par["E0"], 0.0, par["T0"]]
    sol = solve_ivp(
        target_rhs(par),
        (0, t_end),
        y0,
        method="Radau",
        rtol=1e-10,
        atol=1e-22,
        jac=target_jacobian(par),
        dense_output=True,
    )
    assert sol.success
    return sol.sol


@pytest.mark.parametrize("method", METHODS)
def test_target_matches_scipy_radau(target: Model, method: str) -> None:
    times = np.array([0, 0.5, 2, 5, 7, 8, 10, 12, 14, 21, 28, 60, 180, 365.0])
    for change in ({}, {"rho": 0.7, "T0": 50.0, "g": 0.1, "kmem": 0.01}):
        par = typical(target) | change
        frame = simulate(target, change, times, method=method, rtol=1e-8, atol=1e-20)
        states = target_reference(tuple(par.items()), times[-1])(times)
        expected = np.column_stack([states[0] + states[1], states[2]])
        assert rel_err(frame[["CART", "TARGET"]].to_numpy(), expected) <= 1e-6


def robertson_rhs(t, y):
    return [
        -0.04 * y[0] + 1e4 * y[1] * y[2],
        0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
        3e7 * y[1] ** 2,
    ]


def robertson_jacobian(t, y):
    return [
        [-0.04, 1e4 * y[2], 1e4 * y[1]],
        [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
        [0.0, 6e7 * y[1], 0.0],
    ]


def test_robertson_stiff_rodas_vs_radau(robertson: Model) -> None:
    """Rodas at rtol 1e-6 against Radau at rtol 1e-12, to t = 1e5.

    Tolerance: Rodas controls the local error to ~1e-6 of each species (atol 1e-14 is
    far below y2 >= 7e-8 on these times) and over the ~100 steps to 1e5 the global
    error stays a few 1e-6 (about 3e-6 observed); 1e-4 leaves margin without hiding
    an order or stability failure, which would give errors of order 1.
    """
    times = np.append(0.4 * 10.0 ** np.arange(6), 1e5)
    ref = solve_ivp(
        robertson_rhs,
        (0, 1e5),
        [1.0, 0.0, 0.0],
        method="Radau",
        rtol=1e-12,
        atol=1e-20,
        jac=robertson_jacobian,
        t_eval=times,
    )
    assert ref.success
    sol = solve_batch(robertson, None, times=times, method="rodas", rtol=1e-6, atol=1e-14)
    assert rel_err(sol.values, ref.y.T) <= 1e-4
    np.testing.assert_allclose(sol.values.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_robertson_too_stiff_for_dopri5(robertson: Model) -> None:
    with pytest.raises(SolverError, match="step budget"):
        solve_batch(robertson, None, times=[0, 1e5], method="dopri5", max_steps=5_000)


# --- doses and the dose link ---------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t_dose", [30.0, 5.0])
def test_second_bolus_adds_the_dosed_amount(stein: Model, method: str, t_dose: float) -> None:
    """A bolus of AMT cells/kg adds C0·(AMT/1e6) to E; the model is linear: superposition."""
    par = typical(stein)
    times = np.unique(np.concatenate([STEIN_TIMES, [t_dose - 1e-9, t_dose, t_dose + 1e-9]]))
    doses = pd.DataFrame({"TIME": [t_dose], "AMT": [1e6]})
    got = simulate(stein, None, times, doses=doses, method=method, rtol=1e-9, atol=1e-12)
    expected = stein_response(times, 0.0, par["C0"], par) + stein_response(
        times, t_dose, par["C0"], par
    )
    assert rel_err(got["CART"].to_numpy(), expected) <= 1e-6
    at_dose = got.set_index("TIME")["CART"]
    jump = at_dose[t_dose] - at_dose[t_dose - 1e-9]
    assert jump == pytest.approx(par["C0"], rel=1e-5)


def test_doses_per_subject_and_ragged_batch(stein: Model) -> None:
    par = typical(stein)
    t = np.array([0.0, 10.0, 40.0, 100.0])
    doses = Doses(np.array([30.0, 20.0, 50.0]), np.array([2e6, 1e6, 1e6]), np.array([0, 1, 3]))
    sol = solve_batch(
        stein,
        np.tile(stein.values, (2, 1)),
        times=np.concatenate([t, t[:2]]),
        offsets=[0, 4, 6],
        doses=doses,
        rtol=1e-10,
        atol=1e-12,
    )
    first = stein_response(t, 0.0, par["C0"], par) + stein_response(t, 30.0, 2 * par["C0"], par)
    second = (
        stein_response(t[:2], 0.0, par["C0"], par)
        + stein_response(t[:2], 20.0, par["C0"], par)
        + stein_response(t[:2], 50.0, par["C0"], par)
    )
    np.testing.assert_allclose(sol.values[:, 0], np.concatenate([first, second]), rtol=1e-7)


@pytest.mark.parametrize(("dose_exp", "factor"), [(1.0, 2.0), (0.5, np.sqrt(2.0))])
def test_dose_link(stein: Model, dose_exp: float, factor: float) -> None:
    subjects = pd.DataFrame({"ID": [1, 2], "DOSE": [1e6, 2e6], "dose_exp": dose_exp})
    frame = simulate(stein, subjects, STEIN_TIMES, rtol=1e-11, atol=1e-14)
    low, high = (frame[frame["ID"] == i]["CART"].to_numpy() for i in (1, 2))
    np.testing.assert_allclose(high / low, factor, rtol=1e-8)


def test_dose_given_as_a_covariate_argument(stein: Model) -> None:
    a = simulate(stein, {"DOSE": 3e6}, [0.0, 20.0])
    b = simulate(stein, None, [0.0, 20.0], covariates={"DOSE": 3e6})
    pd.testing.assert_frame_equal(a, b)
    assert a["CART"].iloc[0] == pytest.approx(3 * stein.parameters["C0"].value, rel=1e-14)


# --- failures --------------------------------------------------------------------------------


def test_step_budget_raises_naming_subject_and_time(stein: Model) -> None:
    params = np.tile(stein.values, (2, 1))
    params[:, stein.param_names.index("rho")] = [0.1, 10.0]
    with pytest.raises(SolverError, match=r"subject ID 'b': step budget .* at t = \d"):
        solve_batch(stein, params, times=[0.0, 50.0], method="dopri5", max_steps=60, ids=["a", "b"])


def test_on_failure_nan_keeps_the_other_subjects(stein: Model) -> None:
    """rho = 10/day needs many more steps than rho = 0.1/day: only that subject fails."""
    params = np.tile(stein.values, (3, 1))
    params[:, stein.param_names.index("rho")] = [0.1, 10.0, 0.1]
    times = np.array([0.0, 5.0, 50.0])
    sol = solve_batch(stein, params, times=times, method="dopri5", max_steps=60, on_failure="nan")
    assert sol.status.tolist() == [0, 1, 0]
    assert 0 < sol.fail_time[1] < STEIN_TMAX and np.isnan(sol.fail_time[[0, 2]]).all()
    assert np.isnan(sol.values[3:6]).all() and np.isfinite(sol.values[[0, 1, 2, 6, 7, 8]]).all()
    par = typical(stein) | {"rho": 0.1}
    expected = stein_level(times, *(par[k] for k in STEIN_PARAMS))
    np.testing.assert_allclose(sol.values[:3, 0], expected, rtol=1e-5)
    assert sol.ok.tolist() == [True, False, True]


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_right_hand_side_is_reported(breakdown: Model, method: str) -> None:
    sol = solve_batch(breakdown, None, times=[0.0, 1.0, 5.0], method=method, on_failure="nan")
    # With u = sqrt(y): 2u du/dt = -(u + 1), so y = 0 at t = 2 (1 - ln 2); NaN beyond.
    assert sol.status[0] in (2, 3)
    assert sol.fail_time[0] == pytest.approx(2.0 * (1.0 - np.log(2.0)), rel=1e-3)
    assert np.isnan(sol.values).all()
    with pytest.raises(SolverError, match="subject index 0"):
        solve_batch(breakdown, None, times=[0.0, 5.0], method=method)


# --- simulate(): inputs and outputs ------------------------------------------------------


def test_simulate_defaults_and_columns(stein: Model) -> None:
    frame = simulate("ck_stein", times=[0.0, 28.0])
    assert list(frame.columns) == ["ID", "TIME", "CART"]
    assert frame["ID"].tolist() == [1, 1]
    assert frame["CART"].iloc[0] == pytest.approx(stein.parameters["C0"].value, rel=1e-15)


def test_times_before_zero_are_refused(stein: Model) -> None:
    """The initial state holds the infusion: there is no pre-infusion state to report."""
    with pytest.raises(ValueError, match=r"times: entry 0 is -7 days, before the infusion"):
        simulate(stein, None, [-7.0, -1.0, 0.0, 1.0])


def test_unsorted_times_are_sorted_and_input_untouched(stein: Model) -> None:
    times = np.array([28.0, 0.0, 14.0])
    subjects = pd.DataFrame({"ID": ["x", "y"], "rho": [0.5, 0.7]})
    before = subjects.copy()
    frame = simulate(stein, subjects, times)
    assert frame["TIME"].tolist() == [0.0, 14.0, 28.0, 0.0, 14.0, 28.0]
    assert frame["ID"].tolist() == ["x"] * 3 + ["y"] * 3
    assert times.tolist() == [28.0, 0.0, 14.0]
    pd.testing.assert_frame_equal(subjects, before)


def test_times_per_subject(stein: Model) -> None:
    subjects = pd.DataFrame({"ID": [7, 9], "rho": [0.5, 0.7]})
    frame = simulate(stein, subjects, {9: [1.0], 7: [2.0, 3.0]})
    assert list(zip(frame["ID"], frame["TIME"], strict=True)) == [(7, 2.0), (7, 3.0), (9, 1.0)]


@pytest.mark.parametrize(
    ("params", "times", "match"),
    [
        ({"rhoo": 1.0}, [0, 1], r"unknown name 'rhoo'.*known: C0, rho, tmax"),
        ({"rho": 100.0}, [0, 1], r"subject ID 1: parameter rho = 100 is outside .*\[0.01, 10\]"),
        ({"rho": [0.1, 0.2]}, [0, 1], "not a number"),
        ({"DOSE": np.nan}, [0, 1], "covariate DOSE is not finite"),
        ("rho=1", [0, 1], "params: expected None"),
        (None, [0, np.nan], r"times: entry 1 is nan"),
        (None, [], "no times given"),
        (None, [[0, 1], [2, 3]], "1-D"),
        (None, ["a"], "expected numbers"),
        (None, None, "times: required"),
        (None, {2: [0, 1]}, r"missing \[1\], unknown \[2\]"),
    ],
)
def test_simulate_rejects_bad_input(stein: Model, params, times, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate(stein, params, times)


def test_simulate_rejects_bad_frames(stein: Model) -> None:
    with pytest.raises(DataError, match=r"'WT', 'foo' are not parameters or covariates"):
        simulate(stein, pd.DataFrame({"rho": [0.5], "WT": [70], "foo": [1]}), [0, 1])
    with pytest.raises(DataError, match=r"column 'rho' has non-numeric .* row\(s\) 2"):
        simulate(stein, pd.DataFrame({"rho": [0.5, "fast"]}), [0, 1])
    with pytest.raises(DataError, match=r"ID\(s\) \[3\] appear more than once"):
        simulate(stein, pd.DataFrame({"ID": [3, 3], "rho": [0.5, 0.6]}), [0, 1])
    with pytest.raises(ValueError, match=r"subject ID 'b': parameter Fb = 1.5"):
        simulate(stein, pd.DataFrame({"ID": ["a", "b"], "Fb": [0.5, 1.5]}), [0, 1])


def test_simulate_rejects_bad_options(stein: Model) -> None:
    with pytest.raises(ValueError, match="method 'rk4'"):
        simulate(stein, None, [0, 1], method="rk4")
    with pytest.raises(ValueError, match="rtol 0"):
        simulate(stein, None, [0, 1], rtol=0)
    with pytest.raises(ValueError, match="atol -1"):
        simulate(stein, None, [0, 1], atol=-1)
    with pytest.raises(DataError, match=r"doses: column TIME: before the infusion .*\(row 1\)"):
        simulate(stein, None, [0, 1], doses=pd.DataFrame({"TIME": [-1.0], "AMT": [1e6]}))
    with pytest.raises(DataError, match="column 'AMT' is missing"):
        simulate(stein, None, [0, 1], doses=pd.DataFrame({"TIME": [1.0]}))
    with pytest.raises(ValueError, match="are parameters, not covariates"):
        simulate(stein, None, [0, 1], covariates={"rho": 1.0})
    with pytest.raises(ValueError, match="'DOSE' is given twice"):
        simulate(stein, {"DOSE": 1e6}, [0, 1], covariates={"DOSE": 2e6})


def test_solve_batch_rejects_bad_arrays(stein: Model) -> None:
    with pytest.raises(ValueError, match="each subject's times must be sorted"):
        solve_batch(stein, np.tile(stein.values, (2, 1)), times=[0, 2, 1, 0], offsets=[0, 2, 4])
    with pytest.raises(ValueError, match="offsets"):
        solve_batch(stein, stein.values, times=[0, 1], offsets=[0, 1])
    with pytest.raises(ValueError, match="on_failure"):
        solve_batch(stein, stein.values, times=[0, 1], on_failure="ignore")
    with pytest.raises(ValueError, match="must be sorted"):
        solve_batch(stein, stein.values, times=[1, 0])


def test_model_path_accepted(tmp_path: Path) -> None:
    path = tmp_path / "robertson.toml"
    path.write_text(ROBERTSON)
    frame = simulate(str(path), None, [0.0, 1e-3], rtol=1e-8, atol=1e-14)
    assert list(frame.columns) == ["ID", "TIME", "y1", "y2", "y3"]


def test_covariate_frame_matched_by_id(stein: Model) -> None:
    subjects = pd.DataFrame({"ID": ["a", "b"], "rho": [0.5, 0.5]})
    covariates = pd.DataFrame({"ID": ["b", "a"], "DOSE": [2e6, 1e6]})
    frame = simulate(stein, subjects, [0.0], covariates=covariates)
    c0 = stein.parameters["C0"].value
    assert frame["CART"].tolist() == pytest.approx([c0, 2 * c0], rel=1e-15)
    with pytest.raises(DataError, match="do not match the subjects' IDs"):
        simulate(stein, subjects, [0.0], covariates=covariates.assign(ID=["b", "c"]))


@pytest.mark.parametrize("method", ["dopri5", "rodas"])
def test_integrators_at_levels_far_beyond_a_trial(stein: Model, method: str) -> None:
    """A 1e15-fold expansion: Rodas's difference Jacobian needs increments relative to the
    state (an increment lost in rounding made it 0 and the level 2e-5 off at rtol 1e-8), and
    dopri5's first step after tmax must exceed the resolution of t (the memory state starts
    at 0 beside a level of 1e15: Hairer's estimate gave a step that could not advance t)."""
    par = typical(stein) | {"C0": 4.6, "rho": 2.7, "tmax": 12.42}
    times = np.array([0.0, 5.0, 12.42, 20.0, 100.0])
    got = simulate(stein, par, times, method=method, rtol=1e-8, atol=1e-12)["CART"]
    expected = stein_level(times, *(par[k] for k in STEIN_PARAMS))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
