"""Objective pieces against scipy.stats, computed independently."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from references import stein_level
from scipy import stats

from cartpk.data import read_dataset
from cartpk.errors import DataError
from cartpk.likelihood import m2ll_censored, m2ll_observed, pack_observations, prior_penalty

DV = np.array([120.0, 35.0, 8.0])
PRED = np.array([100.0, 40.0, 10.0])


@pytest.mark.parametrize(
    ("kind", "error", "sd"),
    [
        ("proportional", {"b": 0.2}, 0.2 * PRED),
        ("additive", {"a": 5.0}, np.full(3, 5.0)),
        ("combined", {"a": 5.0, "b": 0.2}, np.sqrt(25.0 + (0.2 * PRED) ** 2)),
    ],
)
def test_linear_scale_error_models(kind: str, error: dict, sd: np.ndarray) -> None:
    expected = -2 * stats.norm.logpdf(DV, loc=PRED, scale=sd)
    np.testing.assert_allclose(m2ll_observed(kind, DV, PRED, error), expected, rtol=1e-12)


def test_log_error_model_is_gaussian_on_log_dv() -> None:
    expected = -2 * stats.norm.logpdf(np.log(DV), loc=np.log(PRED), scale=0.3)
    got = m2ll_observed("log", DV, PRED, {"sigma": 0.3})
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_m3_term() -> None:
    lloq = np.array([10.0, 10.0])
    pred = np.array([4.0, 30.0])
    expected = -2 * stats.norm.logcdf(np.log(lloq), loc=np.log(pred), scale=0.5)
    np.testing.assert_allclose(m2ll_censored("log", lloq, pred, {"sigma": 0.5}), expected)
    expected_add = -2 * stats.norm.logcdf(lloq, loc=pred, scale=3.0)
    np.testing.assert_allclose(m2ll_censored("additive", lloq, pred, {"a": 3.0}), expected_add)


def test_prior_penalty_by_hand() -> None:
    got = prior_penalty(np.array([1.0, 2.0]), np.array([0.0, 2.5]), np.array([0.5, 0.25]))
    assert got == pytest.approx(4.0 + 4.0)


@pytest.mark.parametrize(
    ("kind", "code", "ea", "eb"),
    [("log", 0, 0.3, 0.0), ("proportional", 1, 0.0, 0.25), ("combined", 3, 40.0, 0.2)],
)
def test_numba_likelihood_kernel_against_scipy(stein, kind, code, ea, eb) -> None:
    """m2ll_one and residuals_one of the compiled ck_stein against scipy.stats on the
    closed-form predictions, with two censored points (M3)."""
    truth = (6.0, 0.85, 10.0, 0.01, 0.2, 0.004)
    t = np.array([0.0, 1, 4, 7, 10, 14, 21, 28, 60, 90])
    f = stein_level(t, *truth)
    dv = f * np.exp(np.random.default_rng(3).normal(0, 0.3, t.size))
    cens = (t >= 60).astype(np.int64)
    lloq = np.full(t.size, 2.0 * f[-1])
    p = stein.pack(dict(zip(("C0", "rho", "tmax", "Fb", "alpha", "beta"), truth, strict=True)))[0]
    args = (
        p, t, np.zeros(t.size, dtype=np.int64), dv, cens, lloq, np.full(t.size, -np.inf),
        np.full(t.size, code),
        np.full(t.size, ea), np.full(t.size, eb), np.empty(0), np.empty(0),
        np.empty(0, dtype=np.int64),
        np.array([0.0, 1e-10, 1e-12, 1e5]), np.empty((t.size, 1)),
    )  # fmt: skip
    q = cens == 0
    if kind == "log":
        expected = -2 * stats.norm.logpdf(np.log(dv[q]), np.log(f[q]), ea).sum()
        expected -= 2 * stats.norm.logcdf(np.log(lloq[~q]), np.log(f[~q]), ea).sum()
    else:
        sd = np.sqrt(ea**2 + (eb * f) ** 2)
        expected = -2 * stats.norm.logpdf(dv[q], f[q], sd[q]).sum()
        expected -= 2 * stats.norm.logcdf(lloq[~q], f[~q], sd[~q]).sum()
    got = stein.kernels.m2ll_one(*args)
    assert got == pytest.approx(expected, rel=1e-8)
    r = np.empty(2 * t.size)
    assert stein.kernels.residuals_one(*args, r)
    offset = -2 * np.log(1e-300)
    assert r @ r == pytest.approx(expected - q.sum() * (np.log(2 * np.pi) - offset), rel=1e-12)


def test_far_tail_of_the_m3_term(stein) -> None:
    """log Φ(z) in the compiled kernel stays finite and accurate down to z = -40."""
    t = np.array([1.0])
    p = stein.pack({})[0]
    f = stein.kernels.m2ll_one
    for z in (-5.0, -25.0, -40.0):
        pred = stein_level(t, 6.1538461538, 0.8891109497, 9.3, 0.0079, 0.16, 0.0032)
        lloq = pred * np.exp(z * 0.1)
        args = (
            p, t, np.zeros(1, dtype=np.int64), lloq, np.ones(1, dtype=np.int64), lloq,
            np.full(1, -np.inf), np.zeros(1, dtype=np.int64), np.full(1, 0.1), np.zeros(1),
            np.empty(0), np.empty(0), np.empty(0, dtype=np.int64),
            np.array([0.0, 1e-10, 1e-12, 1e5]), np.empty((1, 1)),
        )  # fmt: skip
        assert f(*args) == pytest.approx(-2 * stats.norm.logcdf(z), rel=1e-7)


NAN = np.nan
# Three subjects in scrambled row order: A has an observation before TIME 0, two analytes at
# day 1 and re-infusions at days 10 and 4 (listed in that order); B has a censored point
# without DV (it takes the LLOQ); C is not asked for. WT of A is missing on its first rows.
PACK_TABLE = pd.DataFrame(
    [
        ("B", 7.0, 50.0, "CART", 0, NAN, 0, 0, 80.0),
        ("A", 0.0, NAN, "CART", 1, 2e6, 1, 0, NAN),
        ("A", 1.0, 10.0, "CART", 0, NAN, 0, 0, 70.0),
        ("A", -1.0, 3.0, "CART", 0, NAN, 0, 0, NAN),
        ("B", 0.0, NAN, "CART", 1, 1e6, 1, 0, 80.0),
        ("A", 1.0, 200.0, "VEGF", 0, NAN, 0, 0, 70.0),
        ("B", 14.0, NAN, "CART", 0, NAN, 0, 1, 80.0),
        ("A", 10.0, NAN, "CART", 1, 5e5, 1, 0, 72.0),
        ("B", 3.0, 20.0, "CART", 0, NAN, 0, 0, 80.0),
        ("C", 0.0, 1.0, "CART", 0, NAN, 0, 0, NAN),
        ("A", 4.0, NAN, "CART", 1, 1e6, 1, 0, 70.0),
    ],
    columns=["ID", "TIME", "DV", "ANALYTE", "EVID", "AMT", "MDV", "CENS", "WT"],
).assign(LLOQ=5.0)


def pack_model(**changes) -> SimpleNamespace:
    """What pack_observations reads of a model: outputs, covariates, dose_state, name,
    dose_unit (None: no dose-unit check)."""
    spec = {
        "name": "packer",
        "outputs": ("VEGF", "CART"),
        "covariates": {
            "WT": SimpleNamespace(reference=75.0),
            "DOSE": SimpleNamespace(reference=1e6),
            "AGE": SimpleNamespace(reference=60.0),
        },
        "dose_state": "E",
        "dose_unit": None,
    }
    return SimpleNamespace(**{**spec, **changes})


def test_pack_observations_by_hand() -> None:
    """Subjects in the order asked (B, A), rows by time, outputs by index in the model,
    baseline covariates (first non-missing WT, DOSE = AMT at TIME 0, AGE the reference),
    re-infusions after TIME 0 sorted by time."""
    packed = pack_observations(read_dataset(PACK_TABLE), pack_model(), ["B", "A"])
    assert packed.ids == ["B", "A"]
    np.testing.assert_array_equal(packed.off, [0, 3, 5])
    np.testing.assert_array_equal(packed.time, [3.0, 7.0, 14.0, 1.0, 1.0])
    np.testing.assert_array_equal(packed.dv, [20.0, 50.0, 5.0, 10.0, 200.0])
    np.testing.assert_array_equal(packed.cens, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(packed.lloq, [5.0] * 5)
    np.testing.assert_array_equal(packed.analyte, ["CART"] * 4 + ["VEGF"])
    np.testing.assert_array_equal(packed.out, [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(packed.covariates, [[80.0, 1e6, 60.0], [70.0, 2e6, 60.0]])
    np.testing.assert_array_equal(packed.d_time, [4.0, 10.0])
    np.testing.assert_array_equal(packed.d_amt, [1e6, 5e5])
    np.testing.assert_array_equal(packed.d_reset, [0, 0])
    np.testing.assert_array_equal(packed.d_off, [0, 0, 2])
    assert packed.excluded_before_infusion == 1
    assert [packed.off.dtype, packed.out.dtype, packed.cens.dtype, packed.d_off.dtype] == [
        np.int64
    ] * 4


@pytest.mark.parametrize(
    ("model", "ids", "pattern"),
    [
        (pack_model(outputs=("CART",)), ["B"], r"ANALYTE: the model has no output for VEGF"),
        (pack_model(), ["A", "C", "D"], r"IDs \['D'\]: no observations at TIME >= 0"),
        (pack_model(), ["A", "B", "A"], r"IDs \['A'\] listed twice"),
        (
            pack_model(dose_state=None),
            ["B", "A"],
            r"EVID: doses after TIME 0 \(rows 8, 11\) but model 'packer' has no \[dosing\]",
        ),
        (pack_model(), ["C"], r"column WT: no value for IDs \['C'\]"),
        (pack_model(covariates={"DOSE": SimpleNamespace(reference=1.0)}), ["C"], r"DOSE: no"),
    ],
)
def test_pack_observations_errors_are_named(model, ids, pattern) -> None:
    with pytest.raises(DataError, match=pattern):
        pack_observations(read_dataset(PACK_TABLE), model, ids)
