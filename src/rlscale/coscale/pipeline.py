"""CoScale-RL (Chen, Gao, Wu 2026, arXiv 2601.14695) built from rlscale's SFT, GRPO and evaluation modules.

    [warm-up SFT] -> repeat while the rollout budget lasts:
        evaluate the pool (unsolvable < 0.05 <= solvable < 0.70 <= solved)
        -> multi-solution SFT on the unsolvable problems -> re-evaluate them
        -> partition the solvable problems by difficulty, rollout count N per partition (harder -> larger)
        -> independent GRPO per partition in segments of `plateau_window` steps; N doubles when the reward plateaus
        -> the last K correct solutions per problem from the partition's replay buffer (its GRPO runs' correct
           rollouts); a harvest evaluation after RL moves problems below the solvable threshold back to the
           unsolvable pool, and those at/above the solved threshold out of it
        -> re-distillation: SFT the iteration's start policy on the union (the next iteration starts from it)
    -> finally SFT the initial policy on every collected solution (against catastrophic forgetting).

Every stage is recorded in OUT/stages.json (result, rollouts spent) and its SFT/GRPO runs are run stores under
OUT/stages/; a finished stage is skipped on re-run and an interrupted SFT/GRPO run resumes from its checkpoint, so
re-running the same command after a kill replays the same decisions. Every rollout that drives a decision counts
against the budget: GRPO rollouts (filtered ones included) and GRPO's own minimal validation, the pool evaluations
and the harvest sampling. Held-out validation for reporting (val_* stages) is not counted.

Replay buffer: each GRPO segment runs with `replay_correct`, so its run store keeps every correct rollout; a
partition's re-distillation data are the last K distinct correct completions per problem over its segments of the
iteration (newest segment last), as in the paper. The harvest samples the partition's final policy `collect_n`
times per problem (counted) for the accuracy that moves problems between pools.

N doubling: a GRPO run's config (hence N) is fixed, so each segment is its own run that starts from the previous
segment's saved model (weights carried over; the AdamW state restarts at each segment).

Analysis helper: efficiency(eta/N) = (eta/N) mu p - (eta/N)^2 mu n, maximised at eta/N = p / (2n).
Tests: tests/test_coscale.py.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlscale.config import check_field_types, config_from_dict, config_to_dict
from rlscale.errors import UserError
from rlscale.io import atomic_write_json, atomic_write_jsonl
from rlscale.seeds import derive_seed

CLASSES = ("unsolvable", "solvable", "solved")
STAGES_FILE = "stages.json"
CONFIG_FILE = "coscale.json"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class CoScaleConfig:
    model: str = ""
    """initial policy: a lab checkpoint dir or a Hugging Face model dir"""
    task: str = "arith"
    """task name (grading mode, template, loader)"""
    train_set: str | None = None
    """training pool JSONL (id, question, answer); default: the task's train split"""
    solutions: str | None = None
    """reference solutions JSONL (problem_id, solution; several lines per problem); arith: generated when unset"""
    val_set: str | None = None
    """held-out problems JSONL for reporting; default: the task's val split"""
    template: str | None = None
    """prompt template; default: the task's"""
    reward: str | None = None
    """grading mode for reward, pool accuracy and validation; default: the task's"""
    budget_rollouts: int = 20_000
    """compute budget C in rollouts (GRPO + decision sampling: pool evals, harvests)"""
    unsolvable_below: float = 0.05
    """a problem with pool accuracy below this is unsolvable"""
    solved_at: float = 0.70
    """a problem with pool accuracy at or above this is solved (leaves the pool)"""
    eval_n: int = 16
    """samples per problem for the pool evaluations (counted)"""
    solutions_per_problem: int = 8
    """M: reference solutions per unsolvable problem in the multi-solution SFT"""
    warmup_problems: int = 0
    """warm-up SFT on the first this-many pool problems before anything else (0 = no warm-up)"""
    warmup_solutions: int = 16
    """reference solutions per warm-up problem"""
    num_partitions: int = 3
    """difficulty partitions of the solvable problems"""
    initial_n: tuple[int, ...] = (4, 8, 16)
    """initial rollouts per problem N per partition, easiest partition first (len >= num_partitions; harder ->
    larger)"""
    max_n: int = 64
    """N never doubles beyond this"""
    problems_per_batch: int = 8
    """GRPO problems per step (capped at the partition size)"""
    rl_steps: int = 20
    """GRPO steps per partition per iteration (run in segments of plateau_window steps)"""
    plateau_window: int = 5
    """steps per GRPO segment; the reward plateaus when the last window's mean gains less than plateau_tol over the
    window before it (at the same N)"""
    plateau_tol: float = 0.02
    """minimum gain in mean training reward between consecutive windows that counts as progress"""
    redistill_k: int = 8
    """K: correct solutions per problem kept from each partition for re-distillation"""
    collect_n: int = 16
    """samples per problem of the harvest evaluation after a partition's RL (its accuracy moves problems between
    pools; counted)"""
    max_iterations: int = 3
    """CoScale iterations at most (the budget may end them earlier)"""
    grpo_lr: float = 1e-4
    """GRPO learning rate"""
    temperature: float = 1.0
    """sampling temperature (GRPO, pool evaluations, harvest)"""
    max_new_tokens: int = 128
    """generation budget per rollout"""
    sft_lr: float = 3e-4
    """SFT learning rate (multi-solution SFT, re-distillation, final SFT)"""
    sft_epochs: float = 3.0
    """SFT passes over the data"""
    sft_batch_size: int = 32
    """SFT examples per step"""
    val_n: int = 8
    """held-out samples per problem (reporting; not counted)"""
    val_limit: int | None = 200
    """held-out problems (None = all)"""
    val_every_iteration: bool = True
    """evaluate the held-out set after each iteration (accuracy vs rollouts curve)"""
    seed: int = 0
    """run seed: sampling seeds, data order"""

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CoScaleConfig:
        return config_from_dict(cls, d, "CoScale", "rlscale coscale")

    def validate(self) -> CoScaleConfig:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        check_field_types(self, "CoScale config")
        need(bool(self.model), "model is required: pass --model DIR")
        need(0.0 < self.unsolvable_below < self.solved_at <= 1.0,
             f"thresholds out of order: need 0 < unsolvable_below ({self.unsolvable_below}) < solved_at "
             f"({self.solved_at}) <= 1")
        need(self.budget_rollouts >= 1, f"budget_rollouts must be >= 1 (got {self.budget_rollouts})")
        need(self.eval_n >= 1 and self.collect_n >= 1 and self.val_n >= 1, "eval_n, collect_n and val_n must be >= 1")
        need(self.solutions_per_problem >= 1 and self.warmup_solutions >= 1,
             "solutions_per_problem and warmup_solutions must be >= 1")
        need(self.warmup_problems >= 0, "warmup_problems must be >= 0")
        need(self.num_partitions >= 1, "num_partitions must be >= 1")
        need(len(self.initial_n) >= self.num_partitions,
             f"initial_n={list(self.initial_n)}: give one N per partition (num_partitions={self.num_partitions})")
        need(all(n >= 2 for n in self.initial_n), f"initial_n={list(self.initial_n)}: each N must be >= 2 (groups)")
        need(list(self.initial_n) == sorted(self.initial_n),
             f"initial_n={list(self.initial_n)}: harder partitions get more rollouts; give N in increasing order")
        need(self.max_n >= max(self.initial_n), f"max_n={self.max_n} must be >= the largest initial N")
        need(self.problems_per_batch >= 1 and self.rl_steps >= 1 and self.plateau_window >= 1,
             "problems_per_batch, rl_steps and plateau_window must be >= 1")
        need(self.plateau_tol >= 0, "plateau_tol must be >= 0")
        need(self.redistill_k >= 1 and self.max_iterations >= 1, "redistill_k and max_iterations must be >= 1")
        need(self.grpo_lr > 0 and self.sft_lr > 0 and self.sft_epochs > 0 and self.sft_batch_size >= 1,
             "need grpo_lr > 0, sft_lr > 0, sft_epochs > 0, sft_batch_size >= 1")
        need(self.temperature > 0 and self.max_new_tokens >= 1, "need temperature > 0 and max_new_tokens >= 1")
        need(self.val_limit is None or self.val_limit >= 1, "val_limit must be >= 1 (or unset for all)")
        return self


