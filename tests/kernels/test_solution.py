"""Closed-form solutions declared in a model file ([solution], method "closed").

ck_stein's [solution] is held against its [equations] integrated by dopri5 at tight
tolerance and against the hand-derived closed forms of tests/references.py (one infusion,
a re-infusion after tmax), over a population of parameter draws; the model-file checks of
the section are one error each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import STEIN_PARAMS, stein_level, stein_reinfused

import cartpk as ck
from cartpk.errors import ModelError
from cartpk.model import load_model

TIMES = np.array([0.0, 0.5, 3.0, 7.0, 9.3, 14.0, 28.0, 35.0, 35.0, 60.0, 180.0, 365.0])


@pytest.fixture(scope="module")
def stein():
    return load_model("ck_stein")


def population(model, n: int, seed: int) -> pd.DataFrame:
    """n subjects around the typical values (log-normal SD 0.4 on every parameter but dose_exp,
    Fb kept below 0.5), with tmax on an output time for the first subject."""
    rng = np.random.default_rng(seed)
    rows = {
        name: model.parameters[name].value * np.exp(rng.normal(0.0, 0.4, n))
        for name in STEIN_PARAMS
    }
    rows["Fb"] = np.minimum(rows["Fb"], 0.5)
    rows["tmax"][0] = 9.3
    return pd.DataFrame({"ID": np.arange(1, n + 1), **rows})


def test_the_default_method_of_ck_stein_is_its_closed_form(stein):
    assert stein.solver == "closed"
    assert set(stein.solution) == set(stein.states)


def test_closed_form_matches_the_integrated_equations(stein):
    people = population(stein, 200, seed=5)
    closed = ck.simulate(stein, people, times=TIMES)
    ode = ck.simulate(stein, people, times=TIMES, method="dopri5", rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(closed["CART"], ode["CART"], rtol=2e-8)


def test_closed_form_matches_the_hand_derived_level(stein):
    people = population(stein, 50, seed=6)
    closed = ck.simulate(stein, people, times=TIMES)
    for i, row in people.iterrows():
        got = closed.loc[closed["ID"] == row["ID"], "CART"].to_numpy()
        par = [row[name] for name in STEIN_PARAMS]
        want = stein_level(TIMES, *par)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"subject {i}")


def test_closed_form_with_a_re_infusion_and_a_reset(stein):
    par = {name: stein.parameters[name].value for name in STEIN_PARAMS}
    doses = pd.DataFrame({"TIME": [35.0], "AMT": [3e6]})
    got = ck.simulate(stein, par, times=TIMES, doses=doses)["CART"].to_numpy()
    want = stein_reinfused(TIMES, 35.0, 1e6, 3e6, *par.values())
    np.testing.assert_allclose(got, want, rtol=1e-12)
    reset = pd.DataFrame({"TIME": [35.0], "AMT": [2e6], "EVID": [4]})
    got = ck.simulate(stein, par, times=TIMES, doses=reset)["CART"].to_numpy()
    after = TIMES >= 35.0
    fresh = stein_level(TIMES[after] - 35.0, par["C0"] * 2.0, *list(par.values())[1:])
    np.testing.assert_allclose(got[after], fresh, rtol=1e-12)
    np.testing.assert_allclose(got[~after], stein_level(TIMES[~after], *par.values()), rtol=1e-12)


def test_exposure_with_a_closed_form_integrates(stein):
    people = population(stein, 20, seed=7)
    closed = ck.exposure(stein, people)
    auto = ck.exposure(stein, people, method="auto")
    pd.testing.assert_frame_equal(closed, auto)


def test_closed_is_refused_for_a_model_without_a_solution():
    vegf = load_model("ck_vegf")
    assert vegf.solution is None and vegf.solver != "closed"
    with pytest.raises(ValueError, match="declares no closed-form"):
        ck.simulate(vegf, times=[1.0], method="closed")


STEIN_FILE = Path(ck.__file__).parent / "models" / "ck_stein.toml"
SOLUTION_M = (
    'M = "M if t < tmax else M * exp(-beta * dt) + Fb * E * (exp(-beta * dt) - exp(-alpha * dt))"'
)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (SOLUTION_M, "", "state 'M' has no closed form"),
        (SOLUTION_M, SOLUTION_M + '\nX = "E"', "'X' is not a state"),
        (SOLUTION_M, 'M = "M * exp(-gamma * dt)"', "unknown name 'gamma'"),
        (SOLUTION_M, 'M = "AMT"', "'AMT' is only available in \\[dosing\\] amount"),
        ("[parameters.beta]", "[parameters.dt]\nvalue = 1.0\n\n[parameters.beta]", "'dt' is"),
    ],
)
def test_solution_section_errors(tmp_path, old, new, message):
    text = STEIN_FILE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "edited.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_solver_closed_needs_a_solution(tmp_path):
    text = STEIN_FILE.read_text(encoding="utf-8")
    start = text.index("\n[solution]\n")
    end = text.index("[outputs.CART]")
    edited = text[:start] + text[end:]
    edited = edited.replace('name = "ck_stein"', 'name = "ck_stein"\nsolver = "closed"')
    path = tmp_path / "no_solution.toml"
    path.write_text(edited, encoding="utf-8")
    with pytest.raises(ModelError, match="'closed' needs a \\[solution\\]"):
        load_model(path)
    path.write_text(edited.replace('solver = "closed"\n', ""), encoding="utf-8")
    assert load_model(path).solver == "auto"
