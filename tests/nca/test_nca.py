"""NCA against independent references: PKNCA's published oracle, hand arithmetic, closed forms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartpk.errors import DataError
from cartpk.nca import PARAMETERS, nca, nca_summary

# PKNCA 0.12.1 oracle profile (DESIGN.md, "NCA (observed data)"); hours, units as given.
ORACLE_T = [0, 0.25, 0.5, 1, 2, 3, 4, 6, 8, 10, 12, 16, 24]
ORACLE_C = [0, 0.07, 0.14, 0.21, 0.24, 0.27, 0.26, 0.25, 0.22, 0.19, 0.13, 0.081, 0.033]
REL = 1e-6


def profile(times, conc, cens=None, lloq=np.nan, subject=1, **covariates) -> pd.DataFrame:
    """One subject's observation rows (CENS=1 rows carry DV = LLOQ, as in the contract)."""
    cens = [0] * len(times) if cens is None else cens
    frame = pd.DataFrame(
        {
            "ID": subject,
            "TIME": np.asarray(times, dtype=float),
            "DV": np.asarray(conc, dtype=float),
            "CENS": cens,
            "LLOQ": lloq,
        }
    )
    for name, value in covariates.items():
        frame[name] = value
    return frame


def one(frame: pd.DataFrame, **kwargs) -> pd.Series:
    table = nca(frame, **kwargs)
    assert len(table) == 1
    return table.iloc[0]


def lin(t1, t2, c1, c2):
    return (t2 - t1) * (c1 + c2) / 2


def log_down(t1, t2, c1, c2):
    return (t2 - t1) * (c1 - c2) / math.log(c1 / c2)


# --------------------------------------------------------------------------- PKNCA oracle


def test_pknca_oracle_lin_up_log_down() -> None:
    row = one(profile(ORACLE_T, ORACLE_C), intervals=[(0, 24)])
    assert row["cmax"] == 0.27
    assert row["tmax"] == 3
    assert row["tlast"] == 24
    assert row["clast"] == 0.033
    assert row["auclast"] == pytest.approx(3.4141920, rel=REL)
    assert row["lambda_z"] == pytest.approx(0.11396516, rel=REL)
    assert row["lambda_z_npoints"] == 3
    assert row["lambda_z_time_first"] == 12
    assert row["adj_r_squared"] == pytest.approx(0.99965741, rel=REL)
    assert row["half_life"] == pytest.approx(6.0820970, rel=REL)
    assert row["aucinf_obs"] == pytest.approx(3.7037541, rel=REL)
    # test-aucint.R, "AUCint gives the same value when no interpolation/extrapolation is
    # required": over the sampled span aucint.last is the plain AUC.
    assert row["auc_0_24"] == pytest.approx(3.4141920, rel=REL)
    assert row["exclude"] == ""


def test_pknca_oracle_linear() -> None:
    row = one(profile(ORACLE_T, ORACLE_C), auc_method="linear")
    by_hand = sum(
        (t2 - t1) * (c1 + c2) / 2
        for t1, t2, c1, c2 in zip(ORACLE_T, ORACLE_T[1:], ORACLE_C, ORACLE_C[1:], strict=False)
    )
    assert row["auclast"] == pytest.approx(by_hand, rel=1e-12)
    assert round(row["auclast"], 4) == 3.4555


def test_oracle_derived_parameters_follow_their_definitions() -> None:
    row = one(profile(ORACLE_T, ORACLE_C))
    lz = row["lambda_z"]
    assert row["aucinf_obs"] == pytest.approx(row["auclast"] + 0.033 / lz, rel=1e-12)
    # clast_pred from the regression over the last 3 points (t = 12, 16, 24).
    t = np.array([12.0, 16.0, 24.0])
    slope, intercept = np.polyfit(t, np.log([0.13, 0.081, 0.033]), 1)
    assert -slope == pytest.approx(lz, rel=1e-10)
    clast_pred = math.exp(intercept + slope * 24)
    assert row["aucinf_pred"] == pytest.approx(row["auclast"] + clast_pred / lz, rel=1e-10)
    assert row["auc_pct_extrap_obs"] == pytest.approx(
        100 * (1 - row["auclast"] / row["aucinf_obs"]), rel=1e-12
    )
    assert row["auc_pct_extrap_pred"] == pytest.approx(
        100 * (1 - row["auclast"] / row["aucinf_pred"]), rel=1e-12
    )
    assert row["span_ratio"] == pytest.approx((24 - 12) / row["half_life"], rel=1e-12)
    assert row["aucall"] == row["auclast"]  # no BLQ after tlast


# --------------------------------------------------------------------------- hand AUCs


def test_small_profile_by_hand() -> None:
    # t = 0, 1, 2, 4, 6 with c = BLQ, 4, 2, 1, BLQ: both BLQ rows are kept as 0 by default.
    frame = profile([0, 1, 2, 4, 6], [0.5, 4, 2, 1, 0.5], cens=[1, 0, 0, 0, 1], lloq=0.5)
    up = (1 - 0) * (0 + 4) / 2  # 2
    # log-down: (t2 - t1)(c1 - c2)/ln(c1/c2): 1·2/ln 2 and 2·1/ln 2
    logdown = 1 * (4 - 2) / math.log(2) + 2 * (2 - 1) / math.log(2)  # 4/ln 2 = 5.7707801636
    linear_down = 1 * (4 + 2) / 2 + 2 * (2 + 1) / 2  # 3 + 3
    triangle = (6 - 4) * 1 / 2  # clast down to the zero at t = 6: 1
    row = one(frame)
    assert row["auclast"] == pytest.approx(up + logdown, rel=1e-13)
    assert row["auclast"] == pytest.approx(2 + 4 / math.log(2), rel=1e-13)
    assert row["aucall"] == pytest.approx(up + logdown + triangle, rel=1e-13)
    row = one(frame, auc_method="linear")
    assert row["auclast"] == pytest.approx(8.0, rel=1e-13)
    assert row["auclast"] == up + linear_down
    assert row["aucall"] == pytest.approx(9.0, rel=1e-13)


