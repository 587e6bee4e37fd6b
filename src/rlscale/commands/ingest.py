"""`rlscale ingest`: TRL / verl / CSV training logs -> the sweep table, so `rlscale fit` works on runs made elsewhere."""

from __future__ import annotations

import argparse

HELP = "read TRL, verl or CSV training logs into the sweep table schema (for rlscale fit)"
DESCRIPTION = """Read a training log written by another engine into rlscale's tidy table (one row per validation point:
run config, step, cumulative compute, epochs, val/* metrics), the schema `rlscale sweep export` writes.

  trl   TRL's trainer_state.json (log_history): eval_reward -> val/avg, reward -> rollout/reward_mean
  verl  verl console log ('step:10 - critic/score/mean:0.41 - val-core/src/acc/mean@4:0.5 ...') or JSONL metrics
  csv   a table (.csv/.jsonl/.parquet) with step, compute/rollouts (or rollouts) and val/avg (or reward)

Rollouts are not logged by TRL or verl: give --n and --problems-per-batch (rollouts per step = n * B_problem).
Use --append to add runs to an existing table (rows of the same run id are replaced)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="log file: trainer_state.json, verl log/JSONL, or CSV")
    parser.add_argument("--format", required=True, choices=("trl", "verl", "csv"), help="log format")
    parser.add_argument("--output", required=True, help="output table (.parquet, .csv or .jsonl)")
    parser.add_argument("--run-id", default=None, help="run id in the table (default: hash of the file path)")
    parser.add_argument("--n", type=int, default=None, help="rollouts per problem of the run")
    parser.add_argument("--problems-per-batch", type=int, default=None, help="problems per batch (B_problem)")
    parser.add_argument("--seed", type=int, default=0, help="seed column value")
    parser.add_argument("--val-source", default=None,
                        help="verl: the validation data source to use when the log has several")
    parser.add_argument("--reward-as-val", action="store_true",
                        help="use the training reward (rollout/reward_mean) as val/avg when there is no validation")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra run config column (e.g. --set lr=1e-6); repeatable")
    parser.add_argument("--append", action="store_true", help="add to an existing --output table")


def _extra(pairs: list[str]) -> dict:
    from rlscale.errors import UserError

    out = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair}: expected KEY=VALUE")
        try:
            out[key] = int(val)
        except ValueError:
            try:
                out[key] = float(val)
            except ValueError:
                out[key] = val
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from rlscale.io import read_table, write_table
    from rlscale.sweep.ingest import ingest

    df = ingest(args.file, args.format, run_id=args.run_id, n=args.n, problems_per_batch=args.problems_per_batch,
                seed=args.seed, val_source=args.val_source, reward_as_val=args.reward_as_val,
                extra=_extra(args.set))
    output = Path(args.output)
    if args.append and output.exists():
        old = read_table(output)
        old = old[~old["run_id"].astype(str).isin(set(df["run_id"].astype(str)))]
        df = pd.concat([old, df], ignore_index=True, sort=False)
    write_table(df, output)
    print(f"wrote {output}: {len(df)} rows, {df['run_id'].nunique()} run(s)")
    return 0
