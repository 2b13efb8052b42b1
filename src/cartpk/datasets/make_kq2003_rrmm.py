"""Generate data/kq2003_rrmm.csv and data/kq2003_rrmm_outcomes.csv: a synthetic KQ-2003-like
BCMA CAR-T trial in relapsed/refractory multiple myeloma (RRMM).

Run from the repository root: ``python data/make_kq2003_rrmm.py`` (cartpk importable). The
generating truth is the ``ck_crs`` model file at its own typical values, omegas and
correlations (cartpk/models/ck_crs.toml), solved with :func:`cartpk.simulate`; the outcome
models and every number below are tabulated in data/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import cartpk

SEED = 20260315
MODEL = "ck_crs"
# 3+3 escalation with each level filled to 6, then 4 backfill patients at 2e6 and an
# expansion of 7 at the highest dose: 6 / 10 / 13 = 29 patients.
DESIGN = ((1.0e6, 6), (2.0e6, 10), (3.0e6, 13))  # (CAR-T cells/kg, patients)
DAYS = {
    "CART": (0, 1, 4, 7, 10, 14, 21, 28, 56, 90, 180, 365),
    "IL6": (0, 1, 2, 3, 4, 5, 7, 10, 14, 21, 28),
    "IFNG": (0, 1, 2, 3, 4, 5, 7, 10, 14, 21, 28),
    "MPROT": (0, 14, 28, 56, 90, 180),
}
LLOQ = {"CART": 5.0, "IL6": 1.5, "IFNG": 2.0, "MPROT": 1.0}  # copies/ug, pg/mL, pg/mL, g/L
SIGMA_LOG = {"CART": 0.3, "IL6": 0.25, "IFNG": 0.25, "MPROT": 0.1}  # log-scale residual SDs
SIGNIFICANT = 4  # digits kept in DV
SOLVER = {"rtol": 1e-8, "atol": 1e-12}

# Outcome models on x = log2(true model-based CAR-T Cmax in copies/ug), no residual error.
# Intercepts were chosen (100,000 virtual patients with the trial's dose mix, seed 1) so
# that in expectation P(CRS) = 0.95, P(grade >= 2) = 0.40, P(grade >= 3) = 0.10,
# P(grade 4) = 0.02 and P(response) = 0.88; data/README.md gives them centred at 2^16.
# CRS grade (ASTCT 0-4), proportional odds:
#   P(grade >= k) = expit(CRS_INTERCEPTS[k - 1] + CRS_SLOPE x).
CRS_INTERCEPTS = (-16.3, -20.0, -22.0, -23.8)  # k = 1, 2, 3, 4
CRS_SLOPE = 1.2  # log odds ratio per doubling of Cmax: OR exp(1.2) = 3.32
# Response (>= PR): P = expit(RESP_INTERCEPT + RESP_SLOPE x).
RESP_INTERCEPT = -12.5
RESP_SLOPE = 0.9  # OR exp(0.9) = 2.46 per doubling
# DLT: CRS of grade >= 3 (so P(DLT) = expit(CRS_INTERCEPTS[2] + CRS_SLOPE x)).
DLT_MIN_CRS_GRADE = 3


#: Parameters drawn with between-subject variability (the model file's omegas and
#: correlations): those of the demo's population model (cartpk.demo.rrmm.RANDOM), so that
#: the model fitted is the model that generated the data. Fb and beta, which have omegas
#: in the file, are common to all patients here.
RANDOM = ("C0", "rho", "tmax", "alpha", "kkill", "MP0", "emax_il6", "emax_ifng")


def random_parameters(model: cartpk.Model) -> list[str]:
    """Parameters with between-subject variability in the generated trial."""
    return [n for n in RANDOM if model.parameters[n].omega and not model.parameters[n].fixed]


def draw_parameters(model: cartpk.Model, rng: np.random.Generator, n: int) -> pd.DataFrame:
    """n virtual patients: the model file's typical values, omegas and correlations.

    Random effects are joint normal on each parameter's estimation scale (log, or logit
    on (lower, upper) for Fb); the other parameters stay at their typical values.
    """
    names = random_parameters(model)
    omega = np.array([model.parameters[n].omega for n in names])
    corr = np.eye(len(names))
    for (a, b), r in model.correlations.items():
        i, j = names.index(a), names.index(b)
        corr[i, j] = corr[j, i] = r
    eta = rng.multivariate_normal(np.zeros(len(names)), corr * np.outer(omega, omega), size=n)
    values = {}
    for k, name in enumerate(names):
        par = model.parameters[name]
        if par.scale == "logit":
            lo, hi = par.lower, par.upper
            u = (par.value - lo) / (hi - lo)
            values[name] = lo + (hi - lo) / (1 + np.exp(-(np.log(u / (1 - u)) + eta[:, k])))
        else:
            values[name] = par.value * np.exp(eta[:, k])
    return pd.DataFrame(values)


def true_cmax(params: pd.DataFrame, doses: np.ndarray, dose_exp: float) -> np.ndarray:
    """The model's CAR-T peak: E grows until tmax and E + M only falls after it."""
    return params["C0"] * (doses / 1e6) ** dose_exp * np.exp(params["rho"] * params["tmax"])


