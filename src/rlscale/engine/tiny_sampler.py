"""Batched KV-cache sampler for the lab's TinyGPT (the fast path of every lab RL run).

Rows (prompt x sample) are sorted by prompt length and processed in chunks of at most `max_batch`; each chunk is
left-padded to a multiple of 8 (few distinct shapes -> no CPU kernel warm-up churn), prefilled in one pass with
per-row positions and a key-padding mask, then decoded one token per step from a preallocated KV cache, with
fused QKV and gate/up projections. Finished rows are dropped from the batch every `compact_every` steps.

Sampling is Gumbel-max over softmax(logits / T) restricted to the top-p nucleus, with the Gumbel noise of each row
pre-drawn from a generator seeded by that row's seed: the same seed gives the same tokens whatever the batch
composition. Temperature 0 is greedy. Log-probs are of softmax(logits / T) (T = 1 when greedy), before top-p.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rlscale.engine.base import Rollout, SamplingParams, default_seeds
from rlscale.errors import UserError
from rlscale.models.tiny import TinyPolicy, rope_cos_sin, rotate_half


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class _Weights:
    """A snapshot of the module's weights in the layout the decode loop wants (fused, pre-transposed)."""

    def __init__(self, policy: TinyPolicy):
        m = policy.module.model
        self.emb = m.embed_tokens.weight.detach()
        self.head_t = self.emb.t().contiguous()  # (d, V) tied output head
        self.layers = []
        for layer in m.layers:
            a, f = layer.self_attn, layer.mlp
            self.layers.append((
                layer.input_layernorm.weight.detach(), layer.input_layernorm.variance_epsilon,
                torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach().t().contiguous(),  # (d, 3d)
                a.o_proj.weight.detach().t().contiguous(),  # (d, d)
                layer.post_attention_layernorm.weight.detach(),
                torch.cat([f.gate_proj.weight, f.up_proj.weight]).detach().t().contiguous(),  # (d, 2ff)
                f.down_proj.weight.detach().t().contiguous(),  # (ff, d)
            ))
        self.norm_w, self.norm_eps = m.norm.weight.detach(), m.norm.variance_epsilon


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class TinySampler:
    """Sampler protocol for TinyPolicy. generate(prompts, params, seeds) -> per prompt, params.n Rollouts."""

    def __init__(self, policy: TinyPolicy, max_batch: int = 256, compact_every: int = 8, bucket: int = 8):
        self.policy = policy
        self.max_batch = max_batch
        self.compact_every = compact_every
        self.bucket = bucket

    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]] | None = None) -> list[list[Rollout]]:
        tok = self.policy.tokenizer
        ctx = self.policy.config.max_seq_len
        if params.n < 1 or params.max_new_tokens < 1:
            raise UserError(f"sampling: n={params.n} and max_new_tokens={params.max_new_tokens} must be >= 1")
        if not 0.0 < params.top_p <= 1.0 or params.temperature < 0:
            raise UserError(f"sampling: top_p={params.top_p} must be in (0, 1], temperature >= 0")
        seeds = default_seeds(params, len(prompts)) if seeds is None else seeds
        if len(seeds) != len(prompts) or any(len(s) != params.n for s in seeds):
            raise UserError(f"sampling: seeds must be {len(prompts)} lists of n={params.n} seeds")
        enc = [tok.encode(p) for p in prompts]
        for i, ids in enumerate(enc):
            if not ids:
                raise UserError(f"prompt {i} is empty; the lab model needs at least one prompt token")
            if len(ids) >= ctx:
                raise UserError(f"prompt {i} has {len(ids)} tokens but the model context is {ctx}; shorten it")
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        rows.sort(key=lambda r: len(enc[r[0]]))  # similar lengths share a chunk
        out: list[list[Rollout | None]] = [[None] * params.n for _ in prompts]
        w = _Weights(self.policy)
        with torch.inference_mode():
            for c in range(0, len(rows), self.max_batch):
                chunk = rows[c:c + self.max_batch]
                res = self._generate_chunk(w, [enc[i] for i, _ in chunk], [int(seeds[i][j]) for i, j in chunk],
                                           params)
                for (i, j), (ids, lps, fin) in zip(chunk, res):
                    out[i][j] = Rollout(prompt_index=i, sample_index=j, prompt_ids=enc[i], token_ids=ids,
                                        text=tok.decode(ids), logprobs=lps, finished=fin, seed=int(seeds[i][j]))
        return out  # type: ignore[return-value]

    # -- one chunk ------------------------------------------------------------------------------------------------
    def _generate_chunk(self, w: _Weights, enc: list[list[int]], seeds: list[int], params: SamplingParams):
        cfg = self.policy.config
        tok = self.policy.tokenizer
        B, H, hd, V = len(enc), cfg.n_heads, cfg.head_dim, cfg.vocab_size
        lens = torch.tensor([len(e) for e in enc])
        P = round_up(int(lens.max()), self.bucket)
        max_new = params.max_new_tokens
        limit = torch.clamp(cfg.max_seq_len - lens, max=max_new)  # per-row new-token budget (context-bounded)
        steps = int(limit.max())
        Tmax = P + steps

        ids = torch.full((B, P), tok.pad_id, dtype=torch.long)
        for b, e in enumerate(enc):
            ids[b, P - len(e):] = torch.tensor(e)
        pad = P - lens  # (B,) left padding per row
        key_ok = torch.zeros(B, Tmax, dtype=torch.bool)
        key_ok[:, :P] = torch.arange(P)[None] >= pad[:, None]
        key_ok[:, P:] = True
        bias = torch.zeros(B, Tmax).masked_fill_(~key_ok, float("-inf"))  # (B, Tmax) additive key mask

        greedy = params.temperature == 0
        if not greedy:  # per-row Gumbel noise: depends only on the row's seed
            noise = torch.empty(B, steps, V)
            for b, s in enumerate(seeds):
                g = torch.Generator().manual_seed(s)
                noise[b] = torch.rand(steps, V, generator=g)
            noise = -torch.log(-torch.log(noise.clamp_(1e-10, 1.0 - 1e-7)))

        cos_t, sin_t = rope_cos_sin(torch.arange(cfg.max_seq_len + 1), hd, cfg.rope_theta)  # (ctx+1, hd)
        K = [torch.zeros(B, H, hd, Tmax) for _ in w.layers]  # keys stored transposed: q @ K[..., :t] is fast
        Vc = [torch.zeros(B, H, Tmax, hd) for _ in w.layers]

        # prefill (B, P): same math as TinyGPT.forward with a left-padding mask
        am = key_ok[:, :P]
        pos = (am.long().cumsum(-1) - 1).clamp(min=0)
        cos, sin = cos_t[pos][:, None], sin_t[pos][:, None]  # (B, 1, P, hd)
        mask = (torch.ones(P, P, dtype=torch.bool).tril()[None, None] & am[:, None, None, :]) | \
            torch.eye(P, dtype=torch.bool)[None, None]
        x = w.emb[ids]  # (B, P, d)
        for li, (n1, eps, wqkv, wo, n2, wgu, wd) in enumerate(w.layers):
            qkv = (_rms(x, n1, eps) @ wqkv).view(B, P, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, P, hd)
            q, k, v = qkv[0], qkv[1], qkv[2]
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            K[li][..., :P] = k.transpose(-1, -2)
            Vc[li][:, :, :P] = v
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + y.transpose(1, 2).reshape(B, P, -1) @ wo
            gu = _rms(x, n2, eps) @ wgu
            g, u = gu.chunk(2, dim=-1)
            x = x + (F.silu(g) * u) @ wd
        x = x[:, -1]  # (B, d) last prompt position
        logits = _rms(x, w.norm_w, w.norm_eps) @ w.head_t  # (B, V)

        # decode loop
        rows = torch.arange(B)  # original row index of each active row
        end_at = torch.full((B,), -1, dtype=torch.long)  # number of generated tokens kept per row, once ended
        stopped = [False] * B  # ended by a stop string
        texts = [""] * B
        stops = tuple(params.stop)
        eos = tok.eos_id
        all_tokens = torch.full((B, steps), eos, dtype=torch.long)
        all_lp = torch.zeros(B, steps)
        scale = hd ** -0.5
        T = 1.0 if greedy else params.temperature
        for t in range(steps):
            lp_all = torch.log_softmax(logits / T if T != 1.0 else logits, dim=-1)  # (b, V)
            if greedy:
                nxt = logits.argmax(-1)
            else:
                z = lp_all
                if params.top_p < 1.0:  # keep the smallest set of tokens whose mass reaches top_p
                    sp, si = lp_all.exp().sort(dim=-1, descending=True)
                    drop_sorted = (sp.cumsum(-1) - sp) >= params.top_p
                    z = lp_all.masked_fill(torch.zeros_like(drop_sorted).scatter_(-1, si, drop_sorted), float("-inf"))
                nxt = (z + noise[rows, t]).argmax(-1)  # Gumbel-max = a sample of softmax(z)
            all_tokens[rows, t] = nxt
            all_lp[rows, t] = lp_all.gather(-1, nxt[:, None]).squeeze(-1)
            ended = end_at[rows] >= 0
            done = (nxt == eos) | (t + 1 >= limit[rows])
            if stops:
                for r_i in (~ended).nonzero().squeeze(-1).tolist():
                    r = int(rows[r_i])
                    texts[r] += tok.decode([int(nxt[r_i])])
                    if any(texts[r].endswith(s) for s in stops):
                        done[r_i] = True
                        stopped[r] = True
            newly = done & ~ended
            end_at[rows[newly]] = t + 1
            ended = ended | newly
            if bool(ended.all()) or t == steps - 1:
                break
            if t % self.compact_every == self.compact_every - 1 and bool(ended.any()):  # drop ended rows
                keep = (~ended).nonzero().squeeze(-1)
                rows, nxt, bias = rows[keep], nxt[keep], bias[keep]
                K = [k_[keep] for k_ in K]
                Vc = [v_[keep] for v_ in Vc]
            # one decode step for every active row (ended-but-not-yet-dropped rows compute ignored tokens)
            b = rows.shape[0]
            tc = P + t  # cache slot of the token being fed
            p = lens[rows] + t  # (b,) RoPE position of the token being fed
            cos, sin = cos_t[p][:, None, None, :], sin_t[p][:, None, None, :]  # (b, 1, 1, hd)
            x = w.emb[nxt]  # (b, d)
            for li, (n1, eps, wqkv, wo, n2, wgu, wd) in enumerate(w.layers):
                qkv = (_rms(x, n1, eps) @ wqkv).view(b, 3, H, hd)
                qk = qkv[:, :2]  # (b, 2, H, hd): RoPE on q and k in one pass
                qk = qk * cos + rotate_half(qk) * sin
                q, k, v = qk[:, 0], qk[:, 1], qkv[:, 2]  # (b, H, hd)
                K[li][..., tc] = k
                Vc[li][:, :, tc] = v
                att = (q[:, :, None, :] @ K[li][..., :tc + 1]) * scale  # (b, H, 1, tc+1)
                att = torch.softmax(att + bias[:, None, None, :tc + 1], dim=-1)
                y = (att @ Vc[li][:, :, :tc + 1]).reshape(b, -1)  # (b, d)
                x = x + y @ wo
                g, u = (_rms(x, n2, eps) @ wgu).chunk(2, dim=-1)
                x = x + (F.silu(g) * u) @ wd
            logits = _rms(x, w.norm_w, w.norm_eps) @ w.head_t  # (b, V)

        toks, lps, ends = all_tokens.tolist(), all_lp.tolist(), end_at.tolist()
        res = []
        for r in range(B):
            n = ends[r] if ends[r] >= 0 else steps
            ids_r = toks[r][:n]
            res.append((ids_r, lps[r][:n], stopped[r] or (n > 0 and ids_r[-1] == eos)))
        return res
