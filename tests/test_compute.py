"""Reference tests for rlscale.compute: explicit per-position sums."""

import numpy as np
import pytest

from rlscale.compute import cumulative_forward_flops, generation_flops, step_compute, training_flops


def fpt(ctx):
    return 1000.0 + 3.0 * ctx  # 2 N + attention linear in context


def test_cumulative():
    F = cumulative_forward_flops(fpt, 10)
    assert F[0] == 0
    assert F[4] == sum(fpt(j) for j in range(1, 5))


def test_generation_is_sum_over_kv_cache_positions():
    F = cumulative_forward_flops(fpt, 64)
    P, g = 7, 5
    # prefill positions 1..P, then each generated token but the last is fed at context P+1..P+g-1
    want = sum(fpt(j) for j in range(1, P + 1)) + sum(fpt(P + t) for t in range(1, g))
    assert generation_flops([P], [g], F) == pytest.approx(want)
    assert generation_flops([P], [0], F) == pytest.approx(sum(fpt(j) for j in range(1, P + 1)))


def test_training_and_step():
    F = cumulative_forward_flops(fpt, 64)
    fwd = sum(fpt(j) for j in range(1, 13))
    assert training_flops([12], F, update_passes=2, extra_forwards=1) == pytest.approx(7 * fwd)
    c = step_compute([3, 4], [5, 6], F, update_passes=1, extra_forwards=1, trained=[True, False])
    assert c["rollouts"] == 2 and c["tokens_prompt"] == 7 and c["tokens_generated"] == 11
    assert c["flops_gen"] == pytest.approx(F[7] + F[9])
    assert c["flops_train"] == pytest.approx(4 * F[8])  # the filtered rollout costs generation only
    assert c["flops"] == pytest.approx(c["flops_gen"] + c["flops_train"])
    assert np.isfinite(c["flops"])
