"""BCMA CAR-T in AQP4-IgG+ NMOSD (CT103A-like) end to end, on the bundled synthetic
12-patient trial (data/nmosd_trial.csv, made by data/make_nmosd_trial.py; truth in
data/README.md): CAR-T by qPCR, CD19+ B cells and AQP4-IgG titres as dilution steps
(interval-censored: CENS = 1 with LIMIT = the last positive dilution, DV = the first
negative one; "negative below 1:10" is CENS = 1 without a LIMIT).

1. a population fit of ck_blineage with the BCMA target set (tgt_cd19 = 0, tgt_bcma = 1);
2. recovery: each estimate beside the truth that generated the data;
3. the seed checks on the fitted patients: AQP4-IgG at 5.5 months against baseline (model
   based, conditional modes) and CAR-T above the LLOQ beyond 6 months (observed).

The generating constants below are the script's as well (it imports them): one source.
Times in days, CAR-T in copies/ug, B cells in cells/uL, titres as reciprocal dilutions.
"""

from __future__ import annotations

import warnings
from os import PathLike

import numpy as np
import pandas as pd

from ..data import bundled, read_dataset
from ..model import load_model
from ..population import PopulationFit, fit_population
from ..scales import to_estimation, to_natural
from ..solve import simulate

TRIAL = "nmosd_trial.csv"
#: The 12 patients' generating values of the random-effect parameters.
TRUTH = "nmosd_truth.csv"
MODEL = "ck_blineage"
DOSE = 1.0e6  # CAR-T cells/kg: the model's reference dose (PLACEHOLDER: not in the seeds)
#: CT103A binds BCMA only: plasmablasts and long-lived plasma cells, not CD19+ B cells.
TARGET = {"tgt_cd19": 0.0, "tgt_bcma": 1.0}
#: Between-subject SDs of the generating truth (estimation scale: log; logit for Fb), also
#: the random effects of the population model. C0, rho, alpha and Fb are the model file's
#: omegas; AAB0 (1.0) and B0 (0.4) are PLACEHOLDERS: AQP4-IgG titres span 1:10 to 1:10,000
#: between patients, B-cell counts about 1.5-fold. Independent random effects.
OMEGA = {"C0": 1.597, "rho": 0.430, "alpha": 0.5, "Fb": 4.0, "B0": 0.4, "AAB0": 1.0}
#: Log-scale residual SDs of the generating truth (assay PLACEHOLDERS).
SIGMA_LOG = {"CART": 0.3, "BCELL": 0.2, "AAB": 0.2}
#: Parameters that the trial cannot determine, held at the model file's values (cited
#: there): the B-cell and memory-B turnover (a BCMA CAR leaves both compartments alone),
#: plasma-cell lifetimes, IgG elimination, the vaccine titre, the target switches.
FIXED = ("dose_exp", "kb", "kba", "kpb", "kll", "kab", "VAX0", "tgt_cd19", "tgt_bcma")
#: CAR-T LLOQ of the bundled trial (copies/ug).
CART_LLOQ = 5.0


def nmosd_fit(seed: int = 1, n_iter: tuple[int, int] = (300, 150)) -> PopulationFit:
    """The population fit of ck_blineage (BCMA CAR) to CART, BCELL and the AQP4-IgG
    titres (log error per analyte; M3 below the LLOQ, interval likelihood for titres)."""
    params: dict = {name: {"vary": False} for name in FIXED}
    params.update({name: {"value": value, "vary": False} for name, value in TARGET.items()})
    return fit_population(
        MODEL,
        read_dataset(bundled(TRIAL)),
        random=list(OMEGA),
        params=params,
        seed=seed,
        n_iter=n_iter,
        progress=False,
    )


