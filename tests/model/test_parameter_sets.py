"""Correlated random effects in model files, named parameter sets and their published figures.

References, none of them cartpk's own output: Stein et al. 2019's parameterisation (random
effects on log Cmax, log fold expansion and log Tmax, drawn independently here with numpy),
the published NCA summaries in each set file, and data/bcma_cart_priors.csv for the
KQ-2003 set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cartpk as ck
from cartpk.errors import ModelError
from cartpk.model import load_model
from cartpk.model.parameter_sets import list_parameter_sets, load_parameter_set
from cartpk.scenarios import CMAX_CEILING, Population, check_parameter_set

PRIORS = Path(__file__).resolve().parents[2] / "data" / "bcma_cart_priors.csv"
SETS = ("tisa-cel", "cilta-cel", "bcma-kq2003")

MODEL = """
[model]
name = "corr"
description = "test only"

[parameters.a]
value = 1.0
omega = 0.5
[parameters.b]
value = 2.0
omega = 0.3
[parameters.c]
value = 3.0
omega = 0.2
[parameters.k]
value = 0.1

[correlations]
"a:b" = 0.6

[states.y]
initial = "a + b + c"

[equations]
y = "-k * y"

[outputs.Y]
expression = "y"
"""


def write(tmp_path: Path, text: str, name: str = "corr.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- [correlations] in a model file ---------------------------------------------------------


def test_model_correlations_reach_the_draws(tmp_path: Path) -> None:
    """50,000 draws: the sample correlation of a and b within 4 SE of 0.6
    (SE = (1 - r^2) / sqrt(n)), and c uncorrelated with both."""
    model = load_model(write(tmp_path, MODEL))
    assert model.correlations == {("a", "b"): 0.6}
    population = Population.from_model(model)
    etas = population.draw_etas(50_000, np.random.default_rng(3))
    r = np.corrcoef(etas.T)
    se = (1 - 0.6**2) / np.sqrt(50_000)
    assert abs(r[0, 1] - 0.6) < 4 * se
    assert abs(r[0, 2]) < 4 / np.sqrt(50_000) and abs(r[1, 2]) < 4 / np.sqrt(50_000)
    np.testing.assert_allclose(etas.std(axis=0), [0.5, 0.3, 0.2], rtol=0.02)


CORRELATION_ERRORS = [
    ('"a:b" = 0.6', '"a:k" = 0.6', r"k has no between-subject variability"),
    ('"a:b" = 0.6', '"a:z" = 0.6', r"'z' is not a parameter"),
    ('"a:b" = 0.6', '"a:b" = 1.0', r"correlation 1 must lie in \(-1, 1\)"),
    ('"a:b" = 0.6', '"a-b" = 0.6', r'"a-b": expected "A:B"'),
    ('"a:b" = 0.6', '"a:b" = 0.6\n"b:a" = 0.5', r'"b:a": this pair is given twice'),
    ('"a:b" = 0.6', '"a:b" = "high"', r"expected a number"),
    ('"a:b" = 0.6', '"a:b" = 0.9\n"b:c" = 0.9\n"a:c" = -0.9', r"not form a positive definite"),
]


@pytest.mark.parametrize(("old", "new", "message"), CORRELATION_ERRORS)
def test_correlation_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = write(tmp_path, MODEL.replace(old, new))
    with pytest.raises(ModelError, match=message) as caught:
        load_model(path)
    assert str(caught.value).startswith(str(path))


def test_stein_parameterisation_is_reproduced(stein: ck.Model) -> None:
    """ck_stein's correlated C0, rho, tmax against Stein's own parameterisation: log Cmax,
    log foldx, log Tmax independent normal with variances 0.65, 2.4, 0.38 (Stein 2019
    Table 1). The model's Cmax = C0 e^(rho tmax) must have the same spread (SD of log Cmax
    within 5 %) and a geometric mean within the 20 % the first-order mapping allows (the
    curvature of ln(foldx) -> log rho adds about +15 %, documented in ck_stein.toml)."""
    n = 200_000
    rng = np.random.default_rng(11)
    log_cmax = np.log(24000) + np.sqrt(0.65) * rng.standard_normal(n)
    population = Population.from_model(stein)
    params = population.individual(population.draw_etas(n, rng), {})
    names = list(stein.param_names)
    c0, rho, tmax = (params[:, names.index(k)] for k in ("C0", "rho", "tmax"))
    model_log_cmax = np.log(c0) + rho * tmax
    assert np.std(model_log_cmax) == pytest.approx(np.std(log_cmax), rel=0.05)
    ratio = np.exp(np.mean(model_log_cmax) - np.mean(log_cmax))
    assert 1.0 < ratio < 1.2
    for q in (50, 95, 99.9):
        assert np.percentile(model_log_cmax, q) - np.percentile(log_cmax, q) < np.log(1.6), q
    # Tmax and fold expansion: the same marginal spreads as Stein's.
    assert np.std(np.log(tmax)) == pytest.approx(np.sqrt(0.38), rel=0.02)
    assert np.std(rho * tmax) == pytest.approx(np.sqrt(2.4), rel=0.05)


# --- parameter sets -------------------------------------------------------------------------


def test_builtin_sets_are_listed() -> None:
    assert set(SETS) <= set(list_parameter_sets())
    assert ck.list_parameter_sets() == list_parameter_sets()


@pytest.mark.parametrize("name", SETS)
def test_set_applies_to_the_kinetic_models(name: str) -> None:
    """A set changes values, omegas and correlations, never the compiled code."""
    pset = load_parameter_set(name)
    for model_name in ("ck_crs", "ck_stein", "ck_vegf"):
        bare = load_model(model_name)
        model = load_model(model_name, parameters=name)
        assert model.parameter_set == name
        assert model.source_code == bare.source_code
        for par, value in pset.values.items():
            assert model.parameters[par].value == value
            assert model.parameters[par].omega == pset.omega.get(par)
        for (a, b), r in pset.correlations.items():
            assert model.correlations[(a, b)] == r
        if model_name == "ck_vegf":
            assert model.parameters["kout"] == bare.parameters["kout"]
        if model_name == "ck_crs":
            assert model.parameters["kkill"] == bare.parameters["kkill"]


def test_set_refuses_a_model_without_its_parameters() -> None:
    with pytest.raises(ModelError, match=r"sets .*C0.*which ck_target does not have"):
        load_model("ck_target", parameters="cilta-cel")
    with pytest.raises(ModelError, match=r"unknown parameter set 'nope'.*cilta-cel"):
        load_model("ck_stein", parameters="nope")


SET_FILE = """
[set]
name = "mine"
source = "test"
reference_dose = 1e6

