"""Verifiable answer grading: the RL reward and the evaluation metric are this one function.

    score(completion, gold, mode) -> GradeResult(reward, extracted, reason)
    score_batch(completions, golds, mode, workers=None) -> list[GradeResult]

Modes (MODES): strict, flexible, custom_flexible (numbers; pure Python), boxed (brace-matched `\\boxed{}`, string or
plain-number equality) math (boxed then answer anchors; symbolic equivalence via Math-Verify in killable
worker processes) and letter (multiple choice A-D).  Reasons: correct (1.0), wrong (0.0), no_answer (0.0), hedged (0.0: several different boxed
answers, or an empty/unclosed one), timeout (0.0: the symbolic check ran out of time or memory), unparseable_gold
(None: cannot be scored; never silently 0).  Answers that are obvious bombs (power towers, huge factorials, >1000
characters, Python payloads) never reach sympy and grade `wrong`; such a gold is `unparseable_gold`.
Records carry GRADING_VERSION; bump it whenever a change can flip a grade.  Tests: tests/test_grading_*.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from rlscale.errors import UserError
from rlscale.grading import extract, safety
from rlscale.grading.equivalence import WORKER_FUNC, fast_compare, normalize_answer, same_answer
from rlscale.grading.numbers import (
    HASH_NUMBER_RE,
    MAX_DIGITS,
    clean_text_numbers,
    numbers_equal,
    parse_plain_number,
    token_to_fraction,
)

GRADING_VERSION = "1"
MODES = ("strict", "flexible", "custom_flexible", "boxed", "math", "letter")
REASONS = ("correct", "wrong", "no_answer", "hedged", "unparseable_gold", "timeout")
DEFAULT_TIMEOUT_S = 3.0  # hard limit per symbolic comparison (worker killed after this)
MAX_DISTINCT_BOXED = 8  # more distinct boxed answers than this is hedging without further checks

_NUMBER_EXTRACTORS = {
    "strict": extract.extract_strict,
    "flexible": extract.extract_flexible,
    "custom_flexible": extract.extract_custom_flexible,
}


@dataclass(frozen=True)
class GradeResult:
    """reward: 1.0/0.0, or None when the gold cannot be scored; extracted: the answer read from the completion."""

    reward: float | None
    extracted: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"extracted": self.extracted, "reward": self.reward, "reason": self.reason}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"unknown grading mode '{mode}'; valid modes: {', '.join(MODES)}")
    return mode


def _result(reason: str, extracted: str | None) -> GradeResult:
    reward = {"correct": 1.0, "unparseable_gold": None}.get(reason, 0.0)
    return GradeResult(reward, extracted, reason)


def _gold_text(gold) -> str | None:
    if gold is None or isinstance(gold, bool):
        return None
    if isinstance(gold, (int, float, Fraction)):
        return str(gold)
    return gold if isinstance(gold, str) else None


# ---- golds (cached: in RL the same gold is graded once per rollout) ----------------------------------------------


@lru_cache(maxsize=65536)
def _gold_number(gold: str) -> Fraction | None:
    """A number-mode gold: a plain number, or the `#### n` of a full GSM8K solution."""
    if "####" in gold:
        m = HASH_NUMBER_RE.search(clean_text_numbers(gold))
        return token_to_fraction(m["sign"], m["num"]) if m and len(m["num"]) <= MAX_DIGITS else None
    parsed = parse_plain_number(gold.strip())
    return parsed[0] if parsed else None


@lru_cache(maxsize=65536)
def _gold_answer(gold: str) -> str | None:
    """A boxed/math-mode gold: its last boxed content if it has one, else the text; None if empty or a bomb."""
    scan = extract.scan_boxed(gold)
    text = scan.answers[-1] if scan.answers else gold.strip()
    if not normalize_answer(text) or safety.check_answer(text):
        return None
    return text


# ---- planning: everything except the symbolic comparisons -------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    """An item waiting for symbolic checks: candidates[i] is decided already (bool) or needs a job (None)."""

    extracted: str
    candidates: tuple[str, ...]
    decided: tuple[str | None, ...]
    gold: str


def _plan(completion: str, gold, mode: str) -> GradeResult | _Pending:
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    gold_text = _gold_text(gold)
    if mode in _NUMBER_EXTRACTORS:
        gold_value = _gold_number(gold_text) if gold_text is not None else None
        found = _NUMBER_EXTRACTORS[mode](completion)
        extracted = found[0] if found else None
        if gold_value is None:
            return _result("unparseable_gold", extracted)
        if found is None:
            return _result("no_answer", None)
        correct = found[1] is not None and numbers_equal(found[1], gold_value)
        return _result("correct" if correct else "wrong", extracted)

    if mode == "letter":
        return _plan_letter(completion, gold_text)
    gold_answer = _gold_answer(gold_text) if gold_text is not None else None
    if mode == "boxed":
        return _plan_boxed(completion, gold_answer)
    return _plan_math(completion, gold_answer)


def _plan_letter(completion: str, gold: str | None) -> GradeResult:
    """Multiple choice: the gold is one letter A-D; see extract.extract_letter for what counts as an answer."""
    g = (gold or "").strip().upper()
    if len(g) != 1 or g not in "ABCD":
        return _result("unparseable_gold", None)
    got = extract.extract_letter(completion)
    if got is None:
        return _result("no_answer", None)
    return _result("correct" if got == g else "wrong", got)


def _distinct(answers: Sequence[str]) -> list[str] | None:
    """Distinct answers (last occurrence order kept); None if there are too many to be anything but hedging."""
    by_text: dict[str, str] = {}
    for a in answers:
        by_text[normalize_answer(a)] = a
    if len(by_text) > MAX_DISTINCT_BOXED:
        return None
    distinct: list[str] = []
    for a in reversed(list(by_text.values())):
        if not any(same_answer(a, b) for b in distinct):
            distinct.append(a)
    return distinct[::-1]


def _plan_boxed(completion: str, gold: str | None) -> GradeResult:
    scan = extract.scan_boxed(completion)
    extracted = scan.answers[-1] if scan.answers else None
    if gold is None:
        return _result("unparseable_gold", extracted)
    if scan.unclosed or any(not normalize_answer(a) for a in scan.answers):
        return _result("hedged", extracted)
    if not scan.answers:
        return _result("no_answer", None)
    distinct = _distinct(scan.answers)
    if distinct is None or len(distinct) > 1:
        return _result("hedged", extracted)
    return _result("correct" if fast_compare(extracted, gold) else "wrong", extracted)


def _plan_math(completion: str, gold: str | None) -> GradeResult | _Pending:
    scan, anchor = extract.extract_math(completion)
    if scan.answers or scan.unclosed:
        extracted = scan.answers[-1] if scan.answers else None
        if gold is None:
            return _result("unparseable_gold", extracted)
        if scan.unclosed or any(not normalize_answer(a) for a in scan.answers):
            return _result("hedged", extracted)
        candidates = _distinct(scan.answers)
        if candidates is None:
            return _result("hedged", extracted)
    else:
        extracted = anchor
        if gold is None:
            return _result("unparseable_gold", extracted)
        if anchor is None:
            return _result("no_answer", None)
        candidates = [anchor]
    decided: list[str | None] = []
    for c in candidates:
        if safety.check_answer(c):
            decided.append("wrong")  # a bomb cannot equal a gold that passed the same screen
            continue
        fast = fast_compare(c, gold)
        decided.append(None if fast is None else ("correct" if fast else "wrong"))
    if all(d is not None for d in decided):
        return _combine(decided, extracted)
    return _Pending(extracted, tuple(candidates), tuple(decided), gold)


def _combine(outcomes: Sequence[str], extracted: str | None) -> GradeResult:
    outcomes = ["wrong" if o == safety.ERROR else o for o in outcomes]
    if "unparseable_gold" in outcomes:
        return _result("unparseable_gold", extracted)
    if len(outcomes) == 1:
        return _result(outcomes[0], extracted)
    if all(o == "correct" for o in outcomes):
        return _result("correct", extracted)
    if "wrong" not in outcomes and safety.TIMEOUT in outcomes:
        return _result("timeout", extracted)
    return _result("hedged", extracted)


# ---- public API ---------------------------------------------------------------------------------------------------


def _pool(workers: int | None) -> safety.SymbolicPool:
    return safety.get_pool(WORKER_FUNC, workers or safety.default_workers())


def score(completion: str, gold, mode: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> GradeResult:
    """Grade one completion against its gold answer in `mode` (see MODES).  Uses the shared worker pool (all
    cores, so a warm spare is ready while a killed worker restarts)."""
    return score_batch([completion], [gold], mode, timeout_s=timeout_s)[0]


def score_batch(
    completions: Sequence[str],
    golds: Sequence,
    mode: str,
    workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[GradeResult]:
    """Grade many completions; symbolic comparisons (math mode) run on `workers` processes (default: all cores),
    each under a hard `timeout_s`.  Identical (answer, gold) comparisons are done once."""
    check_mode(mode)
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
    plans = [_plan(c, g, mode) for c, g in zip(completions, golds)]
    job_index: dict[tuple[str, str], int] = {}
    for plan in plans:
        if isinstance(plan, _Pending):
            for cand, dec in zip(plan.candidates, plan.decided):
                if dec is None:
                    job_index.setdefault((cand, plan.gold), len(job_index))
    outcomes = _pool(workers).run(list(job_index), timeout_s) if job_index else []
    results = []
    for plan in plans:
        if isinstance(plan, GradeResult):
            results.append(plan)
            continue
        resolved = [
            dec if dec is not None else outcomes[job_index[(cand, plan.gold)]]
            for cand, dec in zip(plan.candidates, plan.decided)
        ]
        results.append(_combine(resolved, plan.extracted))
    return results


__all__ = ["GRADING_VERSION", "MODES", "REASONS", "GradeResult", "check_mode", "score", "score_batch"]
