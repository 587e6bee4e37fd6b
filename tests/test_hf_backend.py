"""HFPolicy / HFSampler on a tiny Llama built in code: log-probs, seeds, greedy = HF generate, top-p, stop strings,
truncation, save/load, FLOPs; evaluate() and the eval/profile CLI end to end; the vLLM import guard."""

import dataclasses
import json

import pytest
import torch
from hf_fixtures import make_tiny_hf_model

from rlscale.cli import main
from rlscale.engine.base import SamplingParams
from rlscale.errors import UserError
from rlscale.evals.evaluate import evaluate
from rlscale.models.hf import HFPolicy
from rlscale.tasks import get_task

torch.set_num_threads(1)
PROMPTS = ["a=7,b=a*3;b?", "hi", "a=1,b=a+2,c=b*3;c?"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_hf_model(tmp_path_factory.mktemp("tiny_hf") / "model")


@pytest.fixture(scope="module")
def policy(model_dir):
    return HFPolicy.load(model_dir)


def test_load_policy_dispatches_to_hf(model_dir):
    from rlscale.models import load_policy

    p = load_policy(model_dir)
    assert isinstance(p, HFPolicy) and p.kind == "hf"
    assert p.tokenizer.decode(p.tokenizer.encode("a=1;\nb?")) == "a=1;\nb?"


def test_token_logprobs_match_direct_computation(policy):
    tok = policy.tokenizer
    seqs = [tok.encode("a=7,b=a*3;b?b=21"), tok.encode("hello")]
    T = max(map(len, seqs))
    ids = torch.full((2, T), tok.pad_id)
    mask = torch.zeros((2, T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    for temp in (1.0, 0.7):
        logp, ent = policy.token_logprobs(ids, mask, temperature=temp, with_entropy=True)
        assert logp.shape == (2, T - 1) and ent.shape == (2, T - 1)
        for i, s in enumerate(seqs):  # each sequence alone, no padding
            logits = policy.module(torch.tensor([s])).logits[0, :-1].float() / temp
            ref = torch.log_softmax(logits, -1)
            want = ref.gather(-1, torch.tensor(s[1:])[:, None]).squeeze(-1)
            assert torch.allclose(logp[i, :len(s) - 1], want, atol=1e-5)
            want_ent = -(ref.exp() * ref).sum(-1)
            assert torch.allclose(ent[i, :len(s) - 1], want_ent, atol=1e-5)


def test_same_seed_same_tokens_whatever_the_batch(policy):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=7)
    full = policy.sampler().generate(PROMPTS, params)
    again = policy.sampler(max_batch=2).generate(PROMPTS, params)
    alone = policy.sampler().generate(PROMPTS[1:2], params, seeds=[[r.seed for r in full[1]]])
    assert [[r.token_ids for r in g] for g in full] == [[r.token_ids for r in g] for g in again]
    assert [r.token_ids for r in alone[0]] == [r.token_ids for r in full[1]]
    other = policy.sampler().generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=8))
    assert [[r.token_ids for r in g] for g in other] != [[r.token_ids for r in g] for g in full]
    assert len({tuple(r.token_ids) for r in full[0]}) > 1  # samples of one prompt differ


def test_sampled_logprobs_match_token_logprobs(policy):
    """The sampler's log-probs and per-token entropies are those of a full forward at the same temperature."""
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=12, seed=1)
    for group in policy.sampler().generate(PROMPTS[:2], params):
        for r in group:
            seq = torch.tensor([r.prompt_ids + r.token_ids])
            logp, ent = policy.token_logprobs(seq, torch.ones_like(seq), temperature=0.8, with_entropy=True)
            want = logp[0, len(r.prompt_ids) - 1:]
            assert torch.allclose(torch.tensor(r.logprobs), want, atol=1e-4)
            assert torch.allclose(torch.tensor(r.entropies), ent[0, len(r.prompt_ids) - 1:], atol=1e-4)


def test_without_logprobs_the_same_tokens(policy):
    """SamplingParams(logprobs=False) gives the same tokens and texts, with no log-probs or entropies."""
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=4)
    full = policy.sampler().generate(PROMPTS, params)
    bare = policy.sampler().generate(PROMPTS, dataclasses.replace(params, logprobs=False))
    assert [[(r.token_ids, r.text, r.finished) for r in g] for g in full] == \
        [[(r.token_ids, r.text, r.finished) for r in g] for g in bare]
    assert all(r.logprobs == [] and r.entropies is None for g in bare for r in g)
    assert all(len(r.logprobs) == len(r.token_ids) for g in full for r in g)


