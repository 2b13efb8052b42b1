"""Exposure-response: estimates against hand-written likelihoods maximised with scipy,
observed-rate CIs against the Clopper-Pearson beta quantiles, the band against draws,
recovery and coverage of a known slope, bad input, the figure and the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import optimize, stats  # noqa: E402
from scipy.special import expit  # noqa: E402

import cartpk as ck  # noqa: E402
from cartpk.errors import DataError  # noqa: E402

SLOPE = 0.7  # true log-odds per doubling of Cmax
INTERCEPT = -10.0  # true log-odds at Cmax 1 copy/µg (P = 0.5 near 2e4 copies/µg)


def binary_trial(n: int, seed: int, slope: float = SLOPE) -> pd.DataFrame:
    """n subjects: log-normal Cmax (copies/µg DNA) around 2e4, CRS_GE2 from the logistic
    model on log2(Cmax), three dose levels (not in the model)."""
    rng = np.random.default_rng(seed)
    cmax = np.exp(rng.normal(np.log(2e4), 1.0, n))
    p = expit(INTERCEPT + slope * np.log2(cmax))
    return pd.DataFrame(
        {
            "ID": np.arange(1, n + 1),
            "cmax": cmax,
            "CRS_GE2": rng.binomial(1, p),
            "DOSE": rng.choice([1e6, 2e6, 3e6], n),
        }
    )


def graded_trial(n: int, seed: int) -> pd.DataFrame:
    """n subjects with a CRS grade 0-3 from a cumulative logit on log2(Cmax)."""
    rng = np.random.default_rng(seed)
    cmax = np.exp(rng.normal(np.log(2e4), 1.0, n))
    latent = 0.8 * np.log2(cmax) + rng.logistic(size=n)
    grade = np.digitize(latent, [10.5, 12.0, 13.5])
    return pd.DataFrame({"ID": np.arange(1, n + 1), "cmax": cmax, "CRS": grade})


# --- binary: a hand-written logistic likelihood ------------------------------------------


def logistic_reference(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MLE of logit P = a + b z by scipy's BFGS on the hand-written log-likelihood (with
    its analytic gradient), and the covariance inv(X'WX), W = diag(p (1 - p))."""
    design = np.column_stack([np.ones_like(z), z])

    def nll(theta: np.ndarray) -> float:
        eta = design @ theta
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    def grad(theta: np.ndarray) -> np.ndarray:
        return design.T @ (expit(design @ theta) - y)

    found = optimize.minimize(nll, np.zeros(2), jac=grad, method="BFGS", options={"gtol": 1e-11})
    p = expit(design @ found.x)
    information = design.T @ (design * (p * (1 - p))[:, None])
    return found.x, np.linalg.inv(information)


def test_binary_matches_a_hand_written_logistic_likelihood() -> None:
    table = binary_trial(150, seed=11)
    result = ck.exposure_response(table)
    estimates, covariance = logistic_reference(
        np.log2(table["cmax"].to_numpy()), table["CRS_GE2"].to_numpy()
    )
    assert result.kind == "binary" and result.n == 150
    np.testing.assert_allclose(result.params, estimates, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.coefficients["se"], np.sqrt(np.diag(covariance)), rtol=1e-6)
    np.testing.assert_allclose(result.covariance, covariance, rtol=1e-6)
    q = stats.norm.ppf(0.975)
    slope, se = estimates[1], math.sqrt(covariance[1, 1])
    row = result.coefficients.iloc[1]
    assert row["term"] == "log2(cmax)"
    np.testing.assert_allclose([row["ci_low"], row["ci_high"]], [slope - q * se, slope + q * se])
    np.testing.assert_allclose(row["p_value"], 2 * stats.norm.sf(abs(slope / se)))
    x = np.array([5e3, 2e4, 1e5])
    np.testing.assert_allclose(
        result.probability(x), expit(estimates[0] + estimates[1] * np.log2(x)), rtol=1e-6
    )


