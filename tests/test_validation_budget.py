"""The sampling stderr of a validation point (problems fixed) and the validation budget built on it: checked against
exact expectations, brute-force resampling and brute-force minimisation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rlscale.evals.metrics import sampling_stderr
from rlscale.scaling.validation_budget import optimal_validation, variance_split


def test_sampling_variance_is_unbiased_exactly():
    """E[sampling_stderr^2] over the binomial counts equals sum_i q_i (1 - q_i) / n_i / P^2, the variance of the
    mean of c_i / n_i: exact sums over every problem's binomial pmf (the estimator is a sum over problems)."""
    q = np.array([0.05, 0.3, 0.5, 0.9, 1.0])
    n = np.array([2, 4, 8, 16, 3])
    P = len(q)
    expected = 0.0
    for qi, ni in zip(q, n):
        c = np.arange(ni + 1)
        p = c / ni
        expected += float(np.sum(stats.binom.pmf(c, ni, qi) * p * (1 - p) / (ni - 1)))
    truth = float(np.sum(q * (1 - q) / n)) / P**2
    assert expected / P**2 == pytest.approx(truth, rel=1e-12)
    # and the function computes exactly that sum for given counts
    c = np.array([1, 2, 3, 15, 3])
    p = c / n
    assert sampling_stderr(n, c) == pytest.approx(math.sqrt(np.sum(p * (1 - p) / (n - 1))) / P, rel=1e-12)


def test_sampling_stderr_matches_resampled_completions():
    """Brute force: the sd of the mean over 200 fixed problems when only their completions are redrawn, against
    the mean estimate from one draw (and far below the stderr over problems, which counts their spread)."""
    rng = np.random.default_rng(0)
    q = rng.beta(0.6, 0.6, size=200)
    n = 8
    means, ests = [], []
    for _ in range(4000):
        c = rng.binomial(n, q)
        means.append(np.mean(c / n))
        ests.append(sampling_stderr(np.full(200, n), c) ** 2)
    assert math.sqrt(np.mean(ests)) == pytest.approx(np.std(means), rel=0.03)
    c = rng.binomial(n, q)
    assert sampling_stderr(np.full(200, n), c) < 0.6 * np.std(c / n, ddof=1) / math.sqrt(200)


def test_sampling_stderr_edge_cases():
    assert math.isnan(sampling_stderr([1, 4], [1, 2]))  # one sample: no within-problem variance
    assert sampling_stderr([4, 4], [0, 4]) == 0.0  # all wrong / all right: no sampling noise
    assert sampling_stderr(6, 3) == pytest.approx(math.sqrt(0.25 / 5))


def _table(values: dict[int, list[float]], se: float, compute: float = 100.0) -> pd.DataFrame:
    rows = []
    for n, vals in values.items():
        for seed, v in enumerate(vals):
            rid = f"r{n}_{seed}"
            rows.append({"run_id": rid, "n": n, "compute/rollouts": 0.0, "val/avg": 0.1, "val/avg_sampling_stderr": se})
            rows.append({"run_id": rid, "n": n, "compute/rollouts": compute / 2, "val/avg": v - 0.05,
                         "val/avg_sampling_stderr": 9.0})  # not the last point: ignored
            rows.append({"run_id": rid, "n": n, "compute/rollouts": compute, "val/avg": v,
                         "val/avg_sampling_stderr": se})
    return pd.DataFrame(rows)


def test_variance_split_pools_the_last_points_per_n():
    vals = {2: [0.50, 0.52, 0.55], 4: [0.60, 0.61], 8: [0.7]}  # n = 8 has one run: left out
    out = variance_split(_table(vals, 0.01))
    ss = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2)) for v in (vals[2], vals[4]))
    assert out["dof"] == 3 and out["runs"] == 5
    assert out["between_var"] == pytest.approx(ss / 3)
    assert out["sampling_var"] == pytest.approx(1e-4)
    assert out["share"] == pytest.approx(min(1.0, 1e-4 / (ss / 3)))
    assert variance_split(_table(vals, 0.01).drop(columns="val/avg_sampling_stderr")) is None
    assert variance_split(_table({2: [0.5]}, 0.01)) is None


@pytest.mark.parametrize("P,S,T,V", [(4e-5, 1.5e-5, 62.0, 38.0), (7e-5, 5e-5, 45.0, 13.0), (1e-4, 1e-6, 10, 90)])
def test_optimal_validation_against_brute_force(P, S, T, V):
    out = optimal_validation(P + S, S, T, V)
    grid = np.geomspace(V / 1000, V * 1000, 200001)
    f = (P + S * V / grid) * (T + grid)
    best = grid[np.argmin(f)]
    assert out["ratio"] == pytest.approx(best / V, rel=1e-3)
    assert out["shed"] == pytest.approx(1 - f.min() / ((P + S) * (T + V)), abs=1e-6)
    assert out["share_now"] == pytest.approx(V / (T + V))
    assert out["share_opt"] == pytest.approx(best / (T + best), rel=1e-3)


def test_optimal_validation_limits():
    all_noise = optimal_validation(1e-4, 2e-4, 30.0, 10.0)  # sampling >= between: P floored at 0
    assert all_noise["ratio"] == math.inf and all_noise["shed"] == pytest.approx(30 / 40)
    no_noise = optimal_validation(1e-4, 0.0, 30.0, 10.0)
    assert no_noise["ratio"] == 0.0 and no_noise["shed"] == pytest.approx(10 / 40)
    at_opt = optimal_validation(1e-4 + 1e-4 * 1 / 1, 1e-4, 10.0, 10.0)  # V* = sqrt(S V T / P) = V
    assert at_opt["ratio"] == pytest.approx(1.0) and at_opt["shed"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        optimal_validation(1e-4, 1e-5, 0.0, 10.0)


def test_budget_sentence_words_the_prescription():
    from rlscale.report import budget_sentence

    vals = {2: [0.50, 0.52, 0.55, 0.51], 4: [0.60, 0.61, 0.58, 0.62]}
    df = _table(vals, 0.002)
    assert "Validation budget" in budget_sentence(df, None) and "took" not in budget_sentence(df, None)
    small = budget_sentence(df, (60.0, 2.0))  # little noise, little validation time: near the optimum
    assert "near its optimum" in small and "more runs (seeds)" in small
    noisy = budget_sentence(_table(vals, 0.012), (90.0, 2.0))  # noise most of the spread, validation cheap
    assert "more validation samples per point" in noisy
    assert "fewer validation samples" in budget_sentence(_table(vals, 0.003), (10.0, 90.0))
    assert budget_sentence(df.drop(columns="val/avg_sampling_stderr"), (60.0, 2.0)) == ""


def test_initial_stderr_takes_the_measured_sampling_error():
    from rlscale.scaling.isocompute import initial_stderr

    df = pd.DataFrame({"n": [2, 2], "step": [0, 0], "compute/rollouts": [0.0, 0.0], "val/avg": [0.4, 0.4],
                       "val/avg_stderr": [0.03] * 2, "val/problems": [100.0] * 2, "val_n": [8] * 2,
                       "val/avg_sampling_stderr": [0.011] * 2})
    assert initial_stderr(df)[2] == pytest.approx(0.011)
    assert initial_stderr(df.drop(columns="val/avg_sampling_stderr"))[2] == pytest.approx(math.sqrt(0.24 / 800))