def test_greedy_without_logprobs_the_same_tokens(policy):
    """Greedy with logprobs=False takes the argmax without the log-softmax: the same tokens as with log-probs."""
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=12)
    full = policy.sampler().generate(PROMPTS, params)
    bare = policy.sampler().generate(PROMPTS, dataclasses.replace(params, logprobs=False))
    assert [[r.token_ids for r in g] for g in full] == [[r.token_ids for r in g] for g in bare]
    assert all(r.logprobs == [] and r.entropies is None for g in bare for r in g)


def test_greedy_equals_hf_generate(policy):
    rolls = policy.sampler().generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=12))
    hf = policy.tokenizer.hf
    enc = hf(PROMPTS, return_tensors="pt", padding=True)
    ref = policy.module.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=hf.pad_token_id)
    ref = ref[:, enc["input_ids"].shape[1]:].tolist()
    for g, want in zip(rolls, ref):
        got = g[0].token_ids
        assert got == want[:len(got)]
        if len(got) < 12:  # ended on EOS; HF pads after it
            assert got[-1] == policy.tokenizer.eos_id


def test_tiny_top_p_is_greedy(policy):
    greedy = policy.sampler().generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=10))
    nucleus = policy.sampler().generate(PROMPTS, SamplingParams(n=2, temperature=1.5, top_p=1e-6,
                                                                max_new_tokens=10))
    for g, s in zip(greedy, nucleus):
        assert all(r.token_ids == g[0].token_ids for r in s)


def test_truncation_and_stop_strings(policy):
    rolls = policy.sampler().generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=3, seed=2))
    for g in rolls:
        for r in g:
            ended_eos = bool(r.token_ids) and r.token_ids[-1] == policy.tokenizer.eos_id
            assert r.finished == ended_eos
            assert len(r.token_ids) == 3 or ended_eos
    assert any(not r.finished for g in rolls for r in g)
    greedy = policy.sampler().generate(PROMPTS[:1], SamplingParams(n=1, temperature=0, max_new_tokens=20))[0][0]
    text = greedy.text
    assert len(text) >= 4, "the fixture model should not stop at once"
    stop = text[2:4]
    cut = policy.sampler().generate(PROMPTS[:1], SamplingParams(n=1, temperature=0, max_new_tokens=20,
                                                                stop=(stop,)))[0][0]
    assert cut.finished and cut.text == text[:text.index(stop) + len(stop)]


def test_stop_check_on_the_tail_equals_the_full_decode(policy, monkeypatch):
    """The per-step stop check decodes a tail of the completion; every generation equals the one checking the whole
    decoded text at every step (window as long as any completion). The stops are substrings of 2-4 characters
    that the unstopped samples contain (a stop never met would test nothing)."""
    import collections

    import rlscale.engine.hf as hf_engine

    free = policy.sampler().generate(PROMPTS, SamplingParams(n=8, temperature=1.0, max_new_tokens=40, seed=1))
    counts = collections.Counter(r.text[i:i + k] for g in free for r in g for k in (2, 3, 4)
                                 for i in range(max(0, len(r.text) - k)))
    common = [t for t, _ in counts.most_common() if t.strip()]
    stops = [tuple(common[i:i + 2]) for i in range(0, 8, 2)]
    params = [SamplingParams(n=8, temperature=1.0, max_new_tokens=40, seed=1, stop=stop) for stop in stops]
    fast = [policy.sampler().generate(PROMPTS, p) for p in params]
    monkeypatch.setattr(hf_engine, "STOP_WINDOW_SLACK", 10**6)
    full = [policy.sampler().generate(PROMPTS, p) for p in params]
    assert [[[(r.text, r.token_ids, r.finished) for r in g] for g in x] for x in fast] == \
        [[[(r.text, r.token_ids, r.finished) for r in g] for g in x] for x in full]
    cut = [r.text for x, p in zip(fast, params) for g in x for r in g if r.finished and r.text.endswith(p.stop)]
    assert sum(len(t) > 12 for t in cut) >= 5, cut  # stops met after the window's length


def test_prompt_longer_than_context(policy):
    with pytest.raises(UserError, match="context"):
        policy.sampler().generate(["x" * 300], SamplingParams(n=1, max_new_tokens=4))


def test_save_load_roundtrip_and_flops(policy, tmp_path):
    policy.save(str(tmp_path / "copy"))
    other = HFPolicy.load(str(tmp_path / "copy"))
    ids = torch.tensor([policy.tokenizer.encode("a=7,b=a*3;b?")])
    assert torch.equal(policy.module(ids).logits, other.module(ids).logits)
    cfg = policy.config
    emb = cfg.vocab_size * cfg.hidden_size
    assert policy.num_params() == sum(p.numel() for p in policy.module.parameters())
    assert policy.num_nonembedding_params() == policy.num_params() - emb
    assert policy.flops_per_token(100) == 2 * (policy.num_params() - emb) + 4 * 2 * 100 * 32  # 4 L ctx d
    with pytest.raises(UserError, match="config.json"):
        HFPolicy.load(str(tmp_path))


