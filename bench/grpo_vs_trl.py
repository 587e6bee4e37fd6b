"""Throughput of one GRPO step: rlscale's loop on a lab model vs TRL's GRPOTrainer on the exported HF copy.

Same model weights, n, problems per step and max completion length; rewards from the same grader. For each size
(default s and m) and dtype (fp32, bf16) it reports rollouts/s of both, their ratio, and the fraction of the matmul
peak (measured in this run on --threads threads) that our generation and our update reach.

    .venv/bin/python bench/grpo_vs_trl.py [--sizes s,m] [--steps 4] [--n 8] [--problems 8] [--max-new-tokens 32]
        [--threads 1] [--repeats 3]

The host is shared and its speed drifts by 2x within minutes, so one measurement of each trainer taken at different
times can be off by that much. Each (size, dtype) is therefore measured --repeats times, ours and TRL back to back
(alternating which goes first), and the reported ratio is the median of the per-repeat ratios; the per-repeat
ratios are in the JSON too.

The peak fractions are model-FLOPs utilisation (MFU): the FLOPs of rlscale.compute's convention (every rollout's
full sequence, as an implementation that shares nothing would compute them) per second over the measured matmul
peak. Our sampler prefills each distinct prompt once per chunk and our update computes each prompt once per
micro-batch for all of its group's rows, so the executed FLOPs are fewer and the hardware's utilisation is lower
than these fractions.

Last printed line: one JSON object with ratio_vs_trl (size s, fp32 unless bf16 is faster; the median repeat's),
rollouts_per_s,
gen_peak_fraction, update_peak_fraction, and the per-size/dtype details (with our median generation and update
seconds per step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def matmul_peak(dtype: torch.dtype, size: int = 512, seconds: float = 1.5) -> float:
    """GFLOP/s of a square matmul loop in `dtype` on the current thread count."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - t0) / 1e9


def ours(policy_dir: str, out: Path, args, dtype: str) -> dict:
    from rlscale.models import load_policy
    from rlscale.rl.grpo import GRPOConfig, train
    from rlscale.store import RunStore

    cfg = GRPOConfig(model=policy_dir, task="arith", rollouts_per_problem=args.n, problems_per_batch=args.problems,
                     iterations=args.steps + 1, max_new_tokens=args.max_new_tokens, val_every=0, val_n=1,
                     val_limit=1, checkpoint_every=10_000, micro_batch_size=args.n * args.problems, dtype=dtype,
                     reward="flexible", lr=1e-5)
    torch.set_num_threads(1)  # our threads are workers over generation chunks and micro-batches
    try:
        train(cfg, out, progress=False, policy=load_policy(policy_dir), workers=args.threads)
    finally:
        torch.set_num_threads(args.threads)
    rows = RunStore.open(out).steps()[1:]  # first step warms the kernels up
    step_s = [r["time/gen_s"] + r["time/grade_s"] + r["time/update_s"] for r in rows]
    rollouts = args.n * args.problems
    flops_gen = [b["compute/flops_gen"] - a["compute/flops_gen"] for a, b in zip(rows, rows[1:])] or \
        [rows[0]["compute/flops_gen"] / 2]
    flops_train = [b["compute/flops_train"] - a["compute/flops_train"] for a, b in zip(rows, rows[1:])] or \
        [rows[0]["compute/flops_train"] / 2]
    gen_s = statistics.median(r["time/gen_s"] for r in rows)
    upd_s = statistics.median(r["time/update_s"] for r in rows)
    return {"rollouts_per_s": rollouts / statistics.median(step_s), "gen_s": gen_s, "update_s": upd_s,
            "gen_flops_per_s": statistics.median(flops_gen) / gen_s,
            "update_flops_per_s": statistics.median(flops_train) / upd_s,
            "mean_len": statistics.mean(r["rollout/len_mean"] for r in rows)}


