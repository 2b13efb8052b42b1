"""ck_crs (CAR-T kinetics, myeloma kill, M-protein, IL-6 and IFN-gamma) and the bundled
synthetic KQ-2003-like RRMM trial generated from it.

The compiled model is checked against its equations written out again here and integrated
by scipy (Radau, rtol 1e-10, split at tmax); the bundled trial is regenerated and compared
byte for byte, and checked by counts and peak days that involve no model fitting.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import radau_split
from scripts import load_script

from cartpk import exposure, read_dataset, simulate
from cartpk.model import Model, load_model

DATA = Path(__file__).resolve().parents[2] / "data"
METHODS = ["dopri5", "rodas"]
TIMES = np.array([0, 1, 2, 3, 5, 7, 8.5, 10, 12.71, 14, 21, 28, 56, 90, 180, 365.0])
OUTPUTS = ["CART", "IL6", "IFNG", "MPROT"]


@pytest.fixture(scope="module")
def crs() -> Model:
    return load_model("ck_crs")


@pytest.fixture(scope="module")
def gen():
    return load_script(DATA / "make_kq2003_rrmm.py")


def typical(model: Model) -> dict[str, float]:
    return {name: par.value for name, par in model.parameters.items()}


def crs_rhs(before_tmax: bool, par: dict):
    """ck_crs's right-hand side on one side of tmax, written out from the model file's header.

    States E, M (CAR-T, copies/ug), P (clone burden), MP (M-protein, g/L), IL6, IFNG (pg/mL).
    """

    def rhs(t, y):
        E, M, P, MP, IL6, IFNG = y
        if before_tmax:
            dE, dM = par["rho"] * E, 0.0
        else:
            dE = -par["alpha"] * E
            dM = par["Fb"] * (par["alpha"] - par["beta"]) * E - par["beta"] * M
        S = (E + M) * P
        dP = par["kgrow"] * P - par["kkill"] * (E + M) * P
        dMP = par["kout_mp"] * (par["MPnorm"] + (par["MP0"] - par["MPnorm"]) * P - MP)
        il6_prod = par["IL6_base"] * (1 + par["emax_il6"] * S / (par["s50_il6"] + S))
        ifng_prod = par["IFNG_base"] * (1 + par["emax_ifng"] * S / (par["s50_ifng"] + S))
        return [dE, dM, dP, dMP, par["kout_il6"] * (il6_prod - IL6),
                par["kout_ifng"] * (ifng_prod - IFNG)]  # fmt: skip

    return rhs


@functools.cache
def crs_radau(items: tuple[tuple[str, float], ...], dose: float, times: tuple) -> np.ndarray:
    """(CART, IL6, IFNG, MPROT) at sorted ``times`` by scipy Radau, rtol 1e-10, split at tmax."""
    par = dict(items)
    y0 = [par["C0"] * (dose / 1e6) ** par["dose_exp"], 0.0, 1.0, par["MP0"],
          par["IL6_base"], par["IFNG_base"]]  # fmt: skip
    y = radau_split(lambda before: crs_rhs(before, par), y0, par["tmax"], times, 1e-16)
    return np.column_stack([y[0] + y[1], y[4], y[5], y[3]])


# --- the model against scipy --------------------------------------------------------------


def test_contract(crs: Model) -> None:
    assert crs.outputs == tuple(OUTPUTS)
    assert crs.states == ("E", "M", "P", "MP", "IL6", "IFNG")
    assert crs.breakpoints == ("tmax",)
    assert crs.solver == "auto"
    assert crs.dose_state == "E"
    assert crs.output_units == {"CART": "copies/ug", "IL6": "pg/mL", "IFNG": "pg/mL",
                                "MPROT": "g/L"}  # fmt: skip
    par = crs.parameters
    assert par["kout_mp"].value == pytest.approx(np.log(2) / 21, rel=1e-12)
    assert par["kout_il6"].value == pytest.approx(np.log(2) / (5 / 24), rel=1e-12)
    assert par["kout_ifng"].value == pytest.approx(np.log(2) / (30 / 1440), rel=1e-12)
    assert par["dose_exp"].value == 0.5 and par["dose_exp"].fixed
    with_omega = {name for name, p in par.items() if p.omega}
    assert with_omega == {"C0", "rho", "tmax", "Fb", "alpha", "beta", "kkill", "MP0",
                          "emax_il6", "emax_ifng"}  # fmt: skip


def test_values_are_the_bcma_kq2003_set(crs: Model) -> None:
    """The CAR-T part of the file is the bcma-kq2003 set: applying the set changes nothing."""
    with_set = load_model("ck_crs", parameters="bcma-kq2003")
    for name, par in crs.parameters.items():
        assert with_set.parameters[name].value == par.value, name
        assert with_set.parameters[name].omega == par.omega, name
    assert with_set.correlations == crs.correlations


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dose", [1e6, 2e6, 3e6])
def test_matches_scipy_radau(crs: Model, method: str, dose: float) -> None:
    change = {} if dose != 3e6 else {"kkill": 5e-4, "emax_il6": 300.0, "rho": 0.5, "tmax": 15.0}
    par = typical(crs) | change
    frame = simulate(crs, change | {"DOSE": dose}, TIMES, method=method, rtol=1e-10, atol=1e-12)
    expected = crs_radau(tuple(par.items()), dose, tuple(TIMES))
    np.testing.assert_allclose(frame[OUTPUTS].to_numpy(), expected, rtol=1e-5)


# --- properties at typical values ---------------------------------------------------------


@pytest.mark.parametrize("dose", [1e6, 2e6, 3e6])
def test_cytokines_peak_before_the_car_t_peak(crs: Model, dose: float) -> None:
    tmax = crs.parameters["tmax"].value
    cart = exposure(crs, {"DOSE": dose}, output="CART", interval=(0, 60))
    assert cart["tmax"].iloc[0] == pytest.approx(tmax, abs=1e-6)
    for output, low, high in [("IL6", 100.0, 1000.0), ("IFNG", 30.0, 300.0)]:
        peak = exposure(crs, {"DOSE": dose}, output=output, interval=(0, 60))
        assert 5.0 < peak["tmax"].iloc[0] < tmax - 2.0, output
        assert low < peak["cmax"].iloc[0] < high, output  # a few hundred pg/mL IL-6


def test_typical_il6_peak(crs: Model) -> None:
    """The values the header quotes: about 300 pg/mL on day 8.8 at 1e6 cells/kg."""
    peak = exposure(crs, None, output="IL6", interval=(0, 28))
    assert peak["cmax"].iloc[0] == pytest.approx(300.0, rel=0.05)
    assert peak["tmax"].iloc[0] == pytest.approx(8.8, abs=0.2)


def test_cytokine_steady_state_is_the_baseline(crs: Model) -> None:
    par = typical(crs)
    # Without stimulus (no CAR-T) every marker is at rest at its baseline.
    y = np.array([0.0, 0.0, 1.0, par["MP0"], par["IL6_base"], par["IFNG_base"]])
    dydt = np.full(6, np.nan)
    crs.kernels.rhs(3.0, y, crs.pack(None)[0], dydt)
    np.testing.assert_array_equal(dydt, np.zeros(6))
    frame = simulate(crs, None, [0.0, 365.0], rtol=1e-10, atol=1e-12)
    assert frame["IL6"].iloc[0] == par["IL6_base"]
    assert frame["IFNG"].iloc[0] == par["IFNG_base"]
    assert frame["IL6"].iloc[1] == pytest.approx(par["IL6_base"], rel=1e-3)
    assert frame["IFNG"].iloc[1] == pytest.approx(par["IFNG_base"], rel=1e-3)
    # A CAR-T level of at most C0 e^(rho tmax) = 0.0039 copies/ug (C0 at its lower bound)
    # raises IL-6 by at most emax_il6 S / s50_il6 = 4.3e-4 of its baseline.
    low = simulate(crs, {"C0": 1e-6}, TIMES, rtol=1e-10, atol=1e-14)
    bound = par["emax_il6"] * 1e-6 * np.exp(par["rho"] * par["tmax"]) / par["s50_il6"]
    assert bound < 5e-4
    assert ((low["IL6"] / par["IL6_base"] - 1).between(0, bound)).all()


@pytest.mark.parametrize("kkill", [2e-4, 1e-1])
def test_m_protein_falls_at_most_at_the_igg_rate(crs: Model, kkill: float) -> None:
    par = typical(crs)
    k = par["kout_mp"]
    grid = np.linspace(0.0, 180.0, 1801)
    mp = simulate(crs, {"kkill": kkill}, grid, rtol=1e-10, atol=1e-12)["MPROT"].to_numpy()
    slope = np.diff(np.log(mp)) / np.diff(grid)
    assert slope.min() >= -k * (1 + 1e-6)
    # The fall after a complete kill: the floor plus the excess decaying at the IgG rate.
    floor = par["MPnorm"] + (par["MP0"] - par["MPnorm"]) * np.exp(-k * grid)
    assert (mp >= floor * (1 - 1e-7)).all()
    if kkill >= 1e-1:  # the clone is gone within days: MPROT follows that bound closely
        np.testing.assert_allclose(mp[grid >= 28], floor[grid >= 28], rtol=0.05)


# --- the generator's truth ---------------------------------------------------------------


def test_generator_cmax_is_the_model_peak(crs: Model, gen) -> None:
    params = gen.draw_parameters(crs, np.random.default_rng(7), 5)
    doses = np.array([1e6, 2e6, 3e6, 1e6, 3e6])
    closed = gen.true_cmax(params, doses, crs.parameters["dose_exp"].value).to_numpy()
    peak = exposure(crs, params.assign(DOSE=doses), output="CART", interval=(0, 365))
    np.testing.assert_allclose(peak["cmax"], closed, rtol=1e-6)


def test_generator_draws_follow_the_model_file(crs: Model, gen) -> None:
    params = gen.draw_parameters(crs, np.random.default_rng(3), 40_000)
    names = ["C0", "rho", "tmax", "kkill", "MP0", "emax_il6", "emax_ifng"]
    eta = np.log(params[names] / pd.Series(typical(crs))[names])
    sd = eta.std()
    for name in eta:
        assert sd[name] == pytest.approx(crs.parameters[name].omega, rel=0.03), name
    assert eta["rho"].corr(eta["tmax"]) == pytest.approx(-0.900, abs=0.01)
    assert eta["C0"].corr(eta["rho"]) == pytest.approx(-0.4225, abs=0.02)


def test_expected_outcome_rates(gen) -> None:
    """In expectation over 100,000 virtual patients with the trial's dose mix: CRS in nearly
    all, mostly grade 1-2, grade >= 3 in about a tenth (7/54 = 13 % in the CD19 + BCMA
    co-infusion series, Front Immunol 2022, PMC9092941), response in 80-95 %."""
    rates = gen.expected_rates()
    assert rates["crs_ge1"] >= 0.90
    assert 0.08 <= rates["crs_ge3"] <= 0.13
    assert rates["crs_grade1_2"] > 0.75
    assert 0.80 <= rates["response"] <= 0.95
    assert rates["crs_ge1"] > rates["crs_ge2"] > rates["crs_ge3"] > rates["crs_ge4"] > 0


# --- the bundled trial ---------------------------------------------------------------------


def test_regenerating_gives_the_bundled_files(gen, tmp_path: Path) -> None:
    for path in gen.write(tmp_path):
        assert path.read_bytes() == (DATA / path.name).read_bytes(), path.name


def test_bundled_trial_design() -> None:
    ds = read_dataset(DATA / "kq2003_rrmm.csv")
    assert len(ds.ids) == 29
    covariates = ds.subject_covariates()
    assert covariates["DOSE"].value_counts().to_dict() == {1e6: 6, 2e6: 10, 3e6: 13}
    doses = ds.doses()
    assert len(doses) == 29 and (doses["TIME"] == 0).all()
    assert (doses.set_index("ID")["AMT"] == covariates["DOSE"]).all()
    days = {
        "CART": [0, 1, 4, 7, 10, 14, 21, 28, 56, 90, 180, 365],
        "IL6": [0, 1, 2, 3, 4, 5, 7, 10, 14, 21, 28],
        "IFNG": [0, 1, 2, 3, 4, 5, 7, 10, 14, 21, 28],
        "MPROT": [0, 14, 28, 56, 90, 180],
    }
    lloq = {"CART": 5.0, "IL6": 1.5, "IFNG": 2.0, "MPROT": 1.0}
    for analyte, grid in days.items():
        obs = ds.observations(analyte)
        assert all(g["TIME"].tolist() == grid for _, g in obs.groupby("ID")), analyte
        assert (obs["LLOQ"] == lloq[analyte]).all()
        assert (obs.loc[obs["CENS"] == 1, "DV"] == lloq[analyte]).all()
        assert (obs.loc[obs["CENS"] == 0, "DV"] >= lloq[analyte]).all()
    assert ds.observations("CART")["CENS"].mean() < 0.1
    # Clone cleared in nearly everyone: M-protein at day 90 below a quarter of baseline.
    mp = ds.observations("MPROT").pivot(index="ID", columns="TIME", values="DV")
    assert (mp[90.0] < 0.25 * mp[0.0]).mean() >= 0.9


def observed_peak_day(obs: pd.DataFrame) -> pd.Series:
    return obs.loc[obs.groupby("ID")["DV"].idxmax()].set_index("ID")["TIME"]


def test_il6_peaks_before_car_t_in_the_bundled_trial() -> None:
    """Observed peak days, no model involved: IL-6 peaks before CAR-T in 28 of 29 patients
    (IFN-gamma in all 29); the median IL-6 peak day is 7, the median CAR-T peak day 14."""
    ds = read_dataset(DATA / "kq2003_rrmm.csv")
    cart = observed_peak_day(ds.observations("CART"))
    il6 = observed_peak_day(ds.observations("IL6"))
    ifng = observed_peak_day(ds.observations("IFNG"))
    assert (il6 < cart).sum() == 28
    assert (ifng < cart).sum() == 29
    assert il6.median() == 7.0 and cart.median() == 14.0


def test_bundled_outcomes() -> None:
    out = pd.read_csv(DATA / "kq2003_rrmm_outcomes.csv")
    trial = pd.read_csv(DATA / "kq2003_rrmm.csv")
    assert list(out.columns) == ["ID", "DOSE", "CRS_GRADE", "CRS_GE2", "CRS_GE3", "RESPONSE",
                                 "DLT"]  # fmt: skip
    assert out["ID"].tolist() == list(range(1, 30))
    assert (out.set_index("ID")["DOSE"] == trial.groupby("ID")["DOSE"].first()).all()
    assert out["CRS_GRADE"].between(0, 4).all()
    assert (out["CRS_GE2"] == (out["CRS_GRADE"] >= 2)).all()
    assert (out["CRS_GE3"] == (out["CRS_GRADE"] >= 3)).all()
    assert (out["DLT"] == out["CRS_GE3"]).all()
    # This sample of 29 (the numbers data/README.md gives): CRS in 27 (93 %), grade >= 3 in
    # 6 (21 %), response in 26 (90 %).
    assert (out["CRS_GRADE"] >= 1).sum() == 27
    assert out["CRS_GE3"].sum() == 6
    assert out["RESPONSE"].sum() == 26
