"""The Policy protocol: one interface over the tiny lab GPT and any Hugging Face causal LM.

A policy owns a tokenizer and a torch module, computes per-token log-probs of given sequences (the RL loss needs
them), reports its size and FLOPs per token (for compute accounting), saves/loads itself, and makes a Sampler.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from rlscale.engine.base import Sampler


def logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                         with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits / temperature)[targets] in fp32, and the entropy of that distribution when with_entropy.

    logits (..., V), targets (...) of token ids -> (logp (...), entropy (...) | None). temperature <= 0 (greedy) or 1
    leaves the logits unscaled. The math of every Policy.token_logprobs: pass logits[:, :-1] and input_ids[:, 1:].
    """
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logp, ent


CHUNK_ELEMENTS = 1 << 24
"""(row x vocabulary) elements of one chunk of lean_logprobs_from_logits: 64 MB of fp32 transients"""


class _LogprobEntropy(torch.autograd.Function):
    """(logp of the targets, entropy) of softmax(z / T) over the last dim, chunked over rows: only z itself is kept
    for the backward, which recomputes each chunk's softmax and writes the gradient into one tensor of z's shape and
    dtype. Computed in fp32 (fp64 for fp64 z), the logits' own dtype untouched."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool):
        V = z.shape[-1]
        z2, t2 = z.reshape(-1, V), targets.reshape(-1)
        ct = torch.promote_types(z.dtype, torch.float32)
        rows = max(1, CHUNK_ELEMENTS // V)
        lse, logp, ent = (torch.empty(z2.shape[0], dtype=ct, device=z.device) for _ in range(3))
        for c in range(0, z2.shape[0], rows):
            zc = z2[c:c + rows].to(ct) / temperature
            lse[c:c + rows] = torch.logsumexp(zc, -1)
            lp = zc.sub_(lse[c:c + rows, None])  # log p, in place of the chunk's scaled copy
            logp[c:c + rows] = lp.gather(-1, t2[c:c + rows, None]).squeeze(-1)
            if with_entropy:
                ent[c:c + rows] = -(lp.exp() * lp).sum(-1)
        ctx.save_for_backward(z, t2, lse, ent)
        ctx.temperature, ctx.with_entropy = temperature, with_entropy
        shape = targets.shape
        return logp.view(shape), (ent.view(shape) if with_entropy else None)

    @staticmethod
    def backward(ctx, g_logp: torch.Tensor, g_ent: torch.Tensor | None):
        z, t2, lse, ent = ctx.saved_tensors
        T, V = ctx.temperature, z.shape[-1]
        z2, ct = z.reshape(-1, V), lse.dtype
        g_lp = (torch.zeros_like(lse) if g_logp is None else g_logp.reshape(-1).to(ct)) / T
        g_h = None if (g_ent is None or not ctx.with_entropy) else g_ent.reshape(-1).to(ct) / T
        grad = torch.empty_like(z2)
        rows = max(1, CHUNK_ELEMENTS // V)
        for c in range(0, z2.shape[0], rows):
            sl = slice(c, c + rows)
            lp = torch.div(z2[sl].to(ct), T).sub_(lse[sl, None])  # log p (a new tensor: z is never written)
            p = lp.exp()
            if g_h is not None:  # dH/dz_j = -p_j (log p_j + H) / T
                gc = lp.add_(ent[sl, None]).mul_(p).mul_(-g_h[sl, None])
                gc.sub_(p.mul_(g_lp[sl, None]))
            else:
                gc = p.mul_(-g_lp[sl, None])
            gc.scatter_add_(-1, t2[sl, None], g_lp[sl, None])  # d logp_t / dz_j = (1[j = t] - p_j) / T
            grad[sl] = gc
        return grad.view(z.shape), None, None, None


def lean_logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                              with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logprobs_from_logits for large vocabularies (Hugging Face models, V ~ 150k): the same values to float
    rounding, in chunks of rows (_LogprobEntropy), keeping no (..., V) tensor for the backward but the logits and
    allocating one for their gradient. At 4 x 512 tokens of a 152k vocabulary one fp32 copy is 1.2 GB; the
    forward + backward needs 5 above the logits by log_softmax, ~1 this way (bench/logprobs_memory.py)."""
    t = temperature if temperature > 0 else 1.0
    return _LogprobEntropy.apply(logits, targets, t, with_entropy)


