"""Model-based Cmax, Tmax and AUC against closed forms and a dense scipy solution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from references import stein_auc, stein_level
from scipy.integrate import solve_ivp
from scipy.optimize import minimize_scalar

from cartpk.errors import SolverError
from cartpk.exposure import exposure
from cartpk.model import Model, load_model

METHODS = ("dopri5", "rodas")

FLAT = """
[model]
name = "flat"
description = "test only: a constant output, to check that the first maximum wins"

[parameters.level]
value = 3.0

[states.y]
initial = "level"

[equations]
y = "0 * y"

[outputs.Y]
expression = "y"
"""


SUBJECTS = pd.DataFrame(
    {
        "ID": ["typical", "late", "early"],
        "C0": [6.153846153846154, 20.0, 0.5],
        "rho": [0.8891109496900792, 0.3, 2.0],
        "tmax": [9.3, 30.5, 3.0],
        "Fb": [0.0079, 0.2, 0.5],
        "alpha": [0.16, 0.5, 1.5],
        "beta": [0.0032, 0.05, 0.001],
    }
)
PARAMS = ["C0", "rho", "tmax", "Fb", "alpha", "beta"]


@pytest.mark.parametrize("method", METHODS)
def test_stein_exposure_over_0_28(stein: Model, method: str) -> None:
    table = exposure(stein, SUBJECTS, "CART", (0, 28), method=method)
    assert list(table.columns) == ["ID", "cmax", "tmax", "auc_0_28"]
    assert table["ID"].tolist() == SUBJECTS["ID"].tolist()
    for (_, row), (_, got) in zip(SUBJECTS.iterrows(), table.iterrows(), strict=True):
        par = row[PARAMS].to_numpy(dtype=float)
        peak_time = min(row["tmax"], 28.0)  # "late" peaks after the window: max at its end
        assert got["tmax"] == pytest.approx(peak_time, abs=1e-6)
        assert got["cmax"] == pytest.approx(stein_level(peak_time, *par), rel=1e-6)
        assert got["auc_0_28"] == pytest.approx(stein_auc(0.0, 28.0, *par), rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_stein_window_after_the_peak(stein: Model, method: str) -> None:
    """On [14, 28] the level only falls: the maximum is at the window start."""
    table = exposure(stein, None, interval=(14, 28), method=method)
    par = [stein.parameters[name].value for name in PARAMS]
    assert table.loc[0, "tmax"] == 14.0
    assert table.loc[0, "cmax"] == pytest.approx(stein_level(14.0, *par), rel=1e-6)
    assert table.loc[0, "auc_14_28"] == pytest.approx(stein_auc(14.0, 28.0, *par), rel=1e-6)


def test_stein_typical_values(stein: Model) -> None:
    """DESIGN.md: Cmax 24,000 copies/ug at Tmax 9.3 days for the typical B-ALL patient."""
    table = exposure("ck_stein")
    assert table.loc[0, "cmax"] == pytest.approx(24_000.0, rel=1e-6)
    assert table.loc[0, "tmax"] == pytest.approx(9.3, abs=1e-6)


def test_a_large_second_dose_sets_the_maximum(stein: Model) -> None:
    """Outputs are right-continuous: the post-dose level at day 20 is the new maximum."""
    par = [stein.parameters[name].value for name in PARAMS]
    doses = pd.DataFrame({"TIME": [20.0], "AMT": [1e10]})  # adds C0 * 1e4 to E
    table = exposure(stein, None, interval=(0, 28), doses=doses)
    added = par[0] * 1e4
    assert table.loc[0, "tmax"] == 20.0
    assert table.loc[0, "cmax"] == pytest.approx(stein_level(20.0, *par) + added, rel=1e-6)
    after = (1 - par[3]) * (1 - np.exp(-par[4] * 8.0)) / par[4]
    after += par[3] * (1 - np.exp(-par[5] * 8.0)) / par[5]
    expected_auc = stein_auc(0.0, 28.0, *par) + added * after
    assert table.loc[0, "auc_0_28"] == pytest.approx(expected_auc, rel=1e-6)


def target_augmented(par: dict):
    """ck_target from DESIGN.md plus the running integral of CART = E + M."""

    def rhs(t, y):
        E, M, T, _ = y
        dE = par["rho"] * T / (T + par["K"]) * E - (par["alpha"] + par["kmem"]) * E
        dM = par["kmem"] * E - par["beta"] * M
        dT = par["g"] * T - par["kkill"] * E * T
        return [dE, dM, dT, E + M]

    return rhs


@pytest.mark.parametrize("method", METHODS)
def test_target_smooth_maximum_vs_scipy(target: Model, method: str) -> None:
    """Cmax/Tmax of a smooth peak: scipy's dense solution, its maximum refined by Brent."""
    change = {"rho": 0.9, "T0": 300.0}
    par = {name: p.value for name, p in target.parameters.items()} | change
    ref = solve_ivp(
        target_augmented(par),
        (0, 28),
        [par["E0"], 0.0, par["T0"], 0.0],
        method="Radau",
        rtol=1e-11,
        atol=1e-14,
        dense_output=True,
    )
    assert ref.success
    grid = np.linspace(0, 28, 2801)
    cart = ref.sol(grid)[0] + ref.sol(grid)[1]
    k = int(np.argmax(cart))
    assert 0 < k < grid.size - 1  # an interior, smooth maximum
    best = minimize_scalar(
        lambda t: -(ref.sol(t)[0] + ref.sol(t)[1]),
        bounds=(grid[k - 1], grid[k + 1]),
        method="bounded",
        options={"xatol": 1e-12},
    )
    table = exposure(target, change, "CART", (0, 28), method=method)
    assert table.loc[0, "cmax"] == pytest.approx(-best.fun, rel=1e-7)
    assert table.loc[0, "tmax"] == pytest.approx(best.x, rel=1e-6)
    assert table.loc[0, "auc_0_28"] == pytest.approx(ref.y[3, -1], rel=1e-7)


