"""The lab's tiny GPT: a Llama-architecture decoder (RMSNorm, RoPE, SwiGLU, no biases, tied embeddings).

Parameter names and numerics are exactly those of `transformers.LlamaForCausalLM`, so export is a state-dict copy
(see rlscale.models.export). `TinyPolicy` implements the Policy protocol; a checkpoint directory holds
`rlscale_model.json` (format version, config, tokenizer, data recipe, compute spent), `model.safetensors` and
`tokenizer.json`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlscale.errors import UserError
from rlscale.io import atomic_write_json
from rlscale.models.base import logprobs_from_logits
from rlscale.models.tokenizer import CharTokenizer

FORMAT_VERSION = 1
MARKER = "rlscale_model.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> TinyConfig:
        if self.d_model % self.n_heads or self.head_dim % 2:
            raise UserError(f"tiny model: d_model={self.d_model} must split into {self.n_heads} heads of even size")
        return self


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def rotate_half(x: Tensor) -> Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions (...,) int -> cos, sin (..., head_dim), HF Llama layout (frequencies repeated, not interleaved)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # (..., hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def pure_causal(am: Tensor | None) -> bool:
    """Whether a (B, T) attention mask (1 = real token; None = all real) can run as pure causal attention: no
    padding, or right padding only (real tokens never see the later pads; logits at pads are not used)."""
    if am is None or am.shape[1] < 2:
        return True
    am = am.bool()
    return bool((am[:, 1:] <= am[:, :-1]).all())


def padded_causal(am: Tensor) -> tuple[Tensor, Tensor]:
    """am (B, T) bool, True = real token (any padding) -> (positions (B, T) counting real tokens, the HF convention;
    attention mask (B, 1, T, T): causal over real keys, and pad queries see themselves so no row is all-masked)."""
    T = am.shape[1]
    pos = (am.long().cumsum(-1) - 1).clamp(min=0)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None] & am[:, None, None, :]
    return pos, mask | torch.eye(T, dtype=torch.bool)[None, None]


class Attention(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d) -> q, k, v (B, H, T, hd), RoPE applied to q and k."""
        B, T, _ = x.shape
        q, k, v = (p(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, T, hd)
        if q.dtype != cos.dtype:  # bf16 autocast: RoPE in the activations' dtype (as HF Llama), no fp32 promotion
            cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def out(self, y: Tensor) -> Tensor:
        """y (B, H, T, hd) -> (B, T, d)."""
        B, _, T, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        return self.out(attend(*self.qkv(x, cos, sin), mask))


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(hd) + mask) v. q (B, H, Tq, hd), k/v (B, H, Tk, hd); mask (B, 1, Tq, Tk) bool (True =
    may attend) or None = causal (Tq = Tk)."""
    if torch.is_autocast_enabled("cpu") and torch.is_grad_enabled():
        return _math_attention(q, k, v, mask)  # CPU flash-attention backward is ~5x slower in bf16
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(hd) + mask) v with the matmuls in the autocast dtype and the softmax in fp32: under
    bf16 autocast on CPU its forward + backward is 4-6x faster than F.scaled_dot_product_attention's flash kernel
    at the lab's sizes (T <= 256)."""
    T = q.shape[-2]
    s = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5  # (B, H, Tq, Tk)
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril() if mask is None else mask
    p = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1)
    return p.to(v.dtype) @ v


