"""Tests of the KV-cache TinySampler: exactness vs uncached decoding, seeds, temperature 0, truncation, stops."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rlscale.cli import main
from rlscale.engine.base import SamplingParams
from rlscale.engine.tiny_sampler import TinySampler
from rlscale.errors import UserError
from rlscale.lab.presets import get_size
from rlscale.models.tiny import TinyConfig, TinyPolicy
from rlscale.models.tokenizer import CharTokenizer
from rlscale.tasks.arith import ALPHABET, load_arith

torch.set_num_threads(1)
PROMPTS = [p.question for p in load_arith("test", limit=12)]


@pytest.fixture(scope="module")
def pol() -> TinyPolicy:
    s = get_size("xs")
    tok = CharTokenizer(ALPHABET)
    p = TinyPolicy.create(TinyConfig(tok.vocab_size, s.d_model, s.n_layers, s.n_heads, s.d_ff, max_seq_len=96), tok,
                          seed=1)
    with torch.no_grad():  # sharper than init so that sampling is far from uniform and EOS does occur
        for w in p.module.parameters():
            w.mul_(6.0)
        p.module.model.embed_tokens.weight[p.tokenizer.eos_id] *= 1.5
    p.module.eval()
    return p


def uncached_greedy(pol: TinyPolicy, prompt: str, max_new: int) -> tuple[list[int], list[float]]:
    ids, out, lps = pol.tokenizer.encode(prompt), [], []
    for _ in range(max_new):
        with torch.no_grad():
            logits = pol.module(torch.tensor([ids + out]))[0, -1]
        nxt = int(logits.argmax())
        out.append(nxt)
        lps.append(float(torch.log_softmax(logits, -1)[nxt]))
        if nxt == pol.tokenizer.eos_id:
            break
    return out, lps


def test_greedy_matches_uncached_argmax(pol):
    out = pol.sampler().generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=40))
    for prompt, (r,) in zip(PROMPTS, out):
        ids, lps = uncached_greedy(pol, prompt, 40)
        assert r.token_ids == ids
        assert r.logprobs == pytest.approx(lps, abs=1e-4)
        assert r.finished == (ids[-1] == pol.tokenizer.eos_id)
        assert r.text == pol.tokenizer.decode(ids)


@pytest.mark.parametrize("native", [True, False])
def test_sampled_logprobs_match_full_forward(pol, native):
    """Log-probs and per-token entropies of the sampling distribution, on the C and the torch decode loops, are
    those of a full forward at the same temperature."""
    if native and pol.sampler()._native_lib(SamplingParams(temperature=0.8)) is None:
        pytest.skip("no C compiler")
    out = pol.sampler(native=native).generate(PROMPTS[:4], SamplingParams(n=2, temperature=0.8, max_new_tokens=30,
                                                                           seed=3))
    for rs in out:
        for r in rs:
            seq = torch.tensor([r.prompt_ids + r.token_ids])
            with torch.no_grad():
                logp, ent = pol.token_logprobs(seq, torch.ones_like(seq), temperature=0.8, with_entropy=True)
            ref = logp[0, len(r.prompt_ids) - 1:]
            assert torch.allclose(torch.tensor(r.logprobs), ref, atol=1e-4)
            assert len(r.entropies) == len(r.token_ids)
            assert torch.allclose(torch.tensor(r.entropies), ent[0, len(r.prompt_ids) - 1:], atol=1e-4)


@pytest.mark.parametrize("native", [True, False])
def test_without_logprobs_the_same_tokens(pol, native):
    """SamplingParams(logprobs=False) (evaluation) gives the same tokens, texts and finish flags, with no log-probs
    or entropies, on the C and the torch decode loops; greedy and sampled."""
    for temperature in (0.0, 1.0):
        params = SamplingParams(n=3, temperature=temperature, max_new_tokens=40, seed=5)
        sampler = pol.sampler(native=native)
        full = sampler.generate(PROMPTS, params)
        bare = sampler.generate(PROMPTS, dataclasses.replace(params, logprobs=False))
        key = [[(r.token_ids, r.text, r.finished, r.seed) for r in g] for g in full]
        assert key == [[(r.token_ids, r.text, r.finished, r.seed) for r in g] for g in bare]
        assert any(r.finished for g in bare for r in g) and any(not r.finished for g in bare for r in g)
        assert all(r.logprobs == [] and r.entropies is None for g in bare for r in g)
        assert all(len(r.logprobs) == len(r.token_ids) > 0 for g in full for r in g)


def test_same_seed_same_tokens_regardless_of_batch(pol):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=30, seed=7)
    full = pol.sampler().generate(PROMPTS, params)
    again = TinySampler(pol, max_batch=5, compact_every=1).generate(PROMPTS, params)
    threaded = TinySampler(pol, workers=2).generate(PROMPTS, params)  # two chunks decoded concurrently
    assert [[r.token_ids for r in rs] for rs in full] == [[r.token_ids for r in rs] for rs in threaded]
    alone = pol.sampler().generate([PROMPTS[4]], params, seeds=[[r.seed for r in full[4]]])
    assert [[r.token_ids for r in rs] for rs in full] == [[r.token_ids for r in rs] for rs in again]
    assert [r.token_ids for r in alone[0]] == [r.token_ids for r in full[4]]
    other = pol.sampler().generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=30, seed=8))
    assert [[r.token_ids for r in rs] for rs in full] != [[r.token_ids for r in rs] for rs in other]
    assert len({tuple(r.token_ids) for r in full[0]}) > 1  # samples of one prompt differ


def test_temperature_zero_and_tiny_top_p_are_greedy(pol):
    greedy = pol.sampler().generate(PROMPTS, SamplingParams(n=2, temperature=0.0, max_new_tokens=25, seed=1))
    nucleus = pol.sampler().generate(PROMPTS, SamplingParams(n=2, temperature=1.3, top_p=1e-6, max_new_tokens=25))
    for g, t in zip(greedy, nucleus):
        assert g[0].token_ids == g[1].token_ids == t[0].token_ids == t[1].token_ids


def test_sampling_frequencies_match_softmax(pol):
    prompt = PROMPTS[0]
    with torch.no_grad():
        probs = torch.softmax(pol.module(torch.tensor([pol.tokenizer.encode(prompt)]))[0, -1] / 1.5, -1)
    n = 3000
    out = pol.sampler().generate([prompt], SamplingParams(n=n, temperature=1.5, max_new_tokens=1, seed=0))
    counts = torch.bincount(torch.tensor([r.token_ids[0] for r in out[0]]), minlength=probs.numel()).float()
    se = (probs * (1 - probs) / n).sqrt()
    assert bool(((counts / n - probs).abs() <= 5 * se + 1e-3).all())


def test_top_p_restricts_to_nucleus(pol):
    prompt = PROMPTS[1]
    with torch.no_grad():
        probs = torch.softmax(pol.module(torch.tensor([pol.tokenizer.encode(prompt)]))[0, -1], -1)
    sp, si = probs.sort(descending=True)
    keep = set(si[: int(((sp.cumsum(0) - sp) < 0.6).sum())].tolist())
    out = pol.sampler().generate([prompt], SamplingParams(n=400, temperature=1.0, top_p=0.6, max_new_tokens=1))
    assert {r.token_ids[0] for r in out[0]} <= keep


def test_truncation_flag_and_budget(pol):
    out = pol.sampler().generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=3, seed=2))
    for rs in out:
        for r in rs:
            assert len(r.token_ids) <= 3 and len(r.logprobs) == len(r.token_ids)
            ended_by_eos = r.token_ids[-1] == pol.tokenizer.eos_id
            assert r.finished == ended_by_eos
            assert ended_by_eos or len(r.token_ids) == 3
    assert any(not r.finished for rs in out for r in rs)


def test_stop_strings(pol):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=40, stop=("=",), seed=5)
    out = pol.sampler().generate(PROMPTS, params)
    free = pol.sampler().generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=40, seed=5))
    for rs, fs in zip(out, free):
        for r, f in zip(rs, fs):
            assert f.token_ids[: len(r.token_ids)] == r.token_ids  # same seed: a prefix of the free run
            if "=" in f.text and (pol.tokenizer.eos_id not in f.token_ids or
                                  f.text.index("=") < len(f.token_ids) - 1):
                assert r.text == f.text[: f.text.index("=") + 1] and r.finished


def test_context_limit(pol):
    with pytest.raises(UserError, match="context is 96"):
        pol.sampler().generate(["a=1" * 40], SamplingParams())
    out = pol.sampler().generate(["a=1" * 30], SamplingParams(temperature=0.0, max_new_tokens=64))
    assert len(out[0][0].token_ids) <= 96 - 90  # the budget is cut at the context
    with pytest.raises(UserError):
        pol.sampler().generate(PROMPTS[:1], SamplingParams(n=0))


def test_cli_too_long_prompt_exits_2(pol, tmp_path, capsys):
    ck = tmp_path / "ck"
    pol.save(str(ck))
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"id": "x", "question": "a=1," * 30 + "b?", "answer": "1"}) + "\n")
    assert main(["sample", "--model", str(ck), "--data", str(data), "--n", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "context" in err
    assert main(["sample", "--model", str(ck), "--limit", "2", "--n", "2", "--max-new-tokens", "8"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_greedy_identical_across_chunkings_and_compaction(pol):
    """Chunk size (max_batch), compaction cadence and the prompt-length sort must not change any token."""
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=40)
    ref = TinySampler(pol, max_batch=256, compact_every=1000).generate(PROMPTS, params)
    for kw in ({"max_batch": 3, "compact_every": 1}, {"max_batch": 7, "compact_every": 2}, {}):
        out = TinySampler(pol, **kw).generate(PROMPTS, params)
        assert [[r.token_ids for r in rs] for rs in out] == [[r.token_ids for r in rs] for rs in ref]
        for rs, fs in zip(out, ref):
            for r, f in zip(rs, fs):
                assert r.logprobs == pytest.approx(f.logprobs, abs=1e-4)  # matmul blocking differs by batch


def test_top_p_with_temperature_matches_reference_nucleus(pol):
    """top_p < 1 with T != 1: every first token lies in the nucleus of softmax(logits / T)."""
    for prompt in PROMPTS:  # a prompt whose nucleus holds several tokens but not all
        with torch.no_grad():
            probs = torch.softmax(pol.module(torch.tensor([pol.tokenizer.encode(prompt)]))[0, -1] / 1.6, -1)
        sp, si = probs.sort(descending=True)
        keep = set(si[: int(((sp.cumsum(0) - sp) < 0.9).sum())].tolist())
        if 1 < len(keep) < probs.numel():
            break
    assert 1 < len(keep) < probs.numel()
    out = pol.sampler().generate([prompt], SamplingParams(n=300, temperature=1.6, top_p=0.9, max_new_tokens=2))
    firsts = {r.token_ids[0] for r in out[0]}
    assert firsts <= keep and len(firsts) > 1
    for r in out[0]:  # log-probs are of softmax(logits / T), before top-p
        assert r.logprobs[0] == pytest.approx(float(torch.log(probs[r.token_ids[0]])), abs=1e-4)


def test_right_padded_fast_path_matches_masked_forward(pol):
    """TinyGPT.forward on a right-padded batch (pure-causal fast path) equals each row run alone and the
    explicitly masked (left-padded) computation at every real position."""
    seqs = [pol.tokenizer.encode(p) for p in PROMPTS[:5]]
    L = max(map(len, seqs))
    right = torch.full((5, L), pol.tokenizer.pad_id)
    am_r = torch.zeros(5, L, dtype=torch.long)
    left, am_l = right.clone(), am_r.clone()
    for i, s in enumerate(seqs):
        right[i, :len(s)], am_r[i, :len(s)] = torch.tensor(s), 1
        left[i, L - len(s):], am_l[i, L - len(s):] = torch.tensor(s), 1
    with torch.no_grad():
        out_r = pol.module(right, am_r)
        out_l = pol.module(left, am_l)
        for i, s in enumerate(seqs):
            alone = pol.module(torch.tensor([s]))[0]
            assert torch.allclose(out_r[i, :len(s)], alone, atol=1e-5)
            assert torch.allclose(out_l[i, L - len(s):], alone, atol=1e-5)


def test_bf16_math_attention_matches_sdpa():
    """The autocast training path's explicit attention equals SDPA (fp32 reference), causal and masked."""
    from rlscale.models.tiny import _math_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 9, 8, generator=g) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(_math_attention(q, k, v, None), ref, atol=1e-5)
    am = torch.ones(3, 9, dtype=torch.bool)
    am[1, :4] = False  # left padding in row 1
    mask = (torch.ones(9, 9, dtype=torch.bool).tril()[None, None] & am[:, None, None, :]) | \
        torch.eye(9, dtype=torch.bool)[None, None]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(_math_attention(q, k, v, mask), ref, atol=1e-5)


