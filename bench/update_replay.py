"""The lab model's update micro-batch with the forward recomputed vs replayed from the sampler (and the replay
on every packed row vs on the live rows only), and what saving the activations costs the sampler; one thread,
measured alternately in one process.

    .venv/bin/python bench/update_replay.py [--size m] [--rounds 10]
    .venv/bin/python bench/update_replay.py --model LAB/model --prompts 8 --n 8 --max-new-tokens 128

One micro-batch is by default the GRPO bench's per-worker share: 4 arith prompts x 8 completions of up to 32
tokens, the loss's forward + backward (log-probs and entropy). An untrained model rarely ends a completion early,
so its rows are barely padded; a pretrained lab model (--model) at the lab's 128 tokens ends them at their answers
and pads them to the longest of the micro-batch, which is what the live-row replay leaves out. Last printed line:
one JSON object with the median ms of each, the update speedups (recompute / replay, padded / live-row replay)
and the generation slowdown (keep / no keep)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from rlscale.numerics import pin_cpu_numerics

pin_cpu_numerics()  # the kernels the CLI runs (rlscale.numerics), chosen before torch starts

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="m")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--model", default=None, help="a lab checkpoint directory instead of an untrained --size model")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from rlscale.engine.base import SamplingParams
    from rlscale.lab.pretrain import build_policy
    from rlscale.procs import keep_freed_memory
    from rlscale.rl.grpo import group_inputs, pack_completions
    from rlscale.tasks.base import get_task

    keep_freed_memory()
    if args.model:
        from rlscale.models import load_policy

        pol = load_policy(args.model)
    else:
        pol = build_policy(args.size, seed=0)
    prompts = [p.question for p in get_task("arith").load("train")[:args.prompts]]
    sp = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    seeds = [[i * args.n + j for j in range(args.n)] for i in range(args.prompts)]

    def generate(keep: bool):
        pol.module.eval()
        smp = pol.sampler(keep_activations=keep)
        t0 = time.perf_counter()
        groups = smp.generate(prompts, sp, seeds)
        return groups, smp.activations, time.perf_counter() - t0

    groups, acts, _ = generate(True)
    if acts is None:
        sys.exit("update_replay: the C sampler did not run (no C compiler?); nothing to compare")
    used = [r for g in groups for r in g]
    pad = int(pol.tokenizer.pad_id)
    comp, cmask, _ = pack_completions([r.token_ids for r in used], [r.logprobs for r in used], pad)
    batch = group_inputs([r.prompt_ids for r in used], [r.prompt_index for r in used], comp, pad)
    keys = [(r.prompt_index, r.sample_index) for r in used]
    params = list(pol.module.parameters())

    def update(replay, compact: bool = True) -> float:
        os.environ["RLSCALE_COMPACT"] = "1" if compact else "0"  # read by fused.live_rows at every call
        pol.module.train()
        t0 = time.perf_counter()
        logp, ent = pol.completion_logprobs(*batch, with_entropy=True, replay=replay)
        torch.autograd.grad(-(logp * cmask).sum() / cmask.sum() - 1e-3 * (ent * cmask).sum(), params)
        return time.perf_counter() - t0

    res: dict[str, list[float]] = {"update_recompute": [], "update_replay": [], "update_replay_padded": [],
                                   "gen": [], "gen_keep": []}
    for _ in range(args.rounds):
        for _ in range(4):
            res["update_recompute"].append(update(None))
            res["update_replay"].append(update((acts, keys)))
            res["update_replay_padded"].append(update((acts, keys), compact=False))
            res["gen"].append(generate(False)[2])
            res["gen_keep"].append(generate(True)[2])
    ms = {k: 1e3 * statistics.median(v) for k, v in res.items()}
    for k, v in ms.items():
        print(f"{k}: median {v:.1f} ms", file=sys.stderr)
    live = sum(len(r.token_ids) - 1 for r in used) / (len(used) * comp.shape[1])
    print(json.dumps({"model": args.model or args.size, **{f"{k}_ms": v for k, v in ms.items()},
                      "update_speedup": ms["update_recompute"] / ms["update_replay"],
                      "live_row_speedup": ms["update_replay_padded"] / ms["update_replay"],
                      "live_completion_row_frac": live,
                      "gen_slowdown": ms["gen_keep"] / ms["gen"],
                      "step_speedup": (ms["update_recompute"] + ms["gen"]) / (ms["update_replay"] + ms["gen_keep"]),
                      "activation_mb": acts.nbytes / 1e6}))


if __name__ == "__main__":
    main()
