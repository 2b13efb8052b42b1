"""Dose scenarios against closed forms, sampling theory and scipy solve_ivp at rtol 1e-10."""

from __future__ import annotations

import sys
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest
from references import stein_auc, stein_level
from scipy import stats
from scipy.integrate import solve_ivp

from cartpk.data import read_dataset
from cartpk.errors import ModelError
from cartpk.model import Model, load_model
from cartpk.scenarios import CovariateEffect, Population, Response, scenarios

#: The between-subject SDs that generated data/phase1_trial.csv (data/README.md): modest
#: variability, every virtual patient solvable with the default solver.
PHASE1_OMEGA = {"C0": 0.5, "rho": 0.15, "tmax": 0.2, "Fb": 0.5, "alpha": 0.3, "beta": 0.3}
#: Stein's SDs drawn independently (the model files' defaults before their correlations):
#: peaks up to 1e21 copies/ug, a stress test for the stiff retry and failure reporting.
HEAVY_OMEGA = {"C0": 1.75, "rho": 0.64, "tmax": 0.62, "Fb": 0.89, "alpha": 0.95, "beta": 0.93}
STEIN = ["C0", "rho", "tmax_param", "Fb", "alpha", "beta", "dose_exp"]
TRIAL = Path(__file__).resolve().parents[2] / "data" / "phase1_trial.csv"

DECAY = """
[model]
name = "decay"
description = "test only: first-order decline from a level, no DOSE covariate"

[parameters.level]
value = 3.0
omega = 0.2

[parameters.k]
value = 0.1

[states.y]
initial = "level"

[equations]
y = "-k * y"

[outputs.Y]
expression = "y"
"""


def stein_row(row: pd.Series) -> tuple[float, ...]:
    """One patient's ck_stein arguments of tests/references.py: C0 times the dose factor
    (DOSE / 1e6)^dose_exp, then rho, tmax, Fb, alpha, beta."""
    f = (row["DOSE"] / 1e6) ** row["dose_exp"]
    return (f * row["C0"], row["rho"], row["tmax_param"], row["Fb"], row["alpha"], row["beta"])


@pytest.fixture(scope="module")
def decay(tmp_path_factory: pytest.TempPathFactory) -> Model:
    path = tmp_path_factory.mktemp("models") / "decay.toml"
    path.write_text(DECAY)
    return load_model(path)


# --- exposure against the closed form ------------------------------------------------------


def test_stein_exposure_matches_closed_form(stein: Model) -> None:
    """File omegas (Stein 2019, correlated): every patient solved and against the closed
    form. Heavy tails on a short step budget: patients the solver could not do are kept,
    flagged and NaN, never dropped, and counted in the summary."""
    result = scenarios(stein, doses=[1e6, 3e6], n=150, seed=3)
    table = result.patients
    assert len(table) == 300 and table["ID"].tolist() == [*range(1, 151)] * 2
    solved = table[table["status"] == 0]
    assert len(solved) == 300
    for _, row in solved.iterrows():
        args = stein_row(row)
        peak_time = min(row["tmax_param"], 28.0)
        assert row["tmax"] == pytest.approx(peak_time, rel=1e-9)
        assert row["cmax"] == pytest.approx(stein_level(peak_time, *args), rel=2e-6)
        assert row["auc_0_28"] == pytest.approx(stein_auc(0.0, 28.0, *args), rel=2e-6)
    heavy = scenarios(stein, doses=[1e6, 3e6], n=150, seed=3, omega=HEAVY_OMEGA, max_steps=500)
    table, summary = heavy.patients, heavy.summary()
    failed = table[table["status"] != 0]
    assert len(table) == 300 and len(failed) >= 1
    assert failed["status"].isin([1, 2, 3]).all()
    assert failed[["cmax", "tmax", "auc_0_28"]].isna().all().all()
    assert summary["n_failed"].sum() == len(failed)


