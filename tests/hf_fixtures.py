"""A tiny Hugging Face Llama with a character-level tokenizer, built in code (no download). Shared test helper:
`make_tiny_hf_model(dir) -> path` writes a directory that `AutoModelForCausalLM.from_pretrained` loads offline."""

from __future__ import annotations

import string
from pathlib import Path

CHARS = " \n" + string.ascii_letters + string.digits + "=+-*/,;:?#.$()[]{}\\'\"!%&<>_^"
SPECIALS = ("<pad>", "<bos>", "<eos>")


def make_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(list(SPECIALS) + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   padding_side="left", clean_up_tokenization_spaces=False)


def make_tiny_hf_model(directory, seed: int = 0, max_positions: int = 256) -> str:
    """Write a randomly initialised 2-layer Llama (hidden 32) + char tokenizer into `directory`; return its path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=max_positions,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger logits than the default init: sampled text is less uniform, EOS happens
        model.lm_head.weight.mul_(20.0)
    path = Path(directory)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)
