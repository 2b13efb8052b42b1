"""The ``cartpk`` command line: thin wrappers over the public API.

Every command prints one clear line and exits with status 2 on bad input or a numerical
failure, without a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from .errors import DataError, FitError, ModelError, SolverError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="cartpk: CAR-T cellular kinetics, NCA, model fitting and dose scenarios.",
)

USER_ERRORS = (DataError, ModelError, SolverError, FitError, FileNotFoundError, ValueError)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn cartpk's user-facing exceptions into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def show(title: str, frame: pd.DataFrame) -> None:
    """Print a titled table with four significant digits."""
    typer.echo(f"\n{title}")
    typer.echo(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def parse_times(text: str) -> np.ndarray:
    """Parse ``start:stop:step`` (stop included) or a comma-separated list, in days."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = int(np.floor((stop - start) / step + 1e-9)) + 1
            return start + step * np.arange(count)
        return np.array([float(part) for part in text.split(",")])
    except ValueError:
        raise ValueError(
            f"--times {text!r}: expected start:stop:step with step > 0 and stop >= start, "
            "or a comma-separated list of days"
        ) from None


def parse_assignments(items: list[str], option: str) -> dict[str, float]:
    """Parse repeated ``name=value`` options into a dict."""
    values: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            values[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{option} {item!r}: expected name=value with a number") from None
    return values


@app.command()
@reports_errors
def nca(
    file: Annotated[Path, typer.Argument(help="Dataset (CSV, long NONMEM-style format).")],
    analyte: Annotated[str | None, typer.Option(help="Analyte to analyse, e.g. CART.")] = None,
    interval: Annotated[
        tuple[float, float], typer.Option(help="Interval AUC: start end (days).")
    ] = (0.0, 28.0),
    auc_method: Annotated[
        str, typer.Option(help="AUC method: linear or lin-up/log-down.")
    ] = "lin-up/log-down",
    by: Annotated[str | None, typer.Option(help="Covariate to summarise by, e.g. DOSE.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write CSV.")] = None,
) -> None:
    """Non-compartmental analysis: one row per subject, then a summary."""
    from .nca import nca as run_nca
    from .nca import nca_summary

    table = run_nca(file, analyte=analyte, intervals=[interval], auc_method=auc_method)
    show(f"NCA of {file} ({auc_method})", table)
    show(f"Summary by {by}" if by else "Summary", nca_summary(table, by=by))
    if output is not None:
        table.to_csv(output, index=False)
        typer.echo(f"\nwrote {output}")


@app.command()
@reports_errors
def models() -> None:
    """List the built-in models with their parameters."""
    from .model import list_models, load_model

    for name in list_models():
        model = load_model(name)
        typer.echo(f"\n{name}: {model.description}")
        typer.echo(f"  outputs: {', '.join(model.outputs)}   states: {', '.join(model.states)}")
        typer.echo(f"  source: {model.source}")
        show("  parameters", model.describe())


@app.command()
@reports_errors
def simulate(
    model: Annotated[str, typer.Argument(help="Built-in model name or path to a .toml file.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Override a parameter: name=value.")
    ] = None,
    covariate: Annotated[
        list[str] | None, typer.Option("--covariate", help="Covariate value, e.g. DOSE=2e6.")
    ] = None,
    times: Annotated[
        str, typer.Option(help="Days: start:stop:step (stop included) or a list.")
    ] = "0:365:1",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write CSV.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Save a figure (PNG/PDF/SVG).")] = None,
) -> None:
    """Simulate one subject at the model's default (or given) parameter values."""
    from .model import load_model
    from .solve import simulate as run_simulate

    spec = load_model(model)
    values = parse_assignments(param or [], "--param")
    covariates = parse_assignments(covariate or [], "--covariate")
    frame = run_simulate(spec, {**values, **covariates}, parse_times(times))
    if output is not None:
        frame.to_csv(output, index=False)
        typer.echo(f"wrote {output}")
    else:
        show(f"{spec.name} simulation", frame)
    if plot is not None:
        from .plots import plot_simulation

        plot_simulation(frame, spec.outputs, path=plot)
        typer.echo(f"wrote {plot}")


@app.command()
@reports_errors
def demo(
    figure: Annotated[Path, typer.Option(help="Where to save the seed-case figure.")] = Path(
        "poems_vegf.png"
    ),
) -> None:
    """Run the worked examples on the bundled data sets."""
    from .demo import bundled
    from .nca import nca as run_nca
    from .nca import nca_summary

    typer.echo("cartpk demo 1: NCA of the bundled synthetic phase 1 CAR-T trial")
    typer.echo("(30 subjects, 1.0 / 2.0 / 3.0 x10^6 CAR-T cells/kg; qPCR copies/ug DNA)")
    table = run_nca(bundled("phase1_trial.csv"), analyte="CART", intervals=[(0, 28)])
    summary = nca_summary(table, by="DOSE")
    keep = ["cmax", "tmax", "auc_0_28", "half_life"]
    show("Per-dose summary", summary[summary["parameter"].isin(keep)])
    poems_demo(figure)


def poems_demo(figure: Path) -> None:
    """The seed case: ck_vegf fitted to the first POEMS patient's VEGF with CAR-T priors."""
    import warnings

    from .demo import plot_poems, poems_fit, poems_report

    typer.echo("\ncartpk demo 2: POEMS seed case, KQ-2003 (BCMA/CD19 CAR-T), trial CTR20242409")
    typer.echo("ck_vegf fitted to serum VEGF on days 0, 14, 28 (MAP; CAR-T kinetics from")
    typer.echo("BCMA CAR-T priors in data/bcma_cart_priors.csv; VEGF error CV fixed at 10 %)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = poems_fit()
    report = poems_report(result)
    show("Parameters (determined_by: did the three VEGF points move it?)", report["parameters"])
    show("VEGF (ng/L), observed and predicted", report["vegf"])
    typer.echo(
        f"\nVEGF first below 50 % of baseline (partial response): day "
        f"{report['day_below_half']:.1f}"
    )
    typer.echo(f"VEGF within 10 % of its floor Bnorm: day {report['day_near_floor']:.1f}")
    show(
        "Model-predicted CAR-T exposure (copies/ug, day; 95 % interval from the "
        "parameter covariance)",
        report["exposure"],
    )
    parameters = report["parameters"]
    groups = {
        "data": "determined by the three VEGF points",
        "poorly determined": "estimated but poorly determined (RSE >= 50 %)",
        "prior": "held by their priors",
    }
    for label, text in groups.items():
        names = parameters.loc[parameters["determined_by"] == label, "parameter"]
        typer.echo(f"{text}: {', '.join(names) or 'none'}")
    typer.echo("CAR-T levels for this patient would be needed to separate CAR-T expansion")
    typer.echo("from the kill rate: without them, kkill trades off against the CAR-T level.")
    for warning in caught:
        typer.echo(f"fit warning: {warning.message}")
    plot_poems(result, figure)
    typer.echo(f"\nwrote {figure}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cartpk")


if __name__ == "__main__":
    sys.exit(main())
