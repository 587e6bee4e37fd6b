"""Per-token GRPO loss terms and their aggregation. Pure tensor functions; see tests/test_losses.py.

Shapes: N sequences (rollouts) x T completion positions; `mask` (N, T) is 1 on completion tokens that count.

The loss of a batch is a weighted sum over tokens,
    L = sum_{i,t} w_pg[i,t] * pg[i,t] * tis[i,t] + kl_coef * sum w_reg[i,t] kl[i,t] - entropy_coef * sum w_reg[i,t] H[i,t]
with pg[i,t] = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i), rho = exp(logp - old_logp),
kl = exp(ref - logp) - (ref - logp) - 1 (the k3 estimator), and the weights w computed once over the *global* batch
(before any micro-batch split) by `aggregation_weights`, so the gradient is the same for any micro-batching:
- `token-mean`:      w = mask / (number of kept tokens in the batch)              (TRL `dapo`, `bnpo` at one step)
- `sequence-mean`:   w = mask / (len_i * number of kept sequences)                (TRL `grpo`)
- `constant-length`: w = mask / (max_new_tokens * number of kept sequences)       (Dr. GRPO; TRL `dr_grpo`)
"Kept" sequences come from zero-variance filtering (see `filter_masks`). Unlike TRL, our entropy bonus uses the same
aggregation as the other terms (TRL always token-means it), and our KL term is the plain k3 by default; TRL 1.16
multiplies it by the (differentiable) ratio rho (`use_bias_correction_kl=True`), available here as
`kl_ratio_correction=True`: same value, different gradient even on-policy.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGGREGATIONS = ("token-mean", "sequence-mean", "constant-length")
ZERO_VARIANCE_FILTERS = ("off", "drop", "kl-entropy")


def aggregation_weights(mask: Tensor, keep: Tensor, aggregation: str, max_new_tokens: int) -> Tensor:
    """Per-token weights (N, T) summing the loss over the global batch; rows with keep=False get weight 0."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation '{aggregation}'; valid: {', '.join(AGGREGATIONS)}")
    m = mask.to(torch.float64) * keep.to(torch.float64)[:, None]  # (N, T)
    num_seqs = keep.sum().clamp(min=1).to(torch.float64)
    if aggregation == "token-mean":
        w = m / m.sum().clamp(min=1.0)
    elif aggregation == "sequence-mean":
        w = m / m.sum(dim=1, keepdim=True).clamp(min=1.0) / num_seqs
    else:
        w = m / (max_new_tokens * num_seqs)
    return w.to(torch.float32)


def filter_masks(zero_var_seq: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(keep_pg, keep_reg), each (N,) bool, from zero_var_seq (N,) (the rollout's group had no reward variance).

    off: keep everything; drop: zero-variance groups leave the loss (and its normalisation) entirely;
    kl-entropy: they stay in the policy-gradient normalisation but get no KL/entropy term."""
    if mode not in ZERO_VARIANCE_FILTERS:
        raise ValueError(f"unknown zero-variance filter '{mode}'; valid: {', '.join(ZERO_VARIANCE_FILTERS)}")
    all_kept = torch.ones_like(zero_var_seq, dtype=torch.bool)
    if mode == "off":
        return all_kept, all_kept
    if mode == "drop":
        return ~zero_var_seq, ~zero_var_seq
    return all_kept, ~zero_var_seq


def clipped_pg(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float, eps_high: float
               ) -> tuple[Tensor, Tensor, Tensor]:
    """pg = -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A), rho = exp(logp - old_logp).  (N,T), A (N,) ->
    (pg (N,T), clipped_low (N,T) bool, clipped_high (N,T) bool): where the clipped branch is active."""
    adv = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    pg = -torch.minimum(ratio * adv, clipped * adv)
    low = (ratio < 1.0 - eps_low) & (adv < 0)
    high = (ratio > 1.0 + eps_high) & (adv > 0)
    return pg, low, high


def tis_weight(old_logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance weight min(pi_old / pi_sampler, cap) per token (N, T), no gradient."""
    return torch.exp(old_logp - sampler_logp).clamp(max=cap).detach()


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimator of KL(pi || ref) per token: exp(ref - logp) - (ref - logp) - 1 >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def grpo_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, w_pg: Tensor, w_reg: Tensor, *,
              eps_low: float = 0.2, eps_high: float = 0.2, ref_logp: Tensor | None = None, kl_coef: float = 0.0,
              entropy: Tensor | None = None, entropy_coef: float = 0.0, sampler_logp: Tensor | None = None,
              tis_cap: float | None = None, kl_ratio_correction: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Scalar loss of one (micro-)batch and its summed statistics (each term already weighted by w).

    Summing the losses of the micro-batches of a global batch gives the global loss (weights are global)."""
    pg, low, high = clipped_pg(logp, old_logp, advantages, eps_low, eps_high)
    if tis_cap is not None and sampler_logp is not None:
        pg = pg * tis_weight(old_logp, sampler_logp, tis_cap)
    pg_term = (w_pg * pg).sum()
    loss = pg_term
    stats = {"pg": pg_term.detach(), "clip_low": (w_pg * low).sum().detach(),
             "clip_high": (w_pg * high).sum().detach()}
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        if kl_ratio_correction:  # TRL's default use_bias_correction_kl: kl * rho (rho = 1 on-policy, not its grad)
            kl = kl * torch.exp(logp - old_logp)
        kl_term = (w_reg * kl).sum()
        stats["kl"] = kl_term.detach()
        if kl_coef:
            loss = loss + kl_coef * kl_term
    if entropy is not None:
        ent_term = (w_reg * entropy).sum()
        stats["entropy"] = ent_term.detach()
        if entropy_coef:
            loss = loss - entropy_coef * ent_term
    return loss, stats
