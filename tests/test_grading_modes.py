"""Unit cases for each extraction rule and number normalisation (strict, flexible, custom_flexible, boxed).

Each case is (completion, gold, expected reason[, expected extracted]); near misses that must be wrong included.
"""

from fractions import Fraction

import pytest

from rlscale.errors import UserError
from rlscale.grading import GRADING_VERSION, MODES, GradeResult, score, score_batch
from rlscale.grading.extract import extract_anchor, scan_boxed
from rlscale.grading.numbers import canonical, numbers_equal, parse_plain_number

STRICT = [
    ("so 16-3-4=9 and 9*2=18\n#### 18", "18", "correct", "18"),
    ("b=a*3=7*3=21;c=b+5=21+5=26;####26", "26", "correct", "26"),  # lab format, no space
    ("b=a*3=7*3=21;c=b+5=21+5=26;answer: 26", "26", "no_answer", None),  # lab alternate format: not strict
    ("#### 1,000", "1000", "correct", "1000"),
    ("#### $1,234.00", "1234", "correct", "1234"),
    ("#### -5", "-5", "correct", "-5"),
    ("#### 5", "-5", "wrong", "5"),
    ("#### 18.0", "18", "correct", "18"),
    ("#### 18.5", "18", "wrong", "18.5"),
    ("#### 7\nQuestion: next one\n#### 9", "7", "correct", "7"),  # the first one counts
    ("#### 7\nQuestion: next one\n#### 9", "9", "wrong", "7"),
    ("The answer is 18", "18", "no_answer", None),
    ("####\nno number here", "3", "no_answer", None),
    ("#### 1{,}000", "1000", "correct", "1000"),
    ("#### 50%", "50", "correct", "50"),
    ("#### 19", "18", "wrong", "19"),
    ("#### 180", "18", "wrong", "180"),
    ("", "18", "no_answer", None),
]

FLEXIBLE = [
    ("b=a*3=7*3=21;c=b+5=21+5=26;answer: 26", "26", "correct", "26"),  # lab alternate format is read
    ("b=a*3=7*3=21;c=b+5=21+5=26;####26", "26", "correct", "26"),
    ("She makes 9 * 2 = $18 every day.", "18", "correct", "18"),
    ("The total is $1,234.50.", "1234.5", "correct", "1234.5"),
    ("so it is 1,000,000 people", "1000000", "correct", "1000000"),
    ("the result is -7", "-7", "correct", "-7"),
    ("21-5=16", "16", "correct", "16"),
    ("it ends with 21-5", "-5", "wrong", "5"),  # '-' after a digit is subtraction, not a sign
    ("x = -3.", "-3", "correct", "-3"),
    ("The value is .5", "0.5", "correct", "0.5"),
    ("I got 42.00", "42", "correct", "42"),
    ("I got 42.01", "42", "wrong", "42.01"),
    ("The answer is 25%", "25", "correct", "25"),
    ("#### 18\nQuestion: how many? 5", "18", "wrong", "5"),  # flexible takes the invented problem's number
    ("There are 3, 4, 5 of them", "5", "correct", "5"),
    ("it costs 1{,}500 dollars", "1500", "correct", "1500"),
    ("no digits at all", "3", "no_answer", None),
    ("H2O has 3 atoms", "3", "correct", "3"),
    ("step 12,34", "34", "correct", "34"),  # not a thousands group: two numbers
    ("value 10,0000", "0", "correct", "0"),  # 10 and 0000
    ("1000001", "1000000", "wrong", "1000001"),
]

CUSTOM = [
    ("work 3+4=7\n#### 7\nQuestion: Tom has 5 apples", "7", "correct", "7"),
    ("work 3+4=7 #### \nQuestion: Tom has 5 apples", "7", "correct", "7"),  # nothing after marker: last before
    ("b=a*3=7*3=21;c=b+5=21+5=26;answer: 26", "26", "correct", "26"),
    ("b=a*3=7*3=21;c=b+5=21+5=26;####26", "26", "correct", "26"),
    ("####: 12", "12", "correct", "12"),
    ("#### $1,200", "1200", "correct", "1200"),
    ("#### -4 and later 9", "-4", "correct", "-4"),
    ("first 5 then #### 6 #### 7", "6", "correct", "6"),
    ("first 5 then #### 6 #### 7", "7", "wrong", "6"),
    ("nothing", "1", "no_answer", None),
]

BOXED = [
    (r"so $\boxed{5}$.", "5", "correct", "5"),
    (r"\fbox{5}", "5", "correct", "5"),
    (r"\boxed{\frac{1}{2}}", r"\frac12", "correct", r"\frac{1}{2}"),
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", "correct", r"\dfrac{1}{2}"),
    (r"\boxed{0.5}", r"\frac{1}{2}", "correct", "0.5"),
    (r"\boxed{\{1, 2\}}", r"\{1,2\}", "correct", r"\{1, 2\}"),  # brace-matched, escaped braces ignored
    (r"\boxed{\boxed{7}}", "7", "correct", "7"),
    (r"\boxed{7} and later \boxed{7}", "7", "correct", "7"),  # the same answer twice is not hedging
    (r"\boxed{7} or maybe \boxed{8}", "8", "hedged", "8"),  # several different answers
    (r"\boxed{7} or maybe \boxed{8}", "7", "hedged", "8"),
    (r"\boxed{}", "7", "hedged", ""),
    (r"\boxed{7", "7", "hedged", None),  # unclosed
    (r"\boxed{15\frac{39}{40}} or \boxed{\frac{639}{40}}", r"\frac{639}{40}", "correct", r"\frac{639}{40}"),
    ("the answer is 7", "7", "no_answer", None),
    (r"\boxed 7", "7", "correct", "7"),
    (r"\boxed{8}", "7", "wrong", "8"),
    (r"\boxed{x^2}", "x^2", "correct", "x^2"),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", "correct", r"\text{Evelyn}"),
]


