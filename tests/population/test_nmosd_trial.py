"""The bundled NMOSD-like trial (data/nmosd_trial.csv) and its population fit
(cartpk.demo.nmosd): the generating script gives the files byte for byte, titres are coded
as dilution-step intervals, and the fit recovers the truth.

References: the script's own seeded draws (data/nmosd_truth.csv), the dilution series, and
the truth tabulated in data/README.md. No standard error exists for this fit (the titres
are all interval-censored and the linearised Fisher information uses quantified points
only), so typical values with a random effect are held within 2 approximate SEs of the 12
patients' sample, omega / sqrt(12) on the estimation scale, and the parameters without one
against the truth within a stated band.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scripts import load_script

from cartpk.data import bundled
from cartpk.demo.nmosd import OMEGA, nmosd_checks, nmosd_fit, nmosd_recovery
from cartpk.errors import FitWarning

DATA = Path(bundled("nmosd_trial.csv")).parent


def generator():
    return load_script(DATA / "make_nmosd_trial.py")


def test_script_regenerates_the_bundled_files(tmp_path: Path) -> None:
    for path in generator().write(tmp_path):
        assert path.read_bytes() == (DATA / path.name).read_bytes(), path.name


def test_titres_are_dilution_step_intervals() -> None:
    trial = pd.read_csv(DATA / "nmosd_trial.csv")
    steps = generator().STEPS
    aab = trial[trial["ANALYTE"] == "AAB"]
    assert (aab["CENS"] == 1).all() and len(aab) == 12 * 9
    negative = aab["LIMIT"].isna()
    assert (aab.loc[negative, "DV"] == 10.0).all()  # "negative below 1:10": (0, 10]
    lower = aab.loc[~negative, "LIMIT"].map(steps.index)
    upper = aab.loc[~negative, "DV"].map(steps.index)
    assert (upper == lower + 1).all()  # positive at one step, negative at the next
    assert trial.loc[trial["ANALYTE"] != "AAB", "LIMIT"].isna().all()


def test_cart_persists_beyond_six_months_in_two_of_twelve() -> None:
    """CT103A: CAR-T beyond 6 months in 17 % (2 of 12) of patients."""
    trial = pd.read_csv(DATA / "nmosd_trial.csv")
    late = trial[(trial["ANALYTE"] == "CART") & (trial["TIME"] >= 180)]
    assert (late.groupby("ID")["CENS"].min() == 0).sum() == 2


@pytest.fixture(scope="module")
def fit():
    with pytest.warns(FitWarning, match="no standard errors"):
        return nmosd_fit()


@pytest.mark.slow  # the same fit and checks run in CI in notebooks/autoimmune.ipynb
def test_fit_recovers_the_sampled_patients(fit) -> None:
    table = nmosd_recovery(fit).set_index(["kind", "parameter"])
    for name in ("C0", "rho", "alpha", "B0", "AAB0"):
        row = table.loc[("typical", name)]
        assert abs(np.log(row["estimate"] / row["sample"])) <= 2 * OMEGA[name] / np.sqrt(12), name
    # without a random effect: the kill rate and the LLPC share (titres only), tmax
    for name, band in (("kkill", 0.25), ("f_llpc", 0.25), ("tmax", 0.15)):
        row = table.loc[("typical", name)]
        assert abs(row["ratio"] - 1) <= band, (name, row["ratio"])
    for name in ("C0", "rho", "alpha", "B0", "AAB0"):
        assert 0.6 <= table.loc[("omega", name), "ratio"] <= 1.5, name
    for name in ("CART_sigma", "BCELL_sigma"):
        assert abs(table.loc[("sigma", name), "ratio"] - 1) <= 0.15, name
    assert not fit.omega_table["fixed"].any()  # estimated, even without SEs


@pytest.mark.slow  # as above
def test_aqp4_igg_falls_in_most_patients(fit) -> None:
    """CT103A: AQP4-IgG trending down in 11 of 12 at a median 5.5 months."""
    checks = nmosd_checks(fit)
    assert checks["aab_fell"].sum() >= 10
    assert checks["cart_beyond_6_months"].sum() == 2
