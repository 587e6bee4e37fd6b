"""The fused trunk (rlscale.models.fused) against the torch reference: logits and every parameter's gradient, for
every lab size's head dimension, left-padded prompts, pad-only positions and completions of several lengths."""

import pytest
import torch

from rlscale.lab.presets import SIZES
from rlscale.models import fused
from rlscale.models.tiny import TinyConfig, TinyGPT

pytestmark = pytest.mark.skipif(fused.load() is None, reason="no C compiler: the fused path is not used")


def model(size: str, seed: int = 0) -> TinyGPT:
    sp = SIZES[size]
    torch.manual_seed(seed)
    m = TinyGPT(TinyConfig(vocab_size=49, d_model=sp.d_model, n_layers=sp.n_layers, n_heads=sp.n_heads,
                           d_ff=sp.d_ff))
    with torch.no_grad():  # off the init, so that norms and attention are not near-uniform
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def grads_of(m: TinyGPT, outputs) -> dict[str, torch.Tensor]:
    """Gradients of a fixed random linear function of `outputs` (so every output element matters)."""
    m.zero_grad()
    g = torch.Generator().manual_seed(7)
    sum((o * torch.randn(o.shape, generator=g)).sum() for o in outputs).backward()
    return {k: p.grad.clone() for k, p in m.named_parameters()}


def assert_close_grads(a: dict, b: dict) -> None:
    for k in a:
        scale = float(a[k].abs().max())
        assert scale > 0, k
        assert float((a[k] - b[k]).abs().max()) <= 1e-5 * scale, k


@pytest.mark.parametrize("size", ["xs", "s", "m"])  # head dims 24, 32, 28 (not a multiple of 8)
def test_grouped_forward_and_backward_match_torch(size):
    m = model(size)
    G, P, n, C = 3, 11, 3, 9
    torch.manual_seed(1)
    pid = torch.randint(0, 49, (G, P))
    pm = torch.ones(G, P, dtype=torch.long)
    pm[0, :4] = 0  # left padding
    pm[2, :1] = 0
    cid = torch.randint(0, 49, (G * n, C))
    group = torch.tensor([2, 0, 1, 1, 0, 2, 0, 1, 2])  # rows not in group order
    ref = m.forward_grouped_torch(pid, pm, cid, group)
    g_ref = grads_of(m, ref)
    out = fused.forward_grouped(m, pid, pm, cid, group)
    g_out = grads_of(m, out)
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        assert float((a - b).detach().abs().max()) < 1e-5
    assert_close_grads(g_ref, g_out)


def test_full_sequence_forward_matches_torch_for_any_padding():
    m = model("s", seed=3)
    ids = torch.randint(0, 49, (4, 13))
    am = torch.ones(4, 13, dtype=torch.long)
    am[1, :5] = 0  # left
    am[2, 9:] = 0  # right
    am[3, 3:6] = 0  # inside: explicit mask path
    for mask in (None, am):
        ref = m.forward_torch(ids, mask)
        g_ref = grads_of(m, [ref * (am[..., None] if mask is not None else 1)])
        out = fused.forward(m, ids, mask)
        g_out = grads_of(m, [out * (am[..., None] if mask is not None else 1)])
        real = am.bool() if mask is not None else torch.ones(4, 13, dtype=torch.bool)
        assert float((ref - out).detach()[real].abs().max()) < 1e-5
        assert_close_grads(g_ref, g_out)


