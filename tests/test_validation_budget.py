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
    """Each branch, worded only as far as the upper bound (all of the sampling error unshared) carries it."""
    from rlscale.report import budget_sentence

    vals = {2: [0.50, 0.52, 0.55, 0.51], 4: [0.60, 0.61, 0.58, 0.62]}
    between = variance_split(_table(vals, 0.0))["between_var"]
    df = _table(vals, 0.002)
    assert "Validation budget" in budget_sentence(df, None) and "took" not in budget_sentence(df, None)
    fewer = budget_sentence(_table(vals, 0.003), (10.0, 90.0))  # validation most of the time, little noise
    assert "Even with none of that error shared" in fewer and "fewer validation samples per point" in fewer
    assert "at least" in fewer
    noisy = budget_sentence(_table(vals, 0.012), (90.0, 2.0))  # noise much of the spread, validation cheap
    assert "would shed at most" in noisy and "rlscale eval --seed" in noisy
    se = math.sqrt(0.3 * between)  # S / P = 3 / 7: T / V = 3.94 puts the bound's optimum at 1.3x today's
    little = budget_sentence(_table(vals, se), (39.4, 10.0))
    assert "1.3x today's" in little and "buy little" in little and "More runs (seeds)" in little
    assert "any number of" in budget_sentence(_table(vals, 0.05), (30.0, 10.0))  # all of the spread: P = 0
    assert budget_sentence(df.drop(columns="val/avg_sampling_stderr"), (60.0, 2.0)) == ""


@pytest.mark.parametrize("T,V", [(62.0, 38.0), (45.0, 13.0), (10.0, 90.0)])
def test_the_bound_orders_the_truth(T, V):
    """What the report's wording relies on: with less of the error unshared (smaller S, the same spread) the
    optimal validation time is smaller, and the variance shed is larger below today's optimum, smaller above."""
    prev = None
    for S in np.linspace(0.0, 0.99, 60):
        out = optimal_validation(1.0, S, T, V)
        if prev is not None:
            assert out["ratio"] >= prev["ratio"]
            if out["ratio"] <= 1:
                assert out["shed"] <= prev["shed"] + 1e-12
            elif prev["ratio"] >= 1:
                assert out["shed"] >= prev["shed"] - 1e-12
        prev = out


def test_initial_stderr_takes_the_measured_sampling_error():
    from rlscale.scaling.isocompute import initial_stderr

    df = pd.DataFrame({"n": [2, 2], "step": [0, 0], "compute/rollouts": [0.0, 0.0], "val/avg": [0.4, 0.4],
                       "val/avg_stderr": [0.03] * 2, "val/problems": [100.0] * 2, "val_n": [8] * 2,
                       "val/avg_sampling_stderr": [0.011] * 2})
    assert initial_stderr(df)[2] == pytest.approx(0.011)
    assert initial_stderr(df.drop(columns="val/avg_sampling_stderr"))[2] == pytest.approx(math.sqrt(0.24 / 800))


def _reseeded(policy_sd: float, shared_sd: float, own_sd: float, runs: int, se: float, seed: int = 0):
    """A sweep table whose last points are policy + seed effect (shared by the runs of a seed) + own error, under
    the sweep's seed (val/avg) and a second one (val/avg_reseed)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (2, 4):
        b1, b2 = rng.normal(0, shared_sd, 2)
        for r in range(runs):
            a = rng.normal(0.5, policy_sd)
            rows.append({"run_id": f"{n}_{r}", "n": n, "compute/rollouts": 100.0, "val/avg_sampling_stderr": se,
                         "val/avg": a + b1 + rng.normal(0, own_sd), "val/avg_reseed": a + b2 + rng.normal(0, own_sd)})
    return pd.DataFrame(rows)


def test_own_error_from_a_second_evaluation():
    """Half the pooled variance of the two evaluations' difference: exact on a small table, and it recovers the
    own error's variance (not the shared seed effect's) on a large simulated one."""
    df = pd.DataFrame({"run_id": list("abcde"), "n": [2, 2, 2, 4, 4], "compute/rollouts": [10.0] * 5,
                       "val/avg": [0.50, 0.52, 0.55, 0.60, 0.61], "val/avg_sampling_stderr": [0.01] * 5,
                       "val/avg_reseed": [0.51, 0.50, 0.56, 0.63, 0.60]})
    d2, d4 = np.array([-0.01, 0.02, -0.01]), np.array([-0.03, 0.01])
    ss = float(((d2 - d2.mean()) ** 2).sum() + ((d4 - d4.mean()) ** 2).sum())
    out = variance_split(df)
    assert out["own_dof"] == 3 and out["own_var"] == pytest.approx(ss / 3 / 2)
    big = variance_split(_reseeded(policy_sd=0.01, shared_sd=0.02, own_sd=0.005, runs=4000, se=0.006))
    assert out is not None and big["own_var"] == pytest.approx(0.005**2, rel=0.05)
    assert big["between_var"] == pytest.approx(0.01**2 + 0.005**2, rel=0.05)  # the shared effect cancels within n
    assert math.isnan(variance_split(df.drop(columns="val/avg_reseed"))["own_var"])


def test_budget_sentence_with_the_measured_own_error():
    from rlscale.report import budget_sentence

    df = _reseeded(policy_sd=0.006, shared_sd=0.003, own_sd=0.004, runs=12, se=0.005)
    text = budget_sentence(df, (62.0, 38.0))
    assert "do not share" in text and "at most" not in text and "Even with none" not in text
    split = variance_split(df)
    opt = optimal_validation(split["between_var"], split["own_var"], 62.0, 38.0)
    assert f"{opt['ratio']:.2g}x today's" in text and f"shed {opt['shed']:.0%}" in text
    noisy = budget_sentence(_reseeded(policy_sd=0.001, shared_sd=0.0, own_sd=0.01, runs=12, se=0.01), (90.0, 5.0))
    assert "more validation samples per point shrink" in noisy


def test_budget_sentence_when_runs_end_equal():
    from rlscale.report import budget_sentence

    df = _table({2: [0.5, 0.5], 4: [0.25, 0.25]}, 0.01).assign(**{"val/avg_reseed": 0.5})
    assert "no spread" in budget_sentence(df, (10.0, 1.0))
