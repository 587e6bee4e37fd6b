"""Gradient checkpointing of Hugging Face policies (--gradient-checkpointing): peak memory and time of one update
micro-batch (HFPolicy.token_logprobs with entropy, forward + backward) with it against without it (the baseline),
each in its own process (peak RSS above the process's RSS with the model loaded), on a randomly initialised Llama
of 8 layers, hidden 512, vocabulary 32k (a 0.5B model's layer count scaled down: the activations that
checkpointing drops grow with layers x tokens, the logits it keeps with tokens x vocabulary). Last line: JSON.

    .venv/bin/python bench/hf_checkpointing.py [--batch 8] [--tokens 512] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mem import peak_rss_bytes, reset_peak, run_child  # noqa: E402


def make_model(path: str, layers: int) -> None:
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(32000)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0")),
                                  eos_token="t1", pad_token="t0")
    cfg = LlamaConfig(vocab_size=32000, hidden_size=512, num_hidden_layers=layers, num_attention_heads=8,
                      num_key_value_heads=8, intermediate_size=1408, max_position_embeddings=1024,
                      pad_token_id=0, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def child(path: str, checkpointing: bool, b: int, t: int) -> None:
    import torch

    from rlscale.models.hf import HFPolicy

    torch.set_num_threads(1)
    os.environ["RLSCALE_GRADIENT_CHECKPOINTING"] = "1" if checkpointing else "0"
    policy = HFPolicy.load(path, "cpu")
    policy.module.train()
    ids = torch.randint(2, 32000, (b, t), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    warm = policy.token_logprobs(ids[:1, :16], mask[:1, :16], with_entropy=True)  # first-call buffers, lazy init
    (warm[0].sum() + warm[1].sum()).backward()
    policy.module.zero_grad(set_to_none=True)
    del warm
    base = reset_peak()  # the model loaded and warmed up
    t0 = time.perf_counter()
    logp, ent = policy.token_logprobs(ids, mask, with_entropy=True)
    (logp.sum() + 0.01 * ent.sum()).backward()
    wall = time.perf_counter() - t0
    grad_norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in policy.module.parameters())))
    flops = 3 * b * sum(policy.flops_per_token(i) for i in range(t))  # forward + backward, no recomputation counted
    print(json.dumps({"peak_bytes": peak_rss_bytes() - base, "wall_s": wall, "grad_norm": grad_norm, "flops": flops}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1] == "1", args.batch, args.tokens)
        return
    with tempfile.TemporaryDirectory() as d:
        make_model(d, args.layers)
        got = {}
        for name, flag in (("baseline", "0"), ("checkpointing", "1")):
            got[name] = run_child(__file__, "--child", d, flag, "--batch", str(args.batch), "--tokens",
                                  str(args.tokens))
    base, ck = got["baseline"], got["checkpointing"]
    tokens = args.batch * args.tokens
    from sampler import matmul_peak_flops  # bench/sampler.py: the 1-thread fp32 matmul peak

    peak = matmul_peak_flops()
    print(json.dumps({
        "batch": args.batch, "tokens": args.tokens, "layers": args.layers,
        "baseline_peak_gb": round(base["peak_bytes"] / 1e9, 2), "checkpointing_peak_gb": round(ck["peak_bytes"] / 1e9, 2),
        "ratio_peak_baseline_vs_checkpointing": round(base["peak_bytes"] / ck["peak_bytes"], 2),
        "baseline_s": round(base["wall_s"], 2), "checkpointing_s": round(ck["wall_s"], 2),
        "ratio_time_checkpointing_vs_baseline": round(ck["wall_s"] / base["wall_s"], 2),
        "tokens_per_s_baseline": round(tokens / base["wall_s"], 1),
        "tokens_per_s_checkpointing": round(tokens / ck["wall_s"], 1),
        "grad_norm_rel_diff": abs(base["grad_norm"] - ck["grad_norm"]) / base["grad_norm"],
        "peak_gflops_1thread": round(peak / 1e9, 1),
        "peak_fraction_baseline": round(base["flops"] / base["wall_s"] / peak, 3),
        "peak_fraction_checkpointing": round(ck["flops"] / ck["wall_s"] / peak, 3),
    }))


if __name__ == "__main__":
    main()
