"""Where Hugging Face models run (rlscale.models.device): --device / RLSCALE_DEVICE resolution and its one-line errors,
HFPolicy.load placing the module on the resolved device, the CLI flag exported to sweep workers, and a training
run on an explicit device. This machine has no GPU: the CUDA paths are checked through torch.cuda stand-ins and the
placement through the meta device; the numbers of a run are checked on CPU."""

import json

import pytest
import torch
from hf_fixtures import make_tiny_hf_model

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.models import device as dev
from rlscale.models.hf import HFPolicy

torch.set_num_threads(1)


@pytest.fixture
def clean_env(monkeypatch):
    for name in (dev.ENV, dev.CHECKPOINTING_ENV):
        monkeypatch.setenv(name, "0")  # recorded, so whatever a test sets is undone
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_hf_model(tmp_path_factory.mktemp("tiny_hf") / "model")


def test_auto_is_cuda_when_torch_has_it_else_cpu(clean_env):
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.resolve_device(None) == torch.device("cpu") == dev.resolve_device("auto")
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setattr(torch.cuda, "device_count", lambda: 2)
    assert dev.resolve_device(None) == torch.device("cuda")
    assert dev.resolve_device(" CUDA:1 ") == torch.device("cuda", 1)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    clean_env.setenv(dev.ENV, "cpu")
    assert dev.resolve_device(None) == torch.device("cpu")  # the environment when no flag
    assert dev.resolve_device("cuda") == torch.device("cuda")  # the flag over the environment


@pytest.mark.parametrize("spec, cuda, words", [
    ("bogus", False, ["--device 'bogus'", "not a device", "auto, cpu, cuda"]),
    ("cuda", False, ["--device 'cuda'", "no CUDA device", "--device cpu"]),
    ("cuda:2", True, ["--device 'cuda:2'", "only 2 CUDA device(s)", "cuda:0 .. cuda:1"]),
    ("xpu", False, ["--device 'xpu'", "unsupported device type 'xpu'"]),
])
def test_bad_devices_are_one_line_errors(clean_env, spec, cuda, words):
    clean_env.setattr(torch.cuda, "is_available", lambda: cuda)
    clean_env.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError) as e:
        dev.resolve_device(spec)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    clean_env.setenv(dev.ENV, spec)  # the same from the environment names the variable
    with pytest.raises(UserError, match=f"^{dev.ENV} "):
        dev.resolve_device(None)


def test_hf_policy_is_loaded_onto_the_resolved_device(model_dir, clean_env):
    assert HFPolicy.load(model_dir, "cpu").device == torch.device("cpu")
    # a device other than CPU, without a GPU: the meta device (shapes only) stands in for it
    clean_env.setattr(dev, "resolve_device", lambda spec=None: torch.device("meta"))
    policy = HFPolicy.load(model_dir)
    assert policy.device == torch.device("meta")
    assert {p.device.type for p in policy.module.parameters()} == {"meta"}


def test_lab_models_stay_on_cpu(clean_env, tmp_path):
    from rlscale.models import load_policy
    from rlscale.models.tiny import TinyConfig, TinyPolicy
    from rlscale.models.tokenizer import CharTokenizer
    from rlscale.tasks.arith import ALPHABET

    clean_env.setenv(dev.ENV, "cuda")  # not read for lab checkpoints (their sampler is native CPU code)
    tok = CharTokenizer(ALPHABET)
    TinyPolicy.create(TinyConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, d_ff=32),
                      tok).save(str(tmp_path / "m"))
    policy = load_policy(tmp_path / "m")
    assert {p.device.type for p in policy.module.parameters()} == {"cpu"}


