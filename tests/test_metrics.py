"""pass@k / worst@k / avg@k / maj@k against brute-force enumeration and exact rational arithmetic; properties."""

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlscale.errors import UserError
from rlscale.evals.metrics import (
    avg_at_k,
    bootstrap_ci,
    bootstrap_diff_ci,
    maj_at_k,
    majority_answer,
    mean_stderr,
    pass_at_k,
    worst_at_k,
)


def brute(n, c, k):
    """Fractions of the k-subsets of n samples (c correct) with any / all correct."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return (sum(any(s) for s in subsets) / len(subsets), sum(all(s) for s in subsets) / len(subsets))


def exact(n, c, k):
    total = Fraction(math.comb(n, k))
    return 1 - Fraction(math.comb(n - c, k)) / total, Fraction(math.comb(c, k)) / total


def test_brute_force_all_small():
    for n in range(1, 13):
        for k in range(1, n + 1):
            cs = np.arange(n + 1)
            p = pass_at_k(np.full(n + 1, n), cs, k)
            w = worst_at_k(np.full(n + 1, n), cs, k)
            for c in cs:
                bp, bw = brute(n, int(c), k)
                assert abs(p[c] - bp) <= 1e-12 and abs(w[c] - bw) <= 1e-12, (n, c, k)


def test_exact_rationals_up_to_1024():
    rng = random.Random(0)
    cases = [(1024, c, k) for c in (0, 1, 2, 511, 512, 1000, 1023, 1024) for k in (1, 2, 16, 128, 512, 1023, 1024)]
    cases += [(n, rng.randint(0, n), rng.randint(1, n)) for n in (rng.randint(13, 1024) for _ in range(300))]
    for n, c, k in cases:
        ep, ew = exact(n, c, k)
        assert abs(pass_at_k(n, c, k) - float(ep)) <= 1e-12, (n, c, k)
        assert abs(worst_at_k(n, c, k) - float(ew)) <= 1e-12, (n, c, k)


def test_exact_all_c_for_one_large_n():
    n, k = 700, 64
    p = pass_at_k(np.full(n + 1, n), np.arange(n + 1), k)
    w = worst_at_k(np.full(n + 1, n), np.arange(n + 1), k)
    for c in range(n + 1):
        ep, ew = exact(n, c, k)
        assert abs(p[c] - float(ep)) <= 1e-12 and abs(w[c] - float(ew)) <= 1e-12


def test_no_overflow_at_2048():
    n = np.full(2049, 2048)
    c = np.arange(2049)
    for k in (1, 2, 64, 1024, 2047, 2048):
        p, w = pass_at_k(n, c, k), worst_at_k(n, c, k)
        assert np.isfinite(p).all() and np.isfinite(w).all()
        assert (p >= 0).all() and (p <= 1).all() and (w >= 0).all() and (w <= 1).all()
        assert p[0] == 0 and p[-1] == 1 and w[-1] == 1 and w[0] == 0
    assert abs(pass_at_k(2048, 1, 1024) - 0.5) < 1e-15


def test_vectorised_mixed_n_matches_scalar():
    n = np.array([4, 16, 16, 128, 4])
    c = np.array([1, 0, 16, 33, 4])
    p = pass_at_k(n, c, 4)
    assert p.shape == (5,)
    assert np.allclose(p, [pass_at_k(int(a), int(b), 4) for a, b in zip(n, c)], atol=0, rtol=0)


def test_bad_input():
    with pytest.raises(UserError, match="k=5 > n=4"):
        pass_at_k(4, 1, 5)
    with pytest.raises(UserError, match="k=17 > n=16"):
        worst_at_k([16, 32], [1, 1], 17)
    with pytest.raises(UserError, match="positive integer"):
        pass_at_k(4, 1, 0)
    with pytest.raises(UserError, match=r"\[0, n\]"):
        pass_at_k(4, 5, 1)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_properties(nck):
    n, c, k = nck
    p, w, a = pass_at_k(n, c, k), worst_at_k(n, c, k), avg_at_k(n, c, k)
    assert w <= a + 1e-12 and a <= p + 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= p - 1e-12 and worst_at_k(n, c + 1, k) >= w - 1e-12
    if k < n:
        assert pass_at_k(n, c, k + 1) >= p - 1e-12 and worst_at_k(n, c, k + 1) <= w + 1e-12
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-15)
    assert worst_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-15)


def test_majority_ties_first_appearance():
    assert majority_answer(["1", "2", "2", "1"]) == (0, "1")
    assert majority_answer([None, "3", "2", "2"]) == (2, "2")
    assert majority_answer([None, None]) == (None, None)
    assert majority_answer([" 5", "5 "]) == (0, "5")


def test_maj_at_k_blocks():
    ans = [["1", "1", "2", "3", "3", "3", None, None]]
    cor = [[True, True, False, False, False, False, False, False]]
    # k=1: per-sample accuracy; k=4: blocks [1,1,2,3] -> 1 (right), [3,3,None,None] -> 3 (wrong); k=8: 3 wins
    assert maj_at_k(ans, cor, 1)[0] == pytest.approx(2 / 8)
    assert maj_at_k(ans, cor, 4)[0] == pytest.approx(0.5)
    assert maj_at_k(ans, cor, 8)[0] == 0.0
    # k=3 uses floor(8/3)=2 blocks: [1,1,2] right, [3,3,3] wrong
    assert maj_at_k(ans, cor, 3)[0] == pytest.approx(0.5)
    with pytest.raises(UserError, match="k=9 > n=8"):
        maj_at_k(ans, cor, 9)


def test_mean_stderr_and_bootstrap():
    v = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    m, se = mean_stderr(v)
    assert m == pytest.approx(0.6) and se == pytest.approx(np.std(v, ddof=1) / np.sqrt(5))
    assert mean_stderr([0.5]) == (0.5, 0.0)
    lo, hi = bootstrap_ci(v, seed=1)
    assert 0 <= lo < m < hi <= 1
    assert bootstrap_ci(v, seed=1) == (lo, hi)
    rng = np.random.default_rng(0)
    big = rng.random(2000)
    lo, hi = bootstrap_ci(big, seed=0)
    _, se = mean_stderr(big)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)  # bootstrap agrees with the normal interval


def test_bootstrap_diff_ci_matches_the_normal_interval_of_a_difference():
    rng = np.random.default_rng(1)
    a, b = rng.random(1500) * 0.5 + 0.2, rng.random(900)  # independent sets of different sizes
    lo, hi = bootstrap_diff_ci(a, b, seed=0)
    d = a.mean() - b.mean()
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert lo < d < hi
    assert (lo + hi) / 2 == pytest.approx(d, abs=0.2 * se)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert bootstrap_diff_ci([0.5] * 4, [0.25] * 7) == (0.25, 0.25)  # no spread: the difference itself
    assert bootstrap_diff_ci(a, b, seed=0) == (lo, hi)
    assert all(np.isnan(bootstrap_diff_ci([], b)))
