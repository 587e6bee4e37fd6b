"""Scaling-law formulas against closed forms and brute force. Run: .venv/bin/python -m pytest tests/test_scaling_laws.py -q"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from rlscale.scaling import laws


def test_sigmoid_closed_forms():
    p = {"R0": 0.1, "A": 0.9, "C_mid": 1e4, "B": 1.5}
    assert laws.sigmoid_law(1e4, **p) == pytest.approx(0.5)  # halfway at C_mid
    assert laws.sigmoid_law(1e-6, **p) == pytest.approx(0.1, abs=1e-9)
    assert laws.sigmoid_law(1e15, **p) == pytest.approx(0.9, abs=1e-9)
    C = np.geomspace(1, 1e8, 50)
    direct = 0.1 + 0.8 / (1 + (1e4 / C) ** 1.5)  # the brief's form, literally
    np.testing.assert_allclose(laws.sigmoid_law(C, **p), direct, rtol=1e-12)
    assert np.all(np.diff(laws.sigmoid_law(C, **p)) > 0)  # monotone for B > 0


def test_power_law():
    assert laws.power_law(4.0, 3.0, 0.5) == pytest.approx(6.0)
    assert laws.power_law(4.0, 3.0, 0.5, 1.0) == pytest.approx(7.0)


def test_loglinear_kn_matches_its_definition():
    X, N = np.array([10.0, 1e3]), np.array([1e6, 1e8])
    K, N0, e0, e1 = 0.3, 5e6, 1.0, -0.05
    k = K * N / (N + N0)
    logL = -k * np.log(X) + e0 + e1 * np.log(N)
    np.testing.assert_allclose(np.log(laws.loglinear_kn(X, N, K, N0, e0, e1)), logL, rtol=1e-12)


def test_chinchilla_lse_equals_log_of_sum():
    rng = np.random.default_rng(0)
    N, D = np.exp(rng.uniform(15, 25, 20)), np.exp(rng.uniform(18, 28, 20))
    E, A, B, al, be = 1.82, 482.0, 2085.0, 0.348, 0.366
    direct = np.log(laws.chinchilla_loss(N, D, E, A, B, al, be))
    lse = laws.chinchilla_log_loss_lse(np.log(N), np.log(D), np.log(A), np.log(B), np.log(E), al, be)
    np.testing.assert_allclose(lse, direct, rtol=1e-12)


def test_huber_matches_scipy():
    r = np.linspace(-0.01, 0.01, 101)
    np.testing.assert_allclose(laws.huber(r, 1e-3), special.huber(1e-3, r), rtol=1e-12, atol=1e-18)
    h = 1e-8
    num = (laws.huber(r + h, 1e-3) - laws.huber(r - h, 1e-3)) / (2 * h)
    np.testing.assert_allclose(laws.huber_grad(r, 1e-3), num, atol=1e-6)


def test_reuse_and_epochs():
    assert laws.data_reuse_factor(4000, 1000) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        laws.data_reuse_factor(10, 0)
    # 16 rollouts per problem, 100 problems: 3200 rollouts = 2 epochs
    assert laws.epochs_from_rollouts(3200, 16, 100) == pytest.approx(2.0)
    assert laws.tokens_from_flops(6e20, 1e9) == pytest.approx(1e11)


def test_pretrain_rl_accuracy_monotone_and_exchange_rate():
    a, b = 0.8, 0.4
    base = laws.pretrain_rl_accuracy(1e20, 1e17, 0.0, 1.0, a, b, -45.0)
    # doubling the RL exponent's log-budget by a/b e-folds equals one e-fold of pretraining
    more_pre = laws.pretrain_rl_accuracy(1e20 * np.e, 1e17, 0.0, 1.0, a, b, -45.0)
    more_rl = laws.pretrain_rl_accuracy(1e20, 1e17 * np.e ** (a / b), 0.0, 1.0, a, b, -45.0)
    assert more_pre > base and more_pre == pytest.approx(more_rl)
    assert laws.expit(0.0) == 0.5 and laws.expit(-1000.0) == 0.0