def trl(hf_dir: str, out: Path, args, dtype: str) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlscale.grading import score_batch
    from rlscale.tasks.base import get_task

    problems = get_task("arith").load("train")[: args.problems * (args.steps + 2)]
    ds = Dataset.from_dict({"prompt": [p.question for p in problems], "answer": [p.answer for p in problems]})

    def reward(completions, answer, **kw):
        return [r.reward for r in score_batch(list(completions), list(answer), "flexible", workers=1)]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter())

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    bs = args.n * args.problems
    cfg = GRPOConfig(output_dir=str(out), per_device_train_batch_size=bs, num_generations=args.n,
                     max_completion_length=args.max_new_tokens, max_steps=args.steps + 1, learning_rate=1e-5,
                     report_to="none", use_cpu=True, bf16=dtype == "bf16", logging_steps=1000, save_strategy="no",
                     beta=0.0, temperature=1.0, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[Clock()])
    t0 = time.perf_counter()
    trainer.train()
    stamps = [t0] + times
    step_s = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # skip the first (warm-up) step
    return {"rollouts_per_s": bs / statistics.median(step_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="s,m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--repeats", type=int, default=3,
                    help="measurements of each trainer per size and dtype (ours and TRL back to back); the ratio "
                         "reported is the median of the per-repeat ratios")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both trainers and the peak: TRL's torch intra-op threads; our workers")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(args.threads)

    from rlscale.lab.pretrain import build_policy
    from rlscale.models.export import export_hf

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak ({args.threads} thread(s)): fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s",
          file=sys.stderr)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rlscale-bench-") as tmp:
        for size in args.sizes.split(","):
            pol = build_policy(size, seed=0)
            lab_dir, hf_dir = Path(tmp) / f"lab_{size}", Path(tmp) / f"hf_{size}"
            pol.save(str(lab_dir))
            export_hf(pol, hf_dir)
            for dtype in args.dtypes.split(","):
                pairs = []
                for rep in range(args.repeats):
                    got = {}
                    for who in ("ours", "trl") if rep % 2 == 0 else ("trl", "ours"):
                        out = Path(tmp) / f"{who}_{size}_{dtype}_{rep}"
                        got[who] = ours(str(lab_dir), out, args, dtype) if who == "ours" else \
                            trl(str(hf_dir), out, args, dtype)
                    o, t = got["ours"], got["trl"]
                    pairs.append((o, t, o["rollouts_per_s"] / t["rollouts_per_s"]))
                    print(f"{size} {dtype} repeat {rep + 1}/{args.repeats}: ours {o['rollouts_per_s']:.1f} "
                          f"rollouts/s, TRL {t['rollouts_per_s']:.1f} -> {pairs[-1][2]:.2f}x", file=sys.stderr)
                o, t, ratio = sorted(pairs, key=lambda p: p[2])[len(pairs) // 2]  # the median repeat
                r = {"ours": o, "trl": t, "ratio_vs_trl": ratio, "ratios": [p[2] for p in pairs],
                     "gen_peak_fraction": o["gen_flops_per_s"] / 1e9 / peaks["fp32"],
                     "update_peak_fraction": o["update_flops_per_s"] / 1e9 / peaks[dtype]}
                results[f"{size}/{dtype}"] = r
                print(f"{size} {dtype}: median of {args.repeats}: ours {o['rollouts_per_s']:.1f} rollouts/s, TRL "
                      f"{t['rollouts_per_s']:.1f} -> {ratio:.2f}x (repeats: "
                      f"{', '.join(f'{x:.2f}' for x in r['ratios'])}); gen {r['gen_peak_fraction']:.3f} of fp32 "
                      f"peak, update {r['update_peak_fraction']:.3f} of {dtype} peak", file=sys.stderr)
    first = args.sizes.split(",")[0]
    best = max((k for k in results if k.startswith(first + "/")), key=lambda k: results[k]["ours"]["rollouts_per_s"])
    head = results[best]
    print(json.dumps({"ratio_vs_trl": head["ratio_vs_trl"], "rollouts_per_s": head["ours"]["rollouts_per_s"],
                      "gen_peak_fraction": head["gen_peak_fraction"],
                      "update_peak_fraction": head["update_peak_fraction"], "headline": best,
                      "min_ratio_vs_trl": min(r["ratio_vs_trl"] for r in results.values()),
                      "peak_gflops": peaks, "n": args.n, "problems_per_step": args.problems,
                      "max_new_tokens": args.max_new_tokens, "threads": args.threads, "repeats": args.repeats,
                      "results": {k: {"ratio_vs_trl": v["ratio_vs_trl"], "ratios": v["ratios"],
                                      "ours_rollouts_per_s":
                                      v["ours"]["rollouts_per_s"], "trl_rollouts_per_s": v["trl"]["rollouts_per_s"],
                                      "gen_peak_fraction": v["gen_peak_fraction"],
                                      "update_peak_fraction": v["update_peak_fraction"],
                                      "ours_gen_s": v["ours"]["gen_s"], "ours_update_s": v["ours"]["update_s"]}
                                  for k, v in results.items()}}))


if __name__ == "__main__":
    main()
