"""The command line as a user runs it: exit codes, one-line errors, files written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import stein_level

from cartpk.cli import (
    match_id,
    parse_assignments,
    parse_errors,
    parse_priors,
    parse_times,
    per_subject_path,
)
from cartpk.individual import FitResult, FitTable

DATA = Path(__file__).resolve().parents[1] / "data"
STEIN = ("C0", "rho", "tmax", "Fb", "alpha", "beta")  # ck_stein kinetic parameters, in order


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cartpk`` in a fresh interpreter, as a user would (``env``: extra variables)."""
    return subprocess.run(
        [sys.executable, "-m", "cartpk.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=None if env is None else {**os.environ, **env},
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
    result = run_cli(
        "nca",
        str(DATA / "phase1_trial.csv"),
        "--interval-auc",
        "aucint.last",
        "--interval-auc",
        "aucint.inf.obs",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert {"auc_0_28", "aucint_inf_obs_0_28"} <= set(pd.read_csv(out).columns)


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
    """--param rho=0.5 gives the closed form at rho 0.5, not only a smaller peak."""
    from cartpk.model import load_model

    defaults = {name: p.value for name, p in load_model("ck_stein").parameters.items()}
    days = np.arange(0.0, 61.0)
    for override, path in ((None, tmp_path / "default.csv"), (0.5, tmp_path / "slow.csv")):
        args = [] if override is None else ["--param", f"rho={override}"]
        result = run_cli("simulate", "ck_stein", "--times", "0:60:1", *args, "-o", str(path))
        assert result.returncode == 0, result.stderr
        values = dict(defaults, **({} if override is None else {"rho": override}))
        frame = pd.read_csv(path)
        np.testing.assert_array_equal(frame["TIME"], days)
        np.testing.assert_allclose(
            frame["CART"], stein_level(days, *(values[k] for k in STEIN)), rtol=1e-5
        )


def test_models_lists_builtins() -> None:
    """Every built-in model with its description, outputs, states and each parameter's
    value, bounds and unit as the model file gives them."""
    from cartpk.model import list_models, load_model

    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    names = list_models()
    assert names == ["ck_blineage", "ck_crs", "ck_nk", "ck_stein", "ck_target", "ck_vegf"]
    starts = [out.index(f"\n{name}: ") for name in names]
    for name, begin, end in zip(names, starts, [*starts[1:], len(out)], strict=True):
        model = load_model(name)
        section = out[begin:end]
        assert section.startswith(f"\n{name}: {model.description}\n")
        assert (
            f"  outputs: {', '.join(model.outputs)}   states: {', '.join(model.states)}" in section
        )
        rows = {line.split()[0]: line.split() for line in section.splitlines() if line.split()}
        for pname, p in model.parameters.items():
            fields = rows[pname]
            assert float(fields[1]) == pytest.approx(p.value, rel=5e-4), (name, pname)
            assert float(fields[2]) == pytest.approx(p.lower, rel=5e-4), (name, pname)
            assert float(fields[3]) == pytest.approx(p.upper, rel=5e-4), (name, pname)
            assert fields[4] == p.unit.split()[0], (name, pname)


def test_demo_runs(tmp_path: Path) -> None:
    """The demo's numbers are those of the API: the bundled trial's per-dose NCA and the
    POEMS fit's day below half of the VEGF baseline; the figure is a PNG."""
    from cartpk.demo import bundled, poems_fit, poems_report
    from cartpk.nca import nca, nca_summary

    figure = tmp_path / "poems.png"
    result = run_cli("demo", "--figure", str(figure))
    assert result.returncode == 0, result.stderr
    summary = nca_summary(
        nca(bundled("phase1_trial.csv"), analyte="CART", intervals=[(0, 28)]), by="DOSE"
    ).set_index(["DOSE", "parameter"])
    for dose in (1e6, 2e6, 3e6):
        cmax = summary.loc[(dose, "cmax"), "geomean"]
        line = next(
            line
            for line in result.stdout.splitlines()
            if line.split()[:2] == [f"{dose:.4g}", "cmax"]
        )
        assert line.split()[4] == f"{cmax:.4g}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = poems_report(poems_fit())
    expected = (
        f"VEGF first below 50 % of baseline (partial response): day {report['day_below_half']:.1f}"
    )
    assert expected in result.stdout
    # VEGF 4119 -> 1666 ng/L at day 14 is already below half of baseline
    assert 0 < report["day_below_half"] < 14
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


def test_demo_rrmm_runs(tmp_path: Path) -> None:
    """``cartpk demo rrmm`` prints each step of the dose-escalation analysis, the per-dose
    table for the three dose levels and the dose-finding answer, and writes its figure (its
    numbers are checked against the truth in notebooks/kq2003_rrmm.ipynb)."""
    figure = tmp_path / "rrmm.png"
    result = run_cli("demo", "rrmm", "--figure", str(figure))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in (
        "1. NCA per dose level",
        "2. Joint population fit",
        "3. Exposure-response (crs)",
        "3. Exposure-response (response)",
        "4. Per dose level",
        "Dose finding",
    ):
        assert step in out, step
    table = out[out.index("4. Per dose level") :].splitlines()
    for dose in ("1e+06", "2e+06", "3e+06"):
        assert any(line.split()[:1] == [dose] for line in table), dose
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_nmosd_runs(tmp_path: Path) -> None:
    """``cartpk demo nmosd`` prints the fit, the recovery table and the seed checks and
    writes its figure (the numbers are checked in tests/population/test_nmosd_trial.py)."""
    figure = tmp_path / "nmosd.png"
    result = run_cli("demo", "nmosd", "--figure", str(figure))
    assert result.returncode == 0, result.stderr
    for step in ("1. Population fit of ck_blineage", "2. Recovery", "3. Per patient",
                 "CAR-T quantified beyond 6 months: 2 of 12"):  # fmt: skip
        assert step in result.stdout, step
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scenarios_compare_regimens(tmp_path: Path) -> None:
    """``cartpk scenarios --regimens`` gives the summary of compare_regimens (the same
    numbers as the API, checked there against ck_stein's closed form) and writes the
    per-infusion table."""
    from cartpk.scenarios import compare_regimens

    table = tmp_path / "infusions.csv"
    result = run_cli("scenarios", "ck_stein", "--regimens", "3e6; 1e6x3/7", "--n", "20",
                     "--level", "500", "-o", str(table))  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = compare_regimens("ck_stein", ["3e6", "1e6x3/7"], n=20, level=500.0)
    written = pd.read_csv(table)
    np.testing.assert_allclose(written["auc"], expected.infusions["auc"], rtol=1e-12)
    for label in ("1 x 3e+06", "3 x 1e+06 every 7 d"):
        assert label in result.stdout
    assert "days_above" in result.stdout


def stein_csv(path: Path, ids: tuple = (1,), lloq: float = 100.0) -> Path:
    """Noisy ck_stein closed-form profiles (DESIGN.md), censored below ``lloq``, as a CSV."""
    days = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
    truth = stein_level(days, 6.0, 0.85, 10.0, 0.01, 0.2, 0.004)
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


# --- issue 12: every bad input is one line, exit 2, nothing written -------------------------

# (case, arguments with {data}, {tmp}, {deep}, {file} placeholders, message on stderr)
BAD_INPUTS = [
    ("nca -o its own input", ["nca", "{data}", "-o", "{data}"], "is an input of this command"),
    ("-o a directory", ["nca", "{data}", "-o", "{tmp}"], "is a directory; expected a file"),
    ("-o in a missing directory", ["nca", "{data}", "-o", "{tmp}/no/nca.csv"], "does not exist"),
    ("--times beyond memory", ["simulate", "ck_stein", "--times", "0:1e9:0.001"],
     "more than the 1,000,000"),
    ("--plot unknown format", ["simulate", "ck_stein", "--plot", "{tmp}/sim.xyz"],
     "unknown figure format '.xyz'"),
    ("-o and --plot the same file", ["simulate", "ck_stein", "-o", "{tmp}/a.png", "--plot",
     "{tmp}/a.png"], "also given to -o"),
    ("model TOML nested 5000 deep", ["simulate", "{deep}"], "nested too deeply"),
    ("--n 1e12", ["scenarios", "ck_stein", "--n", "1e12"], "beyond half this machine's memory"),
    ("--n 0", ["scenarios", "ck_stein", "--n", "0"], "--n '0': expected an integer >= 1"),
    ("--seed -1 (scenarios)", ["scenarios", "ck_stein", "--seed", "-1"],
     "--seed '-1': expected a non-negative integer"),
    ("--seed 1.5 (fit)", ["fit", "ck_stein", "{data}", "--seed", "1.5"],
     "--seed '1.5': expected a non-negative integer"),
    ("--seed abc (popfit)", ["popfit", "ck_stein", "{data}", "--seed", "abc"],
     "--seed 'abc': expected a non-negative integer"),
    ("--n-starts 0", ["fit", "ck_stein", "{data}", "--n-starts", "0"],
     "--n-starts '0': expected an integer >= 1"),
    ("--n-starts -2", ["fit", "ck_stein", "{data}", "--n-starts", "-2"],
     "--n-starts '-2': expected an integer >= 1"),
    ("--prior mean outside the bounds", ["fit", "ck_stein", "{data}", "--prior", "tmax=-12,0.3"],
     "--prior tmax=-12,0.3: the prior mean -12 is outside the bounds of tmax (0.5 to 60 day)"),
    ("--random ''", ["popfit", "ck_stein", "{data}", "--random", ""], "--random '': expected"),
    ("--plots an existing file", ["popfit", "ck_stein", "{data}", "--plots", "{file}"],
     "exists and is not a directory"),
    ("--plot a directory", ["fit", "ck_stein", "{data}", "--plot", "{tmp}"], "is a directory"),
    ("-o fit.json in a missing directory", ["fit", "ck_stein", "{data}", "-o",
     "{tmp}/none/fit.json"], "does not exist"),
    ("--analyte not in the data", ["fit", "ck_stein", "{data}", "--analyte", "VEGF"],
     "--analyte VEGF: no such analyte in the data (the data have: CART)"),
    ("demo --figure unknown format", ["demo", "--figure", "{tmp}/poems.txt"],
     "unknown figure format '.txt'"),
    ("demo unknown case", ["demo", "lupus"], "'lupus': expected one of poems, rrmm, nmosd"),
    ("regimen not read", ["scenarios", "ck_stein", "--regimens", "3e6; weekly"],
     "regimen 'weekly': expected an amount"),
    ("regimen not from day 0", ["scenarios", "ck_stein", "--regimens", "7:1e6"],
     "the first infusion is on day 7"),
    ("regimens with doses", ["scenarios", "ck_stein", "--regimens", "3e6", "--doses", "1e6"],
     "--regimens: not with --doses"),
    ("--interval not numbers (usage error)", ["nca", "{data}", "--interval", "a", "b"],
     "Invalid value for '--interval'"),
    ("missing argument (usage error)", ["fit", "ck_stein"], "Missing argument 'data'"),
]  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("case", "args", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, case: str, args: list[str], message: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = stein_csv(work / "data.csv")
    deep = work / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    existing = work / "existing.txt"
    existing.write_text("keep me")
    before = snapshot(work)
    filled = [a.format(data=data, tmp=work, deep=deep, file=existing) for a in args]
    clock = time.perf_counter()
    result = run_cli(*filled)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.stderr)
    assert message in lines[0], (case, lines[0])
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(work) == before, f"{case}: a file was written or changed"
    assert time.perf_counter() - clock < 60, f"{case}: refused only after the work"


def test_first_use_says_it_is_compiling(tmp_path: Path) -> None:
    """A fresh cache: the first simulate says it compiles the model; the second does not."""
    env = {"CARTPK_CACHE_DIR": str(tmp_path / "cache")}
    first = run_cli("simulate", "ck_stein", "--times", "0:10:1", env=env)
    assert first.returncode == 0, first.stderr
    assert "compiling model ck_stein (first use" in first.stderr
    again = run_cli("simulate", "ck_stein", "--times", "0:10:1", env=env)
    assert again.returncode == 0, again.stderr
    assert "compiling" not in again.stderr and again.stdout == first.stdout


def test_fit_reports_start_and_end_and_fits_only_the_analyte(tmp_path: Path) -> None:
    """--analyte CART fits ck_stein (no VEGF output) to a file that also holds VEGF; the
    fit says that it starts and when it ends, also when not on a terminal."""
    data = stein_csv(tmp_path / "stein.csv")
    frame = pd.read_csv(data).assign(ANALYTE="CART")
    vegf = frame.assign(ANALYTE="VEGF", DV=500.0, CENS=0)
    both = tmp_path / "both.csv"
    pd.concat([frame, vegf]).to_csv(both, index=False)
    out = tmp_path / "fit.json"
    result = run_cli("fit", "ck_stein", str(both), "--analyte", "CART", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fitting ck_stein to 1 subject(s)...\n")
    assert "fit done in " in result.stdout
    fitted = FitResult.from_json(out.read_text())
    assert set(fitted.observations["ANALYTE"]) == {"CART"} and fitted.n_obs == 13
    alone = run_cli("fit", "ck_stein", str(data), "-o", str(tmp_path / "alone.json"))
    assert alone.returncode == 0, alone.stderr
    alone_fit = FitResult.from_json((tmp_path / "alone.json").read_text())
    assert fitted.estimates == pytest.approx(alone_fit.estimates, rel=1e-8)


def test_models_lists_parameter_sets_and_correlations() -> None:
    """`cartpk models` names every parameter set with its product, reference dose and the
    models it fits, and prints each model's correlated random effects."""
    from cartpk.model.parameter_sets import list_parameter_sets, load_parameter_set

    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    assert "correlated random effects: C0:rho -0.258, rho:tmax -0.957" in result.stdout
    for name in list_parameter_sets():
        pset = load_parameter_set(name)
        assert f"  {name}: {pset.product}" in result.stdout
    assert "models: ck_blineage, ck_crs, ck_stein, ck_vegf" in result.stdout


def test_scenarios_parameters_and_write(tmp_path: Path) -> None:
    """--parameters applies a named set (cilta-cel: dose_exp 0, so the same Cmax at both
    doses); --write streams the per-patient table to Parquet, the same rows as -o."""
    parquet, csv = tmp_path / "p.parquet", tmp_path / "p.csv"
    args = ("scenarios", "ck_stein", "--parameters", "cilta-cel", "--n", "40", "--doses")
    result = run_cli(*args, "1e6,2e6", "--write", str(parquet), "-o", str(csv))
    assert result.returncode == 0, result.stderr
    streamed, table = pd.read_parquet(parquet), pd.read_csv(csv)
    assert len(streamed) == len(table) == 80
    np.testing.assert_allclose(streamed["cmax"], table["cmax"], rtol=1e-12)
    low, high = (table.loc[table["DOSE"] == d, "cmax"].to_numpy() for d in (1e6, 2e6))
    np.testing.assert_allclose(low, high, rtol=1e-12)
    assert (table["C0"] != 6.153846153846154).all()
    bad = run_cli("scenarios", "ck_stein", "--parameters", "nope", "--n", "5")
    assert bad.returncode == 2 and "unknown parameter set 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