# ================================================================================================ pure functions
def efficiency(eta_over_N: float, mu: float, p: float, n: float) -> float:  # noqa: N803  (the paper's symbols)
    """E = (eta/N) mu p - (eta/N)^2 mu n: the expected per-rollout improvement at step size per rollout eta/N."""
    x = eta_over_N
    return x * mu * p - x * x * mu * n


def best_eta_over_N(p: float, n: float) -> float:  # noqa: N802
    """argmax_x efficiency(x, mu, p, n) = p / (2 n) (for mu > 0, n > 0): harder partitions (small p) want a smaller
    step per rollout, i.e. more rollouts N at a fixed eta."""
    if n <= 0:
        raise UserError(f"n={n}: must be > 0")
    return p / (2.0 * n)


def classify(acc: float, unsolvable_below: float, solved_at: float) -> str:
    """unsolvable (acc < lo) | solvable (lo <= acc < hi) | solved (acc >= hi)."""
    if acc < unsolvable_below:
        return "unsolvable"
    return "solved" if acc >= solved_at else "solvable"


def partition_by_difficulty(acc: dict[str, float], k: int) -> list[list[str]]:
    """Split problems into <= k non-empty partitions of near-equal size by accuracy, easiest first (ties by id).
    Partition sizes differ by at most one."""
    ids = sorted(acc, key=lambda i: (-acc[i], i))
    k = max(1, min(k, len(ids)))
    q, r = divmod(len(ids), k)
    out, lo = [], 0
    for j in range(k):
        hi = lo + q + (1 if j < r else 0)
        if hi > lo:
            out.append(ids[lo:hi])
        lo = hi
    return out


