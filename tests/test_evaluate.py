"""evaluate(): one sampling, every mode graded from it, per-problem records, summaries; letter grading; bad input."""

import numpy as np
import pytest

from rlscale.engine.base import Rollout, SamplingParams
from rlscale.errors import UserError
from rlscale.evals.evaluate import evaluate, sample_seeds
from rlscale.evals.metrics import pass_at_k, worst_at_k
from rlscale.grading import score
from rlscale.grading.extract import extract_letter
from rlscale.tasks.base import Problem


class ScriptedSampler:
    """Returns, for the prompt of problem p, the scripted completions; records the calls and seeds it got."""

    def __init__(self, script: dict[str, list[str]], truncate: set[tuple[str, int]] = frozenset()):
        self.script, self.truncate, self.calls, self.seeds = script, truncate, 0, {}

    def generate(self, prompts, params, seeds=None):
        self.calls += 1
        out = []
        for i, prompt in enumerate(prompts):
            key = prompt.rsplit(" ", 1)[-1]
            texts = self.script[key][: params.n]
            self.seeds[key] = list(seeds[i])
            out.append([Rollout(i, j, [1], [5] * (len(t) + 1), t, [-0.1] * (len(t) + 1),
                                finished=(key, j) not in self.truncate, seed=seeds[i][j])
                        for j, t in enumerate(texts)])
        return out


PROBLEMS = [Problem("p0", "q0?", "12"), Problem("p1", "q1?", "7"), Problem("p2", "q2?", "3")]
SCRIPT = {
    "q0?": ["#### 12", "answer: 12", "#### 11", "12"],  # strict 1/4, flexible 3/4
    "q1?": ["no idea", "#### 7", "#### 7", "#### 7"],  # strict 3/4, flexible 3/4
    "q2?": ["5", "6", "7", "#### 8"],  # 0 / 0
}


def run(**kw):
    sampler = ScriptedSampler(SCRIPT, truncate={("q0?", 0)})
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=8, seed=5)
    res = evaluate(PROBLEMS, sampler, template="plain", params=params, modes=("strict", "flexible"),
                   ks=(1, 2, 4), progress=False, **kw)
    return res, sampler


def test_counts_and_summary():
    res, sampler = run()
    by = {r["problem_id"]: r for r in res.records}
    assert [by[p]["modes"]["strict"]["correct"] for p in ("p0", "p1", "p2")] == [1, 3, 0]
    assert [by[p]["modes"]["flexible"]["correct"] for p in ("p0", "p1", "p2")] == [3, 3, 0]
    assert by["p0"]["truncated"] == 1 and by["p1"]["truncated"] == 0
    assert by["p0"]["lengths"] == [8, 11, 8, 3]
    assert by["p0"]["modes"]["flexible"]["extracted"] == ["12", "12", "11", "12"]
    s, f = res.summary("strict"), res.summary("flexible")
    assert s["avg"] == pytest.approx(np.mean([1 / 4, 3 / 4, 0]))
    assert f["avg"] == pytest.approx(np.mean([3 / 4, 3 / 4, 0]))
    assert s["avg"] < f["avg"]  # the format effect, from one sampling
    assert f["pass@2"] == pytest.approx(np.mean(pass_at_k(np.array([4, 4, 4]), np.array([3, 3, 0]), 2)))
    assert f["worst@2"] == pytest.approx(np.mean(worst_at_k(np.array([4, 4, 4]), np.array([3, 3, 0]), 2)))
    assert f["avg_stderr"] == pytest.approx(np.std([0.75, 0.75, 0], ddof=1) / np.sqrt(3))
    # the problems fixed, only their 4 completions resampled: sqrt(sum p(1 - p) / (n - 1)) / P
    assert f["avg_sampling_stderr"] == pytest.approx(np.sqrt(2 * 0.75 * 0.25 / 3) / 3)
    # maj@4 (flexible): p0 majority '12' right, p1 '7' right, p2 tie 5/6/7/8 -> first ('5') wrong
    assert f["maj@4"] == pytest.approx(2 / 3)
    assert f["truncated_frac"] == pytest.approx(1 / 12) and f["problems"] == 3
    assert sampler.calls == 1  # sampled once for both modes


