"""The command line as a user runs it: exit codes, one-line errors, files written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cartpk.cli import (
    match_id,
    parse_assignments,
    parse_errors,
    parse_priors,
    parse_times,
    per_subject_path,
)
from cartpk.fit_result import FitResult, FitTable

DATA = Path(__file__).resolve().parents[1] / "data"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``cartpk`` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "cartpk.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_parse_times_range_includes_stop() -> None:
    np.testing.assert_array_equal(parse_times("0:60:1"), np.arange(61.0))
    np.testing.assert_array_equal(parse_times("0:1:0.25"), [0, 0.25, 0.5, 0.75, 1.0])


def test_parse_times_list() -> None:
    np.testing.assert_array_equal(parse_times("0,14,28"), [0.0, 14.0, 28.0])


@pytest.mark.parametrize("text", ["0:10", "0:10:0", "10:0:1", "a,b", "0:x:1"])
def test_parse_times_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--times"):
        parse_times(text)


def test_parse_assignments() -> None:
    assert parse_assignments(["rho=0.9", "DOSE=2e6"], "--param") == {"rho": 0.9, "DOSE": 2e6}
    with pytest.raises(ValueError, match="--param 'rho'"):
        parse_assignments(["rho"], "--param")
    with pytest.raises(ValueError, match="--param 'rho=fast'"):
        parse_assignments(["rho=fast"], "--param")


def test_nca_command_prints_subjects_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "nca.csv"
    result = run_cli(
        "nca",
        str(DATA / "phase1_trial.csv"),
        "--interval",
        "0",
        "28",
        "--by",
        "DOSE",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "auc_0_28" in result.stdout
    assert "Summary by DOSE" in result.stdout
    table = pd.read_csv(out)
    assert len(table) == 30
    assert {"cmax", "tmax", "auc_0_28"} <= set(table.columns)


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    result = run_cli("nca", str(tmp_path / "absent.csv"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert "absent.csv" in result.stderr


def test_bad_auc_method_is_one_line_error() -> None:
    result = run_cli("nca", str(DATA / "phase1_trial.csv"), "--auc-method", "spline")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "spline" in result.stderr


def test_unknown_model_is_one_line_error() -> None:
    result = run_cli("simulate", "no_such_model")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no_such_model" in result.stderr


def test_simulate_writes_csv_and_plot(tmp_path: Path) -> None:
    csv, png = tmp_path / "sim.csv", tmp_path / "sim.png"
    result = run_cli("simulate", "ck_vegf", "--times", "0:60:1", "-o", str(csv), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(csv)
    assert list(frame["TIME"]) == list(range(61))
    assert {"CART", "VEGF"} <= set(frame.columns)
    assert png.stat().st_size > 10_000


def test_simulate_param_override_changes_answer(tmp_path: Path) -> None:
    slow, fast = tmp_path / "slow.csv", tmp_path / "fast.csv"
    assert run_cli("simulate", "ck_stein", "--times", "0:20:1", "-o", str(slow)).returncode == 0
    result = run_cli(
        "simulate", "ck_stein", "--times", "0:20:1", "--param", "rho=0.5", "-o", str(fast)
    )
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(fast)["CART"].max() < pd.read_csv(slow)["CART"].max()


def test_models_lists_builtins() -> None:
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    for name in ("ck_stein", "ck_vegf", "ck_target", "rho", "alpha", "kkill"):
        assert name in result.stdout


def test_demo_runs(tmp_path: Path) -> None:
    figure = tmp_path / "poems.png"
    result = run_cli("demo", "--figure", str(figure))
    assert result.returncode == 0, result.stderr
    assert "cmax" in result.stdout
    assert "VEGF first below 50 % of baseline" in result.stdout
    assert figure.stat().st_size > 10_000


def stein_csv(path: Path, ids: tuple = (1,), lloq: float = 100.0) -> Path:
    """Noisy ck_stein closed-form profiles (DESIGN.md), censored below ``lloq``, as a CSV."""
    days = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
    after = np.maximum(days - 10.0, 0.0)
    truth = 6.0 * np.exp(0.85 * np.minimum(days, 10.0))
    truth *= 0.99 * np.exp(-0.2 * after) + 0.01 * np.exp(-0.004 * after)
    rng = np.random.default_rng(3)
    parts = []
    for subject in ids:
        dv = truth * np.exp(rng.normal(0, 0.25, days.size))
        low = dv < lloq
        parts.append(
            pd.DataFrame(
                {"ID": subject, "TIME": days, "DV": np.where(low, lloq, dv), "LLOQ": lloq,
                 "CENS": low.astype(int)}
            )
        )  # fmt: skip
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_parse_errors_and_priors() -> None:
    assert parse_errors(["CART=log", "VEGF=proportional,b=0.1"]) == {
        "CART": ("log", {}),
        "VEGF": ("proportional", {"b": 0.1}),
    }
    assert parse_errors(["VEGF=combined, a=2 ,b=0.1"]) == {
        "VEGF": ("combined", {"a": 2.0, "b": 0.1})
    }
    for bad in ("CART", "=log", "CART=", "CART=log,sigma"):
        with pytest.raises(ValueError, match="--error"):
            parse_errors([bad])
    assert parse_priors(["tmax=12,0.3", "rho=0.9,1"]) == {"tmax": (12.0, 0.3), "rho": (0.9, 1.0)}
    for bad in ("tmax=12", "tmax", "=1,2", "tmax=a,b", "tmax=1,2,3"):
        with pytest.raises(ValueError, match="--prior"):
            parse_priors([bad])


def test_match_id_accepts_numeric_and_text_ids() -> None:
    assert match_id("2", np.array([1, 2, 3])) == 2
    assert match_id("2", np.array([1.0, 2.0])) == 2.0
    assert match_id("pt-A", np.array(["pt-A", "pt-B"], dtype=object)) == "pt-A"
    assert match_id("007", np.array(["007", "7"], dtype=object)) == "007"
    with pytest.raises(ValueError, match="--id '9': no such subject"):
        match_id("9", np.array([1, 2]))
    assert per_subject_path(Path("out/fit.png"), "pt A/1") == Path("out/fit_pt_A_1.png")


def test_fit_command_writes_json_and_figure(tmp_path: Path) -> None:
    data = stein_csv(tmp_path / "stein.csv", ids=(1, 2))
    out, png = tmp_path / "fit.json", tmp_path / "fit.png"
    result = run_cli(
        "fit", "ck_stein", str(data), "--id", "1", "-o", str(out), "--plot", str(png),
        "--fix", "beta=0.004", "--error", "CART=log,sigma=0.25", "--prior", "tmax=10,0.3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for text in ("ck_stein fit of ID 1", "OFV (-2LL)", "AIC", "BIC", "1 of 1 start(s)"):
        assert text in result.stdout
    fitted = FitResult.from_json(out.read_text())
    table = fitted.table().set_index("parameter")
    assert fitted.subject == 1 and fitted.n_obs == 13 and fitted.priors.keys() == {"tmax"}
    assert table.loc["beta", "fixed"] and table.loc["beta", "estimate"] == pytest.approx(0.004)
    assert table.loc["CART_sigma", "fixed"]
    assert table.loc["CART_sigma", "estimate"] == pytest.approx(0.25)
    assert not table.loc["rho", "fixed"]
    assert png.stat().st_size > 10_000


def test_fit_command_fits_every_subject(tmp_path: Path) -> None:
    data = stein_csv(tmp_path / "stein.csv", ids=("A", "B"))
    out, png = tmp_path / "fits.json", tmp_path / "fit.png"
    result = run_cli("fit", "ck_stein", str(data), "-o", str(out), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert "Individual fits of 2 subjects" in result.stdout
    table = FitTable.from_json(out.read_text())
    assert list(table.results) == ["A", "B"] and not table.errors
    for subject in ("A", "B"):
        assert (tmp_path / f"fit_{subject}.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fix", "rho"], "--fix 'rho': expected name=value"),
        (["--fix", "gamma=1"], "--fix gamma: not a parameter of ck_stein"),
        (["--error", "VEGF=log"], "no such analyte in the data"),
        (["--id", "9"], "--id '9': no such subject"),
    ],
)
def test_fit_command_bad_input_is_one_line_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    data = stein_csv(tmp_path / "stein.csv", ids=(1, 2))
    result = run_cli("fit", "ck_stein", str(data), *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
