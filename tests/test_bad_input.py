"""Bad input gets one clear error; odd-but-valid input (NONMEM files) is read unchanged.

Issue 12 ("No silent wrong answers"). ``CASES`` is a table, one row per bad input, in the
spirit of PKNCA's error-class tests: what is called, the exception class and the message it
must carry (the column, rows, argument and what would be right). The tests below it check
content: estimates, notes, design columns, never only that nothing crashed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import stein_level

from cartpk.data import read_dataset
from cartpk.errors import DataError, FitError
from cartpk.individual import FitWarning, fit
from cartpk.population import build_design, fit_population
from cartpk.solve import simulate

DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90], dtype=float)
TRUTH = {"C0": 6.15, "rho": 0.85, "tmax": 10.0, "Fb": 0.01, "alpha": 0.2, "beta": 0.004}


def subject(
    id_: int = 1, dose: float = 3e6, dose_time: float | None = 0.0, noise: float = 0.0, seed=1
) -> pd.DataFrame:
    """One ck_stein subject infused ``dose`` cells/kg (dose_exp 1), a dose record at
    ``dose_time`` (None: none) before the observations."""
    rng = np.random.default_rng(seed)
    dv = stein_level(DAYS, *TRUTH.values()) * dose / 1e6 * np.exp(rng.normal(0, noise, DAYS.size))
    obs = pd.DataFrame({"ID": id_, "TIME": DAYS, "DV": dv, "EVID": 0, "AMT": np.nan})
    if dose_time is None:
        return obs
    record = pd.DataFrame(
        {"ID": [id_], "TIME": [dose_time], "DV": [np.nan], "EVID": [1], "AMT": [dose]}
    )
    return pd.concat([record, obs], ignore_index=True)


def trial(n: int = 6) -> pd.DataFrame:
    return pd.concat([subject(i, 1e6 * (1 + i % 3), noise=0.2, seed=i) for i in range(1, n + 1)])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_dose_column(frame: pd.DataFrame, dose: float) -> pd.DataFrame:
    return frame.assign(DOSE=dose)


def big_cell(tmp_path: Path) -> Path:
    return write(tmp_path, "big.csv", "ID,TIME,DV\n1,0," + "x" * 50_000_000 + "\n1,1,5\n")


ONE = subject()
QUICK = {"standard_errors": False}

# (case, call(tmp_path), exception class, regex the message must match)
CASES = [
    # item 1: the first infusion defines time 0; DOSE must agree with AMT
    (
        "dose record at TIME -1",
        lambda tmp: fit("ck_stein", subject(dose_time=-1.0), **QUICK),
        DataError,
        r"column TIME: the first dose record \(EVID=1 or 4\) is not at TIME 0 \(ID 1 at TIME -1\)"
        r".*subtract each subject's infusion time.*\(row 1\)",
    ),
    (
        "time origin not at the infusion (first dose at TIME 7)",
        lambda tmp: read_dataset(subject(dose_time=7.0)),
        DataError,
        r"first dose record \(EVID=1 or 4\) is not at TIME 0 \(ID 1 at TIME 7\)",
    ),
    (
        "DOSE column contradicting AMT",
        lambda tmp: fit("ck_stein", with_dose_column(ONE, 1e6), **QUICK),
        DataError,
        r"column DOSE: contradicts the AMT infused at TIME 0 \(ID 1: DOSE 1e\+06, AMT 3e\+06\)",
    ),
    # item 3: non-finite DV, AMT, covariates
    (
        "DV = 1e400 (inf) in a CSV",
        lambda tmp: fit("ck_stein", write(tmp, "inf.csv", "ID,TIME,DV\n1,0,5\n1,1,1e400\n")),
        DataError,
        r"column DV: value is not finite .*\(row 2\)",
    ),
    (
        "AMT = inf",
        lambda tmp: read_dataset(ONE.assign(AMT=ONE["AMT"].where(ONE["EVID"] == 0, np.inf))),
        DataError,
        r"column AMT: value is not finite .*\(row 1\)",
    ),
    (
        "covariate WT = -inf",
        lambda tmp: read_dataset(ONE.assign(WT=[70.0] * 5 + [-np.inf] + [70.0] * 5)),
        DataError,
        r"column WT: value is not finite .*\(row 6\)",
    ),
    # item 7: solver settings validated as simulate does
    (
        "fit rtol=-1",
        lambda tmp: fit("ck_stein", ONE, rtol=-1),
        ValueError,
        r"rtol -1: expected a number in \[1e-14, 1\)",
    ),
    (
        "fit atol=0",
        lambda tmp: fit("ck_stein", ONE, atol=0.0),
        ValueError,
        r"atol 0.0: expected a positive finite number",
    ),
    (
        "fit max_steps=0",
        lambda tmp: fit("ck_stein", ONE, max_steps=0),
        ValueError,
        r"max_steps 0: expected a positive integer",
    ),
    (
        "fit_population rtol=-1",
        lambda tmp: fit_population("ck_stein", trial(), rtol=-1),
        ValueError,
        r"rtol -1: expected a number in \[1e-14, 1\)",
    ),
    # seeds, starts, importance-sampling draws
    (
        "fit seed=None",
        lambda tmp: fit("ck_stein", ONE, seed=None),
        FitError,
        r"seed None: expected a non-negative integer",
    ),
    (
        "fit seed=-1",
        lambda tmp: fit("ck_stein", ONE, seed=-1),
        FitError,
        r"seed -1: expected an integer >= 0",
    ),
    (
        "fit seed=1.5",
        lambda tmp: fit("ck_stein", ONE, seed=1.5),
        FitError,
        r"seed 1.5: expected an integer >= 0",
    ),
    (
        "fit n_starts=0",
        lambda tmp: fit("ck_stein", ONE, n_starts=0),
        FitError,
        r"n_starts 0: expected an integer >= 1",
    ),
    (
        "fit n_starts=-3",
        lambda tmp: fit("ck_stein", ONE, n_starts=-3),
        FitError,
        r"n_starts -3: expected an integer >= 1",
    ),
    (
        "fit_population seed=None",
        lambda tmp: fit_population("ck_stein", trial(), seed=None),
        FitError,
        r"seed None: expected a non-negative integer",
    ),
    (
        "fit_population n_is=0",
        lambda tmp: fit_population("ck_stein", trial(), n_is=0),
        FitError,
        r"n_is 0: expected an integer >= 1",
    ),
    (
        "fit_population omega start 0",
        lambda tmp: fit_population("ck_stein", trial(), params={"omega_C0": 0.0}),
        FitError,
        r"params omega_C0 = 0.0: a start SD must be a number > 0",
    ),
    # item 10: numeric DVID without a mapping names the way out
    (
        "numeric DVID without dvid=",
        lambda tmp: fit("ck_stein", ONE.assign(DVID=1), **QUICK),
        DataError,
        r"the model has no output for 1 \(its outputs: CART\); name each analyte's output "
        r"with dvid=, e.g. dvid=\{'1': 'CART'\}",
    ),
    # item 12: analytes=
    (
        "analytes naming an analyte the data lack",
        lambda tmp: fit("ck_stein", ONE, analytes=["VEGF"], **QUICK),
        DataError,
        r"analytes: 'VEGF' not observed in the data \(the data have: CART\)",
    ),
    # item 15: the data reader's messages
    (
        "a directory given as data",
        lambda tmp: read_dataset(tmp),
        DataError,
        r"is a directory, not a CSV file",
    ),
    (
        "a duplicate TIME column",
        lambda tmp: read_dataset(write(tmp, "dup.csv", "ID,TIME,DV,TIME\n1,0,5,0\n1,1,6,2\n")),
        DataError,
        r"columns TIME appear more than once",
    ),
    (
        "a row with an extra field",
        lambda tmp: read_dataset(write(tmp, "extra.csv", "ID,TIME,DV\n1,0,5\n1,1,6,7\n1,2,8\n")),
        DataError,
        r"line 3 has 4 fields but the header has 3 \(an extra field",
    ),
    (
        "an extra field on the first data row (pandas would take ID as the index)",
        lambda tmp: read_dataset(write(tmp, "extra1.csv", "ID,TIME,DV\n1,0,5,9\n1,1,6\n")),
        DataError,
        r"line 2 has 4 fields but the header has 3",
    ),
    (
        "a 50 MB cell",
        lambda tmp: read_dataset(big_cell(tmp)),
        DataError,
        r"column DV: not a number \(found 'xxx+\.\.\. \(50000002 characters\)\) \(row 1\)$",
    ),
    (
        "an id not in data with text IDs",
        lambda tmp: fit("ck_stein", pd.concat([ONE.assign(ID="P01"), ONE.assign(ID="P02")]), id=1),
        FitError,
        r"id 1 is not in the data \(its IDs: 'P01', 'P02'\)",
    ),
    # item 16: simulate
    (
        "simulate a negative DOSE",
        lambda tmp: simulate("ck_stein", {"DOSE": -1e6}, [0.0, 1.0]),
        ValueError,
        r"subject ID 1: DOSE = -1e\+06; a dose must be a positive number of CAR-T cells/kg",
    ),
    (
        "simulate a time before the infusion",
        lambda tmp: simulate("ck_stein", None, [-1.0, 0.0, 1.0]),
        ValueError,
        r"times: entry 0 is -1 days, before the infusion; times must be >= 0",
    ),
]


@pytest.mark.parametrize(
    ("call", "kind", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_with_one_clear_message(tmp_path, call, kind, pattern) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        with pytest.raises(kind) as caught:
            call(tmp_path)
    message = str(caught.value)
    assert len(message) < 600, message[:600]
    assert "\n" not in message
    import re

    assert re.search(pattern, message), message


# --- what comes back is right ---------------------------------------------------------------


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, FitWarning)]


def test_dose_at_time_zero_sets_the_dose() -> None:
    """Item 1: AMT 3e6 at TIME 0, no DOSE column: C0 (for 1e6 cells/kg) is 6.15, not 18.45."""
    result = fit("ck_stein", ONE, error={"CART": ("log", {"sigma": 0.2})}, **QUICK)
    assert result.covariates["DOSE"] == 3e6
    assert result.estimates["C0"] == pytest.approx(TRUTH["C0"], rel=1e-4)


NONMEM = """ID,TIME,DV,DVID,EVID,AMT,MDV,WT
1,0,.,.,1,3000000,1,70
{rows}
"""


def test_nonmem_file_with_dots_and_numeric_dvid(tmp_path) -> None:
    """Items 9 and 10: "." wherever a column does not apply, DVID 1 mapped to CART; the fit
    equals the fit of the same data written the cartpk way."""
    rows = "\n".join(
        f"1,{t:g},{y!r},1,0,.,0,{'.' if k == 3 else 70}" for k, (t, y) in enumerate(
            zip(DAYS, ONE["DV"].iloc[1:], strict=True)
        )
    )  # fmt: skip
    path = write(tmp_path, "nonmem.csv", NONMEM.format(rows=rows))
    ds = read_dataset(path, dvid={1: "CART"})
    assert ds.analytes == ("CART",)
    assert ds.frame["WT"].dtype == np.float64 and np.isnan(ds.frame["WT"].iloc[4])
    assert np.isnan(ds.frame["DV"].iloc[0]) and ds.frame["AMT"].iloc[0] == 3e6
    error = {"CART": ("log", {"sigma": 0.2})}
    mapped = fit("ck_stein", path, dvid={1: "CART"}, error=error, **QUICK)
    plain = fit("ck_stein", ONE, error=error, **QUICK)
    for name in TRUTH:
        assert mapped.estimates[name] == pytest.approx(plain.estimates[name], rel=1e-9)


def test_text_analyte_mapped_to_an_output_names_the_error_parameter() -> None:
    """Item 10: an analyte label such as IL-6 is mapped to an output; error parameters are
    named after the output."""
    result = fit("ck_stein", ONE.assign(ANALYTE="IL-6"), dvid={"IL-6": "CART"}, **QUICK)
    assert "CART_sigma" in result.estimates
    assert set(result.observations["ANALYTE"]) == {"CART"}


def test_analytes_selects_a_subset() -> None:
    """Item 12: ck_stein has no VEGF output; analytes=["CART"] fits the CART rows only."""
    vegf = ONE[ONE["EVID"] == 0].assign(ANALYTE="VEGF", DV=100.0)
    both = pd.concat([ONE.assign(ANALYTE="CART"), vegf], ignore_index=True)
    error = {"CART": ("log", {"sigma": 0.2})}
    result = fit("ck_stein", both, analytes=["CART"], error=error, **QUICK)
    assert len(result.observations) == DAYS.size
    assert result.estimates["C0"] == pytest.approx(TRUTH["C0"], rel=1e-4)
    design = build_design(
        pytest.importorskip("cartpk").load_model("ck_stein"),
        read_dataset(pd.concat([both, both.assign(ID=2)])),
        ["C0"], None, None, "diagonal", None, ["CART"],
    )  # fmt: skip
    assert set(design.obs.analyte) == {"CART"}


def test_dose_covariate_derived_from_amt() -> None:
    """Item 11: covariates={"C0": ["DOSE"]} with no DOSE column: DOSE is the AMT at TIME 0."""
    from cartpk.model import load_model

    data = trial()
    assert "DOSE" not in data
    design = build_design(
        load_model("ck_stein"), read_dataset(data), ["C0"], {"C0": ["DOSE"]}, None,
        "diagonal", None,
    )  # fmt: skip
    (column,) = design.columns
    doses = np.array([1e6 * (1 + i % 3) for i in range(1, 7)])
    assert column.label == "C0~DOSE" and column.reference == 2e6
    np.testing.assert_allclose(column.values, np.log(doses / 2e6))


def test_time_varying_covariate_is_said_to_be_reduced_to_baseline() -> None:
    """Item 5: DOSE changing over time (no dose records): the fit says the baseline is used."""
    data = subject(dose_time=None).assign(DOSE=[3e6] * 5 + [1e6] * 5)
    result, notes = quiet(fit, "ck_stein", data, **QUICK)
    assert result.covariates["DOSE"] == 3e6
    assert any(
        "covariate DOSE changes over time within IDs [1]" in n and "baseline" in n for n in notes
    ), notes


def test_population_notes_pre_dose_observations_and_time_varying_covariates() -> None:
    """Items 5 and 6: fit_population says what fit says."""
    data = trial()
    early = pd.DataFrame({"ID": [2], "TIME": [-3.0], "DV": [1.0], "EVID": [0], "AMT": [np.nan]})
    data = pd.concat([data, early], ignore_index=True)
    data["WT"] = 70.0
    data.loc[(data["ID"] == 4) & (data["TIME"] > 20), "WT"] = 60.0
    pop, notes = quiet(
        fit_population, "ck_stein", data, random=["C0"], covariates={"C0": ["WT"]},
        n_iter=(10, 5), n_is=50, seed=1,
    )  # fmt: skip
    expected = [
        "1 observations before TIME 0 not used (IDs [2]; TIME 0 is the infusion)",
        "covariate WT changes over time within IDs [4]: time-varying covariates are not "
        "supported, each subject's baseline (first non-missing value) is used",
    ]
    for note in expected:
        assert note in pop.notes and note in notes
        assert note in pop.summary()


def test_collapsing_between_subject_sd_is_reported_not_a_crash() -> None:
    """Item 4: no variability in alpha, a random effect on it: its SD collapses; SAEM keeps
    it at a floor and reports it as fixed without an SE, in notes and summary()."""
    rng = np.random.default_rng(3)
    days = DAYS[1:-1]
    frames = []
    for i in range(1, 13):
        c0, rho = 6 * np.exp(rng.normal(0, 0.5)), 0.85 * np.exp(rng.normal(0, 0.2))
        dv = stein_level(days, c0, rho, 10.0, 0.01, 0.2, 0.004) * np.exp(
            rng.normal(0, 0.1, days.size)
        )
        frames.append(pd.DataFrame({"ID": i, "TIME": days, "DV": dv}))
    pop, _ = quiet(
        fit_population, "ck_stein", pd.concat(frames), random=["C0", "rho", "alpha"],
        n_iter=(100, 300), n_is=100, seed=1,
    )  # fmt: skip
    table = pop.omega_table.set_index("parameter")
    assert table.loc["alpha", "estimate"] < 0.01
    assert table.loc["alpha", "fixed"] and np.isnan(table.loc["alpha", "se"])
    assert not table.loc["C0", "fixed"] and table.loc["C0", "se"] > 0
    note = [n for n in pop.notes if "between-subject SD of alpha collapsed" in n]
    assert len(note) == 1 and "Refit without alpha in random" in note[0]
    assert note[0] in pop.summary()


def test_no_variability_at_all_ends_with_notes_not_a_cholesky_error() -> None:
    """Item 4: six subjects sharing every parameter (only the dose differs, and dose_exp 1
    accounts for it): with the defaults, SAEM used to raise "Matrix is not positive
    definite"; now every SD is floored and said to have collapsed, and beta, which data to
    day 90 do not determine, is held at its lower bound and said to be there (it used to
    leave its bounds, 5e-13 < 1e-6)."""
    pop, _ = quiet(fit_population, "ck_stein", trial(), seed=1)
    for name in ("C0", "rho", "alpha"):
        assert any(f"between-subject SD of {name} collapsed" in n for n in pop.notes)
    beta = pop.fixed_effects.set_index("parameter").loc["beta", "estimate"]
    assert 1e-6 <= beta < 1.1e-6
    assert any("typical value of beta is at its lower bound 1e-06" in n for n in pop.notes)
    effects = pop.fixed_effects.set_index("parameter")
    assert effects.loc["C0", "estimate"] == pytest.approx(TRUTH["C0"], rel=0.1)


def test_omega_floor_keeps_a_cholesky_factor() -> None:
    """Item 4: an SD of exactly 0 (or a block that lost definiteness) is floored."""
    from cartpk.population import OMEGA_FLOOR, floored

    random = np.array([True, True, False])
    diagonal = floored(np.diag([0.25, 0.0, 0.0]), random)
    np.testing.assert_allclose(np.diag(diagonal), [0.25, OMEGA_FLOOR**2, 0.0])
    block = floored(np.array([[0.25, 0.5, 0], [0.5, 1.0, 0], [0, 0, 0]]), random)
    np.linalg.cholesky(block[:2, :2])
    assert block[2, 2] == 0.0


def test_caller_data_are_not_modified() -> None:
    data = subject().assign(DVID=1)
    before = data.copy(deep=True)
    fit("ck_stein", data, dvid={1: "CART"}, **QUICK)
    pd.testing.assert_frame_equal(data, before)