def test_odds_ratio_per_doubling_is_the_same_in_base_2_and_base_e() -> None:
    table = binary_trial(150, seed=11)
    base2 = ck.exposure_response(table)
    base_e = ck.exposure_response(table, log_base=math.e)
    row = base2.coefficients.iloc[1]
    odds = base2.odds_ratio_per_doubling
    np.testing.assert_allclose(
        [odds["estimate"], odds["ci_low"], odds["ci_high"]],
        np.exp([row["estimate"], row["ci_low"], row["ci_high"]]),
        rtol=1e-12,
    )
    # per unit of ln(cmax) the slope is the per-doubling one divided by ln 2
    np.testing.assert_allclose(base_e.params[1], base2.params[1] / math.log(2), rtol=1e-7)
    assert base_e.coefficients["term"].iloc[1] == "ln(cmax)"
    for key in ("estimate", "ci_low", "ci_high"):
        np.testing.assert_allclose(base_e.odds_ratio_per_doubling[key], odds[key], rtol=1e-7)
    np.testing.assert_allclose(base_e.probability([1e4]), base2.probability([1e4]), rtol=1e-7)


# --- ordinal: a hand-written cumulative logit likelihood ---------------------------------


def cumulative_logit_reference(
    z: np.ndarray, y: np.ndarray, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """MLE of logit P(Y <= g_j) = c_j - b z (parameters b, c_1 .. c_{K-1}, unconstrained)
    by scipy's BFGS with the analytic gradient, and the inverse of a central-difference
    Hessian of the -LL."""
    index = np.searchsorted(levels, y)
    k = len(levels) - 1

    def parts(theta: np.ndarray) -> tuple[np.ndarray, ...]:
        b, c = theta[0], theta[1:]
        edges = np.concatenate([[-np.inf], c, [np.inf]])
        upper, lower = expit(edges[index + 1] - b * z), expit(edges[index] - b * z)
        return upper, lower, upper * (1 - upper), lower * (1 - lower)  # F and its density

    def nll(theta: np.ndarray) -> float:
        upper, lower, _, _ = parts(theta)
        return -float(np.sum(np.log(upper - lower)))

    def grad(theta: np.ndarray) -> np.ndarray:
        upper, lower, f_upper, f_lower = parts(theta)
        share = 1.0 / (upper - lower)
        gradient = np.zeros(k + 1)
        gradient[0] = np.sum(z * (f_upper - f_lower) * share)
        for j in range(k):  # cutpoint j is the upper edge of category j, the lower of j + 1
            gradient[1 + j] = -np.sum((f_upper * share)[index == j]) + np.sum(
                (f_lower * share)[index == j + 1]
            )
        return gradient

    # start at slope 0 with the marginal cumulative logits (the MLE at slope 0)
    cumulative = np.array([np.mean(y <= g) for g in levels[:-1]])
    start = np.concatenate([[0.0], np.log(cumulative / (1 - cumulative))])
    found = optimize.minimize(nll, start, jac=grad, method="BFGS", options={"gtol": 1e-9})
    assert found.success, found.message
    h = 1e-4
    hessian = np.zeros((k + 1, k + 1))
    for i in range(k + 1):
        for j in range(k + 1):
            ei, ej = np.eye(k + 1)[i] * h, np.eye(k + 1)[j] * h
            hessian[i, j] = (
                nll(found.x + ei + ej)
                - nll(found.x + ei - ej)
                - nll(found.x - ei + ej)
                + nll(found.x - ei - ej)
            ) / (4 * h * h)
    return found.x, np.linalg.inv(hessian)


def test_ordinal_matches_a_hand_written_cumulative_logit_likelihood() -> None:
    table = graded_trial(200, seed=5)
    result = ck.exposure_response(table, outcome="CRS")
    z = np.log2(table["cmax"].to_numpy())
    estimates, covariance = cumulative_logit_reference(
        z, table["CRS"].to_numpy(), np.array([0, 1, 2, 3])
    )
    assert result.kind == "ordinal" and result.grades == (0, 1, 2, 3)
    assert list(result.coefficients["term"]) == [
        "log2(cmax)",
        "cutpoint 0|1",
        "cutpoint 1|2",
        "cutpoint 2|3",
    ]
    np.testing.assert_allclose(result.params, estimates, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.coefficients["se"], np.sqrt(np.diag(covariance)), rtol=1e-3)
    x = np.array([3e3, 2e4, 2e5])
    for k in (1, 2, 3):
        by_hand = expit(estimates[0] * np.log2(x) - estimates[k])  # P(grade >= k)
        np.testing.assert_allclose(result.probability(x, at_least=k), by_hand, rtol=1e-5)
    odds = result.odds_ratio_per_doubling["estimate"]
    np.testing.assert_allclose(odds, math.exp(estimates[0]), rtol=1e-5)


def test_an_unobserved_grade_between_observed_ones_takes_the_next_threshold() -> None:
    table = graded_trial(200, seed=5)
    table["CRS"] = table["CRS"].replace({2: 3})  # grades 0, 1, 3
    result = ck.exposure_response(table, outcome="CRS")
    assert result.grades == (0, 1, 3)
    np.testing.assert_array_equal(
        result.probability([1e4], at_least=2), result.probability([1e4], at_least=3)
    )
    for bad in (0, 4, 1.5, None):
        with pytest.raises(ValueError, match="at_least"):
            result.probability([1e4], at_least=bad)


def test_ordinal_draws_are_cutpoints_that_probability_accepts() -> None:
    result = ck.exposure_response(graded_trial(200, seed=5), outcome="CRS")
    draws = result.sample_params(20000, seed=3)
    assert draws.shape == (20000, 4)
    assert np.all(np.diff(draws[:, 1:], axis=1) > 0), "cutpoints of a draw must increase"
    np.testing.assert_array_equal(draws, result.sample_params(20000, seed=3))
    # near the estimates, the draws' spread is the delta-method covariance
    np.testing.assert_allclose(draws.mean(axis=0), result.params, atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), result.covariance, rtol=0.1, atol=0.01)
    one = result.probability([1e4, 5e4], at_least=2, params=draws[0])
    every = result.probability([1e4, 5e4], at_least=2, params=draws)
    assert one.shape == (2,) and every.shape == (20000, 2)
    np.testing.assert_array_equal(every[0], one)
    np.testing.assert_allclose(
        one, expit(draws[0, 0] * np.log2([1e4, 5e4]) - draws[0, 2]), rtol=1e-12
    )