def assign_rollouts(num_partitions: int, initial_n: Sequence[int]) -> list[int]:
    """N per partition (easiest first) when there are `num_partitions` non-empty partitions: the last (hardest)
    partitions take the largest N, so fewer partitions than configured keep the hard end's N."""
    ns = sorted(int(n) for n in initial_n)
    if num_partitions > len(ns):
        raise UserError(f"{num_partitions} partitions but only {len(ns)} initial N values")
    return ns[len(ns) - num_partitions:] if num_partitions else []


def plateaued(rewards: Sequence[float], window: int, tol: float) -> bool:
    """True when mean(last window) - mean(window before) < tol; needs 2 * window rewards (else False)."""
    finite = [float(r) for r in rewards if r == r]  # NaN (unscorable) steps are left out
    if len(finite) < 2 * window:
        return False
    last = sum(finite[-window:]) / window
    prev = sum(finite[-2 * window:-window]) / window
    return last - prev < tol


def next_n(n: int, rewards_since_change: Sequence[float], window: int, tol: float, max_n: int) -> int:
    """Double N (capped at max_n) when the reward has plateaued at the current N, else keep it."""
    return min(2 * n, max_n) if plateaued(rewards_since_change, window, tol) else n


def transitions(before: dict[str, str], after: dict[str, str]) -> dict[str, int]:
    """Counts 'from->to' over problems present in both maps (classes: unsolvable, solvable, solved)."""
    out = {f"{a}->{b}": 0 for a in CLASSES for b in CLASSES}
    for pid, a in before.items():
        if pid in after:
            out[f"{a}->{after[pid]}"] += 1
    return out


def class_counts(classes: dict[str, str]) -> dict[str, int]:
    return {c: sum(1 for v in classes.values() if v == c) for c in CLASSES}


def add_distinct(into: dict[str, list[str]], key: str, items) -> None:
    """Append to into[key] (created if absent) the items it does not hold yet, in order."""
    have = into.setdefault(key, [])
    have += [t for t in items if t not in have]


def pad_to_multiple(ids: Sequence[str], m: int) -> list[tuple[str, str]]:
    """(source id, training id) pairs: ids, then the hardest (last) ones repeated under ids 'ID~dupK' until the count
    is a multiple of m. With a multiple, GRPO's epoch-wise batches never hold a problem twice (a batch spanning an
    epoch boundary can, which the run store's per-step problem records reject)."""
    out = [(i, i) for i in ids]
    k = 0
    while len(out) % m:
        src = ids[len(ids) - 1 - k % len(ids)]
        out.append((src, f"{src}~dup{k // len(ids) + 1}"))
        k += 1
    return out


def segment_cost(n: int, problems_per_batch: int, steps: int, val_rollouts: int = 2) -> int:
    """Rollouts one GRPO segment spends: n * B_problem per step plus its two 1-sample validations."""
    return n * problems_per_batch * steps + val_rollouts


