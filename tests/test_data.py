"""Dataset reader: every validation path names column, rows and problem; bundled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scripts import load_script

from cartpk.data import as_dataset, read_dataset
from cartpk.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "data"


def table(**changes: list) -> pd.DataFrame:
    """A valid two-subject table; keyword arguments replace or add columns."""
    base = {
        "ID": [1, 1, 1, 2, 2, 2],
        "TIME": [0.0, 7.0, 28.0, 0.0, 7.0, 28.0],
        "DV": [5.0, 900.0, 40.0, 6.0, 1200.0, 55.0],
    }
    base.update(changes)
    return pd.DataFrame(base)


def test_reads_valid_table_with_defaults() -> None:
    ds = read_dataset(table(WT=[70, 70, 70, 80, 80, 80]))
    assert list(ds.ids) == [1, 2]
    assert ds.analytes == ("CART",)
    assert ds.covariates == ("WT",)
    assert {"ID", "TIME", "DV", "ANALYTE", "LLOQ", "CENS", "EVID", "AMT", "MDV", "ROW"} <= set(
        ds.frame.columns
    )
    assert ds.subject_covariates()["WT"].tolist() == [70, 80]


def test_column_names_case_insensitive_and_aliases() -> None:
    frame = pd.DataFrame(
        {
            "id": [1, 1],
            "Time": [0, 1],
            "dv": [1.0, 10.0],
            "dvid": ["VEGF", "VEGF"],
            "blq": [0, 1],
            "lloq": [5.0, 5.0],
        }
    )
    ds = read_dataset(frame)
    assert ds.analytes == ("VEGF",)
    assert ds.frame["CENS"].tolist() == [0, 1]


def test_caller_frame_not_modified() -> None:
    frame = table(TIME=[28.0, 7.0, 0.0, 0.0, 7.0, 28.0])
    before = frame.copy(deep=True)
    read_dataset(frame)
    pd.testing.assert_frame_equal(frame, before)


def test_sorted_by_id_then_time_with_original_rows() -> None:
    ds = read_dataset(table(TIME=[28.0, 7.0, 0.0, 0.0, 7.0, 28.0]))
    assert ds.frame["TIME"].tolist()[:3] == [0.0, 7.0, 28.0]
    assert ds.frame["ROW"].tolist()[:3] == [3, 2, 1]


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (table().drop(columns="DV"), r"missing required column DV"),
        (table().drop(columns=["TIME", "DV"]), r"missing required columns TIME, DV"),
        (table(TIME=[0, "x", 28, 0, 7, 28]), r"column TIME: not a number \(found 'x'\) \(row 2\)"),
        (table(DV=[5, 9, "n.d.", 6, 1, 5]), r"column DV: not a number .*'n.d.'.* \(row 3\)"),
        (table(ID=[1, None, 1, 2, 2, 2]), r"column ID: missing subject ID \(row 2\)"),
        (table(TIME=[0, np.nan, 28, 0, 7, 28]), r"column TIME: missing or NaN time \(row 2\)"),
        (table(TIME=[0, np.inf, 28, 0, 7, 28]), r"column TIME: time is not finite \(row 2\)"),
        (table(DV=[5, np.nan, 40, 6, 1, 5]), r"column DV: missing DV .* \(row 2\)"),
        (table(DV=[5, -1, 40, 6, -2, 5]), r"column DV: negative value.* \(rows 2, 5\)"),
        (table(CENS=[0, 2, 0, 0, 0, 0]), r"column CENS: must be 0 or 1 \(row 2\)"),
        (
            table(EVID=[0, 0, 0, 0, 0, 5]),
            r"column EVID: must be one of 0 observation, .* \(row 6\)",
        ),
        (table(MDV=[0, 0, 0, "y", 0, 0]), r"column MDV: not a number .* \(row 4\)"),
        (
            table(CENS=[0, 0, 1, 0, 0, 0], LLOQ=[10, 10, np.nan, 10, 10, 10]),
            r"column LLOQ: CENS=1 without an LLOQ \(row 3\)",
        ),
        (
            table(CENS=[0, 0, 1, 0, 0, 0], DV=[5, 9, np.nan, 6, 1, 5]),
            r"column CENS: CENS=1 without an LLOQ .* \(row 3\)",
        ),
        (table(LLOQ=[-1, 10, 10, 10, 10, 10]), r"column LLOQ: negative LLOQ \(row 1\)"),
        (
            table(EVID=[1, 0, 0, 0, 0, 0], AMT=[np.nan] * 6),
            r"column AMT: dose record \(EVID=1\) without a positive AMT \(row 1\)",
        ),
        (table(TIME=[0, 7, 7, 0, 7, 28]), r"column TIME: duplicate observation.* \(rows 2, 3\)"),
        (table().iloc[:0], r"the table has no rows"),
        (table(id=[1] * 6), r"columns ID appear more than once"),
        (table(DV=[5, np.inf, 40, 6, 1, 5]), r"column DV: value is not finite .*\(row 2\)"),
        (table(LLOQ=[1, 1, np.inf, 1, 1, 1]), r"column LLOQ: value is not finite .*\(row 3\)"),
        (table(ANALYTE=["CART", ".", "CART", "CART", "CART", "CART"]), r"ANALYTE: missing .*row 2"),
        (
            table(EVID=[0, 0, 0, 0, 1, 0], AMT=[np.nan, np.nan, np.nan, np.nan, 1e6, np.nan]),
            r"column TIME: the first dose record \(EVID=1 or 4\) is not at TIME 0 "
            r"\(ID 2 at TIME 7\).* \(row 5\)",
        ),
    ],
)
def test_bad_input_is_named(frame: pd.DataFrame, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        read_dataset(frame)


def test_many_bad_rows_are_counted() -> None:
    frame = pd.DataFrame({"ID": [1] * 8, "TIME": range(8), "DV": [-1.0] * 8})
    with pytest.raises(DataError, match=r"rows 1, 2, 3, 4, 5 and 3 more"):
        read_dataset(frame)


def test_missing_file_and_unparsable_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent.csv: no such file"):
        read_dataset(tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.csv: cannot be read as CSV"):
        read_dataset(empty)


def test_censored_row_takes_lloq_from_dv_without_lloq_column() -> None:
    ds = read_dataset(table(CENS=[0, 0, 1, 0, 0, 0], DV=[5, 9, 20, 6, 1, 5]))
    assert ds.frame.loc[ds.frame["CENS"] == 1, "LLOQ"].tolist() == [20.0]


def test_mdv_rows_kept_but_not_observations() -> None:
    ds = read_dataset(table(MDV=[0, 1, 0, 0, 0, 0], DV=[5, np.nan, 40, 6, 1, 5]))
    assert len(ds.frame) == 6
    assert len(ds.observations()) == 5


def test_unknown_analyte_lists_known() -> None:
    ds = read_dataset(table())
    with pytest.raises(DataError, match=r"no observations of 'VEGF' \(the data have: CART\)"):
        ds.observations("VEGF")


def test_require_positive_and_analytes() -> None:
    ds = read_dataset(table(DV=[0.0, 900, 40, 6, 1200, 55]))
    with pytest.raises(DataError, match=r"CART values must be > 0 .*\(row 1\)"):
        ds.require_positive("CART")
    with pytest.raises(DataError, match=r"no output for CART \(its outputs: VEGF\)"):
        ds.require_analytes(["VEGF"])
    ds.require_analytes(["CART", "VEGF"])


def test_as_dataset_passes_through_and_reads() -> None:
    ds = read_dataset(table())
    assert as_dataset(ds) is ds
    assert len(as_dataset(table()).ids) == 2


def test_seed_case_file() -> None:
    ds = read_dataset(DATA / "poems_kq2003_vegf.csv")
    obs = ds.observations("VEGF")
    assert obs["TIME"].tolist() == [0.0, 14.0, 28.0]
    assert obs["DV"].tolist() == [4119.11, 1666.36, 225.49]


def test_phase1_trial_design() -> None:
    ds = read_dataset(DATA / "phase1_trial.csv")
    assert len(ds.ids) == 30
    assert ds.subject_covariates()["DOSE"].value_counts().to_dict() == {
        1e6: 10,
        2e6: 10,
        3e6: 10,
    }
    obs = ds.observations("CART")
    days = [0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365]
    assert all(g["TIME"].tolist() == days for _, g in obs.groupby("ID"))
    assert (obs["LLOQ"] == 10).all()
    assert 0 < obs["CENS"].sum() < len(obs) / 4
    assert (obs.loc[obs["CENS"] == 1, "DV"] == 10).all()
    assert len(ds.doses()) == 30


def test_generator_curve_matches_closed_form_by_hand() -> None:
    gen = load_script(DATA / "make_phase1_trial.py")
    c0, rho, tmax, fb, alpha, beta = 6.0, 0.9, 9.0, 0.01, 0.2, 0.003
    t = np.array([0.0, 5.0, 9.0, 30.0])
    peak = 6.0 * np.exp(0.9 * 9.0)
    expected = [
        6.0,
        6.0 * np.exp(4.5),
        peak,
        peak * (0.99 * np.exp(-0.2 * 21) + 0.01 * np.exp(-0.003 * 21)),
    ]
    got = gen.stein_closed_form(t, c0, rho, tmax, fb, alpha, beta)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_frame_with_repeated_index_labels_is_read() -> None:
    """pd.concat without ignore_index repeats index labels; rows are still all read."""
    one = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 1.0], "DV": [5.0, 9.0]})
    both = pd.concat([one, one.assign(ID=2)])
    ds = read_dataset(both)
    assert len(ds.frame) == 4 and list(ds.ids) == [1, 2]
    assert both.index.tolist() == [0, 1, 0, 1]


def test_filled_censored_values_do_not_reach_the_callers_frame() -> None:
    """DV takes the LLOQ (and LLOQ the DV) on censored rows in the reader's copy only."""
    cens = [0, 0, 1, 0, 0, 0]
    cases = [
        (table(CENS=cens, DV=[5, 9, np.nan, 6, 1, 5], LLOQ=[2.0] * 6), "DV", 2.0),
        (table(CENS=cens, DV=[5, 9, 3.0, 6, 1, 5]), "LLOQ", 3.0),
    ]
    for frame, filled, value in cases:
        before = frame.copy(deep=True)
        ds = read_dataset(frame)
        assert ds.frame.loc[ds.frame["CENS"] == 1, filled].tolist() == [value]
        pd.testing.assert_frame_equal(frame, before)


