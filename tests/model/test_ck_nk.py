"""ck_nk (allogeneic CAR-NK cells) and the dose unit a model declares.

References: the closed form of ck_nk's header (tests/references.py ``nk_level``: first-order
loss, the optional expansion window and the logistic rejection integrated by hand, infusions
superposed), scipy's Radau at rtol 1e-10 on the right-hand side written out from the model
file (``nk_radau``), and the NK-cell disappearance rate of Zhang et al. 2007 (6.9 %/day,
half-life 10.0 days) that the file takes as its default. The dose-unit checks are held to
the messages the module promises: the column, the rows of the user's table, the way out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from references import NK_PARAMS, nk_level, nk_radau

import cartpk as ck
from cartpk.errors import DataError, ModelError
from cartpk.likelihood import pack_observations

TIGHT = {"rtol": 1e-10, "atol": 1e-14}
DOSE = 1e9  # cells, the file's reference (flat) dose
DAYS = np.array([0.0, 0.5, 1, 2, 3, 5, 7, 10, 12, 14, 16, 18, 21, 28, 35, 42, 56])


@pytest.fixture(scope="module")
def nk() -> ck.Model:
    return ck.load_model("ck_nk")


def values(model: ck.Model, **changes: float) -> dict[str, float]:
    return {name: p.value for name, p in model.parameters.items()} | changes


def kinetic(par: dict[str, float]) -> list[float]:
    return [par[name] for name in NK_PARAMS]


def test_defaults_and_declared_unit(nk: ck.Model) -> None:
    """Zhang 2007's 6.9 %/day (t1/2 10 days), 20 cells/uL after 1e9 cells, flat doses,
    no memory state and a dose link into the blood level."""
    assert nk.parameters["kel"].value == 0.069
    assert np.log(2) / nk.parameters["kel"].value == pytest.approx(10.05, abs=0.01)
    assert nk.dose_unit == "cells" and nk.dose_state == "N"
    assert nk.states == ("N", "IL6") and nk.outputs == ("CARNK", "IL6")
    start = ck.simulate(nk, None, [0.0])
    assert start.loc[0, "CARNK"] == pytest.approx(0.1 * DOSE / 5e6)


def test_single_dose_declines_at_the_stated_half_life(nk: ck.Model) -> None:
    """Rejection off: N(t) = N0 exp(-kel t), half of N0 at ln 2 / kel = 10.05 days, a
    quarter at twice that."""
    half_life = np.log(2) / 0.069
    times = np.concatenate([DAYS, [half_life, 2 * half_life]])
    sim = ck.simulate(nk, {"rej_on": 0.0}, times, **TIGHT).set_index("TIME")["CARNK"]
    n0 = 0.1 * DOSE / 5e6
    np.testing.assert_allclose(sim.to_numpy(), n0 * np.exp(-0.069 * sim.index), rtol=1e-8)
    assert sim[half_life] == pytest.approx(n0 / 2, rel=1e-8)
    assert sim[2 * half_life] == pytest.approx(n0 / 4, rel=1e-8)
    closed = nk_level(sim.index, [(0.0, DOSE)], *kinetic(values(nk, rej_on=0.0)))
    np.testing.assert_allclose(sim.to_numpy(), closed, rtol=1e-8)


@pytest.mark.parametrize(
    "changes",
    [{}, {"kexp": 0.4}, {"t_rej": 5.0, "w_rej": 0.5, "krej": 1.2}, {"kel": 0.2, "t_rej": 30.0}],
    ids=["defaults", "expansion", "early-steep-rejection", "late-rejection"],
)
def test_rejection_against_closed_form_and_radau(nk: ck.Model, changes: dict) -> None:
    """Rejection on (and expansion for a few days): both outputs against scipy Radau at
    rtol 1e-10, CAR-NK also against the closed form."""
    par = values(nk, **changes)
    sim = ck.simulate(nk, changes, DAYS, **TIGHT)
    reference = nk_radau(par, DAYS, DOSE)
    np.testing.assert_allclose(sim["CARNK"], reference[:, 0], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sim["IL6"], reference[:, 1], rtol=1e-7)
    closed = nk_level(DAYS, [(0.0, DOSE)], *kinetic(par))
    np.testing.assert_allclose(sim["CARNK"], closed, rtol=1e-7, atol=1e-14)


def test_rejection_speeds_the_decline_after_its_onset(nk: ck.Model) -> None:
    """Before t_rej the log-slope is about -kel, well after it -(kel + krej)."""
    sim = ck.simulate(nk, None, [0.0, 4.0, 24.0, 28.0], **TIGHT)["CARNK"].to_numpy()
    early = np.log(sim[1] / sim[0]) / 4
    late = np.log(sim[3] / sim[2]) / 4
    assert early == pytest.approx(-0.069, abs=0.002)
    assert late == pytest.approx(-(0.069 + 0.35), abs=0.002)


def troughs(model: ck.Model, params: dict, interval: float, n: int) -> np.ndarray:
    """Levels just before infusions 2..n+1 of n infusions every ``interval`` days."""
    doses = [(k * interval, DOSE) for k in range(1, n)]
    times = np.array([k * interval for k in range(1, n + 1)]) - 1e-9
    sim = ck.simulate(model, params, times, doses=doses, **TIGHT)
    return sim["CARNK"].to_numpy()


@pytest.mark.parametrize("interval", [14.0, 21.0, 28.0])
def test_little_accumulation_at_two_weeks_or_more(nk: ck.Model, interval: float) -> None:
    """Trough before the nth infusion over the trough before the second, for three and four
    infusions: cartpk against the closed-form superposition. With host rejection (the
    defaults) later infusions add almost nothing to the earlier ones (ratio < 1.01); without
    it first-order loss alone accumulates by (1 - q^n) / (1 - q), q = exp(-kel interval),
    at most 1 / (1 - 2^(-14 / 10.05)) = 1.62 at intervals of two weeks or more."""
    for changes in ({}, {"rej_on": 0.0}):
        par = values(nk, **changes)
        found = troughs(nk, changes, interval, 4)
        doses = [(k * interval, DOSE) for k in range(4)]
        times = np.array([k * interval for k in range(1, 5)]) - 1e-9
        closed = nk_level(times, doses, *kinetic(par))
        np.testing.assert_allclose(found, closed, rtol=1e-7)
        ratio = found / found[0]
        if changes:
            q = np.exp(-0.069 * interval)
            np.testing.assert_allclose(ratio, (1 - q ** np.arange(1, 5)) / (1 - q), rtol=1e-7)
            assert ratio[-1] < 1 / (1 - 2 ** (-14 / 10.05))
        else:
            assert ratio[-1] < 1.01


def test_il6_barely_moves(nk: ck.Model) -> None:
    """The weak IL-6 link: the reference infusion raises IL-6 by under 10 % (no CRS)."""
    sim = ck.simulate(nk, None, np.linspace(0, 28, 113))
    assert sim["IL6"].max() < 1.1 * 5.0
    assert sim["IL6"].max() > 5.0 and sim["IL6"].iloc[-1] == pytest.approx(5.0, rel=1e-3)


# --- the dose unit ------------------------------------------------------------------------


def trial(amount: float, **columns) -> pd.DataFrame:
    """Two subjects, a dose record each at TIME 0 of ``amount``, three observations."""
    rows = []
    for subject in (1, 2):
        rows.append({"ID": subject, "TIME": 0.0, "DV": np.nan, "EVID": 1, "AMT": amount})
        for day, level in ((1.0, 18.0), (7.0, 12.0), (14.0, 5.0)):
            rows.append({"ID": subject, "TIME": day, "DV": level, "EVID": 0, "AMT": np.nan})
    frame = pd.DataFrame(rows)
    for name, value in columns.items():
        frame[name] = np.where(frame["EVID"] == 1, value, None)
    return frame


def pack(model: ck.Model, frame: pd.DataFrame) -> None:
    ds = ck.read_dataset(frame, default_analyte=model.outputs[0])
    pack_observations(ds, model, list(ds.ids))


def test_matching_units_pass(nk: ck.Model) -> None:
    stein = ck.load_model("ck_stein")
    pack(nk, trial(1e9))
    pack(nk, trial(1e9, AMTU="cells"))
    pack(nk, trial(2e6, AMTU=" Cells "))  # a stated unit is trusted, whatever the amount
    pack(stein, trial(2e6))
    pack(stein, trial(2e6, AMTU="cells/kg"))
    pack(stein, trial(5e7))  # [1e7, 1e8) is plausible in either unit


@pytest.mark.parametrize(
    ("model", "frame", "pattern"),
    [
        (
            "ck_stein",
            trial(1e9),
            r"column AMT: 1e\+09 is not a plausible dose in 'cells/kg', the unit model "
            r"'ck_stein' declares \(\[dosing\] unit; plausible: 1000 to 1e\+08 cells/kg\) "
            r"\(rows 1, 5\); 1e\+09 looks like a dose in cells\. Convert the doses to "
            r"cells/kg, use a model of the doses' unit, or state the unit in an AMTU column",
        ),
        (
            "ck_nk",
            trial(2e6),
            r"column AMT: 2e\+06 is not a plausible dose in 'cells'.*\(rows 1, 5\); 2e\+06 "
            r"looks like a dose in cells/kg",
        ),
        (
            "ck_nk",
            trial(1e9, AMTU="cells/kg"),
            r"column AMTU: doses in 'cells/kg' \(rows 1, 5\), but model 'ck_nk' takes AMT in "
            r"'cells' \(its \[dosing\] unit\): convert the doses, or use a model that "
            r"declares unit = 'cells/kg'",
        ),
        (
            "ck_stein",
            trial(2e6, AMTU="cells per kg"),
            r"column AMTU: unknown dose unit 'cellsperkg' \(rows 1, 5\); known units: "
            r"cells/kg, cells",
        ),
        ("ck_nk", trial(1e13), r"column AMT: 1e\+13 is not a plausible dose in 'cells'"),
    ],
    ids=["flat-into-per-kg", "per-kg-into-flat", "stated-mismatch", "unknown", "too-large"],
)
def test_unit_mismatch_is_a_clear_error(model: str, frame: pd.DataFrame, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        pack(ck.load_model(model), frame)


def test_a_dose_column_without_dose_records_is_checked() -> None:
    """A DOSE column stands for the AMT at TIME 0 when there is no dose record."""
    frame = trial(1e9)
    frame = frame[frame["EVID"] == 0].assign(DOSE=1e9)
    with pytest.raises(DataError, match=r"column DOSE: 1e\+09 is not a plausible dose in "):
        pack(ck.load_model("ck_stein"), frame)
    pack(ck.load_model("ck_nk"), frame)


def test_fits_refuse_a_unit_mismatch(nk: ck.Model) -> None:
    """The fits raise (an individual fit of every subject too, rather than recording one
    failure per subject), and simulate checks a doses table's AMTU."""
    stein = ck.load_model("ck_stein")
    with pytest.raises(DataError, match=r"column AMT: 1e\+09 is not a plausible dose"):
        ck.fit(stein, trial(1e9), standard_errors=False)
    with pytest.raises(DataError, match=r"column AMT: 1e\+09 is not a plausible dose"):
        ck.fit_population(stein, trial(1e9), random=["C0"], n_iter=(1, 1))
    doses = pd.DataFrame({"TIME": [14.0], "AMT": [2e6], "AMTU": ["cells/kg"]})
    with pytest.raises(DataError, match=r"column AMTU: doses in 'cells/kg' \(row 1\)"):
        ck.simulate(nk, None, [0.0, 21.0], doses=doses)
    ck.simulate(nk, None, [0.0, 21.0], doses=doses.assign(AMT=1e9, AMTU="cells"))


