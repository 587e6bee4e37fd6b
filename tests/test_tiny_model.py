"""Tests of the lab tokenizer, TinyGPT / TinyPolicy (log-probs, padding, FLOPs) and the checkpoint format."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.lab.presets import SIZES, get_size
from rlscale.models.tiny import MARKER, WEIGHTS, TinyConfig, TinyPolicy, flops_per_token
from rlscale.models.tokenizer import CharTokenizer
from rlscale.tasks.arith import ALPHABET

torch.set_num_threads(1)


def make_policy(size: str = "xs", seed: int = 0, sharpen: float = 1.0) -> TinyPolicy:
    s = get_size(size)
    tok = CharTokenizer(ALPHABET)
    cfg = TinyConfig(tok.vocab_size, s.d_model, s.n_layers, s.n_heads, s.d_ff, max_seq_len=96)
    pol = TinyPolicy.create(cfg, tok, seed=seed)
    with torch.no_grad():
        for p in pol.module.parameters():
            p.mul_(sharpen)
    pol.module.eval()
    return pol


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_shared_prefix_logprobs_and_gradients_match_full_sequences(dtype):
    """completion_logprobs (each prompt computed once per group) equals the log-probs and entropies of the full
    sequences prompt + completion at the completion positions, and so do the gradients of a weighted sum: the
    packed route (packed_completion_logprobs, what HF policies use) is the reference. Prompts of mixed lengths
    (left padding) and completions of mixed lengths (right padding), one prompt with no padding at all."""
    from rlscale.models.base import packed_completion_logprobs

    pol = make_policy("s", sharpen=3.0)
    pol.module.train()
    V, pad = pol.config.vocab_size, pol.tokenizer.pad_id
    g = torch.Generator().manual_seed(0)
    G, n = 4, 3
    plens, clens = [9, 17, 4, 17], torch.randint(1, 15, (G * n,), generator=g).tolist()
    P, C = max(plens), max(clens)
    pid, pm = torch.full((G, P), pad), torch.zeros(G, P, dtype=torch.long)
    for k, L in enumerate(plens):
        pid[k, P - L:], pm[k, P - L:] = torch.randint(3, V, (L,), generator=g), 1
    cid, cm = torch.full((G * n, C), pad), torch.zeros(G * n, C)
    for r, L in enumerate(clens):
        cid[r, :L], cm[r, :L] = torch.randint(3, V, (L,), generator=g), 1
    group = torch.arange(G).repeat_interleave(n)
    w = torch.randn(G * n, C, generator=g) * cm
    out = []
    for fn in (pol.completion_logprobs, lambda *a, **k: packed_completion_logprobs(pol, *a, **k)):
        pol.module.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            lp, ent = fn(pid, pm, cid, group, temperature=0.8, with_entropy=True)
        ((lp.float() * w).sum() + (ent.float() * w).sum()).backward()
        out.append((lp.float().detach() * cm, ent.float().detach() * cm,
                    torch.cat([p.grad.flatten() for p in pol.module.parameters()])))
    (lp_a, ent_a, gr_a), (lp_b, ent_b, gr_b) = out
    if dtype == "fp32":
        torch.testing.assert_close(lp_a, lp_b, rtol=0, atol=1e-5)
        torch.testing.assert_close(ent_a, ent_b, rtol=0, atol=1e-5)
        assert float((gr_a - gr_b).norm() / gr_b.norm()) < 1e-5  # fp32 rounding (measured 7e-7)
    else:  # bf16 rounds the two routes differently; they must still agree closely
        assert float((lp_a - lp_b).abs().mean() / lp_b.abs().mean()) < 0.03
        assert float(torch.nn.functional.cosine_similarity(gr_a, gr_b, dim=0)) > 0.98
    assert float(lp_a.abs().sum()) > 0 and float(gr_a.abs().sum()) > 0


def test_tokenizer_roundtrip_and_errors(tmp_path):
    tok = CharTokenizer(ALPHABET)
    s = "a=7,b=a*3;b? b=a*3=7*3=21;answer: 21"
    ids = tok.encode(s)
    assert len(ids) == len(s) and tok.decode(ids + [tok.eos_id, tok.pad_id]) == s
    assert {tok.pad_id, tok.bos_id, tok.eos_id} == {0, 1, 2} and tok.vocab_size == len(ALPHABET) + 3
    with pytest.raises(UserError, match="outside"):
        tok.encode("a=7!")
    tok.save(tmp_path / "t.json")
    assert CharTokenizer.load(tmp_path / "t.json").encode(s) == ids
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(UserError):
        CharTokenizer.load(tmp_path / "bad.json")
    hf = tok.to_hf()
    assert hf(s, add_special_tokens=False)["input_ids"] == ids
    assert hf.decode(ids) == s and hf.eos_token_id == tok.eos_id and hf.pad_token_id == tok.pad_id


def test_sizes_span_30x():
    tok = CharTokenizer(ALPHABET)
    n = {}
    for name, s in SIZES.items():
        cfg = TinyConfig(tok.vocab_size, s.d_model, s.n_layers, s.n_heads, s.d_ff)
        n[name] = TinyPolicy.create(cfg, tok).num_params()
    assert list(n.values()) == sorted(n.values())
    assert 25 <= n["l"] / n["xs"] <= 40 and 40_000 <= n["xs"] <= 80_000
    with pytest.raises(UserError, match="valid sizes"):
        get_size("xl")


def test_flops_closed_form():
    cfg = TinyConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2, d_ff=16)
    # per layer: q,k,v,o 4*64 + gate,up,down 3*128 = 640; x2 layers + head 80 = 1360 -> 2720; attention 4*2*5*8
    assert flops_per_token(cfg, 5) == 2 * 1360 + 4 * 2 * 5 * 8
    pol = TinyPolicy.create(cfg, CharTokenizer("0123456"))
    n_matmul = sum(p.numel() for n, p in pol.module.named_parameters() if n.endswith("proj.weight")) + 80
    assert pol.flops_per_token(0) == 2 * n_matmul


def test_token_logprobs_bruteforce():
    pol = make_policy(sharpen=4.0)
    tok = pol.tokenizer
    seqs = [tok.encode("a=7,b=a*3;b?b="), tok.encode("a=1;a?")]
    T = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_id] * (T - len(s)) for s in seqs])
    mask = (torch.arange(T)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    for temp in (1.0, 0.7):
        with torch.no_grad():
            logp, ent = pol.token_logprobs(ids, mask, temperature=temp, with_entropy=True)
        assert logp.shape == ent.shape == (2, T - 1)
        for b, s in enumerate(seqs):  # reference: each sequence alone, one prefix at a time
            for t in range(len(s) - 1):
                with torch.no_grad():
                    logits = pol.module(torch.tensor([s[: t + 1]]))[0, -1] / temp
                ref = torch.log_softmax(logits, -1)
                assert abs(float(logp[b, t]) - float(ref[s[t + 1]])) < 1e-4
                assert abs(float(ent[b, t]) + float((ref.exp() * ref).sum())) < 1e-4
    assert pol.token_logprobs(ids, mask)[1] is None


def test_left_padding_does_not_change_logits():
    pol = make_policy(sharpen=3.0)
    s = pol.tokenizer.encode("a=5,b=a+4;b?")
    with torch.no_grad():
        alone = pol.module(torch.tensor([s]))[0]
        padded = pol.module(torch.tensor([[0] * 5 + s]), torch.tensor([[0] * 5 + [1] * len(s)]))[0, 5:]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    pol = make_policy(seed=3)
    pol.meta = {"size": "xs", "compute": {"tokens": 5}}
    pol.save(str(tmp_path / "ck"))
    pol.save(str(tmp_path / "ck"))  # overwriting an existing checkpoint works
    back = TinyPolicy.load(str(tmp_path / "ck"))
    x = torch.tensor([pol.tokenizer.encode("a=1,b=a+1;b?")])
    with torch.no_grad():
        assert torch.equal(back.module(x), pol.module(x))
    assert back.meta["compute"]["tokens"] == 5 and back.kind == "tiny" and back.config == pol.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp dirs left behind


def test_broken_checkpoints(tmp_path, capsys):
    pol = make_policy()
    d = tmp_path / "ck"
    pol.save(str(d))
    meta = json.loads((d / MARKER).read_text())
    (d / MARKER).write_text(json.dumps(meta | {"format_version": 99}))
    with pytest.raises(UserError, match="format_version"):
        TinyPolicy.load(str(d))
    (d / MARKER).write_text(json.dumps(meta | {"config": meta["config"] | {"d_model": 64}}))
    with pytest.raises(UserError, match="do not match"):
        TinyPolicy.load(str(d))
    (d / MARKER).write_text(json.dumps(meta))
    (d / WEIGHTS).unlink()
    with pytest.raises(UserError, match="missing model.safetensors"):
        TinyPolicy.load(str(d))
    assert main(["sample", "--model", str(d), "--limit", "1", "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing" in err


def test_sequence_longer_than_context():
    pol = make_policy()
    with pytest.raises(UserError, match="context"):
        pol.module(torch.zeros(1, 97, dtype=torch.long))
    assert math.isfinite(float(pol.module(torch.zeros(1, 96, dtype=torch.long)).sum()))


def test_left_pad_matches_row_by_row_construction():
    from rlscale.models.base import left_pad

    seqs = [[5, 6, 7], [], [1], [2, 3, 4, 8, 9]]
    for width in (None, 5, 9):
        ids, mask = left_pad(seqs, 0, width)
        W = width or 5
        ref_ids = torch.zeros(len(seqs), W, dtype=torch.long)
        ref_mask = torch.zeros(len(seqs), W, dtype=torch.long)
        for r, s in enumerate(seqs):
            for j, t in enumerate(s):
                ref_ids[r, W - len(s) + j] = t
                ref_mask[r, W - len(s) + j] = 1
        assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    with pytest.raises(ValueError, match="width 3"):
        left_pad(seqs, 0, 3)


def test_native_library_hash_covers_included_headers(tmp_path, monkeypatch):
    """A change to a header a C source includes gives a new library path (so it is rebuilt)."""
    from rlscale.engine import native

    monkeypatch.setenv("RLSCALE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "h.h").write_text("static int k(void) { return 1; }\n")
    src = tmp_path / "_x.c"
    src.write_text('#include "h.h"\nint f(void) { return k(); }\n')
    before = native.library_path(src)
    (tmp_path / "h.h").write_text("static int k(void) { return 2; }\n")
    assert native.library_path(src) != before