[parameters.C0]
value = 5.0
omega = 0.5
[parameters.rho]
value = 0.8
omega = 0.3

[correlations]
"C0:rho" = -0.5

[published]
source = "test"
tmax_median = 9.3

[check]
times = [0, 7, 14, 28]
residual_sd = 0.2
lloq = 1.0
"""

SET_ERRORS = [
    ("[published]", "[extra]\n[published]", r"\[extra\]: unknown section"),
    ("reference_dose = 1e6", "reference_dose = -1.0", r"reference_dose: must be > 0"),
    ('name = "mine"', 'name = "mine"\nauthor = "me"', r"\[set\] author: unknown key"),
    ("value = 5.0", 'value = "x"', r"\[parameters.C0\] value: expected a number"),
    ("omega = 0.5", "omega = -0.5", r"\[parameters.C0\] omega: must be >= 0"),
    ("times = [0, 7, 14, 28]", "times = [0, 14, 7, 28]", r"times: expected increasing days"),
    ("lloq = 1.0\n", "", r"\[check\] lloq: missing"),
]


@pytest.mark.parametrize(("old", "new", "message"), SET_ERRORS)
def test_set_file_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = write(tmp_path, SET_FILE.replace(old, new), "mine.toml")
    with pytest.raises(ModelError, match=message):
        load_parameter_set(path)


def test_set_file_by_path_and_correlation_check(tmp_path: Path) -> None:
    path = write(tmp_path, SET_FILE, "mine.toml")
    model = load_model("ck_stein", parameters=path)
    assert model.parameters["C0"].value == 5.0
    assert model.parameters["tmax"].omega == load_model("ck_stein").parameters["tmax"].omega
    assert model.correlations == {("C0", "rho"): -0.5}
    bad = write(tmp_path, SET_FILE.replace("omega = 0.3\n", ""), "bad.toml")
    with pytest.raises(ModelError, match=r"rho has no between-subject variability"):
        load_model("ck_stein", parameters=bad)


def test_kq2003_set_starts_from_the_demo_priors() -> None:
    """The KQ-2003 set's typical values are those of data/bcma_cart_priors.csv."""
    priors = pd.read_csv(PRIORS).set_index("parameter")["value"]
    values = load_parameter_set("bcma-kq2003").values
    for name, value in priors.items():
        assert values[name] == pytest.approx(value, rel=1e-12), name


def test_every_set_has_a_dose_link() -> None:
    for name in SETS:
        assert "dose_exp" in load_parameter_set(name).values, name


@pytest.mark.parametrize("name", SETS)
def test_published_summaries_are_reproduced(name: str) -> None:
    """10,000 virtual patients at the set's reference dose, sampled on its trial's grid with
    log-normal residual error and an LLOQ, analysed by NCA: geometric means of Cmax and
    AUC0-28 within a factor 1.5 of the published ones, geometric CVs within 40 points,
    median Tmax within 2 days, 99.9th percentile of Cmax below 1e7 copies/ug."""
    table = check_parameter_set(name, n=10_000, seed=1)
    published = load_parameter_set(name).published
    expected = {"cmax_p99.9"}
    for metric in ("cmax", "auc_0_28"):
        if f"{metric}_gmean" in published or f"{metric}_mean" in published:
            expected |= {f"{metric}_gmean", f"{metric}_gcv"}
    if "tmax_median" in published:
        expected.add("tmax_median")
    assert set(table["quantity"]) == expected
    assert {"cmax_gmean", "tmax_median"} <= expected, "a set must publish Cmax and Tmax"
    failing = table[~table["ok"]]
    assert failing.empty, failing.to_string()
    p999 = table.loc[table["quantity"] == "cmax_p99.9", "simulated"].item()
    assert p999 < CMAX_CEILING


@pytest.mark.parametrize("name", [None, *SETS])
def test_builtin_sets_solve_every_patient(name: str | None) -> None:
    """Zero solver failures on the built-in variability: 2,000 virtual patients of ck_vegf
    (the stiffer model, with the VEGF response) at 1, 2 and 3e6 cells/kg, bare or with
    each set; every peak below the 1e7 copies/ug ceiling."""
    model = load_model("ck_vegf", parameters=name)
    result = ck.scenarios(model, doses=[1e6, 2e6, 3e6], n=2000, seed=7)
    assert result.summary()["n_failed"].sum() == 0
    assert result.failures().empty and result.notes == []
    assert (result.patients["solver"] == "auto").all()
    assert result.patients["cmax"].max() < CMAX_CEILING
