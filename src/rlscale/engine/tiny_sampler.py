"""Batched KV-cache sampler for the lab's TinyGPT (the fast path of every lab RL run).

Rows (prompt x sample) are sorted by prompt length and processed in chunks of at most `max_batch` (default 64:
on this CPU the decode step is bound by KV-cache memory traffic at 256 rows and by per-op overhead below ~32, and
length-sorted chunks of 64 also pad prompts less); each chunk is left-padded to a multiple of 8, its distinct
prompts prefilled once in one pass (the n samples of a prompt share the prefill; in the torch loop their KV-cache
slots are copies, the C loop's rows read one copy of their prompt's keys and values: a group's rows run one after
another, so it is read from cache rather than memory, which made the C loop's attention ~1.8x faster at n = 8)
with per-row positions and a key-padding mask, then decoded one token per step from a KV cache that attention
reads only up to the filled slot. Norm gains, the attention scale and (for the torch loop) RoPE's rotate_half are
folded into the projection weights once per call (see `_Weights`). The prefill and the decode loop run in C
(`_tiny_decode.c`, built on first use by rlscale.engine.native: the chunk's distinct prompts in one pass, then one
pass over the active rows per token, register-blocked matmuls) when it builds and the request has no stop strings,
no top-p and head size <= 128; otherwise, and as the reference the tests compare it with, in torch:
~25 small kernels per layer and step, finished rows dropped from the batch every `compact_every` steps, or as soon
as a quarter of the batch has ended.

Sampling is Gumbel-max over softmax(logits / T) restricted to the top-p nucleus (the sort runs only when
top_p < 1), with the Gumbel noise of each row pre-drawn from a generator seeded by that row's seed: the same seed
gives the same tokens whatever the batch composition. Temperature 0 is greedy. Log-probs are of softmax(logits / T)
(T = 1 when greedy), before top-p.

With `keep_activations`, the C path also saves every row's per-layer activations (`SavedActivations`) in the layout
of the fused trunk, so the on-policy RL update can run its backward without recomputing the forward
(rlscale.models.fused.forward_grouped_replay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rlscale.compute import round_up
from rlscale.engine.base import Rollout, SamplingParams, default_seeds, first_occurrences, thread_map
from rlscale.errors import UserError
from rlscale.models.base import left_pad
from rlscale.models.tiny import TinyPolicy, padded_causal, rope_cos_sin, rotate_half


class _Weights:
    """A snapshot of the module's weights in the layout the decode loop wants.

    Everything that is linear in a projection's output is folded into its weights once per `generate`, so the
    per-step op count is small: RMSNorm gains are folded into the rows of the next projection, the attention scale
    hd**-0.5 into the query columns, and (for the torch loop, `rot=True`) RoPE's `rotate_half` (a signed
    permutation within each head) into two extra blocks of columns, so RoPE is `qk * cos + qk_rot * sin` with no
    concat/negate. Layer tuple: (eps, wqkvr (d, 5d): [q*s, k, v, rot(q*s), rot(k)] or with rot=False wqkv (d, 3d):
    [q*s, k, v] (the C loop rotates q and k itself), wo (d, d), wgu (d, 2ff) with the post-attention norm folded in,
    wd (ff, d))."""

    def __init__(self, policy: TinyPolicy, rot: bool = True):
        m = policy.module.model
        cfg = policy.config
        H, hd = cfg.n_heads, cfg.head_dim
        scale = hd ** -0.5
        self.emb = m.embed_tokens.weight.detach()
        self.norm_eps = m.norm.variance_epsilon
        self.head_t = (m.norm.weight.detach()[:, None] * self.emb.t()).contiguous()  # (d, V) tied head, norm folded
        self.layers = []
        for layer in m.layers:
            a, f = layer.self_attn, layer.mlp
            n1 = layer.input_layernorm.weight.detach()[:, None]
            n2 = layer.post_attention_layernorm.weight.detach()[:, None]
            wq = a.q_proj.weight.detach().t() * scale  # (d, d), output columns grouped per head
            wk = a.k_proj.weight.detach().t()
            rots = [rotate_half(w.reshape(w.shape[0], H, hd)).reshape(w.shape) for w in (wq, wk)] if rot else []
            wqkvr = torch.cat([wq, wk, a.v_proj.weight.detach().t(), *rots], dim=1)  # (d, 5d) or (d, 3d)
            self.layers.append((
                layer.input_layernorm.variance_epsilon,
                (n1 * wqkvr).contiguous(),
                a.o_proj.weight.detach().t().contiguous(),  # (d, d)
                (n2 * torch.cat([f.gate_proj.weight, f.up_proj.weight]).detach().t()).contiguous(),  # (d, 2ff)
                f.down_proj.weight.detach().t().contiguous(),  # (ff, d)
            ))
        self.c_args = None
        """for the C loop (rot=False): the per-layer weight-pointer arrays (wqkv, wo, wgu, wd) and the eps tensor,
        built once per generate call and shared by every chunk's prefill and decode (the tensors live in self)"""
        if not rot:
            from rlscale.engine.native import ptr_array

            self.eps = torch.tensor([lay[0] for lay in self.layers], dtype=torch.float32)
            self.c_args = tuple(ptr_array(x) for x in zip(*[lay[1:] for lay in self.layers]))


