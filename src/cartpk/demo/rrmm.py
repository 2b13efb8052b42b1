"""The KQ-2003 myeloma dose escalation end to end, on the bundled synthetic 29-patient
trial (data/kq2003_rrmm.csv and kq2003_rrmm_outcomes.csv; truth in data/README.md).

The analysis a clinical pharmacologist runs for such a trial, in turn:

1. NCA per dose level of CAR-T (Cmax, Tmax, AUC0-28) and of the cytokines (peak, time);
2. a joint population fit of ck_crs to CART, IL-6, IFN-gamma and M-protein;
3. exposure-response of CRS grade (proportional odds) and of response (logistic) on each
   subject's model-based CAR-T Cmax (from the fit's conditional modes);
4. the per-dose answer (Cmax, Tmax, AUC0-28, peak IL-6 / IFN-gamma and time to peak,
   P(CRS >= 2), P(CRS >= 3), P(response)) with intervals from the fit's and the
   exposure-response fits' uncertainty, and the highest dose that keeps P(CRS >= 3)
   below a limit.

Doses in CAR-T cells/kg, times in days, CART in copies/ug, cytokines in pg/mL.
"""

from __future__ import annotations

import warnings
from os import PathLike

import pandas as pd

from ..data import bundled, read_dataset
from ..exposure_response import ExposureResponse, exposure_response
from ..nca import nca, nca_summary
from ..population import PopulationFit, fit_population
from ..scenarios import DoseEscalation, dose_escalation

TRIAL = "kq2003_rrmm.csv"
OUTCOMES = "kq2003_rrmm_outcomes.csv"
DOSES = (1e6, 2e6, 3e6)
#: Random effects of the population model: the CAR-T expansion and contraction, the kill
#: rate, the baseline M-protein and the cytokine potencies, with a full (block) covariance:
#: the data's rho and tmax are strongly correlated, and a diagonal Omega would combine fast
#: expansion with a late peak in virtual patients (Cmax far beyond anything observed).
RANDOM = ("C0", "rho", "tmax", "alpha", "kkill", "MP0", "emax_il6", "emax_ifng")
#: Turnover rates and potencies that daily sampling cannot determine: fixed at the model
#: file's values (cited there).
FIXED = ("kout_mp", "MPnorm", "kout_il6", "s50_il6", "kout_ifng", "s50_ifng")
#: The dose-finding limit on P(CRS grade >= 3): 25 %, the target toxicity rate of many
#: model-assisted phase 1 designs (BOIN and CRM are commonly run with targets of 0.25-0.30;
#: a 3+3 design accepts up to 1 DLT in 6). A choice, to be made per trial.
CRS3_LIMIT = 0.25
#: Dose grid of the dose-finding view (CAR-T cells/kg).
FINDING_DOSES = (0.25e6, 0.5e6, 1e6, 1.5e6, 2e6, 3e6, 4e6, 6e6)


def rrmm_nca() -> pd.DataFrame:
    """Median [range] per dose of CAR-T cmax, tmax, auc_0_28 and IL-6 / IFN-gamma peaks."""
    data = bundled(TRIAL)
    rows = []
    for analyte, keep in (("CART", ("cmax", "tmax", "auc_0_28")), ("IL6", ("cmax", "tmax")),
                          ("IFNG", ("cmax", "tmax"))):  # fmt: skip
        table = nca(data, analyte=analyte, intervals=[(0, 28)])
        summary = nca_summary(table, by="DOSE")
        summary = summary[summary["parameter"].isin(keep)].assign(analyte=analyte)
        rows.append(summary)
    return pd.concat(rows, ignore_index=True)


def rrmm_fit(seed: int = 1, n_iter: tuple[int, int] = (300, 150)) -> PopulationFit:
    """The joint population fit of ck_crs to the bundled trial (log error per analyte,
    M3 for values below the LLOQ, block Omega over :data:`RANDOM`)."""
    return fit_population(
        "ck_crs",
        read_dataset(bundled(TRIAL)),
        random=list(RANDOM),
        omega="block",
        params={name: {"vary": False} for name in FIXED},
        seed=seed,
        n_iter=n_iter,
        progress=False,
    )


def rrmm_exposures(fit: PopulationFit) -> pd.DataFrame:
    """Per subject: model-based CAR-T cmax and auc_0_28 (conditional modes) and outcomes."""
    individual = fit.individual[["ID", "cmax", "auc_0_28"]]
    outcomes = pd.read_csv(bundled(OUTCOMES))
    return individual.merge(outcomes, on="ID", validate="one_to_one")


def rrmm_exposure_response(table: pd.DataFrame) -> dict[str, ExposureResponse]:
    """CRS grade 0-4 (proportional odds) and response (logistic) on log2 CAR-T Cmax."""
    return {
        "crs": exposure_response(table, "cmax", "CRS_GRADE", by="DOSE", kind="ordinal"),
        "response": exposure_response(table, "cmax", "RESPONSE", by="DOSE"),
    }


def risks(er: dict[str, ExposureResponse]) -> dict[str, object]:
    return {"CRS>=2": (er["crs"], 2), "CRS>=3": (er["crs"], 3), "response": er["response"]}


def rrmm_escalation(
    fit: PopulationFit,
    er: dict[str, ExposureResponse],
    doses: tuple[float, ...] = DOSES,
    n: int = 100,
    n_draws: int = 100,
    seed: int = 1,
    peaks: tuple[str, ...] = ("IL6", "IFNG"),
) -> DoseEscalation:
    """The per-dose table with 90 % intervals over the fit's and the exposure-response
    fits' uncertainty."""
    return dose_escalation(
        fit, doses, risks(er), n=n, n_draws=n_draws, seed=seed, peaks=list(peaks)
    )


def rrmm_dose_finding(
    fit: PopulationFit, er: dict[str, ExposureResponse], limit: float = CRS3_LIMIT
) -> tuple[DoseEscalation, pd.DataFrame]:
    """P(CRS >= 3) over a dose grid (CAR-T only: the risks read CAR-T Cmax) and the highest
    dose whose estimate, and whose upper 90 % bound, stays below ``limit``."""
    grid = rrmm_escalation(fit, er, FINDING_DOSES, n_draws=50, peaks=())
    found = pd.DataFrame([grid.dose_for("CRS>=3", limit, bound) for bound in ("estimate", "high")])
    return grid, found


def rrmm_analysis(seed: int = 1) -> dict[str, object]:
    """Every step above, in turn, with the fit's warnings collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = rrmm_fit(seed)
    table = rrmm_exposures(fit)
    er = rrmm_exposure_response(table)
    escalation = rrmm_escalation(fit, er, seed=seed)
    grid, found = rrmm_dose_finding(fit, er)
    return {
        "nca": rrmm_nca(),
        "fit": fit,
        "exposures": table,
        "er": er,
        "escalation": escalation,
        "finding": grid,
        "dose_for": found,
        "warnings": [str(w.message) for w in caught],
    }


def plot_rrmm(er: dict[str, ExposureResponse], path: str | PathLike[str]) -> None:
    """The exposure-response figures side by side: P(CRS >= 2), P(CRS >= 3) and response
    against model-based CAR-T Cmax."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    er["crs"].plot(ax=axes[0], at_least=2)
    er["crs"].plot(ax=axes[1], at_least=3)
    er["response"].plot(ax=axes[2])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
