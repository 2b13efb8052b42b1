"""PopulationFit diagnostics: PRED/IPRED/IWRES/NPDE, VPC, figures, summary, JSON round trip.

One SAEM fit per session on a trial simulated here from the ck_stein closed form (known
truth, rich sampling, censoring below the LLOQ). References are independent of cartpk's
solvers: the closed form, exact Gaussian algebra (a model whose only random effect is the
log of C0 is linear-Gaussian on the log scale), numpy quantiles and Monte Carlo simulations
of the closed form, with tolerances from their sampling distributions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from references import stein_exposure
from references import stein_level as stein
from scipy import stats

from cartpk.individual import FitWarning
from cartpk.population import PopulationFit, fit_population
from cartpk.population.diagnostics import censored_quantile, time_bins

DAYS = np.array([1, 2, 4, 7, 10, 14, 21, 28, 42, 60, 90, 180, 270, 365.0])
TRUTH = {
    "C0": 24000 / 3900,
    "rho": np.log(3900) / 9.3,
    "tmax": 9.3,
    "Fb": 0.0079,
    "alpha": 0.16,
    "beta": 0.0032,
}
OMEGA = {"C0": 0.5, "rho": 0.15, "alpha": 0.3}
SIGMA = 0.2
LLOQ = 20.0
DOSES = (1e6, 3e6)
N_SUBJECTS = 20


def simulated_trial(seed: int = 2024) -> pd.DataFrame:
    """20 subjects (half at each dose), 14 samples each, log-normal IIV and residual error."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N_SUBJECTS):
        dose = DOSES[i * len(DOSES) // N_SUBJECTS]
        p = {k: v * np.exp(rng.normal(0, OMEGA.get(k, 0.0))) for k, v in TRUTH.items()}
        level = stein(DAYS, p["C0"] * dose / 1e6, *[p[k] for k in list(TRUTH)[1:]])
        dv = level * np.exp(rng.normal(0, SIGMA, DAYS.size))
        common = {"ID": i + 1, "DOSE": dose, "LLOQ": LLOQ}
        rows.append({**common, "TIME": 0.0, "DV": np.nan, "EVID": 1, "AMT": dose, "MDV": 1})
        for t, y in zip(DAYS, dv, strict=True):
            below = bool(y < LLOQ)
            rows.append(
                {**common, "TIME": t, "DV": LLOQ if below else y, "CENS": int(below), "EVID": 0}
            )
    return pd.DataFrame(rows).fillna({"CENS": 0, "MDV": 0})


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulated_trial()


@pytest.fixture(scope="module")
def fit(data) -> PopulationFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return fit_population(
            "ck_stein",
            data,
            random=["C0", "rho", "alpha"],
            covariates={"C0": ["DOSE"]},
            n_iter=(80, 40),
            n_is=100,
            progress=False,
        )


@pytest.fixture(scope="module")
def table(fit) -> pd.DataFrame:
    return fit.predictions(n_sim=1000, seed=3)


def natural(fit: PopulationFit, phi: np.ndarray) -> dict[str, np.ndarray]:
    """Estimation-scale rows to natural values, by hand (log, and logit on [0, 1] for Fb)."""
    names = fit.model.param_names
    out = {n: np.exp(phi[:, names.index(n)]) for n in ("C0", "rho", "tmax", "alpha", "beta")}
    out["Fb"] = 1 / (1 + np.exp(-phi[:, names.index("Fb")]))
    out["dose_exp"] = phi[:, names.index("dose_exp")]
    return out


def closed_form_rows(fit: PopulationFit, params: dict[str, np.ndarray]) -> np.ndarray:
    """The closed form at every observation row, subject i at params[...][i]."""
    obs = fit.observations
    index = pd.Index(fit.ids).get_indexer(obs["ID"])
    dose = fit.covariates[index, 0]
    p = {k: v[index] for k, v in params.items()}
    c0 = p["C0"] * (dose / 1e6) ** p["dose_exp"]
    return stein(obs["TIME"].to_numpy(), c0, p["rho"], p["tmax"], p["Fb"], p["alpha"], p["beta"])


def typical_from_table(fit: PopulationFit) -> dict[str, np.ndarray]:
    """Each subject's typical parameters from the fixed-effects table (power model on DOSE)."""
    fixed = fit.fixed_effects.set_index("parameter")["estimate"]
    dose = fit.covariates[:, 0]
    n = len(fit.ids)
    out = {name: np.full(n, fixed[name]) for name in fit.model.param_names}
    out["C0"] = fixed["C0"] * (dose / np.median(dose)) ** fixed["C0~DOSE"]
    return out


# --- PRED, IPRED, IWRES -------------------------------------------------------------------


def test_fit_recovers_truth_roughly(fit):
    # a sanity check of the fixture, not of the diagnostics: typical values near the truth
    fixed = fit.fixed_effects.set_index("parameter")
    for name in ("rho", "tmax", "alpha"):
        assert fixed.loc[name, "estimate"] == pytest.approx(TRUTH[name], rel=0.25)
    assert fit.sigma["estimate"].iloc[0] == pytest.approx(SIGMA, rel=0.25)


def test_pred_and_ipred_match_the_closed_form(fit, table):
    # the solver runs at the fit's rtol 1e-6: a relative error of 1e-4 is 100 times that
    pred = closed_form_rows(fit, typical_from_table(fit))
    ipred = closed_form_rows(fit, natural(fit, fit.phi_mode))
    np.testing.assert_allclose(table["PRED"], pred, rtol=1e-4)
    np.testing.assert_allclose(table["IPRED"], ipred, rtol=1e-4)
    assert list(table.columns[:6]) == ["ID", "TIME", "ANALYTE", "DV", "CENS", "LLOQ"]
    pd.testing.assert_series_equal(table["ID"], fit.observations["ID"].reset_index(drop=True))


def test_iwres_on_the_log_scale_and_nan_when_censored(fit, table):
    sigma = fit.sigma_values["CART"]["sigma"]
    ipred = closed_form_rows(fit, natural(fit, fit.phi_mode))
    expected = np.log(table["DV"].to_numpy() / ipred) / sigma
    quantified = table["CENS"].to_numpy() == 0
    # IPRED within 1e-4 relative: log(IPRED) within 1e-4, IWRES within 1e-4 / sigma
    np.testing.assert_allclose(
        table["IWRES"][quantified], expected[quantified], rtol=0, atol=1e-4 / sigma
    )
    assert table["IWRES"][~quantified].isna().all()
    assert (~quantified).sum() >= 5  # the trial has censored points to exercise


def test_predictions_leave_the_fit_unchanged_and_are_seeded(fit, table):
    before = fit.observations.copy()
    again = fit.predictions(n_sim=1000, seed=3)
    pd.testing.assert_frame_equal(fit.observations, before)
    pd.testing.assert_frame_equal(again, table)
    other = fit.predictions(n_sim=1000, seed=4)
    assert not np.allclose(other["NPDE"], table["NPDE"])
    np.testing.assert_array_equal(other["PRED"], table["PRED"])


# --- NPDE ------------------------------------------------------------------------------------


def test_npde_standard_normal_on_data_from_the_model(table):
    # N values, nearly independent N(0, 1) under the model: the mean has SD 1/sqrt(N), the
    # variance SD sqrt(2/(N-1)); bounds at 3.29 SD (two-sided 0.001)
    npde = table["NPDE"].to_numpy()
    assert np.isfinite(npde).all()
    n = npde.size
    assert abs(npde.mean()) < 3.29 / math.sqrt(n)
    assert abs(npde.var(ddof=1) - 1) < 3.29 * math.sqrt(2 / (n - 1))
    assert stats.kstest(npde, "norm").pvalue > 0.001


def linear_gaussian(fit: PopulationFit) -> tuple[PopulationFit, float]:
    """The fit with C0 as the only random effect: log(CART) is then exactly Gaussian."""
    k = fit.random.index("C0")
    omega = float(np.sqrt(fit.omega[k, k]))
    return dataclasses.replace(fit, random=["C0"], omega=np.array([[omega**2]])), omega


def linear_gaussian_data(fit: PopulationFit, omega: float, seed: int) -> pd.DataFrame:
    """Observations simulated from that model by the closed form, without LLOQ."""
    rng = np.random.default_rng(seed)
    obs = fit.observations
    index = pd.Index(fit.ids).get_indexer(obs["ID"])
    eta = omega * rng.standard_normal(len(fit.ids))[index]
    eps = fit.sigma_values["CART"]["sigma"] * rng.standard_normal(len(obs))
    dv = closed_form_rows(fit, typical_from_table(fit)) * np.exp(eta + eps)
    return obs.assign(DV=dv, CENS=0, LLOQ=np.nan)


def exact_decorrelated(fit: PopulationFit, omega: float, pred: np.ndarray) -> np.ndarray:
    """L⁻¹(log DV − log PRED) per subject, V = omega²·11' + sigma²·I = LL' (exact)."""
    sigma = fit.sigma_values["CART"]["sigma"]
    y = np.log(fit.observations["DV"].to_numpy()) - np.log(pred)
    index = pd.Index(fit.ids).get_indexer(fit.observations["ID"])
    out = np.empty_like(y)
    for i in range(len(fit.ids)):
        rows = np.flatnonzero(index == i)
        V = omega**2 * np.ones((rows.size, rows.size)) + sigma**2 * np.eye(rows.size)
        out[rows] = np.linalg.solve(np.linalg.cholesky(V), y[rows])
    return out


def test_npde_equal_exact_decorrelation_in_a_linear_gaussian_model(fit):
    # Monte Carlo error with K replicates, in pde units: the binomial variance <= 1/(4K),
    # plus the error of the decorrelated value of a subject's j-th observation (0-based),
    # which uses the simulated mean and j regression coefficients: variance ~ (j + 1)/K in
    # z units, times the normal density (<= 0.4) squared. Bound: 4.5 of those SDs per row,
    # and the mean |difference| below its expectation sqrt(2/pi)·RMS(SD).
    K = 4000
    lg, omega = linear_gaussian(fit)
    lg = dataclasses.replace(lg, observations=linear_gaussian_data(lg, omega, seed=21))
    table = lg.predictions(n_sim=K, seed=11)
    z = exact_decorrelated(lg, omega, table["PRED"].to_numpy())
    diff = stats.norm.cdf(table["NPDE"]) - stats.norm.cdf(z)
    j = table.groupby("ID", sort=False).cumcount().to_numpy()
    sd = np.sqrt(1 / (4 * K) + 0.16 * (j + 1) / K)
    assert np.all(np.abs(diff) < 4.5 * sd)
    assert np.mean(np.abs(diff)) < math.sqrt(2 / math.pi) * np.sqrt(np.mean(sd**2))


def test_censored_npde_imputed_below_the_lloq_probability(fit):
    # a censored first observation decorrelates to (y_imp − m)/sd, with its pd drawn in
    # [0, P(y < LLOQ)]: Φ(npde) stays below the exact P(y < LLOQ) (+ Monte Carlo error)
    # tolerance 0.05: 4.5 binomial SDs of P(y_sim < LLOQ) (<= 0.011 for K = 2000), the
    # simulated mean and SD of the first observation adding less than 0.4·sqrt(2/K) = 0.013
    lg, omega = linear_gaussian(fit)
    table = lg.predictions(n_sim=2000, seed=12)
    sigma = lg.sigma_values["CART"]["sigma"]
    first = ~table["ID"].duplicated().to_numpy()
    rows = first & (table["CENS"].to_numpy() == 1)
    assert rows.sum() >= 3
    p_below = stats.norm.cdf(np.log(LLOQ / table["PRED"][rows]) / math.sqrt(omega**2 + sigma**2))
    assert np.all(stats.norm.cdf(table["NPDE"][rows]) <= p_below + 0.05)


# --- VPC -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vpc(fit) -> pd.DataFrame:
    return fit.vpc(n=500, seed=5)


def test_vpc_observed_percentiles_and_censoring(data, vpc):
    obs = data[data["EVID"] == 0]
    assert list(vpc["time"]) == list(DAYS)  # 14 nominal times: one bin each
    for row in vpc.itertuples():
        at = obs[obs["TIME"] == row.time]
        n, n_cens = len(at), int(at["CENS"].sum())
        assert row.n == n
        assert row.blq_obs == pytest.approx(n_cens / n)
        for p, label in ((0.05, "p5"), (0.5, "p50"), (0.95, "p95")):
            value, flag = getattr(row, f"obs_{label}"), getattr(row, f"obs_{label}_blq")
            # unknown when the interpolation of numpy's rule touches a censored value
            assert flag == (math.floor(p * (n - 1)) < n_cens)
            if flag:
                assert math.isnan(value)
            else:
                # any value below the LLOQ for the censored points gives the same quantile
                filled = np.where(at["CENS"] == 1, LLOQ / 7, at["DV"])
                assert value == pytest.approx(np.quantile(filled, p), rel=1e-12)
    assert vpc["obs_p5_blq"].any()


def closed_form_replicates(fit: PopulationFit, n: int, seed: int) -> np.ndarray:
    """(n, n_rows) natural-scale observations simulated with the closed form."""
    rng = np.random.default_rng(seed)
    names = fit.model.param_names
    random = [names.index(r) for r in fit.random]
    obs = fit.observations
    out = np.empty((n, len(obs)))
    chol = np.linalg.cholesky(fit.omega)
    sigma = fit.sigma_values["CART"]["sigma"]
    for r in range(n):
        phi = fit.design.copy()
        phi[:, random] += rng.standard_normal((len(fit.ids), len(random))) @ chol.T
        level = closed_form_rows(fit, natural(fit, phi))
        out[r] = level * np.exp(sigma * rng.standard_normal(len(obs)))
    return out


def test_vpc_simulated_percentiles_match_closed_form_monte_carlo(fit, vpc):
    # reference: 500 replicates of the closed form (another generator); compare the median
    # and CI limits of each percentile on the log scale, within 4.5 SD of the difference of
    # two independent estimates (SD from a bootstrap over the reference replicates)
    sims = closed_form_replicates(fit, 500, seed=99)
    times = fit.observations["TIME"].to_numpy()
    rng = np.random.default_rng(7)
    compared = 0
    for row in vpc.itertuples():
        values = sims[:, times == row.time]
        if (values < LLOQ).any():
            continue  # censored bins are checked against the observed data above
        per_replicate = np.quantile(values, [0.05, 0.5, 0.95], axis=1)  # (3, n)
        for k, label in enumerate(("p5", "p50", "p95")):
            ref = np.log(np.quantile(per_replicate[k], [0.025, 0.5, 0.975]))
            boot = [
                np.log(np.quantile(rng.choice(per_replicate[k], 500), [0.025, 0.5, 0.975]))
                for _ in range(200)
            ]
            sd = np.std(boot, axis=0, ddof=1) * math.sqrt(2)
            found = np.log([getattr(row, f"sim_{label}_{s}") for s in ("low", "median", "high")])
            assert np.all(np.abs(found - ref) < 4.5 * sd), (row.time, label, found, ref, sd)
            compared += 1
    assert compared >= 12


def test_vpc_simulated_fraction_below_lloq(fit, vpc):
    # exact P(y < LLOQ) per subject needs all three random effects; the fraction at day 1
    # depends almost only on C0 (rho·1 day varies by 0.15): compare with a closed-form
    # Monte Carlo median, which can differ by one subject (1/20) from discreteness
    sims = closed_form_replicates(fit, 500, seed=98)
    times = fit.observations["TIME"].to_numpy()
    for row in vpc.itertuples():
        fraction = (sims[:, times == row.time] < LLOQ).mean(axis=1)
        assert abs(row.blq_sim_median - np.median(fraction)) <= 1 / N_SUBJECTS + 1e-12
        assert row.blq_sim_low <= row.blq_sim_median <= row.blq_sim_high
    assert vpc["blq_sim_median"].iloc[0] > 0.05


def test_vpc_is_seeded_and_validates_its_input(fit, vpc):
    pd.testing.assert_frame_equal(fit.vpc(n=500, seed=5), vpc)
    with pytest.raises(ValueError, match="pi"):
        fit.vpc(pi=(0.5, 1.2))
    with pytest.raises(ValueError, match="ci"):
        fit.vpc(ci=1.0)
    with pytest.raises(ValueError, match="VEGF"):
        fit.vpc(analyte="VEGF")
    with pytest.raises(ValueError, match="n 1"):
        fit.vpc(n=1)
    with pytest.raises(ValueError, match="n_sim"):
        fit.predictions(n_sim=0)
    with pytest.raises(ValueError, match="outside"):
        fit.vpc(bins=[1, 100])


def test_time_bins_quantiles_when_many_times():
    times = np.repeat(np.arange(1.0, 31.0), 3)  # 30 unique times: quantile bins
    which, low, high = time_bins(times, None)
    assert low.size == 10
    np.testing.assert_array_equal(np.bincount(which), np.full(10, 9))
    assert np.all(times >= low[which]) and np.all(times <= high[which])
    which, low, high = time_bins(times, [0, 10, 31])
    np.testing.assert_array_equal(which, (times >= 10).astype(int))
    which, low, high = time_bins(np.array([7.0, 1.0, 7.0]), None)
    np.testing.assert_array_equal(which, [1, 0, 1])
    np.testing.assert_array_equal(low, high)


def test_censored_quantile_rule():
    values = np.array([-np.inf, -np.inf, 3.0, 1.0, 2.0, 5.0])
    q = censored_quantile(values, np.array([0.1, 0.4, 0.5, 0.9]))
    # sorted: -inf, -inf, 1, 2, 3, 5; h = 5p: 0.5 (censored), 2.0, 2.5, 4.5
    assert math.isnan(q[0])
    np.testing.assert_allclose(q[1:], np.quantile([0.0, 0.0, 1, 2, 3, 5], [0.4, 0.5, 0.9]))


# --- figures ---------------------------------------------------------------------------------


def test_plot_gof(fit, table, tmp_path):
    path = tmp_path / "gof.png"
    fig = fit.plot_gof(path, predictions=table)
    assert path.stat().st_size > 10_000
    axes = fig.axes
    assert len(axes) == 4
    for ax in axes[:2]:
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        markers = {line.get_marker(): line for line in ax.get_lines()}
        assert len(markers["v"].get_xdata()) == int(table["CENS"].sum())
        identity = [line for line in ax.get_lines() if line.get_label() == "identity"][0]
        np.testing.assert_array_equal(identity.get_xdata(), identity.get_ydata())
    for ax, column in zip(axes[2:], ("IWRES", "NPDE"), strict=True):
        assert ax.get_yscale() == "linear"
        levels = sorted(
            line.get_ydata()[0] for line in ax.get_lines() if line.get_marker() == "None"
        )
        assert levels == [-1.96, 0.0, 1.96]
        assert column in ax.get_ylabel()
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"


def test_plot_vpc(fit, vpc, tmp_path):
    path = tmp_path / "vpc.pdf"
    fig = fit.plot_vpc(path, vpc=vpc)
    assert path.stat().st_size > 5_000
    top, bottom = fig.axes
    assert top.get_yscale() == "log"
    assert len(top.collections) == 3  # one simulated band per percentile
    observed = {line.get_label(): line for line in top.get_lines()}
    np.testing.assert_array_equal(observed["observed p95"].get_ydata(), vpc["obs_p95"])
    assert LLOQ in [line.get_ydata()[0] for line in top.get_lines() if line.get_label() == "LLOQ"]
    assert "LLOQ" in bottom.get_ylabel()
    np.testing.assert_array_equal(
        [line for line in bottom.get_lines() if line.get_label() == "observed"][0].get_ydata(),
        vpc["blq_obs"],
    )


# --- summary and problems ---------------------------------------------------------------------


def test_summary_shows_tables_criteria_and_problems(fit):
    text = fit.summary()
    assert repr(fit) == text
    assert "Fixed effects" in text and "C0~DOSE" in text and "shrinkage" in text
    assert f"{fit.ofv:.3f}" in text and f"{fit.aic:.3f}" in text and f"{fit.bic:.3f}" in text
    assert f"quadrature at the conditional modes: {fit.ofv_quadrature:.3f}" in text
    assert "CART_sigma" in text
    note = "the Fisher information is not positive definite: no standard errors"
    bad = dataclasses.replace(fit, covariance=None, notes=[note])
    bad_text = bad.summary()
    assert note in bad_text and "NOT AVAILABLE" in bad_text
    assert bad.fixed_effects["se"].isna().all()


# --- JSON --------------------------------------------------------------------------------------


def test_json_carries_the_model_and_warns_when_its_file_changed(fit, tmp_path):
    """Issue 12 item 2: an edited model file must not silently change a saved fit."""
    from cartpk.individual import ModelChangedWarning
    from cartpk.model import load_model

    path = tmp_path / "mystein.toml"
    original = fit.model.path.read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")
    mine = dataclasses.replace(fit, model=load_model(path))
    text = mine.to_json()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged file: no warning
        PopulationFit.from_json(text)
    # an edited equation: the saved fit keeps the equations it was fitted with, and says so
    edited = original.replace("rho * E if", "(rho + 0.5) * E if")
    assert edited != original
    path.write_text(edited, encoding="utf-8")
    with pytest.warns(ModelChangedWarning, match="mystein.toml' has changed since the fit"):
        back = PopulationFit.from_json(text)
    assert back.model.equations == fit.model.equations
    assert back.model.equations != load_model(path).equations
    pd.testing.assert_frame_equal(back.individual, fit.individual)
    path.unlink()
    with pytest.warns(ModelChangedWarning, match="no longer exists"):
        gone = PopulationFit.from_json(text)
    pd.testing.assert_frame_equal(gone.fixed_effects, fit.fixed_effects)
    tampered = json.loads(text)
    tampered["model"]["text"] = edited
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        PopulationFit.from_dict(tampered)


def test_json_round_trip(fit, table):
    text = fit.to_json()
    data = json.loads(text)
    assert data["format"] == "cartpk.PopulationFit" and data["format_version"] == 3
    assert data["model"]["name"] == "ck_stein" and "path" not in data["model"]
    assert data["model"]["text"] == fit.model.path.read_text(encoding="utf-8")
    assert "cartpk_version" in data
    back = PopulationFit.from_json(text)
    for name in ("fixed_effects", "omega_table", "sigma"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(fit, name))
    pd.testing.assert_frame_equal(back.individual, fit.individual)
    pd.testing.assert_frame_equal(back.history, fit.history)
    pd.testing.assert_frame_equal(back.predictions(n_sim=1000, seed=3), table)
    assert all(type(i) is int for i in back.ids)
    assert (back.ofv, back.aic, back.bic) == (fit.ofv, fit.aic, fit.bic)
    assert back.ofv_quadrature == fit.ofv_quadrature and np.isfinite(fit.ofv_quadrature)
    assert back.summary() == fit.summary()


def test_json_keeps_string_ids_and_doses(fit):
    # the ID column built as fit_population builds it (an object array of the IDs)
    labels = {i: f"P{i:03d}" for i in fit.ids}
    renamed = dataclasses.replace(
        fit,
        ids=[labels[i] for i in fit.ids],
        observations=fit.observations.assign(
            ID=np.array([labels[i] for i in fit.observations["ID"]], dtype=object)
        ),
        doses=pd.DataFrame({"ID": ["P003"], "TIME": [100.0], "AMT": [2e6], "EVID": [1]}),
    )
    back = PopulationFit.from_json(renamed.to_json())
    assert back.ids == renamed.ids and all(type(i) is str for i in back.ids)
    pd.testing.assert_frame_equal(back.doses, renamed.doses)
    pd.testing.assert_frame_equal(back.observations, renamed.observations)


def test_individual_exposure_matches_the_closed_form(fit):
    # ck_stein peaks at tmax (< 28 days here); AUC 0-28 integrates the two phases exactly
    found = fit.individual
    p = natural(fit, fit.phi_mode)
    c0 = p["C0"] * (fit.covariates[:, 0] / 1e6) ** p["dose_exp"]
    kinetics = (p["rho"], p["tmax"], p["Fb"], p["alpha"], p["beta"])
    peak, _, auc = stein_exposure(28.0, c0, *kinetics)
    assert list(found["ID"]) == list(fit.ids)
    np.testing.assert_allclose(found["C0"], p["C0"], rtol=1e-12)
    np.testing.assert_allclose(found["tmax"], p["tmax"], rtol=1e-12)  # the parameter
    np.testing.assert_allclose(found["tmax_CART"], p["tmax"], rtol=1e-6)  # the peak time
    np.testing.assert_allclose(found["cmax"], peak, rtol=1e-6)
    np.testing.assert_allclose(found["auc_0_28"], auc, rtol=1e-6)


def test_reinfusion_enters_the_predictions(fit):
    # a bolus B = C0·(AMT/1e6) into E after tmax adds B·((1−Fb)e^{−α s} + Fb e^{−β s})
    subject = fit.ids[2]
    with_dose = dataclasses.replace(
        fit, doses=pd.DataFrame({"ID": [subject], "TIME": [100.0], "AMT": [2e6]})
    )
    table = with_dose.predictions(n_sim=50, seed=1)
    p = typical_from_table(fit)
    expected = closed_form_rows(fit, p)
    obs = fit.observations
    after = (obs["ID"] == subject).to_numpy() & (obs["TIME"] >= 100).to_numpy()
    s = obs["TIME"].to_numpy()[after] - 100
    k = 2
    bolus = p["C0"][k] * 2.0
    expected[after] += bolus * (
        (1 - p["Fb"][k]) * np.exp(-p["alpha"][k] * s) + p["Fb"][k] * np.exp(-p["beta"][k] * s)
    )
    np.testing.assert_allclose(table["PRED"], expected, rtol=1e-4)
    assert after.sum() == 3


def test_json_refuses_other_documents():
    with pytest.raises(ValueError, match="not valid JSON"):
        PopulationFit.from_json("{")
    with pytest.raises(ValueError, match="expected 'cartpk.PopulationFit'"):
        PopulationFit.from_json(json.dumps({"format": "cartpk.FitResult", "format_version": 1}))
    with pytest.raises(ValueError, match="version 99"):
        PopulationFit.from_json(
            json.dumps({"format": "cartpk.PopulationFit", "format_version": 99})
        )
