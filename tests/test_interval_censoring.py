"""Interval-censored observations (antibody titres): CENS=1 with a LIMIT column, the value in
[LIMIT, DV] (Monolix's convention).

References, computed without cartpk's likelihood code: scipy.stats.norm for the interval
probability of single points (far tails included); the ck_stein closed form
(tests/references.py) with a hand-written interval likelihood minimised by scipy for the
individual fit; a one-random-effect marginal likelihood integrated by scipy quad for the
population fit. M3 (CENS=1 without a LIMIT) is checked to be the special case, exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from references import STEIN_PARAMS, marginal_m2ll_1d, stein_level
from scipy import optimize, stats

from cartpk import fit
from cartpk.data import read_dataset
from cartpk.errors import DataError
from cartpk.individual import FitResult, FitWarning
from cartpk.likelihood import m2ll_censored, m2ll_interval, pack_observations
from cartpk.population import fit_population

SOLVER = np.array([0.0, 1e-10, 1e-12, 1e5])
TRUTH = dict(
    zip(STEIN_PARAMS, (6.1538461538, 0.8891109497, 9.3, 0.0079, 0.16, 0.0032), strict=True)
)
#: Dilution steps 1:10, 1:32, 1:100, 1:316, ... (half-decades), as titres are reported.
STEPS = 10.0 ** (1.0 + 0.5 * np.arange(12))


def hand_m2ll(z_low: float, z_high: float) -> float:
    """−2 log(Φ(z_U) − Φ(z_L)) by scipy.stats.norm: the CDFs directly where the difference
    is not small, in the far tails from norm.logcdf (lower) or norm.logsf (upper) as
    log P = log Φ(z_U) + log1p(−Φ(z_L)/Φ(z_U)) (and the mirror image)."""
    direct = stats.norm.cdf(z_high) - stats.norm.cdf(z_low)
    if direct > 1e-3:
        return float(-2 * np.log(direct))
    if z_high <= 0:
        high, low = stats.norm.logcdf(z_high), stats.norm.logcdf(z_low)
    else:
        high, low = stats.norm.logsf(z_low), stats.norm.logsf(z_high)
    return float(-2 * (high + np.log1p(-np.exp(low - high))))


def point_m2ll(stein, kind, dv, f, cens, upper, lower, ea, eb) -> np.ndarray:
    """Per point −2LL from the compiled kernel (m2ll_predicted, each point its own subject)."""
    n = len(f)
    full = np.broadcast_arrays(dv, cens, upper, lower, kind, ea, eb, np.ones(n))
    dv, cens, upper, lower, kind, ea, eb, _ = (np.ascontiguousarray(a) for a in full)
    out = np.empty(n)
    stein.kernels.m2ll_predicted(
        np.arange(n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64), dv.astype(float),
        cens.astype(np.int64), upper.astype(float), lower.astype(float), kind.astype(np.int64),
        ea.astype(float), eb.astype(float), np.asarray(f, dtype=float)[:, None], out,
    )  # fmt: skip
    return out


# --- single points against scipy ---------------------------------------------------------


@pytest.mark.parametrize(
    ("z_low", "z_high"),
    [(-1.0, 0.5), (0.3, 2.0), (-3.0, -2.0), (2.0, 3.5), (-40.0, -36.0), (36.0, 40.0),
     (40.0, 40.5), (-40.5, -40.0), (-45.0, 45.0), (5.0, 5.0 + 1e-4)],
)  # fmt: skip
@pytest.mark.parametrize(
    ("kind", "code", "ea", "eb"),
    [("log", 0, 0.3, 0.0), ("proportional", 1, 0.0, 0.25), ("additive", 2, 4.0, 0.0)],
)
def test_interval_point_against_scipy(stein, z_low, z_high, kind, code, ea, eb) -> None:
    """Bounds placed at z_L, z_U standard deviations from the prediction on the error scale
    (far tails: z = ±40, where Φ(z_U) − Φ(z_L) is 0 or 1 − 1 in floating point)."""
    f = 50.0
    sd = {"log": ea, "proportional": eb * f, "additive": ea}[kind]
    if kind == "log":
        lower, upper = f * np.exp(z_low * sd), f * np.exp(z_high * sd)
        z = ((np.log(lower) - np.log(f)) / sd, (np.log(upper) - np.log(f)) / sd)
    else:
        lower, upper = f + z_low * sd, f + z_high * sd
        z = ((lower - f) / sd, (upper - f) / sd)
    expected = hand_m2ll(*z)
    got = point_m2ll(stein, code, upper, [f], 1, upper, lower, ea, eb)[0]
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)
    error = {"sigma": ea} if kind == "log" else ({"b": eb} if eb else {"a": ea})
    reference = m2ll_interval(kind, np.array([lower]), np.array([upper]), np.array([f]), error)
    assert reference[0] == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_naive_difference_would_fail_where_the_kernel_does_not() -> None:
    """The far-tail cases are real: the naive difference of CDFs is exactly 0 there."""
    assert stats.norm.cdf(40.5) - stats.norm.cdf(40.0) == 0.0
    assert stats.norm.cdf(-36.0) - stats.norm.cdf(-40.0) > 0  # fine in the lower tail ...
    assert hand_m2ll(36.0, 40.0) == pytest.approx(hand_m2ll(-40.0, -36.0), rel=1e-12)  # mirror


def test_m3_is_the_interval_without_a_lower_bound(stein) -> None:
    """A lower bound −inf (any error model) or 0 (log error) gives the M3 term bit for bit."""
    f = np.array([4.0, 30.0, 1e-3, 500.0])
    lloq = np.full(4, 10.0)
    for code, ea, eb, lowers in [
        (0, 0.5, 0.0, (-np.inf, 0.0)),
        (1, 0.0, 0.2, (-np.inf,)),
        (2, 3.0, 0.0, (-np.inf,)),
        (3, 3.0, 0.2, (-np.inf,)),
    ]:
        m3 = point_m2ll(stein, code, lloq, f, 1, lloq, -np.inf, ea, eb)
        for lower in lowers:
            got = point_m2ll(stein, code, lloq, f, 1, lloq, lower, ea, eb)
            np.testing.assert_array_equal(got, m3)
    np.testing.assert_allclose(
        point_m2ll(stein, 0, lloq, f, 1, lloq, -np.inf, 0.5, 0.0),
        -2 * stats.norm.logcdf(np.log(lloq), np.log(f), 0.5),
        rtol=1e-12,
        atol=1e-12,
    )
    kinds = {"log": {"sigma": 0.5}, "additive": {"a": 3.0}, "proportional": {"b": 0.2}}
    for kind, error in kinds.items():
        np.testing.assert_array_equal(
            m2ll_interval(kind, np.full(4, -np.inf), lloq, f, error),
            m2ll_censored(kind, lloq, f, error),
        )
    np.testing.assert_array_equal(
        m2ll_interval("log", np.zeros(4), lloq, f, {"sigma": 0.5}),
        m2ll_censored("log", lloq, f, {"sigma": 0.5}),
    )


def test_zero_lower_bound_is_a_bound_on_the_natural_scale(stein) -> None:
    """Under additive error LIMIT = 0 is P(0 <= Y <= U), as in Monolix, not the M3 term."""
    got = point_m2ll(stein, 2, 10.0, [2.0], 1, 10.0, 0.0, 3.0, 0.0)[0]
    expected = -2 * np.log(stats.norm.cdf(10.0, 2.0, 3.0) - stats.norm.cdf(0.0, 2.0, 3.0))
    assert got == pytest.approx(expected, rel=1e-12)


def test_solving_kernels_and_residuals_agree_on_interval_points(stein) -> None:
    """m2ll_one and residuals_one (lmfit's form, Σ r² = −2LL − constant) on ck_stein with
    quantified, M3 and interval points, against scipy on the closed form."""
    t = np.array([0.0, 1, 4, 7, 10, 14, 21, 28, 60, 90])
    f = stein_level(t, *TRUTH.values())
    dv = f * np.exp(np.random.default_rng(3).normal(0, 0.3, t.size))
    cens = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], dtype=np.int64)
    upper = np.where(cens == 1, STEPS[np.searchsorted(STEPS, dv)], np.nan)
    lower = np.where(cens == 1, np.r_[0, STEPS][np.searchsorted(STEPS, dv)], -np.inf)
    upper[0], lower[0] = 10.0, -np.inf  # below 1:10: the M3 term
    lower = np.where(lower == 0, -np.inf, lower)
    sigma = 0.3
    p = stein.pack(TRUTH)[0]
    args = (
        p, t, np.zeros(t.size, dtype=np.int64), dv, cens, upper, lower,
        np.zeros(t.size, dtype=np.int64), np.full(t.size, sigma), np.zeros(t.size),
        np.empty(0), np.empty(0), np.empty(0, dtype=np.int64), SOLVER, np.empty((t.size, 1)),
    )  # fmt: skip
    q = cens == 0
    expected = -2 * stats.norm.logpdf(np.log(dv[q]), np.log(f[q]), sigma).sum()
    zl = np.where(np.isfinite(lower), np.log(np.where(lower > 0, lower, 1)) - np.log(f), -np.inf)
    zu = (np.log(upper) - np.log(f)) / sigma
    expected += sum(hand_m2ll(a / sigma, b) for a, b in zip(zl[~q], zu[~q], strict=True))
    assert stein.kernels.m2ll_one(*args) == pytest.approx(expected, rel=1e-9)
    r = np.empty(2 * t.size)
    assert stein.kernels.residuals_one(*args, r)
    offset = -2 * np.log(1e-300)
    assert r @ r == pytest.approx(expected - q.sum() * (np.log(2 * np.pi) - offset), rel=1e-12)


# --- the data reader ---------------------------------------------------------------------


def titres(**changes) -> pd.DataFrame:
    """Four titre rows of one subject: negative below 1:10, 1:32, 1:100 and a quantified."""
    base = {
        "ID": [1, 1, 1, 1],
        "TIME": [0.0, 7.0, 14.0, 28.0],
        "DV": [10.0, 32.0, 100.0, 55.0],
        "CENS": [1, 1, 1, 0],
        "LIMIT": [np.nan, 10.0, 32.0, np.nan],
    }
    return pd.DataFrame({**base, **changes})


def test_reader_keeps_the_bounds_and_packs_them(stein) -> None:
    frame = titres()
    kept = frame.copy()
    ds = read_dataset(frame)
    pd.testing.assert_frame_equal(frame, kept)
    assert "LIMIT" not in ds.covariates
    packed = pack_observations(ds, stein, [1])
    np.testing.assert_array_equal(packed.cens, [1, 1, 1, 0])
    np.testing.assert_array_equal(packed.lloq[:3], [10.0, 32.0, 100.0])
    np.testing.assert_array_equal(packed.limit, [-np.inf, 10.0, 32.0, -np.inf])
    # a missing DV on an interval row takes the LLOQ as its upper bound
    ds = read_dataset(titres(DV=[10.0, np.nan, 100.0, 55.0], LLOQ=[10.0, 32.0, 10.0, 10.0]))
    packed = pack_observations(ds, stein, [1])
    np.testing.assert_array_equal(packed.lloq[:3], [10.0, 32.0, 100.0])
    # without a LIMIT column, M3 exactly as before
    ds = read_dataset(titres().drop(columns="LIMIT"))
    np.testing.assert_array_equal(pack_observations(ds, stein, [1]).limit, [-np.inf] * 4)


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (
            titres(LIMIT=[np.nan, 10.0, 32.0, 20.0]),
            r"^column LIMIT: LIMIT on a row with CENS=0 .* \(row 4\)$",
        ),
        (titres(LIMIT=[np.nan, -1.0, 32.0, np.nan]), r"^column LIMIT: negative LIMIT .*\(row 2\)$"),
        (
            titres(LIMIT=[np.nan, 32.0, 200.0, np.nan]),
            r"^column LIMIT: LIMIT is not below the upper bound DV .*\(rows 2, 3\)$",
        ),
        (
            titres(DV=[10.0, np.nan, 100.0, 55.0]),
            r"^column DV: interval-censored row \(CENS=1 with a LIMIT\) without an upper "
            r"bound.*\(row 2\)$",
        ),
        (
            titres(DV=[10.0, np.nan, 100.0, 55.0], LLOQ=[10.0, np.nan, 10.0, 10.0]),
            r"^column DV: interval-censored row .*\(row 2\)$",
        ),
        (titres(LIMIT=["", "x", "32", ""]), r"^column LIMIT: not a number .*\(row 2\)$"),
        (
            titres(LIMIT=[np.nan, np.inf, 32.0, np.nan]),
            r"^column LIMIT: value is not finite .*\(row 2\)$",
        ),
        (titres(CENS=[1, -1, 1, 0]), r"^column CENS: must be 0 or 1 \(row 2\)$"),
    ],
)
def test_bad_bounds_are_named(frame: pd.DataFrame, pattern: str) -> None:
    kept = frame.copy()
    with pytest.raises(DataError, match=pattern):
        read_dataset(frame)
    pd.testing.assert_frame_equal(frame, kept)


# --- an individual fit to titres ---------------------------------------------------------

FIT_TIMES = np.array([0.0, 1, 2, 4, 6, 8, 10, 12, 14, 17, 21, 28, 35, 42, 60, 90, 120, 180, 270])
ESTIMATED = ("C0", "rho", "alpha")
SIGMA = 0.2


def to_titres(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CENS, DV = upper step, LIMIT = lower step, NaN below 1:10) of true values."""
    k = np.searchsorted(STEPS, values)
    upper = STEPS[k]
    lower = np.where(k > 0, STEPS[np.maximum(k - 1, 0)], np.nan)
    return np.ones(values.size, dtype=int), upper, lower


def titre_subject(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = stein_level(FIT_TIMES, *TRUTH.values())
    cens, dv, limit = to_titres(f * np.exp(rng.normal(0, SIGMA, FIT_TIMES.size)))
    return pd.DataFrame({"ID": 1, "TIME": FIT_TIMES, "DV": dv, "CENS": cens, "LIMIT": limit})


def closed_form_m2ll(x: np.ndarray, data: pd.DataFrame) -> float:
    """−2LL of the titres under ck_stein's closed form, log error with SD SIGMA, written out
    with scipy: −2 log(Φ(z_U) − Φ(z_L)), z_L = −inf without a lower step."""
    p = dict(TRUTH) | dict(zip(ESTIMATED, np.exp(x), strict=True))
    log_f = np.log(stein_level(data["TIME"].to_numpy(), *p.values()))
    z_u = (np.log(data["DV"].to_numpy()) - log_f) / SIGMA
    limit = data["LIMIT"].to_numpy()
    z_l = np.where(np.isnan(limit), -np.inf, (np.log(np.where(np.isnan(limit), 1, limit)) - log_f))
    z_l = np.where(np.isnan(limit), -np.inf, z_l / SIGMA)
    return float(sum(hand_m2ll(a, b) for a, b in zip(z_l, z_u, strict=True)))


def test_individual_fit_to_titres_matches_scipy_and_recovers_the_truth() -> None:
    data = titre_subject(seed=4)
    assert np.isnan(data["LIMIT"]).sum() >= 1 and np.isfinite(data["LIMIT"]).sum() >= 10
    fixed = {n: {"value": v, "vary": False} for n, v in TRUTH.items() if n not in ESTIMATED}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        result = fit(
            "ck_stein", data, params=fixed, error={"CART": ("log", {"sigma": SIGMA})},
            n_starts=3, seed=1,
        )  # fmt: skip
    x = np.array([result.estimation[n] for n in ESTIMATED])
    found = optimize.minimize(
        closed_form_m2ll, np.log([TRUTH[n] for n in ESTIMATED]), args=(data,),
        method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxfev": 20000},
    )  # fmt: skip
    assert found.success
    np.testing.assert_allclose(x, found.x, atol=1e-5)
    assert result.ofv == pytest.approx(found.fun, abs=1e-6)
    table = result.table().set_index("parameter")
    for name in ESTIMATED:
        se = table.loc[name, "se"]
        assert abs(table.loc[name, "estimate"] - TRUTH[name]) <= 2.5 * se, table.loc[name]
    assert list(result.observations["LIMIT"].isna()) == list(data["LIMIT"].isna())
    back = FitResult.from_json(result.to_json())
    pd.testing.assert_frame_equal(back.observations, result.observations)


# --- a population fit to titres ----------------------------------------------------------

POP_TIMES = np.array([0.0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180])
OMEGA_C0 = 0.5


def titre_trial(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """n subjects with a random effect on C0 only, their titres (log error SD SIGMA)."""
    rng = np.random.default_rng(seed)
    eta = rng.normal(0, OMEGA_C0, n)
    rows = []
    for i in range(n):
        p = dict(TRUTH) | {"C0": TRUTH["C0"] * np.exp(eta[i])}
        f = stein_level(POP_TIMES, *p.values())
        cens, dv, limit = to_titres(f * np.exp(rng.normal(0, SIGMA, POP_TIMES.size)))
        rows.append(
            pd.DataFrame({"ID": i + 1, "TIME": POP_TIMES, "DV": dv, "CENS": cens, "LIMIT": limit})
        )
    return pd.concat(rows, ignore_index=True), eta


def marginal_quad(g: pd.DataFrame, c0: float, omega: float, sigma: float) -> float:
    """One subject's −2 log ∫ p(titres | eta) N(eta; 0, omega²) d eta, by scipy quad on the
    closed form (interval terms by :func:`hand_m2ll`)."""
    t, upper, limit = (g[c].to_numpy() for c in ("TIME", "DV", "LIMIT"))

    def m2ll(e: float) -> float:
        p = dict(TRUTH) | {"C0": c0 * np.exp(e)}
        log_f = np.log(stein_level(t, *p.values()))
        z_u = (np.log(upper) - log_f) / sigma
        z_l = np.where(np.isnan(limit), -np.inf, (np.log(np.nan_to_num(limit, nan=1)) - log_f))
        z_l = np.where(np.isnan(limit), -np.inf, z_l / sigma)
        return sum(hand_m2ll(a, b) for a, b in zip(z_l, z_u, strict=True))

    return marginal_m2ll_1d(m2ll, omega, 2.5)


def test_population_fit_to_titres() -> None:
    """20 subjects, a random effect on C0, sigma estimated, the rest fixed: the estimates
    recover the truth roughly, every subject's importance-sampling −2LL is finite and the
    total agrees with a quadrature of the marginal likelihood at the estimates."""
    data, _ = titre_trial(20, seed=8)
    assert data["LIMIT"].notna().mean() > 0.7
    fixed = {n: {"value": v, "vary": False} for n, v in TRUTH.items() if n != "C0"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        result = fit_population(
            "ck_stein", data, random=["C0"], params=fixed, n_iter=(60, 40), n_is=3000,
            seed=5, progress=False,
        )  # fmt: skip
    c0 = result.typical()["C0"]
    omega = float(np.sqrt(result.omega[0, 0]))
    sigma = result.sigma_values["CART"]["sigma"]
    assert abs(np.log(c0 / TRUTH["C0"])) < 0.35
    assert 0.25 < omega < 0.9
    assert 0.08 < sigma < 0.4
    assert np.isfinite(result.ofv) and np.isfinite(result.ofv_se)
    by_quad = sum(marginal_quad(g, c0, omega, sigma) for _, g in data.groupby("ID"))
    assert abs(result.ofv - by_quad) <= 3 * result.ofv_se + 1e-6
    assert result.observations["LIMIT"].notna().sum() == data["LIMIT"].notna().sum()
    # every point is censored: the linearised Fisher information, quantified points only,
    # has nothing to work on, and says so
    assert result.covariance is None
    assert any("quantified observations only, and CART has none" in n for n in result.notes)
