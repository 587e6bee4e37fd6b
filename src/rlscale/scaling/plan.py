"""The compute planner: a fitted iso-compute result (fit.json) + a budget in rollouts -> an allocation.

    n         = n*(C) from the sigmoid fit of log2 n*, rounded (in log2) to the nearest n in the fitted set
    B_problem = the largest power of two with n * B_problem <= B_max (and B_problem <= num_problems when given)

or, with B_problem fixed (`problems_per_batch`, e.g. the value the sweep held fixed): n = n*(C) rounded (in log2)
to the nearest of the fitted n with n * B_problem <= B_max; then, in both cases,
    M         = floor(C / (n * B_problem)) optimizer steps
    lr        = lr_anchor * sqrt(n * B_problem / B_ref)          (square-root batch scaling from the anchor)

The predicted reward is the fitted sigmoid of the chosen n at C; its CI is the percentile band of that sigmoid over
the stored bootstrap parameter samples. Warnings: C outside the fitted compute range (extrapolation), M * B_problem
below one pass over the training set (less than about one epoch). `emit_trl` / `emit_verl` print the plan as TRL
GRPOConfig arguments (trl 1.16 field names) or verl command-line overrides. Tests: tests/test_scaling_plan.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from rlscale.errors import UserError
from rlscale.scaling.isocompute import n_star_from_fit
from rlscale.scaling.laws import sigmoid_law


@dataclass(frozen=True)
class Plan:
    budget_rollouts: float
    n: int
    problems_per_batch: int
    iterations: int
    lr: float | None
    predicted_reward: float
    ci: tuple[float, float] | None
    n_star_continuous: float
    warnings: list[str] = field(default_factory=list)

    @property
    def rollouts_per_step(self) -> int:
        return self.n * self.problems_per_batch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rollouts_per_step"] = self.rollouts_per_step
        return d


def largest_pow2_at_most(x: float) -> int:
    """Largest power of two <= x (x >= 1)."""
    if x < 1:
        raise UserError(f"need a value >= 1 to fit a power of two, got {x}")
    return 1 << int(math.floor(math.log2(x) + 1e-12))


def nearest_in_log2(value: float, choices) -> int:
    """The element of choices nearest to value in log2 (ties -> the smaller)."""
    choices = sorted(choices)
    return min(choices, key=lambda c: (abs(math.log2(c) - math.log2(value)), c))


def sqrt_lr(lr_ref: float, batch_ref: float, batch: float) -> float:
    """lr = lr_ref * sqrt(batch / batch_ref)."""
    return lr_ref * math.sqrt(batch / batch_ref)


def _fmt_ns(ns) -> str:
    return ", ".join(f"{m:g}" for m in ns)


def n_for_fixed_batch(n_cont: float, ns, problems_per_batch: int, B_max: int) -> tuple[int, list[str]]:
    """(n, warnings): the fitted n nearest to n_cont in log2 among those with n * problems_per_batch <= B_max."""
    ns = sorted(ns)
    allowed = [m for m in ns if m * problems_per_batch <= B_max]
    if not allowed:
        fix = f"raise --B-max to at least {ns[0] * problems_per_batch:g}"
        if B_max // ns[0] >= 1:
            fix = f"lower --problems-per-batch to at most {int(B_max // ns[0])} or " + fix
        raise UserError(f"--problems-per-batch {problems_per_batch}: no fitted n ({_fmt_ns(ns)}) has "
                        f"n * {problems_per_batch} <= --B-max {B_max}; {fix}")
    n, free = int(nearest_in_log2(n_cont, allowed)), int(nearest_in_log2(n_cont, ns))
    warnings = []
    if free != n:
        warnings.append(f"n*={free} with B_problem={problems_per_batch} exceeds B_max={B_max}; using the largest "
                        f"fitted n with n*B_problem <= B_max ({n})")
    return n, warnings


def plan(fit: dict, budget_rollouts: float, B_max: int, num_problems: int | None = None,
         lr_anchor: tuple[float, float] | None = None, level: float | None = None,
         problems_per_batch: int | None = None) -> Plan:
    """Allocation for budget C (rollouts) from an isocompute fit dict (fit.json). With `problems_per_batch`,
    B_problem is fixed to it and only n (and M) are chosen."""
    if fit.get("law") != "isocompute":
        raise UserError(f"plan needs an isocompute fit, got law '{fit.get('law')}' (run rlscale fit --law isocompute)")
    C = float(budget_rollouts)
    if not C > 0:
        raise UserError(f"--budget must be > 0 rollouts, got {budget_rollouts}")
    if B_max < 1:
        raise UserError(f"--B-max must be >= 1, got {B_max}")
    per_n = {float(k) if "." in k else int(k): v for k, v in fit["per_n"].items()}
    ns = sorted(per_n)
    n_cont = float(n_star_from_fit(C, fit["params"]))
    if problems_per_batch is not None:
        if num_problems is not None and num_problems < 1:
            raise UserError(f"--problems must be >= 1, got {num_problems}")
        if problems_per_batch < 1:
            raise UserError(f"--problems-per-batch must be >= 1, got {problems_per_batch}")
        if num_problems is not None and problems_per_batch > num_problems:
            raise UserError(f"--problems-per-batch {problems_per_batch} exceeds --problems {num_problems} (a batch "
                            "would repeat problems); use at most the training-set size")
        n, warnings = n_for_fixed_batch(n_cont, ns, problems_per_batch, B_max)
        B_problem = int(problems_per_batch)
    else:
        n = int(nearest_in_log2(n_cont, ns))
        warnings = []
        if n > B_max:
            warnings.append(f"n*={n} exceeds B_max={B_max}; using the largest fitted n <= B_max")
            small = [m for m in ns if m <= B_max]
            if not small:
                raise UserError(f"--B-max {B_max} is smaller than every fitted n ({ns[0]} is the smallest)")
            n = int(max(small))
        cap = B_max / n
        if num_problems is not None:
            if num_problems < 1:
                raise UserError(f"--problems must be >= 1, got {num_problems}")
            cap = min(cap, num_problems)
        B_problem = largest_pow2_at_most(cap)
    M = int(C // (n * B_problem))
    if M < 1:
        raise UserError(f"--budget {C:g} rollouts is less than one step of n*B_problem = {n * B_problem} rollouts")
    lo, hi = fit["x_range"]
    if C < lo or C > hi:
        warnings.append(f"budget {C:g} lies outside the fitted compute range [{lo:g}, {hi:g}]: extrapolation")
    if num_problems is not None and M * B_problem < num_problems:
        warnings.append(f"M*B_problem = {M * B_problem} problem visits is below one epoch of {num_problems} problems")
    params = per_n[n]["params"]
    pred = float(sigmoid_law(C, **params))
    ci = None
    samples = np.asarray(per_n[n].get("bootstrap_samples") or [], dtype=float)
    if samples.size:
        preds = sigmoid_law(C, samples[:, 0], samples[:, 1], samples[:, 2], samples[:, 3])
        q = (1.0 - (level or fit.get("ci_level", 0.95))) / 2.0
        ci = (float(np.quantile(preds, q)), float(np.quantile(preds, 1 - q)))
    lr = None
    anchor = lr_anchor or (tuple(fit["anchor"]) if fit.get("anchor") else None)
    if anchor:
        lr = sqrt_lr(float(anchor[0]), float(anchor[1]), n * B_problem)
    return Plan(C, n, B_problem, M, lr, pred, ci, n_cont, warnings)


def emit_trl(p: Plan, num_processes: int = 1) -> str:
    """TRL GRPOConfig keyword arguments: one optimizer step per generation batch of n * B_problem completions
    (per-device batch = one group of n; gradient accumulation over the B_problem / num_processes groups)."""
    if p.problems_per_batch % num_processes:
        raise UserError(f"B_problem={p.problems_per_batch} is not divisible by num_processes={num_processes}")
    accum = p.problems_per_batch // num_processes
    args = {"num_generations": p.n, "per_device_train_batch_size": p.n, "gradient_accumulation_steps": accum,
            "steps_per_generation": accum, "generation_batch_size": p.n * p.problems_per_batch,
            "num_iterations": 1, "max_steps": p.iterations}
    if p.lr is not None:
        args["learning_rate"] = float(f"{p.lr:.6g}")
    body = ",\n".join(f"    {k}={v!r}" for k, v in args.items())
    return f"GRPOConfig(\n{body},\n)"


def emit_verl(p: Plan) -> str:
    """verl (main_ppo) Hydra overrides: prompts per step, rollouts per prompt, steps, learning rate."""
    parts = ["algorithm.adv_estimator=grpo", f"data.train_batch_size={p.problems_per_batch}",
             f"actor_rollout_ref.rollout.n={p.n}", f"actor_rollout_ref.actor.ppo_mini_batch_size={p.problems_per_batch}",
             f"trainer.total_training_steps={p.iterations}"]
    if p.lr is not None:
        parts.append(f"actor_rollout_ref.actor.optim.lr={p.lr:.6g}")
    return " \\\n  ".join(parts)


def format_plan(p: Plan) -> str:
    ci = f" [{p.ci[0]:.3f}, {p.ci[1]:.3f}]" if p.ci else ""
    lr = f"{p.lr:.4g}" if p.lr is not None else "(no anchor; pass --lr and --lr-batch)"
    lines = [f"budget C = {p.budget_rollouts:g} rollouts",
             f"  n (rollouts/problem) = {p.n}   (n*(C) = {p.n_star_continuous:.2f})",
             f"  B_problem            = {p.problems_per_batch}   (n*B = {p.rollouts_per_step} rollouts/step)",
             f"  M (steps)            = {p.iterations}",
             f"  learning rate        = {lr}",
             f"  predicted reward     = {p.predicted_reward:.4f}{ci}"]
    lines += [f"warning: {w}" for w in p.warnings]
    return "\n".join(lines)
