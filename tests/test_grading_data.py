"""Bars on the real data in ../shared/data: GSM8K gold solutions (strict/flexible/custom_flexible, 100% both ways)
and MATH-500 solutions in math mode (>= 99% correct against their own answer, >= 99% wrong against another's)."""

import json
import re
from pathlib import Path

import pytest

from rlscale.grading import score_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K = DATA / "gsm8k" / "test.jsonl"
MATH500 = DATA / "math500" / "test.jsonl"


def _rows(path):
    if not path.exists():
        pytest.skip(f"{path} not found")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _bump_final_answer(solution: str) -> str:
    head, tail = solution.rsplit("####", 1)
    value = int(tail.strip().replace(",", ""))
    return f"{head}#### {value + 1}"


@pytest.mark.parametrize("mode", ["strict", "flexible", "custom_flexible"])
def test_gsm8k_gold_solutions_grade_correct_and_bumped_ones_wrong(mode):
    rows = _rows(GSM8K)
    assert len(rows) == 1319
    golds = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]
    right = score_batch([r["answer"] for r in rows], golds, mode)
    assert [r.reason for r in right] == ["correct"] * len(rows)
    wrong = score_batch([_bump_final_answer(r["answer"]) for r in rows], golds, mode)
    assert [r.reason for r in wrong] == ["wrong"] * len(rows)


def _same_answer(a: str, b: str) -> bool:
    def norm(s):
        return re.sub(r"^[a-z]\s*=\s*", "", re.sub(r"\s+", "", s))

    return norm(a) == norm(b)


def test_math500_solutions_correct_against_own_answer_and_wrong_against_another():
    rows = _rows(MATH500)
    assert len(rows) == 500
    solutions = [r["solution"] for r in rows]
    answers = [r["answer"] for r in rows]
    own = score_batch(solutions, answers, "math", workers=2)
    correct = sum(r.reason == "correct" for r in own)
    assert correct / len(rows) >= 0.99, [(a, r) for a, r in zip(answers, own) if r.reason != "correct"]

    rotated = answers[1:] + answers[:1]
    keep = [i for i in range(len(rows)) if not _same_answer(answers[i], rotated[i])]  # genuinely equal pairs
    assert len(keep) >= 490
    other = score_batch([solutions[i] for i in keep], [rotated[i] for i in keep], "math", workers=2)
    wrong = sum(r.reason == "wrong" for r in other)
    assert wrong / len(keep) >= 0.99, [(rotated[i], r) for i, r in zip(keep, other) if r.reason != "wrong"]


def test_math500_boxed_mode_reads_every_solution():
    rows = _rows(MATH500)
    results = score_batch([r["solution"] for r in rows], [r["answer"] for r in rows], "boxed")
    assert sum(r.reason == "correct" for r in results) / len(rows) >= 0.99
