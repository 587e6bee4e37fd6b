"""`HFSampler`: the Sampler protocol over any HF causal LM, with a batched KV-cache decode loop of our own.

Rows (prompt x sample) are sorted by prompt length and processed in chunks of `max_batch`; each chunk is left-padded
(positions start at each row's first real token), prefilled in one forward pass, then decoded one token per step
with the model's KV cache. Each row draws its sampling noise from its own torch.Generator seeded by the row's
seed (one uniform per step, inverse-CDF sampling over the top-p nucleus), so the same seed gives the same tokens
whatever the batch composition. Temperature 0 is greedy (argmax, identical to `model.generate(do_sample=False)`).
Log-probs are of softmax(logits / T) (T = 1 when greedy), before top-p (see rlscale.engine.base).
Generation of a row stops at EOS, after a stop string (kept in the text; the text is cut right after it), or
after max_new_tokens (then finished=False: truncated).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlscale.engine.base import Rollout, SamplingParams, default_seeds
from rlscale.errors import UserError
from rlscale.models.base import left_pad


def sample_rows(logits: Tensor, temperature: float, top_p: float, uniforms: Tensor,
                stats: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One token per row. logits (B, V) float, uniforms (B,) in [0, 1) -> (tokens (B,), logp (B,) of the sampling
    distribution softmax(logits / T), T = 1 when greedy, and that distribution's entropy (B,), before top-p); with
    `stats` False (SamplingParams.logprobs off) the same tokens and None for the other two."""
    if temperature <= 0 and not stats:
        return logits.argmax(-1), None, None
    logp_all = torch.log_softmax(logits / temperature if temperature > 0 else logits, -1)  # (B, V)
    probs = logp_all.exp()
    entropy = -(probs * logp_all).sum(-1) if stats else None
    if temperature <= 0:
        tokens = logits.argmax(-1)
        return tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1), entropy
    sorted_p, order = probs.sort(-1, descending=True)  # (B, V)
    cum = sorted_p.cumsum(-1)
    if top_p < 1.0:
        keep = (cum - sorted_p) < top_p  # smallest prefix with mass >= top_p (the top token is always kept)
        sorted_p = sorted_p * keep
        cum = sorted_p.cumsum(-1)
    target = uniforms[:, None] * cum[:, -1:]  # (B, 1)
    idx = (cum <= target).sum(-1).clamp(max=sorted_p.shape[-1] - 1)  # first index whose cumsum exceeds target
    # never land on a zero-probability (cut) entry because of rounding
    idx = torch.minimum(idx, (sorted_p > 0).sum(-1) - 1)
    tokens = order.gather(-1, idx[:, None]).squeeze(-1)
    return tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1) if stats else None, entropy


