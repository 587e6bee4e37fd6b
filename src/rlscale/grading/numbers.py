"""Number normalisation and the fast pure-Python numeric path (no sympy, no eval).

Numbers are read into exact `Fraction`s: commas and LaTeX thin spaces (`{,}`, `\\,`, `,\\!`) as thousands
separators, `$`/`\\$`, `%`, degrees, trailing units in `\\text{}`, trailing `.0`/`.00`, negative signs, `\\frac{a}{b}`,
`a/b`, mixed numbers `2\\frac{1}{2}`, and scientific notation (`1.5\\times10^{-12}`, `1.5e-12`).

Equality (`numbers_equal`): exact when both values have a terminating decimal expansion (so `1000000 != 1000001`
and `1e-8 != 2e-8`, which absolute-rounding graders get wrong); otherwise (e.g. gold 1/3 vs `0.333333`) a relative
tolerance REL_TOL of the larger magnitude.
"""

from __future__ import annotations

import re
from fractions import Fraction

REL_TOL = Fraction(1, 10**6)
MAX_EXPONENT = 400  # |k| in 10^k accepted on the fast path; larger goes to the bomb checks / symbolic path
MAX_DIGITS = 400  # longer digit strings are not read as plain numbers

# One number token inside free text.  A '-' counts as a sign only when it does not follow a word character or a
# closing bracket (so `21-5` reads 21 and 5, `=-5` reads -5).  Thousands groups must be exactly 3 digits.
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
NUMBER_IN_TEXT_RE = re.compile(r"(?<![\w.)\]}])(?:(?P<sign>-)\s?)?(?:\\?\$\s?)?(?P<num>" + _UNSIGNED + r")")
# `#### <number>` (GSM8K); the lab writes `####26` without a space.
HASH_NUMBER_RE = re.compile(r"####\s*(?:(?P<sign>-)\s?)?(?:\\?\$\s?)?(?P<num>" + _UNSIGNED + r")")
LEADING_NUMBER_RE = re.compile(r"\s*[:=]?\s*(?:(?P<sign>-)\s?)?(?:\\?\$\s?)?(?P<num>" + _UNSIGNED + r")")

def clean_text_numbers(text: str) -> str:
    """Turn LaTeX thousands separators (`1{,}000`, `1,\\!000`, `1\\,000`) into plain commas / nothing."""
    if "\\" not in text and "{," not in text:
        return text
    text = text.replace("{,}", ",").replace(",\\!", ",")
    return re.sub(r"(?<=\d)\\,(?=\d{3})", ",", text).replace("\\!", "")


def token_to_fraction(sign: str | None, num: str) -> Fraction:
    """Exact value of a matched number token (commas dropped)."""
    value = Fraction(num.replace(",", ""))
    return -value if sign else value


def canonical(value: Fraction) -> str:
    """Short canonical string: integers without `.0`, terminating decimals without trailing zeros, else `p/q`."""
    if value.denominator == 1:
        return str(value.numerator)
    if is_terminating(value):
        digits = _decimal_places(value.denominator)
        text = f"{abs(value.numerator) * 10**digits // value.denominator:0{digits + 1}d}"
        text = f"{text[:-digits]}.{text[-digits:]}".rstrip("0").rstrip(".")
        return ("-" if value < 0 else "") + text
    return f"{value.numerator}/{value.denominator}"


def _decimal_places(denominator: int) -> int:
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    return max(twos, fives)


def is_terminating(value: Fraction) -> bool:
    """True if value has a finite decimal expansion (denominator of the form 2^a 5^b)."""
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def numbers_equal(a: Fraction, b: Fraction, rel_tol: Fraction = REL_TOL) -> bool:
    """a == b exactly if both terminate; else |a - b| <= rel_tol * max(|a|, |b|) (exact rational arithmetic)."""
    if a == b:
        return True
    if is_terminating(a) and is_terminating(b):
        return False
    return abs(a - b) <= rel_tol * max(abs(a), abs(b))


# ---- plain-number reading of a whole (extracted) answer string -------------------------------------------------

