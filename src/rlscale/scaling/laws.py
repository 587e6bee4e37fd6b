"""Scaling laws as small pure numpy functions (arrays in, arrays out); fitted by `rlscale.scaling.estimators`.

Forms (natural logarithms throughout):

- saturating sigmoid   R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B),  B > 0 (monotone in C; A is the asymptote)
- power law            y = a * x^b + c                               (c = 0 for the pure power law)
- log-linear k(N)      log L = -k(N) log X + E(N),  k(N) = K_max N / (N + N0),  E(N) = e0 + e1 log N
- Chinchilla           L = E + A / N^alpha + B / D^beta, fitted as log L = LSE(a - alpha log N, b - beta log D, e)
                       with A = e^a, B = e^b, E = e^e (Besiroglu et al. 2024)
- data reuse           tau = total samples / unique samples
- pretrain x RL        acc = lo + (hi - lo) * sigmoid(a log C_pre + b log C_rl + c),  a, b >= 0

Tests: tests/test_scaling_laws.py.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def expit(u: ArrayLike) -> np.ndarray:
    """Logistic 1 / (1 + e^-u), overflow-safe."""
    u = np.asarray(u, dtype=float)
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def huber(r: ArrayLike, delta: float) -> np.ndarray:
    """Huber loss: r^2/2 for |r| <= delta, else delta (|r| - delta/2). Same as scipy.special.huber(delta, r)."""
    a = np.abs(np.asarray(r, dtype=float))
    return np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))


def huber_grad(r: ArrayLike, delta: float) -> np.ndarray:
    """d huber / d r = clip(r, -delta, delta)."""
    return np.clip(np.asarray(r, dtype=float), -delta, delta)


def sigmoid_law(C: ArrayLike, R0: float, A: float, C_mid: float, B: float) -> np.ndarray:
    """R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B): R0 at C -> 0, A at C -> inf, halfway at C = C_mid.

    Computed as R0 + (A - R0) * expit(B (log C - log C_mid)). C > 0.
    """
    logC = np.log(np.asarray(C, dtype=float))
    return R0 + (A - R0) * expit(B * (logC - np.log(C_mid)))


def power_law(x: ArrayLike, a: float, b: float, c: float = 0.0) -> np.ndarray:
    """y = a * x^b + c. x > 0."""
    return a * np.power(np.asarray(x, dtype=float), b) + c


def k_of_n(N: ArrayLike, K_max: float, N0: float) -> np.ndarray:
    """Size-dependent efficiency k(N) = K_max N / (N + N0): ~K_max N / N0 for small N, saturates at K_max."""
    N = np.asarray(N, dtype=float)
    return K_max * N / (N + N0)


def loglinear_kn(X: ArrayLike, N: ArrayLike, K_max: float, N0: float, e0: float, e1: float) -> np.ndarray:
    """L = exp(-k(N) log X + E(N)) with E(N) = e0 + e1 log N, i.e. L = e^E(N) X^-k(N). X, N > 0."""
    X = np.asarray(X, dtype=float)
    N = np.asarray(N, dtype=float)
    return np.exp(-k_of_n(N, K_max, N0) * np.log(X) + e0 + e1 * np.log(N))


def chinchilla_loss(N: ArrayLike, D: ArrayLike, E: float, A: float, B: float, alpha: float, beta: float) -> np.ndarray:
    """L = E + A / N^alpha + B / D^beta (N parameters, D tokens)."""
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return E + A / N**alpha + B / D**beta


def chinchilla_log_loss_lse(logN: ArrayLike, logD: ArrayLike, a: float, b: float, e: float, alpha: float,
                            beta: float) -> np.ndarray:
    """log L = LSE(a - alpha log N, b - beta log D, e); equals log chinchilla_loss(N, D, e^e, e^a, e^b, ...)."""
    t = np.stack(np.broadcast_arrays(a - alpha * np.asarray(logN, float), b - beta * np.asarray(logD, float),
                                     np.full(np.shape(logN), float(e))))
    m = t.max(axis=0)
    return m + np.log(np.exp(t - m).sum(axis=0))


def tokens_from_flops(C: ArrayLike, N: ArrayLike) -> np.ndarray:
    """D = C / (6 N): training tokens from training FLOPs (forward + backward ~ 6 N FLOPs per token)."""
    return np.asarray(C, dtype=float) / (6.0 * np.asarray(N, dtype=float))


def data_reuse_factor(total_samples: ArrayLike, unique_samples: ArrayLike) -> np.ndarray:
    """tau = total samples / unique samples (1 = every sample seen once; 4 = four epochs)."""
    total = np.asarray(total_samples, dtype=float)
    unique = np.asarray(unique_samples, dtype=float)
    if np.any(unique <= 0):
        raise ValueError("unique_samples must be > 0")
    return total / unique


def epochs_from_rollouts(rollouts: ArrayLike, n: ArrayLike, train_set_size: int) -> np.ndarray:
    """Epochs over the training set: rollouts / (n * train_set_size) (n rollouts per problem visit)."""
    return np.asarray(rollouts, dtype=float) / (np.asarray(n, dtype=float) * float(train_set_size))


def pretrain_rl_accuracy(C_pre: ArrayLike, C_rl: ArrayLike, lo: float, hi: float, a: float, b: float,
                         c: float) -> np.ndarray:
    """acc = lo + (hi - lo) * expit(a log C_pre + b log C_rl + c); with a, b >= 0 it rises in both budgets.

    a / b is the exchange rate: one e-fold of RL compute buys as much as b / a e-folds of pretraining compute.
    """
    u = a * np.log(np.asarray(C_pre, dtype=float)) + b * np.log(np.asarray(C_rl, dtype=float)) + c
    return lo + (hi - lo) * expit(u)
