"""Export round-trip: the HF LlamaForCausalLM loads offline, matches our logits within 1e-4, greedy tokens equal."""

from __future__ import annotations

import pytest
import torch

from rlscale.cli import main
from rlscale.engine.base import SamplingParams
from rlscale.lab.presets import get_size
from rlscale.models.tiny import TinyConfig, TinyPolicy
from rlscale.models.tokenizer import CharTokenizer
from rlscale.tasks.arith import ALPHABET, load_arith

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    s = get_size("xs")
    tok = CharTokenizer(ALPHABET)
    pol = TinyPolicy.create(TinyConfig(tok.vocab_size, s.d_model, s.n_layers, s.n_heads, s.d_ff), tok, seed=2)
    with torch.no_grad():
        for w in pol.module.parameters():
            w.mul_(6.0)
    pol.module.eval()
    d = tmp_path_factory.mktemp("exp")
    pol.save(str(d / "ck"))
    assert main(["export-hf", "--model", str(d / "ck"), "--out", str(d / "hf")]) == 0
    return TinyPolicy.load(str(d / "ck")), d / "hf"


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """fp32 logits equal up to summation order: 1e-5 of their scale (ours run the fused trunk, HF eager ops)."""
    return float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


def test_logits_and_greedy_match(exported, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pol, hf_dir = exported
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    prompts = [p.question for p in load_arith("test", limit=8)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert enc["input_ids"][0].tolist()[-len(prompts[0]):] == pol.tokenizer.encode(prompts[0])
    with torch.no_grad():
        ours = pol.module(enc["input_ids"], enc["attention_mask"])
        # with left padding, pass the positions HF generate uses (real tokens count from 0); without position_ids
        # a plain HF forward counts pads too, equal up to RoPE rounding (attention depends on relative positions)
        theirs = model(**enc, position_ids=(enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits
        one = torch.tensor([pol.tokenizer.encode(prompts[0])])
        assert close(model(one).logits, pol.module(one))
    real = enc["attention_mask"].bool()
    assert close(ours[real], theirs[real])
    with torch.no_grad():
        gen = model.generate(**enc, do_sample=False, max_new_tokens=30, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    new = gen[:, enc["input_ids"].shape[1]:].tolist()
    mine = pol.sampler().generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=30))
    for row, (r,) in zip(new, mine):
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id) + 1]
        assert row == r.token_ids
    assert tok.decode(new[0], skip_special_tokens=True) == mine[0][0].text


def test_export_bad_model_dir(tmp_path):
    assert main(["export-hf", "--model", str(tmp_path), "--out", str(tmp_path / "hf")]) == 2
