"""Pathological inputs: every item grades within 5 s, executes nothing, and returns a reason code.

Also checks the hard time limit itself: a job stuck in C code (where no signal handler can run) is killed."""

import time

import pytest

from rlscale.grading import MODES, REASONS, score, score_batch
from rlscale.grading.safety import TIMEOUT, SymbolicPool, check_answer

MARKER = "/tmp/rlscale_grading_pwned"
PATHOLOGICAL = {
    "power tower": r"\boxed{2^{2^{2^{2^{2^{2}}}}}}",
    "9^9^9": r"\boxed{9^{9^{9}}}",
    "10^10^10": r"the answer is \boxed{10^{10^{10}}}",
    "chained powers": r"\boxed{10^{10}^{10}^{10}}",
    "plain ** tower": r"The answer is 10**10**10",
    "huge factorial": r"\boxed{100000000!}",
    "factorial of a power": r"\boxed{(10^{10})!}",
    "1 MB digits": "1" * 1_000_000,
    "1 MB inside boxed": r"\boxed{" + "1+" * 500_000 + "1}",
    "1 MB text then answer": "a " * 500_000 + r"\boxed{5}",
    "10k nested braces": r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "10k unclosed braces": r"\boxed{" + "{" * 10_000,
    "100k boxed": r"\boxed{1} \boxed{2}" * 50_000,
    "import payload": r"\boxed{__import__('os').system('touch " + MARKER + "')}",
    "import payload as anchor": "The answer is __import__('os').system('touch " + MARKER + "')",
    "eval payload": r"\boxed{eval(\"open('" + MARKER + "','w')\")}",
    "deep sqrt": r"\boxed{" + r"\sqrt{" * 500 + "2" + "}" * 500 + "}",
    "huge exponent": r"\boxed{2^{1000000}}",
    "5000-digit integer": r"\boxed{" + "9" * 5000 + "}",
    "hard integral": r"\boxed{\int_0^{\infty} e^{-x^2} \sin(x^{100}) dx}",
    "many nested fractions": r"\boxed{" + r"\frac{1}{1+" * 30 + "1" + "}" * 30 + "}",
}


@pytest.fixture(scope="module", autouse=True)
def warm_workers():
    """Start the symbolic workers once (a one-time start-up per process, not part of any item's grading time)."""
    assert score(r"\boxed{\sqrt{4}}", "2", "math").reason == "correct"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_item_grades_fast_with_a_reason(name, mode):
    t0 = time.monotonic()
    gold = "B" if mode == "letter" else "5"  # a gold each mode can score
    r = score(PATHOLOGICAL[name], gold, mode)
    assert time.monotonic() - t0 < 5.0
    assert r.reason in REASONS
    assert r.reward in (0.0, 1.0)


def test_payloads_execute_nothing():
    import os

    for name in ("import payload", "import payload as anchor", "eval payload"):
        for mode in MODES:
            score(PATHOLOGICAL[name], "5", mode)
    assert not os.path.exists(MARKER)


def test_pathological_batch_and_golds():
    items = list(PATHOLOGICAL.values())
    t0 = time.monotonic()
    results = score_batch(items, ["5"] * len(items), "math", workers=2)
    assert time.monotonic() - t0 < 5.0 * len(items)
    assert all(r.reason in REASONS for r in results)
    assert results[list(PATHOLOGICAL).index("1 MB text then answer")].reason == "correct"
    # a bomb as the gold cannot be scored
    assert score(r"\boxed{5}", r"10^{10^{10}}", "math").reason == "unparseable_gold"
    assert score(r"\boxed{5}", "9" * 5000, "strict").reason == "unparseable_gold"


@pytest.mark.parametrize("text,rejected", [
    (r"2^{2^{2^{2^{2}}}}", True), (r"2^{2^{2^{2}}}", False), (r"2^{2^{3}}", False), (r"10^{99999}!", True), (r"2^{2005}", False), (r"10^{10^{10}}", True),
    (r"10^{100000}", False), (r"10^{1000000}", True), (r"100!", False), (r"1000000!", True), (r"x^2+1", False),
    ("a" * 2000, True), ("__import__('os')", True), (r"\frac{\sqrt{2}}{2}", False), ("{" * 50 + "}" * 50, True),
])
def test_check_answer_screen(text, rejected):
    assert (check_answer(text) is not None) == rejected


def test_hard_kill_of_a_job_stuck_in_c_code():
    # pbkdf2 with 10^9 iterations loops in C without checking signals: only killing the process stops it.
    import hashlib

    pool = SymbolicPool("hashlib:pbkdf2_hmac", workers=1)
    try:
        expected = hashlib.pbkdf2_hmac("sha256", b"x", b"y", 1)
        assert pool.run([("sha256", b"x", b"y", 1)], timeout_s=60.0) == [expected]  # worker started and works
        t0 = time.monotonic()
        results = pool.run([("sha256", b"x", b"y", 10**9), ("sha256", b"x", b"y", 1)], timeout_s=1.0)
        assert results == [TIMEOUT, expected]
        assert time.monotonic() - t0 < 5.0
        assert pool.restarts == 1
    finally:
        pool.close()


def test_slow_symbolic_comparison_that_passes_the_screen_times_out():
    t0 = time.monotonic()
    r = score(PATHOLOGICAL["hard integral"], "5", "math", timeout_s=1.0)
    assert r.reason == "timeout" and r.reward == 0.0 and time.monotonic() - t0 < 5.0


def test_symbolic_grading_works_off_the_main_thread():
    # Math-Verify's own timeouts use signal.alarm and raise ValueError outside the main thread; ours do not.
    import threading

    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", score(r"\boxed{\sqrt{4}}", "2", "math")))
    thread.start()
    thread.join(30)
    assert out["r"].reason == "correct"
