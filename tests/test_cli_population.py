"""`cartpk popfit` and `cartpk scenarios` as a user runs them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_cli import DATA, run_cli

from cartpk.cli import parse_covariates, parse_pair


def test_parse_covariates_and_iterations() -> None:
    assert parse_covariates(["C0~DOSE", "C0~WT", "alpha~WT"]) == {
        "C0": ["DOSE", "WT"],
        "alpha": ["WT"],
    }
    assert parse_pair("40,20", "--n-iter") == (40, 20)
    with pytest.raises(ValueError, match="--covariate 'C0DOSE'"):
        parse_covariates(["C0DOSE"])
    with pytest.raises(ValueError, match="--n-iter '40'"):
        parse_pair("40", "--n-iter")


def test_popfit_prints_the_tables_and_writes_json(tmp_path: Path) -> None:
    """A short SAEM run on the bundled trial: the three tables, OFV and the JSON file."""
    out = tmp_path / "fit.json"
    result = run_cli(
        "popfit", "ck_stein", str(DATA / "phase1_trial.csv"), "--random", "C0,rho,alpha",
        "--covariate", "C0~DOSE", "--n-iter", "40,20", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for title in ("Fixed effects", "Between-subject variability", "Residual error", "C0~DOSE"):
        assert title in result.stdout
    assert re.search(r"OFV \(-2LL, importance sampling\) -?\d+\.\d+", result.stdout)
    assert out.is_file() and out.stat().st_size > 0
    # a long fit starts and ends with a line, also when the output is not a terminal
    assert result.stdout.startswith(
        "population fit of ck_stein to 30 subjects by SAEM (40 + 20 iterations"
    )
    assert re.search(r"population fit done in \d+\.\d s", result.stdout)


def test_popfit_bad_covariate_is_one_line() -> None:
    result = run_cli("popfit", "ck_stein", str(DATA / "phase1_trial.csv"), "--covariate", "C0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --covariate 'C0': expected PARAM~COVARIATE, e.g. C0~DOSE"
    ]


def test_scenarios_summary_per_dose(tmp_path: Path) -> None:
    out = tmp_path / "patients.csv"
    result = run_cli("scenarios", "ck_stein", "--n", "50", "--doses", "1e6,2e6", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "50 virtual patients per dose" in result.stdout
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 2 * 50


def test_scenarios_bad_doses() -> None:
    result = run_cli("scenarios", "ck_stein", "--doses", "1e6,lots")
    assert result.returncode == 2
    assert "--doses '1e6,lots'" in result.stderr


def test_scenarios_of_a_saved_fit_use_its_model_after_the_file_changed(tmp_path: Path) -> None:
    """Issue 12 item 2: popfit mystein.toml -o pop.json, then an edited equation: scenarios
    of pop.json run the equations the fit was made with, and say that the file changed."""
    model = tmp_path / "mystein.toml"
    text = (Path(__file__).resolve().parents[1] / "src/cartpk/models/ck_stein.toml").read_text()
    model.write_text(text)
    pop = tmp_path / "pop.json"
    fitted = run_cli(
        "popfit", str(model), str(DATA / "phase1_trial.csv"), "--n-iter", "20,10", "-o", str(pop)
    )
    assert fitted.returncode == 0, fitted.stderr
    before = run_cli("scenarios", str(pop), "--n", "50", "--doses", "1e6,3e6")
    assert before.returncode == 0, before.stderr
    assert "warning" not in before.stderr
    edited = text.replace("rho * E if", "(rho + 0.5) * E if")
    assert edited != text
    model.write_text(edited)
    after = run_cli("scenarios", str(pop), "--n", "50", "--doses", "1e6,3e6")
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout
    warning = [line for line in after.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "mystein.toml' has changed since the fit was saved" in warning[0]
    assert "Traceback" not in after.stderr