# --- observed rates, band, draws ---------------------------------------------------------


def test_observed_rates_have_clopper_pearson_intervals() -> None:
    table = binary_trial(40, seed=2)
    result = ck.exposure_response(table)
    observed = result.observed()
    ordered = table.sort_values("cmax")
    assert list(observed["bin"]) == [1, 2, 3, 4] and list(observed["n"]) == [10] * 4
    for b, row in observed.iterrows():
        block = ordered.iloc[10 * b : 10 * (b + 1)]  # distinct exposures: blocks of 10
        k = int(block["CRS_GE2"].sum())
        assert row["events"] == k and row["rate"] == k / 10
        assert row["exposure_median"] == pytest.approx(block["cmax"].median())
        low = stats.beta.ppf(0.025, k, 10 - k + 1) if k > 0 else 0.0
        high = stats.beta.ppf(0.975, k + 1, 10 - k) if k < 10 else 1.0
        np.testing.assert_allclose([row["ci_low"], row["ci_high"]], [low, high], rtol=1e-7)
        ci = stats.binomtest(k, 10).proportion_ci(0.95, method="exact")
        np.testing.assert_allclose([row["ci_low"], row["ci_high"]], [ci.low, ci.high])


def test_by_group_rates_per_dose_and_threshold() -> None:
    table = graded_trial(120, seed=4)
    table["DOSE"] = np.repeat([1e6, 2e6, 3e6], 40)
    result = ck.exposure_response(table, outcome="CRS", by="DOSE")
    groups = result.by_group()
    assert len(groups) == 3 * 3  # three doses, thresholds >= 1, 2, 3
    row = groups[(groups["DOSE"] == 2e6) & (groups["threshold"] == ">= 2")].iloc[0]
    dose = table[table["DOSE"] == 2e6]
    assert row["n"] == 40 and row["events"] == (dose["CRS"] >= 2).sum()
    # the regression ignores the groups
    np.testing.assert_allclose(
        result.params, ck.exposure_response(table, outcome="CRS").params, rtol=1e-12
    )


