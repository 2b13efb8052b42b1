"""Individual fits: recovery of known truth (simulated with the closed form), priors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from references import stein_level

from cartpk.errors import FitError
from cartpk.individual import FitTable, fit, hessian

DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
TRUTH = {"C0": 6.0, "rho": 0.85, "tmax": 10.0, "Fb": 0.01, "alpha": 0.2, "beta": 0.004}


def profile(noise_sd: float = 0.0, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dv = stein_level(DAYS, *TRUTH.values()) * np.exp(rng.normal(0, noise_sd, DAYS.size))
    return pd.DataFrame({"ID": 1, "TIME": DAYS, "DV": dv})


def test_noise_free_data_recover_the_truth() -> None:
    result = fit("ck_stein", profile(), error={"CART": ("log", {"sigma": 0.2})})
    assert result.success
    for name, value in TRUTH.items():
        assert result.estimates[name] == pytest.approx(value, rel=1e-4)


def test_noisy_fit_reports_uncertainty_and_criteria() -> None:
    result = fit("ck_stein", profile(0.2, seed=3), n_starts=2, seed=4)
    table = result.table().set_index("parameter")
    assert result.success and result.n_at_best >= 1
    for name, value in TRUTH.items():
        assert table.loc[name, "ci95_low"] < value < table.loc[name, "ci95_high"]
    assert table.loc["dose_exp", "fixed"]
    assert result.aic == pytest.approx(result.ofv + 2 * 7)
    assert result.bic == pytest.approx(result.ofv + np.log(13) * 7)


def test_prior_pulls_a_weak_estimate_and_spares_a_strong_one() -> None:
    data = profile(0.2, seed=5)
    free = fit("ck_stein", data)
    prior = {"beta": (0.001, 0.05), "tmax": (20.0, 1.0)}
    shrunk = fit("ck_stein", data, priors=prior)
    assert abs(np.log(shrunk.estimates["beta"] / 0.001)) < abs(
        np.log(free.estimates["beta"] / 0.001)
    )
    assert shrunk.estimates["tmax"] == pytest.approx(free.estimates["tmax"], rel=0.01)


def test_censored_points_enter_the_likelihood() -> None:
    data = profile(0.2, seed=6)
    data["LLOQ"] = 100.0
    low = data["DV"] < 100
    data.loc[low, "DV"] = 100.0
    data["CENS"] = low.astype(int)
    result = fit("ck_stein", data)
    assert result.success
    assert result.n_obs == 13
    assert result.estimates["tmax"] == pytest.approx(TRUTH["tmax"], rel=0.15)


def test_several_subjects_are_fitted_one_by_one() -> None:
    two = pd.concat([profile(), profile(0.2, seed=2).assign(ID=2)])
    table = fit("ck_stein", two, error={"CART": ("log", {"sigma": 0.2})})
    assert isinstance(table, FitTable) and len(table) == 2
    assert table[1].estimates["tmax"] == pytest.approx(TRUTH["tmax"], rel=1e-4)
    alone = fit("ck_stein", profile(0.2, seed=2), error={"CART": ("log", {"sigma": 0.2})})
    assert table[2].estimates == pytest.approx(alone.estimates)
    wide = table.table().set_index("ID")
    assert list(wide.index) == [1, 2] and wide["success"].all()
    with pytest.raises(FitError, match="id 3 is not in the data"):
        fit("ck_stein", two, id=3)


def test_bad_error_model_and_prior_are_named() -> None:
    with pytest.raises(FitError, match="error model 'cubic' for CART"):
        fit("ck_stein", profile(), error={"CART": "cubic"})
    with pytest.raises(FitError, match="prior on 'gamma'"):
        fit("ck_stein", profile(), priors={"gamma": (1.0, 0.1)})


def quadratic_plus_quartic(n: int = 7, seed: int = 7):
    """f(x) = ½(x − c)ᵀA(x − c) + Σ q_k·x_k⁴ + r·(x₀·x₁)² on points (k, n), and its Hessian
    by hand: A + diag(12·q·x²), plus 2r·x₁², 2r·x₀² and 4r·x₀·x₁ in the (0, 1) block."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    a = m @ m.T + n * np.eye(n)
    c, q, r = rng.normal(size=n), rng.uniform(0.5, 2.0, n), 1.5

    def f(X: np.ndarray) -> np.ndarray:
        d = X - c
        quartic = (q * X**4).sum(axis=1) + r * (X[:, 0] * X[:, 1]) ** 2
        return 0.5 * np.einsum("ki,ij,kj->k", d, a, d) + quartic

    def exact(x: np.ndarray) -> np.ndarray:
        h = a + np.diag(12 * q * x**2)
        h[0, 0] += 2 * r * x[1] ** 2
        h[1, 1] += 2 * r * x[0] ** 2
        h[0, 1] = h[1, 0] = h[0, 1] + 4 * r * x[0] * x[1]
        return h

    return f, exact