class Ledger:
    """Rollouts spent against the budget. `afford(cost, reserve)` says whether spending `cost` still leaves
    `reserve` for later mandatory stages."""

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.spent = 0

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    def afford(self, cost: int, reserve: int = 0) -> bool:
        return cost + reserve <= self.remaining

    def spend(self, rollouts: int) -> None:
        self.spent += int(rollouts)


def min_iteration_cost(cfg: CoScaleConfig, pool_size: int) -> int:
    """Smallest spend of one iteration: the pool evaluation, one GRPO segment at the smallest N on one problem and
    its harvest."""
    return (cfg.eval_n * pool_size + segment_cost(min(cfg.initial_n), 1, cfg.plateau_window)
            + cfg.collect_n)


# ================================================================================================ stage records
class Stages:
    """OUT/stages.json: {stage: {"result": ..., "rollouts": int, "wall_s": float}} written atomically after each
    stage; `run(name, fn, counted)` returns the stored result of a finished stage instead of running it again."""

    def __init__(self, root: Path, ledger: Ledger, progress: bool):
        self.root, self.ledger, self.progress = root, ledger, progress
        p = root / STAGES_FILE
        self.done: dict[str, dict] = json.loads(p.read_text()) if p.exists() else {}

    def dir(self, name: str) -> Path:
        return self.root / "stages" / name

    def run(self, name: str, fn: Callable[[], tuple[Any, int]], counted: bool = True) -> Any:
        if name in self.done:
            rec = self.done[name]
        else:
            t = time.perf_counter()
            if self.progress:
                print(f"coscale: stage {name} (spent {self.ledger.spent}/{self.ledger.budget} rollouts)",
                      file=sys.stderr, flush=True)
            result, rollouts = fn()
            rec = {"result": result, "rollouts": int(rollouts), "counted": counted,
                   "wall_s": time.perf_counter() - t, "order": len(self.done)}
            self.done[name] = rec
            atomic_write_json(self.root / STAGES_FILE, self.done)
        if rec["counted"]:
            self.ledger.spend(rec["rollouts"])
        return rec["result"]


# ================================================================================================ data
def load_reference_solutions(cfg: CoScaleConfig, problems: Sequence) -> dict[str, list[str]]:
    """{problem_id: [solutions]} from cfg.solutions, or generated (arith) when unset; ids must be in the pool."""
    ids = {p.id for p in problems}
    if cfg.solutions is None:
        if cfg.task != "arith":
            raise UserError(f"--solutions FILE is required for task '{cfg.task}' (only arith generates solutions)")
        from rlscale.tasks.arith import solutions

        m = max(cfg.solutions_per_problem, cfg.warmup_solutions)
        return {p.id: solutions(p, m, seed=derive_seed(cfg.seed, "solutions", p.id)) for p in problems}
    path = Path(cfg.solutions)
    if not path.exists():
        raise UserError(f"--solutions {cfg.solutions}: file not found")
    from rlscale.io import read_jsonl

    out: dict[str, list[str]] = {}
    for line, r in enumerate(read_jsonl(path, required=("solution",)), 1):
        pid = r.get("problem_id", r.get("id"))
        if pid is None:
            raise UserError(f"{cfg.solutions}:{line}: missing field 'problem_id'")
        pid = str(pid)
        if pid not in ids:
            raise UserError(f"{cfg.solutions}:{line}: problem_id '{pid}' is not in the training set; "
                            "solutions must refer to --train-set problem ids")
        sols = out.setdefault(pid, [])
        if str(r["solution"]) not in sols:
            sols.append(str(r["solution"]))
    if not out:
        raise UserError(f"--solutions {cfg.solutions}: no solutions")
    return out


def _problem_rows(problems: Sequence) -> list[dict]:
    return [{"id": p.id, "question": p.question, "answer": p.answer, "solution": p.solution,
             "meta": dict(p.meta)} for p in problems]


def _sft_rows(by_problem: dict[str, list[str]], questions: dict[str, str], limit: int | None = None) -> list[dict]:
    return [{"problem_id": pid, "question": questions[pid], "solution": s}
            for pid in sorted(by_problem) for s in by_problem[pid][:limit]]


