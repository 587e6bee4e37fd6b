"""The lab TinyGPT's fused forward and hand-written backward (fp32, CPU): the RL update's and SFT's path.

Why: at the lab's sizes (d_model 48-192, sequences <= 256) autograd over eager torch ops spends more time in
~100 small kernels per layer (norms, RoPE, masks, softmax, SiLU, their backward, and the bookkeeping between them)
than in the matmuls. Here one `torch.autograd.Function` runs the whole decoder trunk: the matmuls are torch's
(BLAS), everything between them is one C call (`_tiny_fused.c`: RMSNorm, RoPE, masked attention with its saved
probabilities, SwiGLU, and their backward), and the backward is written out layer by layer. The output head and
the log-softmax stay in autograd (they are the loss's, and cheap at vocabulary 49).

Same math and masks as `TinyGPT.forward_grouped_torch` / `TinyGPT.forward_torch` (the reference; tests compare
logits and every parameter's gradient). Used when the C library builds, the weights are fp32 and no autocast, or
bf16 autocast (then the matmuls take bf16 inputs, see low_precision), is active; otherwise, or with
RLSCALE_NATIVE=0 or RLSCALE_FUSED=0, the reference torch path runs. Pretraining keeps the reference on purpose (see
rlscale.lab.pretrain.loss_of).

`forward_grouped_replay` is the same trunk with its forward taken from the sampler: the lab's C sampler computed
every activation of the rollouts while generating them (rlscale.engine.tiny_sampler.SavedActivations), with the
same weights when the update is on-policy, so the update's first pass gathers them into the packed rows and only
recomputes the cheap parts (the norms' scales, the attention probabilities and outputs) before the backward. That
removes the forward's matmuls (a third of the update's); the gradients equal the recomputed ones up to float
rounding (the sampler sums in another order; tests compare them). It also computes on the live rows only
(`live_rows`): the rows no forward fed (padding, each completion's last token) carry no gradient, and leaving them
out of the backward's matmuls (as verl's remove-padding does) saves the ~24% of the quick lab's rows they are.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rlscale.engine.native import compile_and_load
from rlscale.engine.tiny_sampler import SAVED_PER_LAYER

SRC = Path(__file__).with_name("_tiny_fused.c")
PARAMS_PER_LAYER = 9  # input norm, q, k, v, o, post-attention norm, gate, up, down


def load() -> ctypes.CDLL | None:
    """The compiled kernels, or None (the reference torch path is then used)."""
    return compile_and_load(SRC, "fused trunk", "the torch autograd path", _configure)


def _configure(lib: ctypes.CDLL) -> None:
    ptr, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    lib.rms_fwd.argtypes = [i64, i32, ptr, ptr, f32, ptr, ptr]
    lib.rms_bwd.argtypes = [i64, i32, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.swiglu_fwd.argtypes = [i64, i32, ptr, ptr]
    lib.swiglu_bwd.argtypes = [i64, i32, ptr, ptr, ptr]
    lib.rope.argtypes = [i64, i32, i32, ptr, i32, i32, ptr, ptr, ptr, i32]
    lib.attn_fwd.argtypes = [i32] * 6 + [ptr] * 6
    lib.attn_bwd.argtypes = [i32] * 6 + [ptr] * 7
    for f in (lib.rms_fwd, lib.rms_bwd, lib.swiglu_fwd, lib.swiglu_bwd, lib.rope, lib.attn_fwd, lib.attn_bwd):
        f.restype = None


def usable(module: torch.nn.Module) -> bool:
    """Whether the fused path applies: fp32 weights on CPU, no autocast or bf16 autocast (see low_precision), the
    C kernels available and RLSCALE_FUSED not "0" (which keeps the torch path, e.g. to measure against it)."""
    w = module.model.embed_tokens.weight
    autocast_ok = not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") == torch.bfloat16
    return (os.environ.get("RLSCALE_FUSED", "1") != "0" and w.dtype == torch.float32 and w.device.type == "cpu"
            and autocast_ok and load() is not None)


def low_precision() -> torch.dtype | None:
    """The trunk's matmul dtype: bf16 under CPU bf16 autocast (as the torch path's matmuls), else None (fp32).

    In bf16 the matmuls' inputs are rounded to bf16 and accumulated in fp32 (oneDNN; AMX where the CPU has it, ~4x
    the fp32 rate); their results, the norms, RoPE, attention, SwiGLU, the residual stream and every gradient
    buffer stay fp32, as autocast's fp32 ops do on the torch path."""
    return torch.bfloat16 if torch.is_autocast_enabled("cpu") else None