def left_pad(seqs: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids (B, W), mask (B, W)) left-padded to W = width or the longest; mask 1 = real token."""
    W = max(len(s) for s in seqs) if width is None else width
    if any(len(s) > W for s in seqs):
        raise ValueError(f"left_pad: a sequence is longer than width {W}")
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    # one tensor construction (per-row tensor writes cost ~40 us a row, a tenth of a lab sampler chunk)
    ids = torch.tensor([[pad_id] * (W - len(s)) + list(s) for s in seqs], dtype=torch.long).view(len(seqs), W)
    mask = (torch.arange(W)[None, :] >= (W - lens)[:, None]).long()
    return ids, mask


def packed_completion_logprobs(policy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, comp_ids: torch.Tensor,
                               group: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Policy.completion_logprobs by the unshared route, for any policy with token_logprobs: row r is the sequence
    prompt[group[r]] (pads removed) + comp_ids[r], right-padded; the log-probs of its completion positions are
    gathered into (R, C). The reference the shared-prefix forward of the lab model is tested against."""
    R, C = comp_ids.shape
    prompts = [prompt_ids[g][prompt_mask[g].bool()] for g in range(prompt_ids.shape[0])]
    plen = torch.tensor([len(prompts[g]) for g in group.tolist()])  # (R,)
    L = int(plen.max()) + C
    ids = torch.full((R, L), int(policy.tokenizer.pad_id), dtype=torch.long)
    attn = torch.zeros((R, L), dtype=torch.long)
    for r, g in enumerate(group.tolist()):
        seq = torch.cat((prompts[g], comp_ids[r]))
        ids[r, :len(seq)] = seq
        attn[r, :len(seq)] = 1  # completion pads count as tokens: right padding, never seen by real positions
    logp, ent = policy.token_logprobs(ids, attn, temperature, with_entropy)  # (R, L-1)
    at = (plen - 1)[:, None] + torch.arange(C)  # (R, C): logp coordinate of completion token t
    return logp.gather(1, at), None if ent is None else ent.gather(1, at)


@runtime_checkable
class Tokenizer(Protocol):
    eos_id: int
    pad_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@runtime_checkable
class Policy(Protocol):
    kind: str  # "tiny" or "hf"
    tokenizer: Tokenizer
    module: torch.nn.Module

    def token_logprobs(
        self,
        input_ids: torch.Tensor,  # (B, T) right-padded
        attention_mask: torch.Tensor,  # (B, T) 1 for real tokens
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """logp[b, t] = log p(input_ids[b, t+1] | input_ids[b, :t+1]) under softmax(logits / temperature): (B, T-1);
        entropy (B, T-1) of that full distribution when with_entropy."""
        ...

    def completion_logprobs(
        self,
        prompt_ids: torch.Tensor,  # (G, P) left-padded prompts
        prompt_mask: torch.Tensor,  # (G, P) 1 for real tokens
        comp_ids: torch.Tensor,  # (R, C) right-padded completions
        group: torch.Tensor,  # (R,) prompt index of each completion row
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """logp[r, t] = log p(comp_ids[r, t] | prompt[group[r]], comp_ids[r, :t]): (R, C) (what the RL update
        needs); entropy (R, C) when with_entropy. `packed_completion_logprobs` is the generic implementation."""
        ...

    def num_params(self) -> int: ...

    def flops_per_token(self, context_len: int) -> float:
        """Forward FLOPs for one token at the given context length (2 * N_nonembed + attention)."""
        ...

    def sampler(self) -> Sampler: ...

    def save(self, path: str) -> None: ...
