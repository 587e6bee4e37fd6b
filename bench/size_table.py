"""Model-size table: pretrain every lab size on the same token budget; report params, tokens, held-out loss and
greedy accuracy on held-out arith problems. Last line: JSON list.

    .venv/bin/python bench/size_table.py --tokens 1000000 [--sizes xs,s,m,l] [--out-dir DIR] [--problems 500]
"""

from __future__ import annotations

import argparse
import json

from rlscale.numerics import pin_cpu_numerics

pin_cpu_numerics()  # the kernels the CLI runs (rlscale.numerics), chosen before torch starts

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--sizes", default="xs,s,m,l")
    ap.add_argument("--out-dir", default=None, help="save each checkpoint to DIR/<size>")
    ap.add_argument("--problems", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from rlscale.engine.base import SamplingParams
    from rlscale.lab.pretrain import PretrainConfig, pretrain
    from rlscale.tasks.arith import is_correct, load_arith

    problems = load_arith("test", limit=args.problems)
    rows = []
    for size in args.sizes.split(","):
        out = f"{args.out_dir}/{size}" if args.out_dir else None
        pol = pretrain(PretrainConfig(size=size, tokens=args.tokens), out=out, progress=False)
        res = pol.sampler().generate([p.question for p in problems],
                                     SamplingParams(n=1, temperature=0.0, max_new_tokens=128))
        acc = sum(is_correct(rs[0].text, p.answer) for p, rs in zip(problems, res)) / len(problems)
        row = {"size": size, "params": pol.num_params(), "tokens": pol.meta["compute"]["tokens"],
               "flops": pol.meta["compute"]["flops"], "wall_s": round(pol.meta["compute"]["wall_s"], 1),
               "heldout_loss": round(pol.meta["heldout_loss"], 4), "greedy_acc": round(acc, 4)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