# ================================================================================================ the pipeline
class _Runner:
    """Stage implementations; holds the loaded problems, the config and the stage book."""

    def __init__(self, cfg: CoScaleConfig, root: Path, stages: Stages, problems, val_problems, progress: bool):
        from rlscale.tasks.base import get_task

        task = get_task(cfg.task)
        self.cfg, self.root, self.stages, self.progress = cfg, root, stages, progress
        self.template = cfg.template or task.template
        self.mode = cfg.reward or task.default_mode
        self.problems = {p.id: p for p in problems}
        self.questions = {p.id: p.question for p in problems}
        self.val_problems = val_problems

    # ---- sampling ----------------------------------------------------------------------------------------------
    def sample(self, model: str, ids: Sequence[str], n: int, seed: int,
               problems=None) -> list[dict]:
        from rlscale.engine.base import SamplingParams
        from rlscale.evals.evaluate import evaluate
        from rlscale.models import load_policy
        from rlscale.prompts import stop_strings

        probs = problems if problems is not None else [self.problems[i] for i in ids]
        policy = load_policy(model)
        policy.module.eval()
        params = SamplingParams(n=n, temperature=self.cfg.temperature, top_p=1.0,
                                max_new_tokens=self.cfg.max_new_tokens, stop=stop_strings(self.template), seed=seed)
        res = evaluate(probs, policy.sampler(), template=self.template, params=params, modes=(self.mode,),
                       ks=(1,), progress=False)
        return res.records

    def eval_accuracy(self, name: str, model: str, ids: Sequence[str]) -> dict[str, float]:
        """Per-problem accuracy of `model` on `ids` with eval_n samples (a counted stage)."""
        def fn():
            recs = self.sample(model, ids, self.cfg.eval_n, derive_seed(self.cfg.seed, name))
            return {r["problem_id"]: r["modes"][self.mode]["correct"] / r["n"] for r in recs}, \
                sum(r["n"] for r in recs)
        return self.stages.run(name, fn) if ids else {}

    def harvest(self, name: str, model: str, ids: Sequence[str]) -> dict:
        """Accuracy of a partition's final policy after its RL: collect_n samples per problem (counted)."""
        def fn():
            recs = self.sample(model, ids, self.cfg.collect_n, derive_seed(self.cfg.seed, name))
            return {"acc": {r["problem_id"]: r["modes"][self.mode]["correct"] / r["n"] for r in recs}}, \
                sum(r["n"] for r in recs)
        return self.stages.run(name, fn)

    def validate(self, name: str, model: str) -> dict:
        """Held-out avg@val_n with stderr and bootstrap CI (reporting; not counted)."""
        def fn():
            from rlscale.evals import metrics

            recs = self.sample(model, [], self.cfg.val_n, derive_seed(self.cfg.seed, "val"),
                               problems=self.val_problems)
            per = [r["modes"][self.mode]["correct"] / r["n"] for r in recs]
            mean, se = metrics.mean_stderr(per)
            return {"acc": mean, "stderr": se, "ci95": list(metrics.bootstrap_ci(per, seed=0)),
                    "problems": len(per), "n": self.cfg.val_n}, sum(r["n"] for r in recs)
        return self.stages.run(name, fn, counted=False)

    # ---- training ----------------------------------------------------------------------------------------------
    def sft(self, name: str, base_model: str, rows: list[dict]) -> dict:
        """SFT `base_model` on rows (problem_id, question, solution) into stages/NAME (a resumable run store)."""
        def fn():
            from rlscale.sft.sft import SFTConfig, train_sft

            d = self.stages.dir(name)
            d.mkdir(parents=True, exist_ok=True)
            data = d / "data.jsonl"
            if not data.exists():
                atomic_write_jsonl(data, rows)
            cfg = SFTConfig(model=base_model, data=str(data), template=self.template, epochs=self.cfg.sft_epochs,
                            batch_size=self.cfg.sft_batch_size, micro_batch_size=self.cfg.sft_batch_size,
                            lr=self.cfg.sft_lr, seed=derive_seed(self.cfg.seed, name) % 2**31)
            s = train_sft(cfg, d / "run", resume=True, progress=self.progress)
            return {"model": s["model_dir"], "examples": s["examples"], "tokens": s["tokens"],
                    "steps": s["steps"], "problems": len({r["problem_id"] for r in rows})}, 0
        return self.stages.run(name, fn)

    def grpo_segment(self, name: str, model: str, ids: Sequence[str], n: int, steps: int) -> dict:
        def fn():
            from rlscale.rl.grpo import GRPOConfig, train

            d = self.stages.dir(name)
            d.mkdir(parents=True, exist_ok=True)
            data = d / "problems.jsonl"
            Bp = min(self.cfg.problems_per_batch, len(ids))
            if not data.exists():
                rows = _problem_rows([self.problems[src] for src, _ in pad_to_multiple(ids, Bp)])
                for r, (_, new) in zip(rows, pad_to_multiple(ids, Bp)):
                    r["id"] = new
                atomic_write_jsonl(data, rows)
            cfg = GRPOConfig(model=model, task=self.cfg.task, train_set=str(data), val_set=str(data),
                             template=self.template, rollouts_per_problem=n,
                             problems_per_batch=Bp, iterations=steps,
                             lr=self.cfg.grpo_lr, reward=self.mode, temperature=self.cfg.temperature,
                             max_new_tokens=self.cfg.max_new_tokens, val_every=0, val_n=1, val_ks=(1,),
                             val_limit=1, seed=derive_seed(self.cfg.seed, name) % 2**31,
                             checkpoint_every=max(1, steps), micro_batch_size=64, replay_correct=True)
            s = train(cfg, d / "run", resume=True, progress=self.progress)
            from rlscale.store import RunStore

            with RunStore.open(d / "run") as st:
                rewards = [r["rollout/reward_mean"] for r in st.steps()]
                val_rollouts = sum(int(e.get("val/rollouts", 1)) for e in st.evals())
                replay = st.replay_solutions(self.cfg.redistill_k)
            source = dict((new, src) for src, new in pad_to_multiple(ids, Bp))  # training id -> problem id
            solutions: dict[str, list[str]] = {}
            for new, texts in replay.items():  # duplicates of a problem pool their solutions
                add_distinct(solutions, source[new], [t for t in texts if t.strip()])
            return {"model": str(d / "run" / "model"), "n": n, "steps": steps, "rewards": rewards,
                    "train_rollouts": int(s["rollouts"]), "solutions": solutions}, int(s["rollouts"]) + val_rollouts
        return self.stages.run(name, fn)


