"""Sweep scaling: the same small lab sweep with 1 and with 2 local workers; wall-time ratio (bar: <= 0.6).

    python bench/sweep_workers.py [--spec examples/sweeps/lab_small.toml] [--model runs/lab_s] [--budget 1024]

The spec's grid is kept; its budget (and validation cadence) is overridden so the bench takes minutes, not the
full sweep's time. The model defaults to $RLSCALE_LAB_MODEL or runs/lab_s (make it with
`rlscale pretrain --size s --out runs/lab_s`). Each configuration runs into a fresh temp sweep dir through the CLI
(`rlscale sweep run`, one process per run, one torch thread per process). Last line printed: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rlscale.sweep.spec import load_spec, read_spec_file

ROOT = Path(__file__).resolve().parents[1]


def small_spec(spec_path: Path, model: Path, budget: int, val_every_rollouts: int, val_limit: int, out: Path) -> Path:
    """The spec with absolute paths, the bench budget and a lighter validation, written as YAML."""
    data = read_spec_file(spec_path)
    data.update({"model": str(model.resolve()), "budgets_rollouts": [budget], "val_every_rollouts": val_every_rollouts})
    data.pop("max_rollouts", None)
    data.pop("val_every", None)
    for key in ("train_set", "val_set"):
        if key in data:
            data[key] = str((spec_path.parent / os.path.expandvars(data[key])).resolve())
    data.setdefault("train", {})["val_limit"] = val_limit
    path = out / "bench_spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def timed_sweep(spec: Path, out: Path, workers: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlscale", "sweep", "run", str(spec), "--out", str(out),
                           "--workers", str(workers), "--no-progress"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep with {workers} worker(s) failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", type=Path, default=ROOT / "examples" / "sweeps" / "lab_small.toml")
    ap.add_argument("--model", type=Path,
                    default=Path(os.environ.get("RLSCALE_LAB_MODEL", str(ROOT / "runs" / "lab_s"))))
    ap.add_argument("--budget", type=int, default=1024, help="rollouts per run (the spec's grid is kept)")
    ap.add_argument("--val-every-rollouts", type=int, default=512)
    ap.add_argument("--val-limit", type=int, default=100, help="validation problems per validation point")
    args = ap.parse_args()
    if not (args.model / "rlscale_model.json").exists() and not (args.model / "config.json").exists():
        sys.exit(f"no model at {args.model}; make it with `rlscale pretrain --size s --out {args.model}`")
    with tempfile.TemporaryDirectory(prefix="rlscale-bench-sweep-") as tmp:
        tmp = Path(tmp)
        spec = small_spec(args.spec, args.model, args.budget, args.val_every_rollouts, args.val_limit, tmp)
        runs = load_spec(spec).runs
        print(f"{len(runs)} runs x {args.budget} rollouts; model {args.model}", file=sys.stderr)
        walls = {}
        for workers in (1, 2):
            walls[workers] = timed_sweep(spec, tmp / f"w{workers}", workers)
            print(f"{workers} worker(s): {walls[workers]:.1f} s", file=sys.stderr)
    print(json.dumps({"runs": len(runs), "rollouts_per_run": args.budget, "wall_1_worker_s": round(walls[1], 2),
                      "wall_2_workers_s": round(walls[2], 2), "wall_ratio_2_vs_1": round(walls[2] / walls[1], 3),
                      "cpu_count": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