SAVED_PER_LAYER = 5  # x, [q, k, v] after RoPE, x after attention, [g, u], silu(g) * u (see _tiny_decode.c)


def saved_widths(cfg) -> list[int]:
    """Row widths of the saved activation buffers: per layer [d, 3d, d, 2ff, ff], then the final x (d)."""
    d, ff = cfg.d_model, cfg.d_ff
    return [d, 3 * d, d, 2 * ff, ff] * cfg.n_layers + [d]


@dataclass
class SavedActivations:
    """The forward activations the sampler computed for its rollouts, for the RL update's backward.

    `tensors`: the 5 L + 1 buffers of `saved_widths` (rows, width); their last row (`zero_row`) is zeros, for the
    positions no forward fed (prompt padding, a completion's last token and anything after it). Rollout (prompt i,
    sample j): `prompt_row[(i, j)]` is the row of its prompt's first token (the prompt's tokens follow), and its
    completion position t < `fed[(i, j)]` is at row `comp_start[(i, j)] + t * comp_stride[(i, j)]`."""
    tensors: list[Tensor]
    zero_row: int
    prompt_row: dict
    comp_start: dict
    comp_stride: dict
    fed: dict

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


NOISE_WINDOW = 64
"""decode steps per call of the C loop when sampling: each call's Gumbel noise is drawn for the rows still running
(the lab's completions end at ~50 of 128 steps, so one draw for all steps drew ~2.5x the noise used). A window
also costs a call and a draw per running row: on the quick lab's validation sets (2,400 rollouts, Zen 1, medians
of 5 alternating) a call took 2.408 s with one window, 2.375 s with 32 steps, 2.361 s with 64, 2.437 s with 16"""


def draw_noise(gens: list[torch.Generator], rows: Sequence[int], steps: int, V: int, T: float) -> Tensor:
    """(len(rows), steps, V) T * Gumbel noise: each row's next steps x V uniform draws from its generator (which
    then stands after them, so a later call continues the row's stream), transformed in place. argmax(logits + T g)
    samples softmax(logits / T), with no per-step division of the logits for the choice."""
    u = torch.empty(len(rows), steps, V)
    for k, b in enumerate(rows):
        torch.rand(steps, V, generator=gens[b], out=u[k])
    u = u.clamp_(1e-10, 1.0 - 1e-7).log_().neg_().log_().neg_()
    return u.mul_(T) if T != 1.0 else u


