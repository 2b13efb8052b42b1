"""The command line as a user runs it: exit codes, one-line errors, files written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cartpk.cli import parse_assignments, parse_times

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