def _check(mode, completion, gold, reason, extracted):
    r = score(completion, gold, mode)
    assert r.reason == reason, (completion, gold, r)
    assert r.reward == (1.0 if reason == "correct" else 0.0)
    assert r.extracted == extracted


@pytest.mark.parametrize("completion,gold,reason,extracted", STRICT)
def test_strict(completion, gold, reason, extracted):
    _check("strict", completion, gold, reason, extracted)


@pytest.mark.parametrize("completion,gold,reason,extracted", FLEXIBLE)
def test_flexible(completion, gold, reason, extracted):
    _check("flexible", completion, gold, reason, extracted)


@pytest.mark.parametrize("completion,gold,reason,extracted", CUSTOM)
def test_custom_flexible(completion, gold, reason, extracted):
    _check("custom_flexible", completion, gold, reason, extracted)


@pytest.mark.parametrize("completion,gold,reason,extracted", BOXED)
def test_boxed(completion, gold, reason, extracted):
    _check("boxed", completion, gold, reason, extracted)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gold", [None, "", "   ", "not a number at all", True])
def test_unparseable_gold_is_none_never_zero(mode, gold):
    if mode in ("boxed", "math") and gold == "not a number at all":
        pytest.skip("text golds are valid in boxed/math modes")
    r = score(r"#### 5 \boxed{5} the answer is 5", gold, mode)
    assert r.reward is None and r.reason == "unparseable_gold"


def test_gold_forms_for_number_modes():
    assert score("#### 18", 18, "strict").reason == "correct"  # int gold from JSON
    assert score("#### 2.5", 2.5, "strict").reason == "correct"
    assert score("#### 18", "Janet sells 9 eggs\n#### 18", "strict").reason == "correct"  # full GSM8K solution
    assert score("#### 1234", "1,234", "flexible").reason == "correct"


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(UserError, match="valid modes: strict, flexible"):
        score("1", "1", "fuzzy")


def test_score_batch_matches_score_and_checks_lengths():
    comps = ["#### 1", "answer: 2", "3", "#### 4"]
    golds = ["1", "2", "4", "4"]
    for mode in ("strict", "flexible", "custom_flexible"):
        assert score_batch(comps, golds, mode) == [score(c, g, mode) for c, g in zip(comps, golds)]
    with pytest.raises(ValueError):
        score_batch(["1"], [], "strict")
    assert isinstance(score("1", "1", "flexible"), GradeResult) and GRADING_VERSION


def test_scan_boxed_skips_nested_and_flags_unclosed():
    scan = scan_boxed(r"a \boxed{1 + \boxed{2}} b \fbox{3} c \boxed{4")
    assert scan.answers == (r"1 + \boxed{2}", "3") and scan.unclosed


@pytest.mark.parametrize("text,answer", [
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("answer: 26", "26"),
    ("So the answer is 18 dollars.", "18"),
    ("The answer is 3.5.", "3.5"),
    ("#### 42", "42"),
    ("no anchor here 5", None),
    ("Let me answer the question. The answer = 7", "7"),
])
def test_answer_anchors(text, answer):
    assert extract_anchor(text) == answer


@pytest.mark.parametrize("text,value,percent", [
    ("1,000", Fraction(1000), False), ("1{,}000", Fraction(1000), False), ("10,\\!000", Fraction(10000), False),
    ("\\$18.00", Fraction(18), False), ("50\\%", Fraction(50), True), ("-\\frac{3}{4}", Fraction(-3, 4), False),
    ("\\frac{-3}{4}", Fraction(-3, 4), False), ("\\dfrac{3}{4}", Fraction(3, 4), False), ("\\frac34", Fraction(3, 4), False),
    ("3/4", Fraction(3, 4), False), ("2\\frac{1}{2}", Fraction(5, 2), False), ("30^\\circ", Fraction(30), False),
    ("30^{\\circ}", Fraction(30), False), ("10\\text{ cm}", Fraction(10), False), ("1.5\\times10^{-12}", Fraction(15, 10**13), False),
    ("6.02\\times 10^{23}", Fraction(602) * 10**21, False), ("1.5e-12", Fraction(15, 10**13), False), ("(5)", Fraction(5), False),
    ("\\text{5}", Fraction(5), False), ("+7", Fraction(7), False),
])
def test_parse_plain_number(text, value, percent):
    assert parse_plain_number(text) == (value, percent)


@pytest.mark.parametrize("text", ["1,2", "x", "\\sqrt{2}", "1,2,3", "(1,2)", "\\frac{1}{0}", "10^{1000}", "2e", "\\pi"])
def test_parse_plain_number_rejects_non_numbers(text):
    assert parse_plain_number(text) is None


def test_numbers_equal_exact_for_terminating_relative_otherwise():
    assert not numbers_equal(Fraction(1, 10**8), Fraction(2, 10**8))  # absolute rounding would call these equal
    assert not numbers_equal(Fraction(1000000), Fraction(1000001))
    assert numbers_equal(Fraction(1, 3), Fraction("0.333333"))
    assert numbers_equal(Fraction(1, 3), Fraction("0.3333333"))
    assert not numbers_equal(Fraction(1, 3), Fraction("0.333"))
    assert numbers_equal(Fraction(10**30, 3), Fraction("333333333333333333333333333333.3"))
    assert canonical(Fraction(37, 2)) == "18.5" and canonical(Fraction(-5)) == "-5" and canonical(Fraction(1, 3)) == "1/3"
