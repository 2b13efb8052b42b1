"""Named parameter sets: published typical values and variability of one CAR-T product.

A parameter set is a small TOML file (built-ins in ``models/sets/``, format in
``models/README.md``) holding, for the kinetic parameters of a model, typical values and
between-subject SDs (``omega``, estimation scale) with the correlations of the random
effects, the product's reference dose, the published non-compartmental summaries the set
is checked against, and how that check samples a virtual trial. Every number carries its
source in the file's comments. ``load_model("ck_stein", parameters="cilta-cel")`` applies a
set (:meth:`cartpk.Model.with_parameter_set`); this module only reads and checks the files,
so it depends on no other cartpk module.

Units: doses in CAR-T cells/kg, Cmax in copies/ug, AUC in copies/ug x day, times in days.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import ModelError

__all__ = ["ParameterSet", "correlation_pairs", "list_parameter_sets", "load_parameter_set"]

SECTIONS = {
    "set": ("name", "product", "description", "source", "reference_dose", "dose_unit"),
    "parameters": ("value", "omega"),
    "correlations": (),
    "published": (
        "source",
        "n",
        "population",
        "cmax_gmean",
        "cmax_gcv",
        "cmax_mean",
        "cmax_sd",
        "auc_0_28_gmean",
        "auc_0_28_gcv",
        "auc_0_28_mean",
        "auc_0_28_sd",
        "tmax_median",
    ),
    "check": ("times", "residual_sd", "lloq"),
}
TEXT_KEYS = frozenset({"name", "product", "description", "source", "dose_unit", "population"})


@dataclass(frozen=True)
class ParameterSet:
    """One product's parameter set.

    Attributes:
        name, product, description, source: what the set is and where it comes from.
        path: the file.
        reference_dose: the dose (CAR-T cells/kg) the published figures belong to.
        values: parameter -> typical value, natural scale.
        omega: parameter -> between-subject SD on its estimation scale (parameters
            without one have no variability).
        correlations: (A, B) -> correlation of the random effects of A and B.
        published: the published summaries (``cmax_gmean``, ``cmax_gcv`` in %, or
            ``cmax_mean`` / ``cmax_sd``; the same for ``auc_0_28``; ``tmax_median``; ``n``;
            ``source``).
        check: ``times`` (days), ``residual_sd`` (log scale) and ``lloq`` (copies/ug) of
            the virtual trial that checks the set against ``published``.
    """

    name: str
    product: str
    description: str
    source: str
    path: Path
    reference_dose: float
    dose_unit: str
    values: dict[str, float]
    omega: dict[str, float]
    correlations: dict[tuple[str, str], float]
    published: dict[str, Any]
    check: dict[str, Any]

    def geometric(self, metric: str) -> tuple[float, float]:
        """Published geometric mean and geometric CV (%) of ``metric`` ("cmax" or
        "auc_0_28"). A set that publishes an arithmetic mean and SD is converted under a
        log-normal distribution: CV = SD / mean, geometric CV = CV, geometric mean =
        mean / sqrt(1 + CV^2)."""
        if f"{metric}_gmean" in self.published:
            return self.published[f"{metric}_gmean"], self.published[f"{metric}_gcv"]
        mean, sd = self.published[f"{metric}_mean"], self.published[f"{metric}_sd"]
        cv = sd / mean
        return mean / math.sqrt(1 + cv * cv), 100 * cv


def list_parameter_sets() -> list[str]:
    """Names of the built-in parameter sets, sorted."""
    names = (entry.name for entry in files("cartpk.models").joinpath("sets").iterdir())
    return sorted(name[: -len(".toml")] for name in names if name.endswith(".toml"))


def load_parameter_set(name_or_path: str | os.PathLike[str]) -> ParameterSet:
    """A built-in set by name (see :func:`list_parameter_sets`) or a set file by path."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and not ("/" in text or text.endswith(".toml")):
        if text not in list_parameter_sets():
            raise ModelError(
                f"unknown parameter set {text!r}: built-in sets are "
                f"{', '.join(list_parameter_sets())}; or give the path of a set file"
            )
        path = Path(str(files("cartpk.models").joinpath("sets").joinpath(f"{text}.toml")))
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"parameter set file {text!r} does not exist")
    return _read(path)