_SPACE_CMDS_RE = re.compile(r"\\[,;:! ]|~|\\quad|\\qquad|\s+")
_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}$")
_UNIT_RE = re.compile(r"(?<=[\d}.])\\(?:text|mbox|mathrm|textrm|operatorname)\{[^{}]*\}(?:\^\{?\d\}?)?$")
_DEGREE_RE = re.compile(r"(?:\^\{?\\circ\}?|\\circ|°|\\degree)$")
_INT = r"\d+"
_DEC = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_RE = re.compile(rf"(?P<sign>-?)(?P<num>{_DEC})")
_FRAC_RE = re.compile(rf"(?P<sign>-?)\\frac(?:\{{(?P<s1>-?)(?P<a>{_INT})\}}\{{(?P<s2>-?)(?P<b>{_INT})\}}|(?P<a1>\d)(?P<b1>\d))")
_SLASH_RE = re.compile(rf"(?P<sign>-?)(?P<a>{_INT})/(?P<b>{_INT})")
_MIXED_RE = re.compile(rf"(?P<sign>-?)(?P<w>{_INT})\\frac\{{(?P<a>{_INT})\}}\{{(?P<b>{_INT})\}}")
_SCI_RE = re.compile(rf"(?P<sign>-?)(?:(?P<m>{_DEC})(?:\\times|\\cdot|\*))?10\^(?:\{{(?P<e1>[-+]?{_INT})\}}|(?P<e2>\d))")
_ENOT_RE = re.compile(rf"(?P<sign>-?)(?P<m>{_DEC})[eE](?P<e>[-+]{_INT}|{_INT}(?=$))")


def strip_decorations(text: str) -> tuple[str, bool]:
    """Remove spacing, `$`, `\\left/\\right`, trailing units, degrees and `%`; returns (text, had_percent)."""
    s = text.replace("\\$", "").replace("$", "").replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",").replace(",\\!", ",")
    s = _SPACE_CMDS_RE.sub("", s).rstrip(".")
    m = _WRAP_RE.match(s)
    if m:
        s = m.group(1)
    percent = False
    for _ in range(3):  # e.g. `30^\circ\text{ F}` or `5\%\text{ }`
        before = s
        s = _UNIT_RE.sub("", s)
        s = _DEGREE_RE.sub("", s)
        if s.endswith("\\%") or s.endswith("%"):
            s = s[:-2] if s.endswith("\\%") else s[:-1]
            percent = True
        if s == before:
            break
    return s, percent


def parse_plain_number(text: str) -> tuple[Fraction, bool] | None:
    """Read a whole answer that is a plain number; returns (value, had_percent) or None if it is anything else."""
    if len(text) > 4 * MAX_DIGITS:
        return None
    s, percent = strip_decorations(text)
    if not s or len(s) > MAX_DIGITS:
        return None
    if s.startswith("+"):
        s = s[1:]
    if "," in s:
        if not re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
            return None  # `1,2` is a tuple/set, not a number
        s = s.replace(",", "")
    if s.startswith("(") and s.endswith(")") and s.count("(") == 1:
        s = s[1:-1]
    value = _read_number(s)
    return None if value is None else (value, percent)


def _read_number(s: str) -> Fraction | None:
    m = _PLAIN_RE.fullmatch(s)
    if m:
        return token_to_fraction(m["sign"], m["num"])
    m = _FRAC_RE.fullmatch(s)
    if m:
        a, b = (int(m["a"]), int(m["b"])) if m["a"] else (int(m["a1"]), int(m["b1"]))
        if b == 0:
            return None
        negative = (m["sign"] == "-") ^ (m["s1"] == "-") ^ (m["s2"] == "-")
        return -Fraction(a, b) if negative else Fraction(a, b)
    m = _MIXED_RE.fullmatch(s)
    if m:
        b = int(m["b"])
        if b == 0:
            return None
        value = int(m["w"]) + Fraction(int(m["a"]), b)
        return -value if m["sign"] else value
    m = _SLASH_RE.fullmatch(s)
    if m:
        b = int(m["b"])
        if b == 0:
            return None
        return -Fraction(int(m["a"]), b) if m["sign"] else Fraction(int(m["a"]), b)
    m = _SCI_RE.fullmatch(s) or _ENOT_RE.fullmatch(s)
    if m:
        exponent = int(m.groupdict().get("e1") or m.groupdict().get("e2") or m.groupdict().get("e"))
        if abs(exponent) > MAX_EXPONENT:
            return None
        mantissa = Fraction(m["m"]) if m["m"] else Fraction(1)
        value = mantissa * Fraction(10) ** exponent
        return -value if m["sign"] else value
    return None


def plain_numbers_equal(pred: tuple[Fraction, bool], gold: tuple[Fraction, bool]) -> bool:
    """Equality of two parsed plain numbers; a side written with % also matches as x/100 (`50%` = `50` = `0.5`)."""
    pv, pp = pred
    gv, gp = gold
    preds = (pv, pv / 100) if pp else (pv,)
    golds = (gv, gv / 100) if gp else (gv,)
    return any(numbers_equal(p, g) for p in preds for g in golds)
