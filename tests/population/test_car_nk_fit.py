"""The bundled CAR-NK repeated-infusion trial (data/car_nk_trial.csv) and a population fit
of ck_nk to it: the seeded script gives the files byte for byte, the doses are written row
by row in cells, and SAEM recovers the loss rate and the rejection onset.

References: the script's own draws (data/car_nk_truth.csv) and the truth tabulated in
data/README.md. The loss rate kel and the onset t_rej have random effects, so their
typical values are held within 2 SEs (the fit's fixed_effects table) of the 18 patients'
sample truth (geometric means: both are log-normal); krej, common to all, within 2 SEs of
the file's value. The fit takes about 15 s on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scripts import load_script

import cartpk as ck
from cartpk.data import bundled

DATA = Path(bundled("car_nk_trial.csv")).parent


def generator():
    return load_script(DATA / "make_car_nk_trial.py")


def test_script_regenerates_the_bundled_files(tmp_path: Path) -> None:
    for path in generator().write(tmp_path):
        assert path.read_bytes() == (DATA / path.name).read_bytes(), path.name


def test_three_flat_infusions_weekly_or_fortnightly() -> None:
    trial = pd.read_csv(DATA / "car_nk_trial.csv")
    doses = trial[trial["EVID"] == 1]
    assert (doses["AMT"] == 1e9).all() and (doses["AMTU"] == "cells").all()
    days = doses.groupby("ID")["TIME"].apply(tuple)
    assert days.value_counts().to_dict() == {(0.0, 7.0, 14.0): 9, (0.0, 14.0, 28.0): 9}
    carnk = trial[trial["ANALYTE"] == "CARNK"]
    assert (carnk.loc[carnk["CENS"] == 1, "DV"] == 0.05).all()
    assert carnk["CENS"].any() and not carnk.loc[carnk["TIME"] <= 21, "CENS"].any()
    il6 = trial[trial["ANALYTE"] == "IL6"]
    assert il6["DV"].median() == pytest.approx(5.0, rel=0.1)  # IL-6 barely moves


@pytest.fixture(scope="module")
def fit() -> ck.PopulationFit:
    # CAR-NK only: the IL-6 parameters, which it does not inform, are held at the file's.
    return ck.fit_population(
        "ck_nk",
        bundled("car_nk_trial.csv"),
        random=["f_blood", "kel", "t_rej"],
        analytes="CARNK",
        params={
            "IL6_base": {"value": 5.0, "vary": False},
            "emax_il6": {"value": 0.3, "vary": False},
        },
        seed=1,
        progress=False,
    )


@pytest.mark.slow  # the same fit and recovery checks run in CI in notebooks/car_nk.ipynb
def test_fit_recovers_the_loss_rate_and_the_rejection_onset(fit: ck.PopulationFit) -> None:
    truth = pd.read_csv(DATA / "car_nk_truth.csv")
    table = fit.fixed_effects.set_index("parameter")
    for name in ("kel", "t_rej"):
        sample = float(np.exp(np.log(truth[name]).mean()))
        row = table.loc[name]
        assert abs(row["estimate"] - sample) <= 2 * row["se"], (name, row["estimate"], sample)
        assert row["rse_pct"] < 25, name
    krej = table.loc["krej"]
    assert abs(krej["estimate"] - 0.35) <= 2 * krej["se"]
    sigma = fit.sigma.set_index("parameter").loc["CARNK_sigma"]
    assert abs(sigma["estimate"] - 0.25) <= 2 * sigma["se"]
    omega = fit.omega_table.set_index("parameter")["estimate"]
    model = ck.load_model("ck_nk")
    for name in ("f_blood", "kel", "t_rej"):
        assert 0.5 <= omega[name] / model.parameters[name].omega <= 1.5, name
