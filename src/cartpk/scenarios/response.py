"""Biomarker response: the POEMS syndrome VEGF response rule and its per-patient columns.

A partial response (PR) is a fall of the biomarker to ``partial`` · baseline, a complete
response (CR) a fall to the upper limit of normal (VEGF_ULN for serum VEGF), each flagged
by a day (see :class:`Response`). The times of the falls are found on the ODE solution by
:mod:`cartpk.scenarios.chunk`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..exposure import _output_index
from ..model import Model
from .checks import is_number

__all__ = ["VEGF_ULN", "Response", "resolve_response", "response_columns", "response_flags"]

#: Serum VEGF upper limit of normal used for "normalisation" (ng/L = pg/mL); see Response.
VEGF_ULN = 1040.0


@dataclass(frozen=True)
class Response:
    """Biomarker response criteria, relative to the value at t = 0 (the baseline).

    Partial response (PR): the first time the biomarker is <= ``partial`` · baseline.
    Complete response (CR): the first time it is <= ``normal`` (the upper limit of normal,
    in the output's unit); not evaluable (NA) for a patient whose baseline is already at or
    below it. ``by``: the day of the ``pr_<by>`` / ``cr_<by>`` flags.

    The defaults are the POEMS syndrome VEGF response criteria: a decrease of at least
    50 % is a partial VEGF response and normalisation a complete one (Dispenzieri A. How I
    treat POEMS syndrome. Blood 2012;119(24):5650-5658, doi:10.1182/blood-2012-03-378992;
    the complete/partial/no VEGF response grading of Gentile F, et al. Neurol Sci
    2024;45(2):727-733, doi:10.1007/s10072-023-07064-5). The upper limit of normal of serum
    VEGF is 1040 pg/mL (= ng/L), the normalisation cut-off of Misawa S, et al. BMJ Open
    2015;5:e009157, doi:10.1136/bmjopen-2015-009157 (ELISA, serum; Gentile et al. use
    < 1000 pg/mL). Plasma VEGF has a much lower normal range: set ``normal`` for the assay
    and matrix that was measured.
    """

    output: str = "VEGF"
    partial: float = 0.5
    normal: float = VEGF_ULN
    by: float = 28.0

    def check(self, model: Model, times: np.ndarray) -> None:
        """Refuse an unknown output, a fraction outside (0, 1), a day beyond ``times``."""
        _output_index(model, self.output)
        if not (is_number(self.partial) and 0 < self.partial < 1):
            raise ValueError(f"response: partial = {self.partial!r}, expected a fraction in (0, 1)")
        if not (is_number(self.normal) and self.normal > 0):
            raise ValueError(f"response: normal = {self.normal!r}, expected a level > 0")
        if not (is_number(self.by) and 0 < self.by <= times[-1]):
            raise ValueError(
                f"response: by = {self.by!r} days must be > 0 and within the simulated "
                f"window (times end at {times[-1]:g} days)"
            )

    @property
    def suffix(self) -> str:
        return str(int(self.by)) if float(self.by).is_integer() else repr(float(self.by))


def resolve_response(model: Model, response: Any, grid: np.ndarray) -> Response | None:
    """The ``response=`` argument of scenarios() as checked criteria, or None for none."""
    if response is False:
        return None
    if response is None or response is True:
        if "VEGF" not in model.outputs:
            if response is True:
                raise ValueError(
                    f"response=True: model {model.name} has no VEGF output; give "
                    "Response(output=..., normal=...) for its biomarker"
                )
            return None
        criteria = Response()
    elif isinstance(response, Response):
        criteria = response
    elif isinstance(response, Mapping):
        criteria = Response(**response)
    else:
        raise ValueError(f"response: expected a Response, a mapping, False or None: {response!r}")
    criteria.check(model, grid)
    return criteria


def response_flags(results: dict, criteria: Response) -> tuple[np.ndarray, np.ndarray]:
    """PR and CR by day ``criteria.by`` per patient: 1 or 0, and -1 where not available
    (not solved; for CR, a baseline already normal). These a result keeps in memory."""
    ok, by = results["status"] == 0, criteria.by
    pr = np.where(ok, results["time_to_pr"] <= by, -1)
    cr = np.where(ok & results["cr_evaluable"], results["time_to_cr"] <= by, -1)
    return pr, cr


def response_columns(frame: pd.DataFrame, results: dict, criteria: Response) -> pd.DataFrame:
    """Add ``pr_<by>``, ``cr_<by>`` (nullable booleans) and the times to PR and CR."""
    ok = results["status"] == 0
    by = criteria.by
    pr, cr = results["time_to_pr"], results["time_to_cr"]
    pr_flag = pd.array(np.where(ok, pr <= by, False), dtype="boolean")
    pr_flag[~ok] = pd.NA
    cr_flag = pd.array(np.where(ok, cr <= by, False), dtype="boolean")
    cr_flag[~(ok & results["cr_evaluable"])] = pd.NA
    frame[f"pr_{criteria.suffix}"] = pr_flag
    frame[f"cr_{criteria.suffix}"] = cr_flag
    frame["time_to_pr"] = pr
    frame["time_to_cr"] = cr
    return frame
