"""`rlscale sweep plan`: the runs a spec expands to, with epochs and estimated wall time; nothing is trained.

The wall-time estimate of a run is rollouts x seconds-per-rollout + validation points x seconds-per-validation +
a fixed start-up cost per run process: either rough defaults (what the lab's tiny model costs on one contended CPU
core) or a calibration (`calibrate`) that runs 2 GRPO steps of the base model on the plan's median allocation and
reads the per-step generation/grading/update times and the validation time from its run store.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass

from rlscale.sweep.spec import CFG_ITERS, CFG_VAL_EVERY, SweepSpec, epochs, training_set_size

DEFAULT_SEC_PER_ROLLOUT = 0.01  # tiny lab model, one thread, shared machine (LAB_NOTES: ~4 ms quiet)
DEFAULT_SEC_PER_VAL = 3.0  # 200 problems x 4 samples of the tiny model
DEFAULT_STARTUP_S = 15.0  # worker process: imports, data, model load


@dataclass(frozen=True)
class PlanRow:
    run_id: str
    budget: int
    n: int
    problems_per_batch: int
    B: int  # noqa: N815
    iterations: int
    rollouts: int
    seed: int
    epochs: float
    est_wall_s: float
    lr: float | None = None  # the run's rate when the spec has an lr grid


@dataclass(frozen=True)
class Costs:
    """Wall-time model of one run: startup_s + rollouts * sec_per_rollout + validations * sec_per_val."""

    sec_per_rollout: float = DEFAULT_SEC_PER_ROLLOUT
    sec_per_val: float = DEFAULT_SEC_PER_VAL
    startup_s: float = DEFAULT_STARTUP_S
    calibrated: bool = False

    def run_s(self, rollouts: int, validations: int) -> float:
        return self.startup_s + rollouts * self.sec_per_rollout + validations * self.sec_per_val


def num_validations(iterations: int, val_every: int | None, val_steps=()) -> int:
    """Validation points of a run: before training, every val_every steps, at val_steps, and after the last step."""
    steps = {iterations} | {int(s) for s in val_steps if 1 <= int(s) <= iterations}
    if val_every:
        steps |= set(range(val_every, iterations + 1, val_every))
    return 1 + len(steps)


def plan_rows(spec: SweepSpec, costs: Costs = Costs(), train_size: int | None = None) -> list[PlanRow]:
    """One PlanRow per run of the spec (train_size None: looked up from the spec's data)."""
    if train_size is None:
        train_size = training_set_size(spec)
    return [PlanRow(r.run_id, r.budget, r.n, r.problems_per_batch, r.B, r.iterations, r.rollouts, r.seed,
                    epochs(r.rollouts, r.n, train_size),
                    costs.run_s(r.rollouts, num_validations(r.iterations, r.config.get(CFG_VAL_EVERY),
                                                                 r.config.get("val_steps", ()))),
                    r.config.get("lr") if spec.lr else None)
            for r in spec.runs]


def calibrate(spec: SweepSpec) -> Costs:
    """Costs measured by a 2-step GRPO run (median allocation, in a temp dir, in this process, one thread)."""
    import torch

    from rlscale.rl.grpo import GRPOConfig, train
    from rlscale.store import RunStore

    torch.set_num_threads(1)
    run = sorted(spec.runs, key=lambda r: r.B)[len(spec.runs) // 2]
    cfg = {**run.config, CFG_ITERS: 2, CFG_VAL_EVERY: 0}
    with tempfile.TemporaryDirectory(prefix="rlscale-calibrate-") as tmp:
        t0 = time.perf_counter()
        train(GRPOConfig.from_dict(cfg), tmp, resume=False, progress=False)
        wall = time.perf_counter() - t0
        with RunStore.open(tmp) as store:
            steps, evals = store.steps(), store.evals()
    # the second step: shapes warmed up; generation + grading + update per rollout
    last = steps[-1]
    step_s = sum(float(last.get(k, 0.0)) for k in ("time/gen_s", "time/grade_s", "time/update_s"))
    spr = step_s / max(run.B, 1)
    val_s = max((float(e.get("time/val_s", 0.0)) for e in evals), default=DEFAULT_SEC_PER_VAL)
    startup = max(0.0, wall - sum(float(s.get("time/gen_s", 0.0)) + float(s.get("time/grade_s", 0.0))
                                  + float(s.get("time/update_s", 0.0)) for s in steps) - len(evals) * val_s)
    return Costs(sec_per_rollout=spr, sec_per_val=val_s, startup_s=startup, calibrated=True)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def format_plan(rows: list[PlanRow], workers: int = 1, costs: Costs = Costs()) -> str:
    """A fixed-width table of the runs plus totals (wall time for `workers` parallel workers)."""
    grid = any(r.lr is not None for r in rows)  # an lr grid: one more column
    header = f"{'run_id':<12} {'budget':>9} {'n':>4} {'B_prob':>6} {'B':>6} {'M':>6} {'rollouts':>9} " \
             f"{'seed':>5} " + (f"{'lr':>8} " if grid else "") + f"{'epochs':>7} {'est_wall':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        ep = "-" if math.isnan(r.epochs) else f"{r.epochs:.2f}"
        lr = f"{r.lr:>8.3g} " if grid else ""
        lines.append(f"{r.run_id:<12} {r.budget:>9} {r.n:>4} {r.problems_per_batch:>6} {r.B:>6} {r.iterations:>6} "
                     f"{r.rollouts:>9} {r.seed:>5} {lr}{ep:>7} {format_duration(r.est_wall_s):>9}")
    total_rollouts = sum(r.rollouts for r in rows)
    total_s = sum(r.est_wall_s for r in rows)
    how = "calibrated" if costs.calibrated else "not calibrated; --calibrate measures them"
    lines.append("")
    lines.append(f"{len(rows)} runs, {total_rollouts} rollouts; estimated wall time {format_duration(total_s / workers)} "
                 f"with {workers} worker(s)")
    lines.append(f"costs: {costs.sec_per_rollout * 1000:.2f} ms/rollout, {costs.sec_per_val:.1f} s/validation, "
                 f"{costs.startup_s:.1f} s start-up per run ({how})")
    return "\n".join(lines)