def test_interval_interpolation_by_hand() -> None:
    frame = profile([0, 1, 2, 4], [0, 4, 2, 1])
    row = one(frame, intervals=[(0.5, 3)])
    # [0.5, 1]: linear up, c(0.5) = 2 -> 0.5·(2 + 4)/2 = 1.5
    # [1, 2]: log down 4 -> 2 = 2/ln 2
    # [2, 3]: log interpolation c(3) = 2·(1/2)^(1/2) = sqrt 2; log trapezoid over 1 day
    c3 = 2 * math.sqrt(0.5)
    expected = 1.5 + 2 / math.log(2) + (2 - c3) / math.log(2 / c3)
    assert row["auc_0.5_3"] == pytest.approx(expected, rel=1e-13)
    row = one(frame, intervals=[(0.5, 3)], auc_method="linear")
    assert row["auc_0.5_3"] == pytest.approx(1.5 + 3 + (2 + 1.5) / 2, rel=1e-13)


# --------------------------------------------------------------------------- mono-exponential

A, K, H = 1000.0, 0.173, 0.5
MONO_T = np.arange(0, 48 + H / 2, H)


def mono() -> pd.DataFrame:
    return profile(MONO_T, A * np.exp(-K * MONO_T))


def test_monoexponential_lambda_z_and_half_life() -> None:
    row = one(mono())
    assert row["lambda_z"] == pytest.approx(K, rel=1e-10)
    assert row["half_life"] == pytest.approx(math.log(2) / K, rel=1e-10)
    assert row["lambda_z_npoints"] == len(MONO_T) - 1  # every point after tmax = 0
    assert row["adj_r_squared"] == pytest.approx(1.0, abs=1e-12)


def test_monoexponential_aucinf_log_trapezoid_is_exact() -> None:
    row = one(mono())
    c = A * np.exp(-K * MONO_T)
    log_trapezoids = np.sum(H * (c[:-1] - c[1:]) / np.log(c[:-1] / c[1:]))
    assert row["auclast"] == pytest.approx(log_trapezoids, rel=1e-12)
    assert row["aucinf_obs"] == pytest.approx(log_trapezoids + c[-1] / K, rel=1e-12)
    # The log trapezoid integrates an exponential exactly: no discretisation error.
    assert row["aucinf_obs"] == pytest.approx(A / K, rel=1e-10)


def test_monoexponential_linear_within_stated_discretisation_bound() -> None:
    row = one(mono(), auc_method="linear")
    x = K * H / 2
    tail = math.exp(-K * MONO_T[-1])
    # Linear trapezoids of A·exp(−kt) with step h sum to (A/k)·x·coth(x)·(1 − e^{−kT}).
    closed = A / K * (x / math.tanh(x) * (1 - tail) + tail)
    assert row["aucinf_obs"] == pytest.approx(closed, rel=1e-10)
    # Stated bound: x·coth(x) − 1 ≤ x²/3 = (k h)²/12 relative overestimate (here 6.2e-4).
    assert 0 < row["aucinf_obs"] / (A / K) - 1 <= (K * H) ** 2 / 12


def test_monoexponential_interval_interpolated_and_extrapolated() -> None:
    intervals = [(0, 7.3), (2.2, 30.1), (0, 60), (50, 70), (0, math.inf)]
    row = one(mono(), intervals=intervals, interval_aucs=["aucint.last", "aucint.inf.obs"])

    def closed(a, b):
        return A / K * (math.exp(-K * a) - math.exp(-K * b))

    for a, b in intervals[:2]:  # inside the sampled span the two agree
        assert row[f"auc_{a}_{b}"] == pytest.approx(closed(a, b), rel=1e-12)
        assert row[f"aucint_inf_obs_{a}_{b}"] == pytest.approx(closed(a, b), rel=1e-12)
    # aucint.inf.obs: the log trapezoid from tlast = 48 follows the exponential exactly
    assert row["aucint_inf_obs_0_60"] == pytest.approx(closed(0, 60), rel=1e-10)
    assert row["aucint_inf_obs_50_70"] == pytest.approx(closed(50, 70), rel=1e-9)
    assert row["aucint_inf_obs_0_inf"] == pytest.approx(A / K, rel=1e-10)
    # aucint.last: 0 after tlast = 48
    assert row["auc_0_60"] == pytest.approx(closed(0, 48), rel=1e-10)
    assert row["auc_50_70"] == 0
    assert row["auc_0_inf"] == pytest.approx(closed(0, 48), rel=1e-10)


def test_interval_past_tlast_is_auclast_part_plus_closed_form_extrapolation() -> None:
    row = one(
        profile(ORACLE_T, ORACLE_C),
        intervals=[(0, 40), (20, 40)],
        interval_aucs=["aucint.last", "aucint.inf.obs"],
    )
    lz, clast = row["lambda_z"], row["clast"]
    tail = clast / lz * (1 - math.exp(-lz * (40 - 24)))
    assert row["aucint_inf_obs_0_40"] == pytest.approx(3.4141920 + tail, rel=REL)
    part = log_down(20, 24, 0.081 * (0.033 / 0.081) ** 0.5, 0.033)  # log-interpolated c(20)
    assert row["aucint_inf_obs_20_40"] == pytest.approx(part + tail, rel=1e-12)
    # aucint.last: nothing after tlast = 24
    assert row["auc_0_40"] == pytest.approx(3.4141920, rel=REL)
    assert row["auc_20_40"] == pytest.approx(part, rel=1e-12)
    note = "ends after the last sample"
    assert f"auc_0_40: {note}: counted as 0 after it" in row["exclude"]
    assert "aucint_inf_obs_0_40: extrapolated with lambda_z after tlast" in row["exclude"]


# --------------------------------------------------------------------------- BLQ rules

BLQ_T = [0, 1, 2, 3, 4, 5, 6]
BLQ_DV = [0.5, 8.0, 0.5, 4.0, 2.0, 0.5, 0.5]
BLQ_CENS = [1, 0, 1, 0, 0, 1, 1]


def blq_profile() -> pd.DataFrame:
    return profile(BLQ_T, BLQ_DV, cens=BLQ_CENS, lloq=0.5)