def _rms(x: Tensor, eps: float) -> Tensor:
    """RMSNorm without the gain (folded into the next projection's weights)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # F.rms_norm is slower on CPU (dtype casts)


class TinySampler:
    """Sampler protocol for TinyPolicy. generate(prompts, params, seeds) -> per prompt, params.n Rollouts."""

    def __init__(self, policy: TinyPolicy, max_batch: int = 64, compact_every: int = 8, bucket: int = 8,
                 native: bool | None = None, workers: int = 1, keep_activations: bool = False,
                 activation_budget: int = 2 << 30):
        self.policy = policy
        self.max_batch = max_batch
        self.compact_every = compact_every
        self.bucket = bucket
        self.native = native
        """decode loop: True = the C loop (rlscale.engine.native), False = torch, None = C when it builds"""
        self.workers = max(1, workers)
        """chunks decoded concurrently, one per thread (torch ops and the C loop release the GIL); chunks are cut
        to at most rows / workers so that a single batch uses every worker. Tokens do not depend on it."""
        self.keep_activations = keep_activations
        """save the rollouts' forward activations (C path only; see SavedActivations) into self.activations"""
        self.activation_budget = activation_budget
        """bytes the saved activations may take; a larger request keeps none (the update then recomputes them)"""
        self.activations: SavedActivations | None = None

    def _native_lib(self, params: SamplingParams):
        """The C library when it applies: no stop strings (matched on decoded text), no top-p, head size <= 128."""
        if self.native is False or params.stop or (params.top_p < 1.0 and params.temperature > 0) \
                or self.policy.config.head_dim > 128:  # the C attention keeps a head in <= 16 vectors
            return None
        from rlscale.engine import native

        lib = native.load()
        if lib is None and self.native:
            raise UserError("native sampler requested but it could not be built (see the message above); "
                            "install a C compiler or use native=False")
        return lib

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
        fp32 = self.policy.module.model.embed_tokens.weight.dtype == torch.float32
        lib = self._native_lib(params) if fp32 else None  # decided once per call
        w = _Weights(self.policy, rot=lib is None)
        size = min(self.max_batch, -(-len(rows) // self.workers))
        chunks = [rows[c:c + size] for c in range(0, len(rows), size)]
        self.activations = None
        saves = [None] * len(chunks)
        if self.keep_activations and lib is not None:
            self.activations, saves = self._activation_buffers([[enc[i] for i, _ in c] for c in chunks],
                                                               [[(i, j) for i, j in c] for c in chunks], params)

        def run(k):
            chunk = chunks[k]
            with torch.inference_mode():  # grad mode is per thread
                return self._generate_chunk(w, [enc[i] for i, _ in chunk], [int(seeds[i][j]) for i, j in chunk],
                                            params, lib, saves[k])

        for chunk, res in zip(chunks, thread_map(run, range(len(chunks)), self.workers)):
            for (i, j), (ids, lps, ents, fin) in zip(chunk, res):
                out[i][j] = Rollout(prompt_index=i, sample_index=j, prompt_ids=enc[i], token_ids=ids,
                                    text=tok.decode(ids), logprobs=lps, finished=fin, seed=int(seeds[i][j]),
                                    entropies=ents)
                if self.activations is not None:
                    self.activations.fed[(i, j)] = max(len(ids) - 1, 0)  # the last token is never fed
        return out  # type: ignore[return-value]

    def _chunk_shape(self, enc: list[list[int]], params: SamplingParams) -> tuple[int, Tensor, int]:
        """(prompt width P, per-row new-token budget, decode steps) of a chunk of prompts."""
        lens = torch.tensor([len(e) for e in enc])
        limit = torch.clamp(self.policy.config.max_seq_len - lens, max=params.max_new_tokens)
        return round_up(int(lens.max()), self.bucket), limit, int(limit.max())

    def _activation_buffers(self, chunk_enc: list[list[list[int]]], chunk_keys: list[list[tuple[int, int]]],
                            params: SamplingParams):
        """One set of saved-activation buffers for every chunk of a generate call, and per chunk the pointer
        arrays (prefill, decode) of its regions; (None, [None] * chunks) when they would exceed the budget."""
        from rlscale.engine.native import ptr_array

        widths = saved_widths(self.policy.config)
        layout, total = [], 0
        for enc in chunk_enc:
            P, _, steps = self._chunk_shape(enc, params)
            U = len(first_occurrences([tuple(e) for e in enc])[0])
            layout.append((total, P, U, total + U * P, steps))
            total += U * P + steps * len(enc)
        if (total + 1) * sum(widths) * 4 > self.activation_budget:
            return None, [None] * len(chunk_enc)
        tensors = [torch.empty(total + 1, wd) for wd in widths]
        for t in tensors:
            t[total].zero_()
        acts = SavedActivations(tensors, total, {}, {}, {}, {})
        saves = []
        for enc, keys, (pbase, P, _, cbase, _) in zip(chunk_enc, chunk_keys, layout):
            _, inv = first_occurrences([tuple(e) for e in enc])
            for b, key in enumerate(keys):
                acts.prompt_row[key] = pbase + inv[b] * P + (P - len(enc[b]))
                acts.comp_start[key], acts.comp_stride[key] = cbase + b, len(enc)
            saves.append((ptr_array([t[pbase:] for t in tensors]), ptr_array([t[cbase:] for t in tensors])))
        return acts, saves

    # -- one chunk ------------------------------------------------------------------------------------------------
    def _generate_chunk(self, w: _Weights, enc: list[list[int]], seeds: list[int], params: SamplingParams,
                        lib=None, save=None):
        """save: the chunk's (prefill, decode) activation pointer arrays (C path), or None."""
        cfg = self.policy.config
        tok = self.policy.tokenizer
        B, H, hd, V, d = len(enc), cfg.n_heads, cfg.head_dim, cfg.vocab_size, cfg.d_model
        lens = torch.tensor([len(e) for e in enc])
        P, limit, steps = self._chunk_shape(enc, params)  # limit: per-row new-token budget (context-bounded)
        Tmax = P + steps

        ids, am = left_pad(enc, tok.pad_id, P)  # (B, P)
        pad = P - lens  # (B,) left padding per row
        key_ok = torch.ones(B, Tmax, dtype=torch.bool)
        key_ok[:, :P] = am.bool()

        greedy = params.temperature == 0
        T = 1.0 if greedy else params.temperature
        noise = None
        if not greedy and lib is None:  # per-row Gumbel noise, (steps, B, V): depends only on the row's seed
            gens = [torch.Generator().manual_seed(s) for s in seeds]  # (the C loop draws it per window of steps)
            noise = draw_noise(gens, range(B), steps, V, T).transpose(0, 1)
        top_p = params.top_p < 1.0 and not greedy

        cos_t, sin_t = rope_cos_sin(torch.arange(cfg.max_seq_len + 1), hd, cfg.rope_theta)  # (ctx+1, hd)
        # KV cache, left uninitialised: the prefill writes slots [0, P) and each decode step writes slot tc before
        # attending over [0, tc]. torch loop: per row, keys stored transposed (q @ K[..., :t] is one bmm). C loop:
        # the distinct prompts' slots once (layers, U, H, P, hdp), read by each of their rows, and every row's
        # decoded slots (layers, B, H, steps, hdp); hdp = hd rounded up to 8, rows zero-padded by C.
        if lib is None:
            K = [torch.empty(B, H, hd, Tmax) for _ in w.layers]
            Vc = [torch.empty(B, H, Tmax, hd) for _ in w.layers]
        # RoPE tables per row and decode step (positions lens + t): (B, steps, hd), compacted with the rows
        dec_pos = lens[:, None] + torch.arange(steps)[None]
        cos_d, sin_d = cos_t[dec_pos], sin_t[dec_pos]

        # prefill, once per distinct prompt of the chunk (a group's n rows share it): (U, P), same math as
        # TinyGPT.forward with a left-padding mask, on the folded weights; in the torch loop each row's cache slots
        # [0, P) are copies, the C loop reads the prompt's own
        rep_rows, inv_rows = first_occurrences([tuple(e) for e in enc])
        U, rep, inv = len(rep_rows), torch.tensor(rep_rows), torch.tensor(inv_rows)  # u -> a row; row -> u
        if lib is not None:  # the same prefill in C
            hdp = round_up(hd, 8)
            Kp, Vp = torch.empty(len(w.layers), U, H, P, hdp), torch.empty(len(w.layers), U, H, P, hdp)
            save_p, save_d = save if save is not None else (None, None)
            logits = self._prefill_native(lib, w, ids[rep], pad[rep], cos_t, sin_t, Kp, Vp, P, save_p)[inv]
            Kn, Vn = torch.empty(len(w.layers), B, H, steps, hdp), torch.empty(len(w.layers), B, H, steps, hdp)
            return self._finish(*self._decode_native(lib, w, B, P, steps, Kp, Vp, inv, Kn, Vn, cos_d, sin_d, pad,
                                                     limit, None if greedy else seeds, T, logits, save_d),
                                [False] * B, T, params.logprobs)
        pos, mask = padded_causal(key_ok[rep, :P])  # (U, P), (U, 1, P, P)
        cos, sin = cos_t[pos][:, None, None], sin_t[pos][:, None, None]  # (U, 1, 1, P, hd)
        x = F.embedding(ids[rep], w.emb)  # (U, P, d)
        for li, (eps, wqkvr, wo, wgu, wd) in enumerate(w.layers):
            y5 = (_rms(x, eps) @ wqkvr).view(U, P, 5, H, hd).permute(0, 2, 3, 1, 4)  # (U, 5, H, P, hd)
            qk = torch.addcmul(y5[:, :2] * cos, y5[:, 3:], sin)  # (U, 2, H, P, hd), RoPE'd q (scaled) and k
            q, k, v = qk[:, 0], qk[:, 1], y5[:, 2]
            K[li][..., :P] = k.transpose(-1, -2)[inv]
            Vc[li][:, :, :P] = v[inv]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
            x = x + y.transpose(1, 2).reshape(U, P, d) @ wo
            g, u = (_rms(x, eps) @ wgu).chunk(2, dim=-1)
            x = x + (F.silu(g) * u) @ wd
        logits = (_rms(x[:, -1], w.norm_eps) @ w.head_t)[inv]  # (B, V) at the last prompt position

        # decode loop
        bias = torch.zeros(B, H, 1, Tmax).masked_fill_(~key_ok[:, None, None], float("-inf"))  # additive key mask
        rows = torch.arange(B)  # original row index of each active row
        full = True  # rows == arange(B): no gathers needed
        end_at = torch.full((B,), -1, dtype=torch.long)  # number of generated tokens kept per row, once ended
        stopped = [False] * B  # ended by a stop string
        texts = [""] * B
        stops = tuple(params.stop)
        eos = tok.eos_id
        all_tokens = torch.full((steps, B), eos, dtype=torch.long)
        all_logits = torch.zeros(steps, B, V)  # log-probs are computed once after the loop (fewer ops per step)
        n_active = B  # rows not yet ended (some ended rows may still be in the batch until the next compaction)
        for t in range(steps):
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nz = noise[t] if full else noise[t].index_select(0, rows)
                if top_p:  # keep the smallest set of tokens whose mass reaches top_p
                    lp_all = torch.log_softmax(logits / T if T != 1.0 else logits, dim=-1)  # (b, V)
                    sp, si = lp_all.exp().sort(dim=-1, descending=True)
                    drop_sorted = (sp.cumsum(-1) - sp) >= params.top_p
                    z = lp_all.masked_fill(torch.zeros_like(drop_sorted).scatter_(-1, si, drop_sorted), float("-inf"))
                    nxt = z.add_(nz.div(T) if T != 1.0 else nz).argmax(-1)
                else:  # Gumbel-max = a sample of softmax(logits / T)
                    nxt = (logits + nz).argmax(-1)
            if full:
                all_tokens[t], all_logits[t] = nxt, logits
                ended = end_at >= 0
                done = (nxt == eos) | (t + 1 >= limit)
            else:
                all_tokens[t].index_copy_(0, rows, nxt)
                all_logits[t].index_copy_(0, rows, logits)
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
            n_new = int(newly.sum())
            if n_new:
                end_at[rows[newly]] = t + 1
                ended = ended | newly
                n_active -= n_new
            if n_active == 0 or t == steps - 1:
                break
            b = rows.shape[0]
            if n_active < b and (t % self.compact_every == self.compact_every - 1 or 4 * (b - n_active) >= b):
                keep = (~ended).nonzero().squeeze(-1)  # drop ended rows (periodically, or once a quarter is dead)
                rows, nxt, bias, cos_d, sin_d = rows[keep], nxt[keep], bias[keep], cos_d[keep], sin_d[keep]
                K = [k_[keep] for k_ in K]
                Vc = [v_[keep] for v_ in Vc]
                full, b = False, n_active
            # one decode step for every active row (ended-but-not-yet-dropped rows compute ignored tokens)
            tc = P + t  # cache slot of the token being fed
            cos, sin = cos_d[:, t, None, None], sin_d[:, t, None, None]  # (b, 1, 1, hd) at positions lens + t
            x = F.embedding(nxt, w.emb)  # (b, d)
            for li, (eps, wqkvr, wo, wgu, wd) in enumerate(w.layers):
                y5 = (_rms(x, eps) @ wqkvr).view(b, 5, H, hd)
                qk = torch.addcmul(y5[:, :2] * cos, y5[:, 3:], sin)  # (b, 2, H, hd): RoPE'd q (scaled) and k
                K[li][..., tc] = qk[:, 1]
                Vc[li][:, :, tc] = y5[:, 2]
                att = torch.baddbmm(bias[..., :tc + 1].reshape(b * H, 1, tc + 1),
                                    qk[:, 0].reshape(b * H, 1, hd), K[li][..., :tc + 1].reshape(b * H, hd, tc + 1))
                att = torch.softmax(att, dim=-1)
                y = torch.bmm(att, Vc[li][:, :, :tc + 1].reshape(b * H, tc + 1, hd)).view(b, d)
                x = torch.addmm(x, y, wo)  # x + y @ wo in one kernel
                g, u = (_rms(x, eps) @ wgu).chunk(2, dim=-1)
                x = torch.addmm(x, F.silu(g) * u, wd)
            logits = _rms(x, w.norm_eps) @ w.head_t  # (b, V)

        return self._finish(all_tokens, all_logits, end_at, steps, stopped, T, params.logprobs)

    def _prefill_native(self, lib, w: _Weights, ids: Tensor, upad: Tensor, cos_t: Tensor, sin_t: Tensor,
                        Kp: Tensor, Vp: Tensor, P: int, save=None) -> Tensor:
        """The prefill in C (see tiny_prefill in _tiny_decode.c): fills the prompts' keys and values Kp, Vp
        (layers, U, H, P, hdp); returns the (U, V) logits at the last prompt position."""
        from rlscale.engine.native import ptr

        cfg = self.policy.config
        U = ids.shape[0]
        pos = (torch.arange(P)[None, :] - upad[:, None]).clamp_(min=0)  # real tokens counted from 0, pads at 0
        cos_p, sin_p = cos_t[pos].contiguous(), sin_t[pos].contiguous()  # (U, P, hd)
        logits = torch.empty(U, cfg.vocab_size)
        ids_c, upad_c = ids.contiguous(), upad.contiguous()
        rc = lib.tiny_prefill(U, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size, len(w.layers), P,
                              ptr(ids_c), ptr(upad_c), ptr(w.emb), ptr(w.head_t), float(w.norm_eps), *w.c_args,
                              ptr(w.eps), ptr(cos_p), ptr(sin_p), ptr(Kp), ptr(Vp), ptr(logits), save)
        if rc < 0:
            raise MemoryError("native prefill: out of memory")
        return logits

    def _decode_native(self, lib, w: _Weights, B: int, P: int, steps: int, Kp: Tensor, Vp: Tensor, inv: Tensor,
                       K: Tensor, V: Tensor, cos_d: Tensor, sin_d: Tensor, pad: Tensor, limit: Tensor,
                       seeds: list[int] | None, T: float, logits: Tensor, save=None):
        """The decode loop in C (same math as the torch loop below, see _tiny_decode.c), one call per window of
        NOISE_WINDOW steps when sampling: each window's Gumbel noise is drawn for the rows still running only, from
        each row's generator where the last window left it, so a row gets the same noise as one draw of all steps
        would give it (a generator's draws continue its stream) and rows that ended draw no more. seeds: the rows'
        seeds, or None (greedy)."""
        from rlscale.engine.native import ptr

        cfg, tok = self.policy.config, self.policy.tokenizer
        Vocab = cfg.vocab_size
        all_tokens = torch.full((steps, B), tok.eos_id, dtype=torch.long)
        all_logits = torch.empty(steps, B, Vocab)  # read only at the steps each row ran
        end_at = torch.full((B,), -1, dtype=torch.long)
        cos_c, sin_c, pad_c, limit_c, inv_c = (t.contiguous() for t in (cos_d, sin_d, pad, limit, inv))
        logits_io = logits.contiguous().clone()
        gens = None if seeds is None else [torch.Generator().manual_seed(s) for s in seeds]
        noise_row = torch.full((B,), -1, dtype=torch.long)
        t = 0
        while t < steps:
            t1, noise = steps, None
            if gens is not None:
                t1 = min(steps, t + NOISE_WINDOW)
                running = (end_at < 0).nonzero().flatten()
                noise = draw_noise(gens, running.tolist(), t1 - t, Vocab, T)
                noise_row[running] = torch.arange(len(running))
            t = lib.tiny_decode(B, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff, Vocab, len(w.layers), P, steps,
                                Kp.shape[1], t, t1, ptr(w.emb), ptr(w.head_t), float(w.norm_eps), *w.c_args,
                                ptr(w.eps), ptr(Kp), ptr(Vp), ptr(inv_c), ptr(K), ptr(V), ptr(cos_c), ptr(sin_c),
                                ptr(pad_c), ptr(limit_c), ptr(noise) if noise is not None else None, ptr(noise_row),
                                ptr(logits_io), int(tok.eos_id), ptr(all_tokens), ptr(all_logits), ptr(end_at), save)
            if t < 0:
                raise MemoryError("native decode: out of memory")
            if t < t1 or not bool((end_at < 0).any()):
                break
        return all_tokens, all_logits, end_at, steps

    def _finish(self, all_tokens: Tensor, all_logits: Tensor, end_at: Tensor, steps: int, stopped: list[bool],
                T: float, logprobs: bool = True):
        """Per row: (generated ids, their log-probs, the entropies of their sampling distributions, finished) from
        the decode loop's outputs; without `logprobs` ([] and None for those two) only the ids are read."""
        eos = self.policy.tokenizer.eos_id
        ends = end_at.tolist()
        toks, lps, ents = all_tokens.t().tolist(), None, None
        if logprobs:
            # log-probs of the chosen tokens under softmax(logits / T) and that distribution's entropy, at the steps
            # each row ran (the other slots are never read, and may hold anything)
            ran = torch.arange(steps)[:, None] < torch.tensor([e if e >= 0 else steps for e in ends])[None, :]
            lg = all_logits[ran]  # (rows' steps, V)
            ls = torch.log_softmax(lg / T if T != 1.0 else lg, dim=-1)
            all_lp, all_ent = torch.zeros(steps, len(ends)), torch.zeros(steps, len(ends))
            all_lp[ran] = ls.gather(-1, all_tokens[ran][:, None]).squeeze(-1)
            all_ent[ran] = -(ls.exp() * ls).sum(-1)
            lps, ents = all_lp.t().tolist(), all_ent.t().tolist()
        res = []
        for r in range(len(ends)):
            n = ends[r] if ends[r] >= 0 else steps
            ids_r = toks[r][:n]
            res.append((ids_r, lps[r][:n] if lps is not None else [], ents[r][:n] if ents is not None else None,
                        stopped[r] or (n > 0 and ids_r[-1] == eos)))
        return res
