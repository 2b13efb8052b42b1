"""FitResult methods against the ck_stein closed form: residuals, exposure, plot, JSON."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from references import stein_exposure as closed_form_exposure  # noqa: E402
from references import stein_level as stein  # noqa: E402

from cartpk.demo import poems_fit  # noqa: E402
from cartpk.individual import (  # noqa: E402
    FitResult,
    FitTable,
    FitWarning,
    ModelChangedWarning,
    fit,
)
from cartpk.model import load_model  # noqa: E402

DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
RICH_DAYS = np.concatenate([np.arange(0.0, 29.0), [35, 42, 60, 90, 120, 180, 270, 365]])
TRUTH = {"C0": 6.0, "rho": 0.85, "tmax": 10.0, "Fb": 0.01, "alpha": 0.2, "beta": 0.004}
ALL_FIXED = {name: {"value": value, "vary": False} for name, value in TRUTH.items()}


def stein_exposure(p: dict[str, float], end: float = 28.0) -> dict[str, float]:
    """Closed-form cmax, tmax and AUC(0, end) of ck_stein for tmax < end."""
    cmax, tmax, auc = closed_form_exposure(end, *(p[k] for k in TRUTH))
    return {"cmax": cmax, "tmax": tmax, f"auc_0_{end:g}": auc}


def profile(days: np.ndarray = DAYS, noise: float = 0.25, seed: int = 2, id=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dv = stein(days, **TRUTH) * np.exp(rng.normal(0, noise, days.size))
    return pd.DataFrame({"ID": id, "TIME": days, "DV": dv})


def censored(frame: pd.DataFrame, lloq: float = 100.0) -> pd.DataFrame:
    """Values below ``lloq`` reported as CENS=1 with DV = LLOQ."""
    low = frame["DV"] < lloq
    return frame.assign(DV=np.where(low, lloq, frame["DV"]), LLOQ=lloq, CENS=low.astype(int))


def quiet_fit(*args, **kwargs):
    """A fit whose FitWarnings are not what the test is about (e.g. nothing estimated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return fit(*args, **kwargs)


@pytest.fixture(scope="module")
def censored_fit() -> FitResult:
    return quiet_fit("ck_stein", censored(profile()))


def test_residuals_on_the_log_scale_match_the_closed_form() -> None:
    data = censored(profile(noise=0.3))
    result = quiet_fit("ck_stein", data, params=ALL_FIXED, error={"CART": ("log", {"sigma": 0.25})})
    table = result.residuals()
    assert list(table.columns) == [
        "TIME", "ANALYTE", "DV", "CENS", "LLOQ", "IPRED", "RES", "IWRES",
    ]  # fmt: skip
    np.testing.assert_array_equal(table["TIME"], DAYS)
    np.testing.assert_array_equal(table["DV"], data["DV"])
    truth = stein(DAYS, **TRUTH)
    np.testing.assert_allclose(table["IPRED"], truth, rtol=1e-6)
    seen = (data["CENS"] == 0).to_numpy()
    assert 0 < seen.sum() < len(data)
    expected = np.log(data["DV"].to_numpy() / truth)
    np.testing.assert_allclose(table["RES"][seen], expected[seen], rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["IWRES"][seen], expected[seen] / 0.25, rtol=0, atol=1e-5)
    assert table.loc[~seen, ["RES", "IWRES"]].isna().all().all()


def test_proportional_residuals_use_the_prediction_as_scale() -> None:
    data = profile(noise=0.1, seed=4)
    result = quiet_fit(
        "ck_stein", data, params=ALL_FIXED, error={"CART": ("proportional", {"b": 0.2})}
    )
    table = result.residuals()
    truth = stein(DAYS, **TRUTH)
    np.testing.assert_allclose(table["IPRED"], truth, rtol=1e-6)
    res = data["DV"].to_numpy() - truth
    # DV - IPRED loses digits where DV is close to IPRED: bound the error by 1e-6 * IPRED
    assert np.all(np.abs(table["RES"] - res) <= 1e-6 * truth)
    assert np.all(np.abs(table["IWRES"] - res / (0.2 * truth)) <= 1e-6 / 0.2)


def test_iwres_uses_the_estimated_sigma() -> None:
    data = profile(noise=0.3, seed=5)
    result = quiet_fit("ck_stein", data, params=ALL_FIXED)
    log_res = np.log(data["DV"].to_numpy() / stein(DAYS, **TRUTH))
    sigma = np.sqrt(np.mean(log_res**2))  # ML estimate with the structural model known
    # the optimiser stops within ~3e-7 of the minimum -2LL: sigma to ~1e-4
    assert result.estimates["CART_sigma"] == pytest.approx(sigma, rel=1e-3)
    estimated = result.estimates["CART_sigma"]
    np.testing.assert_allclose(result.residuals()["IWRES"], log_res / estimated, rtol=1e-6)


def test_exposure_interval_covers_the_truth_and_estimate_is_closed_form() -> None:
    result = quiet_fit("ck_stein", profile(RICH_DAYS, noise=0.2, seed=11))
    table = result.exposure("CART", (0, 28), n=500, seed=1)
    assert list(table.index) == ["cmax", "tmax", "auc_0_28"]
    assert list(table.columns) == ["estimate", "median", "low", "high", "n_draws"]
    at_estimates = stein_exposure(result.estimates)
    truth = stein_exposure(TRUTH)
    for metric in table.index:
        row = table.loc[metric]
        assert row["estimate"] == pytest.approx(at_estimates[metric], rel=1e-6)
        assert row["low"] < truth[metric] < row["high"]
        assert row["low"] < row["median"] < row["high"]
    assert table["n_draws"].iloc[0] == len(result.draws(500, seed=1)) > 450
    again = result.exposure("CART", (0, 28), n=500, seed=1)
    pd.testing.assert_frame_equal(again, table)
    other = result.exposure("CART", (0, 28), n=500, seed=2)
    assert other.loc["cmax", "low"] != table.loc["cmax", "low"]
    wide = result.exposure("CART", (0, 90), n=50, level=0.5)
    assert wide.loc["auc_0_90", "estimate"] == pytest.approx(
        stein_exposure(result.estimates, 90.0)["auc_0_90"], rel=1e-6
    )


def test_exposure_without_covariance_warns_and_gives_nan_intervals() -> None:
    result = quiet_fit(
        "ck_stein", profile(), params=ALL_FIXED, error={"CART": ("log", {"sigma": 0.2})}
    )
    with pytest.warns(FitWarning, match="no covariance"):
        table = result.exposure(n=50)
    assert table[["median", "low", "high"]].isna().all().all()
    assert (table["n_draws"] == 0).all()
    for metric, value in stein_exposure(TRUTH).items():
        assert table.loc[metric, "estimate"] == pytest.approx(value, rel=1e-6)


def test_draws_stay_in_bounds_and_stiff_draws_are_solved() -> None:
    """dopri5 alone cannot solve some draws and falls back to rodas, with a warning; the
    default auto solves them all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        result = poems_fit()
    draws = result.draws(500, seed=1)
    assert 0 < len(draws) < 500
    for name, p in result.model.parameters.items():
        assert draws[name].between(p.lower, p.upper).all()
    with pytest.warns(FitWarning, match="solved again with 'rodas'"):
        table = result.exposure(n=100, seed=1, method="dopri5")
    pd.testing.assert_frame_equal(table, result.exposure(n=100, seed=1, method="rodas"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitWarning)  # auto, the fit's method, solves every draw
        result.exposure(n=100, seed=1)


def test_plot_marks_censored_points_on_a_log_axis(censored_fit: FitResult, tmp_path) -> None:
    fig = censored_fit.plot()
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert "copies/ug" in ax.get_ylabel()
    assert "ck_stein" in ax.get_title() and "ID 1" in ax.get_title()
    obs = censored_fit.observations
    below = obs[obs["CENS"] == 1]
    assert len(below) > 0
    open_markers = [
        line for line in ax.get_lines() if line.get_marker() == "v" and line.get_mfc() == "none"
    ]
    assert len(open_markers) == 1
    np.testing.assert_array_equal(open_markers[0].get_xdata(), below["TIME"])
    np.testing.assert_array_equal(open_markers[0].get_ydata(), below["LLOQ"])
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [[100.0, 100.0]]
    filled = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(filled[0].get_xdata()) == (obs["CENS"] == 0).sum()
    plt.close(fig)
    path = tmp_path / "fit.png"
    saved = censored_fit.plot(path)
    assert path.stat().st_size > 10_000 and saved.axes[0].get_yscale() == "log"
    fig, own = plt.subplots()
    assert censored_fit.plot(ax=own) is fig
    plt.close(fig)


def test_json_round_trip_keeps_everything() -> None:
    data = censored(profile(noise=0.3, seed=7)).assign(ID="pt-A")
    result = quiet_fit(
        "ck_stein",
        data,
        id="pt-A",
        priors={"tmax": (10.0, 0.3)},
        error={"CART": ("log", {"sigma": 0.25})},
    )
    text = result.to_json()
    stored = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert stored["model"]["name"] == "ck_stein" and "path" not in stored["model"]
    assert stored["subject"] == "pt-A"
    back = FitResult.from_json(text)
    assert back.subject == "pt-A" and back.model.name == "ck_stein"
    pd.testing.assert_frame_equal(back.table(), result.table())
    pd.testing.assert_frame_equal(back.residuals(), result.residuals())
    grid = np.linspace(0, 400, 81)
    pd.testing.assert_frame_equal(back.predict(grid), result.predict(grid))
    pd.testing.assert_frame_equal(back.observations, result.observations)
    np.testing.assert_array_equal(back.covariance, result.covariance)
    for name in ("estimates", "estimation", "names", "ofv", "objective", "success", "message"):
        assert getattr(back, name) == getattr(result, name), name
    for name in ("n_starts", "n_at_best", "errors", "priors", "covariates", "method", "notes"):
        assert getattr(back, name) == getattr(result, name), name
    assert back.errors == {"CART": ("log", {"sigma": 0.25})}
    assert back.priors["tmax"] == result.priors["tmax"]


def test_json_of_a_model_file_needs_the_file(tmp_path: Path) -> None:
    path = tmp_path / "my_stein.toml"
    shutil.copy(load_model("ck_stein").path, path)
    result = quiet_fit(path, profile(), params=ALL_FIXED, error={"CART": "log"})
    text = result.to_json()
    assert json.loads(text)["model"]["path"] == str(path.resolve())
    pd.testing.assert_frame_equal(FitResult.from_json(text).table(), result.table())
    path.unlink()  # the fit carries its model's text: read back, with a warning
    with pytest.warns(ModelChangedWarning, match="my_stein.toml' no longer exists"):
        back = FitResult.from_json(text)
    pd.testing.assert_frame_equal(back.table(), result.table())


def test_fit_table_round_trip_keeps_ids_and_failures() -> None:
    early = pd.DataFrame({"ID": [3], "TIME": [-1.0], "DV": [5.0]})
    data = pd.concat([profile(seed=8), profile(seed=9, id=2), early])
    table = quiet_fit("ck_stein", data, error={"CART": ("log", {"sigma": 0.25})})
    assert list(table.results) == [1, 2] and list(table.errors) == [3]
    back = FitTable.from_json(table.to_json())
    assert list(back.results) == [1, 2] and all(type(k) is int for k in back.results)
    assert back.errors == {3: table.errors[3]}
    pd.testing.assert_frame_equal(back.table(), table.table())
    pd.testing.assert_frame_equal(back[2].residuals(), table[2].residuals())
    with pytest.raises(ValueError, match="expected 'cartpk.FitResult'"):
        FitResult.from_json(table.to_json())
    with pytest.raises(ValueError, match="not valid JSON"):
        FitTable.from_json("{")


def test_reinfusions_enter_predictions_and_json() -> None:
    result = quiet_fit(
        "ck_stein", profile(), params=ALL_FIXED, error={"CART": ("log", {"sigma": 0.2})}
    )
    again = dataclasses.replace(
        result, doses=pd.DataFrame({"TIME": [20.0], "AMT": [5e5], "EVID": [1]})
    )
    times = np.array([5.0, 19.0, 20.5, 25.0, 60.0, 200.0])
    p = TRUTH
    after = np.maximum(times - 20.0, 0.0)
    memory = p["Fb"] * np.exp(-p["beta"] * after)
    added = p["C0"] * 0.5 * ((1 - p["Fb"]) * np.exp(-p["alpha"] * after) + memory)
    expected = stein(times, **TRUTH) + np.where(times >= 20.0, added, 0.0)
    np.testing.assert_allclose(again.predict(times)["CART"], expected, rtol=1e-6)
    back = FitResult.from_json(again.to_json())
    pd.testing.assert_frame_equal(back.doses, again.doses)
    pd.testing.assert_frame_equal(back.predict(times), again.predict(times))