def test_no_answer_and_other_format_fractions():
    res, _ = run()
    # strict reads only '#### n': 2 (q0) + 1 (q1) + 3 (q2) of 12 rollouts unanswered; flexible misses only "no idea"
    assert res.summary("strict")["no_answer_frac"] == pytest.approx(6 / 12)
    assert res.summary("flexible")["no_answer_frac"] == pytest.approx(1 / 12)
    # answered only in a format flexible accepts: "answer: 12", "12" (q0) and "5", "6", "7" (q2)
    assert res.other_format_frac("strict", "flexible") == pytest.approx(5 / 12)
    assert res.other_format_frac("flexible", "strict") == 0.0
    with pytest.raises(UserError, match="not graded"):
        res.other_format_frac("strict", "boxed")


def test_seeds_depend_on_problem_not_batch():
    res, sampler = run()
    params = SamplingParams(n=4, seed=5)
    assert sampler.seeds["q1?"] == sample_seeds([PROBLEMS[1]], params)[0]
    other = ScriptedSampler(SCRIPT)
    evaluate(PROBLEMS[::-1], other, template="plain", params=params, modes=("flexible",), progress=False,
             chunk_rollouts=4)
    assert other.calls == 3 and other.seeds == sampler.seeds


def test_progress_on_stderr(capsys):
    evaluate(PROBLEMS, ScriptedSampler(SCRIPT), template="plain", params=SamplingParams(n=4), progress=True)
    err = capsys.readouterr().err
    assert "3/3 problems" in err and "rollouts/s" in err and "ETA" in err


def test_exemplars_never_include_the_problem():
    seen = []

    class Capture(ScriptedSampler):
        def generate(self, prompts, params, seeds=None):
            seen.extend(prompts)
            return super().generate(prompts, params, seeds)

    ex = [Problem("p0", "q0?", "12", "s0"), Problem("e1", "e1?", "1", "s1")]
    evaluate(PROBLEMS, Capture(SCRIPT), template="plain", shots=1, params=SamplingParams(n=4), exemplars=ex,
             progress=False)
    assert seen[0] == "e1?s1 q0?" and seen[1] == "q0?s0 q1?"


def test_bad_input():
    params = SamplingParams(n=4)
    s = ScriptedSampler(SCRIPT)
    with pytest.raises(UserError, match="k=8 > n=4"):
        evaluate(PROBLEMS, s, template="plain", params=params, ks=(8,), progress=False)
    with pytest.raises(UserError, match="unknown grading mode 'nope'"):
        evaluate(PROBLEMS, s, template="plain", params=params, modes=("nope",), progress=False)
    with pytest.raises(UserError, match="no problems"):
        evaluate([], s, template="plain", params=params, progress=False)
    res, _ = run()
    with pytest.raises(UserError, match="not graded"):
        res.summary("math")


def test_letter_grading():
    assert extract_letter(" B") == "B"
    assert extract_letter(" (C) because") == "C"
    assert extract_letter("I think the answer is (D).") == "D"
    assert extract_letter("Answer: A") == "A"
    assert extract_letter("A cat is an animal") == "A"  # a leading letter counts (documented ambiguity)
    assert extract_letter("nothing here") is None
    assert score(" B. blue", "B", "letter").reward == 1.0
    assert score(" C", "B", "letter").reason == "wrong"
    assert score("", "B", "letter").reason == "no_answer"
    assert score("B", "7", "letter").reward is None


def test_unscorable_gold_left_out():
    probs = [Problem("p0", "q0?", "12"), Problem("bad", "q1?", "\\boxed{")]
    res = evaluate(probs, ScriptedSampler(SCRIPT), template="plain", params=SamplingParams(n=4), modes=("letter",),
                   progress=False)
    s = res.summary("letter")
    assert s["problems"] == 0 and s["unscorable_problems"] == 2


def test_letter_mode_end_to_end():
    probs = [Problem("m0", "m0?", "B"), Problem("m1", "m1?", "D")]
    script = {"m0?": [" B", " (B)", " C", "the answer is B"], "m1?": [" A", " D", "", " D. four"]}
    res = evaluate(probs, ScriptedSampler(script), template="plain", params=SamplingParams(n=4),
                   modes=("letter",), ks=(1, 4), progress=False)
    assert [r["modes"]["letter"]["correct"] for r in res.records] == [3, 2]
    assert res.summary("letter")["maj@4"] == 1.0
