"""Supervised fine-tuning on (prompt, solution) pairs, loss on solution tokens only; same run store as GRPO.

Data: JSONL rows with `solution` and either `prompt` (used verbatim) or `question` (rendered with the template);
`problem_id` (or `id`) is optional. Several rows per problem (several solutions) are allowed: multi-solution SFT.
Each example is tokens(prompt) + tokens(solution) + EOS; the loss is the token-mean NLL over solution+EOS tokens of
the whole batch (weights computed before the micro-batch loop, so micro-batching does not change gradients).
`train_sft(SFTConfig(...), out_dir)` writes RUN/model, loadable by rlscale.models.load_policy.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlscale.config import check_field_types, config_from_dict, config_to_dict
from rlscale.errors import UserError
from rlscale.numerics import numerics_record


@dataclass(frozen=True)
class SFTConfig:
    model: str = ""
    """policy to fine-tune: a lab checkpoint dir or a Hugging Face model dir"""
    data: str = ""
    """JSONL of examples: solution + (prompt | question) [+ problem_id]; several solutions per problem allowed"""
    template: str = "plain"
    """prompt template for rows with `question` (rows with `prompt` are used verbatim)"""
    epochs: float = 1.0
    """passes over the data (ignored when steps is set)"""
    steps: int | None = None
    """number of optimizer steps (overrides epochs)"""
    batch_size: int = 32
    """examples per optimizer step"""
    micro_batch_size: int = 32
    """examples per forward/backward chunk (memory only)"""
    lr: float = 1e-4
    """peak learning rate (AdamW)"""
    warmup_steps: int = 0
    """linear LR warmup steps"""
    adam_beta1: float = 0.9
    """AdamW beta1"""
    adam_beta2: float = 0.99
    """AdamW beta2"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    grad_clip: float = 1.0
    """clip the global grad norm (0 = off)"""
    max_len: int | None = None
    """drop examples longer than this many tokens (None = the model's limit is the caller's problem)"""
    seed: int = 0
    """data order seed"""
    checkpoint_every: int = 50
    """checkpoint every k steps (and at the end); the last 2 are kept"""
    dtype: str = "fp32"
    """fp32 | bf16 (CPU autocast)"""

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SFTConfig:
        return config_from_dict(cls, d, "SFT", "rlscale train sft")

    def validate(self) -> SFTConfig:
        check_field_types(self, "SFT config")
        if not self.model:
            raise UserError("model is required: pass --model DIR")
        if not self.data:
            raise UserError("data is required: pass --data FILE.jsonl")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"steps must be >= 1 (got {self.steps})")
        if self.steps is None and not self.epochs > 0:
            raise UserError(f"epochs must be > 0 (got {self.epochs})")
        if self.batch_size < 1 or self.micro_batch_size < 1 or self.checkpoint_every < 1:
            raise UserError("batch_size, micro_batch_size and checkpoint_every must be >= 1")
        if not self.lr > 0 or self.warmup_steps < 0:
            raise UserError("need lr > 0 and warmup_steps >= 0")
        if self.dtype not in ("fp32", "bf16"):
            raise UserError(f"dtype='{self.dtype}' is not valid; choose fp32 or bf16")
        return self


def load_examples(path: str, template: str) -> list[tuple[str, str, str]]:
    """(problem_id, prompt, solution) per JSONL row; UserError naming file:line on a bad row."""
    from rlscale.io import read_jsonl

    rows = read_jsonl(path, required=("solution",))
    out = []
    for i, r in enumerate(rows, 1):
        if "prompt" in r:
            prompt = str(r["prompt"])
        elif "question" in r:
            from rlscale.prompts import render
            from rlscale.tasks.base import Problem

            prompt = render(Problem(id=str(r.get("problem_id", i)), question=str(r["question"]), answer=""), template)
        else:
            raise UserError(f"{path}: example {i} has neither 'prompt' nor 'question'")
        out.append((str(r.get("problem_id", r.get("id", i))), prompt, str(r["solution"])))
    if not out:
        raise UserError(f"{path}: no examples")
    return out