def test_stiff_patients_are_solved_by_auto(vegf: Model) -> None:
    """ck_vegf's clone kill is stiff when CAR-T levels are very high: patients Dormand–Prince
    alone cannot do (step budget), the default auto method solves, and their CAR-T exposure
    matches the ck_stein closed form."""
    kwargs = {"doses": [3e6], "n": 40, "seed": 5, "response": False, "omega": HEAVY_OMEGA}
    explicit = scenarios(vegf, method="dopri5", **kwargs).patients
    result = scenarios(vegf, **kwargs)
    table = result.patients
    assert (table["solver"] == "auto").all()
    rescued = (explicit["status"] == 1) & (table["status"] == 0)
    assert rescued.sum() >= 1
    assert (explicit.loc[table["status"] != 0, "status"] != 0).all()  # auto is never worse
    for _, row in table[table["status"] == 0].iterrows():
        args = stein_row(row)
        peak_time = min(row["tmax_param"], 28.0)
        assert row["cmax"] == pytest.approx(stein_level(peak_time, *args), rel=2e-6)
        assert row["auc_0_28"] == pytest.approx(stein_auc(0.0, 28.0, *args), rel=2e-6)
    bands = result.bands("VEGF", [0.0, 14.0, 28.0])
    assert (bands["n"] == (table["status"] == 0).sum()).all()


def test_dose_changes_the_answer_in_proportion(stein: Model) -> None:
    """Same patients at 1e6 and 2e6: identical parameters; cmax and AUC scale by 2^dose_exp."""
    for dose_exp in (1.0, 0.5):
        typical = {name: par.value for name, par in stein.parameters.items()}
        population = Population(stein, typical | {"dose_exp": dose_exp}, PHASE1_OMEGA)
        table = scenarios(population, doses=[1e6, 2e6], n=100, seed=11).patients
        low, high = (table[table["DOSE"] == d].reset_index(drop=True) for d in (1e6, 2e6))
        pd.testing.assert_frame_equal(low[STEIN[:-1]], high[STEIN[:-1]], check_exact=True)
        ratio = 2.0**dose_exp
        np.testing.assert_allclose(high["cmax"] / low["cmax"], ratio, rtol=1e-6)
        np.testing.assert_allclose(high["auc_0_28"] / low["auc_0_28"], ratio, rtol=1e-6)
        np.testing.assert_allclose(high["tmax"], low["tmax"], rtol=1e-9)


def test_dose_covariate_effect_without_a_dose_link(decay: Model) -> None:
    """A model without DOSE takes the dose through a fitted DOSE effect: cmax is the level
    at t = 0, level_i (DOSE/1e6)^theta; AUC = cmax (1 - e^(-28 k)) / k."""
    effect = CovariateEffect("level", "DOSE", "power", 0.8, 1e6)
    population = Population(decay, {"level": 3.0, "k": 0.1}, {"level": 0.2}, None, [effect])
    table = scenarios(population, doses=[1e6, 4e6], n=50, seed=2, output="Y").patients
    low, high = (table[table["DOSE"] == d].reset_index(drop=True) for d in (1e6, 4e6))
    np.testing.assert_allclose(high["level"] / low["level"], 4.0**0.8, rtol=1e-12)
    np.testing.assert_allclose(table["cmax"], table["level"], rtol=1e-9)
    np.testing.assert_array_equal(table["tmax"], 0.0)
    auc = table["level"] * (1 - np.exp(-28 * 0.1)) / 0.1
    np.testing.assert_allclose(table["auc_0_28"], auc, rtol=1e-7)


# --- the draws -----------------------------------------------------------------------------


