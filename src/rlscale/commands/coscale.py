"""`rlscale coscale`: the CoScale-RL pipeline (rlscale.coscale.pipeline), or with `--preset lab-quick` the whole lab
comparison against plain GRPO at equal rollouts (rlscale.coscale.lab). Flags are generated from CoScaleConfig."""

from __future__ import annotations

import argparse
import json

from rlscale.errors import UserError

HELP = "CoScale-RL: multi-solution SFT + per-difficulty GRPO with rollout scaling + re-distillation"
DESCRIPTION = (
    "CoScale-RL (arXiv 2601.14695). Pipeline: rlscale coscale --model DIR --task T --train-set FILE --solutions FILE\n"
    "  --val-set FILE --budget-rollouts C --out DIR   (--solutions may be omitted for task arith: generated)\n"
    "Lab comparison: rlscale coscale --preset lab-quick --out DIR --json   (last line: base/grpo/coscale acc + CIs)\n"
    "Re-running the same command resumes: finished stages are skipped.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlscale.commands.train import add_config_flags
    from rlscale.coscale.pipeline import CoScaleConfig

    add_config_flags(parser, CoScaleConfig)
    parser.add_argument("--out", required=True, help="output directory (stages.json, stages/, summary.json)")
    parser.add_argument("--preset", choices=("lab-quick",), default=None,
                        help="run the lab comparison (pretrain or --model, Hard arith pool, plain GRPO vs CoScale)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from rlscale.coscale.pipeline import CoScaleConfig

    fields = {f.name for f in dataclasses.fields(CoScaleConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields}
    if args.preset is not None:
        extra = sorted(set(given) - {"model"})
        if extra:
            raise UserError(f"--preset {args.preset} sets the pipeline itself; drop --{extra[0].replace('_', '-')}")
        import torch
        torch.set_num_threads(max(1, args.threads))
        from rlscale.coscale.lab import run_lab

        result = run_lab(args.out, args.preset, model=given.get("model"), progress=not args.quiet)
        keys = ("base_acc", "base_ci", "grpo_acc", "grpo_ci", "coscale_acc", "coscale_ci")
        if args.json:
            print(json.dumps(result, default=str))
        else:
            print(" ".join(f"{k}={result[k]}" for k in keys))
        return 0
    if "model" not in given:
        raise UserError("--model DIR is required (or use --preset lab-quick)")
    if "budget_rollouts" not in given:
        raise UserError("--budget-rollouts C is required")
    cfg = CoScaleConfig.from_dict(given).validate()
    import torch
    torch.set_num_threads(max(1, args.threads))
    from rlscale.coscale.pipeline import run_coscale

    s = run_coscale(cfg, args.out, progress=not args.quiet)
    v = s["val_final"]
    out = {"final_model": s["final_model"], "rollouts": s["rollouts"], "val_acc": v["acc"], "val_ci": v["ci95"],
           "iterations": len(s["iterations"]), "pool": s["pool"], "out": str(args.out)}
    if args.json:
        print(json.dumps(out, default=str))
    else:
        print(" ".join(f"{k}={out[k]}" for k in out))
    return 0