def test_evaluate_end_to_end(policy):
    problems = get_task("arith").load("test", limit=4)
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=8, seed=0)
    res = evaluate(problems, policy.sampler(), template="plain", params=params, modes=("strict", "flexible"),
                   ks=(1, 4), progress=False, keep_text=True)
    assert [r["problem_id"] for r in res.records] == [p.id for p in problems]
    for rec in res.records:
        assert rec["n"] == 4 and len(rec["completions"]) == 4 and len(rec["lengths"]) == 4
        assert max(rec["lengths"]) <= 8 and rec["truncated"] <= sum(n == 8 for n in rec["lengths"])
    assert sum(r["truncated"] for r in res.records) > 0  # a random model rarely stops within 8 tokens
    s = res.summary("flexible")
    assert {"avg", "avg_stderr", "pass@4", "worst@4", "maj@4", "maj@4_stderr"} <= set(s)
    again = evaluate(problems, policy.sampler(), template="plain", params=params, modes=("flexible",), ks=(1,),
                     progress=False, keep_text=True)
    assert [r["completions"] for r in again.records] == [r["completions"] for r in res.records]


def test_cli_eval_and_profile(model_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "--model", model_dir, "--task", "arith", "--limit", "3", "--n", "4", "--k", "1,2",
               "--shots", "0,1", "--mode", "strict,flexible", "--max-new-tokens", "6", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "0-shot" in text and "1-shot" in text and "pass@2" in text and "avg sampling se" in text
    summary = json.loads((out / "summary.json").read_text())
    assert "avg_sampling_stderr" in summary["results"]["0"]["strict"]
    assert set(summary["results"]) == {"0", "1"} and {"strict", "flexible"} <= set(summary["results"]["1"])
    assert len((out / "records_1shot.jsonl").read_text().splitlines()) == 3
    prof = tmp_path / "prof.csv"
    assert main(["profile", "--model", model_dir, "--task", "arith", "--limit", "5", "--n", "4",
                 "--max-new-tokens", "6", "--out", str(prof), "--no-progress"]) == 0
    import pandas as pd

    df = pd.read_csv(prof)
    assert len(df) == 5 and {"problem_id", "n", "correct", "avg"} <= set(df.columns)
    assert (tmp_path / "prof.hist.png").stat().st_size > 1000
    assert "/4" in capsys.readouterr().out  # text histogram rows


def test_cli_eval_bad_input(model_dir, capsys):
    base = ["eval", "--model", model_dir, "--task", "arith", "--limit", "2", "--n", "4", "--no-progress"]
    assert main(base + ["--k", "8"]) == 2
    assert main(base + ["--mode", "nope"]) == 2
    assert main(["eval", "--model", "/nonexistent", "--task", "arith"]) == 2
    assert main(base[:4] + ["nope"] + base[5:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("rlscale eval: error:") for e in err)


def test_vllm_import_guard():
    try:
        import vllm  # noqa: F401
    except ImportError:
        from rlscale.engine.vllm import VLLMSampler

        with pytest.raises(UserError, match=r"pip install rlscale\[vllm\]"):
            VLLMSampler("any")
    else:
        pytest.skip("vllm is installed")


def fake_vllm(policy):
    """A stand-in `vllm` module whose LLM answers each request (n=1, its own seed) with our HF sampler on `policy`,
    in vLLM's output shapes: what --engine vllm maps to and from is checked, not vLLM itself (not installable
    here: it needs a GPU)."""
    import types

    from rlscale.engine.hf import HFSampler

    calls = []  # the logprobs setting of every request

    class FakeSamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class FakeLLM:
        def __init__(self, model, logprobs_mode=None, **kw):
            self.model, self.logprobs_mode = model, logprobs_mode

        def get_tokenizer(self):
            return policy.tokenizer.hf

        def generate(self, requests, sampling, use_tqdm=True):
            outs = []
            for prompt, sp in zip(requests, sampling, strict=True):
                assert sp.n == 1 and sp.include_stop_str_in_output and sp.logprobs in (0, None)
                r = HFSampler(policy).generate([prompt], SamplingParams(
                    n=1, temperature=sp.temperature, top_p=sp.top_p, max_new_tokens=sp.max_tokens,
                    stop=tuple(sp.stop)), seeds=[[sp.seed]])[0][0]
                comp = types.SimpleNamespace(
                    token_ids=r.token_ids, text=r.text, finish_reason="stop" if r.finished else "length",
                    logprobs=None if sp.logprobs is None else  # vLLM: None unless asked for
                    [{t: types.SimpleNamespace(logprob=lp)} for t, lp in zip(r.token_ids, r.logprobs)])
                calls.append(sp.logprobs)
                outs.append(types.SimpleNamespace(prompt_token_ids=r.prompt_ids, outputs=[comp]))
            return outs

    return types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams, calls=calls)


def test_eval_and_profile_through_the_vllm_engine(policy, model_dir, tmp_path, monkeypatch, capsys):
    """`--engine vllm` (a stand-in vllm that samples each request alone with its seed): the same records as the
    native engine, which samples them batched, for eval and profile; a lab checkpoint is refused in one line."""
    import sys

    fake = fake_vllm(policy)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    base = ["--model", model_dir, "--task", "arith", "--limit", "4", "--n", "3", "--max-new-tokens", "8",
            "--no-progress"]
    for engine in ("native", "vllm"):
        assert main(["eval", *base, "--k", "1,2", "--out", str(tmp_path / engine), "--save-completions",
                     "--engine", engine]) == 0
        assert main(["profile", *base, "--out", str(tmp_path / f"{engine}.jsonl"), "--engine", engine]) == 0
    for name in ("records_0shot.jsonl", "summary.json"):
        native, vllm = ((tmp_path / e / name).read_text() for e in ("native", "vllm"))
        assert native == vllm.replace(str(tmp_path / "vllm"), str(tmp_path / "native"))
    assert (tmp_path / "native.jsonl").read_text() == (tmp_path / "vllm.jsonl").read_text()
    assert fake.calls and set(fake.calls) == {None}  # evaluation asks vLLM for no log-probs
    capsys.readouterr()
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "rlscale_model.json").write_text("{}")
    assert main(["eval", "--model", str(lab), "--task", "arith", "--engine", "vllm", "--no-progress"]) == 2
    assert "export-hf" in capsys.readouterr().err