def test_band_contains_the_curve_stays_in_0_1_and_narrows_with_n() -> None:
    x = np.geomspace(500, 1e6, 50)
    widths = []
    for n in (100, 1000):
        result = ck.exposure_response(binary_trial(n, seed=7))
        band = result.band(x)
        assert list(band.columns) == ["exposure", "probability", "low", "high"]
        np.testing.assert_array_equal(band["exposure"], x)
        np.testing.assert_allclose(band["probability"], result.probability(x))
        assert np.all(band["low"] <= band["probability"]) and np.all(
            band["probability"] <= band["high"]
        )
        assert np.all(band["low"] >= 0) and np.all(band["high"] <= 1)
        widths.append((band["high"] - band["low"]).to_numpy())
    assert np.all(widths[1] < widths[0])
    ordinal = ck.exposure_response(graded_trial(200, seed=5), outcome="CRS").band(x, at_least=2)
    assert np.all((0 <= ordinal["low"]) & (ordinal["low"] <= ordinal["probability"]))
    assert np.all(ordinal["probability"] <= ordinal["high"]) and np.all(ordinal["high"] <= 1)


def test_band_is_the_quantiles_of_the_probability_over_draws() -> None:
    """Binary draws are normal in (intercept, slope): the linear predictor is exactly
    normal, so the band's limits are the 2.5 and 97.5 % points of expit(draws)."""
    result = ck.exposure_response(binary_trial(150, seed=11))
    x = np.array([3e3, 2e4, 2e5])
    draws = result.sample_params(40000, seed=1)
    np.testing.assert_allclose(draws.mean(axis=0), result.params, rtol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), result.covariance, rtol=0.03)
    spread = np.quantile(result.probability(x, params=draws), [0.025, 0.975], axis=0)
    band = result.band(x)
    np.testing.assert_allclose(spread[0], band["low"], atol=0.005)
    np.testing.assert_allclose(spread[1], band["high"], atol=0.005)
    narrow = result.band(x, level=0.5)
    assert np.all(narrow["high"] - narrow["low"] < band["high"] - band["low"])


# --- recovery and coverage ---------------------------------------------------------------


def test_recovers_a_known_slope_from_400_subjects() -> None:
    result = ck.exposure_response(binary_trial(400, seed=21))
    row = result.coefficients.iloc[1]
    assert row["ci_low"] < SLOPE < row["ci_high"]
    odds = result.odds_ratio_per_doubling
    assert odds["ci_low"] < math.exp(SLOPE) < odds["ci_high"]


def test_wald_interval_covers_the_slope_95_percent_of_small_trials() -> None:
    covered, fitted = 0, 0
    for replicate in range(200):
        try:
            row = ck.exposure_response(binary_trial(80, seed=1000 + replicate)).coefficients
        except DataError:  # a separated small trial: no finite estimate
            continue
        fitted += 1
        covered += row["ci_low"].iloc[1] < SLOPE < row["ci_high"].iloc[1]
    assert fitted >= 195
    # 95 % within three binomial SDs (0.046 for 200 trials)
    assert abs(covered / fitted - 0.95) < 3 * math.sqrt(0.95 * 0.05 / fitted)


# --- bad input ---------------------------------------------------------------------------


def _set(column: str, row: int, value: object):
    def change(table: pd.DataFrame) -> pd.DataFrame:
        if isinstance(value, str | float):  # text, or a NaN or fraction in an int column
            table = table.astype({column: object if isinstance(value, str) else float})
        table.loc[row, column] = value
        return table

    return change


def quasi_separated(table: pd.DataFrame) -> pd.DataFrame:
    """Events above the median Cmax, none below, both at the median (three subjects tied
    there): quasi-complete separation, whose MLE slope is infinite too."""
    middle = table["cmax"].median()
    cmax = table["cmax"].where(table.index >= 3, middle)
    outcome = (cmax > middle).astype(int).where(cmax != middle, (table.index < 2).astype(int))
    return table.assign(cmax=cmax, CRS_GE2=outcome)


