"""Reference tests for rlscale.rl.lr."""

import math

import pytest

from rlscale.rl.lr import lr_at, scaled_lr, warmup_factor


def test_scalings_closed_form():
    assert scaled_lr(1e-4, 512, 128, "constant") == 1e-4
    assert scaled_lr(1e-4, 512, 128, "sqrt") == pytest.approx(2e-4)
    assert scaled_lr(1e-4, 512, 128, "linear") == pytest.approx(4e-4)
    assert scaled_lr(1e-4, 32, 128, "sqrt") == pytest.approx(1e-4 * math.sqrt(0.25))
    assert scaled_lr(3e-4, 128, 128, "linear") == pytest.approx(3e-4)  # anchored at B_ref
    with pytest.raises(ValueError):
        scaled_lr(1e-4, 1, 1, "cubic")


def test_warmup_linear():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    assert lr_at(0, 1e-4, 256, 128, "linear", 2) == pytest.approx(1e-4)
    assert lr_at(5, 1e-4, 256, 128, "linear", 2) == pytest.approx(2e-4)


def test_trainer_adamw_is_fused_on_cpu_and_matches_the_loop():
    import torch

    from rlscale.rl.lr import adamw

    outs = []
    for fused in (True, False):
        torch.manual_seed(0)
        w = [torch.randn(40, 24, requires_grad=True), torch.randn(24, requires_grad=True)]
        opt = adamw(w, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1) if fused else \
            torch.optim.AdamW(w, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
        assert opt.defaults["fused"] is (True if fused else None)
        for i in range(20):
            for x in w:
                x.grad = torch.sin(x.detach() * (i + 1))
            opt.step()
        outs.append([x.detach().clone() for x in w])
    for a, b in zip(*outs):
        assert float((a - b).abs().max()) < 1e-6