def test_falling_output_peaks_at_the_start(stein: Model) -> None:
    vegf = load_model("ck_vegf")
    table = exposure(vegf, None, "VEGF", (0, 28))
    assert table.loc[0, "tmax"] == 0.0
    assert table.loc[0, "cmax"] == pytest.approx(vegf.parameters["B0"].value, rel=1e-12)


def test_first_maximum_wins_on_ties(tmp_path) -> None:
    path = tmp_path / "flat.toml"
    path.write_text(FLAT)
    table = exposure(load_model(path), None, "Y", (2.5, 10))
    assert table.loc[0, "tmax"] == 2.5
    assert table.loc[0, "cmax"] == 3.0
    assert table.loc[0, "auc_2.5_10"] == pytest.approx(3.0 * 7.5, rel=1e-12)


def test_many_subjects_agree_with_the_closed_form(stein: Model) -> None:
    rng = np.random.default_rng(7)
    n = 200
    frame = pd.DataFrame(
        {
            "rho": 0.889 * np.exp(0.3 * rng.standard_normal(n)),
            "tmax": 9.3 * np.exp(0.4 * rng.standard_normal(n)),
            "alpha": 0.16 * np.exp(0.5 * rng.standard_normal(n)),
        }
    )
    table = exposure(stein, frame, interval=(0, 28))
    assert table["ID"].tolist() == list(range(1, n + 1))
    for (_, row), (_, got) in zip(frame.iterrows(), table.iterrows(), strict=True):
        par = [row.get(name, stein.parameters[name].value) for name in PARAMS]
        assert got["tmax"] == pytest.approx(min(row["tmax"], 28.0), abs=1e-6)
        assert got["auc_0_28"] == pytest.approx(stein_auc(0.0, 28.0, *par), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output": "VEGF"}, r"output 'VEGF': model ck_stein has outputs CART"),
        ({"interval": (28, 0)}, r"interval \(28, 0\): expected 0 <= start < end"),
        ({"interval": (-1, 28)}, "expected 0 <= start < end"),
        ({"interval": (0, np.inf)}, "both finite"),
        ({"interval": ("a", 2)}, "expected a pair of numbers"),
        ({"interval": 28}, "expected a pair of numbers"),
        ({"method": "euler"}, "method 'euler'"),
        ({"params": {"beta": -1.0}}, r"parameter beta = -1 is outside"),
    ],
)
def test_exposure_rejects_bad_input(stein: Model, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        exposure(stein, **kwargs)


def test_exposure_reports_solver_failure(stein: Model) -> None:
    with pytest.raises(SolverError, match=r"ck_stein: subject ID 1: step budget"):
        exposure(stein, max_steps=5)