def _open_out(cfg: CoScaleConfig, out: Path) -> dict | None:
    """Create OUT with coscale.json, or check an existing one has the same config; the summary if finished."""
    from rlscale.store import config_hash

    d = cfg.to_dict()
    h = config_hash(d)
    p = out / CONFIG_FILE
    if p.exists():
        stored = json.loads(p.read_text())
        if stored.get("config_hash") != h:
            changed = sorted(k for k in set(d) | set(stored["config"]) if d.get(k) != stored["config"].get(k))
            raise UserError(f"{out}: holds a CoScale run with a different config (fields: {', '.join(changed)}); "
                            "use a new --out or the original options")
        s = out / SUMMARY_FILE
        return json.loads(s.read_text()) if s.exists() else None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, {"config": d, "config_hash": h})
    return None


def _load_sets(cfg: CoScaleConfig):
    from rlscale.tasks.base import get_task

    task = get_task(cfg.task)
    if cfg.train_set is not None and not Path(cfg.train_set).exists():
        raise UserError(f"--train-set {cfg.train_set}: file not found")
    if cfg.val_set is not None and not Path(cfg.val_set).exists():
        raise UserError(f"--val-set {cfg.val_set}: file not found")
    train = list(task.load("train", data_path=cfg.train_set))
    split = "val" if "val" in task.splits else "test"
    val = list(task.load(split, data_path=cfg.val_set, limit=cfg.val_limit))
    if not train or not val:
        raise UserError(f"empty {'training' if not train else 'validation'} set; check --train-set / --val-set")
    if len({p.id for p in train}) != len(train):
        raise UserError(f"{cfg.train_set}: problem ids must be unique")
    return train, val


