"""The ``cartpk`` command line: thin wrappers over the public API.

Every command prints one clear line and exits with status 2 on bad input or a numerical
failure, without a traceback (set ``CARTPK_TRACEBACK=1`` to see one for an unexpected
error). Every output path and figure format is checked before the work starts, an output
may not overwrite an input, and nothing is written when a command fails. Warnings are one
``warning: ...`` line each on stderr; so is the notice that a model is being compiled.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import warnings
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

#: ``--analyte`` of fit and popfit.
AnalyteOption = Annotated[
    list[str] | None,
    typer.Option(
        "--analyte", help="Fit only this analyte (repeatable or comma-separated; default all)."
    ),
]

USER_ERRORS = (DataError, ModelError, SolverError, FitError, FileNotFoundError, ValueError)


def one_line(text: object, limit: int = 500) -> str:
    """``text`` on one line, cut to ``limit`` characters (a 50 MB cell is not echoed)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 5] + " ..."


def show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """Print a warning as one ``warning: ...`` line on stderr (no file and line)."""
    typer.echo(f"warning: {one_line(message)}", err=True)


def compiling_notice(notice: str) -> None:
    """Say on stderr what is compiled (first use), before the wait."""
    typer.echo(f"{notice}...", err=True)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every exception into one line on stderr and exit status 2 (never a traceback:
    with ``CARTPK_TRACEBACK=1`` an unexpected error is re-raised for debugging)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .model import cache as model_module

        previous = getattr(model_module, "COMPILE_NOTICE", None)
        model_module.COMPILE_NOTICE = compiling_notice
        try:
            with warnings.catch_warnings():
                warnings.showwarning = show_warning
                return command(*args, **kwargs)
        except USER_ERRORS as err:
            typer.echo(f"error: {one_line(err)}", err=True)
            raise typer.Exit(code=2) from None
        except OSError as err:
            where = f" {err.filename}" if err.filename else ""
            typer.echo(f"error: cannot read or write{where}: {err.strerror or err}", err=True)
            raise typer.Exit(code=2) from None
        except RecursionError:
            typer.echo("error: input nested too deeply to read", err=True)
            raise typer.Exit(code=2) from None
        except MemoryError:
            typer.echo("error: out of memory: ask for fewer patients, times or draws", err=True)
            raise typer.Exit(code=2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as err:
            if os.environ.get("CARTPK_TRACEBACK"):
                raise
            typer.echo(
                f"error: unexpected {type(err).__name__}: {one_line(err)} (a cartpk bug: "
                "please report it; CARTPK_TRACEBACK=1 shows the traceback)",
                err=True,
            )
            raise typer.Exit(code=2) from None
        finally:
            model_module.COMPILE_NOTICE = previous

    return wrapper


def show(title: str, frame: pd.DataFrame) -> None:
    """Print a titled table with four significant digits."""
    typer.echo(f"\n{title}")
    typer.echo(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


MAX_TIMES = 1_000_000  # time points of one simulated subject
BYTES_PER_PATIENT_DOSE = 8_000  # scenarios, measured ~2.6 kB on ck_vegf's default grid
BYTES_PER_STREAMED_PATIENT_DOSE = 64  # with --write: 28 bytes kept (peak RSS flat 1e5 -> 1e6)


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (8 GiB when it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def parse_times(text: str) -> np.ndarray:
    """Parse ``start:stop:step`` (stop included) or a comma-separated list, in days.

    At most :data:`MAX_TIMES` times (refused before anything is allocated)."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not (step > 0 and stop >= start and math.isfinite(stop - start)):
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            if count > MAX_TIMES:
                raise ValueError(
                    f"--times {text!r}: {count:.3g} times, more than the {MAX_TIMES:,} one "
                    "simulation may have; use a larger step"
                )
            return start + step * np.arange(count)
        values = np.array([float(part) for part in text.split(",")])
        if not np.isfinite(values).all():
            raise ValueError
        return values
    except ValueError as err:
        if str(err).startswith("--times"):
            raise
        raise ValueError(
            f"--times {text!r}: expected start:stop:step with step > 0 and stop >= start, "
            "or a comma-separated list of days"
        ) from None


def parse_count(text: str, option: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer option given as text (``1000``, or ``1e3`` when whole), within bounds."""
    expected = f"expected an integer >= {minimum}" + (
        f" and <= {maximum:,}" if maximum is not None else ""
    )
    try:
        value = int(text) if text.strip().lstrip("+-").isdigit() else float(text)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        value = int(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{option} {text!r}: {expected}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{option} {text!r}: {expected}")
    return value


def check_patients(n: int, n_doses: int, streamed: bool = False) -> int:
    """Refuse, up front, more virtual patients than this machine's memory can hold
    (``streamed``: the per-patient table goes to a file, a few metrics stay in memory)."""
    memory = memory_bytes()
    need = n * n_doses * (BYTES_PER_STREAMED_PATIENT_DOSE if streamed else BYTES_PER_PATIENT_DOSE)
    if 2 * need > memory:
        most = max(1, memory // (2 * BYTES_PER_PATIENT_DOSE * n_doses))
        raise ValueError(
            f"--n {n:,}: {n:,} patients at {n_doses} dose(s) need about {need / 2**30:.3g} GiB, "
            f"beyond half this machine's memory ({memory / 2**30:.3g} GiB); at most {most:,}"
        )
    return n


def parse_seed(text: str) -> int:
    """``--seed``: a non-negative integer (the same seed gives the same answer)."""
    try:
        return parse_count(text, "--seed", minimum=0)
    except ValueError:
        raise ValueError(
            f"--seed {text!r}: expected a non-negative integer, e.g. --seed 1 (the same "
            "seed gives the same result)"
        ) from None


FIGURE_FORMATS = (
    "avif eps gif jpeg jpg pdf pgf png ps raw rgba svg svgz tif tiff webp".split()
)  # matplotlib's Agg-backed savefig formats


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (resolved; hard links too)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_outputs(
    outputs: list[tuple[Path | None, str, str]], inputs: list[Path | str | None] = ()
) -> None:
    """Refuse, before any work, outputs that cannot be written or would overwrite an input.

    ``outputs``: (path or None, option, kind) with kind ``"file"`` (e.g. CSV, JSON),
    ``"figure"`` (a file whose suffix matplotlib can write) or ``"directory"`` (a figure
    directory: an existing directory, or one that can be created). ``inputs``: paths the
    command reads (data, model file, saved fit), never to be overwritten.
    """
    read = [Path(p) for p in inputs if p is not None and Path(p).exists()]
    given: list[tuple[Path, str]] = []
    for path, option, kind in outputs:
        if path is None:
            continue
        if str(path).strip() == "":
            raise ValueError(f"{option} '': expected a file name")
        if kind == "directory":
            if path.exists() and not path.is_dir():
                raise ValueError(f"{option} {path}: exists and is not a directory")
            parent = path
            while not parent.exists():
                parent = parent.parent
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is not a directory")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"{option} {path}: directory {parent} is not writable")
            continue
        if path.is_dir():
            raise ValueError(f"{option} {path}: is a directory; expected a file name")
        parent = path.parent
        if not parent.is_dir():
            raise ValueError(f"{option} {path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ValueError(f"{option} {path}: not writable")
        if kind == "figure":
            suffix = path.suffix.lower().lstrip(".")
            if suffix not in FIGURE_FORMATS:
                raise ValueError(
                    f"{option} {path}: unknown figure format {path.suffix or '(no suffix)'!r}; "
                    "use .png, .pdf or .svg"
                )
        for source in read:
            if same_file(path, source):
                raise ValueError(
                    f"{option} {path}: is an input of this command; choose another name"
                )
        for other, other_option in given:
            if same_file(path, other):
                raise ValueError(f"{option} {path}: also given to {other_option}")
        given.append((path, option))


def model_input(model: str) -> Path | None:
    """The model file a command reads (None for a built-in model name)."""
    return Path(model) if ("/" in model or os.sep in model or model.endswith(".toml")) else None


def parse_analytes(items: list[str] | None) -> list[str] | None:
    """``--analyte`` (repeatable, or comma-separated) -> analyte names; None for all."""
    if not items:
        return None
    names = [part.strip() for item in items for part in item.split(",")]
    if not all(names):
        raise ValueError(f"--analyte {','.join(items)!r}: expected analyte names, e.g. CART")
    return list(dict.fromkeys(names))


def started(text: str) -> float:
    """Say (on stdout, with the results: an error stays the only line on stderr) that a
    long step starts; return the clock for :func:`finished`."""
    typer.echo(f"{text}...")
    return time.perf_counter()


def finished(text: str, clock: float) -> None:
    """Say (on stdout) that a long step has ended, and how long it took."""
    typer.echo(f"{text} in {time.perf_counter() - clock:.1f} s")


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
    interval_auc: Annotated[
        list[str] | None,
        typer.Option(
            "--interval-auc",
            help="PKNCA interval AUC: aucint.last (default, column auc_<start>_<end>), "
            "aucint.inf.obs or aucint.all (repeatable).",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write CSV.")] = None,
) -> None:
    """Non-compartmental analysis: one row per subject, then a summary."""
    from .nca import nca as run_nca
    from .nca import nca_summary

    check_outputs([(output, "-o", "file")], inputs=[file])
    table = run_nca(
        file,
        analyte=analyte,
        intervals=[interval],
        auc_method=auc_method,
        interval_aucs=interval_auc or "aucint.last",
    )
    show(f"NCA of {file} ({auc_method})", table)
    show(f"Summary by {by}" if by else "Summary", nca_summary(table, by=by))
    if output is not None:
        table.to_csv(output, index=False)
        typer.echo(f"\nwrote {output}")


@app.command()
@reports_errors
def models() -> None:
    """List the built-in models with their parameters, and the named parameter sets."""
    from .model import list_models, load_model
    from .model.parameter_sets import list_parameter_sets, load_parameter_set

    parameters: dict[str, set[str]] = {}
    for name in list_models():
        model = load_model(name)
        parameters[name] = set(model.parameters)
        typer.echo(f"\n{name}: {model.description}")
        typer.echo(f"  outputs: {', '.join(model.outputs)}   states: {', '.join(model.states)}")
        typer.echo(f"  source: {model.source}")
        show("  parameters", model.describe())
        if model.correlations:
            pairs = ", ".join(f"{a}:{b} {r:+.3g}" for (a, b), r in model.correlations.items())
            typer.echo(f"  correlated random effects: {pairs}")
    typer.echo("\nparameter sets (load_model(name, parameters=SET), --parameters SET):")
    for name in list_parameter_sets():
        pset = load_parameter_set(name)
        fits = [model for model, names in parameters.items() if set(pset.values) <= names]
        typer.echo(f"  {name}: {pset.product}; {pset.description}")
        typer.echo(
            f"    reference dose {pset.reference_dose:g} {pset.dose_unit}; models: "
            f"{', '.join(fits)}"
        )
        typer.echo(f"    source: {pset.source}")


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

    check_outputs([(output, "-o", "file"), (plot, "--plot", "figure")], [model_input(model)])
    grid = parse_times(times)
    spec = load_model(model)
    values = parse_assignments(param or [], "--param")
    covariates = parse_assignments(covariate or [], "--covariate")
    frame = run_simulate(spec, {**values, **covariates}, grid)
    if output is not None:
        frame.to_csv(output, index=False)
        typer.echo(f"wrote {output}")
    else:
        show(f"{spec.name} simulation", frame)
    if plot is not None:
        from .plots import plot_simulation

        plot_simulation(frame, spec.outputs, path=plot)
        typer.echo(f"wrote {plot}")


def parse_errors(items: list[str]) -> dict[str, tuple[str, dict[str, float]]]:
    """Parse repeated ``ANALYTE=kind[,name=value...]`` options (fixed error parameters)."""
    errors: dict[str, tuple[str, dict[str, float]]] = {}
    for item in items:
        analyte, sep, rest = item.partition("=")
        kind, *fixed = (part.strip() for part in rest.split(","))
        if not sep or not analyte.strip() or not kind:
            raise ValueError(
                f"--error {item!r}: expected ANALYTE=kind[,name=value], e.g. CART=log or "
                "VEGF=proportional,b=0.1"
            )
        errors[analyte.strip()] = (kind, parse_assignments(fixed, f"--error {item!r}:"))
    return errors


def parse_priors(items: list[str]) -> dict[str, tuple[float, float]]:
    """Parse repeated ``name=mean,sd`` options (mean natural scale, SD estimation scale)."""
    priors: dict[str, tuple[float, float]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        try:
            mean, sd = (float(part) for part in rest.split(","))
            if not sep or not name.strip():
                raise ValueError
        except ValueError:
            raise ValueError(
                f"--prior {item!r}: expected name=mean,sd with two numbers, e.g. tmax=12,0.3"
            ) from None
        priors[name.strip()] = (mean, sd)
    return priors


def match_id(text: str, ids: Any) -> Any:
    """The data's ID written ``text`` on the command line (IDs may be numbers or text)."""
    for subject in ids:
        if str(subject) == text:
            return subject
    try:
        value = float(text)
    except ValueError:
        value = None
    for subject in ids:
        if value is not None and isinstance(subject, int | float | np.number):
            if float(subject) == value:
                return subject
    shown = ", ".join(str(s) for s in list(ids)[:10]) + (" ..." if len(ids) > 10 else "")
    raise ValueError(f"--id {text!r}: no such subject in the data (IDs: {shown})")


def per_subject_path(path: Path, subject: Any) -> Path:
    """``fit.png`` -> ``fit_<ID>.png`` (characters unsafe in file names become ``_``)."""
    label = "".join(c if c.isalnum() or c in "-." else "_" for c in str(subject))
    return path.with_name(f"{path.stem}_{label}{path.suffix}")


def show_fit(result: Any) -> None:
    """Parameter table, OFV/AIC/BIC, convergence and notes of one subject's fit."""
    show(
        f"{result.model.name} fit of ID {result.subject}: {result.n_obs} observations, "
        f"{len(result.names)} estimated parameters",
        result.table(),
    )
    typer.echo(f"\nOFV (-2LL) {result.ofv:.4f}   AIC {result.aic:.4f}   BIC {result.bic:.4f}")
    if result.priors:
        typer.echo(f"objective with prior penalty {result.objective:.4f}")
    status = "converged" if result.success else "did not converge"
    typer.echo(f"optimiser {status}; {result.n_at_best} of {result.n_starts} start(s) at the best")
    for note in result.notes:
        typer.echo(f"note: {note}")


def show_fit_table(table: Any) -> None:
    """Per-subject estimates and criteria, then each subject's notes and failures."""
    frame = table.table().drop(columns="notes")
    show(f"Individual fits of {len(table.results) + len(table.errors)} subjects", frame)
    for subject, result in table.results.items():
        for note in result.notes:
            typer.echo(f"note: ID {subject}: {note}")
    for subject, message in table.errors.items():
        typer.echo(f"ID {subject}: not fitted: {message}")


def check_fixed(model: Any, params: dict[str, Any], errors: dict[str, Any]) -> None:
    """Refuse --fix names that are neither model nor error parameters, and bad values."""
    from .individual.fit import build_parameters
    from .likelihood import ERROR_MODELS

    error_names = [f"{a}_{n}" for a, (kind, _) in errors.items() for n in ERROR_MODELS[kind]]
    for name in params:
        if name not in model.parameters and name not in error_names:
            raise ValueError(
                f"--fix {name}: not a parameter of {model.name} ({', '.join(model.param_names)}) "
                f"nor an error parameter ({', '.join(error_names)})"
            )
    build_parameters(model, params, errors)


def check_analytes(analytes: list[str] | None, available: tuple[str, ...]) -> tuple[str, ...]:
    """The analytes to fit: ``--analyte`` names, each in the data (default: all)."""
    if analytes is None:
        return available
    missing = [a for a in analytes if a not in available]
    if missing:
        raise ValueError(
            f"--analyte {','.join(missing)}: no such analyte in the data (the data have: "
            f"{', '.join(available)})"
        )
    return tuple(analytes)


def check_prior_bounds(model: Any, priors: dict[str, tuple[float, float]]) -> None:
    """Refuse a ``--prior`` whose mean is outside its parameter's bounds (or not finite)."""
    for name, (mean, sd) in priors.items():
        p = model.parameters.get(name)
        if p is None:
            continue
        if not (math.isfinite(mean) and p.lower < mean < p.upper):
            raise ValueError(
                f"--prior {name}={mean:g},{sd:g}: the prior mean {mean:g} is outside the "
                f"bounds of {name} ({p.lower:g} to {p.upper:g} {p.unit}); give a mean "
                "inside them (natural scale)"
            )
        if not (math.isfinite(sd) and sd > 0):
            raise ValueError(
                f"--prior {name}={mean:g},{sd:g}: the prior SD must be a number > 0 "
                "(estimation scale)"
            )


@app.command()
@reports_errors
def fit(
    model: Annotated[str, typer.Argument(help="Built-in model name or path to a .toml file.")],
    data: Annotated[Path, typer.Argument(help="Dataset (CSV, long NONMEM-style format).")],
    id: Annotated[
        str | None, typer.Option("--id", help="Subject to fit (default: every subject).")
    ] = None,
    fix: Annotated[
        list[str] | None,
        typer.Option(
            "--fix", help="Fix a parameter at a value: name=value (model or error parameter)."
        ),
    ] = None,
    error: Annotated[
        list[str] | None,
        typer.Option(
            "--error",
            help="Error model: ANALYTE=kind[,name=value] with kind log, proportional, "
            "additive or combined; name=value fixes an error parameter, e.g. "
            "VEGF=proportional,b=0.1 (default: log).",
        ),
    ] = None,
    prior: Annotated[
        list[str] | None,
        typer.Option(
            "--prior", help="Gaussian prior: name=mean,sd (mean natural, SD estimation scale)."
        ),
    ] = None,
    n_starts: Annotated[str, typer.Option(help="Number of optimiser starts (>= 1).")] = "1",
    seed: Annotated[
        str, typer.Option(help="Seed of the extra starts (a non-negative integer).")
    ] = "1",
    analyte: AnalyteOption = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the fit as JSON.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Save the fit figure (PNG/PDF/SVG); with several subjects one file per "
            "subject, named <stem>_<ID><suffix>."
        ),
    ] = None,
) -> None:
    """Fit a model to each subject's data (or one, with --id) by maximum likelihood.

    Censored points (CENS=1) enter by the M3 likelihood; with --prior the fit is MAP.
    Prints the parameter table, OFV/AIC/BIC and any warnings.
    """
    import warnings

    from .data import read_dataset
    from .errors import FitWarning
    from .individual.fit import error_spec, prior_means
    from .individual.fit import fit as run_fit
    from .individual.result import FitResult
    from .model import load_model

    check_outputs([(output, "-o", "file"), (plot, "--plot", "figure")], [data, model_input(model)])
    starts = parse_count(n_starts, "--n-starts", minimum=1)
    seed_value = parse_seed(seed)
    analytes = parse_analytes(analyte)
    spec = load_model(model)
    ds = read_dataset(data)
    subject = None if id is None else match_id(id, ds.ids)
    fitted = check_analytes(analytes, ds.analytes)
    errors = parse_errors(error or [])
    params = {
        name: {"value": value, "vary": False}
        for name, value in parse_assignments(fix or [], "--fix").items()
    }
    priors = parse_priors(prior or [])
    check_prior_bounds(spec, priors)
    check_fixed(spec, params, error_spec(errors, fitted))
    prior_means(spec, priors)
    who = f"ID {subject}" if subject is not None else f"{len(ds.ids)} subject(s)"
    clock = started(f"fitting {spec.name} to {who}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_fit(
            spec, ds, id=subject, params=params, error=errors, priors=priors,
            n_starts=starts, seed=seed_value, analytes=analytes,
        )  # fmt: skip
    finished("fit done", clock)
    for warning in caught:
        if not issubclass(warning.category, FitWarning):
            typer.echo(f"warning: {one_line(warning.message)}", err=True)
    results = [result] if isinstance(result, FitResult) else list(result.results.values())
    if isinstance(result, FitResult):
        show_fit(result)
    else:
        show_fit_table(result)
        if not results:
            raise FitError("no subject could be fitted (see above)")
    if output is not None:
        output.write_text(result.to_json(), encoding="utf-8")
        typer.echo(f"\nwrote {output}")
    if plot is not None:
        for one in results:
            path = plot if len(results) == 1 else per_subject_path(plot, one.subject)
            one.plot(path)
            typer.echo(f"wrote {path}")


def parse_covariates(items: list[str]) -> dict[str, list[str]]:
    """Parse repeated ``PARAM~COV`` options into parameter -> covariate names."""
    covariates: dict[str, list[str]] = {}
    for item in items:
        parameter, sep, covariate = (part.strip() for part in item.partition("~"))
        if not sep or not parameter or not covariate:
            raise ValueError(f"--covariate {item!r}: expected PARAM~COVARIATE, e.g. C0~DOSE")
        covariates.setdefault(parameter, []).append(covariate)
    return covariates


def parse_pair(text: str, option: str) -> tuple[int, int]:
    """Parse ``K1,K2`` (two positive integers)."""
    try:
        first, second = (int(part) for part in text.split(","))
        if first < 1 or second < 1:
            raise ValueError
    except ValueError:
        message = f"{option} {text!r}: expected two positive integers, e.g. 300,150"
        raise ValueError(message) from None
    return first, second


@app.command()
@reports_errors
def popfit(
    model: Annotated[str, typer.Argument(help="Built-in model name or path to a .toml file.")],
    data: Annotated[Path, typer.Argument(help="Dataset of several subjects (CSV).")],
    random: Annotated[
        str, typer.Option(help="Parameters with a random effect, comma-separated.")
    ] = "C0,rho,alpha",
    covariate: Annotated[
        list[str] | None,
        typer.Option(help="Covariate effect PARAM~COV (repeatable), e.g. C0~DOSE."),
    ] = None,
    error: Annotated[
        list[str] | None, typer.Option(help="ANALYTE=kind[,name=value] (repeatable).")
    ] = None,
    omega: Annotated[str, typer.Option(help="'diagonal' or 'block'.")] = "diagonal",
    n_iter: Annotated[
        str, typer.Option(help="SAEM iterations: exploration,smoothing.")
    ] = "300,150",
    seed: Annotated[
        str, typer.Option(help="Seed of every random draw (a non-negative integer).")
    ] = "1",
    analyte: AnalyteOption = None,
    polish: Annotated[
        bool,
        typer.Option(
            help="Move the SAEM estimates to the maximum of the -2LL by quadrature "
            "(models with at most four random effects)."
        ),
    ] = True,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the fit as JSON.")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Directory for the GOF and VPC figures.")
    ] = None,
) -> None:
    """Population fit (nonlinear mixed effects) by SAEM."""
    from .data import read_dataset
    from .model import load_model
    from .population import fit_population
    from .population.result import polish_line

    figures = [] if plots is None else [plots / "gof.png", plots / "vpc.png"]
    check_outputs(
        [(output, "-o", "file"), (plots, "--plots", "directory")]
        + [(path, "--plots", "file") for path in figures if path.exists()],
        [data, model_input(model)],
    )
    names = [name.strip() for name in random.split(",")]
    if not all(names):
        raise ValueError(
            f"--random {random!r}: expected parameter names separated by commas, e.g. C0,rho,alpha"
        )
    seed_value = parse_seed(seed)
    iterations = parse_pair(n_iter, "--n-iter")
    analytes = parse_analytes(analyte)
    spec = load_model(model)
    ds = read_dataset(data)
    check_analytes(analytes, ds.analytes)
    effects = parse_covariates(covariate or [])
    errors = parse_errors(error or []) or None
    clock = started(
        f"population fit of {spec.name} to {len(ds.ids)} subjects by SAEM "
        f"({iterations[0]} + {iterations[1]} iterations, then importance sampling)"
    )
    result = fit_population(
        spec,
        ds,
        random=names,
        covariates=effects,
        error=errors,
        omega=omega,
        seed=seed_value,
        n_iter=iterations,
        analytes=analytes,
        polish=polish,
    )
    finished("population fit done", clock)
    typer.echo(
        f"{result.model.name}: {len(result.ids)} subjects, {result.n_obs} observations, "
        f"SAEM {n_iter} iterations, seed {seed_value}"
    )
    show("Fixed effects", result.fixed_effects)
    show("Between-subject variability (SD, estimation scale)", result.omega_table)
    show("Residual error", result.sigma)
    typer.echo(
        f"\nOFV (-2LL, importance sampling) {result.ofv:.3f} (MC SE {result.ofv_se:.3f})"
        f"   AIC {result.aic:.3f}   BIC {result.bic:.3f}"
    )
    if math.isfinite(result.ofv_quadrature):
        typer.echo(f"OFV (-2LL, adaptive Gauss-Hermite quadrature) {result.ofv_quadrature:.3f}")
    typer.echo(polish_line(result.settings["polish"]))
    for note in result.notes:
        typer.echo(f"note: {note}")
    if output is not None:
        output.write_text(result.to_json(), encoding="utf-8")
        typer.echo(f"wrote {output}")
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        for name, draw in (("gof.png", result.plot_gof), ("vpc.png", result.plot_vpc)):
            draw(plots / name)
            typer.echo(f"wrote {plots / name}")


@app.command()
@reports_errors
def scenarios(
    source: Annotated[
        str,
        typer.Argument(help="Model name or .toml path (file omegas), or a popfit JSON file."),
    ],
    doses: Annotated[
        str | None,
        typer.Option(help="Doses in CAR-T cells/kg, comma-separated (default 1e6,2e6,3e6)."),
    ] = None,
    regimens: Annotated[
        str | None,
        typer.Option(
            help="Compare dosing regimens instead of doses, separated by ';': an amount "
            "('1e8'), AMOUNTxN/DAYS ('3.3e7x3/7': 3 infusions every 7 days) or day:amount "
            "pairs ('0:5e7,14:5e7'), in the model's dose unit."
        ),
    ] = None,
    level: Annotated[
        float | None,
        typer.Option(help="With --regimens: report the days at or above this output level."),
    ] = None,
    n: Annotated[str, typer.Option(help="Virtual patients (the same at every dose).")] = "1000",
    seed: Annotated[
        str, typer.Option(help="Seed of every random draw (a non-negative integer).")
    ] = "1",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the per-patient table (CSV).")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Directory for the exposure and band figures.")
    ] = None,
    parameters: Annotated[
        str | None,
        typer.Option(help="Named parameter set of the model (see `cartpk models`)."),
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option(help="Stream the per-patient table to this Parquet file (large n)."),
    ] = None,
    lloq: Annotated[
        float | None,
        typer.Option(help="Also report predicted persistence per dose below this LLOQ."),
    ] = None,
    landmarks: Annotated[
        str, typer.Option(help="Days for the fractions still detectable (with --lloq).")
    ] = "180,365,730",
) -> None:
    """Virtual patients at several doses: exposure, biomarker response and (with --lloq)
    predicted persistence per dose; or, with --regimens, the same patients under several
    dosing regimens: exposure per infusion and cumulative, accumulation, time above a level."""
    from .model import load_model
    from .population.result import PopulationFit
    from .scenarios import Regimen, compare_regimens
    from .scenarios import scenarios as run_scenarios

    figures = [] if plots is None else [plots / "exposure.png", plots / "bands.png"]
    check_outputs(
        [(output, "-o", "file"), (write, "--write", "file"), (plots, "--plots", "directory")]
        + [(path, "--plots", "file") for path in figures if path.exists()],
        [model_input(source) or (Path(source) if source.endswith(".json") else None)],
    )
    seed = parse_seed(seed)  # type: ignore[assignment]
    origin: Any = source
    if source.endswith(".json"):
        if parameters is not None:
            raise ValueError("--parameters: only for a model source, not a population fit")
        origin = PopulationFit.from_json(Path(source).read_text(encoding="utf-8"))
    elif parameters is not None:
        origin = load_model(source, parameters=parameters)
    if regimens is not None:
        given = [name for name, value in (("--doses", doses), ("--write", write),
                 ("--lloq", lloq), ("--plots", plots)) if value is not None]  # fmt: skip
        if given:
            raise ValueError(f"--regimens: not with {', '.join(given)}")
        chosen = [Regimen.parse(part) for part in regimens.split(";") if part.strip()]
        count = parse_count(n, "--n", minimum=1)
        n = check_patients(count, len(chosen), False)  # type: ignore[assignment]
        result = compare_regimens(origin, chosen, n=n, seed=seed, level=level)
        show(f"{n} virtual patients per regimen (seed {seed}; medians)", result.summary())
        if output is not None:
            result.infusions.to_csv(output, index=False)
            typer.echo(f"wrote {output}")
        return
    if level is not None:
        raise ValueError("--level: only with --regimens")
    doses = "1e6,2e6,3e6" if doses is None else doses
    try:
        levels = [float(part) for part in doses.split(",")]
    except ValueError:
        raise ValueError(f"--doses {doses!r}: expected numbers, e.g. 1e6,2e6,3e6") from None
    count = parse_count(n, "--n", minimum=1)
    n = check_patients(count, len(levels), write is not None)  # type: ignore[assignment]
    days = []
    if lloq is not None:
        if not (math.isfinite(lloq) and lloq > 0):
            raise ValueError(f"--lloq {lloq:g}: expected a positive LLOQ (the output's unit)")
        try:
            days = [float(part) for part in landmarks.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"--landmarks {landmarks!r}: expected days, e.g. 180,365") from None
        if any(not 0 <= day <= 1825 for day in days):
            raise ValueError(f"--landmarks {landmarks!r}: expected days in 0-1825 (the horizon)")
    result = run_scenarios(origin, doses=levels, n=n, seed=seed, write=write)
    show(f"{n} virtual patients per dose (seed {seed})", result.summary())
    if lloq is not None:
        show(
            f"Predicted persistence below LLOQ {lloq:g} (days; horizon 1825)",
            result.persistence(lloq, landmarks=days),
        )
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    if write is not None:
        typer.echo(f"wrote {write}")
    if output is not None:
        result.to_csv(output)
        typer.echo(f"wrote {output}")
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        result.plot_exposure(plots / "exposure.png")
        result.plot_bands(plots / "bands.png")
        typer.echo(f"wrote {plots / 'exposure.png'} and {plots / 'bands.png'}")


@app.command()
@reports_errors
def persistence(
    file: Annotated[Path, typer.Argument(help="Dataset (CSV, long NONMEM-style format).")],
    analyte: Annotated[str | None, typer.Option(help="Analyte, e.g. CART.")] = None,
    landmarks: Annotated[
        str, typer.Option(help="Days for the fractions still detectable, comma-separated.")
    ] = "180,365,730",
    by: Annotated[
        str | None, typer.Option(help="Covariate to group by (log-rank), e.g. DOSE.")
    ] = None,
    lloq: Annotated[
        float | None, typer.Option(help="LLOQ for every row (default: the LLOQ/CENS columns).")
    ] = None,
    rule: Annotated[
        str, typer.Option(help="tlast, or consecutive (first of --k consecutive BLQ samples).")
    ] = "tlast",
    k: Annotated[int, typer.Option(help="Consecutive BLQ samples confirming a loss.")] = 2,
    censor: Annotated[
        str | None, typer.Option(help="0/1 columns ending follow-up (e.g. DROPOUT,NEWTHERAPY).")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the Kaplan-Meier figure.")] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the per-subject table (CSV).")
    ] = None,
) -> None:
    """Persistence: per subject (tlast, tbql, duration, censoring), then Kaplan-Meier."""
    from .persistence import kaplan_meier
    from .persistence import persistence as per_subject

    check_outputs([(output, "-o", "file"), (plot, "--plot", "figure")], inputs=[file])
    try:
        days = [float(part) for part in landmarks.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--landmarks {landmarks!r}: expected days, e.g. 180,365,730") from None
    columns = [c.strip() for c in censor.split(",") if c.strip()] if censor else []
    table = per_subject(file, analyte, lloq=lloq, rule=rule, k=k, censor=columns, by=by)
    km = kaplan_meier(table, by=by, landmarks=days)
    show(f"Persistence per subject ({table['rule'].iloc[0]}; days)", table)
    show("Kaplan-Meier (days; 95 % CI, log-log; NaN: not reached)", km.summary)
    show("Fraction still detectable at the landmarks", km.landmarks)
    if by is not None:
        test = km.logrank
        typer.echo(
            f"\nlog-rank test across {by}: chi-square {test['chisq']:.4g} on {test['df']} df, "
            f"p = {test['p']:.4g}"
        )
    if output is not None:
        table.to_csv(output, index=False)
        typer.echo(f"wrote {output}")
    if plot is not None:
        km.plot(plot)
        typer.echo(f"wrote {plot}")


@app.command("exposure-response")
@reports_errors
def exposure_response(
    table: Annotated[Path, typer.Argument(help="Subject table (CSV, one row per subject).")],
    exposure: Annotated[
        str, typer.Option(help="Exposure column (positive), e.g. cmax or auc_0_28.")
    ] = "cmax",
    outcome: Annotated[
        str, typer.Option(help="Outcome column: 0/1, or integer grades (e.g. CRS grade).")
    ] = "CRS_GE2",
    by: Annotated[
        str | None, typer.Option(help="Group column for the figure and rates, e.g. DOSE.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="binary or ordinal (default: from the outcome values).")
    ] = None,
    at_least: Annotated[
        int | None, typer.Option(help="Ordinal: draw P(grade >= this) (default: every grade).")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the figure (PNG/PDF/SVG).")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the whole result as JSON.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write the coefficient table (CSV).")
    ] = None,
) -> None:
    """Exposure-response: logistic (0/1 outcome) or proportional-odds (grades) regression
    on log2(exposure); prints the coefficients and the odds ratio per doubling of exposure.
    --by groups the figure and the observed rates; it is not in the model."""
    from .exposure_response import exposure_response as run_exposure_response

    check_outputs(
        [(plot, "--plot", "figure"), (json_path, "--json", "file"), (output, "-o", "file")],
        inputs=[table],
    )
    result = run_exposure_response(
        pd.read_csv(table), exposure=exposure, outcome=outcome, by=by, kind=kind
    )
    figure = result.plot(at_least=at_least) if plot is not None else None
    odds = result.odds_ratio_per_doubling
    show(
        f"Exposure-response of {outcome} on {exposure} ({result.model_name}, "
        f"{result.n} subjects; Wald 95 % CI)",
        result.coefficients,
    )
    typer.echo(
        f"\nodds ratio per doubling of {exposure}: {odds['estimate']:.4g} "
        f"(95 % CI {odds['ci_low']:.4g} to {odds['ci_high']:.4g})"
    )
    show("Observed per exposure quartile (exact 95 % CI)", result.observed())
    if by is not None:
        show(f"Observed by {by} (exact 95 % CI)", result.by_group())
    if json_path is not None:
        result.to_json(json_path)
        typer.echo(f"wrote {json_path}")
    if output is not None:
        result.coefficients.to_csv(output, index=False)
        typer.echo(f"wrote {output}")
    if figure is not None:
        figure.savefig(plot, dpi=120, bbox_inches="tight")
        typer.echo(f"wrote {plot}")


DEMO_FIGURES = {
    "poems": Path("poems_vegf.png"),
    "rrmm": Path("rrmm_exposure_response.png"),
    "nmosd": Path("nmosd_trial.png"),
}


@app.command()
@reports_errors
def demo(
    case: Annotated[
        str,
        typer.Argument(
            help="poems: NCA of the bundled trial and the POEMS seed case; rrmm: the "
            "KQ-2003 myeloma dose escalation (NCA, joint population fit, "
            "exposure-response, per-dose table); nmosd: BCMA CAR-T in NMOSD (population "
            "fit to CAR-T, B cells and AQP4-IgG titres as intervals, recovery of the truth)."
        ),
    ] = "poems",
    figure: Annotated[
        Path | None,
        typer.Option(
            help="Where to save the figure (default poems_vegf.png, "
            "rrmm_exposure_response.png for rrmm, nmosd_trial.png for nmosd)."
        ),
    ] = None,
) -> None:
    """Run the worked examples on the bundled data sets."""
    if case not in DEMO_FIGURES:
        raise typer.BadParameter(f"{case!r}: expected one of {', '.join(DEMO_FIGURES)}")
    figure = DEMO_FIGURES[case] if figure is None else figure
    check_outputs([(figure, "--figure", "figure")])
    if case in ("rrmm", "nmosd"):
        (rrmm_demo if case == "rrmm" else nmosd_demo)(figure)
        return
    from .data import bundled
    from .nca import nca as run_nca
    from .nca import nca_summary

    typer.echo("cartpk demo 1: NCA of the bundled synthetic phase 1 CAR-T trial")
    typer.echo("(30 subjects, 1.0 / 2.0 / 3.0 x10^6 CAR-T cells/kg; qPCR copies/ug DNA)")
    table = run_nca(bundled("phase1_trial.csv"), analyte="CART", intervals=[(0, 28)])
    summary = nca_summary(table, by="DOSE")
    keep = ["cmax", "tmax", "auc_0_28", "half_life"]
    show("Per-dose summary", summary[summary["parameter"].isin(keep)])
    poems_demo(figure)


def rrmm_demo(figure: Path) -> None:
    """The KQ-2003 myeloma dose escalation on the bundled synthetic 29-patient trial."""
    from .demo.rrmm import CRS3_LIMIT, plot_rrmm, rrmm_analysis

    typer.echo("cartpk demo rrmm: KQ-2003 (BCMA/CD19 CAR-T) in myeloma, NCT06223646-like")
    typer.echo("(bundled synthetic trial: 29 patients at 1.0 / 2.0 / 3.0 x10^6 CAR-T cells/kg;")
    typer.echo(
        " CAR-T copies/ug, IL-6 and IFN-gamma pg/mL, M-protein g/L; truth in data/README.md)"
    )
    result = rrmm_analysis()
    show("1. NCA per dose level (median, range)", result["nca"])
    fit = result["fit"]
    typer.echo("\n2. Joint population fit of ck_crs to CART, IL6, IFNG and MPROT")
    typer.echo(fit.summary())
    for name, er in result["er"].items():
        typer.echo(f"\n3. Exposure-response ({name}) on model-based CAR-T Cmax")
        typer.echo(er.summary())
    escalation = result["escalation"]
    show(
        "4. Per dose level: estimate [90 % interval over the fits' uncertainty]; medians "
        "over virtual patients, risks their mean",
        escalation.wide(),
    )
    for _, row in result["dose_for"].iterrows():
        basis = "estimate" if row["bound"] == "estimate" else "upper 90 % bound"
        typer.echo(
            f"\nDose finding ({basis} of P(CRS >= 3) below {CRS3_LIMIT:g}): "
            f"{row['dose']:.3g} cells/kg ({row['note']})"
        )
    for message in result["warnings"]:
        typer.echo(f"fit warning: {one_line(message)}")
    plot_rrmm(result["er"], figure)
    typer.echo(f"\nwrote {figure}")


def nmosd_demo(figure: Path) -> None:
    """BCMA CAR-T in NMOSD on the bundled synthetic 12-patient trial."""
    from .demo.nmosd import nmosd_analysis, plot_nmosd

    typer.echo("cartpk demo nmosd: BCMA CAR-T (CT103A-like) in AQP4-IgG+ NMOSD")
    typer.echo("(bundled synthetic trial: 12 patients at 1e6 CAR-T cells/kg; CAR-T copies/ug,")
    typer.echo(" CD19+ B cells/uL, AQP4-IgG titres as dilution-step intervals; truth in")
    typer.echo(" data/README.md)")
    result = nmosd_analysis()
    fit = result["fit"]
    typer.echo("\n1. Population fit of ck_blineage (BCMA target set)")
    typer.echo(fit.summary())
    show("2. Recovery: estimate beside the truth and the 12 patients' sample", result["recovery"])
    checks = result["checks"]
    show("3. Per patient: AQP4-IgG (model-based, conditional modes; titres as reported)", checks)
    typer.echo(
        f"\nAQP4-IgG lower at 5.5 months than at baseline: {int(checks['aab_fell'].sum())} of "
        f"{len(checks)} (CT103A: 11 of 12); CAR-T quantified beyond 6 months: "
        f"{int(checks['cart_beyond_6_months'].sum())} of {len(checks)} (CT103A: 17 %)"
    )
    for message in result["warnings"]:
        typer.echo(f"fit warning: {one_line(message)}")
    plot_nmosd(fit, figure)
    typer.echo(f"\nwrote {figure}")


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


def main() -> int:
    """Console-script entry point: a usage error (unknown option, a value of the wrong type)
    is one ``error: ...`` line naming the option, with exit status 2, like every other."""
    # typer vendors click: its UsageError is the base of the public typer.BadParameter
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        code = app(prog_name="cartpk", standalone_mode=False)
    except usage_error as err:
        if not err.format_message().strip():  # no arguments: the help was shown
            return 2
        command = err.ctx.command_path if err.ctx is not None else "cartpk"
        typer.echo(f"error: {one_line(err.format_message())} (see {command} --help)", err=True)
        return 2
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