def test_blq_default_first_kept_middle_dropped_last_kept() -> None:
    row = one(blq_profile())
    # Used: (0, 0), (1, 8), (3, 4), (4, 2), (5, 0), (6, 0); t = 2 is dropped.
    auclast = lin(0, 1, 0, 8) + log_down(1, 3, 8, 4) + log_down(3, 4, 4, 2)
    assert row["auclast"] == pytest.approx(auclast, rel=1e-13)
    assert row["aucall"] == pytest.approx(auclast + lin(4, 5, 2, 0), rel=1e-13)
    assert (row["cmax"], row["tmax"], row["tlast"], row["clast"]) == (8, 1, 4, 2)


def test_blq_first_drop() -> None:
    row = one(blq_profile(), blq={"first": "drop", "middle": "drop", "last": "keep"})
    assert row["auclast"] == pytest.approx(log_down(1, 3, 8, 4) + log_down(3, 4, 4, 2))
    assert "auc_0_28: starts before the first observation" in row["exclude"]


def test_blq_middle_keep_as_zero() -> None:
    row = one(blq_profile(), blq={"first": "keep", "middle": "keep", "last": "keep"})
    # 8 -> 0 and 0 -> 4 are linear (a zero end), 4 -> 2 is log-down.
    auclast = lin(0, 1, 0, 8) + lin(1, 2, 8, 0) + lin(2, 3, 0, 4) + log_down(3, 4, 4, 2)
    assert row["auclast"] == pytest.approx(auclast, rel=1e-13)


def test_blq_last_drop_and_lloq_half() -> None:
    row = one(blq_profile(), blq={"first": "keep", "middle": "drop", "last": "drop"})
    assert row["aucall"] == row["auclast"]
    row = one(blq_profile(), blq={"first": "keep", "middle": "drop", "last": "lloq/2"})
    # Substituted values count as measured: tlast moves to t = 6 with clast = 0.25.
    assert (row["tlast"], row["clast"]) == (6, 0.25)
    auclast = (
        lin(0, 1, 0, 8)
        + log_down(1, 3, 8, 4)
        + log_down(3, 4, 4, 2)
        + log_down(4, 5, 2, 0.25)
        + lin(5, 6, 0.25, 0.25)
    )
    assert row["auclast"] == pytest.approx(auclast, rel=1e-13)


def test_blq_number_substitution() -> None:
    row = one(blq_profile(), blq={"first": np.float64(0.1), "middle": "drop", "last": "keep"})
    assert row["auclast"] == pytest.approx(
        lin(0, 1, 0.1, 8) + log_down(1, 3, 8, 4) + log_down(3, 4, 4, 2), rel=1e-13
    )


def test_all_blq_gives_zero_auc_and_reason() -> None:
    row = one(profile([0, 7, 14], [5, 5, 5], cens=[1, 1, 1], lloq=5.0))
    assert row["cmax"] == 0 and row["auclast"] == 0 and row["auc_0_28"] == 0
    assert math.isnan(row["tmax"]) and math.isnan(row["tlast"]) and math.isnan(row["lambda_z"])
    assert row["exclude"] == "all concentrations BLQ"


def test_all_blq_with_first_dropped_leaves_no_observations() -> None:
    frame = profile([0, 7, 14], [5, 5, 5], cens=[1, 1, 1], lloq=5.0)
    row = one(frame, blq={"first": "drop", "middle": "drop", "last": "drop"})
    assert row["exclude"] == "no observations left after the BLQ rules"
    assert row[list(PARAMETERS)].isna().all()


# --------------------------------------------------------------------------- degenerate profiles


def test_too_few_points_give_nan_and_reasons_without_exceptions() -> None:
    frame = pd.concat(
        [
            profile([0, 1, 2, 4], [1, 5, 3, 2], subject=1),  # 2 points after tmax
            profile([0, 1, 2], [1, 2, 9], subject=2),  # tmax = tlast, before the end of 0-4
            profile([3.0], [10.0], subject=3),  # one observation
            profile([0, 1, 2, 3, 4], [1, 9, 4, 5, 6], subject=4),  # rising tail: λz < 0
        ]
    )
    table = nca(frame, intervals=[(0, 4)], interval_aucs=["aucint.last", "aucint.inf.obs"])
    table = table.set_index("ID")
    few = "fewer than 3 points after tmax: lambda_z not computed"
    assert table.loc[1, "exclude"] == few
    auc_1 = lin(0, 1, 1, 5) + log_down(1, 2, 5, 3) + log_down(2, 4, 3, 2)
    assert table.loc[1, "auc_0_4"] == pytest.approx(auc_1, rel=1e-13)
    # inside the sampled span aucint.inf.obs needs no lambda_z (pk.calc.aucint)
    assert table.loc[1, "aucint_inf_obs_0_4"] == pytest.approx(auc_1, rel=1e-13)
    after = "ends after the last sample: counted as 0 after it"
    no_lz = "aucint_inf_obs_0_4: needs lambda_z after tlast, which is not available"
    assert table.loc[2, "exclude"] == f"{few}; auc_0_4: {after}; {no_lz}"
    assert table.loc[2, "auc_0_4"] == pytest.approx(lin(0, 1, 1, 2) + lin(1, 2, 2, 9))
    assert math.isnan(table.loc[2, "aucint_inf_obs_0_4"])
    origin = "starts before the first observation: concentration 0 assumed there"
    assert table.loc[3, "exclude"] == (
        f"one observation: auclast and aucall not computed; {few}; auc_0_4: {origin}; "
        f"auc_0_4: {after}; {no_lz}"
    )
    # PKNCA's conc.origin: 0 at day 0, linear up to 10 at day 3, 0 after tlast
    assert table.loc[3, "auc_0_4"] == pytest.approx(lin(0, 3, 0, 10), rel=1e-13)
    assert table.loc[4, "exclude"] == "no terminal fit with lambda_z > 0: lambda_z not computed"
    assert table.loc[[1, 2, 3, 4], "lambda_z"].isna().all()
    assert table.loc[[1, 2, 3], "aucinf_obs"].isna().all()
    assert math.isnan(table.loc[3, "auclast"])