class MLP(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_grouped(self, xp: Tensor, xc: Tensor, group: Tensor, rp: tuple, rc: tuple) -> tuple[Tensor, Tensor]:
        """Prompt stream xp (G, P, d) and completion stream xc (R, C, d); completion row r continues prompt
        group[r] and attends to its keys. rp/rc = (cos, sin, mask) of each stream (see TinyGPT.forward_grouped)."""
        a = self.self_attn
        qp, kp, vp = a.qkv(self.input_layernorm(xp), rp[0], rp[1])
        qc, kc, vc = a.qkv(self.input_layernorm(xc), rc[0], rc[1])
        yp = attend(qp, kp, vp, rp[2])  # (G, H, P, hd)
        yc = attend(qc, torch.cat((kp[group], kc), 2), torch.cat((vp[group], vc), 2), rc[2])  # (R, H, C, hd)
        xp, xc = xp + a.out(yp), xc + a.out(yc)
        return (xp + self.mlp(self.post_attention_layernorm(xp)),
                xc + self.mlp(self.post_attention_layernorm(xc)))


class Backbone(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)


class TinyGPT(nn.Module):
    """Llama decoder with tied input/output embeddings. forward(ids, attention_mask) -> logits (B, T, V)."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.model = Backbone(cfg)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual projections
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids (B, T). attention_mask (B, T) 1 = real token; None = all real. Logits (B, T, V).

        Runs the fused trunk when it applies (as forward_grouped), else forward_torch, the reference."""
        from rlscale.models import fused

        if fused.usable(self):
            self.check_context(input_ids.shape[1])
            return fused.forward(self, input_ids, attention_mask)
        return self.forward_torch(input_ids, attention_mask)

    def check_context(self, T: int) -> None:
        if T > self.cfg.max_seq_len:
            raise UserError(f"sequence of {T} tokens exceeds the model context of {self.cfg.max_seq_len}")

    def forward_torch(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids (B, T). attention_mask (B, T) 1 = real token (left or right padding); None = all real.

        Logits at real positions are exact for any padding. A right-padded mask (every row: real tokens, then pads;
        what the RL update packs) takes the pure-causal fast path: real tokens never see later pads, so only the
        logits at pad positions (which every caller ignores) differ from the explicitly masked computation."""
        B, T = input_ids.shape
        self.check_context(T)
        x = self.model.embed_tokens(input_ids)
        am = None if attention_mask is None else attention_mask.bool()
        if pure_causal(am):  # no padding or right padding
            cos, sin = rope_cos_sin(torch.arange(T), self.cfg.head_dim, self.cfg.rope_theta)  # (T, hd)
            mask = None  # pure causal: SDPA fast path, RoPE tables broadcast over the batch
        else:
            pos, mask = padded_causal(am)  # (B, T), (B, 1, T, T)
            cos, sin = rope_cos_sin(pos, self.cfg.head_dim, self.cfg.rope_theta)
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hd)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        return x @ self.model.embed_tokens.weight.T

    def forward_grouped(self, prompt_ids: Tensor, prompt_mask: Tensor, comp_ids: Tensor, group: Tensor
                        ) -> tuple[Tensor, Tensor]:
        """Shared-prefix forward: each prompt runs once for all of its completions (see forward_grouped_torch).

        Runs the fused trunk (rlscale.models.fused: C kernels between torch matmuls, hand-written backward) when it
        applies (fp32 weights, no autocast or bf16 autocast, C compiler present, RLSCALE_NATIVE not 0), else the
        torch reference."""
        from rlscale.models import fused

        if fused.usable(self):
            return fused.forward_grouped(self, prompt_ids, prompt_mask, comp_ids, group)
        return self.forward_grouped_torch(prompt_ids, prompt_mask, comp_ids, group)

    def forward_grouped_torch(self, prompt_ids: Tensor, prompt_mask: Tensor, comp_ids: Tensor, group: Tensor
                              ) -> tuple[Tensor, Tensor]:
        """Shared-prefix forward in torch ops (the reference of the fused path): each prompt runs once for all of
        its completions.

        prompt_ids (G, P) left-padded, prompt_mask (G, P) 1 = real token (every prompt has one); comp_ids (R, C)
        right-padded completions, row r continuing prompt group[r] (R,). Returns (logits (G, V) at each prompt's last
        token, logits (R, C, V) at the completion positions): the logits `forward` gives at those positions of the
        concatenated sequence prompt[group[r]] + comp_ids[r], up to rounding, with the prompt's work done once per
        group instead of once per row (gradients reach it summed over the group's rows, as they would unshared)."""
        G, P = prompt_ids.shape
        R, C = comp_ids.shape
        # no context check here: P + C includes padding on both sides (the sampler bounds the real lengths)
        hd, theta = self.cfg.head_dim, self.cfg.rope_theta
        pm = prompt_mask.bool()
        pos_p, mask_p = padded_causal(pm)  # (G, P), (G, 1, P, P)
        if bool(pm.all()):
            mask_p = None  # no padding: pure causal
        pos_c = pm.sum(1)[group][:, None] + torch.arange(C)  # (R, C)
        cos_p, sin_p = rope_cos_sin(pos_p, hd, theta)
        cos_c, sin_c = rope_cos_sin(pos_c, hd, theta)
        causal_c = torch.ones(C, C, dtype=torch.bool).tril()[None, None].expand(R, 1, C, C)
        mask_c = torch.cat((pm[group][:, None, None, :].expand(R, 1, C, P), causal_c), -1)  # (R, 1, C, P + C)
        rp = (cos_p[:, None], sin_p[:, None], mask_p)
        rc = (cos_c[:, None], sin_c[:, None], mask_c)
        xp, xc = self.model.embed_tokens(prompt_ids), self.model.embed_tokens(comp_ids)
        for layer in self.model.layers:
            xp, xc = layer.forward_grouped(xp, xc, group, rp, rc)
        w = self.model.embed_tokens.weight
        return self.model.norm(xp[:, -1]) @ w.T, self.model.norm(xc) @ w.T

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def flops_per_token(cfg: TinyConfig, context_len: int) -> float:
    """Forward FLOPs per token: 2 * N_matmul (attention + MLP projections + output head) + 4 * L * ctx * d
    (QK^T and AV over ctx keys). Embedding lookup and norms are not counted."""
    from rlscale.compute import transformer_flops_per_token

    d, L = cfg.d_model, cfg.n_layers
    n_matmul = L * (4 * d * d + 3 * d * cfg.d_ff) + d * cfg.vocab_size
    return transformer_flops_per_token(n_matmul, L, d, context_len)


class TinyPolicy:
    """Policy protocol over TinyGPT. `meta` carries size, data recipe and compute spent into the checkpoint."""

    kind = "tiny"

    def __init__(self, module: TinyGPT, tokenizer: CharTokenizer, meta: dict | None = None):
        self.module = module
        self.tokenizer = tokenizer
        self.meta = dict(meta or {})

    @classmethod
    def create(cls, cfg: TinyConfig, tokenizer: CharTokenizer, seed: int = 0, meta: dict | None = None) -> TinyPolicy:
        torch.manual_seed(seed)
        return cls(TinyGPT(cfg), tokenizer, meta)

    @property
    def config(self) -> TinyConfig:
        return self.module.cfg

    def token_logprobs(self, input_ids: Tensor, attention_mask: Tensor, temperature: float = 1.0,
                       with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        logits = self.module(input_ids, attention_mask)[:, :-1]  # (B, T-1, V)
        return logprobs_from_logits(logits, input_ids[:, 1:], temperature, with_entropy)

    def completion_logprobs(self, prompt_ids: Tensor, prompt_mask: Tensor, comp_ids: Tensor, group: Tensor,
                            temperature: float = 1.0, with_entropy: bool = False, replay: tuple | None = None
                            ) -> tuple[Tensor, Tensor | None]:
        """logp[r, t] = log p(comp_ids[r, t] | prompt[group[r]], comp_ids[r, :t]): (R, C), each prompt computed once
        for its group (TinyGPT.forward_grouped); entropy (R, C) when with_entropy. Shapes as forward_grouped.

        replay = (SavedActivations, keys): the forward is taken from the sampler call that generated these rows with
        the current weights (rlscale.models.fused.forward_grouped_replay; needs fused.usable); keys[r] = (prompt
        index, sample index) of row r in that call."""
        if replay is not None:
            from rlscale.models import fused

            last, comp = fused.forward_grouped_replay(self.module, *replay, prompt_ids, prompt_mask, comp_ids, group)
        else:
            last, comp = self.module.forward_grouped(prompt_ids, prompt_mask, comp_ids, group)
        logits = torch.cat((last[group][:, None], comp[:, :-1]), 1)  # (R, C, V): position t predicts comp_ids[:, t]
        return logprobs_from_logits(logits, comp_ids, temperature, with_entropy)

    def num_params(self) -> int:
        return self.module.num_params()

    def flops_per_token(self, context_len: int) -> float:
        return flops_per_token(self.config, context_len)

    def sampler(self, **kwargs):
        from rlscale.engine.tiny_sampler import TinySampler

        return TinySampler(self, **kwargs)

    def save(self, path: str) -> None:
        """Write the checkpoint directory atomically (temp dir beside it, then rename)."""
        from safetensors.torch import save_file

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            state = {k: v.detach().contiguous().clone() for k, v in self.module.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS))
            self.tokenizer.save(tmp / TOKENIZER)
            atomic_write_json(tmp / MARKER, {"format_version": FORMAT_VERSION, "kind": "tiny",
                                             "config": asdict(self.config), **self.meta})
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str) -> TinyPolicy:
        from safetensors.torch import load_file

        p = Path(path)
        missing = [f for f in (MARKER, WEIGHTS, TOKENIZER) if not (p / f).exists()]
        if missing:
            raise UserError(f"--model {path}: checkpoint is missing {', '.join(missing)}; re-run `rlscale pretrain`")
        try:
            meta = json.loads((p / MARKER).read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{p / MARKER}: not valid JSON ({e.msg}, line {e.lineno}); re-run `rlscale pretrain`") from None
        if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "tiny":
            raise UserError(f"{p / MARKER}: format_version {meta.get('format_version')!r} is not supported "
                            f"(this rlscale reads {FORMAT_VERSION}); re-run `rlscale pretrain`")
        try:
            cfg = TinyConfig(**meta["config"])
            module = TinyGPT(cfg)
            module.load_state_dict(load_file(str(p / WEIGHTS)))
        except (TypeError, KeyError, RuntimeError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise UserError(f"--model {path}: weights do not match the config ({first[:160]})") from None
        tok = CharTokenizer.load(p / TOKENIZER)
        extra = {k: v for k, v in meta.items() if k not in ("format_version", "kind", "config")}
        module.eval()
        return cls(module, tok, extra)