def test_draws_match_omega_and_typical_values(stein: Model) -> None:
    """Log (logit for Fb) of the drawn parameters: mean within 4 SE of the typical value on
    that scale (SE = omega / sqrt(n)), SD within 4 SE of omega (SE = omega / sqrt(2(n-1)))."""
    n = 20_000
    # a one-day exposure window: only the draws are checked here, so keep the solves short
    table = scenarios(stein, doses=[1e6], n=n, seed=7, interval=(0, 1)).patients
    columns = {"C0": "C0", "rho": "rho", "tmax": "tmax_param", "alpha": "alpha", "beta": "beta"}
    for name, column in columns.items():
        par = stein.parameters[name]
        x = np.log(table[column].to_numpy())
        assert abs(x.mean() - np.log(par.value)) < 4 * par.omega / np.sqrt(n), name
        assert abs(x.std(ddof=1) - par.omega) < 4 * par.omega / np.sqrt(2 * (n - 1)), name
    fb = stein.parameters["Fb"]
    logit = np.log(table["Fb"] / (1 - table["Fb"]))
    assert abs(logit.mean() - np.log(fb.value / (1 - fb.value))) < 4 * fb.omega / np.sqrt(n)
    assert abs(logit.std(ddof=1) - fb.omega) < 4 * fb.omega / np.sqrt(2 * (n - 1))
    assert (table["dose_exp"] == 1.0).all()  # fixed: no variability


def test_correlated_random_effects(stein: Model) -> None:
    """corr(log rho, log tmax) = -0.9 as given, within 4 SE ((1 - r^2) / sqrt(n))."""
    n = 20_000
    names = ["rho", "tmax"]
    omega = {"rho": 0.4, "tmax": 0.3}
    population = Population.from_model(stein, omega, np.array([[1.0, -0.9], [-0.9, 1.0]]))
    table = scenarios(population, doses=[1e6], n=n, seed=8, interval=(0, 1)).patients
    logs = np.log(table[["rho", "tmax_param"]].to_numpy())
    r = np.corrcoef(logs.T)[0, 1]
    assert abs(r - -0.9) < 4 * (1 - 0.81) / np.sqrt(n)
    for k, name in enumerate(names):
        sd = omega[name]
        assert abs(logs[:, k].std(ddof=1) - sd) < 4 * sd / np.sqrt(2 * (n - 1))


def test_same_seed_same_patients(stein: Model) -> None:
    first = scenarios(stein, doses=[1e6, 2e6], n=50, seed=4, omega=PHASE1_OMEGA).patients
    again = scenarios(stein, doses=[1e6, 2e6], n=50, seed=4, omega=PHASE1_OMEGA).patients
    other = scenarios(stein, doses=[1e6, 2e6], n=50, seed=5, omega=PHASE1_OMEGA).patients
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert not np.any(first["C0"].to_numpy() == other["C0"].to_numpy())


def test_chunks_threads_and_dask_give_identical_results(vegf: Model) -> None:
    kwargs = {"doses": [1e6, 3e6], "n": 30, "seed": 6, "omega": PHASE1_OMEGA}
    reference = scenarios(vegf, **kwargs).patients
    assert reference[["pr_28", "time_to_pr"]].notna().any().all()
    runs = [scenarios(vegf, chunk_size=7, **kwargs), scenarios(vegf, scheduler="dask", **kwargs)]
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        runs.append(scenarios(vegf, chunk_size=11, **kwargs))
    finally:
        numba.set_num_threads(threads)
    distributed = pytest.importorskip("dask.distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as client:
        runs.append(scenarios(vegf, scheduler=client, chunk_size=13, **kwargs))
    for run in runs:
        pd.testing.assert_frame_equal(run.patients, reference, check_exact=True)


@pytest.mark.slow
def test_dask_cluster_of_processes_gives_identical_results(vegf: Model) -> None:
    """Tasks pickled to two worker processes (each loads the compiled model itself)."""
    distributed = pytest.importorskip("dask.distributed")
    kwargs = {"doses": [1e6, 3e6], "n": 30, "seed": 6, "omega": PHASE1_OMEGA}
    reference = scenarios(vegf, **kwargs).patients
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as client,
    ):
        run = scenarios(vegf, scheduler=client, chunk_size=13, **kwargs)
    pd.testing.assert_frame_equal(run.patients, reference, check_exact=True)