def run_coscale(cfg: CoScaleConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the CoScale-RL pipeline into out_dir; returns the summary (also OUT/summary.json)."""
    cfg.validate()
    if not Path(cfg.model).is_dir():
        raise UserError(f"--model {cfg.model}: not a directory")
    train, val = _load_sets(cfg)
    refs = load_reference_solutions(cfg, train)
    need = min_iteration_cost(cfg, len(train))
    if cfg.budget_rollouts < need:
        raise UserError(f"budget_rollouts={cfg.budget_rollouts} is too small for one iteration: it needs >= {need} "
                        f"(pool evaluation {cfg.eval_n} x {len(train)} problems + one GRPO segment + a harvest)")
    out = Path(out_dir)
    finished = _open_out(cfg, out)
    if finished is not None:
        return finished
    t0 = time.perf_counter()
    ledger = Ledger(cfg.budget_rollouts)
    stages = Stages(out, ledger, progress)
    R = _Runner(cfg, out, stages, train, val, progress)
    ids_all = [p.id for p in train]

    # ---- 1. optional warm-up SFT ------------------------------------------------------------------------------
    initial = cfg.model
    if cfg.warmup_problems:
        warm = {i: refs[i][:cfg.warmup_solutions] for i in ids_all[:cfg.warmup_problems] if refs.get(i)}
        if warm:
            initial = R.sft("warmup_sft", cfg.model, _sft_rows(warm, R.questions))["model"]
    val_curve = []
    if cfg.val_every_iteration:
        v = R.validate("val_initial", initial)
        val_curve.append({"iteration": -1, "rollouts": ledger.spent, "acc": v["acc"], "stderr": v["stderr"]})

    classes: dict[str, str] = {}  # current class of every evaluated problem
    collected: dict[str, list[str]] = {}  # every solution used or harvested (for the final SFT)
    iterations: list[dict] = []
    n_timeline: list[dict] = []
    start = initial
    for it in range(cfg.max_iterations):
        active = [i for i in ids_all if classes.get(i) != "solved"]
        if not active or not ledger.afford(min_iteration_cost(cfg, len(active))):
            break
        rec: dict[str, Any] = {"iteration": it, "start_model": start, "rollouts_start": ledger.spent}
        # ---- 2. evaluate the pool ----------------------------------------------------------------------------
        acc = R.eval_accuracy(f"it{it}/eval_pool", start, active)
        start_classes = {i: classify(a, cfg.unsolvable_below, cfg.solved_at) for i, a in acc.items()}
        classes.update(start_classes)
        pool_start = dict(classes)  # the whole pool: problems solved in earlier iterations stay 'solved'
        rec["pool_start"] = class_counts(pool_start)
        # ---- 3. multi-solution SFT on the unsolvable problems, then re-evaluate them -------------------------
        unsolvable = [i for i in active if classes[i] == "unsolvable" and refs.get(i)]
        rl_model, after_sft = start, {}
        if unsolvable:
            data = {i: refs[i][:cfg.solutions_per_problem] for i in unsolvable}
            for i, s in data.items():
                add_distinct(collected, i, s)
            rl_model = R.sft(f"it{it}/sft_unsolvable", start, _sft_rows(data, R.questions))["model"]
            recheck = [i for i in active if classes[i] != "solved"]
            if ledger.afford(cfg.eval_n * len(recheck)):
                after_sft = R.eval_accuracy(f"it{it}/eval_after_sft", rl_model, recheck)
                classes.update({i: classify(a, cfg.unsolvable_below, cfg.solved_at) for i, a in after_sft.items()})
        rec["pool_after_sft"] = class_counts(classes)
        rec["sft_problems"] = len(unsolvable)
        # ---- 4. partition the solvable problems; N per partition ---------------------------------------------
        cur_acc = {**acc, **after_sft}
        solvable = {i: cur_acc[i] for i in active if classes[i] == "solvable"}
        parts = partition_by_difficulty(solvable, cfg.num_partitions) if solvable else []
        ns = assign_rollouts(len(parts), cfg.initial_n[:cfg.num_partitions])
        rec["partitions"] = [{"size": len(p), "mean_acc": sum(solvable[i] for i in p) / len(p), "n0": n}
                             for p, n in zip(parts, ns)]
        # ---- 5. independent GRPO per partition, segment by segment (round robin, so a short budget is shared) --
        reserve = cfg.collect_n * sum(len(p) for p in parts)
        models = [rl_model] * len(parts)
        hist: list[list[float]] = [[] for _ in parts]
        replay: list[dict[str, list[str]]] = [{} for _ in parts]  # per partition: problem -> correct rollouts
        steps_done = [0] * len(parts)
        seg = 0
        while parts and any(s < cfg.rl_steps for s in steps_done):
            ran = False
            for j, ids in enumerate(parts):
                steps = min(cfg.plateau_window, cfg.rl_steps - steps_done[j])
                if steps <= 0:
                    continue
                Bp = min(cfg.problems_per_batch, len(ids))
                if not ledger.afford(segment_cost(ns[j], Bp, steps), reserve):
                    continue
                r = R.grpo_segment(f"it{it}/p{j}/seg{seg}", models[j], ids, ns[j], steps)
                ran = True
                models[j] = r["model"]
                for i, sols in r.get("solutions", {}).items():  # newest segment last
                    replay[j][i] = [t for t in replay[j].get(i, []) if t not in sols] + sols
                steps_done[j] += steps
                hist[j] += r["rewards"]
                n_timeline.append({"iteration": it, "partition": j, "segment": seg, "n": ns[j],
                                   "rollouts": ledger.spent, "reward": _mean(r["rewards"])})
                new = next_n(ns[j], hist[j], cfg.plateau_window, cfg.plateau_tol, cfg.max_n)
                if new != ns[j]:
                    ns[j], hist[j] = new, []
            seg += 1
            if not ran:
                break
        rec["rl_steps"] = steps_done
        rec["n_final"] = list(ns)
        # ---- the last K correct solutions per problem from each partition's replay buffer; harvest: accuracy ---
        union: dict[str, list[str]] = {}
        for part in replay:
            for i, sols in part.items():
                add_distinct(union, i, sols[-cfg.redistill_k:])
        end_classes = dict(classes)
        for j, ids in enumerate(parts):
            if not ledger.afford(cfg.collect_n * len(ids)):
                continue
            h = R.harvest(f"it{it}/p{j}/harvest", models[j], ids)
            for i, a in h["acc"].items():
                end_classes[i] = classify(a, cfg.unsolvable_below, cfg.solved_at)
        rec["transitions"] = transitions(pool_start, end_classes)  # over the same problems as pool_start
        classes = end_classes
        rec["pool_end"] = class_counts(classes)
        # ---- 6. re-distillation: SFT the iteration's start policy on the union ---------------------------------
        for i, sols in union.items():
            add_distinct(collected, i, sols)
        redistill = dict(union)
        for i in unsolvable:  # the multi-solution SFT data of this iteration is part of the union
            add_distinct(redistill, i, refs[i][:cfg.solutions_per_problem])
        if redistill:
            start = R.sft(f"it{it}/redistill", start, _sft_rows(redistill, R.questions))["model"]
        rec["redistill_problems"] = len(redistill)
        rec["rollouts_end"] = ledger.spent
        if cfg.val_every_iteration:
            v = R.validate(f"it{it}/val", start)
            rec["val"] = v
            val_curve.append({"iteration": it, "rollouts": ledger.spent, "acc": v["acc"], "stderr": v["stderr"]})
        iterations.append(rec)
        if not redistill and not any(steps_done):
            break  # nothing was learned or collected: more iterations would repeat this one

    if not iterations:
        raise UserError(f"budget_rollouts={cfg.budget_rollouts} is too small for one iteration")
    # ---- 7. final: the initial policy trained on every collected solution ------------------------------------------
    final_model = initial
    if collected:
        final_model = R.sft("final_sft", initial, _sft_rows(collected, R.questions))["model"]
    final_val = R.validate("val_final", final_model)
    val_curve.append({"iteration": "final", "rollouts": ledger.spent, "acc": final_val["acc"],
                      "stderr": final_val["stderr"]})
    summary = {
        "final_model": final_model, "initial_model": initial, "rollouts": ledger.spent,
        "budget_rollouts": cfg.budget_rollouts, "iterations": iterations, "n_timeline": n_timeline,
        "val_curve": val_curve, "val_final": final_val, "collected_problems": len(collected),
        "collected_solutions": sum(len(v) for v in collected.values()), "pool": class_counts(classes),
        "mode": R.mode, "wall_s_last_session": time.perf_counter() - t0,
    }
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


def _mean(xs: Sequence[float]) -> float:
    v = [x for x in xs if x == x]
    return sum(v) / len(v) if v else math.nan
