"""Reference tests for rlscale.rl.losses: a brute-force per-token loop, closed forms, micro-batch invariance."""

import math

import pytest
import torch

from rlscale.rl.losses import aggregation_weights, clipped_pg, filter_masks, grpo_loss, k3_kl, tis_weight


def make_batch(seed=0, N=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(N, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.4 * (torch.rand(N, T, generator=g, dtype=torch.float64) - 0.5)
    ref = logp + 0.3 * (torch.rand(N, T, generator=g, dtype=torch.float64) - 0.5)
    samp = old + 0.5 * (torch.rand(N, T, generator=g, dtype=torch.float64) - 0.5)
    ent = torch.rand(N, T, generator=g, dtype=torch.float64)
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    lens = torch.randint(1, T + 1, (N,), generator=g)
    mask = (torch.arange(T)[None, :] < lens[:, None]).double()
    return logp, old, ref, samp, ent, adv, mask


def brute(logp, old, ref, samp, ent, adv, mask, keep_pg, keep_reg, agg, max_new, eps_lo, eps_hi, cap, kl_c, ent_c):
    N, T = logp.shape

    def norm(keep):
        seqs = [i for i in range(N) if keep[i]]
        if agg == "token-mean":
            tot = sum(mask[i].sum().item() for i in seqs)
            return {i: 1 / tot for i in seqs}
        if agg == "sequence-mean":
            return {i: 1 / (mask[i].sum().item() * len(seqs)) for i in seqs}
        return {i: 1 / (max_new * len(seqs)) for i in seqs}

    wp, wr = norm(keep_pg), norm(keep_reg)
    total = 0.0
    for i in range(N):
        for t in range(T):
            if not mask[i, t]:
                continue
            r = math.exp(logp[i, t] - old[i, t])
            a = adv[i].item()
            pg = -min(r * a, min(max(r, 1 - eps_lo), 1 + eps_hi) * a)
            if cap is not None:
                pg *= min(math.exp(old[i, t] - samp[i, t]), cap)
            d = (ref[i, t] - logp[i, t]).item()
            if i in wp:
                total += wp[i] * pg
            if i in wr:
                total += wr[i] * (kl_c * (math.exp(d) - d - 1) - ent_c * ent[i, t].item())
    return total


@pytest.mark.parametrize("agg", ["token-mean", "sequence-mean", "constant-length"])
@pytest.mark.parametrize("filt", ["off", "drop", "kl-entropy"])
@pytest.mark.parametrize("cap", [None, 1.5])
def test_loss_matches_brute_force(agg, filt, cap):
    logp, old, ref, samp, ent, adv, mask = make_batch()
    zv = torch.tensor([True, False, False, True, False, False])
    keep_pg, keep_reg = filter_masks(zv, filt)
    w_pg = aggregation_weights(mask, keep_pg, agg, 7).double()
    w_reg = aggregation_weights(mask, keep_reg, agg, 7).double()
    loss, _ = grpo_loss(logp, old, adv, w_pg, w_reg, eps_low=0.1, eps_high=0.15, ref_logp=ref, kl_coef=0.05,
                        entropy=ent, entropy_coef=0.01, sampler_logp=samp, tis_cap=cap)
    want = brute(logp, old, ref, samp, ent, adv, mask, keep_pg.tolist(), keep_reg.tolist(), agg, 7, 0.1, 0.15, cap,
                 0.05, 0.01)
    assert abs(loss.item() - want) < 1e-6


def test_weights_closed_forms():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float64)
    keep = torch.tensor([True, True])
    assert aggregation_weights(mask, keep, "token-mean", 4).sum().item() == pytest.approx(1.0)
    w = aggregation_weights(mask, keep, "sequence-mean", 4)
    assert w[0, 0].item() == pytest.approx(1 / 6) and w[1, 0].item() == pytest.approx(1 / 2)
    w = aggregation_weights(mask, keep, "constant-length", 4)
    assert w.sum().item() == pytest.approx(4 / 8)
    with pytest.raises(ValueError):
        aggregation_weights(mask, keep, "bogus", 4)
    with pytest.raises(ValueError):
        filter_masks(keep, "bogus")


def test_clipping_branches_and_k3():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))
    old = torch.zeros(1, 4)
    for a, want in [(1.0, [-1.2, -0.5, -1.2, -0.5]), (-1.0, [1.5, 0.8, 1.5, 0.8])]:
        pg, lo, hi = clipped_pg(logp, old, torch.tensor([a]), 0.2, 0.2)
        torch.testing.assert_close(pg, torch.tensor([want]))
        assert hi.any() == (a > 0) and lo.any() == (a < 0)
    # clip-higher: upper bound 1.28 lets ratio 1.25 through for A > 0
    pg, _, hi = clipped_pg(torch.log(torch.tensor([[1.25]])), torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.28)
    assert pg.item() == pytest.approx(-1.25) and not hi.any()
    # k3 >= 0, = 0 at equality, ~ 0.5 d^2 for small d
    d = torch.tensor([1e-3], dtype=torch.float64)
    assert k3_kl(torch.zeros(1), torch.zeros(1)).item() == 0
    assert k3_kl(torch.zeros(1, dtype=torch.float64), d).item() == pytest.approx(0.5e-6, rel=1e-2)
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()
    torch.testing.assert_close(tis_weight(torch.tensor([0.0, 0.0]), torch.tensor([-2.0, 1.0]), 2.0),
                               torch.tensor([2.0, math.exp(-1.0)]))


def test_ratio_one_gradient_is_reinforce():
    # at logp == old (first update) the PG gradient is -sum w A grad logp
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    w = torch.tensor([[0.5, 0.5]])
    loss, _ = grpo_loss(logp, logp.detach(), torch.tensor([2.0]), w, w)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.0, -1.0]]))


@pytest.mark.parametrize("agg", ["token-mean", "sequence-mean", "constant-length"])
def test_micro_batch_invariance(agg):
    """Same gradient for 1, 2 and 4 micro-batches: weights are global, micro-batch losses sum to the batch loss."""
    torch.manual_seed(0)
    N, T, V, D = 8, 9, 11, 5
    emb = torch.nn.Embedding(V, D)
    head = torch.nn.Linear(D, V)
    ids = torch.randint(0, V, (N, T + 1))
    lens = torch.randint(1, T + 1, (N,))
    mask = (torch.arange(T)[None, :] < lens[:, None]).float()
    adv = torch.randn(N)
    keep = torch.tensor([True, False, True, True, True, True, False, True])
    w = aggregation_weights(mask, keep, agg, T)

    def logps(rows):
        lp = torch.log_softmax(head(emb(ids[rows, :-1])), -1)
        return lp.gather(-1, ids[rows, 1:, None]).squeeze(-1)

    grads = []
    for k in (1, 2, 4):
        emb.zero_grad()
        head.zero_grad()
        for rows in torch.arange(N).chunk(k):
            lp = logps(rows)
            loss, _ = grpo_loss(lp, lp.detach(), adv[rows], w[rows], w[rows], ref_logp=lp.detach() + 0.1,
                                kl_coef=0.1)
            loss.backward()
        grads.append(torch.cat([emb.weight.grad.flatten(), head.weight.grad.flatten()]).clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[2], rtol=0, atol=1e-6)
    assert grads[0].abs().sum() > 0
