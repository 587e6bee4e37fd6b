"""Sampler throughput: our KV-cache TinySampler vs HF `generate` on the exported model (same weights, same
prompts, batch 256, 64 new tokens, temperature 1; they alternate within each repeat; --n samples per prompt, as
the lab's groups: HF's num_return_sequences), the same call without per-token log-probs and entropies (what
evaluation asks for: `ratio_without_logprobs`), and the fraction of this
machine's 1-thread fp32 matmul peak the sampler reaches. The sampler's decode loop is the C one when it builds
(rlscale.engine.native); the torch decode loop is timed too (`ratio_native_vs_torch_loop`). Last line: JSON.

    .venv/bin/python bench/sampler.py [--model DIR] [--size s] [--batch 256] [--n 1] [--new 64] [--repeats 5]
    .venv/bin/python bench/sampler.py --model LAB/model --batch 32 --n 8 --new 128   # a lab validation's shape
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

from rlscale.numerics import pin_cpu_numerics

pin_cpu_numerics()  # the kernels the CLI runs (rlscale.numerics), chosen before torch starts

import torch  # noqa: E402


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="lab checkpoint; default: a freshly initialised --size model")
    ap.add_argument("--size", default="s")
    ap.add_argument("--batch", type=int, default=256, help="distinct prompts")
    ap.add_argument("--n", type=int, default=1, help="samples per prompt")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from transformers import AutoModelForCausalLM

    from rlscale.engine.base import SamplingParams
    from rlscale.lab.pretrain import build_policy
    from rlscale.models.export import export_hf
    from rlscale.models.tiny import TinyPolicy
    from rlscale.tasks.arith import load_arith

    policy = TinyPolicy.load(args.model) if args.model else build_policy(args.size, 0)
    prompts = [p.question for p in load_arith("test", limit=args.batch)]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.new, seed=0)
    from rlscale.engine import native
    from rlscale.engine.tiny_sampler import TinySampler

    sampler = policy.sampler()
    torch_loop = TinySampler(policy, native=False)
    with tempfile.TemporaryDirectory() as d:
        export_hf(policy, d + "/hf")
        hf = AutoModelForCausalLM.from_pretrained(d + "/hf")
    tok = policy.tokenizer.to_hf()
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.new,
              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, num_return_sequences=args.n)
    # ours and HF alternate within each repeat, so load drift on a shared machine hits both alike
    sampler.generate(prompts[:32], params)  # warm-up
    torch_loop.generate(prompts[:32], params)
    with torch.inference_mode():
        hf.generate(**{k: v[:32] for k, v in enc.items()}, **kw)  # warm-up
    ours_t, bare_t, torch_t, hf_t, outs, hf_out = [], [], [], [], None, None
    bare = dataclasses.replace(params, logprobs=False)  # what evaluation asks for: tokens only
    for _ in range(args.repeats):
        t = time.perf_counter()
        outs = sampler.generate(prompts, params)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        sampler.generate(prompts, bare)
        bare_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch_loop.generate(prompts, params)
        torch_t.append(time.perf_counter() - t)
        with torch.inference_mode():
            t = time.perf_counter()
            hf_out = hf.generate(**enc, **kw)
            hf_t.append(time.perf_counter() - t)
    ours_s, hf_best = min(ours_t), min(hf_t)
    ratios = sorted(h / o for h, o in zip(hf_t, ours_t))
    gen_tokens = sum(r.num_tokens for rs in outs for r in rs)
    prompt_tokens = sum(len(rs[0].prompt_ids) for rs in outs)
    flops = sum(policy.flops_per_token(len(r.prompt_ids) + i) for rs in outs for r in rs
                for i in range(r.num_tokens)) + sum(policy.flops_per_token(len(rs[0].prompt_ids) // 2) *
                                                    len(rs[0].prompt_ids) for rs in outs)
    hf_new = hf_out[:, enc["input_ids"].shape[1]:]
    peak = matmul_peak_flops()
    res = {
        "batch": args.batch, "n": args.n, "max_new_tokens": args.new, "params": policy.num_params(),
        "trained": bool(args.model),
        "ours_s": round(ours_s, 4), "hf_generate_s": round(hf_best, 4),
        "ratio_vs_hf_generate": round(hf_best / ours_s, 2),
        "ratio_median_paired": round(ratios[len(ratios) // 2], 2),
        "without_logprobs_s": round(min(bare_t), 4),
        "ratio_without_logprobs": round(ours_s / min(bare_t), 3),
        "ratio_without_logprobs_median_paired": round(sorted(o / b for o, b in zip(ours_t, bare_t))[len(bare_t) // 2], 3),
        "native_decode": native.load() is not None, "torch_loop_s": round(min(torch_t), 4),
        "ratio_native_vs_torch_loop": round(min(torch_t) / ours_s, 2),
        "rollouts_per_s": round(len(prompts) * args.n / ours_s, 1),
        "tokens_per_s": round(gen_tokens / ours_s, 1),
        "mean_new_tokens": round(gen_tokens / (len(prompts) * args.n), 1),
        "hf_mean_new_tokens": round(float((hf_new != tok.pad_token_id).sum()) / (len(prompts) * args.n), 1),
        "prompt_tokens": prompt_tokens,
        "achieved_gflops": round(flops / ours_s / 1e9, 2), "peak_gflops_1thread": round(peak / 1e9, 1),
        "peak_fraction": round(flops / ours_s / peak, 4),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
