"""Evaluate a sampler on problems: sample n completions per problem once, grade them with every requested mode,
keep per-problem records, and summarise avg / pass@k / worst@k / maj@k with standard errors per mode.

    result = evaluate(problems, policy.sampler(), template="plain", params=SamplingParams(n=16, max_new_tokens=64),
                      modes=("strict", "flexible"), ks=(1, 4, 16))
    result.summary("flexible")  # {'avg': .., 'avg_stderr': .., 'pass@4': .., 'worst@4': .., 'maj@4': .., ...}

Per-sample seeds are derive_seed(params.seed, "eval", problem.id, j): a problem gets the same samples whatever
the batch, order or --limit. Modes are those of rlscale.grading plus the local `letter` mode (multiple-choice
letter extraction, used for MMLU). A problem whose gold cannot be parsed (every reward None) is left out of that
mode's summary and counted in `unscorable_problems`; a single unscorable sample (e.g. a timeout) counts as wrong.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlscale.engine.base import SamplingParams
from rlscale.errors import UserError
from rlscale.evals import metrics
from rlscale.seeds import derive_seed
from rlscale.tasks.base import Problem, Task


def known_modes() -> tuple[str, ...]:
    from rlscale.grading import MODES

    return MODES


def check_modes(modes: Sequence[str]) -> None:
    from rlscale.grading import check_mode

    for m in modes:
        check_mode(m)


def grade(completions: list[str], golds: list[str], mode: str) -> list:
    """GradeResults (reward, extracted, reason) for each completion under `mode`."""
    from rlscale.grading import score_batch

    return score_batch(completions, golds, mode)


# ------------------------------------------------------------------------------------------------------- results
@dataclass
class EvalResult:
    """Per-problem records and the settings that produced them. summary(mode) aggregates over problems."""

    records: list[dict]
    modes: tuple[str, ...]
    ks: tuple[int, ...]
    settings: dict = field(default_factory=dict)

    def summary(self, mode: str) -> dict:
        if mode not in self.modes:
            raise UserError(f"mode '{mode}' was not graded; graded modes: {', '.join(self.modes)}")
        return summarise(self.records, mode, self.ks)

    def other_format_frac(self, mode: str, other: str) -> float:
        """Fraction of rollouts answered in a format only `other` accepts: `mode` extracts nothing, `other` does
        (e.g. strict vs flexible: completions ending 'answer: n' instead of '#### n')."""
        for m in (mode, other):
            if m not in self.modes:
                raise UserError(f"mode '{m}' was not graded; graded modes: {', '.join(self.modes)}")
        pairs = [(a, b) for r in self.records
                 for a, b in zip(r["modes"][mode]["extracted"], r["modes"][other]["extracted"])]
        return sum(a is None and b is not None for a, b in pairs) / len(pairs) if pairs else 0.0

    def summaries(self) -> dict[str, dict]:
        return {m: self.summary(m) for m in self.modes}


def summarise(records: Sequence[dict], mode: str, ks: Sequence[int]) -> dict:
    """avg, pass@k, worst@k, maj@k (each with _stderr over problems; avg also with a seeded 95% bootstrap CI and
    avg_sampling_stderr, its error from the completions alone, `metrics.sampling_stderr`) over the scorable
    problems of `mode`, plus counts, mean response length, the truncated fraction and the fraction of rollouts
    from which `mode` extracts no answer (no_answer_frac)."""
    scored = [r for r in records if r["modes"][mode]["scorable"]]
    out: dict[str, Any] = {"mode": mode, "problems": len(scored),
                           "unscorable_problems": len(records) - len(scored)}
    rollouts = sum(r["n"] for r in records)
    out["rollouts"] = rollouts
    out["truncated_frac"] = sum(r["truncated"] for r in records) / rollouts if rollouts else 0.0
    out["mean_length"] = float(np.mean([x for r in records for x in r["lengths"]])) if rollouts else 0.0
    out["no_answer_frac"] = (sum(x is None for r in records for x in r["modes"][mode]["extracted"]) / rollouts
                             if rollouts else 0.0)
    if not scored:
        return out
    n = np.array([r["n"] for r in scored])
    c = np.array([r["modes"][mode]["correct"] for r in scored])
    per = {"avg": metrics.avg_at_k(n, c, 1)}
    for k in ks:
        per[f"pass@{k}"] = metrics.pass_at_k(n, c, k)
        per[f"worst@{k}"] = metrics.worst_at_k(n, c, k)
        per[f"maj@{k}"] = metrics.maj_at_k([r["modes"][mode]["extracted"] for r in scored],
                                           [r["modes"][mode]["rewards"] for r in scored], k)
    for name, values in per.items():
        out[name], out[f"{name}_stderr"] = metrics.mean_stderr(values)
    out["avg_ci95"] = list(metrics.bootstrap_ci(per["avg"], seed=0))
    out["avg_sampling_stderr"] = metrics.sampling_stderr(n, c)  # the problems fixed: the noise between runs on them
    return out


# ------------------------------------------------------------------------------------------------------ evaluate
class Progress:
    """A one-line progress view on stderr: problems done, rollouts/s, ETA."""

    def __init__(self, total: int, enabled: bool = True, label: str = "eval"):
        self.total, self.enabled, self.label = total, enabled, label
        self.t0 = time.perf_counter()

    def update(self, done: int, rollouts: int) -> None:
        if not self.enabled:
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = rollouts / dt
        eta = dt / done * (self.total - done) if done else float("nan")
        end = "\n" if done >= self.total else ""
        print(f"\r{self.label}: {done}/{self.total} problems, {rate:.1f} rollouts/s, ETA {eta:.0f}s   ",
              end=end, file=sys.stderr, flush=True)


def sample_seeds(problems: Sequence[Problem], params: SamplingParams) -> list[list[int]]:
    return [[derive_seed(params.seed, "eval", p.id, j) for j in range(params.n)] for p in problems]


def build_prompts(problems: Sequence[Problem], template: str, shots: int, exemplars: Sequence[Problem]) -> list[str]:
    """Rendered prompts; a problem never appears among its own exemplars (the next exemplar takes its place)."""
    from rlscale.prompts import render

    out = []
    for p in problems:
        ex = [e for e in exemplars if e.id != p.id and e.question != p.question] if shots else []
        out.append(render(p, template, shots=shots, exemplars=ex))
    return out


def evaluate(problems: Sequence[Problem], sampler, *, template: str, shots: int = 0, params: SamplingParams,
             modes: Sequence[str] = ("flexible",), ks: Sequence[int] = (1,), exemplars: Sequence[Problem] = (),
             progress: bool = True, keep_text: bool = False, chunk_rollouts: int = 512) -> EvalResult:
    """Sample params.n completions per problem once; grade every mode from the same samples."""
    modes, ks = tuple(modes), tuple(sorted(set(int(k) for k in ks)))
    if not problems:
        raise UserError("no problems to evaluate; check --split/--limit/--data-path")
    if not modes:
        raise UserError("no grading mode given; pass --mode")
    check_modes(modes)
    for k in ks:
        if k < 1 or k > params.n:
            raise UserError(f"k={k} > n={params.n} samples per problem; raise --n or lower --k"
                            if k > params.n else f"k={k}: must be >= 1")
    prompts = build_prompts(problems, template, shots, exemplars)
    seeds = sample_seeds(problems, params)
    texts_only = dataclasses.replace(params, logprobs=False)  # grading reads the text: the same tokens, less work
    chunk = max(1, chunk_rollouts // max(params.n, 1))
    bar = Progress(len(problems), progress)
    records: list[dict] = []
    done_rollouts = 0
    for lo in range(0, len(problems), chunk):
        hi = min(lo + chunk, len(problems))
        groups = sampler.generate(prompts[lo:hi], texts_only, seeds=seeds[lo:hi])
        records.extend(_grade_groups(problems[lo:hi], groups, modes, keep_text))
        done_rollouts += sum(len(g) for g in groups)
        bar.update(hi, done_rollouts)
    settings = {"template": template, "shots": shots, "n": params.n, "temperature": params.temperature,
                "top_p": params.top_p, "max_new_tokens": params.max_new_tokens, "stop": list(params.stop),
                "seed": params.seed, "modes": list(modes), "ks": list(ks), "problems": len(problems),
                "exemplar_ids": [e.id for e in exemplars[: shots + 1]] if shots else []}
    try:
        from rlscale.grading import GRADING_VERSION

        settings["grading_version"] = GRADING_VERSION
    except ImportError:
        pass
    return EvalResult(records=records, modes=modes, ks=ks, settings=settings)


def _grade_groups(problems: Sequence[Problem], groups: list[list], modes: tuple[str, ...],
                  keep_text: bool) -> list[dict]:
    texts = [r.text for g in groups for r in g]
    golds = [p.answer for p, g in zip(problems, groups) for _ in g]
    graded = {m: grade(texts, golds, m) for m in modes}
    records, pos = [], 0
    for p, g in zip(problems, groups):
        rec: dict[str, Any] = {"problem_id": p.id, "n": len(g), "gold": p.answer,
                               "lengths": [r.num_tokens for r in g],
                               "truncated": sum(not r.finished for r in g), "modes": {}}
        for m in modes:
            res = graded[m][pos:pos + len(g)]
            rewards = [r.reward for r in res]
            rec["modes"][m] = {
                "correct": int(sum(1 for x in rewards if x is not None and x > 0.5)),
                "rewards": [bool(x is not None and x > 0.5) for x in rewards],
                "extracted": [r.extracted for r in res],
                "reasons": [r.reason for r in res],
                "scorable": any(x is not None for x in rewards),
            }
        if keep_text:
            rec["completions"] = [r.text for r in g]
        records.append(rec)
        pos += len(g)
    return records


# ---------------------------------------------------------------------------------------- loading (CLI helpers)
EXEMPLAR_SPLITS = {"mmlu": "dev"}


def load_problems(task: Task, split: str, data_path: str | None = None, limit: int | None = None,
                  hf: bool = False) -> list[Problem]:
    """task.load with `hf` passed only when asked (the generated task has no Hub source)."""
    kw = {"hf": True} if hf else {}
    if hf and task.name == "arith":
        raise UserError("--hf: the arith task is generated locally; drop --hf")
    return task.load(split, data_path=data_path, limit=limit, **kw)


def exemplar_pool(task: Task, split: str, exemplar_path: str | None = None, data_path: str | None = None,
                  hf: bool = False) -> list[Problem]:
    """Problems to draw few-shot exemplars from: --exemplar-path, else the task's exemplar split (mmlu: dev; else
    train when the task has one), else the evaluated split itself (the evaluated problem is always excluded)."""
    if exemplar_path is not None:
        return load_problems(task, "train", data_path=exemplar_path)
    ex_split = EXEMPLAR_SPLITS.get(task.name, "train" if "train" in task.splits else split)
    try:
        return load_problems(task, ex_split, hf=hf)
    except UserError as e:
        if data_path is None and ex_split == split:
            raise
        print(f"note: exemplar split '{ex_split}' unavailable ({e}); drawing exemplars from the evaluated data",
              file=sys.stderr)
        return load_problems(task, split, data_path=data_path, hf=hf)
