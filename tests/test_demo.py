"""The POEMS seed case against the published VEGF values (CTR20242409, patient 1)."""

from __future__ import annotations

import pandas as pd
import pytest

from cartpk.demo import poems_fit, poems_report

PUBLISHED = {14.0: 1666.36, 28.0: 225.49}  # ng/L


@pytest.fixture(scope="module")
def report() -> dict:
    return poems_report(poems_fit())


def test_fit_reproduces_published_vegf(report: dict) -> None:
    vegf = report["vegf"].set_index("day")
    for day, value in PUBLISHED.items():
        assert vegf.loc[day, "predicted"] == pytest.approx(value, rel=0.05)


def test_response_days_are_consistent_with_the_data(report: dict) -> None:
    assert 0 < report["day_below_half"] < 14
    assert 14 < report["day_near_floor"] < 60


def test_identifiability_is_reported(report: dict) -> None:
    table: pd.DataFrame = report["parameters"].set_index("parameter")
    assert table.loc["B0", "determined_by"] == "data"
    for name in ("C0", "rho", "tmax", "alpha", "Fb", "beta"):
        assert table.loc[name, "determined_by"] == "prior"


def test_exposure_intervals_contain_the_estimate(report: dict) -> None:
    exposure = report["exposure"].set_index("parameter")
    for name in ("cmax", "tmax", "auc_0_28"):
        assert exposure.loc[name, "p2.5"] < exposure.loc[name, "estimate"]
        assert exposure.loc[name, "estimate"] < exposure.loc[name, "p97.5"]