def train_sft(cfg: SFTConfig, out_dir: str | Path, resume: bool = False, progress: bool = True, *,
              policy=None) -> dict:
    """Fine-tune and return the summary {steps, examples, tokens, loss_first, loss_last, wall_s, model_dir}."""
    import torch

    from rlscale.compute import cumulative_forward_flops, training_flops
    from rlscale.procs import keep_freed_memory
    from rlscale.rl.grpo import open_run, problem_indices
    from rlscale.rl.lr import adamw, warmup_factor

    keep_freed_memory()
    cfg.validate()
    store, finished = open_run(cfg, out_dir, resume, create=False)  # a finished run is never re-run
    if finished is not None:
        store.close()
        return finished
    examples = load_examples(cfg.data, cfg.template)
    if policy is None:
        from rlscale.models import load_policy
        policy = load_policy(cfg.model)
    tok = policy.tokenizer
    seqs = []
    for _pid, prompt, sol in examples:
        p, s = tok.encode(prompt), tok.encode(sol) + [int(tok.eos_id)]
        if cfg.max_len is None or len(p) + len(s) <= cfg.max_len:
            seqs.append((p, s))
    if not seqs:
        raise UserError(f"{cfg.data}: every example is longer than max_len={cfg.max_len}")
    num_steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(seqs) / cfg.batch_size))

    if store is None:
        store, _ = open_run(cfg, out_dir, resume)
    module = policy.module
    params = [p for p in module.parameters() if p.requires_grad]
    opt = adamw(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    store.sweep_temp()
    counters = {"tokens": 0.0, "flops_train": 0.0, "wall_s": 0.0}
    start = 0
    ckpt = store.latest_checkpoint()
    if ckpt is not None:
        state = torch.load(ckpt[1] / "state.pt", weights_only=False, map_location="cpu")  # copied to the device
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        counters.update(state["counters"])
        start = state["step"]
    store.truncate_after(start if ckpt is not None else -1)
    F = cumulative_forward_flops(policy.flops_per_token, max(len(p) + len(s) for p, s in seqs) + 1)
    t_session, wall0 = time.perf_counter(), counters["wall_s"]
    from rlscale.models.device import bf16_autocast, module_device

    autocast = bf16_autocast(module_device(module), cfg.dtype == "bf16")
    module.train()
    for step in range(start, num_steps):
        # ---- batch: (B, L) right-padded; solution tokens marked in logp coordinates (B, L-1) ----
        rows = [seqs[i] for i in problem_indices(step, cfg.batch_size, len(seqs), cfg.seed)]
        L = max(len(p) + len(s) for p, s in rows)
        ids = torch.full((len(rows), L), int(tok.pad_id), dtype=torch.long)
        attn = torch.zeros((len(rows), L), dtype=torch.long)
        mask = torch.zeros((len(rows), L - 1))
        for i, (p, s) in enumerate(rows):
            ids[i, :len(p) + len(s)] = torch.tensor(p + s)
            attn[i, :len(p) + len(s)] = 1
            mask[i, len(p) - 1:len(p) - 1 + len(s)] = 1.0
        w = mask / mask.sum().clamp(min=1.0)  # global token-mean weights
        lr = cfg.lr * warmup_factor(step, cfg.warmup_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for c in range(0, len(rows), cfg.micro_batch_size):
            sl = slice(c, c + cfg.micro_batch_size)
            with autocast:
                logp, _ = policy.token_logprobs(ids[sl], attn[sl])
            loss = -(w[sl] * logp.float()).sum()
            loss.backward()
            loss_sum += float(loss.detach())
        gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        opt.step()
        lens = [len(p) + len(s) for p, s in rows]
        counters["tokens"] += float(mask.sum())
        counters["flops_train"] += training_flops(lens, F)
        wall = wall0 + time.perf_counter() - t_session
        done = step + 1
        store.log_step(done, {"train/loss": loss_sum, "train/lr": lr, "train/grad_norm": float(gn),
                              "compute/tokens_trained": counters["tokens"], "compute/flops_train": counters["flops_train"],
                              "compute/flops": counters["flops_train"], "time/wall_s": wall,
                              "epochs": done * cfg.batch_size / len(seqs)})
        if done % cfg.checkpoint_every == 0 or done == num_steps:
            def write(d: Path, done=done, wall=wall) -> None:
                torch.save({"model": module.state_dict(), "optimizer": opt.state_dict(), "step": done,
                            "cursor": done * cfg.batch_size, "counters": {**counters, "wall_s": wall}}, d / "state.pt")
            store.save_checkpoint(done, write)
        if progress and (done % 10 == 0 or done == num_steps):
            print(f"sft step {done}/{num_steps} | loss {loss_sum:.4f} | lr {lr:.2e}", file=sys.stderr, flush=True)
    model_dir = store.root / "model"
    policy.save(str(model_dir))
    rows_ = store.steps()
    summary = {"steps": len(rows_), "examples": len(seqs), "tokens": counters["tokens"],
               "loss_first": rows_[0]["train/loss"] if rows_ else None,
               "loss_last": rows_[-1]["train/loss"] if rows_ else None,
               "wall_s": wall0 + time.perf_counter() - t_session, "flops": counters["flops_train"],
               "model_dir": str(model_dir), "config_hash": store.config_hash,
               "numerics": numerics_record()}  # what decides these bits (rlscale.numerics)
    store.write_summary(summary)
    store.close()
    return summary
