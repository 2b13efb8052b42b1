"""What the two result classes share (:class:`cartpk.FitResult` and
:class:`cartpk.PopulationFit`): Wald intervals, the JSON helpers, and how a saved fit
stores and rebuilds its model.

A leaf module: it imports nothing from :mod:`cartpk.individual` or :mod:`cartpk.population`.
The JSON carries the model itself (its file's TOML text and that text's SHA-256) besides its
name and path: reading it back rebuilds the model the fit was made with, and warns
(:class:`ModelChangedWarning`) when the file at that path (or the built-in model of that
name) now differs, or no longer exists. JSON written before the model text was stored
(format version 1) is read by loading the model by name or path, as then.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from .model import Model, list_models, load_model, model_from_text
from .scales import delta_se, to_natural

# --- estimates with SE and 95 % interval -------------------------------------------------------


def estimate_row(
    name: str,
    value: float,
    x: float,
    sd: float | None,
    scale: str,
    lower: float,
    upper: float,
    unit: str,
) -> dict[str, Any]:
    """One row of a parameter table: ``value`` (natural scale) with its SE, RSE % and 95 %
    interval from the SD ``sd`` of its estimation-scale value ``x``.

    The SE is the delta method's; the interval is x ± 1.96·sd transformed to the natural
    scale. ``sd`` None (no covariance) gives NaN for all three.
    """
    se = low = high = np.nan
    if sd is not None:
        low, high = to_natural(np.array([x - 1.96 * sd, x + 1.96 * sd]), scale, lower, upper)
        se = delta_se(x, sd, scale, lower, upper)
    return {
        "parameter": name,
        "estimate": value,
        "se": se,
        "rse_pct": 100 * se / abs(value) if value else np.nan,
        "ci95_low": low,
        "ci95_high": high,
        "unit": unit,
    }


# --- JSON helpers --------------------------------------------------------------------------


def cartpk_version() -> str:
    """The installed cartpk version."""
    return version("cartpk")


def plain(value: Any) -> Any:
    """``value`` with numpy types as Python ones, tuples as lists, NaN as None, ±inf as text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        x = float(value)
        if math.isnan(x):
            return None
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
    if isinstance(value, str | np.str_):
        return str(value)
    if value is None:
        return None
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to JSON")


def number(value: Any) -> float:
    """A float from :func:`plain` output (None is NaN, "inf" is infinity)."""
    return math.nan if value is None else float(value)


def floats(mapping: dict[str, Any]) -> dict[str, float]:
    """A mapping of :func:`plain` numbers as str -> float."""
    return {str(k): number(v) for k, v in mapping.items()}


def matrix(rows: list[list[Any]], columns: int) -> np.ndarray:
    """A float matrix (k, columns) from nested JSON lists (None is NaN, "inf" infinity)."""
    values = [[number(v) for v in row] for row in rows]
    return np.array(values, dtype=float).reshape(len(values), columns)


def parse_json(text: str, what: str) -> dict[str, Any]:
    """Decode JSON text, naming what was expected when it is not JSON."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}.from_json: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}.from_json: expected a JSON object")
    return data


def check_format(data: dict[str, Any], expected: str, newest: int) -> None:
    """Refuse JSON that is not an ``expected`` document of a version up to ``newest``."""
    found = data.get("format")
    if found != expected:
        raise ValueError(f"JSON format {found!r}: expected {expected!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > newest:
        raise ValueError(
            f"{expected} format version {version!r}: this cartpk ({cartpk_version()}) reads "
            f"versions up to {newest}"
        )


# --- the model of a saved fit --------------------------------------------------------------


class ModelChangedWarning(UserWarning):
    """A saved fit's model file has changed (or gone) since the fit was saved; the model
    stored in the fit is used."""


def builtin_path(name: str) -> Path:
    return Path(str(files("cartpk.models").joinpath(f"{name}.toml")))


def text_digest(text: str) -> str:
    """SHA-256 (hex) of a model file's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_reference(model: Model) -> dict[str, Any]:
    """How a saved fit stores its model: ``name``, ``path`` (absolute; not for a built-in
    model), ``text`` (the TOML text the model was built from), ``sha256`` (of that text)
    and ``parameter_set`` (its name, or None)."""
    builtin = model.name in list_models() and (
        builtin_path(model.name).resolve() == model.path.resolve()
    )
    reference: dict[str, Any] = {"name": model.name}
    if not builtin:
        reference["path"] = str(model.path.resolve())
    if model.text:
        reference["text"] = model.text
        reference["sha256"] = text_digest(model.text)
    reference["parameter_set"] = model.parameter_set
    return reference


def model_from(reference: dict[str, Any], cache: dict[str, Model]) -> Model:
    """The model a saved fit refers to (once per reference, ``cache``).

    With the stored text (format version 2) the model is rebuilt from it, and a
    :class:`ModelChangedWarning` says when the file at the stored path (or the built-in
    model of that name) now differs or is gone. Without it (version 1) the model is loaded
    by path or name.
    """
    text = reference.get("text")
    key = text_digest(text) if isinstance(text, str) else reference.get("path") or reference["name"]
    if key in cache:
        return cache[key]
    if isinstance(text, str):
        if reference.get("sha256") not in (None, key):
            raise ValueError(
                f"model {reference['name']!r} of the stored fit: its text does not match its "
                "SHA-256 (the JSON was edited)"
            )
        model = _stored_model(reference, text)
    else:
        path = reference.get("path")
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(
                f"model file {path!r} (model {reference['name']!r}) of the stored fit no "
                "longer exists; restore it to read the result"
            )
        model = load_model(Path(path) if path is not None else reference["name"])
    if reference.get("parameter_set"):
        model = model.with_parameter_set(reference["parameter_set"])
    cache[key] = model
    return model


def _stored_model(reference: dict[str, Any], text: str) -> Model:
    """Rebuild a saved fit's model from its stored text; warn if the file has changed."""
    name = reference["name"]
    builtin = "path" not in reference
    path = builtin_path(name) if builtin else Path(reference["path"])
    where = f"built-in model {name!r}" if builtin else f"model file {str(path)!r}"
    try:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text:
        what = "no longer exists" if current is None else "has changed"
        warnings.warn(
            f"{where} {what} since the fit was saved: using the model stored in the fit "
            f"(sha256 {text_digest(text)[:12]}), the one its estimates belong to",
            ModelChangedWarning,
            stacklevel=4,
        )
    return model_from_text(text, path)
