"""Reference tests for rlscale.rl.advantages: brute-force loops over groups."""

import math

import pytest
import torch

from rlscale.rl.advantages import (
    compute_advantages,
    grpo_advantages,
    nanstd,
    rloo_advantages,
    zero_variance_groups,
)

NAN = float("nan")


def brute_grpo(row, scale, ddof, eps):
    vals = [r for r in row if not math.isnan(r)]
    c = len(vals)
    mean = sum(vals) / c if c else 0.0
    var = sum((v - mean) ** 2 for v in vals) / (c - ddof) if c > ddof else 0.0
    out = []
    for r in row:
        if math.isnan(r):
            out.append(0.0)
        else:
            a = r - mean
            out.append(a / (math.sqrt(var) + eps) if scale else a)
    return out


def brute_rloo(row):
    out = []
    for i, r in enumerate(row):
        others = [x for j, x in enumerate(row) if j != i and not math.isnan(x)]
        out.append(0.0 if math.isnan(r) or not others else r - sum(others) / len(others))
    return out


ROWS = [[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, NAN, 0, 0], [NAN, NAN, NAN, NAN], [0.5, 0.2, 0.9, NAN],
        [NAN, 1, NAN, NAN]]


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("est,ddof", [("population", 0), ("bessel", 1)])
def test_grpo_matches_brute_force(scale, est, ddof):
    r = torch.tensor(ROWS, dtype=torch.float64)
    got = grpo_advantages(r, scale_std=scale, std_estimator=est, eps=1e-4)
    want = torch.tensor([brute_grpo(row, scale, ddof, 1e-4) for row in ROWS], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_population_vs_bessel_ratio_at_n2():
    # the sqrt(2) at n = 2 that confounds sweeps over n
    r = torch.tensor([[1.0, 0.0]])
    pop = grpo_advantages(r, eps=0.0)
    bes = grpo_advantages(r, std_estimator="bessel", eps=0.0)
    torch.testing.assert_close(pop, torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(pop / bes, torch.full((1, 2), math.sqrt(2)))


def test_binary_population_closed_form():
    # A = (r - p) / sqrt(p (1 - p)) for 0/1 rewards
    r = torch.tensor([[1.0, 0, 0, 0, 1, 0, 0, 0]])
    p = 0.25
    want = (r - p) / math.sqrt(p * (1 - p))
    torch.testing.assert_close(grpo_advantages(r, eps=0.0), want)


def test_rloo_matches_brute_force_and_identity():
    r = torch.tensor(ROWS, dtype=torch.float64)
    want = torch.tensor([brute_rloo(row) for row in ROWS], dtype=torch.float64)
    torch.testing.assert_close(rloo_advantages(r), want)
    # c/(c-1) * (r - mean) on a full group
    full = torch.tensor([[1.0, 0, 0, 1, 1]], dtype=torch.float64)
    torch.testing.assert_close(rloo_advantages(full), 5 / 4 * (full - full.mean()))


def test_nan_rewards_get_zero_and_are_excluded():
    r = torch.tensor([[1.0, NAN, 0.0]])
    a = grpo_advantages(r, eps=0.0)
    assert a[0, 1] == 0
    torch.testing.assert_close(a[0, [0, 2]], torch.tensor([1.0, -1.0]))


def test_decoupled_baseline_uses_all_estimation_rollouts():
    r = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0, 1.0]])  # n_est = 6, update on n = 2
    a = compute_advantages(r, "grpo", scale_std=False, n_update=2)
    mean = 5 / 6
    torch.testing.assert_close(a, torch.tensor([[1 - mean, -mean]]))
    assert a.shape == (1, 2)
    a2 = compute_advantages(r, "grpo", scale_std=True, std_estimator="population", eps=0.0, n_update=2)
    std = math.sqrt(mean * (1 - mean))
    torch.testing.assert_close(a2, torch.tensor([[(1 - mean) / std, -mean / std]]))


def test_nanstd_and_zero_variance():
    r = torch.tensor([[1.0, NAN, 3.0], [2.0, 2.0, NAN], [NAN, NAN, 5.0]])
    torch.testing.assert_close(nanstd(r, estimator="population").squeeze(1), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(nanstd(r, estimator="bessel").squeeze(1), torch.tensor([math.sqrt(2), 0.0, 0.0]))
    assert zero_variance_groups(r).tolist() == [False, True, True]
    with pytest.raises(ValueError):
        nanstd(r, estimator="nope")
    with pytest.raises(ValueError):
        compute_advantages(r, "nope")


def test_matches_trl_with_bessel():
    from trl.trainer.utils import nanstd as trl_nanstd

    r = torch.tensor(ROWS[:4] + [ROWS[5]], dtype=torch.float32)
    mean = torch.nanmean(r, dim=1, keepdim=True)
    trl = ((r - mean) / (trl_nanstd(r, dim=1, keepdim=True) + 1e-4)).nan_to_num(0.0)
    torch.testing.assert_close(grpo_advantages(r, std_estimator="bessel", eps=1e-4), trl)
