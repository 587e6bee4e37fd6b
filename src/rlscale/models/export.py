"""Export a lab checkpoint as a standard Hugging Face `LlamaForCausalLM` + `PreTrainedTokenizerFast`.

TinyGPT uses Llama's parameter names and numerics, so the export is a state-dict copy; logits agree within 1e-4
and greedy `generate` gives the same tokens (tests/test_export_hf.py). The result loads offline with
`AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rlscale.models.tiny import TinyPolicy


def llama_config(policy: TinyPolicy):
    from transformers import LlamaConfig

    c, tok = policy.config, policy.tokenizer
    return LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_heads, head_dim=c.head_dim, hidden_act="silu",
        max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
    )


def to_hf_model(policy: TinyPolicy):
    """An in-memory LlamaForCausalLM with our weights (fp32, eval mode)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(llama_config(policy))
    state = {k: v.detach().clone() for k, v in policy.module.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise RuntimeError(f"export: parameter names differ from Llama: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config.pad_token_id = policy.tokenizer.pad_id
    model.generation_config.eos_token_id = policy.tokenizer.eos_id
    model.generation_config.bos_token_id = policy.tokenizer.bos_id
    return model.eval()


def export_hf(policy: TinyPolicy, out: str | Path) -> Path:
    """Write an HF checkpoint directory atomically (temp dir, then rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        to_hf_model(policy).save_pretrained(tmp)
        policy.tokenizer.to_hf().save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