def test_subject_without_observations_gets_a_row() -> None:
    frame = profile(ORACLE_T, ORACLE_C)
    frame["EVID"] = 0
    dose_only = pd.DataFrame(
        {"ID": [2], "TIME": [0.0], "DV": [np.nan], "CENS": [0], "EVID": [1], "AMT": [1e6]}
    )
    table = nca(pd.concat([frame, dose_only], ignore_index=True)).set_index("ID")
    assert table.loc[2, "exclude"] == "no observations"
    assert table.loc[2, list(PARAMETERS)].isna().all()


def test_negative_times_are_included() -> None:
    row = one(
        profile([-7, 0, 1, 2, 4, 8], [0.5, 0.5, 10, 8, 4, 1], cens=[1, 1, 0, 0, 0, 0], lloq=0.5)
    )
    assert row["auclast"] == pytest.approx(
        0 + lin(0, 1, 0, 10) + log_down(1, 2, 10, 8) + log_down(2, 4, 8, 4) + log_down(4, 8, 4, 1)
    )


def dosed(frame: pd.DataFrame, *times: float) -> pd.DataFrame:
    """``frame`` (one subject) with dose records (EVID 1, AMT 1e6) at ``times``."""
    frame = frame.assign(EVID=0)
    doses = pd.DataFrame(
        {"ID": frame["ID"].iloc[0], "TIME": list(times), "DV": np.nan, "CENS": 0, "EVID": 1,
         "AMT": 1e6}
    )  # fmt: skip
    return pd.concat([doses, frame], ignore_index=True)


def test_lambda_z_not_taken_across_a_reinfusion() -> None:
    """PKNCA: intervals are per dose. A second infusion at day 14 restarts the expansion;
    lambda_z comes from the points after the second peak only, and the table says so."""
    times = [0, 2, 5, 8, 11, 14, 16, 19, 22, 25, 28]
    first = [1, 50, 400, 200, 100, 50]  # peak at day 5, falls to day 14
    second = [300, 120, 60, 30, 15]  # second peak at day 16, halves every 3 days
    row = one(dosed(profile(times, first + second), 0, 14))
    assert row["last_dose"] == 14
    assert "lambda_z from the points after the last dose only" in row["exclude"]
    assert row["lambda_z_time_first"] >= 19  # never before the second peak (day 16)
    assert row["lambda_z"] == pytest.approx(math.log(2) / 3, rel=1e-9)
    assert row["cmax"] == 400 and row["tmax"] == 5  # the whole profile's maximum
    # one infusion at day 0: nothing changes, nothing flagged
    single = one(dosed(profile(ORACLE_T, ORACLE_C), 0), intervals=[(0, 24)])
    assert math.isnan(single["last_dose"]) and single["exclude"] == ""
    assert single["lambda_z"] == pytest.approx(0.11396516, rel=REL)


# --------------------------------------------------------------------------- table shape


def test_columns_covariates_and_interval_names() -> None:
    frame = pd.concat(
        [
            profile(ORACLE_T, ORACLE_C, subject=1, DOSE=1e6, WT=70.0),
            profile(ORACLE_T, np.array(ORACLE_C) * 2, subject=2, DOSE=2e6, WT=80.0),
        ]
    )
    table = nca(frame, intervals=[(0, 28), (0, 7.5)])
    params = [*PARAMETERS, "auc_0_28", "auc_0_7.5", "last_dose", "exclude"]
    assert list(table.columns) == ["ID", "DOSE", "WT", *params]
    assert list(table["DOSE"]) == [1e6, 2e6]
    assert list(nca(frame, by="DOSE").columns)[:3] == ["ID", "DOSE", "cmax"]
    summary = nca_summary(table, by="DOSE")
    assert set(summary["DOSE"]) == {1e6, 2e6}


def test_interval_forms_and_names() -> None:
    frame = profile(ORACLE_T, ORACLE_C)
    single = nca(frame, intervals=(0, 12))
    assert "auc_0_12" in single.columns
    table = nca(frame, intervals=[(0.25, 7.5), (np.float64(2), math.inf)])
    assert ["auc_0.25_7.5", "auc_2_inf"] == list(table.columns[-4:-2])
    assert list(nca(frame, intervals=[]).columns)[-3:] == ["span_ratio", "last_dose", "exclude"]


def test_reads_a_csv_path(tmp_path) -> None:
    path = tmp_path / "profile.csv"
    profile(ORACLE_T, ORACLE_C).to_csv(path, index=False)
    assert one(path)["auclast"] == pytest.approx(3.4141920, rel=REL)


def test_input_frame_not_modified() -> None:
    frame = blq_profile()
    before = frame.copy()
    nca(frame)
    pd.testing.assert_frame_equal(frame, before)


# --------------------------------------------------------------------------- properties

profiles = st.integers(min_value=4, max_value=12).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n),
        st.lists(st.floats(1e-2, 1e3), min_size=n, max_size=n),
    )
)


def random_profile(gaps, conc) -> pd.DataFrame:
    """Times 0, then the cumulative gaps (so that auc_0_28 exists)."""
    return profile(np.concatenate([[0.0], np.cumsum(gaps)[:-1]]), conc)


AUC_COLUMNS = ["auclast", "aucall", "aucinf_obs", "aucinf_pred", "auc_0_28"]


@settings(max_examples=60, deadline=None)
@given(profiles, st.floats(1e-3, 1e3))
def test_scaling_concentrations(data, k) -> None:
    gaps, conc = data
    base = one(random_profile(gaps, conc), intervals=[(0, 28)])
    scaled = one(random_profile(gaps, np.asarray(conc) * k), intervals=[(0, 28)])
    assert scaled["cmax"] == pytest.approx(k * base["cmax"], rel=1e-12)
    assert scaled["tmax"] == base["tmax"]
    for name in AUC_COLUMNS:
        assert scaled[name] == pytest.approx(k * base[name], rel=1e-9, nan_ok=True)
    assert scaled["lambda_z"] == pytest.approx(base["lambda_z"], rel=1e-9, nan_ok=True)


