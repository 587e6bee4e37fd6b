"""Tests of the generated arith task: format, determinism, splits, balanced answers, multiple solutions."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from rlscale.errors import UserError
from rlscale.tasks.arith import (
    ALPHABET,
    ArithConfig,
    ArithProblem,
    Step,
    constant_answer_baseline,
    corpus_stream,
    extract_answer,
    format_solution,
    generate_problem,
    generate_problems,
    is_correct,
    load_arith,
    parse_question,
    slipped_solution,
    solutions,
)
from rlscale.tasks.base import Problem, get_task

STEP_RE = re.compile(r"^([a-z])=([a-z])([+*-])([a-z]|\d+)=(\d+)([+*-])(\d+)=(\d+)$")


def check_solution(question: str, solution: str, answer: str) -> None:
    """Independent checker: every step restates a definition of the question, substitutes known values (either order
    for + and *), computes."""
    defs, target = question.rstrip("?").split(";")
    known = {defs.split(",")[0].split("=")[0]: int(defs.split(",")[0].split("=")[1])}
    definitions = {d.split("=")[0]: d.split("=")[1] for d in defs.split(",")[1:]}
    *steps, end = solution.split(";")
    assert end == f"####{answer}"
    assert sorted(s.split("=")[0] for s in steps) == sorted(definitions)
    for s in steps:
        m = STEP_RE.match(s)
        assert m, s
        name, left, op, right, lv, op2, rv, val = m.groups()
        assert definitions[name] == f"{left}{op}{right}" and op2 == op
        operands = (known[left], known[right] if right.isalpha() else int(right))
        if op in "+*":  # a commutative step may write its substituted operands in either order
            assert sorted((int(lv), int(rv))) == sorted(operands)
        else:
            assert (int(lv), int(rv)) == operands
        assert int(val) == eval(f"{lv}{op}{rv}")  # noqa: S307 (digits and one operator)
        known[name] = int(val)
    assert known[target] == int(answer)


def test_lab_notes_format_exact():
    p = ArithProblem("a", 7, (Step("b", "a", "*", "3", 21), Step("c", "b", "+", "5", 26)))
    assert p.question == "a=7,b=a*3,c=b+5;c?"
    assert format_solution(p) == "b=a*3=7*3=21;c=b+5=21+5=26;####26"
    assert format_solution(p, alt_format=True) == "b=a*3=7*3=21;c=b+5=21+5=26;answer: 26"


def test_generated_problems_are_correct_and_in_alphabet():
    cfg = ArithConfig()
    for p in generate_problems(300, seed=5, cfg=cfg, uniform_steps=True):
        check_solution(p.question, p.solution, p.answer)
        assert set(p.question + p.solution) <= set(ALPHABET)
        assert 1 <= p.meta["steps"] <= cfg.max_steps
        assert p.question.count(",") == p.meta["steps"]
        assert 0 <= int(p.answer) <= cfg.max_value


def test_same_seed_same_problems_different_seed_differs():
    a = generate_problems(50, seed=1)
    assert a == generate_problems(50, seed=1)
    assert [p.question for p in a] != [p.question for p in generate_problems(50, seed=2)]
    assert generate_problem(random.Random(3), ArithConfig(), 4) == generate_problem(random.Random(3), ArithConfig(), 4)


def test_step_weights_follow_config():
    docs = [d for d, _ in zip(corpus_stream(0, ArithConfig()), range(6000))]
    counts = Counter(d.split("?")[0].count(",") for d in docs)
    freqs = [counts[k] / len(docs) for k in range(1, 7)]
    w = ArithConfig().step_weights
    assert all(abs(f - wk / sum(w)) < 0.02 for f, wk in zip(freqs, w))
    mix = ArithConfig(step_weights=(0.30, 0.24, 0.18, 0.13, 0.09, 0.06))  # harder rarer
    counts = Counter(d.split("?")[0].count(",") for d, _ in zip(corpus_stream(0, mix), range(6000)))
    assert all(abs(counts[k] / 6000 - wk) < 0.02 for k, wk in zip(range(1, 7), mix.step_weights))


def test_splits_fixed_disjoint_and_balanced():
    test, val = load_arith("test"), load_arith("val")
    train = load_arith("train", limit=5000)
    assert len(test) == 2000 and len(val) == 2000 and len(load_arith("train")) == 20000
    qs = [set(p.question for p in s) for s in (test, val, load_arith("train"))]
    assert not (qs[0] & qs[1]) and not (qs[0] & qs[2]) and not (qs[1] & qs[2])
    assert load_arith("test", limit=10) == test[:10]
    steps = Counter(p.meta["steps"] for p in test)
    assert min(steps.values()) > 200  # eval splits cover every difficulty (uniform k)
    for s in (test, train):
        assert constant_answer_baseline(s) < 0.05  # no answer dominates (LAB_NOTES: 22% zeros was a trap)


def test_constant_answer_baseline_bruteforce():
    probs = [Problem(str(i), "q", a) for i, a in enumerate(["1", "2", "2", "3", "2", "1"])]
    best = max(sum(p.answer == c for p in probs) / len(probs) for c in {"1", "2", "3", "0"})
    assert constant_answer_baseline(probs) == best == 0.5
    assert constant_answer_baseline([]) == 0.0


def test_alt_format_fraction():
    docs = [d for d, _ in zip(corpus_stream(0, ArithConfig(alt_format_frac=0.3)), range(3000))]
    frac = sum("answer: " in d for d in docs) / len(docs)
    assert 0.27 < frac < 0.33
    assert all(d.endswith(("####" + d.split("#")[-1], )) or "answer: " in d for d in docs)
    assert not any("answer:" in d for _, d in zip(range(500), corpus_stream(0, ArithConfig())))


def test_slipped_solutions_rate_consistency_and_zero_identity():
    cfg = ArithConfig(slip_frac=0.2)
    rng = random.Random(0)
    steps = slips = wrong_final = 0
    for _ in range(2000):
        p = generate_problem(rng, cfg, 4)
        text = slipped_solution(p, rng, 0.2)
        parts = text.split(";")
        written: dict[str, int] = {p.start_name: p.start_value}
        for part, s in zip(parts, p.steps):
            name, expr, subst, result = part.split("=")
            assert name == s.name and expr == f"{s.left}{s.op}{s.right}"
            lv = written[s.left]
            rv = written[s.right] if s.right in written else int(s.right)
            assert subst == f"{lv}{s.op}{rv}"  # later steps use the values as written
            true = lv + rv if s.op == "+" else lv - rv if s.op == "-" else lv * rv
            assert abs(int(result) - true) <= 3 and (int(result) >= 0 or true < 0)  # a slip never goes below 0
            steps += 1
            slips += int(result) != true
            written[name] = int(result)
        assert parts[-1] == f"####{written[p.steps[-1].name]}"
        wrong_final += written[p.steps[-1].name] != p.answer
    assert 0.18 < slips / steps < 0.22
    assert wrong_final > 0
    # slip_frac = 0: the canonical solution, and the corpus stream is unchanged (no extra random draws)
    p = generate_problem(random.Random(1), ArithConfig(), 5)
    assert slipped_solution(p, random.Random(2), 0.0) == format_solution(p)
    plain = [d for d, _ in zip(corpus_stream(3, ArithConfig()), range(200))]
    zero = [d for d, _ in zip(corpus_stream(3, ArithConfig(slip_frac=0.0)), range(200))]
    noisy = [d for d, _ in zip(corpus_stream(3, ArithConfig(slip_frac=0.3)), range(200))]
    assert plain == zero and plain != noisy
    with pytest.raises(UserError, match="slip_frac"):
        ArithConfig(slip_frac=1.5).validate()
    with pytest.raises(UserError, match="slip_kind"):
        ArithConfig(slip_kind="typo").validate()


SLIPPED_STEP_RE = re.compile(r"^([a-z])=([a-z])([+*-])([a-z]|\d+)=(-?\d+)([+*-])(-?\d+)=(-?\d+)$")


def test_operand_slips_keep_the_arithmetic_right():
    rng = random.Random(4)
    steps = slips = 0
    for _ in range(1500):
        p = generate_problem(rng, ArithConfig(), 3)
        written: dict[str, int] = {p.start_name: p.start_value}
        for part, s in zip(slipped_solution(p, rng, 0.25, kind="operand").split(";"), p.steps):
            m = SLIPPED_STEP_RE.match(part)  # values as written can go negative downstream of a slip
            assert m, part
            lv, op, rv, result = int(m.group(5)), m.group(6), int(m.group(7)), int(m.group(8))
            assert result == (lv + rv if op == "+" else lv - rv if op == "-" else lv * rv)  # facts stay right
            assert rv == (written[s.right] if s.right in written else int(s.right))
            assert abs(lv - written[s.left]) <= 3
            slips += lv != written[s.left]
            steps += 1
            written[s.name] = result
    assert 0.22 < slips / steps < 0.28


def test_corpus_excludes_heldout():
    excl = frozenset(p.question for p in generate_problems(500, seed=9, cfg=ArithConfig(max_steps=1,
                                                                                         step_weights=(1.0,))))
    docs = [d for d, _ in zip(corpus_stream(0, ArithConfig(max_steps=1, step_weights=(1.0,)), exclude=excl),
                              range(2000))]
    assert not any(d.split("?")[0] + "?" in excl for d in docs)


def test_multiple_distinct_solutions():
    # b and c both depend only on a; d on both: exactly two topological orders; b, d are + steps (commutable),
    # c is a * step, so in the canonical order there are 2^3 chains, and 2 x 2^3 with reordering
    p = ArithProblem("a", 3, (Step("b", "a", "+", "1", 4), Step("c", "a", "*", "2", 6), Step("d", "b", "+", "c", 10)))
    prob = Problem("x", p.question, "10")
    sols = solutions(prob, 20, seed=0)
    assert len(sols) == 8 and len(set(sols)) == 8
    assert sols[0] == format_solution(p)
    for s in sols:
        check_solution(p.question, s, "10")
        assert [part.split("=")[0] for part in s.split(";")[:-1]] == ["b", "c", "d"]  # canonical order kept
    assert "b=a+1=1+3=4;c=a*2=2*3=6;d=b+c=6+4=10;####10" in sols
    both = solutions(prob, 40, seed=0, reorder=True)
    assert len(both) == 16 and set(sols) < set(both)
    assert any(s.startswith("c=") for s in both)
    for s in both:
        check_solution(p.question, s, "10")
    chain = Problem("y", "a=2,b=a-1,c=b-1;c?", "0")
    assert solutions(chain, 4, reorder=True) == ["b=a-1=2-1=1;c=b-1=1-1=0;####0"]  # no + or *, one order: one chain
    same = Problem("z", "a=3,b=a+3;b?", "6")
    assert solutions(same, 4) == ["b=a+3=3+3=6;####6"]  # commuting 3+3 writes the same text
    many = [p for p in load_arith("test", limit=200) if p.meta["steps"] == 6]
    assert sum(len(solutions(p, 8, seed=1)) == 8 for p in many) >= 0.7 * len(many)
    assert solutions(many[0], 3, seed=1) == solutions(many[0], 3, seed=1)


def test_parse_question_roundtrip_and_errors():
    for p in generate_problems(100, seed=3):
        assert format_solution(parse_question(p.question)) == p.solution
    with pytest.raises(UserError):
        parse_question("what is 2+2?")


def test_load_from_jsonl(tmp_path):
    path = tmp_path / "cur.jsonl"
    rows = [{"id": "p1", "question": "a=1,b=a+2;b?", "answer": 3, "meta": {"steps": 1}},
            {"id": "p2", "question": "a=2,b=a*3;b?", "answer": "6"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    probs = load_arith("train", data_path=str(path))
    assert [p.id for p in probs] == ["p1", "p2"] and probs[0].answer == "3" and probs[0].meta["steps"] == 1
    path.write_text('{"id": "p1", "question": "a=1;b?"}\n')
    with pytest.raises(UserError):
        load_arith("train", data_path=str(path))


def test_bad_split_and_registry():
    with pytest.raises(UserError, match="valid splits"):
        load_arith("dev")
    task = get_task("arith")
    assert task.load("val", limit=3) == load_arith("val", limit=3)


def test_extract_answer_modes():
    assert extract_answer("b=1;####12") == "12"
    assert extract_answer("b=1;answer: 12") == "12"
    assert extract_answer("b=1;answer: 12", strict=True) is None
    assert extract_answer("b=1=") is None
    assert is_correct("x;####07", "7") and not is_correct("x;####8", "7")


def test_generation_budget_fits_every_solution():
    """The task's default max_new_tokens must hold the longest worked solution (+ EOS) of every split: a budget of
    64 truncated every 5- and 6-step problem before its answer."""
    from rlscale.tasks.arith import MAX_NEW_TOKENS

    longest = max(len(p.solution) for split in ("train", "val", "test") for p in load_arith(split))
    assert longest + 1 <= MAX_NEW_TOKENS
    assert get_task("arith").max_new_tokens == MAX_NEW_TOKENS
    assert longest > 64  # why the budget is not 64


def test_chain_is_valid_accepts_every_correct_chain_and_nothing_else():
    from rlscale.grading import score
    from rlscale.tasks.arith import chain_is_valid, format_solution, parse_question, solutions

    rng = random.Random(5)
    problems = load_arith("train", limit=300)
    for prob in problems:
        for text in solutions(prob, 4, seed=1, reorder=True):  # step orders and operand orders
            assert chain_is_valid(prob.question, text), (prob.question, text)
        p = parse_question(prob.question)
        assert chain_is_valid(prob.question, format_solution(p, alt_format=True))
        canon = format_solution(p)
        steps = canon.split(";")
        # one number of one step changed: a wrong chain (the answer part kept right, as a lucky hit would be)
        i = rng.randrange(len(steps) - 1)
        nums = [m for m in re.finditer(r"\d+", steps[i].split("=", 2)[-1])]
        m = rng.choice(nums)
        start = len(steps[i]) - len(steps[i].split("=", 2)[-1]) + m.start()
        bad = steps[i][:start] + str(int(m.group()) + rng.choice((1, 2, 3))) + steps[i][start + len(m.group()):]
        wrong = ";".join(steps[:i] + [bad] + steps[i + 1:])
        assert not chain_is_valid(prob.question, wrong), wrong
        assert score(wrong, prob.answer, "flexible").reward == 1.0  # the outcome grader still rewards it
        assert not chain_is_valid(prob.question, ";".join(steps[1:]))  # a step missing
        assert not chain_is_valid(prob.question, ";".join(steps[:-1] + [f"####{int(prob.answer) + 1}"]))
        if len(steps) > 2:
            assert not chain_is_valid(prob.question, ";".join([steps[0]] + steps[:-1] + [steps[-1]]))  # repeated
    # a later step before the step it depends on
    q = "a=7,b=a*3,c=b+5;c?"
    assert chain_is_valid(q, "b=a*3=7*3=21;c=b+5=5+21=26;####26")
    assert not chain_is_valid(q, "c=b+5=21+5=26;b=a*3=7*3=21;####26")
    assert chain_is_valid(q, "b=a*3=3*7=21;c=b+5=21+5=26;answer: 26")
    assert not chain_is_valid("a=7,b=a-3;b?", "b=a-3=3-7=4;####4")  # - does not commute
    assert not chain_is_valid(q, "b=a*3=7*3=21;c=b+5=21+5=26;c=26;####26")