def test_cli_device_flag(model_dir, clean_env, capsys):
    from rlscale.sweep.run import worker_env

    base = ["eval", "--model", model_dir, "--task", "arith", "--limit", "2", "--n", "2", "--max-new-tokens", "4",
            "--no-progress"]
    assert main(base + ["--device", "nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rlscale eval: error: --device 'nonsense': not a device; use auto, cpu, cuda, cuda:N or mps"]
    assert dev.ENV not in worker_env()
    assert main(base + ["--device", "cpu"]) == 0
    assert worker_env()[dev.ENV] == "cpu"  # sweep workers (local or Ray tasks) load on the same device


def test_grpo_on_an_explicit_device_matches_the_default(model_dir, clean_env, tmp_path):
    """The device boundary (inputs to the model's device, log-probs back) changes no number: `train grpo --device
    cpu` equals the run without the flag, step for step."""
    from rlscale.store import RunStore

    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"a={i},b=a+1;b?", "answer": str(i + 1)}) + "\n"
                            for i in range(8)))

    def run(out, extra):
        assert main(["train", "grpo", "--model", model_dir, "--task", "arith", "--train-set", str(data),
                     "--val-set", str(data), "--rollouts-per-problem", "2", "--problems-per-batch", "2",
                     "--iterations", "2", "--max-new-tokens", "6", "--val-limit", "2", "--out", str(out),
                     "--quiet", *extra]) == 0
        return RunStore.open(out).steps()

    a, b = run(tmp_path / "a", []), run(tmp_path / "b", ["--device", "cpu"])
    keys = ("train/loss", "rollout/reward_mean", "train/grad_norm")
    assert len(a) == 2 and [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


def test_a_bf16_checkpoint_trains_in_fp32(tmp_path, clean_env):
    """Hub checkpoints are bf16, and transformers 5 loads them as saved: AdamW steps of lr 1e-6 on bf16 weights round
    away (a weight of 0.02 has a bf16 spacing of 1.2e-4). HFPolicy keeps fp32 master weights, as verl's mixed
    precision does; the trainers' dtype=bf16 autocasts the compute. Every weight with a gradient moves."""
    from transformers import AutoModelForCausalLM

    from rlscale.models.hf import HFPolicy

    path = make_tiny_hf_model(tmp_path / "bf16")
    AutoModelForCausalLM.from_pretrained(path).to(torch.bfloat16).save_pretrained(path)
    policy = HFPolicy.load(path, "cpu")
    assert {p.dtype for p in policy.module.parameters()} == {torch.float32}
    before = [p.detach().clone() for p in policy.module.parameters()]
    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"a={i};a?", "answer": str(i)}) + "\n"
                            for i in range(4)))
    assert main(["train", "grpo", "--model", path, "--task", "arith", "--train-set", str(data), "--val-set", str(data),
                 "--rollouts-per-problem", "2", "--problems-per-batch", "2", "--iterations", "1", "--lr", "1e-6",
                 "--entropy-coef", "0.1", "--zero-variance-filter", "off", "--max-new-tokens", "4",
                 "--val-limit", "1", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    after = list(HFPolicy.load(str(tmp_path / "run" / "model"), "cpu").module.parameters())
    moved = sum(int((a != b).sum()) for a, b in zip(after, before)) / sum(b.numel() for b in before)
    assert moved > 0.5, moved


def test_gradient_checkpointing_keeps_the_gradients(model_dir, clean_env):
    """--gradient-checkpointing (RLSCALE_GRADIENT_CHECKPOINTING=1): the training forward keeps no layer activations
    and the gradients of a log-prob loss are the ones without it; scoring forwards keep no KV cache either way."""
    seqs = torch.randint(3, 60, (3, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(seqs)

    def grads(policy):
        policy.module.train()
        logp, ent = policy.token_logprobs(seqs, mask, with_entropy=True)
        (logp.sum() + 0.1 * ent.sum()).backward()
        return [p.grad.clone() for p in policy.module.parameters()]

    plain = HFPolicy.load(model_dir, "cpu")
    clean_env.setenv(dev.CHECKPOINTING_ENV, "1")
    ckpt = HFPolicy.load(model_dir, "cpu")
    from rlscale.models.hf import is_checkpointing

    assert is_checkpointing(ckpt.module) and not is_checkpointing(plain.module)
    for a, b in zip(grads(plain), grads(ckpt)):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    clean_env.setenv(dev.CHECKPOINTING_ENV, "maybe")
    with pytest.raises(UserError, match="^RLSCALE_GRADIENT_CHECKPOINTING='maybe': use 1 or 0$"):
        HFPolicy.load(model_dir, "cpu")


def test_cli_gradient_checkpointing_flag_reaches_the_workers(model_dir, clean_env):
    from rlscale.sweep.run import worker_env

    assert dev.CHECKPOINTING_ENV not in worker_env()
    assert main(["eval", "--model", model_dir, "--task", "arith", "--limit", "1", "--n", "1", "--max-new-tokens", "2",
                 "--no-progress", "--gradient-checkpointing"]) == 0
    assert worker_env()[dev.CHECKPOINTING_ENV] == "1" and dev.gradient_checkpointing()