class HFSampler:
    """Sampler protocol for HFPolicy. generate(prompts, params, seeds) -> per prompt, params.n Rollouts."""

    def __init__(self, policy, max_batch: int = 64):
        self.policy = policy
        self.max_batch = max_batch

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]] | None = None) -> list[list[Rollout]]:
        if params.n < 1 or params.max_new_tokens < 1:
            raise UserError(f"sampling: need n >= 1 and max_new_tokens >= 1 (got {params.n}, {params.max_new_tokens})")
        if not 0 < params.top_p <= 1:
            raise UserError(f"sampling: top_p={params.top_p} must be in (0, 1]")
        seeds = default_seeds(params, len(prompts)) if seeds is None else seeds
        if len(seeds) != len(prompts) or any(len(s) != params.n for s in seeds):
            raise UserError(f"sampling: seeds must be {len(prompts)} lists of n={params.n} seeds")
        tok = self.policy.tokenizer
        prompt_ids = [tok.encode_prompt(p) for p in prompts]
        limit = self.policy.max_context
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise UserError(f"prompt {i} is empty after tokenisation")
            if limit is not None and len(ids) + params.max_new_tokens > limit:
                raise UserError(f"prompt {i} has {len(ids)} tokens + max_new_tokens {params.max_new_tokens} > the "
                                f"model's context {limit}; shorten the prompt or lower --max-new-tokens")
        rows = [(i, j, int(seeds[i][j])) for i in range(len(prompts)) for j in range(params.n)]
        rows.sort(key=lambda r: len(prompt_ids[r[0]]))
        out: list[list[Rollout | None]] = [[None] * params.n for _ in prompts]
        for lo in range(0, len(rows), self.max_batch):
            chunk = rows[lo:lo + self.max_batch]
            for r in self._generate_chunk([prompt_ids[i] for i, _, _ in chunk], chunk, params):
                out[r.prompt_index][r.sample_index] = r
        return out  # type: ignore[return-value]

    def _generate_chunk(self, prompt_ids: list[list[int]], rows: list[tuple[int, int, int]],
                        params: SamplingParams) -> list[Rollout]:
        model, tok = self.policy.module, self.policy.tokenizer
        device = next(model.parameters()).device
        b = len(rows)
        ids, mask = left_pad(prompt_ids, tok.pad_id)
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [torch.Generator().manual_seed(seed % (1 << 63)) for _, _, seed in rows]

        cache_arg = _cache_kwarg(model)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        past, logits = _cache_of(out), out.logits[:, -1].float()
        last_pos = pos[:, -1]
        tokens: list[list[int]] = [[] for _ in rows]
        logps: list[list[float]] = [[] for _ in rows]
        ents: list[list[float]] = [[] for _ in rows]
        done = [False] * b
        finished = [False] * b
        cut: list[int | None] = [None] * b
        for _ in range(params.max_new_tokens):
            u = torch.stack([torch.rand((), generator=g) for g in gens]).to(device)  # one draw per row per step
            nxt, lp, ent = sample_rows(logits, params.temperature, params.top_p, u, stats=params.logprobs)
            nxt_l = nxt.tolist()
            lp_l, ent_l = (lp.tolist(), ent.tolist()) if params.logprobs else (None, None)
            for r in range(b):
                if done[r]:
                    continue
                tokens[r].append(nxt_l[r])
                if lp_l is not None:
                    logps[r].append(lp_l[r])
                    ents[r].append(ent_l[r])
                if nxt_l[r] == tok.eos_id:
                    done[r] = finished[r] = True
                elif params.stop:
                    end = _stop_end_tail(tok, tokens[r], params.stop)
                    if end is not None:
                        done[r] = finished[r] = True
                        cut[r] = end
            if all(done):
                break
            feed = torch.tensor([t if not d else tok.pad_id for t, d in zip(nxt_l, done)], device=device)
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
            last_pos = last_pos + 1
            out = model(input_ids=feed[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                        use_cache=True, **{cache_arg: past})
            past, logits = _cache_of(out), out.logits[:, -1].float()

        rollouts = []
        for r, (i, j, seed) in enumerate(rows):
            body = tokens[r][:-1] if finished[r] and tokens[r] and tokens[r][-1] == tok.eos_id else tokens[r]
            text = tok.decode(body)
            if cut[r] is not None:
                text = text[:cut[r]]
            rollouts.append(Rollout(prompt_index=i, sample_index=j, prompt_ids=list(prompt_ids[r]),
                                    token_ids=tokens[r], text=text, logprobs=logps[r], finished=finished[r],
                                    seed=seed, entropies=ents[r] if params.logprobs else None))
        return rollouts


def _cache_kwarg(model) -> str:
    """The forward's KV-cache argument: `cache` (transformers >= 5.2x; `past_key_values` is deprecated there and
    removed in 5.40) or `past_key_values` (earlier versions and models that still take it)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    """The KV cache of a forward's output, under either name (see _cache_kwarg)."""
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


STOP_WINDOW_SLACK = 8
"""tokens beyond the longest stop string's length in characters that the per-step stop check decodes"""


def _stop_end_tail(tok, tokens: list[int], stops: Sequence[str]) -> int | None:
    """_stop_end of the decoded tokens, checked first on a tail of them. A stop string first appears when the newest
    token completes it, so it lies in the last len(stop) characters, which the last len(stop) + STOP_WINDOW_SLACK
    tokens hold (a token decodes to >= 1 character, bar special tokens and split multi-byte characters: the slack).
    Decoding that tail instead of the whole completion makes the check O(1) per step, not O(length): a 256-token
    decode costs ~100 us (measured), so ~3 s per 64-row chunk of 512 tokens (estimated from it). A tail hit is
    confirmed on the full text."""
    window = max(len(s) for s in stops) + STOP_WINDOW_SLACK
    if len(tokens) > window and not any(s and s in tok.decode(tokens[-window:]) for s in stops):
        return None
    return _stop_end(tok.decode(tokens), stops)


def _stop_end(text: str, stops: Sequence[str]) -> int | None:
    """End index of the earliest-ending stop string in text, or None."""
    ends = [text.find(s) + len(s) for s in stops if s and s in text]
    return min(ends) if ends else None
