"""On-policy GRPO: one readable loop (sample problems, rollout, grade, advantages, update, log, eval, checkpoint).

`train(GRPOConfig(...), out_dir)` runs or resumes a run in a run store (rlscale.store) and returns its summary. Every
semantic choice (advantage estimator and std, loss aggregation, clipping, TIS, KL/entropy, zero-variance filtering,
LR scaling) is a config field; the field docstrings below are the `rlscale train grpo --help` texts.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlscale.compute import round_up
from rlscale.config import check_field_types, config_from_dict, config_to_dict
from rlscale.errors import UserError
from rlscale.numerics import numerics_record
from rlscale.seeds import derive_seed

if TYPE_CHECKING:
    import torch

PRESETS: dict[str, dict[str, float]] = {
    "healthy-easy": {"kl_coef": 1e-3, "entropy_coef": 1e-3},
    "healthy-hard": {"kl_coef": 0.0, "entropy_coef": 0.0},
}
"""the healthy-recipe rule: KL + entropy bonus on Easy sets, neither on Hard sets (explicit coefficients win)"""

REWARD_MODES = ("strict", "flexible", "custom_flexible", "boxed", "math")
DTYPES = ("fp32", "bf16")
MIRRORS = ("none", "tensorboard", "mlflow")


@dataclass(frozen=True)
class GRPOConfig:
    model: str = ""
    """policy to train: a lab checkpoint dir or a Hugging Face model dir"""
    task: str = "arith"
    """task name (see `rlscale tasks`); gives the loader, prompt template and default reward"""
    train_set: str | None = None
    """training problems JSONL (id, question, answer); default: the task's train split"""
    val_set: str | None = None
    """validation problems JSONL; default: the task's val split"""
    template: str | None = None
    """prompt template; default: the task's"""
    rollouts_per_problem: int = 8
    """n: rollouts per problem used by the update (the group size)"""
    problems_per_batch: int | None = None
    """B_problem: problems per optimizer step (default 16, or batch_rollouts / n)"""
    batch_rollouts: int | None = None
    """alternative to problems_per_batch: rollouts per step B = n * B_problem (must hold whole groups)"""
    iterations: int | None = None
    """M: number of training steps (give this or budget_rollouts)"""
    budget_rollouts: int | None = None
    """compute budget C in rollouts: M = C // (rollouts generated per step)"""
    advantage: str = "grpo"
    """advantage estimator: grpo (group mean baseline) | rloo (leave-one-out baseline)"""
    scale_std: bool = True
    """divide advantages by the group std (False = Dr. GRPO)"""
    std_estimator: str = "population"
    """group std: population (divide by n) | bessel (divide by n-1, TRL/verl); advantages differ by sqrt(n/(n-1))"""
    adv_eps: float = 1e-4
    """epsilon added to the std in the advantage denominator"""
    baseline_rollouts: int | None = None
    """decoupled baseline: n_est >= n rollouts per problem for baseline/std, update on the first n (default n)"""
    loss_aggregation: str = "token-mean"
    """token-mean (over the global batch) | sequence-mean | constant-length (Dr. GRPO: / (max_new_tokens * seqs))"""
    updates_per_batch: int = 1
    """optimizer steps per generated batch (>1 makes the PPO ratio clipping active)"""
    clip_eps_low: float = 0.2
    """PPO ratio clip: lower bound 1 - eps_low"""
    clip_eps_high: float = 0.2
    """PPO ratio clip: upper bound 1 + eps_high (clip-higher: e.g. 0.28)"""
    tis_cap: float | None = None
    """truncated importance sampling against the sampler's log-probs: weight min(pi_old/pi_sampler, cap); None = off"""
    kl_coef: float | None = None
    """k3 KL-to-reference coefficient (None: the preset's value, else 0)"""
    entropy_coef: float | None = None
    """entropy bonus coefficient (None: the preset's value, else 0)"""
    kl_ratio_correction: bool = False
    """multiply the k3 KL by the PPO ratio (TRL's default use_bias_correction_kl; changes the gradient only)"""
    preset: str | None = None
    """healthy-recipe preset: healthy-easy (KL + entropy) | healthy-hard (neither)"""
    zero_variance_filter: str = "off"
    """groups with equal rewards: off | drop (leave the loss) | kl-entropy (only drop their KL/entropy terms)"""
    lr: float | None = None
    """base learning rate at the reference batch size lr_ref_batch; None = the model's suggested RL rate (lab
    models: rlscale.lab.presets.RL_LR of their size; Hugging Face models: 1e-6, TRL's default)"""
    lr_scaling: str = "constant"
    """scale the LR with B = n * B_problem: constant | sqrt | linear"""
    lr_ref_batch: int = 128
    """reference batch size (rollouts) at which the LR equals lr"""
    warmup_steps: int = 0
    """linear LR warmup over this many optimizer steps"""
    adam_beta1: float = 0.9
    """AdamW beta1"""
    adam_beta2: float = 0.99
    """AdamW beta2"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    grad_clip: float = 1.0
    """clip the global grad norm to this value (0 = off)"""
    reward: str | None = None
    """training reward = grading mode: strict | flexible | custom_flexible | boxed | math (default: the task's)"""
    temperature: float = 1.0
    """training sampling temperature (log-probs in the loss use the same temperature)"""
    top_p: float = 1.0
    """training nucleus sampling mass"""
    val_temperature: float = 1.0
    """validation sampling temperature"""
    val_top_p: float = 1.0
    """validation nucleus sampling mass"""
    max_new_tokens: int | None = None
    """maximum generated tokens per rollout (default: the task's budget, e.g. arith 128)"""
    mask_truncated: bool = False
    """exclude truncated rollouts (hit max_new_tokens) from the loss"""
    val_every: int = 10
    """validate every k steps (0: only before and after training)"""
    val_steps: tuple[int, ...] = ()
    """extra steps to validate at (e.g. log-spaced compute points; the sweep's val_log_points sets them)"""
    val_n: int = 4
    """samples per validation problem"""
    val_ks: tuple[int, ...] = (1,)
    """k values for val pass@k / worst@k / maj@k (each <= val_n)"""
    val_limit: int | None = 200
    """number of validation problems (None = all)"""
    val_seed: int = 1234
    """fixed validation sampling seed (same samples for the same weights)"""
    val_reseed: int | None = None
    """a second validation seed: the final model is also evaluated under it (its val/avg logged with the last
    evaluation as val/avg_reseed, and as val_after_reseed in summary.json). Runs that share val_seed share part of
    their validation sampling error; the pair measures the part they do not (rlscale.scaling.validation_budget)"""
    replay_correct: bool = False
    """keep every correct completion (reward 1) in the run store's replay table (RunStore.replay_solutions gives
    the last K per problem; CoScale-RL's re-distillation reads it)"""
    micro_batch_size: int | None = None
    """rollouts per forward/backward chunk (memory only: gradients do not depend on it); None: the model's
    (suggested_micro_batch: 64 for lab models, 8 for Hugging Face models as TRL's per-device batch)"""
    seed: int = 0
    """run seed: problem order and per-rollout sampling seeds derive from it"""
    checkpoint_every: int = 10
    """write a checkpoint every k steps (and at the end); the last 2 are kept"""
    dtype: str = "fp32"
    """update precision: fp32 | bf16 (CPU autocast for the forward/backward of the update; on the lab model's
    fused trunk the matmuls take bf16 inputs and everything else stays fp32, see rlscale.models.fused)"""
    log_to: str = "none"
    """mirror metrics to: none | tensorboard | mlflow (when installed)"""

    # ---- derived --------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.rollouts_per_problem

    @property
    def n_est(self) -> int:
        return self.baseline_rollouts or self.rollouts_per_problem

    @property
    def B_problem(self) -> int:  # noqa: N802  (the study's name)
        if self.problems_per_batch is not None:
            return self.problems_per_batch
        if self.batch_rollouts is not None:
            return self.batch_rollouts // self.rollouts_per_problem
        return 16

    @property
    def rollouts_per_step(self) -> int:
        """rollouts generated per step (n_est per problem; all of them count as spent compute)"""
        return self.n_est * self.B_problem

    @property
    def num_steps(self) -> int:
        if self.iterations is not None:
            return self.iterations
        return int(self.budget_rollouts or 0) // self.rollouts_per_step

    @property
    def kl(self) -> float:
        if self.kl_coef is not None:
            return self.kl_coef
        return PRESETS.get(self.preset or "", {}).get("kl_coef", 0.0)

    @property
    def entropy(self) -> float:
        if self.entropy_coef is not None:
            return self.entropy_coef
        return PRESETS.get(self.preset or "", {}).get("entropy_coef", 0.0)

    # ---- (de)serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GRPOConfig:
        return config_from_dict(cls, d, "GRPO", "rlscale train grpo")

    def validate(self) -> GRPOConfig:
        from rlscale.rl.advantages import ADVANTAGES, STD_ESTIMATORS
        from rlscale.rl.losses import AGGREGATIONS, ZERO_VARIANCE_FILTERS
        from rlscale.rl.lr import LR_SCALINGS

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        def choice(name: str, value: Any, valid) -> None:
            need(value in valid, f"{name}='{value}' is not valid; choose one of: {', '.join(map(str, valid))}")

        check_field_types(self, "GRPO config")
        need(bool(self.model), "model is required: pass --model DIR (a lab checkpoint or an HF model dir)")
        need(self.rollouts_per_problem >= 2, "rollouts_per_problem must be >= 2 for group advantages")
        if self.batch_rollouts is not None:
            need(self.batch_rollouts % self.rollouts_per_problem == 0,
                 f"batch must hold whole groups: n={self.rollouts_per_problem} does not divide "
                 f"batch_rollouts={self.batch_rollouts}")
            need(self.problems_per_batch is None or self.problems_per_batch * self.n == self.batch_rollouts,
                 "give problems_per_batch or batch_rollouts, not two inconsistent values")
        need(self.B_problem >= 1, f"problems_per_batch must be >= 1 (got {self.B_problem})")
        need(self.baseline_rollouts is None or self.baseline_rollouts >= self.n,
             f"baseline_rollouts={self.baseline_rollouts} must be >= rollouts_per_problem={self.n}")
        need((self.iterations is None) != (self.budget_rollouts is None),
             "give exactly one of iterations (--iterations M) or budget_rollouts (--budget-rollouts C)")
        if self.iterations is not None:
            need(self.iterations >= 1, f"iterations must be >= 1 (got {self.iterations})")
        else:
            need(self.num_steps >= 1, f"budget_rollouts={self.budget_rollouts} is smaller than one step "
                                      f"({self.rollouts_per_step} rollouts = n_est * problems_per_batch)")
        choice("advantage", self.advantage, tuple(ADVANTAGES))
        choice("std_estimator", self.std_estimator, STD_ESTIMATORS)
        choice("loss_aggregation", self.loss_aggregation, AGGREGATIONS)
        choice("zero_variance_filter", self.zero_variance_filter, ZERO_VARIANCE_FILTERS)
        choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        choice("dtype", self.dtype, DTYPES)
        choice("log_to", self.log_to, MIRRORS)
        if self.preset is not None:
            choice("preset", self.preset, tuple(PRESETS))
        if self.reward is not None:
            choice("reward", self.reward, REWARD_MODES)
        need(self.updates_per_batch >= 1, "updates_per_batch must be >= 1")
        need(0 <= self.clip_eps_low < 1 and self.clip_eps_high >= 0, "clip eps: need 0 <= eps_low < 1, eps_high >= 0")
        need(self.tis_cap is None or self.tis_cap > 0, "tis_cap must be > 0 (or unset)")
        need(self.kl >= 0 and self.entropy >= 0, "kl_coef and entropy_coef must be >= 0")
        need((self.lr is None or self.lr > 0) and self.lr_ref_batch >= 1 and self.warmup_steps >= 0,
             "need lr > 0 (or unset), lr_ref_batch >= 1, warmup_steps >= 0")
        need(self.temperature > 0, "temperature must be > 0 for training (log-probs of the sampling distribution)")
        need(0 < self.top_p <= 1 and 0 < self.val_top_p <= 1, "top_p and val_top_p must be in (0, 1]")
        need(self.val_temperature >= 0, "val_temperature must be >= 0")
        need(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        need(self.val_every >= 0 and self.val_n >= 1, "need val_every >= 0 and val_n >= 1")
        need(all(int(k) >= 1 for k in self.val_steps), "val_steps must be steps >= 1")
        need(len(self.val_ks) >= 1 and all(1 <= k <= self.val_n for k in self.val_ks),
             f"val_ks={list(self.val_ks)}: each k must be in 1..val_n={self.val_n}")
        need(self.val_limit is None or self.val_limit >= 1, "val_limit must be >= 1 (or unset for all)")
        need(self.val_reseed != self.val_seed, f"val_reseed={self.val_reseed} equals val_seed: give another seed "
                                               "(or leave val_reseed unset)")
        need((self.micro_batch_size is None or self.micro_batch_size >= 1) and self.checkpoint_every >= 1,
             "micro_batch_size and checkpoint_every >= 1")
        if self.log_to != "none":
            import importlib.util
            need(importlib.util.find_spec(self.log_to if self.log_to == "mlflow" else "tensorboard") is not None,
                 f"log_to={self.log_to}: package not installed; pip install {self.log_to} or use log_to=none")
        return self


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal after each field) -> {field: doc}."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())  # type: ignore[attr-defined]
    return docs


# ---- small helpers of the loop --------------------------------------------------------------------------------
def problem_passes(ids: list[str], valid: torch.Tensor, rewards: torch.Tensor) -> list[tuple[str, int, int]]:
    """Per-problem (problem_id, scored rollouts, correct rollouts) of one step, summed over repeats of a problem
    (a batch that spans an epoch boundary can hold the same problem twice).  valid, rewards: (B, G)."""
    agg: dict[str, list[int]] = {}
    for i, pid in enumerate(ids):
        a = agg.setdefault(pid, [0, 0])
        a[0] += int(valid[i].sum())
        a[1] += int((rewards[i] == 1).sum())
    return [(pid, n, c) for pid, (n, c) in agg.items()]


def padded_tokens(rows: list[int], lens: list[int], multiple: int = 8) -> int:
    """Tokens of a micro-batch of `rows` padded to its longest length rounded up to `multiple` (>= 1 token)."""
    return len(rows) * round_up(max(max(lens[i] for i in rows), 1), multiple)


def length_buckets(order: list[int], lens: list[int], micro_batch_size: int, multiple: int = 8,
                   min_saving: float = 0.15) -> list[list[int]]:
    """Micro-batches of the rows `order` (sorted by length): chunks of `micro_batch_size`, each split once more at
    the point that minimises padded tokens (rows x length rounded up to `multiple`) when that saves >= `min_saving`
    of the chunk's padded tokens. Forward/backward cost is ~linear in padded tokens, so mixed lengths (short
    prompts + early EOS next to long ones) stop paying for the longest row; the gradient is the same for any
    split (the loss weights are global)."""
    def padded(rows: list[int]) -> int:
        return padded_tokens(rows, lens, multiple)

    out = []
    for c in range(0, len(order), micro_batch_size):
        rows = order[c:c + micro_batch_size]
        whole = padded(rows)
        best = min(((padded(rows[:k]) + padded(rows[k:]), k) for k in range(1, len(rows))), default=(whole, 0))
        out.extend([rows[:best[1]], rows[best[1]:]] if best[0] <= (1 - min_saving) * whole else [rows])
    return out


def group_chunks(rows_by_group: list[list[int]], comp_lens: list[int], micro_batch_size: int) -> list[list[int]]:
    """Micro-batches of whole groups (the rows continuing one prompt), groups in order of their longest completion,
    packed until a chunk holds `micro_batch_size` rows; a group larger than that is split into pieces of
    `micro_batch_size`. Every row appears once."""
    out: list[list[int]] = []
    cur: list[int] = []
    for rows in sorted((r for r in rows_by_group if r), key=lambda r: max(comp_lens[i] for i in r)):
        if cur and len(cur) + len(rows) > micro_batch_size:
            out.append(cur)
            cur = []
        for c in range(0, len(rows), micro_batch_size):
            piece = rows[c:c + micro_batch_size]
            if len(piece) == micro_batch_size and not cur:
                out.append(piece)
            else:
                cur.extend(piece)
    return out + ([cur] if cur else [])


def chunk_cost(chunks: list[list[int]], group_of: list[int], prompt_lens: list[int], comp_lens: list[int],
               multiple: int = 8, live: bool = False) -> int:
    """Tokens the shared-prefix update computes for these micro-batches: per chunk, its distinct prompts x the
    longest of them + its rows x the longest completion rounded up to `multiple`. prompt_lens is per group.
    live: the update computes on the live rows only (rlscale.models.fused.live_rows): per chunk, its distinct
    prompts' tokens + its rows' completion tokens, so only recomputed prompts differ between chunkings."""
    cost = 0
    for rows in chunks:
        groups = {group_of[i] for i in rows}
        if live:
            cost += sum(prompt_lens[g] for g in groups) + sum(comp_lens[i] for i in rows)
        else:
            cost += len(groups) * max(prompt_lens[g] for g in groups)
            cost += padded_tokens(rows, comp_lens, multiple)
    return cost


def update_chunks(rows_by_group: list[list[int]], group_of: list[int], prompt_lens: list[int],
                  comp_lens: list[int], micro_batch_size: int, live: bool = False) -> list[list[int]]:
    """The update's micro-batches: whole groups (each prompt computed once) or rows sorted by completion length
    (least padding, a prompt recomputed in every chunk that holds one of its rows), whichever computes fewer
    tokens (`chunk_cost`; `live` as there: then whole groups, which also make the fewest micro-batches). Short
    completions favour the first, long ones of mixed lengths the second; the gradient is the same either way (the
    loss weights are global)."""
    order = sorted((i for rows in rows_by_group for i in rows), key=lambda i: comp_lens[i])
    candidates = [group_chunks(rows_by_group, comp_lens, micro_batch_size),
                  length_buckets(order, comp_lens, micro_batch_size)]
    return min(candidates, key=lambda c: chunk_cost(c, group_of, prompt_lens, comp_lens, live=live))


def pack_completions(token_ids: list[list[int]], logprobs: list[list[float]], pad_id: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Completions right-padded to their longest length rounded up to 8 (>= 8): ids (N, C) padded with pad_id,
    mask (N, C) 1.0 on generated tokens, and the sampler's log-probs (N, C) (0 on padding). One tensor
    construction each: per-row tensor writes cost ~5 ms per 64-row step, a tenth of the lab model's update."""
    import torch

    lens = [len(t) for t in token_ids]
    C = round_up(max(max(lens, default=0), 1), 8)
    ids = torch.tensor([list(t) + [pad_id] * (C - g) for t, g in zip(token_ids, lens)], dtype=torch.long)
    mask = (torch.arange(C)[None, :] < torch.tensor(lens)[:, None]).float()
    lp = torch.tensor([list(x[:g]) + [0.0] * (C - g) for x, g in zip(logprobs, lens)], dtype=torch.float32)
    return ids.view(len(lens), C), mask, lp.view(len(lens), C)


def group_inputs(row_prompts: list[list[int]], row_groups: list[int], comp: torch.Tensor, pad_id: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Arguments of Policy.completion_logprobs for one micro-batch: its distinct prompts left-padded (G, P) with
    their mask (G, P), the completions (R, C) and each row's index into those prompts (R,). row_prompts[r] is row
    r's prompt ids, row_groups[r] its group (rows of one group share the prompt)."""
    import torch

    from rlscale.engine.base import first_occurrences
    from rlscale.models.base import left_pad

    reps, inv = first_occurrences(row_groups)
    ids, mask = left_pad([row_prompts[r] for r in reps], pad_id)
    return ids, mask, comp, torch.tensor(inv)


def problem_indices(step: int, batch: int, num_problems: int, seed: int) -> list[int]:
    """Problems of 0-based step `step`: positions step*batch .. of an epoch-wise shuffled stream (seeded per epoch).
    The cursor is step * batch, so a resumed run continues the same order."""
    out = []
    for pos in range(step * batch, (step + 1) * batch):
        epoch, k = divmod(pos, num_problems)
        perm = _epoch_perm(seed, epoch, num_problems)
        out.append(perm[k])
    return out


_PERM_CACHE: dict[tuple[int, int, int], list[int]] = {}


def _epoch_perm(seed: int, epoch: int, num: int) -> list[int]:
    key = (seed, epoch, num)
    if key not in _PERM_CACHE:
        perm = list(range(num))
        random.Random(derive_seed(seed, "epoch", epoch)).shuffle(perm)
        _PERM_CACHE.clear()
        _PERM_CACHE[key] = perm
    return _PERM_CACHE[key]


def render_prompt(problem, template: str) -> str:
    from rlscale.prompts import render
    return render(problem, template)


def with_task_defaults(cfg: GRPOConfig) -> GRPOConfig:
    """cfg with max_new_tokens = the task's generation budget when unset (None)."""
    if cfg.max_new_tokens is not None:
        return cfg
    from rlscale.tasks.base import get_task

    return dataclasses.replace(cfg, max_new_tokens=get_task(cfg.task).max_new_tokens)


HF_RL_LR = 1e-6
"""suggested GRPO learning rate for Hugging Face models (TRL's GRPOConfig default; verl's examples use 1e-6 too)"""


def suggested_rl_lr(model_dir: str, policy=None) -> float:
    """The RL learning rate a run on this model gets when none is given: RL_LR of a lab model's size (from the
    in-memory policy's meta, else the checkpoint's rlscale_model.json), HF_RL_LR for anything else."""
    from rlscale.lab.presets import RL_LR
    from rlscale.models import TINY_MARKER, is_tiny_checkpoint

    if policy is not None:
        meta = policy.meta if getattr(policy, "kind", None) == "tiny" else None
    elif is_tiny_checkpoint(model_dir):
        try:
            meta = json.loads((Path(model_dir) / TINY_MARKER).read_text())
        except (OSError, json.JSONDecodeError):
            meta = None  # the model loader reports a broken checkpoint in one line
    else:
        meta = None
    if meta is None:
        return HF_RL_LR
    return RL_LR.get(str(meta.get("size")), RL_LR["s"])


def suggested_micro_batch(model_dir: str, policy=None) -> int:
    """Rollouts per update chunk when none is given: 64 for a lab model (tiny vocabulary and activations), 8 for
    anything else (TRL's per-device batch): the logits of a Hugging Face model's update chunk are rows x tokens x
    vocabulary, 2.5 GB in bf16 for 8 rows of 1k tokens of a 152k vocabulary."""
    from rlscale.models import is_tiny_checkpoint

    tiny = getattr(policy, "kind", None) == "tiny" if policy is not None else is_tiny_checkpoint(model_dir)
    return 64 if tiny else 8


def with_model_defaults(cfg: GRPOConfig, policy=None) -> GRPOConfig:
    """cfg with lr = suggested_rl_lr and micro_batch_size = suggested_micro_batch of its model when unset (None)."""
    if cfg.lr is None:
        cfg = dataclasses.replace(cfg, lr=suggested_rl_lr(cfg.model, policy))
    if cfg.micro_batch_size is None:
        cfg = dataclasses.replace(cfg, micro_batch_size=suggested_micro_batch(cfg.model, policy))
    return cfg


def stop_strings(template: str) -> tuple[str, ...]:
    from rlscale.prompts import stop_strings as _stops
    return tuple(_stops(template))


def grade(completions: list[str], golds: list[str], mode: str) -> list[float | None]:
    """Rewards from the evaluation grader (None = unscorable)."""
    from rlscale.grading import score_batch
    return [r.reward for r in score_batch(completions, golds, mode)]


def load_problems(cfg: GRPOConfig, which: str):
    from rlscale.tasks.base import get_task

    task = get_task(cfg.task)
    if which == "train":
        probs = task.load("train", data_path=cfg.train_set)
    else:
        split = "val" if "val" in task.splits else "test"
        probs = task.load(split, data_path=cfg.val_set, limit=cfg.val_limit)
    if not probs:
        raise UserError(f"{which} set of task '{cfg.task}' is empty; check --{which}-set")
    return list(probs)


VAL_CACHE_ENV = "RLSCALE_VAL_CACHE"
"""directory where runs share their step-0 validation (set by the sweep driver; unset: every run computes its own)"""


def validation_key(policy, problems, cfg: GRPOConfig, template: str, mode: str) -> str:
    """Content hash of everything a validation result depends on: the weights, the validation problems, the
    sampling and grading settings (the validation seed is fixed, not the run seed)."""
    import hashlib

    import torch

    from rlscale.grading import GRADING_VERSION

    h = hashlib.sha256()
    for name, t in sorted(policy.module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    h.update(json.dumps({"problems": [[p.id, p.question, p.answer] for p in problems], "template": template,
                         "mode": mode, "val_n": cfg.val_n, "val_ks": list(cfg.val_ks), "val_seed": cfg.val_seed,
                         "temperature": cfg.val_temperature, "top_p": cfg.val_top_p,
                         "max_new_tokens": cfg.max_new_tokens, "grading": GRADING_VERSION}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def initial_validation(policy, problems, cfg: GRPOConfig, template: str, mode: str) -> dict[str, float]:
    """validate_policy of the initial weights, shared through $RLSCALE_VAL_CACHE when it is set: the runs of a
    sweep start from the same weights and validate identically, so one computes and the others read it."""
    cache = os.environ.get(VAL_CACHE_ENV)
    if not cache:
        return validate_policy(policy, problems, cfg, template, mode)
    path = Path(cache) / f"{validation_key(policy, problems, cfg, template, mode)}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # a damaged entry is recomputed and rewritten
    m = validate_policy(policy, problems, cfg, template, mode)
    from rlscale.io import atomic_write_json

    atomic_write_json(path, m)
    return m


def validate_policy(policy, problems, cfg: GRPOConfig, template: str, mode: str) -> dict[str, float]:
    """Held-out metrics val/avg, val/pass@k, val/worst@k, val/no_answer_frac (and val/maj@k via rlscale.evals when
    available). With the strict reward also val/flexible_avg and val/flexible_only_format: the fraction of
    rollouts whose answer only the flexible grader reads (the alternate format the strict reward trains away)."""
    from rlscale.engine.base import SamplingParams

    params = SamplingParams(n=cfg.val_n, temperature=cfg.val_temperature, top_p=cfg.val_top_p,
                            max_new_tokens=cfg.max_new_tokens, stop=stop_strings(template), seed=cfg.val_seed)
    was_training = policy.module.training
    policy.module.eval()
    try:
        try:
            from rlscale.evals.evaluate import evaluate
        except ImportError:
            evaluate = None
        if evaluate is not None:
            extra = ("flexible",) if mode == "strict" else ()  # the format effect: strict vs other formats
            res = evaluate(problems, policy.sampler(), template=template, params=params, modes=(mode, *extra),
                           ks=tuple(cfg.val_ks), progress=False)
            out = {f"val/{k}": float(v) for k, v in res.summary(mode).items() if isinstance(v, (int, float))}
            for other in extra:
                out[f"val/{other}_avg"] = float(res.summary(other)["avg"])
                out[f"val/{other}_only_format"] = res.other_format_frac(mode, other)
            return out
        return _internal_validation(policy, problems, params, template, mode, cfg.val_ks)
    finally:
        policy.module.train(was_training)


def _internal_validation(policy, problems, params, template, mode, ks) -> dict[str, float]:
    prompts = [render_prompt(p, template) for p in problems]
    seeds = [[derive_seed(params.seed, p.id, j) for j in range(params.n)] for p in problems]
    rollouts = policy.sampler().generate(prompts, params, seeds)
    texts = [r.text for group in rollouts for r in group]
    golds = [p.answer for p in problems for _ in range(params.n)]
    rewards = grade(texts, golds, mode)
    out: dict[str, float] = {}
    correct = [sum(1 for r in rewards[i * params.n:(i + 1) * params.n] if r) for i in range(len(problems))]
    n = params.n
    out["val/avg"] = sum(correct) / (n * len(problems))
    for k in ks:
        out[f"val/pass@{k}"] = sum(1 - math.comb(n - c, k) / math.comb(n, k) for c in correct) / len(problems)
        out[f"val/worst@{k}"] = sum(math.comb(c, k) / math.comb(n, k) for c in correct) / len(problems)
    out["val/truncation"] = sum(not r.finished for g in rollouts for r in g) / len(texts)
    return out


def replay_applies(policy, cfg: GRPOConfig) -> bool:
    """Whether the update's first pass over a batch takes its forward from the sampler (the lab model with the
    fused trunk; rlscale.models.fused.forward_grouped_replay): the sampler's C path then saves the rollouts'
    activations (when it runs: no stop strings, no top-p) and the pass skips the forward's matmuls, with the
    gradients of a recomputed forward up to float rounding. In bf16 only with one update per batch: the replayed
    forward is fp32 (the sampler's), so the old policy's log-probs would not be those of the later passes' bf16
    forwards at the same weights. RLSCALE_REPLAY=0 always recomputes."""
    import os

    if getattr(policy, "kind", None) != "tiny" or os.environ.get("RLSCALE_REPLAY", "1") == "0":
        return False
    if not (cfg.dtype == "fp32" or (cfg.dtype == "bf16" and cfg.updates_per_batch == 1)):
        return False
    from rlscale.models import fused

    return fused.usable(policy.module)


def live_rows_apply(cfg: GRPOConfig) -> bool:
    """Whether every pass of a replayed update runs on the live rows only (rlscale.models.fused.live_rows: fp32,
    one pass per batch, RLSCALE_COMPACT not "0"), so that padding costs the micro-batches nothing (update_chunks).
    Only meaningful where replay_applies."""
    from rlscale.models import fused

    return cfg.dtype == "fp32" and cfg.updates_per_batch == 1 and fused.compacts()


def skips_zero_loss_rows() -> bool:
    """Whether the update leaves rows whose loss terms are all exactly zero out of its backward (backward_rows):
    unless RLSCALE_SKIP_ZERO=0 (the same gradients up to float rounding; to measure against)."""
    import os

    return os.environ.get("RLSCALE_SKIP_ZERO", "1") != "0"


def backward_rows(adv: torch.Tensor, keep_pg: torch.Tensor, keep_reg: torch.Tensor, reg_on: bool, ref: bool,
                  comp_lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(backward, skipped), each (N,) bool: the rows the update differentiates, and the rows the loss keeps whose
    every term is exactly zero, which the update leaves out.

    A row's policy-gradient term is -min(rho A, clip(rho) A) (times a truncated importance weight): with A = 0 it
    is 0 and so is its gradient, whatever rho; its KL and entropy terms count only when their coefficient is
    non-zero (reg_on). So a row with A = 0 and no regulariser adds exactly nothing to the gradient (the all-wrong
    and all-right groups of GRPO without KL and entropy: ~3/4 of a hard set's rows), while the loss weights, which
    were computed over every kept row, stay as they are: the gradient is the one of differentiating every row, up
    to float rounding. Their logged entropy then comes from the sampler (skipped_entropy; a forward for it would
    cost about what their backward saves on the lab model). With a reference model (ref: KL coefficient > 0)
    nothing is skipped, as the logged KL needs every kept row's forward. When no row is left, the shortest kept
    row is still differentiated, so that every parameter gets its (zero) gradient and the optimizer steps as it
    would have (AdamW's moments move on a zero gradient; a parameter without .grad would be skipped).
    RLSCALE_SKIP_ZERO=0 differentiates every kept row."""
    import torch

    kept = keep_pg | keep_reg
    if ref or not skips_zero_loss_rows():
        return kept, torch.zeros_like(kept)
    backward = (keep_pg & (adv != 0)) | (keep_reg & reg_on)
    if kept.any() and not backward.any():
        rows = torch.nonzero(kept).squeeze(1).tolist()
        backward = backward.clone()
        backward[min(rows, key=lambda i: comp_lens[i])] = True
    return backward, kept & ~backward


def skipped_entropy(rollouts: list, skipped: torch.Tensor, samp_lp: torch.Tensor, cmask: torch.Tensor) -> float:
    """Summed entropy over the completion tokens of the rows the update left out (backward_rows): the sampler's
    per-token entropies of the sampling distribution (on-policy, the weights and temperature the update's own
    entropy would use), or, when a backend does not report them (vLLM), the sampled tokens' surprisal, an unbiased
    estimate of it at top_p 1."""
    import torch

    rows = torch.nonzero(skipped).squeeze(1).tolist()
    if all(rollouts[i].entropies is not None for i in rows):
        return float(sum(sum(rollouts[i].entropies) for i in rows))
    return -float((samp_lp[skipped] * cmask[skipped]).sum())


@dataclass
class UpdateBatch:
    """One step's packed rollouts for the update (N rows, C completion positions), each micro-batch's inputs
    (row index, completion slice, completion_logprobs arguments; built once for every pass over the batch) and
    the per-micro-batch caches of the first pass (the old policy's and the reference's log-probs)."""
    inputs: list  # per micro-batch: (idx (R,), slice of C, group_inputs(...))
    replay: list  # per micro-batch: (SavedActivations, rollout keys) for its first pass, or None (recompute)
    adv: Any  # (N,) advantages
    w_pg: Any  # (N, C) policy-gradient weights (global aggregation)
    w_reg: Any  # (N, C) KL/entropy weights
    samp_lp: Any  # (N, C) sampler log-probs
    cmask: Any  # (N, C) 1 on completion tokens
    old_lp: list
    ref_lp: list


def micro_batch(b: UpdateBatch, c: int, u: int, accumulate: bool, policy, ref_policy, params: list,
                cfg: GRPOConfig):
    """Forward, loss and backward of micro-batch c of b: gradients of `params` into .grad (accumulate) or returned
    (for worker threads, summed by the caller in chunk order); its summed statistics on the first pass (u = 0)."""
    import torch

    from rlscale.rl.losses import grpo_loss

    idx, sl, batch_in = b.inputs[c]
    from rlscale.models.device import bf16_autocast, module_device

    autocast = bf16_autocast(module_device(policy.module), cfg.dtype == "bf16")  # per thread
    replay = {"replay": b.replay[c]} if u == 0 and b.replay[c] is not None else {}  # weights as when sampled
    with autocast:
        logp, ent = policy.completion_logprobs(*batch_in, temperature=cfg.temperature, with_entropy=True, **replay)
    logp, ent = logp.float(), ent.float()
    if b.old_lp[c] is None:
        b.old_lp[c] = logp.detach()
    if ref_policy is not None and b.ref_lp[c] is None:
        with torch.no_grad(), autocast:
            b.ref_lp[c] = ref_policy.completion_logprobs(*batch_in, temperature=cfg.temperature)[0].float()
    loss, st = grpo_loss(logp, b.old_lp[c], b.adv[idx], b.w_pg[idx, sl], b.w_reg[idx, sl],
                         eps_low=cfg.clip_eps_low, eps_high=cfg.clip_eps_high, ref_logp=b.ref_lp[c],
                         kl_coef=cfg.kl, entropy=ent, entropy_coef=cfg.entropy, sampler_logp=b.samp_lp[idx, sl],
                         tis_cap=cfg.tis_cap, kl_ratio_correction=cfg.kl_ratio_correction)
    grads = None
    if accumulate:
        loss.backward()
    else:
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    stats: dict[str, float] = {}
    if u == 0:
        stats = {"loss": float(loss.detach()), **{k: float(v) for k, v in st.items()}}
        # true distribution entropy and KL, token-mean over all completion tokens (for logging)
        mtok = b.cmask[idx, sl]
        stats["ent_tok"] = float((ent.detach() * mtok).sum())
        if ref_policy is not None:
            d = b.ref_lp[c] - logp.detach()
            stats["kl_tok"] = float(((d.exp() - d - 1) * mtok).sum())
    return grads, stats


class _Mirror:
    """Optional TensorBoard/MLflow mirror of the metrics (the store stays the record)."""

    def __init__(self, kind: str, out_dir: Path):
        self.kind, self.w = kind, None
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            self.w = SummaryWriter(str(out_dir / "tensorboard"))
        elif kind == "mlflow":
            import mlflow
            mlflow.start_run(run_name=out_dir.name)
            self.w = mlflow

    def log(self, step: int, metrics: dict) -> None:
        vals = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if self.kind == "tensorboard":
            for k, v in vals.items():
                self.w.add_scalar(k, v, step)
        elif self.kind == "mlflow":
            self.w.log_metrics({k.replace("@", "_at_"): v for k, v in vals.items()}, step=step)

    def close(self) -> None:
        if self.kind == "tensorboard":
            self.w.close()
        elif self.kind == "mlflow":
            self.w.end_run()


def _fmt_s(s: float) -> str:
    s = max(0.0, s)
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m" if s >= 3600 else f"{int(s // 60)}m{int(s % 60):02d}s"


# ---- the loop ---------------------------------------------------------------------------------------------------
def without_new_defaults(cfg: Any, config: dict, stored: dict) -> dict:
    """`config` without the fields a stored run's config lacks and `cfg` leaves at their default: fields added to
    the config class after the run was made (e.g. val_reseed, stop 33) do not orphan it."""
    defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    return {k: v for k, v in config.items() if k in stored or k not in defaults or v != defaults[k]}


def open_run(cfg: GRPOConfig | Any, out_dir: str | Path, resume: bool, create: bool = True):
    """(store|None, finished_summary|None). Refuses a changed config and an unfinished run without resume; writes
    nothing in those cases. A new run is created only when `create` (else (None, None))."""
    from rlscale.store import RunStore, config_hash

    config = cfg.to_dict()
    out = Path(out_dir)
    if RunStore.exists(out):
        store = RunStore.open(out)
        if store.config_hash != config_hash(config):
            config = without_new_defaults(cfg, config, store.config)
        if store.config_hash != config_hash(config):
            changed = sorted(k for k in set(config) | set(store.config) if config.get(k) != store.config.get(k))
            store.close()
            raise UserError(f"{out}: config differs from the stored run (fields: {', '.join(changed) or '?'}); "
                            "use a new --out or the original config")
        if store.is_finished():
            return store, store.summary()
        if not resume:
            store.close()
            raise UserError(f"{out}: holds an unfinished run; pass --resume to continue it or choose a new --out")
        return store, None
    return (RunStore.create(out, config) if create else None), None


def train(cfg: GRPOConfig, out_dir: str | Path, resume: bool = False, progress: bool = True, *,
          policy=None, workers: int = 1) -> dict:
    """Run (or resume) GRPO; returns the summary {val_before, val_after, rollouts, steps, wall_s, ...}.

    `policy` overrides loading cfg.model (for in-memory pipelines and tests). `workers` > 1 (lab models only):
    generation chunks and update micro-batches run on that many threads, each torch op on one thread (call with
    torch.set_num_threads(1)); results are the same as with 1 worker up to float rounding of the micro-batch split,
    and identical from run to run."""
    import numpy as np
    import torch

    from rlscale.compute import cumulative_forward_flops, step_compute
    from rlscale.engine.base import SamplingParams, thread_map
    from rlscale.procs import keep_freed_memory
    from rlscale.rl.advantages import compute_advantages, zero_variance_groups
    from rlscale.rl.losses import aggregation_weights, filter_masks
    from rlscale.rl.lr import adamw, lr_at

    keep_freed_memory()
    cfg = with_model_defaults(with_task_defaults(cfg.validate()), policy)
    store, finished = open_run(cfg, out_dir, resume, create=False)  # a finished run is never re-run
    if finished is not None:
        store.close()
        return finished
    from rlscale.tasks.base import get_task
    task = get_task(cfg.task)
    template = cfg.template or task.template
    mode = cfg.reward or task.default_mode
    train_problems = load_problems(cfg, "train")
    val_problems = load_problems(cfg, "val")
    if policy is None:
        from rlscale.models import load_policy
        policy = load_policy(cfg.model)

    workers = max(1, workers) if getattr(policy, "kind", None) == "tiny" else 1
    if store is None:  # inputs loaded fine: only now does the run directory get written
        store, _ = open_run(cfg, out_dir, resume)
    out = store.root
    M, n, n_est, Bp = cfg.num_steps, cfg.n, cfg.n_est, cfg.B_problem
    use_ref = cfg.kl > 0
    ref_policy = None
    module = policy.module
    replay_ok = replay_applies(policy, cfg)
    live_rows_ok = replay_ok and live_rows_apply(cfg)
    params_list = [p for p in module.parameters() if p.requires_grad]
    opt = adamw(params_list, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)

    # ---- resume or start: weights, optimizer, counters; rows after the checkpoint are rolled back ----
    store.sweep_temp()
    ref_path = out / "reference.pt"
    counters = {"rollouts": 0.0, "rollouts_used": 0.0, "rollouts_filtered": 0.0, "tokens_prompt": 0.0,
                "tokens_generated": 0.0, "flops_gen": 0.0, "flops_train": 0.0, "flops": 0.0, "wall_s": 0.0}
    start = 0
    ckpt = store.latest_checkpoint()
    if ckpt is not None:
        state = torch.load(ckpt[1] / "state.pt", weights_only=False, map_location="cpu")  # copied to the device
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        counters.update(state["counters"])
        start = state["step"]
    store.truncate_after(start if ckpt is not None else -1)
    if use_ref:
        if not ref_path.exists():
            from rlscale.io import atomic_torch_save

            atomic_torch_save(ref_path, {k: v.detach().clone() for k, v in module.state_dict().items()})
        ref_policy = copy.copy(policy)
        ref_policy.module = copy.deepcopy(module)
        ref_policy.module.load_state_dict(torch.load(ref_path, weights_only=False, map_location="cpu"))
        ref_policy.module.eval().requires_grad_(False)

    mirror = _Mirror(cfg.log_to, out)
    F = cumulative_forward_flops(policy.flops_per_token, 4096)
    stops = stop_strings(template)
    evals = {e["step"]: e for e in store.evals()}
    t_session = time.perf_counter()
    wall0 = counters["wall_s"]

    def wall() -> float:
        return wall0 + time.perf_counter() - t_session

    def run_eval(step: int) -> dict:
        if step not in evals:
            t = time.perf_counter()
            fn = initial_validation if step == 0 else validate_policy
            m = fn(policy, val_problems, cfg, template, mode)
            m.update({"epochs": step * Bp / len(train_problems), "compute/rollouts": counters["rollouts"],
                      "compute/flops": counters["flops"], "time/val_s": time.perf_counter() - t})
            store.log_eval(step, m)
            mirror.log(step, m)
            evals[step] = {"step": step, **m}
        return evals[step]

    def save_ckpt(step: int) -> None:
        def write(d: Path) -> None:
            torch.save({"model": module.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "cursor": step * Bp, "counters": {**counters, "wall_s": wall()},
                        "config_hash": store.config_hash}, d / "state.pt")
        store.save_checkpoint(step, write)

    val_before = run_eval(0)
    last_print, t_loop = 0.0, time.perf_counter()  # rates and ETA exclude the initial validation
    module.train()
    for step in range(start, M):
        # ---- sample problems ------------------------------------------------------------------------------
        t0 = time.perf_counter()
        batch = [train_problems[i] for i in problem_indices(step, Bp, len(train_problems), cfg.seed)]
        prompts = [render_prompt(p, template) for p in batch]
        sp = SamplingParams(n=n_est, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, stop=stops, seed=cfg.seed)
        seeds = [[derive_seed(cfg.seed, step, p.id, j) for j in range(n_est)] for p in batch]
        # ---- rollout --------------------------------------------------------------------------------------
        module.eval()
        sampler = policy.sampler(**({"workers": workers} if workers > 1 else {}),
                                 **({"keep_activations": True} if replay_ok else {}))
        groups = sampler.generate(prompts, sp, seeds)
        acts = sampler.activations if replay_ok else None
        del sampler
        module.train()
        t_gen = time.perf_counter()
        # ---- grade ----------------------------------------------------------------------------------------
        flat = [r for g in groups for r in g]
        raw = grade([r.text for r in flat], [p.answer for p in batch for _ in range(n_est)], mode)
        rewards = torch.tensor([float("nan") if r is None else float(r) for r in raw]).view(Bp, n_est)
        t_grade = time.perf_counter()
        # ---- advantages (baseline over n_est, update on the first n) ---------------------------------------
        adv = compute_advantages(rewards, cfg.advantage, cfg.scale_std, cfg.std_estimator, cfg.adv_eps,
                                 n_update=n)  # (Bp, n)
        zero_var = zero_variance_groups(rewards)  # (Bp,)
        used = [groups[i][j] for i in range(Bp) for j in range(n)]
        A = adv.reshape(-1)  # (N,)
        zv_seq = zero_var.repeat_interleave(n)  # (N,)
        keep_pg, keep_reg = filter_masks(zv_seq, cfg.zero_variance_filter)
        finished_t = torch.tensor([r.finished for r in used])
        if cfg.mask_truncated:
            keep_pg, keep_reg = keep_pg & finished_t, keep_reg & finished_t
        # ---- pack completions: (N, C) right-padded, one left-padded prompt per group (shared-prefix update) --------
        N = len(used)
        comp_lens = [len(r.token_ids) for r in used]
        comp_ids, cmask, samp_lp = pack_completions([r.token_ids for r in used], [r.logprobs for r in used],
                                                    int(policy.tokenizer.pad_id))
        group_of = [i // n for i in range(N)]  # row -> problem of the batch (its prompt)
        w_pg = aggregation_weights(cmask, keep_pg, cfg.loss_aggregation, cfg.max_new_tokens)
        w_reg = aggregation_weights(cmask, keep_reg, cfg.loss_aggregation, cfg.max_new_tokens)
        # micro-batches (whole groups or length-sorted rows, see update_chunks); rollouts that no loss term uses
        # (filtered) skip the forward/backward (no training FLOPs spent or counted); those whose loss terms are all
        # exactly zero (A = 0, no KL/entropy term) are left out too (backward_rows)
        bwd, skipped = backward_rows(A, keep_pg, keep_reg, cfg.entropy > 0, use_ref, comp_lens)
        chunks = update_chunks([[i * n + j for j in range(n) if bwd[i * n + j]] for i in range(Bp)], group_of,
                               [len(g[0].prompt_ids) for g in groups], comp_lens,
                               min(cfg.micro_batch_size, -(-max(int(bwd.sum()), 1) // workers)),  # >= 1 per worker
                               live=live_rows_ok)
        # ---- update ---------------------------------------------------------------------------------------
        sums: dict[str, float] = {}
        grad_norms = []
        lr = lr_at(step, cfg.lr, n * Bp, cfg.lr_ref_batch, cfg.lr_scaling, cfg.warmup_steps)
        for group_ in opt.param_groups:
            group_["lr"] = lr
        inputs = []
        for rows in chunks:
            idx = torch.tensor(rows)
            sl = slice(0, round_up(max(max(comp_lens[i] for i in rows), 1), 8))
            inputs.append((idx, sl, group_inputs([used[i].prompt_ids for i in rows], [group_of[i] for i in rows],
                                                 comp_ids[idx, sl], int(policy.tokenizer.pad_id))))
        replay = [None if acts is None else (acts, [(used[i].prompt_index, used[i].sample_index) for i in rows])
                  for rows in chunks]
        ub = UpdateBatch(inputs, replay, A, w_pg, w_reg, samp_lp, cmask, old_lp=[None] * len(chunks),
                         ref_lp=[None] * len(chunks))
        threaded = workers > 1 and len(chunks) > 1  # as thread_map decides
        for u in range(cfg.updates_per_batch):
            opt.zero_grad(set_to_none=True)
            run = functools.partial(micro_batch, ub, u=u, accumulate=not threaded, policy=policy,
                                    ref_policy=ref_policy, params=params_list, cfg=cfg)
            results = thread_map(run, range(len(chunks)), workers)
            if threaded:  # micro-batches on worker threads; gradients summed in chunk order, as .grad accumulates
                for k, p in enumerate(params_list):
                    for grads, _ in results:
                        if grads[k] is not None:
                            p.grad = grads[k] if p.grad is None else p.grad.add_(grads[k])
            for _, stats in results:
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
            gn = torch.nn.utils.clip_grad_norm_(params_list, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            grad_norms.append(float(gn))
            opt.step()
        t_upd = time.perf_counter()
        # ---- log ------------------------------------------------------------------------------------------
        trained = [bool(keep_pg[i] or keep_reg[i]) for i in range(N)]
        comp = step_compute([len(r.prompt_ids) for r in flat], [len(r.token_ids) for r in flat], F,
                            update_passes=cfg.updates_per_batch, extra_forwards=int(use_ref),
                            trained=[j < n and bool(bwd[i * n + j]) for i in range(Bp) for j in range(n_est)])
        if skipped.any():  # their entropy, from the sampler (backward_rows)
            sums["ent_tok"] = sums.get("ent_tok", 0.0) + skipped_entropy(used, skipped, samp_lp, cmask)
        for k in ("rollouts", "tokens_prompt", "tokens_generated", "flops_gen", "flops_train", "flops"):
            counters[k] += comp[k]
        counters["rollouts_used"] += float(sum(trained))
        counters["rollouts_filtered"] += float(N - sum(trained)) + (n_est - n) * Bp
        gen_lens = np.array([len(r.token_ids) for r in flat], dtype=float)
        ntok = float(cmask.sum()) or 1.0
        valid = ~torch.isnan(rewards)
        passes = problem_passes([p.id for p in batch], valid, rewards)
        m = {f"compute/{k}": counters[k] for k in ("rollouts", "rollouts_used", "rollouts_filtered", "tokens_prompt",
                                                   "tokens_generated", "flops_gen", "flops_train", "flops")}
        m.update({
            "time/wall_s": wall(), "time/gen_s": t_gen - t0, "time/grade_s": t_grade - t_gen,
            "time/update_s": t_upd - t_grade, "epochs": (step + 1) * Bp / len(train_problems),
            "rollout/reward_mean": float(torch.nanmean(rewards)) if valid.any() else float("nan"),
            "rollout/unscorable_frac": float((~valid).float().mean()),
            "rollout/frac_all_wrong": float(((rewards.nan_to_num(0) == 0) | ~valid).all(1).float().mean()),
            "rollout/frac_all_right": float(((rewards == 1) | ~valid).all(1).float().mean()
                                            if valid.any() else 0.0),
            "rollout/frac_zero_variance": float(zero_var.float().mean()),
            "rollout/len_mean": float(gen_lens.mean()), "rollout/len_max": float(gen_lens.max()),
            "rollout/truncation_rate": float(np.mean([not r.finished for r in flat])),
            "adv/mean": float(A.mean()), "adv/std": float(A.std(unbiased=False)), "adv/abs_max": float(A.abs().max()),
            "train/loss": sums.get("loss", 0.0), "train/pg_loss": sums.get("pg", 0.0),
            "train/kl": sums.get("kl_tok", 0.0) / ntok if use_ref else 0.0,
            "train/entropy": sums.get("ent_tok", float("nan")) / ntok,
            "train/clip_frac_low": sums.get("clip_low", 0.0), "train/clip_frac_high": sums.get("clip_high", 0.0),
            "train/grad_norm": grad_norms[0], "train/grad_norm_last": grad_norms[-1], "train/lr": lr,
            "train/steps_per_batch": cfg.updates_per_batch, "train/backward_frac": float(bwd.float().mean()),
        })
        replay = []
        if cfg.replay_correct:  # every correct rollout of the step, problem by problem
            correct = (rewards == 1).tolist()
            replay = [(p.id, groups[i][j].text) for i, p in enumerate(batch) for j in range(n_est) if correct[i][j]]
        store.log_step(step + 1, m, passes, replay)
        mirror.log(step + 1, m)
        # ---- eval, checkpoint -----------------------------------------------------------------------------
        done = step + 1
        val = None
        if (cfg.val_every and done % cfg.val_every == 0) or done == M or done in cfg.val_steps:
            val = run_eval(done)
        if done % cfg.checkpoint_every == 0 or done == M:
            save_ckpt(done)
        if progress:
            now = time.perf_counter()
            if now - last_print > 2.0 or done == M or val is not None:
                last_print = now
                el = now - t_loop
                rate = (done - start) * cfg.rollouts_per_step / max(el, 1e-9)
                eta = el / (done - start) * (M - done)
                vtxt = f" | val {evals[max(evals)].get('val/avg', float('nan')):.3f}" if evals else ""
                print(f"step {done}/{M} | {rate:.1f} rollouts/s | reward {m['rollout/reward_mean']:.3f}{vtxt} | "
                      f"ETA {_fmt_s(eta)}", file=sys.stderr, flush=True)

    # ---- finish: final eval, model, summary (written last) --------------------------------------------------
    val_after = run_eval(M)
    if cfg.val_reseed is not None and "val/avg_reseed" not in val_after:  # the final model under a second seed
        t = time.perf_counter()
        again = validate_policy(policy, val_problems, dataclasses.replace(cfg, val_seed=cfg.val_reseed), template,
                                mode)
        val_after = evals[M] = {**val_after, "val/avg_reseed": again["val/avg"],
                                "time/reseed_s": time.perf_counter() - t}
        store.log_eval(M, {k: v for k, v in val_after.items() if k != "step"})
    if store.latest_checkpoint() is None or store.latest_checkpoint()[0] != M:
        save_ckpt(M)
    policy.save(str(out / "model"))
    steps_rows = store.steps()
    summary = {
        "val_before": val_before.get("val/avg"), "val_after": val_after.get("val/avg"),
        **({"val_after_reseed": val_after["val/avg_reseed"]} if "val/avg_reseed" in val_after else {}),
        "rollouts": counters["rollouts"], "steps": len(steps_rows), "wall_s": wall(),
        "flops": counters["flops"], "val_metric": f"avg@{cfg.val_n} ({mode})",
        "val_before_metrics": {k: v for k, v in val_before.items() if k.startswith("val/")},
        "val_after_metrics": {k: v for k, v in val_after.items() if k.startswith("val/")},
        "config_hash": store.config_hash,
        "numerics": numerics_record(),  # what decides these bits: CPU numerics, torch, the C kernels' compiler
    }
    store.write_summary(summary)
    mirror.close()
    store.close()
    return summary
