"""Benchmark: fit the saturating sigmoid to a 10,000-point table (100 runs x 100 validation points) with 1,000
bootstrap resamples over runs. Bar: < 30 s on the project machine (2 cores).

Run: .venv/bin/python bench/fit.py [--points 10000] [--bootstrap 1000]
Last line: JSON {"seconds", "single_fit_seconds", "ratio_vs_single_fit", "per_resample_ms", ...}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rlscale.scaling.estimators import SigmoidLaw
from rlscale.scaling.laws import sigmoid_law


def make_table(points: int, runs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    per_run = points // runs
    C = np.tile(np.geomspace(1e2, 1e6, per_run), runs)
    groups = np.repeat(np.arange(runs), per_run)
    run_effect = rng.normal(0, 0.01, runs)[groups]
    y = sigmoid_law(C, 0.1, 0.8, 1e4, 1.2) + run_effect + rng.normal(0, 0.02, C.size)
    return C, y, groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    C, y, groups = make_table(args.points, args.runs)
    SigmoidLaw().fit(C[:100], y[:100])  # warm imports
    t0 = time.perf_counter()
    single = SigmoidLaw().fit(C, y, groups)
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = SigmoidLaw(n_bootstrap=args.bootstrap, seed=0).fit(C, y, groups)
    seconds = time.perf_counter() - t0
    print(est.summary())
    print(json.dumps({"bench": "fit", "law": "sigmoid", "points": int(C.size), "runs": args.runs,
                      "bootstrap": args.bootstrap, "seconds": round(seconds, 3),
                      "single_fit_seconds": round(t_single, 4),
                      "ratio_vs_single_fit": round(seconds / t_single, 1),
                      "per_resample_ms": round(1000 * (seconds - t_single) / args.bootstrap, 2),
                      "bar_seconds": 30, "passes": seconds < 30, "A": single.params_["A"]}))


if __name__ == "__main__":
    main()