def correlation_pairs(raw: object, where: str) -> dict[tuple[str, str], float]:
    """``"A:B" = r`` entries of a ``[correlations]`` table as {(A, B): r}.

    Only the form is checked here; whether A and B have variability and whether the
    matrix is positive definite is checked against the model's parameters.
    """
    if not isinstance(raw, dict):
        raise ModelError(f'{where}: must be a table of "A:B" = correlation')
    out: dict[tuple[str, str], float] = {}
    for key, value in raw.items():
        names = tuple(part.strip() for part in key.split(":"))
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise ModelError(f'{where} "{key}": expected "A:B", two different parameter names')
        pair = (names[0], names[1])
        if pair in out or pair[::-1] in out:
            raise ModelError(f'{where} "{key}": this pair is given twice')
        out[pair] = _finite(value, f'{where} "{key}"')
    return out


def _read(path: Path) -> ParameterSet:
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ModelError(f"{where}: TOML syntax error: {err}") from None
    except UnicodeDecodeError as err:
        raise ModelError(f"{where}: not UTF-8 text ({err.reason})") from None
    for section in raw:
        if section not in SECTIONS:
            raise ModelError(f"{where}: [{section}]: unknown section ({', '.join(SECTIONS)})")
    for section in ("set", "parameters", "published", "check"):
        if section not in raw:
            raise ModelError(f"{where}: [{section}]: required section is missing")
    head = _table(raw["set"], f"{where}: [set]", SECTIONS["set"])
    for key in ("name", "source", "reference_dose"):
        if key not in head:
            raise ModelError(f"{where}: [set] {key}: missing")
    values, omega = {}, {}
    if not isinstance(raw["parameters"], dict) or not raw["parameters"]:
        raise ModelError(f"{where}: [parameters]: expected [parameters.NAME] tables")
    for name, body in raw["parameters"].items():
        key = f"{where}: [parameters.{name}]"
        body = _table(body, key, SECTIONS["parameters"])
        if "value" not in body:
            raise ModelError(f"{key}: missing 'value'")
        values[name] = body["value"]
        if "omega" in body:
            if body["omega"] < 0:
                raise ModelError(f"{key} omega: must be >= 0, got {body['omega']:g}")
            omega[name] = body["omega"]
    published = _table(raw["published"], f"{where}: [published]", SECTIONS["published"])
    check = _check_table(raw["check"], f"{where}: [check]")
    dose = head["reference_dose"]
    if dose <= 0:
        raise ModelError(f"{where}: [set] reference_dose: must be > 0, got {dose:g}")
    return ParameterSet(
        name=head["name"],
        product=head.get("product", ""),
        description=head.get("description", ""),
        source=head["source"],
        path=path,
        reference_dose=dose,
        dose_unit=head.get("dose_unit", "CAR-T cells/kg"),
        values=values,
        omega=omega,
        correlations=correlation_pairs(raw.get("correlations", {}), f"{where}: [correlations]"),
        published=published,
        check=check,
    )


def _table(raw: object, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A table with only ``allowed`` keys; text keys hold strings, the others numbers."""
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: must be a table, got {raw!r}")
    out = {}
    for key, value in raw.items():
        if key not in allowed:
            raise ModelError(f"{where} {key}: unknown key (keys: {', '.join(allowed)})")
        if key in TEXT_KEYS:
            if not isinstance(value, str):
                raise ModelError(f"{where} {key}: expected a string, got {value!r}")
            out[key] = value
        elif key != "times":
            out[key] = _finite(value, f"{where} {key}")
        else:
            out[key] = value
    return out


def _check_table(raw: object, where: str) -> dict[str, Any]:
    table = _table(raw, where, SECTIONS["check"])
    for key in SECTIONS["check"]:
        if key not in table:
            raise ModelError(f"{where} {key}: missing")
    times = table["times"]
    if not isinstance(times, list) or len(times) < 3:
        raise ModelError(f"{where} times: expected a list of at least 3 sampling days")
    times = [_finite(t, f"{where} times") for t in times]
    if any(b <= a for a, b in zip(times, times[1:], strict=False)) or times[0] < 0:
        raise ModelError(f"{where} times: expected increasing days from 0 on")
    if table["residual_sd"] < 0 or table["lloq"] <= 0:
        raise ModelError(f"{where}: residual_sd must be >= 0 and lloq > 0")
    return {**table, "times": times}


def _finite(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ModelError(f"{where}: expected a finite number, got {value!r}")
    return float(value)
