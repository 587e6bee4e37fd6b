"""The Hugging Face sampler with stop strings: its per-step stop check on a tail of each completion against the
check on the whole decoded completion (the baseline: STOP_WINDOW_SLACK as long as any completion), same model,
prompts and seeds, completions of --new tokens, alternating within each repeat. The model is a random 2-layer Llama with a character tokenizer
(tests/hf_fixtures.py), its forward far cheaper than a real model's, so the ratio is the decode overhead's upper
bound; the absolute seconds saved per rollout are what a GPU run of a real model saves. Last line: JSON.

    .venv/bin/python bench/hf_stop_check.py [--batch 64] [--new 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rlscale.numerics import pin_cpu_numerics

pin_cpu_numerics()  # the kernels the CLI runs (rlscale.numerics), chosen before torch starts

import torch  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests"), str(Path(__file__).resolve().parent)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from hf_fixtures import make_tiny_hf_model
    from sampler import matmul_peak_flops  # bench/sampler.py: the 1-thread fp32 matmul peak

    import rlscale.engine.hf as hf_engine
    from rlscale.engine.base import SamplingParams
    from rlscale.models.hf import HFPolicy

    with tempfile.TemporaryDirectory() as d:
        policy = HFPolicy.load(make_tiny_hf_model(d + "/m", max_positions=512), "cpu")
    policy.tokenizer.eos_id = -1  # no EOS: every completion runs to --new tokens (a stop string never appears)
    prompts = [f"a={i % 10},b=a*3;b?" for i in range(args.batch)]
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=args.new, seed=0, stop=("Question:",))
    tail_slack = hf_engine.STOP_WINDOW_SLACK

    def run(slack: int):
        hf_engine.STOP_WINDOW_SLACK = slack
        t = time.perf_counter()
        out = policy.sampler(max_batch=args.batch).generate(prompts, params)
        return time.perf_counter() - t, out

    run(tail_slack)  # warm-up
    tail_t, full_t, outs = [], [], None
    for _ in range(args.repeats):
        s, outs = run(tail_slack)
        tail_t.append(s)
        s, full = run(10**9)
        full_t.append(s)
        assert [[r.token_ids for r in g] for g in full] == [[r.token_ids for r in g] for g in outs]
    hf_engine.STOP_WINDOW_SLACK = tail_slack
    best, base = min(tail_t), min(full_t)
    gen_tokens = sum(len(r.token_ids) for g in outs for r in g)
    flops = sum(policy.flops_per_token(len(r.prompt_ids) + i) for g in outs for r in g
                for i in range(len(r.token_ids)))
    peak = matmul_peak_flops()
    print(json.dumps({
        "batch": args.batch, "max_new_tokens": args.new, "mean_new_tokens": round(gen_tokens / len(prompts), 1),
        "tail_check_s": round(best, 3), "full_decode_check_s": round(base, 3),
        "ratio_vs_full_decode": round(base / best, 2),
        "saved_ms_per_rollout": round((base - best) / len(prompts) * 1e3, 2),
        "rollouts_per_s": round(len(prompts) / best, 1), "tokens_per_s": round(gen_tokens / best, 1),
        "peak_gflops_1thread": round(peak / 1e9, 1), "peak_fraction": round(flops / best / peak, 5),
    }))


if __name__ == "__main__":
    main()