def test_rows_are_counted_by_position_whatever_the_index() -> None:
    """Row numbers in messages are 1-based positions, also for a repeated, unsorted index."""
    frame = table(DV=[5, 9, -3, 6, 1, 5])
    frame.index = [7, 7, 3, 3, 0, 0]
    with pytest.raises(DataError, match=r"column DV: negative value.* \(row 3\)$"):
        read_dataset(frame)


def test_columns_are_read_only_arrays_of_the_frame() -> None:
    frame = table(WT=[70, 70, 70, 80, 80, 80], SEX=["F", "F", "F", "M", "M", "M"])
    ds = read_dataset(frame.iloc[::-1])
    for name in ds.frame.columns:
        values = ds.column(name)
        np.testing.assert_array_equal(values, ds.frame[name].to_numpy())
        with pytest.raises(ValueError, match="read-only"):
            values[0] = values[1]


def test_dots_mean_missing_where_a_column_does_not_apply() -> None:
    """NONMEM's "." in DV and ANALYTE of a dose row, AMT of observation rows, a covariate."""
    ds = read_dataset(
        table(
            TIME=[0.0, 0.0, 28.0, 0.0, 7.0, 28.0],
            DV=[".", "5", "40", "6", "1200", "55"],
            EVID=[1, 0, 0, 0, 0, 0],
            MDV=[1, 0, 0, 0, 0, 0],
            AMT=["2e6", ".", ".", ".", ".", "."],
            DVID=[".", 1, 1, 1, 1, 1],
            WT=["70", "70", ".", "80", "80", "80"],
        ),
        dvid={1: "CART"},
    )
    assert ds.analytes == ("CART",)
    assert ds.frame["DV"].isna().tolist() == [True] + [False] * 5
    assert ds.frame["AMT"].tolist()[0] == 2e6 and ds.frame["AMT"].isna().sum() == 5
    assert ds.frame["WT"].dtype == np.float64 and ds.subject_covariates()["WT"].tolist() == [70, 80]