def expit(x):
    return 1 / (1 + np.exp(-x))


def outcome_probabilities(cmax: np.ndarray) -> dict[str, np.ndarray]:
    """P(CRS grade >= k) for k = 1..4 and P(response), from the true Cmax."""
    x = np.log2(cmax)
    out = {f"crs_ge{k}": expit(a + CRS_SLOPE * x) for k, a in enumerate(CRS_INTERCEPTS, 1)}
    out["response"] = expit(RESP_INTERCEPT + RESP_SLOPE * x)
    return out


def design_doses() -> np.ndarray:
    return np.concatenate([np.full(n, dose) for dose, n in DESIGN])


def expected_rates(n: int = 100_000, seed: int = 1) -> dict[str, float]:
    """Outcome rates in expectation over a large virtual population with the trial's dose mix."""
    model = cartpk.load_model(MODEL)
    doses = np.resize(design_doses(), n)
    params = draw_parameters(model, np.random.default_rng(seed), n)
    cmax = true_cmax(params, doses, model.parameters["dose_exp"].value)
    prob = outcome_probabilities(cmax.to_numpy())
    rates = {name: float(np.mean(p)) for name, p in prob.items()}
    rates["crs_grade1_2"] = rates["crs_ge1"] - rates["crs_ge3"]
    return rates


def observed(rng: np.random.Generator, truth: np.ndarray, analyte: str) -> tuple:
    """Log-normal residual error, rounded; below the LLOQ: DV = LLOQ and CENS = 1."""
    value = truth * np.exp(rng.normal(0.0, SIGMA_LOG[analyte], truth.size))
    cens = value < LLOQ[analyte]
    dv = np.where(cens, LLOQ[analyte], [float(f"{v:.{SIGNIFICANT}g}") for v in value])
    return dv, cens.astype(int)


def make_trial(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The concentration-time table and the per-subject outcome table."""
    pk_rng, error_rng, outcome_rng, weight_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    model = cartpk.load_model(MODEL)
    doses = design_doses()
    n = doses.size
    ids = np.arange(1, n + 1)
    params = draw_parameters(model, pk_rng, n)
    weights = np.round(70 * np.exp(weight_rng.normal(0.0, 0.2, n)), 1)
    grid = np.array(sorted({d for days in DAYS.values() for d in days}), dtype=float)
    sim = cartpk.simulate(model, params.assign(ID=ids, DOSE=doses), grid, method="rodas", **SOLVER)
    cmax = true_cmax(params, doses, model.parameters["dose_exp"].value).to_numpy()

    rows = []
    for i, subject in enumerate(ids):
        common = {"ID": subject, "DOSE": doses[i], "WT": weights[i]}
        rows.append(
            {**common, "TIME": 0.0, "DV": np.nan, "ANALYTE": "", "LLOQ": np.nan, "CENS": 0,
             "EVID": 1, "AMT": doses[i], "MDV": 1}
        )  # fmt: skip
        curve = sim[sim["ID"] == subject].set_index("TIME")
        for analyte, days in DAYS.items():
            truth = curve.loc[list(days), analyte].to_numpy()
            dv, cens = observed(error_rng, truth, analyte)
            for day, value, c in zip(days, dv, cens, strict=True):
                rows.append(
                    {**common, "TIME": float(day), "DV": value, "ANALYTE": analyte,
                     "LLOQ": LLOQ[analyte], "CENS": int(c), "EVID": 0, "AMT": np.nan, "MDV": 0}
                )  # fmt: skip
    columns = ["ID", "TIME", "DV", "ANALYTE", "LLOQ", "CENS", "EVID", "AMT", "MDV", "DOSE", "WT"]
    trial = pd.DataFrame(rows)
    # Each subject: the dose record, then the observations by time, analytes in DAYS order.
    rank = trial["ANALYTE"].map({a: k for k, a in enumerate(DAYS)}).fillna(-1)
    trial = (
        trial.assign(_rank=rank)
        .sort_values(["ID", "TIME", "_rank"], kind="stable")
        .reset_index(drop=True)[columns]
    )

    prob = outcome_probabilities(cmax)
    u_crs, u_resp = outcome_rng.uniform(size=(2, n))
    grade = sum((u_crs < prob[f"crs_ge{k}"]).astype(int) for k in range(1, 5))
    outcomes = pd.DataFrame(
        {
            "ID": ids,
            "DOSE": doses,
            "CRS_GRADE": grade,
            "CRS_GE2": (grade >= 2).astype(int),
            "CRS_GE3": (grade >= 3).astype(int),
            "RESPONSE": (u_resp < prob["response"]).astype(int),
            "DLT": (grade >= DLT_MIN_CRS_GRADE).astype(int),
        }
    )
    return trial, outcomes


def write(directory: Path, seed: int = SEED) -> tuple[Path, Path]:
    trial, outcomes = make_trial(seed)
    paths = (directory / "kq2003_rrmm.csv", directory / "kq2003_rrmm_outcomes.csv")
    trial.to_csv(paths[0], index=False)
    outcomes.to_csv(paths[1], index=False)
    return paths


if __name__ == "__main__":
    for path in write(Path(__file__).resolve().parent):
        print(f"wrote {path}")