BAD = [
    ("missing column", lambda t: t.drop(columns="cmax"), {}, "column 'cmax': not in the table"),
    ("zero exposure", _set("cmax", 3, 0.0), {}, "positive and finite"),
    ("negative exposure", _set("cmax", 3, -5.0), {}, "found -5 at row 4 (ID 4)"),
    ("infinite exposure", _set("cmax", 3, np.inf), {}, "positive and finite"),
    ("NaN exposure", _set("cmax", 3, np.nan), {}, "column 'cmax': exposure missing at row 4"),
    ("NaN outcome", _set("CRS_GE2", 5, np.nan), {}, "column 'CRS_GE2': outcome missing at row 6"),
    ("text outcome", _set("CRS_GE2", 5, "yes"), {}, "expected 0/1 or integer grades"),
    ("constant outcome", lambda t: t.assign(CRS_GE2=1), {}, "is 1 for every subject"),
    (
        "perfect separation",
        lambda t: t.assign(CRS_GE2=(t["cmax"] > t["cmax"].median()).astype(int)),
        {},
        "perfectly separated",
    ),
    ("quasi-complete separation", lambda t: quasi_separated(t), {}, "perfectly separated"),
    ("non-integer grade", _set("CRS_GE2", 2, 1.5), {}, "grades must be integers"),
    ("duplicate IDs", _set("ID", 7, 1), {}, "duplicate IDs 1 at rows 1, 8"),
    ("two levels not 0/1", lambda t: t.assign(CRS_GE2=t["CRS_GE2"] + 1), {}, "recode it"),
    ("binary kind with grades", _set("CRS_GE2", 2, 3), {"kind": "binary"}, "needs 0/1"),
    ("unknown kind", lambda t: t, {"kind": "logistic"}, "kind 'logistic'"),
    ("by column with a gap", _set("DOSE", 4, np.nan), {"by": "DOSE"}, "column 'DOSE': group"),
    ("log_base 1", lambda t: t, {"log_base": 1}, "log_base 1"),
    ("level 95", lambda t: t, {"level": 95}, "level 95"),
]


