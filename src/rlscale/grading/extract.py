"""Answer extraction, one rule per grading mode. Pure string functions; linear time even on megabyte inputs.

- strict:          the first `#### <number>` (GSM8K convention; `answer: 26` is not read).
- flexible:        the last number in the completion.
- custom_flexible: truncate at the first `####`; the number right after it, else the last number before it.
- boxed:           every top-level `\\boxed{}`/`\\fbox{}` (brace-matched); the caller decides hedging.
- math:            boxed, else the last answer anchor (`answer is ...`, `answer: ...`, `#### ...`).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from rlscale.grading.numbers import (
    HASH_NUMBER_RE,
    LEADING_NUMBER_RE,
    MAX_DIGITS,
    NUMBER_IN_TEXT_RE,
    canonical,
    clean_text_numbers,
    token_to_fraction,
)

NumberAnswer = tuple[str, Fraction | None]  # (canonical text, exact value; None if too long to be an answer)


def _number(match: re.Match | None) -> NumberAnswer | None:
    if match is None:
        return None
    if len(match["num"]) > MAX_DIGITS:  # a digit flood: reported (truncated), never equal to a gold
        return (match["sign"] or "") + match["num"][:20] + "...", None
    value = token_to_fraction(match["sign"], match["num"])
    return canonical(value), value


def extract_strict(text: str) -> NumberAnswer | None:
    """The number after the first `####` that is followed by a number."""
    if "####" not in text:
        return None
    return _number(HASH_NUMBER_RE.search(clean_text_numbers(text)))


def _last_number(text: str) -> NumberAnswer | None:
    last = deque(NUMBER_IN_TEXT_RE.finditer(text), maxlen=1)
    return _number(last[0] if last else None)


def extract_flexible(text: str) -> NumberAnswer | None:
    """The last number anywhere in the completion."""
    return _last_number(clean_text_numbers(text))


def extract_custom_flexible(text: str) -> NumberAnswer | None:
    """Cut at the first `####`: the number right after the marker, else the last number before it."""
    text = clean_text_numbers(text)
    cut = text.find("####")
    if cut < 0:
        return _last_number(text)
    after = _number(LEADING_NUMBER_RE.match(text, cut + 4))
    return after if after is not None else _last_number(text[:cut])


# ---- boxed ------------------------------------------------------------------------------------------------------

_BOXED_START_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BRACE_RE = re.compile(r"\\[{}]|[{}]")
_BARE_TOKEN_RE = re.compile(r"[^\s${}\\]+")
_WHOLE_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(frozen=True)
class BoxedScan:
    """All top-level boxed contents in order, and whether the last `\\boxed{` was never closed."""

    answers: tuple[str, ...]
    unclosed: bool


def match_brace(text: str, open_index: int) -> int:
    """Index of the `}` closing the `{` at open_index (escaped `\\{` `\\}` ignored), or -1 if unclosed."""
    depth = 0
    for m in _BRACE_RE.finditer(text, open_index):
        token = m.group()
        if len(token) == 2:  # escaped brace
            continue
        depth += 1 if token == "{" else -1
        if depth == 0:
            return m.start()
    return -1


def _unwrap(content: str) -> str:
    """`\\boxed{\\boxed{5}}` -> `5`; strips whitespace."""
    content = content.strip()
    while True:
        m = _WHOLE_BOXED_RE.match(content)
        if not m or match_brace(content, m.end() - 1) != len(content) - 1:
            return content
        content = content[m.end() : -1].strip()


def scan_boxed(text: str) -> BoxedScan:
    """Find every top-level `\\boxed{...}` / `\\fbox{...}` (and bare `\\boxed 5`); nested ones are skipped over."""
    answers: list[str] = []
    pos = 0
    while True:
        m = _BOXED_START_RE.search(text, pos)
        if m is None:
            return BoxedScan(tuple(answers), False)
        j = m.end()
        if j < len(text) and text[j] == "{":
            end = match_brace(text, j)
            if end < 0:
                return BoxedScan(tuple(answers), True)
            answers.append(_unwrap(text[j + 1 : end]))
            pos = end + 1
        else:
            token = _BARE_TOKEN_RE.match(text, j)
            if token is None:
                answers.append("")
                pos = j
            else:
                answers.append(token.group())
                pos = token.end()


# ---- answer anchors (math mode, when nothing is boxed) ----------------------------------------------------------

_ANCHOR_RE = re.compile(r"(?i:\banswer(?:\s+is|\s*:|\s*=))\s*(?:\*\*)?\s*|####\s*")
_MATH_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|\n|I hope")
_NUMBER_THEN_WORDS_RE = re.compile(r"(-?\$?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z]")
MAX_ANCHOR_CHARS = 300


def extract_anchor(text: str) -> str | None:
    """The answer after the last `answer is` / `answer:` / `####` anchor: its first $...$ span if it starts with
    one, else the text up to the end of the sentence (a leading number followed by words is just the number)."""
    found = deque(_ANCHOR_RE.finditer(text), maxlen=1)
    if not found:
        return None
    last = found[0]
    rest = text[last.end() : last.end() + MAX_ANCHOR_CHARS]
    span = _MATH_SPAN_RE.match(rest)
    if span:
        answer = next(g for g in span.groups() if g is not None)
    else:
        end = _SENTENCE_END_RE.search(rest)
        answer = rest[: end.start()] if end else rest
        words = _NUMBER_THEN_WORDS_RE.match(answer)
        if words and "\\" not in answer:
            answer = words.group(1)
    answer = answer.strip().rstrip(".,;").strip()
    return answer or None


def extract_math(text: str) -> tuple[BoxedScan, str | None]:
    """Boxed answers if any `\\boxed`/`\\fbox` occurs, else (empty scan, anchor answer or None)."""
    scan = scan_boxed(text)
    if scan.answers or scan.unclosed:
        return scan, None
    return scan, extract_anchor(text)


# ---- letter (multiple choice, e.g. MMLU) ----------------------------------------------------------------------------
_LETTER_ANCHORS = (
    re.compile(r"answer\s*(?:is|:)?\s*[:\-]?\s*\(?\s*([A-D])\s*\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"\(([A-D])\)"),
)
_LETTER_START = re.compile(r"^\s*\(?([A-D])(?:[).:\s]|$)")


def extract_letter(completion: str) -> str | None:
    """A multiple-choice letter A-D: a letter opening the completion ("B", " (B)", "B. ..."), else the last
    "answer is X" / "Answer: X", else the last "(X)"; None if there is none."""
    m = _LETTER_START.match(completion)
    if m:
        return m.group(1)
    for pattern in _LETTER_ANCHORS:
        found = pattern.findall(completion)
        if found:
            return found[-1].upper()
    return None
