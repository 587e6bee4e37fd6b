"""`HFPolicy`: the Policy protocol over any local Hugging Face causal LM (loaded offline from a directory).

    policy = HFPolicy.load("path/to/hf_model")       # AutoModelForCausalLM + AutoTokenizer, local_files_only
                                                     # on --device / RLSCALE_DEVICE (auto: CUDA when present)
    logp, ent = policy.token_logprobs(ids, mask, temperature=1.0, with_entropy=True)   # (B, T-1) each
    rollouts = policy.sampler().generate(["Question: ...\\nAnswer:"], SamplingParams(n=4))
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rlscale.errors import UserError
from rlscale.models.base import lean_logprobs_from_logits, packed_completion_logprobs


def _fp32_kwargs() -> dict:
    """from_pretrained's dtype argument for fp32: `dtype` from transformers 4.56 (5.x loads a checkpoint in its own
    dtype by default, bf16 for hub models), `torch_dtype` before."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: torch.float32}


def _enable_checkpointing(module) -> None:
    """Non-reentrant activation checkpointing of every layer: `activation_checkpointing_enable` from transformers
    5.2x (`gradient_checkpointing_enable` is deprecated there, to go in v6), the older name before."""
    if hasattr(module, "activation_checkpointing_enable"):
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_checkpointing(module) -> bool:
    """Whether the module recomputes its layers in the backward (either transformers name)."""
    flag = getattr(type(module), "is_activation_checkpointing", None)
    return bool(module.is_activation_checkpointing if flag is not None else module.is_gradient_checkpointing)


class HFTokenizer:
    """The Tokenizer protocol over a transformers tokenizer. encode() adds no special tokens; encode_prompt()
    adds what the tokenizer adds by default (e.g. Llama's BOS); pad falls back to EOS."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        eos = hf_tokenizer.eos_token_id
        if eos is None:
            raise UserError("the tokenizer has no eos_token; set eos_token in tokenizer_config.json")
        self.eos_id = int(eos)
        self.pad_id = int(hf_tokenizer.pad_token_id) if hf_tokenizer.pad_token_id is not None else self.eos_id
        self.vocab_size = len(hf_tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, text: str) -> list[int]:
        return list(self.hf(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


class HFPolicy:
    """Policy protocol over a transformers causal LM and its tokenizer."""

    kind = "hf"

    def __init__(self, module: torch.nn.Module, hf_tokenizer, path: str | None = None):
        self.module = module
        self.tokenizer = HFTokenizer(hf_tokenizer)
        self.path = path

    @classmethod
    def load(cls, path: str, device: str | None = None) -> HFPolicy:
        """Load model and tokenizer from a local directory, offline, the model on `device` (see
        rlscale.models.device.resolve_device: None reads RLSCALE_DEVICE, else auto) in fp32 whatever the
        checkpoint's dtype: the master weights of training (AdamW steps of 1e-6 vanish in bf16 weights); the
        trainers' dtype=bf16 autocasts the compute. With RLSCALE_GRADIENT_CHECKPOINTING=1 (--gradient-checkpointing)
        the training forward recomputes each layer in the backward (transformers' non-reentrant checkpointing)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlscale.models.device import gradient_checkpointing, resolve_device

        dev, checkpointing = resolve_device(device), gradient_checkpointing()  # bad values fail before the load

        p = Path(path)
        if not (p / "config.json").exists():
            raise UserError(f"--model {path}: no config.json; pass a Hugging Face model directory")
        try:
            tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
            module = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, **_fp32_kwargs())
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"--model {path}: cannot load the Hugging Face model ({first[:200]})") from None
        module.to(dev).eval()
        if checkpointing:
            if not getattr(module, "supports_gradient_checkpointing", False):
                raise UserError(f"--model {path}: {type(module).__name__} does not support gradient checkpointing; "
                                "drop --gradient-checkpointing")
            _enable_checkpointing(module)
        return cls(module, tok, str(p))

    @property
    def device(self) -> torch.device:
        from rlscale.models.device import module_device

        return module_device(self.module)

    @property
    def config(self):
        return self.module.config

    def token_logprobs(self, input_ids: Tensor, attention_mask: Tensor, temperature: float = 1.0,
                       with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        """logp[b, t] = log softmax(logits[b, t] / T)[input_ids[b, t+1]]: (B, T-1); entropy of that distribution.
        Inputs go to the model's device and the results come back to the inputs' (gradients flow through both
        copies), so callers keep their tensors on CPU whatever the device; the (B, T, V) logits never leave it."""
        dev, home = self.device, input_ids.device
        ids = input_ids.to(dev)
        # use_cache=False: a scoring forward keeps no KV cache (and gradient checkpointing needs none)
        logits = self.module(input_ids=ids, attention_mask=attention_mask.to(dev), use_cache=False).logits[:, :-1]
        logp, ent = lean_logprobs_from_logits(logits, ids[:, 1:], temperature, with_entropy)
        return logp.to(home), None if ent is None else ent.to(home)

    def completion_logprobs(self, prompt_ids: Tensor, prompt_mask: Tensor, comp_ids: Tensor, group: Tensor,
                            temperature: float = 1.0, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        """Completion log-probs (R, C) via full sequences (see rlscale.models.base.packed_completion_logprobs)."""
        return packed_completion_logprobs(self, prompt_ids, prompt_mask, comp_ids, group, temperature, with_entropy)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def num_nonembedding_params(self) -> int:
        """Parameters of every matmul (nn.Linear weights, the LM head included even when tied) and norms: the
        parameters a token's forward pass multiplies by; input embeddings (a lookup) excluded."""
        emb = self.module.get_input_embeddings()
        emb_ids = {id(p) for p in emb.parameters()}
        n = sum(p.numel() for p in self.module.parameters() if id(p) not in emb_ids)
        head = self.module.get_output_embeddings()
        if head is not None and any(id(p) in emb_ids for p in head.parameters()):  # tied head: still a matmul
            n += head.weight.numel()
        return n

    def flops_per_token(self, context_len: int) -> float:
        """Forward FLOPs per token, the convention of rlscale.compute.transformer_flops_per_token: every matmul
        weight (num_nonembedding_params, LM head included) and 4 * L * ctx * d for attention."""
        from rlscale.compute import transformer_flops_per_token

        cfg = self.config
        n_layer = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0)
        d_model = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0)
        return transformer_flops_per_token(self.num_nonembedding_params(), n_layer, d_model, context_len)

    @property
    def max_context(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None)

    def sampler(self, **kwargs):
        from rlscale.engine.hf import HFSampler

        return HFSampler(self, **kwargs)

    def save(self, path: str) -> None:
        """save_pretrained of model and tokenizer into a temp dir beside `path`, then rename into place."""
        import os
        import shutil
        import tempfile

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            self.module.save_pretrained(str(tmp))
            self.tokenizer.hf.save_pretrained(str(tmp))
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
