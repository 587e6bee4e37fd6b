"""Per-problem sample statistics from n samples with c correct: unbiased pass@k, worst@k, avg@k, maj@k, plus the
mean, standard error and bootstrap CI over problems, and the sampling standard error of avg over a fixed problem
set. Pure numpy; see tests/test_metrics.py.

  pass@k  = P(at least one of k samples drawn without replacement from the n is correct)
          = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1..n} (1 - k/i)          (Chen et al. 2021, unbiased)
  worst@k = P(all k are correct) = C(c, k) / C(n, k) = prod_{j=0..k-1} (c-j)/(n-j)
  avg@k   = c / n   (the expected accuracy of one sample; the same for every k)
  maj@k   = mean over the floor(n/k) disjoint blocks of k consecutive samples of [the block's majority answer is
            correct] (each block is a uniform k-subset of i.i.d. samples, so the mean is unbiased for maj@k)

Both ratios are computed as products of factors in (0, 1] (never binomials), so nothing overflows at n = 2048 and
the relative rounding error is at most ~n machine epsilons. n and c are arrays over problems (or scalars); k > n is
a UserError.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlscale.errors import UserError


def _check(n, c, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_arr = np.asarray(n, dtype=np.int64)
    c_arr = np.asarray(c, dtype=np.int64)
    n_arr, c_arr = np.broadcast_arrays(n_arr, c_arr)
    if int(k) != k or k < 1:
        raise UserError(f"k={k}: must be a positive integer")
    if ((c_arr < 0) | (c_arr > n_arr)).any():
        raise UserError("correct counts must lie in [0, n]")
    if n_arr.size and int(n_arr.min()) < k:
        raise UserError(f"k={k} > n={int(n_arr.min())} samples; sample at least k per problem (raise --n) "
                        f"or lower k")
    return n_arr, c_arr


def _all_correct_table(n: int, k: int) -> np.ndarray:
    """t[c] = C(c, k) / C(n, k) for c = 0..n, by the top-down product t[n] = 1, t[c-1] = t[c] * (c-k)/c."""
    c = np.arange(n, 0, -1, dtype=np.float64)  # n, n-1, ..., 1
    factors = np.clip((c - k) / c, 0.0, None)  # factor taking t[c] to t[c-1]; 0 once c <= k
    t = np.empty(n + 1)
    t[n] = 1.0
    t[:n] = np.cumprod(factors)[::-1]
    return t


def _ratio(n_arr: np.ndarray, c_arr: np.ndarray, k: int) -> np.ndarray:
    """C(c, k) / C(n, k) elementwise, one product table per distinct n (k = 1: exactly c / n)."""
    if k == 1:
        return c_arr / n_arr
    out = np.empty(n_arr.shape, dtype=np.float64)
    for n in np.unique(n_arr):
        sel = n_arr == n
        out[sel] = _all_correct_table(int(n), k)[c_arr[sel]]
    return out


def _result(x: np.ndarray, n) -> np.ndarray | float:
    return float(x) if np.ndim(n) == 0 and x.ndim == 0 else x


def pass_at_k(n, c, k: int) -> np.ndarray | float:
    """Unbiased pass@k = 1 - C(n-c, k)/C(n, k) = 1 - prod_{i=n-c+1..n}(1 - k/i); n, c: (P,) or scalars."""
    n_arr, c_arr = _check(n, c, k)
    return _result(1.0 - _ratio(n_arr, n_arr - c_arr, k), n)


def worst_at_k(n, c, k: int) -> np.ndarray | float:
    """worst@k = C(c, k)/C(n, k) = prod_{j<k} (c-j)/(n-j): all k samples correct; n, c: (P,) or scalars."""
    n_arr, c_arr = _check(n, c, k)
    return _result(_ratio(n_arr, c_arr, k), n)


def avg_at_k(n, c, k: int = 1) -> np.ndarray | float:
    """avg@k = c / n (mean accuracy of a sample; k only checked, k <= n)."""
    n_arr, c_arr = _check(n, c, k)
    return _result(c_arr / n_arr, n)


def majority_answer(answers: Sequence[str | None]) -> tuple[int | None, str | None]:
    """(index, answer) of the majority vote among non-None answers (stripped strings).

    Ties are broken by first appearance: among the answers with the highest count, the one whose first occurrence
    comes earliest wins. (None, None) when no sample has an answer.
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        key = str(a).strip()
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return None, None
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[best], best


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]], k: int) -> np.ndarray:
    """Per problem: the mean over the n//k disjoint blocks of k consecutive samples of whether the block's majority
    answer (see majority_answer for ties) is correct; the answer's correctness is that of its first sample in the
    block. A block with no extracted answer counts as wrong. Returns (P,)."""
    if len(answers) != len(correct):
        raise UserError("maj_at_k: answers and correct must have one entry per problem")
    out = np.empty(len(answers))
    for p, (ans, cor) in enumerate(zip(answers, correct)):
        n = len(ans)
        _check(n, 0, k)
        if len(cor) != n:
            raise UserError(f"maj_at_k: problem {p} has {n} answers but {len(cor)} correctness flags")
        blocks = n // k
        hits = 0
        for b in range(blocks):
            i, _ = majority_answer(ans[b * k:(b + 1) * k])
            hits += bool(i is not None and cor[b * k + i])
        out[p] = hits / blocks
    return out


def mean_stderr(values) -> tuple[float, float]:
    """(mean, standard error = sample std (ddof=1) / sqrt(P)) over problems; stderr 0 for P < 2, NaN mean if P=0."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def sampling_stderr(n, c) -> float:
    """Standard error of the mean of avg@n over these problems from resampling their completions only, the problems
    held fixed: sqrt(sum_i v_i) / P with v_i = p_i (1 - p_i) / (n_i - 1), p_i = c_i / n_i, the unbiased estimate of
    var(c_i / n_i) = q_i (1 - q_i) / n_i (E[p_i (1 - p_i)] = q_i (1 - q_i) (n_i - 1) / n_i).

    That is the noise of comparing runs on one validation set: `mean_stderr` over problems also counts which
    problems were drawn, which every run on the set shares, and is several times larger where the problems'
    pass rates differ. NaN when a problem has n < 2 samples (its variance cannot be estimated) or P = 0."""
    n_arr, c_arr = _check(n, c, 1)
    n_arr, c_arr = np.atleast_1d(n_arr).astype(np.float64), np.atleast_1d(c_arr).astype(np.float64)
    if n_arr.size == 0 or (n_arr < 2).any():
        return float("nan")
    p = c_arr / n_arr
    return float(np.sqrt(np.sum(p * (1.0 - p) / (n_arr - 1.0))) / n_arr.size)


def bootstrap_ci(values, num_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of the mean over problems (resampling problems with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if not 0 < alpha < 1:
        raise UserError(f"alpha={alpha}: must be in (0, 1)")
    means = _resampled_means(v, num_resamples, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _resampled_means(v: np.ndarray, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of num_resamples resamples of v with replacement (problems resampled)."""
    return v[rng.integers(0, v.size, size=(num_resamples, v.size))].mean(axis=1)


def bootstrap_diff_ci(a, b, num_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of mean(a) - mean(b) for two independent sets of problems (each
    resampled with replacement on its own)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        return float("nan"), float("nan")
    if not 0 < alpha < 1:
        raise UserError(f"alpha={alpha}: must be in (0, 1)")
    rng = np.random.default_rng(seed)
    d = _resampled_means(x, num_resamples, rng) - _resampled_means(y, num_resamples, rng)
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