def test_bf16_autocast_gradients_close_to_fp32(pol):
    """Under bf16 autocast (the update's fast path) token log-prob gradients stay close to fp32's."""
    seqs = [pol.tokenizer.encode(p) for p in PROMPTS[:4]]
    L = max(map(len, seqs))
    ids = torch.full((4, L), pol.tokenizer.pad_id)
    am = torch.zeros(4, L, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], am[i, :len(s)] = torch.tensor(s), 1
    grads, logps = [], []
    for bf16 in (False, True):
        pol.module.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logp, _ = pol.token_logprobs(ids, am)
        (logp.float() * am[:, 1:]).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in pol.module.parameters()]))
        logps.append(logp.float().detach()[am[:, 1:].bool()])
    pol.module.zero_grad()
    # the fixture's weights are scaled x6 (sharp logits), so bf16 rounding is visible but small
    assert float((logps[0] - logps[1]).abs().mean() / logps[0].abs().mean()) < 0.03
    assert float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)) > 0.9


def test_length_buckets_partition_and_minimal_padding():
    """The update's micro-batches: a partition of the sorted rows, each at most micro_batch_size, a chunk split in
    two only when that saves >= 15% of padded tokens, and then at the brute-force best split point."""
    import random

    from rlscale.rl.grpo import length_buckets

    def padded(rows, lens):
        return len(rows) * -(-max(lens[i] for i in rows) // 8) * 8

    rng = random.Random(0)
    for _ in range(200):
        n, mb = rng.randint(1, 40), rng.randint(1, 16)
        lens = [rng.randint(2, 90) for _ in range(n)]
        order = sorted(range(n), key=lambda i: lens[i])
        out = length_buckets(order, lens, mb)
        assert [i for c in out for i in c] == order and all(1 <= len(c) <= mb for c in out)
        for c in range(0, n, mb):  # each original chunk: kept whole, or split at the best point
            rows = order[c:c + mb]
            whole = padded(rows, lens)
            best = min([padded(rows[:k], lens) + padded(rows[k:], lens) for k in range(1, len(rows))] or [whole])
            got = [ch for ch in out if ch[0] in rows]
            assert sum(padded(ch, lens) for ch in got) == (best if best <= 0.85 * whole else whole)
    assert length_buckets(list(range(4)), [10, 10, 60, 60], 4) == [[0, 1], [2, 3]]
    assert length_buckets(list(range(4)), [50, 50, 50, 50], 4) == [[0, 1, 2, 3]]


def test_group_chunks_hold_whole_groups():
    """Whole-group micro-batches: every row exactly once, at most micro_batch_size rows per chunk, a group split
    only when it alone exceeds micro_batch_size (into full pieces and a remainder)."""
    import random

    from rlscale.rl.grpo import group_chunks

    rng = random.Random(0)
    for _ in range(300):
        G, n, mb = rng.randint(1, 12), rng.randint(1, 10), rng.randint(1, 16)
        lens = [rng.randint(0, 40) for _ in range(G * n)]
        groups = [[i * n + j for j in range(n) if rng.random() < 0.8] for i in range(G)]
        out = group_chunks(groups, lens, mb)
        assert sorted(i for c in out for i in c) == sorted(i for g in groups for i in g)
        assert all(1 <= len(c) <= mb for c in out)
        for g in groups:
            holding = [c for c in out if set(g) & set(c)]
            assert len(holding) == (0 if not g else 1 if len(g) <= mb else -(-len(g) // mb))
    assert group_chunks([[0, 1], [2, 3], [4, 5]], [5, 5, 9, 9, 1, 1], 4) == [[4, 5, 0, 1], [2, 3]]
    assert group_chunks([[0, 1, 2, 3, 4]], [1] * 5, 2) == [[0, 1], [2, 3], [4]]


def test_update_chunks_pick_the_cheaper_split():
    """Short completions: whole groups (prompts once); long completions of mixed lengths: length-sorted rows.
    chunk_cost against a hand count."""
    from rlscale.rl.grpo import chunk_cost, update_chunks

    group_of = [0, 0, 1, 1]
    assert chunk_cost([[0, 1, 2, 3]], group_of, [40, 30], [8, 8, 8, 8]) == 2 * 40 + 4 * 8
    assert chunk_cost([[0, 2], [1, 3]], group_of, [40, 30], [8, 8, 8, 8]) == 2 * (2 * 40 + 2 * 8)
    short = update_chunks([[0, 1], [2, 3]], group_of, [40, 30], [3, 5, 4, 6], 2)
    assert short == [[0, 1], [2, 3]]  # whole groups: each prompt once
    mixed = update_chunks([[0, 1], [2, 3]], group_of, [4, 4], [100, 8, 100, 8], 2)
    assert mixed == [[1, 3], [0, 2]]  # the two long rows together, the two short ones together
    assert sorted(i for c in mixed for i in c) == [0, 1, 2, 3]
    # on live rows only (the replayed fp32 update) padding costs nothing: real prompt and completion tokens
    assert chunk_cost([[0, 1, 2, 3]], group_of, [40, 30], [100, 8, 100, 8], live=True) == 40 + 30 + 216
    assert chunk_cost([[1, 3], [0, 2]], group_of, [40, 30], [100, 8, 100, 8], live=True) == 2 * (40 + 30) + 216
    live = update_chunks([[0, 1], [2, 3]], group_of, [4, 4], [100, 8, 100, 8], 2, live=True)
    assert live == [[0, 1], [2, 3]]  # so whole groups again: no prompt computed twice


# ------------------------------------------------------------------------------------------------ native decode loop
def native_lib():
    import shutil

    from rlscale.engine import native

    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler: the torch decode loop is used")
    lib = native.load()
    assert lib is not None, "a C compiler exists but the native decode loop did not build"
    return lib


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_native_decode_matches_torch_loop(pol, temperature):
    """The C loop and the torch loop: same tokens (greedy exactly; sampled up to float near-ties), same log-probs,
    finished flags and texts; the C loop is deterministic."""
    native_lib()
    params = SamplingParams(n=4, temperature=temperature, max_new_tokens=40, seed=5)
    a = TinySampler(pol, native=False).generate(PROMPTS, params)
    b = TinySampler(pol, native=True).generate(PROMPTS, params)
    c = TinySampler(pol, native=True, max_batch=7).generate(PROMPTS, params)
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    same = [x.token_ids == y.token_ids for x, y in pairs]
    assert all(same) if temperature == 0 else sum(same) >= 0.95 * len(same)
    for (x, y), s in zip(pairs, same):
        if s:
            assert x.logprobs == pytest.approx(y.logprobs, abs=5e-4)  # the x6 weights give logits of ~30
            assert (x.finished, x.text) == (y.finished, y.text)
    assert [[r.token_ids for r in rs] for rs in b] == [[r.token_ids for r in rs] for rs in c]
    assert any(not r.finished for rs in b for r in rs) and any(r.finished for rs in b for r in rs)


@pytest.mark.parametrize("window", [1, 3, 16])
def test_native_noise_windows_change_nothing(pol, monkeypatch, window):
    """The C loop draws each window's Gumbel noise for the rows still running, continuing each row's generator:
    any window gives exactly the tokens and log-probs of one window over all steps (rows end at different steps)."""
    from rlscale.engine import tiny_sampler

    native_lib()
    params = SamplingParams(n=4, temperature=0.8, max_new_tokens=40, seed=5)
    monkeypatch.setattr(tiny_sampler, "NOISE_WINDOW", 10_000)
    one = TinySampler(pol, native=True).generate(PROMPTS, params)
    monkeypatch.setattr(tiny_sampler, "NOISE_WINDOW", window)
    many = TinySampler(pol, native=True).generate(PROMPTS, params)
    rows = [[(r.token_ids, r.logprobs, r.finished) for r in rs] for rs in one]
    assert rows == [[(r.token_ids, r.logprobs, r.finished) for r in rs] for rs in many]
    lens = {len(r.token_ids) for rs in one for r in rs}
    assert len(lens) > 2 and max(lens) > 2 * window  # three windows or more


def test_native_falls_back_for_stops_and_top_p(pol):
    native_lib()
    s = TinySampler(pol, native=True)
    assert s._native_lib(SamplingParams(stop=("=",))) is None
    assert s._native_lib(SamplingParams(top_p=0.9)) is None
    assert s._native_lib(SamplingParams()) is not None
    assert TinySampler(pol, native=False)._native_lib(SamplingParams()) is None


def test_torch_loop_greedy_matches_uncached_argmax(pol):
    out = TinySampler(pol, native=False).generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=40))
    for prompt, (r,) in zip(PROMPTS, out):
        ids, lps = uncached_greedy(pol, prompt, 40)
        assert r.token_ids == ids and r.logprobs == pytest.approx(lps, abs=1e-4)


@pytest.mark.parametrize("d_model,n_heads", [(56, 2), (40, 4), (48, 1)])
def test_native_head_sizes_off_the_vector_width(d_model, n_heads):
    """Head sizes 28, 10 and 48 (the m model's is 28): the C loop pads each cache row to 8 floats; greedy tokens
    equal the uncached argmax and the torch loop's, log-probs the full forward's."""
    native_lib()
    tok = CharTokenizer(ALPHABET)
    p = TinyPolicy.create(TinyConfig(tok.vocab_size, d_model, 2, n_heads, 96, max_seq_len=96), tok, seed=2)
    with torch.no_grad():
        for w in p.module.parameters():
            w.mul_(5.0)
    p.module.eval()
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=12)
    out = TinySampler(p, native=True).generate(PROMPTS[:5], params)
    ref = TinySampler(p, native=False).generate(PROMPTS[:5], params)
    for prompt, rs, rr in zip(PROMPTS[:5], out, ref):
        ids, lps = uncached_greedy(p, prompt, 12)
        for r, q in zip(rs, rr):
            assert r.token_ids == ids[:len(r.token_ids)] == q.token_ids
            assert r.logprobs == pytest.approx(lps[:len(r.logprobs)], abs=1e-4)


def test_native_skipped_for_heads_over_128():
    tok = CharTokenizer(ALPHABET)
    p = TinyPolicy.create(TinyConfig(tok.vocab_size, 136, 1, 1, 64, max_seq_len=64), tok, seed=0)
    assert TinySampler(p, native=None)._native_lib(SamplingParams()) is None
