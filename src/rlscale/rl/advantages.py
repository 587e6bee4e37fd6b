"""Group-relative advantages for GRPO-style training. Pure tensor functions; see tests/test_advantages.py.

rewards are (B, G): B problems (groups), G rollouts per problem. NaN marks an unscorable rollout (the grader returned
None): it is excluded from every group statistic and gets advantage 0 (no gradient).

Estimators (registry `ADVANTAGES`):
- `grpo`: A_ig = (r_ig - mean_g r) / (std_g r + eps), or without the division when scale_std=False (Dr. GRPO).
  std is the population std (divide by the count c) or the Bessel one (divide by c - 1). Our default is population:
  for 0/1 rewards it gives A = (r - p) / sqrt(p (1 - p)) whatever n, while Bessel (TRL's and verl's choice) shrinks
  advantages by sqrt((c - 1) / c), i.e. by sqrt(2) at n = 2, which confounds a sweep over n.
- `rloo`: leave-one-out baseline A_ig = r_ig - mean_{j != i} r_gj = c / (c - 1) (r_ig - mean_g r); optional std scaling.
- decoupled baseline group: pass n_update < G; the baseline (and std) come from all G = n_est rollouts, the
  advantages are returned for the first n_update columns only (the rollouts the update uses).
"""

from __future__ import annotations

import torch
from torch import Tensor

STD_ESTIMATORS = ("population", "bessel")


def nanstd(x: Tensor, dim: int = 1, estimator: str = "population", keepdim: bool = True) -> Tensor:
    """std over non-NaN entries: sqrt(sum (x - mean)^2 / (c - ddof)), ddof 0 (population) or 1 (bessel).

    Groups with fewer than ddof + 1 valid entries get std 0."""
    if estimator not in STD_ESTIMATORS:
        raise ValueError(f"unknown std estimator '{estimator}'; valid: {', '.join(STD_ESTIMATORS)}")
    valid = ~torch.isnan(x)
    count = valid.sum(dim=dim, keepdim=True)  # (B, 1)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.where(valid, (x - mean) ** 2, torch.zeros_like(x)).sum(dim=dim, keepdim=True)
    ddof = 0 if estimator == "population" else 1
    denom = (count - ddof).clamp(min=1)
    std = torch.where(count > ddof, (sq / denom).sqrt(), torch.zeros_like(sq))
    return std if keepdim else std.squeeze(dim)


def grpo_advantages(rewards: Tensor, scale_std: bool = True, std_estimator: str = "population",
                    eps: float = 1e-4) -> Tensor:
    """A = (r - nanmean_g r) [/ (nanstd_g r + eps)].  rewards (B, G) -> (B, G); NaN rewards -> 0."""
    mean = torch.nanmean(rewards, dim=1, keepdim=True)  # (B, 1)
    adv = rewards - mean
    if scale_std:
        adv = adv / (nanstd(rewards, 1, std_estimator) + eps)
    return adv.nan_to_num(0.0)  # unscorable rollouts (and all-NaN groups) get no gradient


def rloo_advantages(rewards: Tensor, scale_std: bool = False, std_estimator: str = "population",
                    eps: float = 1e-4) -> Tensor:
    """A_i = r_i - mean_{j != i} r_j over valid entries = c/(c-1) (r_i - mean r); groups with c < 2 -> 0."""
    valid = ~torch.isnan(rewards)
    count = valid.sum(dim=1, keepdim=True).to(rewards.dtype)  # (B, 1)
    total = torch.where(valid, rewards, torch.zeros_like(rewards)).sum(dim=1, keepdim=True)
    loo_mean = (total - rewards) / (count - 1).clamp(min=1)
    adv = torch.where(count >= 2, rewards - loo_mean, torch.zeros_like(rewards))
    if scale_std:
        adv = adv / (nanstd(rewards, 1, std_estimator) + eps)
    return adv.nan_to_num(0.0)


ADVANTAGES = {"grpo": grpo_advantages, "rloo": rloo_advantages}


def compute_advantages(rewards: Tensor, estimator: str = "grpo", scale_std: bool = True,
                       std_estimator: str = "population", eps: float = 1e-4, n_update: int | None = None) -> Tensor:
    """Advantages (B, n_update) from rewards (B, n_est); statistics use all n_est columns (decoupled baseline).

    For rloo with n_update < n_est the leave-one-out baseline of rollout i still excludes only i itself."""
    if estimator not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator '{estimator}'; valid: {', '.join(ADVANTAGES)}")
    adv = ADVANTAGES[estimator](rewards, scale_std=scale_std, std_estimator=std_estimator, eps=eps)
    n_update = rewards.shape[1] if n_update is None else n_update
    return adv[:, :n_update]


def zero_variance_groups(rewards: Tensor) -> Tensor:
    """(B,) True where all valid rewards of a group are equal (or fewer than 2 are valid): no learning signal."""
    valid = ~torch.isnan(rewards)
    big = torch.finfo(rewards.dtype).max
    hi = torch.where(valid, rewards, torch.full_like(rewards, -big)).amax(dim=1)
    lo = torch.where(valid, rewards, torch.full_like(rewards, big)).amin(dim=1)
    return (valid.sum(dim=1) < 2) | (hi == lo)
