"""Answer equivalence for the `boxed` and `math` modes.

Three layers, cheapest first:
1. `normalize_answer` string equality (spacing, `\\left`/`\\right`, `\\dfrac`, `$`, trailing period).
2. `fast_compare`: both sides plain numbers -> exact `Fraction` comparison in pure Python (numbers.py), including
   percent, units, degrees, thousands separators and `x = 3` vs `3`; no sympy.
3. `symbolic_compare` (runs inside a worker process, see safety.py): Math-Verify 0.9.0 `parse` with LaTeX
   extraction only (its `ExprExtractionConfig` calls sympy's eval-based `parse_expr`, so it is never used) on
   `\\boxed{answer}` for both sides, then `verify` per pair; Math-Verify's own signal timeouts are switched off
   (the worker's timer and the parent's kill do that job).  Parsed golds are cached per worker.  When a float is
   involved, a relative-tolerance check replaces Math-Verify's absolute 6-decimal rounding (`1e-8` is not `2e-8`).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from rlscale.grading.numbers import parse_plain_number, plain_numbers_equal

REL_TOL = 1e-6

_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\\displaystyle")
_SPACE_RE = re.compile(r"\\[,;:! ]|\\q?quad(?![A-Za-z])|~|\s+")
_ASSIGN_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?=(?!=)(.+)$")


def normalize_answer(text: str) -> str:
    """Canonical spelling for string comparison; never changes meaning (units are kept here)."""
    s = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = s.replace("\\$", "").replace("$", "").replace("^{\\circ}", "^\\circ")
    s = _SPACE_RE.sub("", _LEFT_RIGHT_RE.sub("", s))
    return s.rstrip(".")


def strip_assignment(text: str) -> str:
    """`x=3` -> `3` (one variable on the left, no `==`); anything else unchanged."""
    m = _ASSIGN_RE.match(text)
    return m.group(1) if m and "=" not in m.group(1) else text


def fast_compare(pred: str, gold: str) -> bool | None:
    """True/False when decidable without sympy (same normalised string, or both plain numbers), else None."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    if p == g:
        return True
    if "=" in p and "=" not in g:
        p = strip_assignment(p)
    elif "=" in g and "=" not in p:
        g = strip_assignment(g)
    if p == g:
        return True
    p_num = parse_plain_number(p)
    if p_num is None:
        return None
    g_num = parse_plain_number(g)
    if g_num is None:
        return None
    return plain_numbers_equal(p_num, g_num)


def same_answer(a: str, b: str) -> bool:
    """Two extracted answers are the same (for hedging): equal normalised strings or equal plain numbers."""
    return fast_compare(a, b) is True


# ---- symbolic path (worker side) ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _latex_config():
    from math_verify import LatexExtractionConfig

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    return [LatexExtractionConfig(boxed_match_priority=0)]


def parse_boxed(answer: str) -> tuple:
    """Math-Verify parse of `\\boxed{answer}` (LaTeX extraction only, no eval); () if nothing parsed."""
    from math_verify import parse

    return tuple(parse("\\boxed{" + answer + "}", extraction_config=_latex_config(), parsing_timeout=None))


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
    return parse_boxed(gold)


@lru_cache(maxsize=4096)
def _parse_pred(pred: str) -> tuple:  # RL samples repeat the same few answers per problem
    return parse_boxed(pred)


def _float_consistent(gold, pred) -> bool:
    """False when a float is involved and the values differ by more than REL_TOL relative (else True)."""
    from sympy import Basic, Float, UnevaluatedExpr

    if not (isinstance(gold, Basic) and isinstance(pred, Basic)):
        return True
    if not (gold.has(Float) or pred.has(Float)) or gold.has(UnevaluatedExpr) or pred.has(UnevaluatedExpr):
        return True
    try:
        if not (gold.is_number and pred.is_number):
            return True
        g, p = complex(gold.evalf(30)), complex(pred.evalf(30))
    except (TypeError, ValueError, ArithmeticError, AttributeError):
        return True
    scale = max(abs(g), abs(p))
    if scale == 0 or scale != scale or scale == float("inf"):
        return True
    return abs(g - p) <= REL_TOL * scale * (1 + 1e-9)


def symbolic_compare(pred: str, gold: str) -> str:
    """'correct' | 'wrong' | 'unparseable_gold' by Math-Verify (call inside a worker with a time limit)."""
    from math_verify import verify

    golds = _parse_gold(gold)
    if not golds:
        return "unparseable_gold"
    try:
        preds = _parse_pred(pred)
    except Exception:
        return "wrong"
    for g in golds:
        for p in preds:
            try:
                if verify(g, p, timeout_seconds=None) and _float_consistent(g, p):
                    return "correct"
            except Exception:
                continue
    return "wrong"


def warm_up() -> None:
    """Called once by each worker before it reports ready: loads sympy, Math-Verify and the LaTeX grammar."""
    symbolic_compare("\\frac{1}{2}", "0.5")


WORKER_FUNC = "rlscale.grading.equivalence:symbolic_compare"
