"""Sweep start-up cost: the same sweep of short lab runs with runs forked from the fork server (the default),
with a fresh interpreter per run (RLSCALE_SWEEP_FORK=0) and forked from a fork server that does not preload
torch._dynamo (the preload before stop 32; torch's optimizers import it when a run builds its first one),
alternated; wall-time ratios and seconds saved per run.

    python bench/sweep_startup.py [--model runs/lab_s] [--rounds 2] [--budget 256] [--workers 2]

The model defaults to $RLSCALE_LAB_MODEL or runs/lab_s (`rlscale pretrain --size s --out runs/lab_s`). The sweep:
n in {2, 4, 8, 16} x 3 seeds at B_problem 8 on the arith train split, `--budget` rollouts per run, 2 validation
points of 10 problems, so start-up is a visible share of each run. Last line printed: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def spec(model: Path, budget: int, out: Path) -> Path:
    data = {"name": "startup_bench", "model": str(model.resolve()), "task": "arith", "n": [2, 4, 8, 16],
            "problems_per_batch": [8], "B_max": 256, "max_rollouts": budget, "val_log_points": 2, "seeds": [0, 1, 2],
            "resources": {"cpus": 1, "gpus": 0},
            "train": {"lr": 7e-5, "reward": "flexible", "max_new_tokens": 128, "val_n": 8, "val_limit": 10}}
    path = out / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


NO_DYNAMO_PRELOAD = ("import sys, rlscale.sweep.run as r; "
                     "r.FORK_PRELOAD = tuple(m for m in r.FORK_PRELOAD if m != 'torch._dynamo'); "
                     "from rlscale.cli import main; sys.exit(main(sys.argv[1:]))")
MODES = {"fresh": ("0", ["-m", "rlscale"]), "forked": ("1", ["-m", "rlscale"]),
         "forked_no_dynamo_preload": ("1", ["-c", NO_DYNAMO_PRELOAD])}


def run_once(spec_path: Path, out: Path, workers: int, mode: str) -> float:
    fork, entry = MODES[mode]
    env = {**os.environ, "RLSCALE_SWEEP_FORK": fork}
    t = time.perf_counter()
    subprocess.run([sys.executable, *entry, "sweep", "run", str(spec_path), "--out", str(out),
                    "--workers", str(workers), "--no-progress"], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("RLSCALE_LAB_MODEL", "runs/lab_s"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    model = Path(args.model)
    if not (model / "rlscale_model.json").exists():
        sys.exit(f"--model {model}: not a lab checkpoint; make one with `rlscale pretrain --size s --out {model}`")
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="rlscale-bench-") as tmp:
        sp = spec(model, args.budget, Path(tmp))
        for r in range(args.rounds):
            for mode in MODES:
                s = run_once(sp, Path(tmp) / f"{mode}{r}", args.workers, mode)
                times[mode].append(s)
                print(f"round {r}: {mode} {s:.1f} s", file=sys.stderr)
    runs = 12
    med = {m: statistics.median(t) for m, t in times.items()}
    print(json.dumps({**{f"{m}_s": t for m, t in times.items()},
                      "ratio_forked_vs_fresh": med["forked"] / med["fresh"],
                      "saved_s_per_run": (med["fresh"] - med["forked"]) * args.workers / runs,
                      "ratio_forked_vs_no_dynamo_preload": med["forked"] / med["forked_no_dynamo_preload"],
                      "dynamo_preload_saved_s_per_run":
                          (med["forked_no_dynamo_preload"] - med["forked"]) * args.workers / runs,
                      "runs": runs, "workers": args.workers, "budget_rollouts": args.budget}))

if __name__ == "__main__":
    main()
