"""Objective pieces against scipy.stats, computed independently."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cartpk.likelihood import m2ll_censored, m2ll_observed, prior_penalty

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
