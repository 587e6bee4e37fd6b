"""Cross-check against TRL 1.16's GRPOTrainer loss: same weights (tiny HF Llama built in code), same completions,
advantages and reference log-probs -> our loss and gradients equal TRL's within 1e-5 for its `grpo`, `dr_grpo` and
`dapo` loss types, with and without the k3 KL term.

Mapping (documented in rlscale.rl.losses): TRL grpo = our `sequence-mean`, dr_grpo = `constant-length` (with
max_new_tokens = max_completion_length), dapo = `token-mean` over the batch. Semantic differences, tested below:
TRL's advantage std is Bessel (ours defaults to population; `std_estimator="bessel"` matches TRL), and TRL's
entropy bonus is always a token mean while ours follows the loss aggregation.
"""

import copy
import math

import pytest
import torch

torch.set_num_threads(1)
pytest.importorskip("trl")

LOSS_TYPES = {"grpo": "sequence-mean", "dr_grpo": "constant-length", "dapo": "token-mean"}
B, P, T, TEMP = 4, 5, 6, 0.7


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hf_fixtures import make_tiny_hf_model

    from rlscale.models.hf import HFPolicy

    path = make_tiny_hf_model(tmp_path_factory.mktemp("hf"))
    policy = HFPolicy.load(path)
    g = torch.Generator().manual_seed(0)
    V = policy.module.config.vocab_size
    prompt_ids = torch.randint(3, V, (B, P), generator=g)
    completion_ids = torch.randint(3, V, (B, T), generator=g)
    lens = torch.tensor([6, 3, 1, 5])
    completion_mask = (torch.arange(T)[None, :] < lens[:, None]).long()
    completion_ids = completion_ids * completion_mask  # pad id 0 after the end
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    ref = copy.deepcopy(policy.module)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    ids = torch.cat([prompt_ids, completion_ids], 1)
    am = torch.cat([torch.ones_like(prompt_ids), completion_mask], 1)
    ref_policy = copy.copy(policy)
    ref_policy.module = ref
    with torch.no_grad():
        ref_lp = ref_policy.token_logprobs(ids, am, temperature=TEMP)[0][:, P - 1:]
    return dict(policy=policy, path=path, prompt_ids=prompt_ids, completion_ids=completion_ids,
                completion_mask=completion_mask, rewards=rewards, ids=ids, am=am, ref_lp=ref_lp)


def trl_loss_and_grads(s, loss_type, beta, advantages, tmp_path, bias_correction=False):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model = copy.deepcopy(s["policy"].module)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=B, num_generations=B,
                      max_completion_length=T, beta=beta, loss_type=loss_type, temperature=TEMP, report_to="none",
                      use_cpu=True, bf16=False, logging_steps=1, use_bias_correction_kl=bias_correction)
    ds = Dataset.from_dict({"prompt": ["x"] * B})
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=ds, processing_class=s["policy"].tokenizer.hf if hasattr(
                              s["policy"].tokenizer, "hf") else None)
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model
    model.train()
    inputs = {"prompt_ids": s["prompt_ids"], "prompt_mask": torch.ones_like(s["prompt_ids"]),
              "completion_ids": s["completion_ids"], "completion_mask": s["completion_mask"],
              "advantages": advantages, "old_per_token_logps": None,
              "num_items_in_batch": s["completion_mask"].sum()}
    if beta:
        inputs["ref_per_token_logps"] = s["ref_lp"]
    model.zero_grad()
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def our_loss_and_grads(s, aggregation, beta, advantages, ratio_correction=False):
    from rlscale.rl.losses import aggregation_weights, grpo_loss

    pol = copy.copy(s["policy"])
    pol.module = copy.deepcopy(s["policy"].module)
    pol.module.train()
    pol.module.zero_grad()
    logp = pol.token_logprobs(s["ids"], s["am"], temperature=TEMP)[0][:, P - 1:]  # completion positions
    mask = s["completion_mask"].float()
    w = aggregation_weights(mask, torch.ones(B, dtype=torch.bool), aggregation, T)
    loss, _ = grpo_loss(logp, logp.detach(), advantages, w, w, ref_logp=s["ref_lp"] if beta else None,
                        kl_coef=beta, kl_ratio_correction=ratio_correction)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in pol.module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("beta,corr", [(0.0, False), (0.04, False), (0.04, True)])
@pytest.mark.parametrize("loss_type", list(LOSS_TYPES))
def test_loss_and_grads_match_trl(setup, tmp_path, loss_type, beta, corr):
    """corr: TRL's use_bias_correction_kl (its default) <-> our kl_ratio_correction."""
    from rlscale.rl.advantages import grpo_advantages

    adv = grpo_advantages(setup["rewards"][None, :], std_estimator="bessel", eps=1e-4)[0]
    theirs, g_trl = trl_loss_and_grads(setup, loss_type, beta, adv, tmp_path, bias_correction=corr)
    ours, g_ours = our_loss_and_grads(setup, LOSS_TYPES[loss_type], beta, adv, ratio_correction=corr)
    assert abs(theirs - ours) < 1e-5, (theirs, ours)
    assert set(g_trl) == set(g_ours)
    for name in g_trl:
        torch.testing.assert_close(g_ours[name], g_trl[name], atol=1e-5, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in g_ours.values())


def test_kl_ratio_correction_changes_gradient_only(setup):
    """The documented difference: with the KL term, our default (plain k3) and TRL's default (k3 * rho) have the same
    loss value but different gradients."""
    from rlscale.rl.advantages import grpo_advantages

    adv = grpo_advantages(setup["rewards"][None, :], std_estimator="bessel", eps=1e-4)[0]
    l0, g0 = our_loss_and_grads(setup, "token-mean", 0.5, adv, ratio_correction=False)
    l1, g1 = our_loss_and_grads(setup, "token-mean", 0.5, adv, ratio_correction=True)
    assert abs(l0 - l1) < 1e-7
    assert max((g0[n] - g1[n]).abs().max().item() for n in g0) > 1e-6


def test_default_std_differs_from_trl_by_bessel_factor():
    """Our default (population std) advantages are TRL's (Bessel) times sqrt(n/(n-1)) (up to eps)."""
    from trl.trainer.utils import nanstd

    from rlscale.rl.advantages import grpo_advantages

    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    trl_adv = (r - r.mean(1, keepdim=True)) / (nanstd(r, dim=1, keepdim=True) + 1e-4)
    ours = grpo_advantages(r, eps=1e-4)
    torch.testing.assert_close(ours, trl_adv * math.sqrt(4 / 3), atol=1e-3, rtol=1e-3)
