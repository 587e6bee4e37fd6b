"""Compute accounting: rollouts, tokens and FLOPs per step, generation and training counted separately.

`fpt(L)` is the policy's forward FLOPs for one token at context length L (`Policy.flops_per_token`). A forward pass
over a sequence of length L costs F(L) = sum_{j=1}^{L} fpt(j) (causal attention: token j attends to j positions).
- Generation with a KV cache, prompt length P, g generated tokens: the prompt is prefilled (positions 1..P) and every
  generated token but the last is fed back (positions P+1..P+g-1): F(P + g - 1) (F(P) when g = 0; 0 when P+g = 0).
- Training on the full sequence of length P + g: 3 F(P+g) per update pass (forward + backward ~ 2x forward), plus
  F(P+g) for each extra no-grad forward (reference policy for KL, old policy when it is recomputed).
Rollouts dropped by zero-variance filtering still count: they were generated. These are model FLOPs, the same for
every backend: the lab's sampler and update share each prompt's work across its group's rows and so execute fewer
(the HF path shares nothing). See tests/test_compute.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def round_up(x: int, multiple: int) -> int:
    """x rounded up to a multiple of `multiple` (padded lengths and chunk sizes)."""
    return -(-x // multiple) * multiple


def transformer_flops_per_token(n_matmul_params: float, n_layers: int, d_model: int, context_len: int) -> float:
    """Forward FLOPs for one token of a decoder: 2 * N_matmul (every weight matrix, output head included, one
    multiply-add each) + 4 * L * ctx * d (QK^T and AV over ctx keys). Embedding lookups and norms are not counted.
    The one convention for every model kind (lab GPT and HF), so compute is comparable across backends."""
    return 2.0 * n_matmul_params + 4.0 * n_layers * context_len * d_model


def cumulative_forward_flops(fpt: Callable[[int], float], max_len: int) -> np.ndarray:
    """F as an array: F[L] = sum_{j=1}^{L} fpt(j) for L = 0..max_len."""
    per = np.array([0.0] + [float(fpt(j)) for j in range(1, max_len + 1)])
    return np.cumsum(per)


def generation_flops(prompt_lens: Sequence[int], gen_lens: Sequence[int], F: np.ndarray) -> float:
    """Sum over rollouts of F(P + g - 1) (F(P) when g = 0)."""
    p = np.asarray(prompt_lens, dtype=np.int64)
    g = np.asarray(gen_lens, dtype=np.int64)
    return float(F[p + np.maximum(g - 1, 0)].sum())


def training_flops(seq_lens: Sequence[int], F: np.ndarray, update_passes: int = 1, extra_forwards: int = 0) -> float:
    """Sum over sequences of (3 * update_passes + extra_forwards) * F(L)."""
    L = np.asarray(seq_lens, dtype=np.int64)
    return float((3 * update_passes + extra_forwards) * F[L].sum())


def step_compute(prompt_lens: Sequence[int], gen_lens: Sequence[int], F: np.ndarray, *, update_passes: int,
                 extra_forwards: int, trained: Sequence[bool] | None = None) -> dict[str, float]:
    """Compute of one step. `trained[i]` False for rollouts that never enter the update (their training FLOPs are
    not spent; their generation FLOPs are)."""
    p = np.asarray(prompt_lens, dtype=np.int64)
    g = np.asarray(gen_lens, dtype=np.int64)
    keep = np.ones(len(p), dtype=bool) if trained is None else np.asarray(trained, dtype=bool)
    gen = generation_flops(p, g, F)
    train = training_flops((p + g)[keep], F, update_passes, extra_forwards)
    return {"rollouts": float(len(p)), "tokens_prompt": float(p.sum()), "tokens_generated": float(g.sum()),
            "flops_gen": gen, "flops_train": train, "flops": gen + train}