@settings(max_examples=60, deadline=None)
@given(profiles, st.floats(-100.0, 100.0))
def test_shifting_times(data, s) -> None:
    gaps, conc = data
    times = np.cumsum(gaps)
    base = one(profile(times, conc))
    shifted = one(profile(times + s, conc))
    assert shifted["tmax"] == pytest.approx(base["tmax"] + s, abs=1e-9)
    assert shifted["tlast"] == pytest.approx(base["tlast"] + s, abs=1e-9)
    assert shifted["auclast"] == pytest.approx(base["auclast"], rel=1e-9)
    assert shifted["lambda_z"] == pytest.approx(base["lambda_z"], rel=1e-7, nan_ok=True)


# --------------------------------------------------------------------------- validation


def test_bad_auc_method() -> None:
    with pytest.raises(
        ValueError, match=r"auc_method 'log': expected one of 'lin-up/log-down', 'linear'"
    ):
        nca(profile(ORACLE_T, ORACLE_C), auc_method="log")


@pytest.mark.parametrize(
    ("blq", "message"),
    [
        ({"first": "keep"}, r"blq must be a dict with exactly the keys 'first', 'middle', 'last'"),
        ("drop", r"blq must be a dict with exactly the keys"),
        (
            {"first": "keep", "middle": "zero", "last": "keep"},
            r"blq\['middle'\] = 'zero': expected \"keep\", \"drop\", \"lloq/2\" or a number >= 0",
        ),
        ({"first": -1, "middle": "drop", "last": "keep"}, r"blq\['first'\] = -1: expected"),
    ],
)
def test_bad_blq(blq, message) -> None:
    with pytest.raises(ValueError, match=message):
        nca(profile(ORACLE_T, ORACLE_C), blq=blq)


def test_unknown_and_ambiguous_analyte() -> None:
    frame = pd.concat(
        [
            profile(ORACLE_T, ORACLE_C).assign(ANALYTE="CART"),
            profile([0, 14, 28], [4119.11, 1666.36, 225.49]).assign(ANALYTE="VEGF"),
        ]
    )
    with pytest.raises(DataError, match=r"CART.*VEGF"):
        nca(frame, analyte="IL6")
    with pytest.raises(DataError, match=r"the data hold 2 analytes \(CART, VEGF\); choose one"):
        nca(frame)
    assert one(frame, analyte="VEGF")["cmax"] == 4119.11


@pytest.mark.parametrize("interval", [(28, 0), (7, 7)])
def test_interval_start_not_before_end(interval) -> None:
    with pytest.raises(ValueError, match=r"start must be before end"):
        nca(profile(ORACLE_T, ORACLE_C), intervals=[interval])


def test_lloq_half_needs_lloq() -> None:
    frame = profile([0, 1, 2, 3, 4], [0, 5, 4, 3, 2])
    with pytest.raises(DataError, match=r"LLOQ: the BLQ rule 'lloq/2' needs a positive LLOQ"):
        nca(frame, blq={"first": "lloq/2", "middle": "drop", "last": "keep"})


def test_duplicate_times_rejected() -> None:
    frame = profile([0, 1, 1, 2], [0, 5, 4, 3])
    with pytest.raises(DataError, match=r"column TIME: duplicate observation.* \(rows 2, 3\)"):
        nca(frame)


# --------------------------------------------------------------------------- nca_summary