@pytest.mark.slow
def test_process_cluster_streams_the_same_file(vegf: Model, tmp_path: Path) -> None:
    """Two worker processes, one thread each, each task drawing its own patients: the
    streamed file equals the local in-memory table (two random blocks)."""
    pytest.importorskip("pyarrow")
    distributed = pytest.importorskip("dask.distributed")
    kwargs = {"doses": [1e6, 3e6], "n": 1500, "seed": 24}
    reference = scenarios(vegf, **kwargs).patients
    path = tmp_path / "patients.parquet"
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        scenarios(vegf, scheduler=client, chunk_size=250, write=path, **kwargs)
    pd.testing.assert_frame_equal(pd.read_parquet(path), reference, check_exact=True)


def test_dask_missing_names_the_extra(stein: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r"cartpk\[dask\]"):
        scenarios(stein, n=5, scheduler="dask")


# --- covariates ----------------------------------------------------------------------------


def test_covariates_resampled_from_a_dataset(stein: Model) -> None:
    """WT resampled from the trial's subjects; with no eta on C0 the individual C0 is
    exactly the typical value times (WT / 70)^0.75. The DataFrame is not modified."""
    trial = pd.read_csv(TRIAL)
    before = trial.copy(deep=True)
    omega = {k: v for k, v in PHASE1_OMEGA.items() if k != "C0"}
    effect = CovariateEffect("C0", "WT", "power", 0.75, 70.0)
    typical = {name: par.value for name, par in stein.parameters.items()}
    population = Population(stein, typical, omega, None, [effect])
    n = 400
    table = scenarios(population, doses=[2e6], n=n, seed=9, covariates=trial).patients
    pd.testing.assert_frame_equal(trial, before)
    weights = trial.groupby("ID")["WT"].first()
    assert set(table["WT"]) <= set(weights)
    se = weights.std(ddof=0) / np.sqrt(n)
    assert abs(table["WT"].mean() - weights.mean()) < 4 * se
    np.testing.assert_allclose(table["C0"], typical["C0"] * (table["WT"] / 70.0) ** 0.75)
    assert (table["DOSE"] == 2e6).all()
    same = scenarios(population, doses=[2e6], n=n, seed=9, covariates=read_dataset(TRIAL))
    pd.testing.assert_frame_equal(same.patients, table, check_exact=True)