def test_the_model_dispatches_to_the_fused_path_in_fp32_and_under_bf16_autocast_only(monkeypatch):
    m = model("xs")
    calls = []
    real = fused.forward_grouped
    monkeypatch.setattr(fused, "forward_grouped", lambda *a: calls.append(1) or real(*a))
    pid, pm = torch.randint(0, 49, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    cid, group = torch.randint(0, 49, (4, 3)), torch.tensor([0, 0, 1, 1])
    m.forward_grouped(pid, pm, cid, group)
    assert calls == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m.forward_grouped(pid, pm, cid, group)
    assert calls == [1, 1]
    with torch.autocast("cpu", dtype=torch.float16):
        m.forward_grouped(pid, pm, cid, group)
    assert calls == [1, 1]


def rel_err(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a)


def grouped_case(seed: int = 1):
    torch.manual_seed(seed)
    G, P, n, C = 3, 11, 3, 9
    pid, pm = torch.randint(0, 49, (G, P)), torch.ones(G, P, dtype=torch.long)
    pm[0, :4] = 0
    return pid, pm, torch.randint(0, 49, (G * n, C)), torch.tensor([2, 0, 1, 1, 0, 2, 0, 1, 2])


def test_padded_rows_change_nothing():
    """bf16 runs the trunk on N rounded up to ROW_BUCKET rows: the extra rows must not reach any output or
    gradient. Checked in fp32, where the real rows' values must not move at all."""
    m = model("s", seed=2)
    case = grouped_case()
    geo = fused.geometry(m.cfg, *case)
    pg = fused.padded(geo)
    assert pg.rows % fused.ROW_BUCKET == 0 and pg.rows > geo.N
    outs, gs = [], []
    for g in (geo, pg):
        hn = fused.trunk(m, g)
        assert hn.shape[0] == g.rows
        outs.append(fused._grouped_logits(m, g, hn))
        gs.append(grads_of(m, outs[-1]))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    assert_close_grads(gs[0], gs[1])


@pytest.mark.parametrize("size", ["s", "m"])
def test_bf16_autocast_trunk_is_as_close_to_fp32_as_the_torch_autocast_path(size):
    """Under bf16 autocast the fused trunk's matmuls take bf16 inputs: its logits and gradients are as far from
    the fp32 ones as the torch reference's under the same autocast (bf16 rounding, ~0.5%), and not further."""
    m = model(size, seed=4)
    case = grouped_case()
    ref = fused.forward_grouped(m, *case)
    g32 = grads_of(m, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused.forward_grouped(m, *case)
        tref = m.forward_grouped_torch(*case)
    g_bf, g_torch = grads_of(m, out), grads_of(m, tref)
    e_bf, e_torch = rel_err(g32, g_bf), rel_err(g32, g_torch)
    assert 1e-4 < e_bf < 3e-2, e_bf  # bf16 rounding is there (so bf16 ran), and small
    assert e_bf < 2 * e_torch, (e_bf, e_torch)
    for a, b in zip(ref, out):
        assert float((a - b.float()).detach().abs().max()) < 0.05 * float(a.detach().abs().max())


def test_bf16_replay_gives_the_bf16_recomputed_gradients():
    pol, acts, keys, batch, cmask, _ = sampled_batch("m")

    def run(replay, bf16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logp, ent = pol.completion_logprobs(*batch, with_entropy=True, replay=replay)
        return grads_of(pol.module, [logp.float() * cmask, ent.float() * cmask])

    g32 = run(None, False)
    e_recompute, e_replay = rel_err(g32, run(None, True)), rel_err(g32, run((acts, keys), True))
    assert 1e-4 < e_replay < 3e-2 and e_replay < 2 * e_recompute, (e_replay, e_recompute)


def test_concurrent_threads_give_the_single_thread_gradients():
    """The trainer runs micro-batches on worker threads: the C calls must not share scratch state."""
    from concurrent.futures import ThreadPoolExecutor

    m = model("s", seed=5)
    batches = []
    for k in range(4):
        torch.manual_seed(10 + k)
        batches.append((torch.randint(0, 49, (2, 7)), torch.ones(2, 7, dtype=torch.long),
                        torch.randint(0, 49, (6, 8)), torch.tensor([0, 0, 0, 1, 1, 1])))
    params = list(m.parameters())

    def grads(b):
        last, comp = fused.forward_grouped(m, *b)
        return torch.autograd.grad(comp.square().mean() + last.square().mean(), params)

    alone = [grads(b) for b in batches]
    with ThreadPoolExecutor(2) as ex:
        together = list(ex.map(grads, batches * 2))
    for a, b in zip(alone * 2, together):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_pretraining_keeps_the_torch_path(monkeypatch):
    """The documented lab model is pretrained through forward_torch (see rlscale.lab.pretrain.loss_of)."""
    from rlscale.lab.pretrain import loss_of

    def refuse(*a, **k):
        raise AssertionError("pretraining ran the fused trunk")

    monkeypatch.setattr(fused, "forward", refuse)
    m = model("xs")
    ids = torch.randint(1, 49, (2, 9))
    loss_of(m, ids, ids[:, 1:]).backward()
    assert m.model.embed_tokens.weight.grad is not None


def sampled_batch(size: str, keep: bool = True, **sampler_kw):
    """A lab policy of `size` (perturbed weights), 5 prompts of different lengths x 3 samples drawn with saved
    activations in chunks of 4 rows (so groups straddle chunks), and the update inputs of 11 of the rollouts."""
    from rlscale.engine.base import SamplingParams
    from rlscale.lab.pretrain import build_policy
    from rlscale.rl.grpo import group_inputs, pack_completions

    pol = build_policy(size, seed=1)
    with torch.no_grad():
        for p in pol.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prompts = ["1+2=", "a=3,b=a*4;b?", "12*3-5=", "x=7;y=x+x;z=y*2;z?", "9-"]
    smp = pol.sampler(keep_activations=keep, max_batch=4, **sampler_kw)
    pol.module.eval()
    groups = smp.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=24), None)
    used = [r for g in groups for r in g][2:13]
    pad = int(pol.tokenizer.pad_id)
    comp, cmask, _ = pack_completions([r.token_ids for r in used], [r.logprobs for r in used], pad)
    batch = group_inputs([r.prompt_ids for r in used], [r.prompt_index for r in used], comp, pad)
    keys = [(r.prompt_index, r.sample_index) for r in used]
    pol.module.train()
    return pol, smp.activations, keys, batch, cmask, used


@pytest.mark.parametrize("size", ["xs", "s", "m"])
def test_replayed_forward_gives_the_recomputed_logprobs_and_gradients(size):
    pol, acts, keys, batch, cmask, used = sampled_batch(size)
    assert acts is not None and {len(r.token_ids) for r in used} != {24}  # some rows ended early (EOS)

    def run(replay):
        logp, ent = pol.completion_logprobs(*batch, with_entropy=True, replay=replay)
        m = cmask  # the loss only ever weights generated tokens
        out = grads_of(pol.module, [logp * m, ent * m])
        return (logp * m).detach(), out

    lp_ref, g_ref = run(None)
    lp, g = run((acts, keys))
    assert float((lp - lp_ref).abs().max()) < 1e-5
    assert_close_grads(g_ref, g)


@pytest.mark.parametrize("size", ["xs", "s"])
def test_the_replay_on_live_rows_gives_the_gradients_of_every_packed_row(size, monkeypatch):
    """The replay leaves out the rows no forward fed (prompt padding, a completion's last token and its padding);
    the loss reads none of them, so the gradients are those of the replay over every packed row."""
    pol, acts, keys, batch, cmask, used = sampled_batch(size)
    prompt_ids, prompt_mask, comp, group = batch
    idx = fused.replay_rows(acts, keys, prompt_mask, group, comp.shape[1])
    keep = fused.live_rows(idx, acts.zero_row)
    fed = int(prompt_mask.sum()) + sum(len(r.token_ids) - 1 for r in used)  # the last token is never fed
    assert keep is not None and keep.numel() == fed < 0.8 * idx.numel()

    def run(compact: str):
        monkeypatch.setenv("RLSCALE_COMPACT", compact)
        assert (fused.live_rows(idx, acts.zero_row) is None) == (compact == "0")
        logp, ent = pol.completion_logprobs(*batch, with_entropy=True, replay=(acts, keys))
        return (logp * cmask).detach(), grads_of(pol.module, [logp * cmask, ent * cmask])

    lp_all, g_all = run("0")
    lp, g = run("1")
    assert float((lp - lp_all).abs().max()) < 1e-6
    assert_close_grads(g_all, g)
    # the attention kernels' skipping of each completion's dead tail changes no bit
    monkeypatch.setattr(fused, "live_prefix", lambda *a: None)
    lp_blocks, g_blocks = run("1")
    assert torch.equal(lp, lp_blocks) and all(torch.equal(g[k], g_blocks[k]) for k in g)


def test_activations_are_kept_only_on_the_c_path_within_the_budget():
    assert sampled_batch("xs")[1].nbytes > 0
    assert sampled_batch("xs", keep=False)[1] is None
    assert sampled_batch("xs", activation_budget=1000)[1] is None  # too large: the update recomputes
    assert sampled_batch("xs", native=False)[1] is None  # the torch loop saves nothing


def test_nested_thread_map_from_a_pool_thread_does_not_wait_on_itself():
    from concurrent.futures import ThreadPoolExecutor

    from rlscale.engine.base import thread_map

    def outer(i):
        return sum(thread_map(lambda j: i * 10 + j, range(3), 2))

    with ThreadPoolExecutor(1) as ex:  # a watchdog: a deadlock would hang here, the timeout fails the test
        assert ex.submit(thread_map, outer, range(4), 2).result(timeout=30) == [3, 33, 63, 93]