@pytest.mark.parametrize(("case", "change", "options", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_clear_error_and_the_table_is_unchanged(
    case: str, change, options: dict, message: str
) -> None:
    table = change(binary_trial(60, seed=9))
    before = table.copy(deep=True)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ck.exposure_response(table, **options)
    pd.testing.assert_frame_equal(table, before)


def test_ordinal_separation_and_fractional_grades_are_refused() -> None:
    table = graded_trial(60, seed=3)
    ordered = table.assign(CRS=pd.qcut(table["cmax"], 3, labels=False))  # grades by exposure
    with pytest.raises(DataError, match="each grade of CRS has cmax on one side"):
        ck.exposure_response(ordered, outcome="CRS")
    with pytest.raises(DataError, match="grades must be integers"):
        ck.exposure_response(table.assign(CRS=table["CRS"] + 0.5), outcome="CRS")


def test_a_valid_fit_leaves_the_table_unchanged_and_accepts_bools() -> None:
    table = binary_trial(60, seed=9)
    before = table.copy(deep=True)
    result = ck.exposure_response(table, by="DOSE")
    pd.testing.assert_frame_equal(table, before)
    flags = ck.exposure_response(table.assign(CRS_GE2=table["CRS_GE2"].astype(bool)))
    np.testing.assert_allclose(flags.params, result.params)
    assert "OR per doubling" in repr(result) and "logistic regression" in result.summary()
    saved = json.loads(result.to_json())
    assert saved["odds_ratio_per_doubling"]["estimate"] == pytest.approx(
        result.odds_ratio_per_doubling["estimate"]
    )


# --- the figure --------------------------------------------------------------------------


def test_figure_has_curve_band_quartiles_and_subjects_by_group() -> None:
    result = ck.exposure_response(binary_trial(90, seed=8), by="DOSE")
    fig = result.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1  # band
    assert len(ax.containers) == 1 and len(ax.containers[0].lines[0].get_xdata()) == 4
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 3 and sum(len(s.get_offsets()) for s in scatters) == 90
    heights = np.concatenate([s.get_offsets()[:, 1] for s in scatters])
    assert np.all((np.abs(heights) < 0.05) | (np.abs(heights - 1) < 0.05))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"DOSE 1e+06", "DOSE 2e+06", "DOSE 3e+06"} <= set(labels)
    assert any(label.startswith("fitted") for label in labels)
    matplotlib.pyplot.close(fig)


def test_ordinal_figure_draws_every_threshold_or_one(tmp_path: Path) -> None:
    result = ck.exposure_response(graded_trial(120, seed=4), outcome="CRS")
    fig = result.plot()
    ax = fig.axes[0]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 3
    assert len(ax.containers) == 3
    matplotlib.pyplot.close(fig)
    fig, ax = matplotlib.pyplot.subplots()
    assert result.plot(ax=ax, at_least=2) is fig
    assert ax.get_ylabel() == "P(CRS >= 2)" and len(ax.containers) == 1
    matplotlib.pyplot.close(fig)
    result.plot(at_least=3, path=tmp_path / "er.png")
    assert (tmp_path / "er.png").stat().st_size > 0


# --- command line ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``cartpk`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "cartpk.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


def test_cli_writes_the_figure_json_and_table_and_prints_the_odds_ratio(tmp_path: Path) -> None:
    data = tmp_path / "subjects.csv"
    table = binary_trial(60, seed=9)
    table.to_csv(data, index=False)
    figure, saved, coefficients = tmp_path / "er.png", tmp_path / "er.json", tmp_path / "c.csv"
    result = run_cli(
        "exposure-response", str(data), "--by", "DOSE", "--plot", str(figure),
        "--json", str(saved), "--out", str(coefficients),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    odds = ck.exposure_response(table).odds_ratio_per_doubling["estimate"]
    assert f"odds ratio per doubling of cmax: {odds:.4g}" in result.stdout
    assert "Observed by DOSE" in result.stdout
    assert figure.stat().st_size > 0
    assert json.loads(saved.read_text())["kind"] == "binary"
    assert list(pd.read_csv(coefficients)["term"]) == ["intercept", "log2(cmax)"]


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("exposure not a column", ["--exposure", "auc_0_28"], "column 'auc_0_28': not in"),
        ("separated outcome", ["--outcome", "SEPARATED"], "perfectly separated"),
        ("--plot unknown format", ["--plot", "{tmp}/er.xyz"], "unknown figure format"),
        ("--at-least on a binary outcome", ["--at-least", "2"], "at_least 2"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, case: str, extra: list[str], message: str
) -> None:
    data = tmp_path / "subjects.csv"
    table = binary_trial(40, seed=9)
    table["SEPARATED"] = (table["cmax"] > table["cmax"].median()).astype(int)
    table.to_csv(data, index=False)
    outputs = ["--plot", str(tmp_path / "er.png"), "--json", str(tmp_path / "er.json")]
    args = [a.format(tmp=tmp_path) for a in extra]
    if "--plot" in args:
        outputs = outputs[2:]
    result = run_cli("exposure-response", str(data), *args, *outputs)
    assert result.returncode == 2, (case, result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subjects.csv"], case


def test_a_two_level_ordinal_fit_is_the_logistic_regression() -> None:
    """With one cutpoint, logit P(Y >= 1) = slope z - cutpoint: the logistic model with
    intercept = -cutpoint."""
    table = binary_trial(100, seed=3)
    logistic = ck.exposure_response(table)
    ordinal = ck.exposure_response(table, kind="ordinal")
    np.testing.assert_allclose(ordinal.params, [logistic.params[1], -logistic.params[0]], rtol=1e-6)
    np.testing.assert_allclose(
        ordinal.coefficients["se"], logistic.coefficients["se"][::-1], rtol=1e-4
    )
    np.testing.assert_allclose(
        ordinal.probability([1e4, 1e5], at_least=1), logistic.probability([1e4, 1e5]), rtol=1e-6
    )