def test_hessian_against_the_analytic_one_in_one_call_of_1_2n_n_n_1_points() -> None:
    """Error budget (h = 2e-4): truncation 2·q·h² <= 1.6e-7 and rounding eps·|f|/h² ≈ 4e-7
    per function value (|f| ≈ 76 here), a few values per entry; entries up to ~36."""
    f, exact = quadratic_plus_quartic()
    calls = []

    def totals(X: np.ndarray) -> np.ndarray:
        calls.append(X.shape)
        return f(X)

    x = 0.5 * np.random.default_rng(8).normal(size=7)
    np.testing.assert_allclose(hessian(totals, x), exact(x), rtol=0, atol=5e-6)
    assert calls == [(1 + 2 * 7 + 7 * 6, 7)]


def test_hessian_error_terms_are_those_of_the_taylor_expansion() -> None:
    """At (1, 1) with h = 0.01, by hand: x⁴ gives ((1+h)⁴ − 2 + (1−h)⁴)/h² = 12 + 2h², and
    x²y² gives H_xx = H_yy = 2 exactly and H_xy = ((1+h)⁴ + (1−h)⁴ − 2 − 2h² − 2h²)/(2h²)
    = 4 + h²."""
    h = 0.01
    quartic = hessian(lambda X: X[:, 0] ** 4, np.ones(2), step=h)
    np.testing.assert_allclose(quartic, [[12 + 2 * h**2, 0.0], [0.0, 0.0]], rtol=1e-9, atol=1e-9)
    cross = hessian(lambda X: (X[:, 0] * X[:, 1]) ** 2, np.ones(2), step=h)
    np.testing.assert_allclose(cross, [[2.0, 4 + h**2], [4 + h**2, 2.0]], rtol=1e-9)


def test_indefinite_hessian_gives_no_standard_errors() -> None:
    """An indefinite Hessian whose inverse has a positive diagonal (hand-picked: eigenvalues
    -1.44, 0.14, 0.53; inverse diagonal 0.71, 4.41, 3.15) would give a 'correlation' of
    -1.44 between the first two parameters: no covariance and no correlation note, but a
    note that says why."""
    from cartpk.individual.fit import covariance_from

    h = np.array([[-0.92, -0.73, 0.38], [-0.73, -0.21, 0.03], [0.38, 0.03, 0.36]])
    assert np.linalg.eigvalsh(h)[0] < 0 and np.all(np.diag(np.linalg.inv(h)) > 0)
    cov, notes = covariance_from(h, ["a", "b", "c"])
    assert cov is None
    assert notes == [
        "Hessian is not positive definite (the data do not determine every parameter, "
        "or the optimum is a saddle): standard errors not computable"
    ]
    # Positive definite, correlation of 2 H^-1 = -h12 / h11 = -0.96: kept, and named.
    spd = np.array([[2.0, 1.92], [1.92, 2.0]])
    cov, notes = covariance_from(spd, ["a", "b"])
    np.testing.assert_allclose(cov, 2 * np.linalg.inv(spd), rtol=1e-12)
    assert notes == ["a and b are correlated (-0.960)"]
