"""Cold-start cost of each public entry point, against another source tree, in one run.

Each entry point (nca, simulate, exposure, fit, fit_population, scenarios) is called in a
new interpreter three ways:

* fresh install: empty numba cache and empty model cache (nothing compiled yet);
* model edit: the kernels cached, the model new (an edited model file, empty model cache);
* warm: both caches filled by the runs before.

``--against DIR`` also runs the same calls with ``DIR/src`` first on ``sys.path`` (e.g. a
checkout of the previous main), so both trees are measured on the same machine load.
Prints a Markdown table of wall seconds, with the load average before and after.

    python benches/bench_cold_start.py [--against /path/to/old/checkout] [--only fit,nca]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "phase1_trial.csv"

#: Each entry point's call; ``MODEL`` is the model argument (a name, or an edited file).
CALLS = {
    "nca": "ck.nca(ck.read_dataset(DATA), analyte='CART', intervals=[(0, 28)])",
    "simulate": "ck.simulate(ck.load_model(VEGF), {'DOSE': 2e6}, times=range(0, 61))",
    "exposure": "ck.exposure(ck.load_model(VEGF), {'DOSE': 2e6}, output='CART', interval=(0, 28))",
    "fit": "ck.fit(ck.load_model(STEIN), ck.read_dataset(DATA), id=3)",
    "fit_population": (
        "ck.fit_population(ck.load_model(STEIN), ck.read_dataset(DATA),"
        " random=['C0', 'rho', 'alpha'], seed=1)"
    ),
    "scenarios": (
        "ck.scenarios(ck.Population.from_model(ck.load_model(VEGF)), doses=[1e6, 2e6],"
        " n=200, seed=1)"
    ),
}

CHILD = """
import sys, time, warnings
warnings.simplefilter("ignore")
start = time.perf_counter()
import cartpk as ck
DATA, STEIN, VEGF = {data!r}, {stein!r}, {vegf!r}
{call}
print(time.perf_counter() - start)
"""


def edited_model(tree: Path, name: str, directory: Path) -> str:
    """A copy of a built-in model file with an edited equation: new code, the same maths
    (``rho * E`` becomes ``rho * E * 1.0``, exact in floating point)."""
    text = (tree / "src" / "cartpk" / "models" / f"{name}.toml").read_text()
    text = text.replace('E = "rho * E if', 'E = "rho * E * 1.0 if', 1)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return str(path)


def run(tree: Path, call: str, env: dict[str, str], stein: str, vegf: str) -> float:
    code = CHILD.format(data=str(DATA), stein=stein, vegf=vegf, call=call)
    env = dict(env, PYTHONPATH=str(tree / "src"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {call}\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(tree: Path, names: list[str]) -> dict[str, tuple[float, float, float]]:
    rows = {}
    for name in names:
        with tempfile.TemporaryDirectory() as numba_dir, tempfile.TemporaryDirectory() as top:
            top = Path(top)
            env = dict(os.environ, NUMBA_CACHE_DIR=numba_dir, CARTPK_CACHE_DIR=str(top / "a"))
            names_for = ("ck_stein", "ck_vegf")
            fresh = run(tree, CALLS[name], env, *names_for)
            edit_dir = top / "edit"
            edit_dir.mkdir()
            stein, vegf = (edited_model(tree, m, edit_dir) for m in names_for)
            env_edit = dict(env, CARTPK_CACHE_DIR=str(top / "b"))
            edit = run(tree, CALLS[name], env_edit, stein, vegf)
            warm = run(tree, CALLS[name], env_edit, stein, vegf)
        rows[name] = (fresh, edit, warm)
        print(f"{tree.name} {name}: {fresh:.1f} / {edit:.1f} / {warm:.1f} s", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout to measure beside this")
    parser.add_argument("--only", default=",".join(CALLS), help="comma-separated entry points")
    args = parser.parse_args()
    names = args.only.split(",")
    load = os.getloadavg()[0]
    t0 = time.time()
    trees = [ROOT] + ([args.against.resolve()] if args.against else [])
    results = {tree: measure(tree, names) for tree in trees}
    print(
        f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{time.time() - t0:.0f} s in all"
    )
    head = "| entry point | " + " | ".join(
        f"{tree.name}: fresh install / model edit / warm (s)" for tree in trees
    )
    print(head + " |")
    print("|---" * (len(trees) + 1) + "|")
    for name in names:
        cells = [" / ".join(f"{x:.1f}" for x in results[tree][name]) for tree in trees]
        print(f"| `{name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
