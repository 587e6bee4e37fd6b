"""`rlscale coscale-compare`: P problems x M solutions vs P*M problems x 1 solution at equal SFT solution count,
then short GRPO; pass@1 / pass@16 with CIs on training and held-out problems, and a PNG (rlscale.coscale.compare)."""

from __future__ import annotations

import argparse
import json

HELP = "CoScale-RL data scaling: many solutions per problem vs many problems (lab scale)"
DESCRIPTION = ("rlscale coscale-compare --model LAB_MODEL --out DIR [--problems 64 --solutions-per-problem 8] "
               "[--json]\nDeep arm: P problems x M distinct worked solutions; wide arm: P*M problems x 1 solution "
               "(same Hard arith distribution).\nBoth are SFT'd from --model, then GRPO'd briefly; re-running "
               "resumes. Writes OUT/result.json and OUT/compare.png.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlscale.commands.train import add_config_flags
    from rlscale.coscale.compare import CompareConfig

    add_config_flags(parser, CompareConfig)
    parser.add_argument("--out", required=True, help="output directory (sets, runs, evals, result.json, PNG)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from rlscale.coscale.compare import CompareConfig

    fields = {f.name for f in dataclasses.fields(CompareConfig)}
    cfg = CompareConfig(**{k: v for k, v in vars(args).items() if k in fields}).validate()
    import torch
    torch.set_num_threads(max(1, args.threads))
    from rlscale.coscale.compare import run_compare

    r = run_compare(cfg, args.out, progress=not args.quiet)
    out = r["summary"] | {"plot": r["plot"], "out": str(args.out)}
    if args.json:
        print(json.dumps(out, default=str))
    else:
        print(" ".join(f"{k}={v}" for k, v in out.items()))
    return 0
