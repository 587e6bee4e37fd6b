"""Peak memory of the update's log-prob and entropy step on a real vocabulary: lean_logprobs_from_logits (Hugging Face
policies) against logprobs_from_logits (the baseline, log_softmax then -(p log p); the lab's tiny vocabulary keeps
it), forward + backward of a loss using both outputs, each in its own process (peak RSS above the process's RSS
with the logits allocated; the same allocations a GPU makes, which is where they run out). Logits (B, T, V) with
V = 151,936 (Qwen2.5's vocabulary), fp32 and bf16 (autocast's output dtype). Last line: JSON.

    .venv/bin/python bench/logprobs_memory.py [--batch 4] [--tokens 512] [--vocab 151936]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mem import peak_rss_bytes, reset_peak, run_child  # noqa: E402


def child(which: str, dtype: str, b: int, t: int, v: int) -> None:
    import torch

    from rlscale.models.base import lean_logprobs_from_logits, logprobs_from_logits

    torch.set_num_threads(1)
    fn = lean_logprobs_from_logits if which == "lean" else logprobs_from_logits
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, t, v, generator=g).to(getattr(torch, dtype)).requires_grad_(True)
    targets = torch.randint(0, v, (b, t), generator=g)
    w = torch.randn(b, t, generator=g)
    small = logits[:1, :4].detach().clone().requires_grad_(True)  # first-call buffers, lazy init
    lp0, ent0 = fn(small, targets[:1, :4], 1.0, with_entropy=True)
    (lp0.sum() + ent0.sum()).backward()
    del small, lp0, ent0
    base = reset_peak()  # the logits allocated
    t0 = time.perf_counter()
    lp, ent = fn(logits, targets, 1.0, with_entropy=True)
    ((lp * w).sum() + 0.01 * (ent * w).sum()).backward()
    wall = time.perf_counter() - t0
    print(json.dumps({"peak_above_logits_bytes": peak_rss_bytes() - base, "wall_s": wall,
                      "logits_bytes": logits.numel() * 4}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.batch, args.tokens, args.vocab)
        return
    res: dict = {"batch": args.batch, "tokens": args.tokens, "vocab": args.vocab}
    for dtype in ("float32", "bfloat16"):
        got = {}
        for which in ("baseline", "lean"):
            got[which] = run_child(__file__, "--child", which, dtype, "--batch", str(args.batch),
                                   "--tokens", str(args.tokens), "--vocab", str(args.vocab))
        copy = got["lean"]["logits_bytes"]  # one fp32 (B, T, V) tensor
        for which, r in got.items():
            res[f"{dtype}_{which}_peak_gb"] = round(r["peak_above_logits_bytes"] / 1e9, 2)
            res[f"{dtype}_{which}_fp32_copies"] = round(r["peak_above_logits_bytes"] / copy, 2)
            res[f"{dtype}_{which}_s"] = round(r["wall_s"], 2)
        res[f"{dtype}_ratio_peak_baseline_vs_lean"] = round(
            got["baseline"]["peak_above_logits_bytes"] / got["lean"]["peak_above_logits_bytes"], 2)
        res[f"{dtype}_ratio_time_baseline_vs_lean"] = round(got["baseline"]["wall_s"] / got["lean"]["wall_s"], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
