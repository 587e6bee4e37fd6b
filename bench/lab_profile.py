"""Pretrain (or load) a lab model and profile it on held-out arith problems: avg@16 per problem, accuracy by
steps, Easy/Hard bucket fractions, strict vs flexible, constant-answer baseline. Last line: JSON.

    .venv/bin/python bench/lab_profile.py --size s [--tokens T | --minutes M] [--step-weights W1,..,W6]
        [--processes P] [--model DIR] [--problems 500]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rlscale.numerics import pin_cpu_numerics

pin_cpu_numerics()  # the kernels the CLI runs (rlscale.numerics), chosen before torch starts

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="existing checkpoint (skip pretraining)")
    ap.add_argument("--size", default="s")
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step-weights", default=None, help="corpus mix of difficulties (rlscale pretrain --step-weights)")
    ap.add_argument("--processes", type=int, default=1, help="data-parallel pretraining processes")
    ap.add_argument("--out", default=None, help="where to save the pretrained checkpoint")
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from rlscale.commands.pretrain import parse_weights
    from rlscale.engine.base import SamplingParams
    from rlscale.lab.pretrain import PretrainConfig, pretrain
    from rlscale.models.tiny import TinyPolicy
    from rlscale.tasks.arith import constant_answer_baseline, is_correct, load_arith

    if args.model:
        policy = TinyPolicy.load(args.model)
    else:
        policy = pretrain(PretrainConfig(size=args.size, tokens=args.tokens, minutes=args.minutes, seed=args.seed,
                                         step_weights=parse_weights(args.step_weights), processes=args.processes),
                          out=args.out)
    problems = load_arith("test", limit=args.problems)
    t0 = time.time()
    out = policy.sampler().generate([p.question for p in problems],
                                    SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=128, seed=1))
    sample_s = time.time() - t0
    flex = np.array([[is_correct(r.text, p.answer) for r in rs] for p, rs in zip(problems, out)], dtype=float)
    strict = np.array([[is_correct(r.text, p.answer, strict=True) for r in rs] for p, rs in zip(problems, out)],
                      dtype=float)
    avg = flex.mean(1)
    steps = np.array([p.meta["steps"] for p in problems])
    by_steps = {int(k): round(float(avg[steps == k].mean()), 4) for k in sorted(set(steps.tolist()))}
    accs = list(by_steps.values())
    res = {
        "size": policy.meta.get("size"), "params": policy.num_params(),
        "step_weights": policy.meta.get("data_recipe", {}).get("arith", {}).get("step_weights"),
        "tokens": policy.meta.get("compute", {}).get("tokens"),
        "pretrain_wall_s": round(policy.meta.get("compute", {}).get("wall_s", 0.0), 1),
        "heldout_loss": round(policy.meta.get("heldout_loss", float("nan")), 4),
        "flexible_avg": round(float(avg.mean()), 4), "strict_avg": round(float(strict.mean()), 4),
        "acc_by_steps": by_steps, "monotone": all(a >= b for a, b in zip(accs, accs[1:])),
        "frac_easy_0.3_0.6": round(float(((avg >= 0.3) & (avg <= 0.6)).mean()), 4),
        "frac_hard_0_0.0625": round(float((avg <= 0.0625).mean()), 4),
        "frac_all_correct": round(float((avg == 1).mean()), 4),
        "constant_answer_baseline": constant_answer_baseline(problems),
        "truncated_frac": round(float(np.mean([not r.finished for rs in out for r in rs])), 4),
        "rollouts_per_s": round(flex.size / sample_s, 1),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