@pytest.mark.parametrize("dtype, temperature", [(torch.float32, 1.0), (torch.float32, 0.7), (torch.bfloat16, 0.7)])
def test_lean_logprobs_equal_the_reference(dtype, temperature):
    """lean_logprobs_from_logits (the HF policies') and logprobs_from_logits (log_softmax, then -(p log p)), both in
    fp32, against the float64 computation: values and the gradient of a loss mixing both outputs, on logits of a
    wide range; the lean one is as close to it as the reference (within fp32 rounding of the magnitudes)."""
    from rlscale.models.base import lean_logprobs_from_logits, logprobs_from_logits

    g = torch.Generator().manual_seed(0)
    base = (torch.randn(3, 5, 257, generator=g, dtype=torch.float64) * 6).to(dtype)
    targets = torch.randint(0, 257, (3, 5), generator=g)
    w_lp, w_ent = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)

    def exact(x):  # float64 throughout
        logp_all = torch.log_softmax(x / temperature, -1)
        return logp_all.gather(-1, targets[..., None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)

    out = {}
    for name, fn in (("lean", lean_logprobs_from_logits), ("ref", logprobs_from_logits), ("exact", None)):
        x = base.double().clone().requires_grad_(True) if fn is None else base.clone().requires_grad_(True)
        lp, ent = exact(x) if fn is None else fn(x, targets, temperature, with_entropy=True)
        ((lp.double() * w_lp).sum() + (ent.double() * w_ent).sum()).backward()
        out[name] = [lp.detach().double(), ent.detach().double(), x.grad.double()]
    for lean, ref, ex in zip(out["lean"], out["ref"], out["exact"]):
        tol = 4e-7 * float(ex.abs().max()) * 8  # a few fp32 ulps of the largest magnitude
        assert (lean - ex).abs().max() <= max(tol, 2 * (ref - ex).abs().max()), ((lean - ex).abs().max(), tol)
    lp, ent = lean_logprobs_from_logits(base, targets, temperature)
    assert ent is None and torch.equal(lp.double(), out["lean"][0])


@pytest.mark.parametrize("chunk", [1 << 24, 22])  # one chunk; rows of 2 (chunk boundaries inside a sequence)
def test_lean_logprobs_gradcheck(chunk, monkeypatch):
    import rlscale.models.base as base

    monkeypatch.setattr(base, "CHUNK_ELEMENTS", chunk)
    z = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 11, (2, 3))
    for temperature in (1.0, 0.6):
        assert torch.autograd.gradcheck(lambda x, T=temperature: base.lean_logprobs_from_logits(x, t, T, True), (z,))
        assert torch.autograd.gradcheck(lambda x, T=temperature: base.lean_logprobs_from_logits(x, t, T)[0], (z,))
