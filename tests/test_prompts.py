"""Prompt templates, stop strings and deterministic exemplar selection."""

import pytest

from rlscale.errors import UserError
from rlscale.prompts import BOXED_INSTRUCTION, render, select_exemplars, stop_strings
from rlscale.tasks.base import Problem

P = Problem("p", "What is 2+3?", "5", "2+3=5\n#### 5")
E1 = Problem("e1", "What is 1+1?", "2", "1+1=2\n#### 2")
E2 = Problem("e2", "What is 2*2?", "4", "2*2=4\n#### 4")
ARITH = Problem("a0", "a=7,b=a*3;b?", "21", "b=a*3=7*3=21;####21")
ARITH_EX = Problem("a1", "a=1,b=a+1;b?", "2", "b=a+1=1+1=2;####2")


def test_gsm8k_template():
    assert render(P, "gsm8k") == "Question: What is 2+3?\nAnswer:"
    two = render(P, "gsm8k", shots=2, exemplars=[E1, E2])
    assert two == ("Question: What is 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: What is 2*2?\nAnswer: 2*2=4\n#### 4"
                   "\n\nQuestion: What is 2+3?\nAnswer:")
    assert render(P, "gsm8k", shots=1, exemplars=[E1, E2]).count("Question:") == 2
    assert "Question:" in stop_strings("gsm8k")


def test_boxed_template():
    out = render(P, "boxed", shots=1, exemplars=[E1])
    assert out.startswith(BOXED_INSTRUCTION) and "\\boxed{}" in out
    assert out.endswith("Problem: What is 2+3?\nSolution:")
    assert "Solution: 1+1=2" in out


def test_mmlu_template():
    q = Problem("m", "Color of sky?", "B", meta={"choices": ["red", "blue", "green", "pink"], "subject": "earth_sci"})
    ex = Problem("m2", "2+2?", "D", meta={"choices": ["1", "2", "3", "4"], "subject": "earth_sci"})
    out = render(q, "mmlu", shots=1, exemplars=[ex])
    assert out.startswith("The following are multiple choice questions (with answers) about earth sci.")
    assert "2+2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: D\n\n" in out
    assert out.endswith("Color of sky?\nA. red\nB. blue\nC. green\nD. pink\nAnswer:")
    assert stop_strings("mmlu") == ("\n",)
    with pytest.raises(UserError, match="choices"):
        render(P, "mmlu")


def test_plain_template():
    assert render(ARITH, "plain") == ARITH.question
    assert render(ARITH, "plain", shots=1, exemplars=[ARITH_EX]) == (
        "a=1,b=a+1;b?b=a+1=1+1=2;####2 a=7,b=a*3;b?")
    assert stop_strings("plain") == ()


def test_bad_template_and_shots():
    with pytest.raises(UserError, match="unknown prompt template"):
        render(P, "nope")
    with pytest.raises(UserError, match="only 1 exemplars"):
        render(P, "gsm8k", shots=2, exemplars=[E1])
    with pytest.raises(UserError, match="no solution"):
        render(P, "gsm8k", shots=1, exemplars=[Problem("x", "q", "1")])


def test_select_exemplars_deterministic_and_excludes_problem():
    pool = [Problem(f"t{i}", f"q{i}", str(i), f"s{i}") for i in range(50)]
    a = select_exemplars(pool, 5, seed=3)
    assert [p.id for p in a] == [p.id for p in select_exemplars(list(reversed(pool)), 5, seed=3)]
    assert [p.id for p in a] != [p.id for p in select_exemplars(pool, 5, seed=4)]
    assert len({p.id for p in a}) == 5
    for seed in range(20):
        assert "t7" not in {p.id for p in select_exemplars(pool, 49, seed=seed, exclude=("t7",))}
    with pytest.raises(UserError, match="cannot draw 50"):
        select_exemplars(pool, 50, exclude=("t7",))
    assert select_exemplars(pool, 0) == []
