"""Character tokenizer of the lab model: one id per character of the arith alphabet, plus <pad>, <bos>, <eos>.

`to_hf()` builds an equivalent `transformers.PreTrainedTokenizerFast` (same ids) for the exported checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlscale.errors import UserError
from rlscale.io import atomic_write_json

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
FORMAT = "rlscale-char-tokenizer-v1"


class CharTokenizer:
    """ids 0,1,2 = <pad>, <bos>, <eos>; then one id per character of `alphabet`."""

    def __init__(self, alphabet: str):
        if len(set(alphabet)) != len(alphabet):
            raise UserError("tokenizer alphabet has duplicate characters")
        self.alphabet = alphabet
        self.specials = (PAD, BOS, EOS)
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        self._stoi = {c: i + len(self.specials) for i, c in enumerate(alphabet)}
        self._itos = list(self.specials) + list(alphabet)
        self.vocab_size = len(self._itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError as e:
            raise UserError(f"text has character {e.args[0]!r} outside the lab tokenizer's alphabet "
                            f"{self.alphabet!r}") from None

    def decode(self, ids: list[int]) -> str:
        """Characters of ids; special tokens are dropped."""
        n = len(self.specials)
        return "".join(self._itos[i] for i in ids if i >= n)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "alphabet": self.alphabet, "specials": list(self.specials)}

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        if d.get("format") != FORMAT or list(d.get("specials", [])) != [PAD, BOS, EOS]:
            raise UserError(f"tokenizer format {d.get('format')!r} is not {FORMAT}; re-run `rlscale pretrain`")
        return cls(d["alphabet"])

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: cannot read tokenizer ({e.__class__.__name__}); re-run `rlscale pretrain`") from None
        return cls.from_dict(d)

    def to_hf(self):
        """An equivalent PreTrainedTokenizerFast (one token per character, same ids)."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {t: i for i, t in enumerate(self._itos)}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tok.decoder = decoders.Fuse()
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                     padding_side="left", clean_up_tokenization_spaces=False)
        return hf