def test_covariates_from_distributions(stein: Model) -> None:
    """A scipy distribution, a callable (rng, size) and a constant; categorical and
    level effects on alpha: alpha_i = 0.16 exp(0.3 [SEX != 0]) exp(-0.2 [GROUP == 2])."""
    effects = [
        CovariateEffect("alpha", "SEX", "categorical", 0.3, 0.0),
        CovariateEffect("alpha", "GROUP", "level", -0.2, 2.0),
        CovariateEffect("C0", "WT", "power", 1.0, 70.0),
    ]
    typical = {name: par.value for name, par in stein.parameters.items()}
    population = Population(stein, typical, {"rho": 0.15}, None, effects)
    covariates = {
        "SEX": stats.bernoulli(0.5),
        "GROUP": lambda rng, size: rng.integers(1, 4, size),
        "WT": 70.0,
    }
    n = 2000
    table = scenarios(population, doses=[1e6], n=n, seed=10, covariates=covariates).patients
    assert set(table["SEX"]) == {0.0, 1.0} and set(table["GROUP"]) == {1.0, 2.0, 3.0}
    assert abs(table["SEX"].mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
    expected = 0.16 * np.exp(0.3 * (table["SEX"] != 0)) * np.exp(-0.2 * (table["GROUP"] == 2))
    np.testing.assert_allclose(table["alpha"], expected, rtol=1e-14)
    np.testing.assert_allclose(table["C0"], typical["C0"], rtol=1e-14)


# --- biomarker response --------------------------------------------------------------------


def vegf_reference_days(row: pd.Series, ceiling: float, end: float) -> tuple[float, float]:
    """First days VEGF <= B0 / 2 and <= ceiling by scipy DOP853 (rtol 1e-10), split at tmax,
    with event location; NaN if not reached by ``end``."""
    p = row.to_dict()
    tmax = p["tmax_param"]

    def rhs(after: bool):
        def f(t, y):
            E, M, P, B = y
            if after:
                dE, dM = -p["alpha"] * E, p["Fb"] * (p["alpha"] - p["beta"]) * E - p["beta"] * M
            else:
                dE, dM = p["rho"] * E, 0.0
            dP = p["kgrow"] * P - p["kkill"] * (E + M) * P
            return [dE, dM, dP, p["kout"] * (p["Bnorm"] + (p["B0"] - p["Bnorm"]) * P - B)]

        return f

    def level(value):
        def event(t, y):
            return y[3] - value

        event.direction = -1
        return event

    events = [level(0.5 * p["B0"]), level(ceiling)]
    y0 = [p["C0"] * (p["DOSE"] / 1e6) ** p["dose_exp"], 0.0, 1.0, p["B0"]]
    opts = {"method": "DOP853", "rtol": 1e-10, "atol": 1e-12, "events": events}
    first = solve_ivp(rhs(False), (0.0, tmax), y0, **opts)
    second = solve_ivp(rhs(True), (tmax, end), first.y[:, -1], **opts)
    days = []
    for k in range(2):
        hits = np.concatenate([first.t_events[k], second.t_events[k]])
        days.append(float(hits[0]) if hits.size else np.nan)
    return days[0], days[1]


def test_vegf_response_days_match_scipy(vegf: Model) -> None:
    result = scenarios(vegf, doses=[1e6, 3e6], n=4, seed=12, omega=PHASE1_OMEGA, times=None)
    table = result.patients
    assert (table["status"] == 0).all()
    checked = 0
    for _, row in table.iterrows():
        pr_day, cr_day = vegf_reference_days(row, 1040.0, 90.0)
        for ours, reference in ((row["time_to_pr"], pr_day), (row["time_to_cr"], cr_day)):
            if np.isnan(reference):
                assert np.isnan(ours)
            else:
                assert ours == pytest.approx(reference, abs=1e-6)
                checked += 1
        assert bool(row["pr_28"]) == (pr_day <= 28)
        assert bool(row["cr_28"]) == (cr_day <= 28)
    assert checked >= 8


def test_response_criteria_and_normal_baseline(vegf: Model) -> None:
    """A baseline below the upper limit of normal: CR not evaluable (NA), PR still found;
    a custom criterion (30 % of baseline, ULN 500 ng/L, by day 21) renames the flags."""
    low = vegf.with_values(B0=900.0)
    table = scenarios(low, doses=[2e6], n=20, seed=13, omega=PHASE1_OMEGA).patients
    assert table["cr_28"].isna().all() and table["time_to_cr"].isna().all()
    assert table["pr_28"].notna().all()
    criteria = Response(partial=0.3, normal=500.0, by=21.0)
    result = scenarios(vegf, doses=[2e6], n=4, seed=12, omega=PHASE1_OMEGA, response=criteria)
    rows = result.patients
    assert {"pr_21", "cr_21"} <= set(rows.columns)
    row = rows.iloc[0]
    days = vegf_reference_days(row.to_frame().T.iloc[0], 500.0, 90.0)
    assert not np.isnan(days[1])
    assert row["time_to_cr"] == pytest.approx(days[1], abs=1e-6)
    summary = result.summary()
    assert summary.loc[0, "p_cr_21"] == pytest.approx(rows["cr_21"].astype(float).mean())


def test_higher_dose_responds_no_later(vegf: Model) -> None:
    """Paired patients: more CAR-T cells kill the clone faster, so PR comes no later."""
    table = scenarios(vegf, doses=[1e6, 3e6], n=60, seed=14, omega=PHASE1_OMEGA).patients
    low, high = (table[table["DOSE"] == d].reset_index(drop=True) for d in (1e6, 3e6))
    both = low["time_to_pr"].notna() & high["time_to_pr"].notna()
    assert both.sum() >= 30
    assert (high.loc[both, "time_to_pr"] < low.loc[both, "time_to_pr"]).all()
    assert not (low["time_to_pr"].notna() & high["time_to_pr"].isna()).any()


# --- summary, bands, plots, files ----------------------------------------------------------


def test_bands_match_the_closed_form(stein: Model) -> None:
    """Median and 5-95 % of CART at each time: the percentiles of each patient's closed
    form C(t), computed independently from the drawn parameters."""
    result = scenarios(stein, doses=[1e6, 2e6], n=200, seed=15, omega=PHASE1_OMEGA)
    times = np.array([0.0, 5.0, 9.0, 14.0, 28.0, 60.0])
    bands = result.bands("CART", times)
    assert bands.shape == (12, 6)
    for dose in (1e6, 2e6):
        rows = result.patients[result.patients["DOSE"] == dose]
        curves = np.array([stein_level(times, *stein_row(r)) for _, r in rows.iterrows()])
        expected = np.percentile(curves, [50, 5, 95], axis=0)
        got = bands[bands["DOSE"] == dose]
        for k, column in enumerate(("median", "p5", "p95")):
            np.testing.assert_allclose(got[column], expected[k], rtol=2e-6)
        assert (got["n"] == 200).all()


def test_summary_plots_and_csv(vegf: Model, tmp_path: Path) -> None:
    result = scenarios(vegf, doses=[1e6, 2e6, 3e6], n=50, seed=16, omega=PHASE1_OMEGA)
    summary = result.summary()
    assert summary["DOSE"].tolist() == [1e6, 2e6, 3e6]
    assert (summary["n"] == 50).all() and (summary["n_failed"] == 0).all()
    for dose, row in summary.set_index("DOSE").iterrows():
        cmax = result.patients.loc[result.patients["DOSE"] == dose, "cmax"]
        assert row["cmax_median"] == pytest.approx(np.median(cmax))
        assert row["cmax_p5"] < row["cmax_median"] < row["cmax_p95"]
    assert summary["p_pr_28"].is_monotonic_increasing
    figure = result.plot_exposure(tmp_path / "exposure.png")
    assert [ax.get_yscale() for ax in figure.axes] == ["log", "linear", "log"]
    figure = result.plot_bands(tmp_path / "bands.png")
    assert [ax.get_yscale() for ax in figure.axes] == ["log", "linear"]
    assert (tmp_path / "exposure.png").stat().st_size > 10_000
    assert (tmp_path / "bands.png").stat().st_size > 10_000
    written = pd.read_csv(result.to_csv(tmp_path / "patients.csv"))
    assert list(written.columns) == list(result.patients.columns)
    np.testing.assert_allclose(written["auc_0_28"], result.patients["auc_0_28"], rtol=1e-15)


def test_population_fit_source(stein: Model) -> None:
    class FitLike:
        def population(self) -> Population:
            return Population.from_model(stein, PHASE1_OMEGA)

    class Broken:
        def population(self) -> dict:
            return {}

    direct = scenarios(Population.from_model(stein, PHASE1_OMEGA), n=10, seed=1).patients
    pd.testing.assert_frame_equal(scenarios(FitLike(), n=10, seed=1).patients, direct)
    with pytest.raises(ValueError, match=r"population\(\) returned dict"):
        scenarios(Broken(), n=10)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"omega": {"kel": 0.3}}, ModelError, r"omega: 'kel' is not a parameter of ck_stein"),
        ({"omega": {"rho": -0.1}}, ModelError, r"omega of rho: -0.1"),
        ({"doses": [1e6, -2e6]}, ValueError, r"doses: entry 1 is -2000000.0"),
        ({"doses": [1e6, 1e6]}, ValueError, r"repeated doses"),
        ({"n": 0}, ValueError, r"n = 0: the number of virtual patients"),
        ({"n": 2.5}, ValueError, r"n = 2.5"),
        ({"seed": None}, ValueError, r"seed None"),
        ({"covariates": {"WT": 70.0}}, ValueError, r"'WT' is neither a covariate"),
        ({"covariates": {"DOSE": 1e6}}, ValueError, r"DOSE is set by doses="),
        ({"times": [1.0, 2.0]}, ValueError, r"times: must start at 0"),
        ({"output": "VEGF"}, ValueError, r"output 'VEGF': model ck_stein has outputs CART"),
        ({"response": True}, ValueError, r"ck_stein has no VEGF output"),
        ({"chunk_size": 0}, ValueError, r"chunk_size 0"),
        ({"scheduler": "spark"}, ValueError, r"scheduler 'spark'"),
        ({"seed": -1}, ValueError, r"seed -1: expected an integer >= 0"),
        ({"write": "patients.csv"}, ValueError, r"per-patient file is Parquet"),
        ({"write": "/no/such/dir/p.parquet"}, ValueError, r"folder '/no/such/dir' does not"),
    ],
)
def test_bad_input_is_named(stein: Model, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        scenarios(stein, **({"n": 5} | kwargs))


def test_bad_population_is_named(stein: Model, vegf: Model, decay: Model) -> None:
    typical = {name: par.value for name, par in stein.parameters.items()}
    with pytest.raises(ModelError, match=r"missing \['beta'\]"):
        Population(stein, {k: v for k, v in typical.items() if k != "beta"})
    with pytest.raises(ModelError, match="not positive definite"):
        Population(stein, typical, {"rho": 0.3, "tmax": 0.2}, np.array([[1, 1.2], [1.2, 1]]))
    with pytest.raises(ModelError, match="'clearance' is not a parameter"):
        Population(stein, typical, {}, None, [CovariateEffect("clearance", "WT", "power", 1, 70)])
    with pytest.raises(ModelError, match="reference > 0"):
        Population(stein, typical, {}, None, [CovariateEffect("C0", "WT", "power", 1, 0)])
    with pytest.raises(ValueError, match="no DOSE covariate"):
        scenarios(decay, n=5, output="Y")
    effect = [CovariateEffect("C0", "WT", "power", 1.0, 70.0)]
    with pytest.raises(ValueError, match="WT is used by a covariate effect but not given"):
        scenarios(Population(stein, typical, {}, None, effect), n=5)
    with pytest.raises(ValueError, match=r"by = 28.0 days must be > 0 and within"):
        scenarios(vegf, n=5, times=np.linspace(0, 20, 81))
    with pytest.raises(ValueError, match="only for a model source"):
        scenarios(Population.from_model(stein), n=5, omega={"rho": 0.1})


# --- streaming, reproducibility at any chunking, failures ----------------------------------


def test_streamed_parquet_and_chunking_give_identical_tables(vegf: Model, tmp_path: Path) -> None:
    """1005 patients span two random blocks: chunk sizes 7, 1000 and the default, the
    default dask scheduler and an in-process dask cluster, and the table streamed to
    Parquet, all give the same table bit for bit, and the same summary."""
    pytest.importorskip("pyarrow")
    kwargs = {"doses": [1e6, 3e6], "n": 1005, "seed": 21}
    reference = scenarios(vegf, **kwargs)
    table = reference.patients
    assert table["ID"].tolist() == [*range(1, 1006)] * 2
    assert (table["status"] == 0).all() and table["time_to_pr"].notna().any()
    runs = [
        scenarios(vegf, chunk_size=7, **kwargs).patients,
        scenarios(vegf, chunk_size=1000, **kwargs).patients,
        scenarios(vegf, scheduler="dask", chunk_size=400, **kwargs).patients,
    ]
    distributed = pytest.importorskip("dask.distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as client:
        runs.append(scenarios(vegf, scheduler=client, chunk_size=333, **kwargs).patients)
    path = tmp_path / "patients.parquet"
    streamed = scenarios(vegf, chunk_size=300, write=path, **kwargs)
    assert streamed.path == path and streamed._table is None
    assert not (tmp_path / "patients.parquet.partial").exists()
    runs.append(pd.read_parquet(path))
    for run in runs:
        pd.testing.assert_frame_equal(run, table, check_exact=True)
    pd.testing.assert_frame_equal(streamed.summary(), reference.summary(), check_exact=True)
    pd.testing.assert_frame_equal(
        streamed.bands("VEGF", [0.0, 28.0]), reference.bands("VEGF", [0.0, 28.0])
    )
    written = pd.read_csv(streamed.to_csv(tmp_path / "patients.csv"))
    np.testing.assert_array_equal(written["cmax"], table["cmax"])


def test_first_patients_do_not_depend_on_n(stein: Model) -> None:
    """Block draws: the first 300 patients of a run of 1200 are those of a run of 300."""
    small = scenarios(stein, doses=[1e6], n=300, seed=22, interval=(0, 1)).patients
    large = scenarios(stein, doses=[1e6], n=1200, seed=22, interval=(0, 1)).patients
    pd.testing.assert_frame_equal(large.iloc[:300], small, check_exact=True)
    assert large["C0"].nunique() == 1200


def test_forced_failures_are_counted_named_and_kept(
    vegf: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step budget of 5 fails every patient: each is kept (NaN, status 1), counted in
    n_failed, named in failures(), notes, both figure titles and the CLI's warning, and
    written to the streamed file."""
    pytest.importorskip("pyarrow")
    kwargs = {"doses": [1e6, 2e6], "n": 12, "seed": 23, "max_steps": 5}
    path = tmp_path / "failed.parquet"
    for result in (scenarios(vegf, **kwargs), scenarios(vegf, write=path, **kwargs)):
        table = result.patients
        assert len(table) == 24 and (table["status"] == 1).all()
        assert table[["cmax", "tmax", "auc_0_28", "time_to_pr"]].isna().all().all()
        assert table["pr_28"].isna().all() and (table["solver"] == "auto").all()
        assert len(result.failed) == 24
        summary = result.summary()
        assert summary["n_failed"].tolist() == [12, 12] and summary["cmax_median"].isna().all()
        failures = result.failures()
        assert failures["n"].tolist() == [12, 12]
        assert set(failures["reason"]) == {"step budget (max_steps) exceeded"}
        assert "24 of 24 patient-doses could not be solved" in result.notes[0]
        assert "step budget (max_steps) exceeded: 24" in result.notes[0]
        figure = result.plot_exposure(tmp_path / "exposure.png")
        title = figure._suptitle.get_text()
        assert "24 patient-doses not solved (step budget (max_steps) exceeded: 24)" in title
        figure = result.plot_bands(tmp_path / "bands.png")
        assert "24 patient-doses not solved" in figure.axes[0].get_title()
    assert len(pd.read_parquet(path)) == 24

    from typer.testing import CliRunner

    from cartpk.cli import app

    module = sys.modules["cartpk.scenarios"]  # the package's `scenarios` is the function
    original = module.scenarios
    monkeypatch.setattr(module, "scenarios", lambda *a, **k: original(*a, **k, max_steps=5))
    run = CliRunner().invoke(app, ["scenarios", "ck_vegf", "--doses", "1e6,2e6", "--n", "6"])
    assert run.exit_code == 0, run.output
    assert "warning: 12 of 12 patient-doses could not be solved" in run.stderr
    assert "step budget (max_steps) exceeded: 12" in run.stderr