def nmosd_recovery(fit: PopulationFit) -> pd.DataFrame:
    """Estimate beside truth: typical values (natural scale; truth: the model file's
    values), between-subject SDs (estimation scale) and residual SDs, with the SE where the
    fit has one, ``ratio`` = estimate / truth. For a parameter with a random effect,
    ``sample`` is what the 12 drawn patients hold (data/nmosd_truth.csv): the back-mapped
    mean of their values on the estimation scale, and the SD there; with 12 patients
    an estimate is to be judged against that, and the truth is off by the sampling error."""
    model = load_model(MODEL)
    drawn = pd.read_csv(bundled(TRUTH))
    centre, spread = {}, {}
    for name in OMEGA:
        p = model.parameters[name]
        x = np.array([to_estimation(v, p.scale, p.lower, p.upper) for v in drawn[name]])
        centre[name] = float(to_natural(x.mean(), p.scale, p.lower, p.upper))
        spread[name] = float(x.std(ddof=1))
    rows = []
    fixed = fit.fixed_effects.set_index("parameter")
    for name in fit.model.param_names:
        if name not in FIXED:
            row = fixed.loc[name]
            rows.append(("typical", name, model.parameters[name].value, centre.get(name, np.nan),
                         row["estimate"], row["se"]))  # fmt: skip
    omega = fit.omega_table.set_index("parameter")
    for name, sd in OMEGA.items():
        row = omega.loc[name]
        rows.append(("omega", name, sd, spread[name], row["estimate"], row["se"]))
    sigma = fit.sigma.set_index("parameter")
    for analyte, sd in SIGMA_LOG.items():
        row = sigma.loc[f"{analyte}_sigma"]
        rows.append(("sigma", f"{analyte}_sigma", sd, np.nan, row["estimate"], row["se"]))
    columns = ["kind", "parameter", "truth", "sample", "estimate", "se"]
    table = pd.DataFrame(rows, columns=columns)
    return table.assign(ratio=table["estimate"] / table["truth"])


def nmosd_checks(fit: PopulationFit) -> pd.DataFrame:
    """Per patient: model-based AQP4-IgG at day 0 and at 5.5 months (165 days, conditional
    modes), whether it fell, the reported titres on those days, and whether CAR-T was
    quantified (above the LLOQ) on day 180 or later."""
    modes = fit.individual_parameters().assign(DOSE=DOSE)
    curve = simulate(fit.model, modes, np.array([0.0, 165.0]))
    aab = curve.pivot(index="ID", columns="TIME", values="AAB")
    data = fit.observations
    titres = data[data["ANALYTE"] == "AAB"].pivot(index="ID", columns="TIME", values="LIMIT")
    late = data[(data["ANALYTE"] == "CART") & (data["TIME"] >= 180)]
    persisting = late.groupby("ID")["CENS"].min() == 0
    return pd.DataFrame(
        {
            "aab_0": aab[0.0],
            "aab_165": aab[165.0],
            "aab_fell": aab[165.0] < aab[0.0],
            "titre_0": titres[0.0],
            "titre_165": titres[165.0],
            "cart_beyond_6_months": persisting.reindex(aab.index, fill_value=False),
        }
    ).reset_index()


def nmosd_analysis(seed: int = 1) -> dict[str, object]:
    """The fit, its recovery table and the seed checks, with the fit's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = nmosd_fit(seed)
    return {
        "fit": fit,
        "recovery": nmosd_recovery(fit),
        "checks": nmosd_checks(fit),
        "warnings": [str(w.message) for w in caught],
    }


def plot_nmosd(fit: PopulationFit, path: str | PathLike[str]) -> None:
    """Each patient's data and individual prediction (conditional modes): CAR-T, B cells
    and AQP4-IgG, titres drawn as the interval each one reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = np.linspace(0.0, 365.0, 366)
    curves = simulate(fit.model, fit.individual_parameters().assign(DOSE=DOSE), days)
    data = fit.observations
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colours = plt.cm.tab20(np.linspace(0, 1, len(fit.ids)))
    titles = {"CART": "CAR-T (copies/ug)", "BCELL": "CD19+ B cells (cells/uL)",
              "AAB": "AQP4-IgG (reciprocal titre)"}  # fmt: skip
    for ax, (analyte, title) in zip(axes, titles.items(), strict=True):
        for colour, subject in zip(colours, fit.ids, strict=True):
            own = curves[curves["ID"] == subject]
            ax.plot(own["TIME"], own[analyte], color=colour, lw=1)
            points = data[(data["ID"] == subject) & (data["ANALYTE"] == analyte)]
            if analyte == "AAB":
                low = points["LIMIT"].fillna(1.0)
                ax.vlines(points["TIME"], low, points["DV"], color=colour, lw=3, alpha=0.5)
            else:
                quantified = points["CENS"] == 0
                ax.plot(points["TIME"][quantified], points["DV"][quantified], "o",
                        color=colour, ms=3)  # fmt: skip
                ax.plot(points["TIME"][~quantified], points["DV"][~quantified], "v",
                        color=colour, ms=3, mfc="none")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("days since infusion")
        ax.set_title(title)
    axes[0].set_ylim(1.0, None)
    figure.suptitle("Bundled NMOSD-like trial (BCMA CAR-T): data and individual predictions")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
