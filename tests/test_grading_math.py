"""`math` mode: extraction (boxed, then anchors) and equivalence per category, with near misses that must be wrong.

Symbolic cases run in the worker processes (first use starts them, ~1-2 s)."""

import pytest

from rlscale.grading import score, score_batch
from rlscale.grading.equivalence import fast_compare, normalize_answer, strip_assignment

# (answer as the model writes it inside \boxed{}, gold, correct?)
EQUIV = [
    # fractions vs decimals, \dfrac/\frac
    (r"0.5", r"\frac{1}{2}", True), (r"\dfrac{1}{2}", r"\frac12", True), (r"\frac{2}{4}", r"\frac{1}{2}", True),
    (r"0.3333333", r"\frac{1}{3}", True), (r"0.33", r"\frac{1}{3}", False), (r"\frac{1}{3}", r"\frac{1}{4}", False),
    (r"-\frac{1}{2}", r"\frac{-1}{2}", True), (r"\frac{1}{2}", r"-\frac{1}{2}", False),
    # radicals
    (r"\sqrt{8}", r"2\sqrt{2}", True), (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}", True),
    (r"\sqrt{3}", r"3", False), (r"2\sqrt{3}", r"3\sqrt{2}", False), (r"0.7071068", r"\frac{\sqrt{2}}{2}", True),
    # pi
    (r"\frac{4\pi}{2}", r"2\pi", True), (r"2\pi", r"\pi", False), (r"3.14", r"\pi", False), (r"6.28318531", r"2\pi", True),
    # percent
    (r"50\%", r"50", True), (r"50\%", r"0.5", True), (r"0.5", r"50\%", True), (r"5\%", r"0.5", False),
    # units and \text{}
    (r"10\text{ cm}", r"10", True), (r"10\text{ inches}", r"10\text{ inches}", True), (r"11\text{ cm}", r"10", False),
    (r"\$18.00", r"18", True), (r"\text{Evelyn}", r"\text{Evelyn}", True), (r"\text{Bob}", r"\text{Evelyn}", False),
    # degrees
    (r"30^\circ", r"30", True), (r"30^{\circ}", r"30^\circ", True), (r"60^\circ", r"30^\circ", False),
    # intervals, open/closed ends
    (r"(1,2]", r"(1,2]", True), (r"\left[1, 2\right)", r"[1,2)", True), (r"(1,2)", r"(1,2]", False),
    (r"[1,2]", r"(1,2)", False), (r"(-\infty, 3)", r"(-\infty,3)", True), (r"(-\infty, 3]", r"(-\infty,3)", False),
    (r"(0,9) \cup (9,36)", r"(0,9)\cup(9,36)", True), (r"(0,9) \cup (9,37)", r"(0,9)\cup(9,36)", False),
    # tuples and sets
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True), (r"(2, 1)", r"(1, 2)", False),
    (r"\{2, 1\}", r"\{1, 2\}", True), (r"\{1, 3\}", r"\{1, 2\}", False), (r"2, 1", r"1, 2", True),
    # matrices
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix} 1 \\ 3 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", False),
    (r"\begin{pmatrix} 2/4 & 0 \\ 0 & 1 \end{pmatrix}", r"\begin{pmatrix} \frac12 & 0 \\ 0 & 1 \end{pmatrix}", True),
    # equations x=3 vs 3
    (r"x=3", r"3", True), (r"3", r"x = 3", True), (r"x=4", r"3", False), (r"y = 2x + 1", r"2x+1", True),
    # algebra
    (r"(x+1)^2", r"x^2+2x+1", True), (r"(x+1)^2", r"x^2+1", False),
    # very small / large: relative, not absolute, tolerance
    (r"0.00000002", r"0.00000001", False), (r"2\times10^{-8}", r"1\times10^{-8}", False),
    (r"1.5\times10^{-12}", r"1.5 \times 10^{-12}", True), (r"1000001", r"1000000", False),
    (r"6.02\times10^{23}", r"602000000000000000000000", True), (r"6.03\times10^{23}", r"6.02\times10^{23}", False),
    # thousands separators, thin spaces, trailing zeros, mixed numbers
    (r"10{,}000", r"10,\!000", True), (r"10,000", r"10000", True), (r"18.00", r"18", True),
    (r"2\frac{1}{2}", r"\frac{5}{2}", True), (r"2\frac{1}{2}", r"\frac{3}{2}", False),
    # complex numbers, bases and text answers
    (r"1+274i", r"1+274i", True), (r"1-274i", r"1+274i", False), (r"\text{(C)}", r"\text{(C)}", True),
]


@pytest.mark.parametrize("answer,gold,correct", EQUIV)
def test_equivalence_categories(answer, gold, correct):
    r = score(f"Work... so the result is $\\boxed{{{answer}}}$.", gold, "math")
    assert r.reason == ("correct" if correct else "wrong"), (answer, gold, r)
    assert r.extracted == answer


def test_batch_equals_single_and_runs_in_parallel():
    comps = [f"\\boxed{{{a}}}" for a, _, _ in EQUIV]
    golds = [g for _, g, _ in EQUIV]
    results = score_batch(comps, golds, "math", workers=2)
    assert [r.reason == "correct" for r in results] == [c for _, _, c in EQUIV]


@pytest.mark.parametrize("completion,gold,reason,extracted", [
    ("The answer is $\\frac{1}{2}$.", "0.5", "correct", "\\frac{1}{2}"),
    ("Final Answer: The final answer is $\\sqrt{2}$. I hope it is correct.", "\\sqrt{2}", "correct", "\\sqrt{2}"),
    ("answer: 26", "26", "correct", "26"),
    ("so the answer is 18 dollars.", "18", "correct", "18"),
    ("I computed 3+4=7 and stopped.", "7", "no_answer", None),  # math mode does not guess the last number
    ("The answer is 5 but \\boxed{6}", "5", "wrong", "6"),  # boxed wins over anchors
    ("\\boxed{1} hmm \\boxed{2}", "2", "hedged", "2"),
    ("\\boxed{\\frac{1}{2}} i.e. \\boxed{0.5}", "\\frac12", "correct", "0.5"),  # the same value written twice
    ("\\boxed{}", "0", "hedged", ""),
    ("\\boxed{\\frac{1}{2}", "0.5", "hedged", None),
    ("#### 42", "42", "correct", "42"),
    ("so $x = \\boxed{3}$", "x=3", "correct", "3"),
])
def test_math_extraction(completion, gold, reason, extracted):
    r = score(completion, gold, "math")
    assert (r.reason, r.extracted) == (reason, extracted)


def test_gold_is_boxed_or_full_solution():
    assert score("\\boxed{5}", "so we get \\boxed{5}.", "math").reason == "correct"
    assert score("\\boxed{5}", "so we get \\boxed{6}.", "math").reason == "wrong"


def test_fast_path_decides_plain_numbers_without_sympy():
    assert fast_compare("1{,}000", "1000") is True
    assert fast_compare("\\frac{3}{6}", "0.5") is True
    assert fast_compare("x=3", "3") is True
    assert fast_compare("0.00000002", "1e-8") is False
    assert fast_compare("\\sqrt{2}", "1.414") is None  # needs the symbolic path
    assert normalize_answer("\\left( 1, \\dfrac{1}{2} \\right).") == "(1,\\frac{1}{2})"
    assert strip_assignment("x=3") == "3" and strip_assignment("x==3") == "x==3" and strip_assignment("3") == "3"