def test_scenarios_refuse_doses_of_the_other_unit(nk: ck.Model) -> None:
    """The scenarios' default doses are cells/kg: given to a flat-dose model they fail."""
    pattern = (
        r"doses: 1e\+06 is not a plausible dose in 'cells'.*\(entries 0, 1, 2\); 1e\+06 "
        r"looks like a dose in cells/kg"
    )
    with pytest.raises(ValueError, match=pattern):
        ck.scenarios(nk, output="CARNK", n=5)
    with pytest.raises(ValueError, match=r"doses: 1e\+09 is not a plausible dose in 'cells/kg'"):
        ck.scenarios("ck_stein", doses=[1e9], n=5)


def test_model_files_declare_a_known_unit(tmp_path) -> None:
    """[dosing] unit must be "cells/kg" or "cells"; without one nothing is checked."""
    text = ck.load_model("ck_stein").text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('unit = "cells/kg"\nstate', 'unit = "mg"\nstate'))
    with pytest.raises(ModelError, match=r"\[dosing\] unit: 'mg' is not one of 'cells/kg', "):
        ck.load_model(bad)
    free = tmp_path / "free.toml"
    free.write_text(text.replace('unit = "cells/kg"\nstate', "state"))
    model = ck.load_model(free)
    assert model.dose_unit is None
    pack(model, trial(1e9))
    assert all(ck.load_model(name).dose_unit for name in ck.list_models())