class _Matmuls:
    """The trunk's matmuls in `lowp` (None: fp32, exactly the BLAS calls of the fp32 path) with fp32 results:
    `lo` rounds an operand once (weights once per forward, activations once for every product they enter)."""

    def __init__(self, lowp: torch.dtype | None):
        self.lowp = lowp

    def lo(self, t: Tensor) -> Tensor:
        return t if self.lowp is None else t.to(self.lowp)

    def mm(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b if self.lowp is None else (a @ b).float()

    def addmm(self, c: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return torch.addmm(c, a, b) if self.lowp is None else c + (a @ b).float()


@dataclass
class Geometry:
    """Row layout of one packed batch (see _tiny_fused.c): G prompt streams of P positions, R completion streams
    of C positions continuing prompts `group`; every row's token id and RoPE position; the prompt mask."""
    G: int
    P: int
    R: int
    C: int
    ids: Tensor  # (N,) int64
    pos: Tensor  # (N,) int64
    pm: Tensor  # (G, P) uint8
    group: Tensor  # (R,) int64
    cos: Tensor  # (max position + 1, hd)
    sin: Tensor
    keep: Tensor | None = None  # the live rows the replayed update computes on (live_rows), or None: all rows
    clen: Tensor | None = None  # (R,) int64: each completion's live prefix (live_prefix), or None: all C

    @property
    def N(self) -> int:  # noqa: N802
        return self.G * self.P + self.R * self.C

    @property
    def rows(self) -> int:
        """rows of the activation buffers: N, or more after padded() (bf16)"""
        return self.ids.shape[0]

    def prob_count(self, H: int) -> int:
        r8 = lambda k: -(-k // 8) * 8  # noqa: E731  (the C side's zero-padded key blocks)
        return self.G * H * self.P * r8(self.P) + self.R * H * self.C * r8(self.P + self.C)


def geometry(cfg, prompt_ids: Tensor, prompt_mask: Tensor, comp_ids: Tensor | None, group: Tensor | None
             ) -> Geometry:
    from rlscale.models.tiny import rope_cos_sin

    G, P = prompt_ids.shape
    pm = prompt_mask.bool()
    pos_p = (pm.long().cumsum(-1) - 1).clamp(min=0)  # (G, P), as padded_causal
    if comp_ids is None:
        R, C, group = 0, 0, torch.zeros(0, dtype=torch.long)
        ids, pos = prompt_ids.reshape(-1), pos_p.reshape(-1)
    else:
        R, C = comp_ids.shape
        group = group.long().contiguous()
        pos_c = pm.sum(1)[group][:, None] + torch.arange(C)  # (R, C)
        ids = torch.cat((prompt_ids.reshape(-1), comp_ids.reshape(-1)))
        pos = torch.cat((pos_p.reshape(-1), pos_c.reshape(-1)))
    cos, sin = rope_cos_sin(torch.arange(int(pos.max()) + 1), cfg.head_dim, cfg.rope_theta)
    return Geometry(G, P, R, C, ids.long().contiguous(), pos.contiguous(), pm.to(torch.uint8).contiguous(),
                    group, cos.contiguous(), sin.contiguous())


ROW_BUCKET = 128
"""bf16 runs the trunk on N rounded up to a multiple of this many rows (see padded)"""


def padded(geo: Geometry) -> Geometry:
    """geo with its activation rows rounded up to a multiple of ROW_BUCKET by zero-gradient rows after the real
    ones (token 0, read by no attention, no logit and no loss). For bf16: oneDNN JIT-compiles a kernel for every new
    matmul shape (measured: a row count that changes every call made bf16 products 3x slower than repeated ones),
    and the packed row count N changes with every batch; buckets make the shapes repeat, for <= 127 extra rows."""
    extra = -geo.N % ROW_BUCKET
    return dataclasses.replace(geo, ids=torch.cat((geo.ids, torch.zeros(extra, dtype=torch.long))))


def _attn_out(geo: Geometry, d: int) -> Tensor:
    """The attention output buffer (geo.rows, d): attn_fwd writes the N real rows; padding rows are zeros (they
    enter the matmuls, and 0 * garbage can be NaN)."""
    y = torch.empty(geo.rows, d)
    y[geo.N:] = 0.0
    return y


def _p(t: Tensor) -> int:
    return t.data_ptr()


def _clen(geo: Geometry) -> int | None:
    return None if geo.clen is None else _p(geo.clen)


def _rms(lib, x: Tensor, w: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    out, rstd = torch.empty_like(x), torch.empty(x.shape[0])
    lib.rms_fwd(x.shape[0], x.shape[1], _p(x), _p(w), eps, _p(out), _p(rstd))
    return out, rstd


def _rms_bwd(lib, x: Tensor, w: Tensor, rstd: Tensor, dout: Tensor, dx: Tensor) -> Tensor:
    """dx += d(rms)/dx . dout (in place); returns the weight's gradient."""
    dw = torch.zeros_like(w)
    lib.rms_bwd(x.shape[0], x.shape[1], _p(x), _p(w), _p(rstd), _p(dout), _p(dx), _p(dw))
    return dw


def _rope(lib, geo: Geometry, qkv: Tensor, H: int, hd: int, inverse: int) -> None:
    d = H * hd
    for col in (0, d):  # q, then k
        lib.rope(geo.N, H, hd, _p(qkv), 3 * d, col, _p(geo.pos), _p(geo.cos), _p(geo.sin), inverse)


class _Trunk(torch.autograd.Function):
    """(embedding, final norm, 9 weights per layer) -> final-normed hidden states (N, d) of the packed rows."""

    @staticmethod
    def forward(ctx, geo: Geometry, cfg, lowp, emb: Tensor, final_w: Tensor, *ws: Tensor) -> Tensor:  # noqa: ARG004
        lib, H, hd, eps = load(), cfg.n_heads, cfg.head_dim, cfg.norm_eps
        N, npr, m = geo.rows, geo.prob_count(H), _Matmuls(lowp)
        with torch.autocast("cpu", enabled=False):  # the matmuls' precision is m's
            x = emb.index_select(0, geo.ids)
            saved = []
            for li in range(cfg.n_layers):
                w1, wq, wk, wv, wo, w2, wg, wu, wd = ws[li * PARAMS_PER_LAYER:(li + 1) * PARAMS_PER_LAYER]
                wl = _layer_weights(m, wq, wk, wv, wo, wg, wu, wd)
                wqkv, wo_, wgu, wd_ = wl
                h1, r1 = _rms(lib, x, w1, eps)
                h1 = m.lo(h1)
                qkv = m.mm(h1, wqkv.t())  # (N, 3d)
                _rope(lib, geo, qkv, H, hd, 0)
                probs, y = torch.empty(npr), _attn_out(geo, cfg.d_model)
                lib.attn_fwd(geo.G, geo.P, geo.R, geo.C, H, hd, _p(qkv), _p(geo.pm), _p(geo.group), _clen(geo),
                             _p(probs), _p(y))
                y = m.lo(y)
                xm = m.addmm(x, y, wo_.t())
                h2, r2 = _rms(lib, xm, w2, eps)
                h2 = m.lo(h2)
                gu = m.mm(h2, wgu.t())  # (N, 2 ff)
                a = torch.empty(N, cfg.d_ff)
                lib.swiglu_fwd(N, cfg.d_ff, _p(gu), _p(a))
                a = m.lo(a)
                saved.append((x, r1, h1, qkv, probs, y, xm, r2, h2, gu, a, wl))
                x = m.addmm(xm, a, wd_.t())
            hn, rf = _rms(lib, x, final_w, eps)
        ctx.geo, ctx.cfg, ctx.m, ctx.layers, ctx.final = geo, cfg, m, saved, (x, rf)
        ctx.save_for_backward(emb, final_w, *ws)
        return hn

    @staticmethod
    def backward(ctx, dhn: Tensor):
        """Layer by layer. With geo.keep (the replay's live rows, see forward_grouped_replay) every saved row-wise
        activation holds only those rows and so do dx and every matmul; qkv and the attention probabilities keep
        the packed layout, which the attention backward reads and writes through scatter / gather."""
        lib, geo, cfg, m = load(), ctx.geo, ctx.cfg, ctx.m
        keep = geo.keep
        H, hd = cfg.n_heads, cfg.head_dim
        emb, final_w, *ws = ctx.saved_tensors
        xf, rf = ctx.final
        dx = torch.zeros_like(xf)
        grads: list[Tensor] = [None] * len(ws)  # type: ignore[list-item]
        with torch.autocast("cpu", enabled=False):
            dhn = dhn.float() if keep is None else dhn.float().index_select(0, keep)
            d_final = _rms_bwd(lib, xf, final_w, rf, dhn.contiguous(), dx)
            for li in reversed(range(cfg.n_layers)):
                w1, w2 = ws[li * PARAMS_PER_LAYER], ws[li * PARAMS_PER_LAYER + 5]
                x, r1, h1, qkv, probs, y, xm, r2, h2, gu, a, (wqkv, wo, wgu, wd) = ctx.layers[li]
                # MLP: x_out = xm + (silu(g) * u) @ wd^T, [g, u] = rms(xm) @ [wg; wu]^T
                dxl = m.lo(dx)
                dwd = m.mm(dxl.t(), a)
                dgu, da = torch.empty_like(gu), m.mm(dxl, wd)  # named: a temporary is freed before the C call
                lib.swiglu_bwd(gu.shape[0], cfg.d_ff, _p(gu), _p(da), _p(dgu))
                dgu = m.lo(dgu)
                dwgu = m.mm(dgu.t(), h2)
                dw2 = _rms_bwd(lib, xm, w2, r2, m.mm(dgu, wgu), dx)  # dx is now dL/dxm
                # attention: xm = x + attn(rms(x)) @ wo^T
                dxl = m.lo(dx)
                dwo = m.mm(dxl.t(), y)
                dy = m.mm(dxl, wo)
                if keep is not None:  # into the packed layout; the rows not kept carry no gradient
                    dy = torch.zeros(geo.rows, dy.shape[1]).index_copy_(0, keep, dy)
                dqkv = torch.zeros_like(qkv)
                lib.attn_bwd(geo.G, geo.P, geo.R, geo.C, H, hd, _p(qkv), _p(geo.pm), _p(geo.group), _clen(geo),
                             _p(probs), _p(dy), _p(dqkv))
                _rope(lib, geo, dqkv, H, hd, 1)
                dqkv = m.lo(dqkv if keep is None else dqkv.index_select(0, keep))
                dwqkv = m.mm(dqkv.t(), h1)
                dw1 = _rms_bwd(lib, x, w1, r1, m.mm(dqkv, wqkv), dx)  # dx is now dL/dx
                d = cfg.d_model
                grads[li * PARAMS_PER_LAYER:(li + 1) * PARAMS_PER_LAYER] = [
                    dw1, dwqkv[:d], dwqkv[d:2 * d], dwqkv[2 * d:], dwo, dw2, dwgu[:cfg.d_ff], dwgu[cfg.d_ff:], dwd]
            demb = torch.zeros_like(emb).index_add_(0, geo.ids if keep is None else geo.ids[keep], dx)
        ctx.layers = ctx.final = None
        return (None, None, None, demb, d_final, *grads)


def _layer_weights(m: _Matmuls, wq, wk, wv, wo, wg, wu, wd) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A layer's matmul operands in m's precision: [wq; wk; wv] (3d, d), wo, [wg; wu] (2 ff, d), wd."""
    return m.lo(torch.cat((wq, wk, wv))), m.lo(wo), m.lo(torch.cat((wg, wu))), m.lo(wd)


class _Replay(torch.autograd.Function):
    """_Trunk with the forward's activations given (gathered from the sampler, see forward_grouped_replay): per
    layer the input x, [q, k, v] after RoPE, x after attention, [g, u] and silu(g) * u, then the final x. Recomputes
    the norms (their rstd and outputs), the attention probabilities and outputs; the backward is _Trunk's.

    With geo.keep (the live rows; the rest are padding and positions no forward fed, which no loss term reads),
    `saved` holds only those rows but for [q, k, v], and so does every activation kept for the backward."""

    @staticmethod
    def forward(ctx, geo: Geometry, cfg, lowp, saved: list[Tensor], emb: Tensor, final_w: Tensor,  # noqa: ARG004
                *ws: Tensor) -> Tensor:
        lib, H, hd, eps, keep = load(), cfg.n_heads, cfg.head_dim, cfg.norm_eps, geo.keep
        npr, m = geo.prob_count(H), _Matmuls(lowp)
        layers = []
        with torch.autocast("cpu", enabled=False):
            for li in range(cfg.n_layers):
                w1, wq, wk, wv, wo, w2, wg, wu, wd = ws[li * PARAMS_PER_LAYER:(li + 1) * PARAMS_PER_LAYER]
                x, qkv, xm, gu, a = saved[li * SAVED_PER_LAYER:(li + 1) * SAVED_PER_LAYER]
                h1, r1 = _rms(lib, x, w1, eps)
                probs, y = torch.empty(npr), _attn_out(geo, cfg.d_model)
                lib.attn_fwd(geo.G, geo.P, geo.R, geo.C, H, hd, _p(qkv), _p(geo.pm), _p(geo.group), _clen(geo),
                             _p(probs), _p(y))
                y = y if keep is None else y.index_select(0, keep)
                h2, r2 = _rms(lib, xm, w2, eps)
                layers.append((x, r1, m.lo(h1), qkv, probs, m.lo(y), xm, r2, m.lo(h2), gu, m.lo(a),
                               _layer_weights(m, wq, wk, wv, wo, wg, wu, wd)))
            xf = saved[-1]
            hn, rf = _rms(lib, xf, final_w, eps)
            if keep is not None:  # the head reads every packed row: the rows not kept read zeros
                hn = torch.zeros(geo.rows, hn.shape[1]).index_copy_(0, keep, hn)
        ctx.geo, ctx.cfg, ctx.m, ctx.layers, ctx.final = geo, cfg, m, layers, (xf, rf)
        ctx.save_for_backward(emb, final_w, *ws)
        return hn

    @staticmethod
    def backward(ctx, dhn: Tensor):
        return (None, *_Trunk.backward(ctx, dhn))  # no gradient for `saved`


def replay_rows(saved, keys: list, prompt_mask: Tensor, group: Tensor, C: int) -> Tensor:
    """Row of `saved` (SavedActivations) for every packed row of a micro-batch: prompt stream g (P positions,
    left-padded) from the saved prompt of its first row, completion row r (rollout keys[r], C positions) from its
    own rows; padding and positions no forward fed read the zero row. (G * P + R * C,) int64."""
    G, P = prompt_mask.shape
    first: dict[int, int] = {}
    for r, g in enumerate(group.tolist()):
        first.setdefault(g, r)
    p0 = torch.tensor([saved.prompt_row[keys[first[g]]] for g in range(G)])
    j = torch.arange(P)[None, :] - (P - prompt_mask.long().sum(1))[:, None]  # (G, P): index into the real prompt
    pidx = torch.where(j >= 0, p0[:, None] + j, saved.zero_row)
    start, stride, fed = (torch.tensor([m[k] for k in keys]) for m in (saved.comp_start, saved.comp_stride, saved.fed))
    t = torch.arange(C)[None, :]
    cidx = torch.where(t < fed[:, None], start[:, None] + t * stride[:, None], saved.zero_row)
    return torch.cat((pidx.reshape(-1), cidx.reshape(-1)))


def trunk_params(module) -> list[Tensor]:
    ps = []
    for layer in module.model.layers:
        a, m = layer.self_attn, layer.mlp
        ps += [layer.input_layernorm.weight, a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight,
               layer.post_attention_layernorm.weight, m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight]
    return ps


def trunk(module, geo: Geometry) -> Tensor:
    """Final-normed hidden states (geo.rows, d) of the packed rows of `geo` (differentiable in every parameter);
    the first N rows are the real ones. Pass `padded(geo)` under bf16 (as the callers below do)."""
    return _Trunk.apply(geo, module.cfg, low_precision(), module.model.embed_tokens.weight, module.model.norm.weight,
                        *trunk_params(module))


def _geometry(module, *args) -> Geometry:
    geo = geometry(module.cfg, *args)
    return geo if low_precision() is None else padded(geo)


def forward_grouped(module, prompt_ids: Tensor, prompt_mask: Tensor, comp_ids: Tensor, group: Tensor
                    ) -> tuple[Tensor, Tensor]:
    """TinyGPT.forward_grouped by the fused trunk: (logits (G, V) at each prompt's last token, (R, C, V))."""
    geo = _geometry(module, prompt_ids, prompt_mask, comp_ids, group)
    return _grouped_logits(module, geo, trunk(module, geo))


def forward_grouped_replay(module, saved, keys: list, prompt_ids: Tensor, prompt_mask: Tensor, comp_ids: Tensor,
                           group: Tensor) -> tuple[Tensor, Tensor]:
    """forward_grouped with the trunk's forward taken from `saved` (the SavedActivations of the sampler call that
    generated these rollouts with the current weights); keys[r] = (prompt index, sample index) of row r."""
    geo = _geometry(module, prompt_ids, prompt_mask, comp_ids, group)
    idx = replay_rows(saved, keys, prompt_mask, group, geo.C)
    idx = torch.cat((idx, torch.full((geo.rows - geo.N,), saved.zero_row, dtype=torch.long)))
    keep = live_rows(idx, saved.zero_row) if low_precision() is None else None
    if keep is not None:
        geo = dataclasses.replace(geo, keep=keep, clen=live_prefix(geo, idx, saved.zero_row))
    rows = idx if keep is None else idx[keep]
    n_saved = SAVED_PER_LAYER * module.cfg.n_layers  # per layer x, [q, k, v], ...: attention reads [q, k, v] packed
    gathered = [t.index_select(0, idx if j < n_saved and j % SAVED_PER_LAYER == 1 else rows)
                for j, t in enumerate(saved.tensors)]
    hn = _Replay.apply(geo, module.cfg, low_precision(), gathered, module.model.embed_tokens.weight,
                       module.model.norm.weight, *trunk_params(module))
    return _grouped_logits(module, geo, hn)


def compacts() -> bool:
    """Whether the replayed fp32 update computes on the live rows (live_rows): unless RLSCALE_COMPACT=0."""
    return os.environ.get("RLSCALE_COMPACT", "1") != "0"


def live_rows(idx: Tensor, zero_row: int) -> Tensor | None:
    """The packed rows the replayed update computes on, or None for all of them: those the sampler fed (idx !=
    zero_row). The others (prompt padding, a completion's last token and the padding after it) carry no gradient:
    no loss term reads their outputs (the last token's predicts past the end), and no live row attends to them
    (padding is masked; a completion's tail follows every live row of it). They are ~24% of the quick lab's
    packed rows (completions are padded to the longest of their micro-batch), so the update leaves them out. fp32 only:
    bf16 keeps its bucketed row counts (see padded). RLSCALE_COMPACT=0 keeps them all (the same gradients up to
    float rounding; to measure against, bench/update_replay.py)."""
    if not compacts():
        return None
    keep = torch.nonzero(idx != zero_row).squeeze(1)
    return None if keep.numel() == idx.numel() else keep


def live_prefix(geo: Geometry, idx: Tensor, zero_row: int) -> Tensor:
    """(R,) int64: how many leading positions of each completion are live (the sampler fed them; they lead), for
    the attention kernels, which then skip each completion's dead tail: no live query attends to it and its own
    queries carry no gradient, so the outputs are bitwise those of the whole block (tests/test_fused.py)."""
    return (idx[geo.G * geo.P:geo.N].view(geo.R, geo.C) != zero_row).sum(1).contiguous()


def _grouped_logits(module, geo: Geometry, hn: Tensor) -> tuple[Tensor, Tensor]:
    """(logits (G, V) at each prompt's last token, (R, C, V)) from the trunk's output rows."""
    w = module.model.embed_tokens.weight
    G, P, R, C = geo.G, geo.P, geo.R, geo.C
    last = hn[torch.arange(G) * P + (P - 1)]
    return last @ w.T, (hn[G * P:G * P + R * C] @ w.T).view(R, C, -1)


def forward(module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """TinyGPT.forward by the fused trunk (logits (B, T, V)); right padding or none runs pure causal, as there."""
    from rlscale.models.tiny import pure_causal

    B, T = input_ids.shape
    am = attention_mask
    if pure_causal(am):  # no padding or right padding (pads are never seen by real tokens)
        am = torch.ones(B, T, dtype=torch.bool)
    geo = _geometry(module, input_ids, am, None, None)
    hn = trunk(module, geo)[:geo.N]
    return (hn @ module.model.embed_tokens.weight.T).view(B, T, -1)