def test_nca_summary_against_numpy() -> None:
    table = pd.DataFrame(
        {
            "ID": [1, 2, 3, 4, 5, 6],
            "DOSE": [1, 1, 1, 2, 2, 2],
            "cmax": [10.0, 20.0, 40.0, 5.0, 0.0, np.nan],
            "tmax": [7.0, 9.0, 14.0, 10.0, 11.0, 12.0],
        }
    )
    summary = nca_summary(table, by="DOSE").set_index(["DOSE", "parameter"])
    assert list(summary.columns) == [
        "n", "n_geo", "geomean", "geocv_pct", "mean", "sd", "median", "min", "max"
    ]  # fmt: skip
    for (dose, name), values in {
        (1, "cmax"): np.array([10.0, 20.0, 40.0]),
        (2, "cmax"): np.array([5.0, 0.0]),
        (2, "tmax"): np.array([10.0, 11.0, 12.0]),
    }.items():
        row = summary.loc[(dose, name)]
        logs = np.log(values[values > 0])
        assert row["n"] == values.size
        assert row["n_geo"] == logs.size
        assert row["geomean"] == pytest.approx(np.exp(np.mean(logs)), rel=1e-13)
        if logs.size > 1:
            sd_log = np.std(logs, ddof=1)
            assert row["geocv_pct"] == pytest.approx(100 * np.sqrt(np.exp(sd_log**2) - 1))
        else:
            assert math.isnan(row["geocv_pct"])
        assert row["mean"] == pytest.approx(np.mean(values), rel=1e-13)
        assert row["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-13)
        assert row["median"] == np.median(values)
        assert (row["min"], row["max"]) == (values.min(), values.max())


def test_nca_summary_without_groups_and_parameter_choice() -> None:
    table = nca(profile(ORACLE_T, ORACLE_C))
    summary = nca_summary(table, parameters=["cmax", "auclast"])
    assert list(summary["parameter"]) == ["cmax", "auclast"]
    assert list(summary.columns[:2]) == ["parameter", "n"]
    with pytest.raises(DataError, match=r"by: no column 'DOSE'"):
        nca_summary(table, by="DOSE")
    with pytest.raises(DataError, match=r"parameters: no column 'cmin'"):
        nca_summary(table, parameters=["cmin"])


# --------------------------------------------------------------------------- PKNCA aucint
# Expected values by hand from PKNCA's tests (tests/testthat/test-aucint.R, test-auc.R,
# test-cleaners.R, named per test) and from the semantics of R/aucint.R: the samples inside
# the interval are integrated with the AUC method, the ends are interpolated (0 before the
# first sample) or, after tlast, 0 (aucint.last), on AUCall's triangle (aucint.all) or on
# the lambda_z line (aucint.inf.obs), and the segment to an extrapolated end is a log
# trapezoid.

LN2 = math.log(2)
ALL_AUCS = ["aucint.last", "aucint.inf.obs", "aucint.all"]
HALVING = ([0, 1, 2, 3], [8, 4, 2, 1])  # test-aucint.R's concdata: lambda_z = ln 2 exactly


def test_aucint_integrates_down_to_an_observed_blq_zero() -> None:
    """test-aucint.R, "AUCint respects auc.type ...": concdata_blq = 8, 4, 2, 1, BLQ at
    days 0-4 over [0, 4] equals the AUCall of the same data: 7/ln 2 + 1/2 = 10.5989."""
    frame = profile([0, 1, 2, 3, 4], [8, 4, 2, 1, 0.5], cens=[0, 0, 0, 0, 1], lloq=0.5)
    row = one(frame, intervals=[(0, 4), (0, 28)], interval_aucs=ALL_AUCS)
    expected = 7 / LN2 + lin(3, 4, 1, 0)
    assert round(expected, 4) == 10.5989
    for prefix in ("auc", "aucint_inf_obs", "aucint_all"):
        assert row[f"{prefix}_0_4"] == pytest.approx(expected, rel=1e-13)
        # after the BLQ sample at day 4 the curve is 0, for aucint.inf.obs too (the
        # observed BLQ wins over lambda_z: PKNCA issue #110)
        assert row[f"{prefix}_0_28"] == pytest.approx(expected, rel=1e-13)
        assert (
            f"{prefix}_0_28: ends after the last sample: counted as 0 after it" in (row["exclude"])
        )
    assert "_0_4:" not in row["exclude"]
    assert row["auclast"] == pytest.approx(7 / LN2, rel=1e-13)
    assert row["aucall"] == pytest.approx(expected, rel=1e-13)


def test_aucint_end_between_tlast_and_a_blq_sample() -> None:
    """test-aucint.R, "AUCall traces correctly": over [0, 3.5], aucint.all ends on AUCall's
    line, c(3.5) = 0.5, reached with the log trapezoid; aucint.last is 0 after tlast;
    aucint.inf.obs ends on clast·exp(−ln 2·0.5)."""
    frame = profile([0, 1, 2, 3, 4], [8, 4, 2, 1, 0.5], cens=[0, 0, 0, 0, 1], lloq=0.5)
    row = one(frame, intervals=[(0, 3.5)], interval_aucs=ALL_AUCS)
    assert row["aucint_all_0_3.5"] == pytest.approx(7 / LN2 + log_down(3, 3.5, 1, 0.5))
    assert row["auc_0_3.5"] == pytest.approx(7 / LN2, rel=1e-13)
    c35 = 2**-0.5
    assert row["aucint_inf_obs_0_3.5"] == pytest.approx(7 / LN2 + log_down(3, 3.5, 1, c35))
    assert row["exclude"] == "aucint_inf_obs_0_3.5: extrapolated with lambda_z after tlast"


def test_aucint_past_the_last_sample() -> None:
    """test-aucint.R, "AUCinf is traced": concdata over [0, 4] with clast = 1 and
    lambda_z = ln 2 is the AUC of 8, 4, 2, 1, 0.5 = 7.5/ln 2; aucint.last and aucint.all
    (no BLQ after tlast) stop at tlast."""
    row = one(profile(*HALVING), intervals=[(0, 4)], interval_aucs=ALL_AUCS)
    assert row["lambda_z"] == pytest.approx(LN2, rel=1e-12)
    assert row["aucint_inf_obs_0_4"] == pytest.approx(7.5 / LN2, rel=1e-12)
    assert row["auc_0_4"] == pytest.approx(7 / LN2, rel=1e-13)
    assert row["aucint_all_0_4"] == pytest.approx(7 / LN2, rel=1e-13)
    assert row["exclude"] == (
        "auc_0_4: ends after the last sample: counted as 0 after it; "
        "aucint_inf_obs_0_4: extrapolated with lambda_z after tlast; "
        "aucint_all_0_4: ends after the last sample: counted as 0 after it"
    )


def test_aucint_infinite_interval() -> None:
    """test-aucint.R, "aucint works with infinite intervals": aucint.last = AUClast,
    aucint.all = AUCall, aucint.inf.obs = AUCinf,obs = 7/ln 2 + 1/ln 2."""
    row = one(profile(*HALVING), intervals=[(0, math.inf)], interval_aucs=ALL_AUCS)
    assert row["auc_0_inf"] == pytest.approx(7 / LN2, rel=1e-13)
    assert row["aucint_all_0_inf"] == pytest.approx(7 / LN2, rel=1e-13)
    assert row["aucint_inf_obs_0_inf"] == pytest.approx(8 / LN2, rel=1e-12)
    assert row["aucint_inf_obs_0_inf"] == pytest.approx(row["aucinf_obs"], rel=1e-13)


def test_subject_sampled_to_day_21_gets_auc_0_28_and_a_note() -> None:
    times = [0, 1, 4, 7, 14, 21]
    conc = [0.5, 50.0, 400.0, 200.0, 40.0, 8.0]
    frame = profile(times, conc, cens=[1, 0, 0, 0, 0, 0], lloq=0.5)
    row = one(frame, interval_aucs=["aucint.last", "aucint.inf.obs"])
    auclast = (
        lin(0, 1, 0, 50) + lin(1, 4, 50, 400) + log_down(4, 7, 400, 200)
        + log_down(7, 14, 200, 40) + log_down(14, 21, 40, 8)
    )  # fmt: skip
    assert row["auc_0_28"] == pytest.approx(auclast, rel=1e-13)  # 0 after day 21
    slope = np.polyfit([7, 14, 21], np.log([200, 40, 8]), 1)[0]
    assert row["lambda_z"] == pytest.approx(-slope, rel=1e-10)
    tail = 8 / -slope * (1 - math.exp(slope * 7))
    assert row["aucint_inf_obs_0_28"] == pytest.approx(auclast + tail, rel=1e-10)
    assert "auc_0_28: ends after the last sample: counted as 0 after it" in row["exclude"]


def test_aucint_log_rule_after_tlast_whatever_the_auc_method() -> None:
    """test-aucint.R, "aucint uses log extrapolation regardless of the interpolation method
    (#203)": 0, 1, 2, 0.75, 0.5, 0.2 at 0-5; [5, 6] adds the log trapezoid from clast to
    clast·exp(−λz) with either AUC method."""
    frame = profile([0, 1, 2, 3, 4, 5], [0, 1, 2, 0.75, 0.5, 0.2])
    kwargs = {"intervals": [(0, 5), (0, 6)], "interval_aucs": "aucint.inf.obs"}
    linear = one(frame, auc_method="linear", **kwargs)
    logdown = one(frame, **kwargs)
    lz = -np.polyfit([3, 4, 5], np.log([0.75, 0.5, 0.2]), 1)[0]
    assert linear["lambda_z"] == pytest.approx(lz, rel=1e-10)
    c6 = 0.2 * math.exp(-lz)
    step = log_down(5, 6, 0.2, c6)
    assert linear["aucint_inf_obs_0_5"] == pytest.approx(0.5 + 1.5 + 1.375 + 0.625 + 0.35)
    assert linear["aucint_inf_obs_0_6"] == pytest.approx(
        linear["aucint_inf_obs_0_5"] + step, rel=1e-12
    )
    assert logdown["aucint_inf_obs_0_6"] - logdown["aucint_inf_obs_0_5"] == pytest.approx(
        step, rel=1e-10
    )


def test_aucint_of_all_blq_is_zero() -> None:
    """test-aucint.R, "aucint works for all zero concentrations ...": 0 over [0, 4] and
    [0, 2.5]."""
    frame = profile([0, 1, 2, 3], [1, 1, 1, 1], cens=[1, 1, 1, 1], lloq=1.0)
    row = one(frame, intervals=[(0, 4), (0, 2.5)], interval_aucs=ALL_AUCS)
    for prefix in ("auc", "aucint_inf_obs", "aucint_all"):
        assert row[f"{prefix}_0_4"] == 0 and row[f"{prefix}_0_2.5"] == 0


def test_aucint_pknca_issue_110_profile() -> None:
    """PKNCA issue #110 (maintainer's pk.nca output, 2024-01-15): 0, 2.5, 3, 2.7, 2.3, 2.0,
    1.0 at 0-5 and 8 h, interval [0, 24]: aucint.last = aucint.all = 15.8."""
    frame = profile([0, 1, 2, 3, 4, 5, 8], [0, 2.5, 3, 2.7, 2.3, 2.0, 1.0])
    row = one(frame, intervals=[(0, 24)], interval_aucs=["aucint.last", "aucint.all"])
    by_hand = (
        lin(0, 1, 0, 2.5) + lin(1, 2, 2.5, 3) + log_down(2, 3, 3, 2.7)
        + log_down(3, 4, 2.7, 2.3) + log_down(4, 5, 2.3, 2.0) + log_down(5, 8, 2.0, 1.0)
    )  # fmt: skip
    assert round(row["auc_0_24"], 1) == 15.8
    assert row["auc_0_24"] == pytest.approx(by_hand, rel=1e-13)
    assert row["aucint_all_0_24"] == pytest.approx(by_hand, rel=1e-13)


def test_aucint_start_before_first_sample_assumes_zero() -> None:
    """R/interpolate.conc.R: before the first measurement the concentration is conc.origin,
    0 by default; PKNCA's pk.calc.auc (not aucint) gives NA instead."""
    row = one(profile([1, 2, 4], [6, 3, 1]), intervals=[(0, 4)])
    expected = lin(0, 1, 0, 6) + log_down(1, 2, 6, 3) + log_down(2, 4, 3, 1)
    assert row["auc_0_4"] == pytest.approx(expected, rel=1e-13)
    assert row["exclude"] == (
        "fewer than 3 points after tmax: lambda_z not computed; "
        "auc_0_4: starts before the first observation: concentration 0 assumed there"
    )


# --------------------------------------------------------------------------- PKNCA auc / cleaners


@pytest.mark.parametrize(
    ("conc", "auclast", "aucall", "aucint"),
    [
        # test-auc.R, "Linear AUC when the conc at the end of the interval is BLQ"
        ([0, 1, 0], 0.5, 1.0, 1.0),
        # test-auc.R, "... multiple BLQ values at the end"
        ([0, 1, 0, 0, 0, 0, 0], 0.5, 1.0, 1.0),
    ],
)
def test_pknca_linear_blq_at_the_end(conc, auclast, aucall, aucint) -> None:
    times = list(range(len(conc)))
    cens = [int(c == 0) for c in conc]
    frame = profile(times, [c or 0.1 for c in conc], cens=cens, lloq=0.1)
    row = one(frame, intervals=[(0, times[-1])], auc_method="linear")
    assert (row["auclast"], row["aucall"]) == (pytest.approx(auclast), pytest.approx(aucall))
    # aucint integrates the samples of the interval: down to the first BLQ zero
    assert row[f"auc_0_{times[-1]}"] == pytest.approx(aucint)


def middle_blq_profile(conc, times=None) -> pd.DataFrame:
    times = list(range(len(conc))) if times is None else times
    cens = [int(c == 0) for c in conc]
    return profile(times, [0.1 if c == 0 else c for c in conc], cens=cens, lloq=0.1)


KEEP_ALL = {"first": "keep", "middle": "keep", "last": "keep"}


@pytest.mark.parametrize(("method", "last_part"), [("linear", 1.5), ("lin-up/log-down", 1 / LN2)])
def test_pknca_center_blq_kept_or_dropped(method, last_part) -> None:
    """test-auc.R, "Confirm that center BLQ points are dropped, kept, or imputed correctly"
    and "Confirm BLQ in the middle or end are calculated correctly"."""
    kept = one(middle_blq_profile([0, 2, 0, 1, 2, 1]), blq=KEEP_ALL, auc_method=method)
    assert kept["auclast"] == pytest.approx(1 + 1 + 0.5 + 1.5 + last_part, rel=1e-13)
    assert kept["aucall"] == kept["auclast"]
    tail = middle_blq_profile([0, 2, 0, 1, 2, 1, 0, 0])
    kept = one(tail, blq=KEEP_ALL, auc_method=method, intervals=[(0, 7)])
    assert kept["aucall"] == pytest.approx(1 + 1 + 0.5 + 1.5 + last_part + 0.5, rel=1e-13)
    assert kept["auc_0_7"] == pytest.approx(kept["aucall"], rel=1e-13)
    dropped = one(tail, auc_method=method)  # default: the middle BLQ at t = 2 is dropped
    first_part = 3 if method == "linear" else 2 / LN2
    assert dropped["auclast"] == pytest.approx(1 + first_part + 1.5 + last_part, rel=1e-13)
    assert dropped["aucall"] == pytest.approx(dropped["auclast"] + 0.5, rel=1e-13)


@pytest.mark.parametrize(("method", "last_part"), [("linear", 1.5), ("lin-up/log-down", 1 / LN2)])
def test_pknca_missing_dv_dropped_before_the_blq_rules(method, last_part) -> None:
    """test-auc.R, "Test NA at the end": 0, 2, 0, 1, 2, 1, NA, 0 at 0-7; the NA row is
    dropped, so AUCall's triangle runs from day 5 to the BLQ at day 7."""
    frame = middle_blq_profile([0, 2, 0, 1, 2, 1, 0, 0])
    frame.loc[6, "DV"] = np.nan
    frame.loc[6, "CENS"] = 0
    row = one(frame, auc_method=method, intervals=[(0, 7)])
    first_part = 3 if method == "linear" else 2 / LN2
    assert row["auclast"] == pytest.approx(1 + first_part + 1.5 + last_part, rel=1e-13)
    assert row["aucall"] == pytest.approx(row["auclast"] + 1, rel=1e-13)
    assert row["auc_0_7"] == pytest.approx(row["aucall"], rel=1e-13)
    assert row["exclude"].startswith("1 row with a missing DV dropped (as PKNCA); ")


def test_missing_dv_read_from_csv_and_reported(tmp_path) -> None:
    """test-cleaners.R, "clean.conc.na": 1, NA, 2 at 1-3 keeps (1, 1) and (3, 2). A CSV's
    "." and an empty DV are missing (NONMEM); the reader keeps them for NCA only."""
    path = tmp_path / "missing.csv"
    path.write_text("ID,TIME,DV\n1,1,1\n1,2,.\n1,3,2\n2,0,4\n2,1,\n2,2,\n2,3,1\n")
    table = nca(path, intervals=[(1, 3)], auc_method="linear").set_index("ID")
    assert table.loc[1, "auc_1_3"] == pytest.approx(lin(1, 3, 1, 2), rel=1e-13)
    assert table.loc[1, "exclude"].startswith("1 row with a missing DV dropped (as PKNCA)")
    assert table.loc[2, "auclast"] == pytest.approx(lin(0, 3, 4, 1), rel=1e-13)
    assert table.loc[2, "exclude"].startswith("2 rows with a missing DV dropped (as PKNCA)")
    from cartpk.data import read_dataset

    with pytest.raises(DataError, match=r"column DV: missing DV on an observation row"):
        read_dataset(path)


@pytest.mark.parametrize("first", ["drop", "keep"])
@pytest.mark.parametrize("middle", ["drop", "keep"])
@pytest.mark.parametrize("last", ["drop", "keep"])
def test_pknca_cleaner_positions(first, middle, last) -> None:
    """test-cleaners.R, "clean.conc.blq": for 0, 1, 0, 2, 0 at 1-5, each rule drops or
    keeps its own BLQ sample (first at t = 1, middle at 3, last at 5)."""
    rules = {"first": first, "middle": middle, "last": last}
    kept = [first == "keep", True, middle == "keep", True, last == "keep"]
    t = np.arange(1.0, 6.0)[kept]
    c = np.array([0.0, 1.0, 0.0, 2.0, 0.0])[kept]
    row = one(middle_blq_profile([0, 1, 0, 2, 0], times=[1, 2, 3, 4, 5]), blq=rules,
              auc_method="linear", intervals=[(float(t[0]), 5.0)])  # fmt: skip
    upto_tlast = t <= 4
    auclast = float(np.sum(np.diff(t[upto_tlast]) * (c[upto_tlast][1:] + c[upto_tlast][:-1]) / 2))
    assert row["auclast"] == pytest.approx(auclast, rel=1e-13)
    assert row["aucall"] == pytest.approx(auclast + (0.5 * 2 * 1 if last == "keep" else 0))
    assert row[f"auc_{t[0]:g}_5"] == pytest.approx(row["aucall"], rel=1e-13)


def test_bad_interval_aucs() -> None:
    for bad in ("aucint.inf.pred", [], ["aucint.last", "aucint.last"]):
        with pytest.raises(ValueError, match=r"interval_aucs .*: expected one or more of"):
            nca(profile(ORACLE_T, ORACLE_C), interval_aucs=bad)


def test_nca_summary_includes_the_interval_auc_variants() -> None:
    table = nca(profile(*HALVING), intervals=[(0, 3)], interval_aucs=ALL_AUCS)
    names = set(nca_summary(table)["parameter"])
    assert {"auc_0_3", "aucint_inf_obs_0_3", "aucint_all_0_3"} <= names


def test_aucint_starting_on_a_blq_sample_after_tlast() -> None:
    """From an observed BLQ after tlast the curve stays 0: the log trapezoid from 0 to the
    lambda_z line adds nothing (R/aucint.R), for aucint.inf.obs too."""
    frame = profile([0, 1, 2, 3, 4], [8, 4, 2, 1, 0.5], cens=[0, 0, 0, 0, 1], lloq=0.5)
    row = one(frame, intervals=[(4, 6)], interval_aucs=["aucint.last", "aucint.inf.obs"])
    assert row["auc_4_6"] == 0 and row["aucint_inf_obs_4_6"] == 0
    assert "extrapolated" not in row["exclude"]
    assert (
        "aucint_inf_obs_4_6: ends after the last sample: counted as 0 after it" in (row["exclude"])
    )
