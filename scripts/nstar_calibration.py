"""Calibration of the report's n*(C) verdicts on simulated lab-like sweeps whose n*(C) is known.

Each simulated sweep has the full lab's shape (n in {2, ..., 32} x 5 runs at B_problem 8, 14 log-spaced validation
points per run up to 24,576 rollouts, Gaussian noise 0.012 per point plus 0.004 per run) drawn around known per-n
sigmoids, and goes through the lab's own fit (IsoCompute: record points, per-n sigmoids, joint run bootstrap) and
rlscale.report.n_star_evidence. Scenarios:

    null4   n* = 4 at every C (same midpoint for every n, ceilings a parabola in log2 n with its vertex at n = 4)
    null2   n* = 2 at every C (ceilings fall with n)
    null2d  n* = 2 at every C, larger n also later (midpoint ~ sqrt n, as the lab's larger groups learn later)
    lab     the full lab's fitted Easy curves (stop 15, /work/runs/lab_full3) as the truth: n* rises from 2 to ~7

A verdict of 'rises' under null4/null2 is a false positive; under lab it is the power.

    .venv/bin/python scripts/nstar_calibration.py [--sweeps 30] [--scenarios null4,null2,lab] [--bootstrap 200]
        [--workers 2]

Last line: one JSON object {scenario: {"argmax": {verdict: count}, "isoflop": {verdict: count}, "sweeps": K}}.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

NS = (2, 4, 8, 16, 32)
LAB_EASY = {  # per-n sigmoid params of /work/runs/lab_full3/fits/easy/fit.json (4 significant digits)
    2: {"R0": 0.4163, "A": 0.5511, "C_mid": 3584.0, "B": 1.092},
    4: {"R0": 0.4193, "A": 0.5803, "C_mid": 5065.0, "B": 1.1},
    8: {"R0": 0.4148, "A": 0.5811, "C_mid": 4570.0, "B": 1.084},
    16: {"R0": 0.4204, "A": 0.553, "C_mid": 5360.0, "B": 1.549},
    32: {"R0": 0.4202, "A": 0.5858, "C_mid": 14080.0, "B": 1.305},
}


SCENARIOS = {
    "null4": {n: {"R0": 0.42, "A": 0.56 - 0.01 * (np.log2(n) - 2) ** 2, "C_mid": 4000.0, "B": 1.5} for n in NS},
    "null2": {n: {"R0": 0.42, "A": 0.56 - 0.01 * (np.log2(n) - 1), "C_mid": 4000.0, "B": 1.5} for n in NS},
    "null2d": {n: {"R0": 0.42, "A": 0.56 - 0.01 * (np.log2(n) - 1), "C_mid": 2000.0 * np.sqrt(n), "B": 1.5}
               for n in NS},
    "lab": LAB_EASY,
}


def sweep_table(fam: dict, seed: int, runs: int = 5, points: int = 14, noise: float = 0.012, run_sd: float = 0.004,
                B_problem: int = 8, C_max: int = 24576, train_set: int = 1000) -> pd.DataFrame:
    from rlscale.scaling.laws import sigmoid_law

    rng = np.random.default_rng(seed)
    rows = []
    for n, p in fam.items():
        step = n * B_problem
        for r in range(runs):
            C = np.unique(np.round(np.geomspace(step, C_max, points) / step) * step)
            y = sigmoid_law(C, **p) + rng.normal(0, run_sd) + rng.normal(0, noise, C.size)
            rows += [{"run_id": f"n{n}r{r}", "n": n, "step": i, "compute/rollouts": c, "val/avg": v,
                      "epochs": c / (n * train_set)} for i, (c, v) in enumerate(zip(C, y))]
    return pd.DataFrame(rows)


def one(job: tuple[str, int, int]) -> tuple[str, str, str]:
    from rlscale.report import n_star_evidence
    from rlscale.scaling.isocompute import IsoCompute

    name, seed, bootstrap = job
    fit = IsoCompute(bucket_width=0.01, n_bootstrap=bootstrap, seed=seed, train_set_size=1000,
                     min_runs_for_run_bootstrap=3).fit(sweep_table(SCENARIOS[name], seed)).to_dict()
    ev = n_star_evidence(fit)
    return name, ev["verdict"], ev["isoflop"]["verdict"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=30, help="simulated sweeps per scenario")
    ap.add_argument("--scenarios", default="null4,null2,lab")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    names = args.scenarios.split(",")
    for name in names:  # unknown names fail before any work
        if name not in SCENARIOS:
            ap.error(f"--scenarios: unknown scenario '{name}' (valid: {', '.join(SCENARIOS)})")
    jobs = [(name, seed, args.bootstrap) for name in names for seed in range(args.sweeps)]
    out = {name: {"argmax": Counter(), "isoflop": Counter(), "sweeps": 0} for name in names}
    with ProcessPoolExecutor(args.workers) as pool:
        for i, (name, argmax, iso) in enumerate(pool.map(one, jobs), 1):
            out[name]["argmax"][argmax] += 1
            out[name]["isoflop"][iso] += 1
            out[name]["sweeps"] += 1
            print(f"[{i}/{len(jobs)}] {name}: argmax {argmax}, iso-FLOP {iso}", flush=True)
    print(json.dumps({k: {"argmax": dict(v["argmax"]), "isoflop": dict(v["isoflop"]), "sweeps": v["sweeps"]}
                      for k, v in out.items()}))


if __name__ == "__main__":
    main()
