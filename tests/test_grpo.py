"""GRPO loop: learning at small scale (lab model and tiny HF model), exact resume after kill -9, bad input,
finished runs not re-run, config plumbing. Policies are built in code (random init, fixed seed)."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.rl.grpo import GRPOConfig, field_docs, grade, pack_completions, problem_indices, train
from rlscale.store import RunStore

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def tiny_policy(seed=0, d=32):
    from rlscale.models.tiny import TinyConfig, TinyPolicy
    from rlscale.models.tokenizer import CharTokenizer
    from rlscale.tasks.arith import ALPHABET

    tok = CharTokenizer(ALPHABET)
    return TinyPolicy.create(TinyConfig(vocab_size=tok.vocab_size, d_model=d, n_layers=1, n_heads=2, d_ff=2 * d),
                             tok, seed=seed)


def seven_set(path: Path, n=64) -> str:
    """A learnable toy set: every answer is 7 (the policy only has to learn to end with a 7)."""
    rows = [{"id": f"q{i}", "question": f"a={i % 10},b=a+{i % 5};b?", "answer": "7"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def small_cfg(tmp_path, **kw):
    base = dict(model="in-memory", task="arith", train_set=seven_set(tmp_path / "train.jsonl"),
                val_set=seven_set(tmp_path / "val.jsonl", 16), rollouts_per_problem=4, problems_per_batch=4,
                iterations=4, max_new_tokens=6, val_every=2, val_n=2, val_limit=8, checkpoint_every=2,
                micro_batch_size=8, reward="flexible")
    base.update(kw)
    return GRPOConfig(**base)


def params_vec(policy):
    return torch.cat([p.detach().flatten() for p in policy.module.parameters()]).clone()


def test_learning_lab_model(tmp_path):
    """Reward rises and parameters move on the toy set (LR high enough to see it in a few steps)."""
    pol = tiny_policy()
    before = params_vec(pol)
    cfg = small_cfg(tmp_path, iterations=30, rollouts_per_problem=8, problems_per_batch=8, lr=1e-2,
                    val_every=0, checkpoint_every=100)
    s = train(cfg, tmp_path / "run", progress=False, policy=pol)
    rows = RunStore.open(tmp_path / "run").steps()
    r = [x["rollout/reward_mean"] for x in rows]
    assert s["steps"] == 30 and len(rows) == 30
    assert sum(r[-5:]) / 5 > sum(r[:5]) / 5 + 0.15, r
    assert (params_vec(pol) - before).abs().max() > 1e-3
    assert s["val_after"] > s["val_before"]
    # compute is cumulative and counts every rollout
    assert rows[-1]["compute/rollouts"] == 30 * 64
    assert rows[-1]["compute/flops"] == pytest.approx(rows[-1]["compute/flops_gen"] + rows[-1]["compute/flops_train"])


def test_learning_tiny_hf_model(tmp_path):
    from hf_fixtures import make_tiny_hf_model

    from rlscale.models.hf import HFPolicy

    pol = HFPolicy.load(make_tiny_hf_model(tmp_path / "hf"))
    with torch.no_grad():  # back to the default init scale: a 7 gets sampled now and then
        pol.module.lm_head.weight.div_(20.0)
    before = params_vec(pol)
    cfg = small_cfg(tmp_path, model=str(tmp_path / "hf"), iterations=15, rollouts_per_problem=8,
                    problems_per_batch=8, lr=1e-2, val_every=0, checkpoint_every=100, max_new_tokens=6)
    s = train(cfg, tmp_path / "run", progress=False, policy=pol)
    rows = RunStore.open(tmp_path / "run").steps()
    r = [x["rollout/reward_mean"] for x in rows]
    assert s["steps"] == 15
    assert sum(r[-4:]) / 4 > sum(r[:4]) / 4 + 0.05, r
    assert (params_vec(pol) - before).abs().max() > 1e-4
    from rlscale.models import load_policy
    assert load_policy(str(tmp_path / "run" / "model")).num_params() == pol.num_params()


def test_resume_in_process_is_exact(tmp_path, monkeypatch):
    """Interrupt after step 3 (checkpoint at 2): the resumed run rolls back step 3 and ends identical."""
    cfg = small_cfg(tmp_path, kl_coef=0.05, entropy_coef=0.01, lr=3e-3)
    ref = train(cfg, tmp_path / "ref", progress=False, policy=tiny_policy())
    import rlscale.store.run_store as rs

    orig = rs.RunStore.log_step

    def boom(self, step, metrics, passes=(), replay=()):
        orig(self, step, metrics, passes, replay)
        if step == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(rs.RunStore, "log_step", boom)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    monkeypatch.setattr(rs.RunStore, "log_step", orig)
    with pytest.raises(UserError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    got = train(cfg, tmp_path / "run", resume=True, progress=False, policy=tiny_policy())
    a, b = RunStore.open(tmp_path / "ref"), RunStore.open(tmp_path / "run")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(a.steps()) == strip(b.steps())
    assert [e["step"] for e in a.evals()] == [e["step"] for e in b.evals()] == [0, 2, 4]
    assert a.problem_passes() == b.problem_passes()
    assert got["steps"] == ref["steps"] == 4 and got["val_after"] == ref["val_after"]
    # finished: never re-run, same summary back
    again = train(cfg, tmp_path / "run", resume=True, progress=False, policy=tiny_policy())
    assert again == got


CRASH_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_grpo import tiny_policy
    from rlscale.rl.grpo import GRPOConfig, train
    cfg = GRPOConfig.from_dict(json.loads(open(sys.argv[1]).read()))
    print(json.dumps(train(cfg, sys.argv[2], resume=True, progress=False, policy=tiny_policy())))
""")


def _crash_run(tmp_path, kills, seed):
    cfg = small_cfg(tmp_path, iterations=12, checkpoint_every=2, val_every=3, kl_coef=0.02)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    script = tmp_path / "crash_worker.py"
    script.write_text(CRASH_SCRIPT.format(tests=str(Path(__file__).parent)))
    cmd = [sys.executable, str(script), str(tmp_path / "cfg.json")]
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True)
    rng = random.Random(seed)
    run = tmp_path / "run"
    killed = 0
    for _ in range(kills * 4):
        if killed >= kills:
            break
        p = subprocess.Popen(cmd + [str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60.0  # wait for the run to be under way (start-up varies with load) ...
        while p.poll() is None and not (run / "run.db").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))  # ... then kill at a random moment of it
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            killed += 1
        else:
            p.communicate()
            break
    assert killed >= 1
    subprocess.run(cmd + [str(run)], check=True, capture_output=True)
    a, b = RunStore.open(tmp_path / "ref"), RunStore.open(run)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert [r["step"] for r in b.steps()] == list(range(1, 13))
    assert strip(a.steps()) == strip(b.steps())
    assert [e["step"] for e in a.evals()] == [e["step"] for e in b.evals()]
    assert a.problem_passes() == b.problem_passes()
    for _, path in b.checkpoints():
        assert torch.load(path / "state.pt", weights_only=False)["step"] >= 10


def test_crash_kill9_resume(tmp_path):
    _crash_run(tmp_path, kills=1, seed=0)


@pytest.mark.slow
def test_crash_kill9_resume_10_times(tmp_path):
    _crash_run(tmp_path, kills=10, seed=1)


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flags,msg", [
    (["--rollouts-per-problem", "1", "--iterations", "2"], "rollouts_per_problem must be >= 2"),
    (["--rollouts-per-problem", "8", "--batch-rollouts", "60", "--iterations", "2"], "whole groups"),
    (["--rollouts-per-problem", "8", "--problems-per-batch", "4", "--budget-rollouts", "16"], "smaller than one step"),
    (["--iterations", "2", "--preset", "healthy-medium"], "healthy-easy"),
    (["--iterations", "2", "--loss-aggregation", "sum"], "token-mean"),
])
def test_bad_input_exit_2(tmp_path, capsys, flags, msg):
    out = tmp_path / "run"
    rc = main(["train", "grpo", "--model", str(tmp_path), "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("text,msg", [
    ('model: m\niterations: 2\nlr: "1e-4"\n', "GRPO config: lr must be a number or null, got '1e-4'"),
    ("model: m\niterations: two\n", "GRPO config: iterations must be an integer or null, got 'two'"),
    ("model: m\niterations: 2\nmask_truncated: 1\n", "mask_truncated must be a boolean (true/false), got 1"),
])
def test_a_config_file_of_wrong_types_is_one_line(tmp_path, capsys, text, msg):
    """A value of the wrong type in a config file names the field, not a TypeError from deep in the trainer."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    rc = main(["train", "grpo", "--config", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err


def test_field_types_against_annotations():
    import numpy as np

    from rlscale.config import _conforms

    assert _conforms(3, int) and _conforms(np.int64(3), int) and not _conforms(True, int) and not _conforms(3.0, int)
    assert _conforms(3, float) and _conforms(np.float32(0.5), float) and not _conforms("0.5", float)
    assert _conforms(None, int | None) and not _conforms(None, int) and _conforms("a", str | None)
    assert _conforms((1, 2), tuple[int, ...]) and _conforms((), tuple[int, ...]) and not _conforms([1, 2], tuple[int, ...])
    assert not _conforms((1, "2"), tuple[int, ...]) and _conforms((0.1, 1), tuple[float, float])
    assert not _conforms((0.1,), tuple[float, float]) and _conforms(None, tuple[float, ...] | None)
    assert _conforms({}, dict) and not _conforms([], dict) and not _conforms(1, bool) and _conforms(False, bool)


def test_changed_config_on_resume_refused(tmp_path, capsys):
    cfg = small_cfg(tmp_path, iterations=2)
    train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    before = _tree(tmp_path / "run")
    with pytest.raises(UserError, match="config differs"):
        train(small_cfg(tmp_path, iterations=3), tmp_path / "run", resume=True, progress=False,
              policy=tiny_policy())
    assert _tree(tmp_path / "run") == before
    # through the CLI: exit 2, one line, nothing overwritten
    d = small_cfg(tmp_path, iterations=2, model=str(tmp_path / "lab")).to_dict()
    tiny_policy().save(str(tmp_path / "lab"))
    toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items() if v is not None)
    (tmp_path / "c.toml").write_text(toml)
    rc = main(["train", "grpo", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "cli"), "--json",
               "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0 and json.loads(out)["steps"] == 2
    assert {"val_before", "val_after", "rollouts", "steps", "wall_s"} <= set(json.loads(out))
    from rlscale.engine.native import loaded_compiler
    from rlscale.numerics import current_cpu_numerics

    rec = json.loads((tmp_path / "cli" / "summary.json").read_text())["numerics"]  # what decides the run's bits (rlscale.numerics.numerics_record)
    assert (rec["cpu_numerics"], rec["torch"]) == (current_cpu_numerics(), torch.__version__)
    assert rec["c_compiler"] == loaded_compiler()  # the lab model's C sampler ran when a compiler is there
    snap = _tree(tmp_path / "cli")
    rc = main(["train", "grpo", "--config", str(tmp_path / "c.toml"), "--lr", "0.5", "--out", str(tmp_path / "cli"),
               "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "config differs" in err and "lr" in err and len(err.strip().splitlines()) == 1
    assert _tree(tmp_path / "cli") == snap
    # finished: the same command returns the stored summary, nothing re-run
    rc = main(["train", "grpo", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "cli"), "--json",
               "--quiet"])
    assert rc == 0 and _tree(tmp_path / "cli") == snap
    # a lab model with --threads 2: two workers, the same summary as one (weights equal up to rounding)
    rc = main(["train", "grpo", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "cli2"), "--json",
               "--quiet", "--threads", "2"])
    two = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and two["steps"] == 2 and two["val_before"] == json.loads(out)["val_before"]
    assert torch.get_num_threads() == 1  # the workers' torch ops run on one thread each


def test_config_plumbing():
    docs = field_docs(GRPOConfig)
    assert all(docs.get(f) for f in GRPOConfig.__dataclass_fields__)
    c = GRPOConfig(model="m", rollouts_per_problem=4, problems_per_batch=8, budget_rollouts=100)
    assert c.num_steps == 3 and c.rollouts_per_step == 32
    assert GRPOConfig.from_dict(c.to_dict()) == c
    assert GRPOConfig(model="m", batch_rollouts=64, rollouts_per_problem=8, iterations=1).B_problem == 8
    assert GRPOConfig(model="m", preset="healthy-easy", iterations=1).kl > 0
    assert GRPOConfig(model="m", preset="healthy-easy", kl_coef=0.0, iterations=1).kl == 0
    assert GRPOConfig(model="m", preset="healthy-hard", iterations=1).entropy == 0
    with pytest.raises(UserError, match="unknown GRPO config field"):
        GRPOConfig.from_dict({"bogus": 1})
    # decoupled baseline generates n_est per problem: the budget counts them
    c2 = GRPOConfig(model="m", rollouts_per_problem=4, baseline_rollouts=8, problems_per_batch=2, budget_rollouts=64)
    assert c2.num_steps == 4


def test_default_lr_is_the_models_suggestion(tmp_path):
    """lr unset: a lab model gets RL_LR of its size (from the policy's meta or the checkpoint), anything else
    (a Hugging Face directory) HF_RL_LR; an explicit lr is kept; the run records the resolved value."""
    from rlscale.lab.presets import RL_LR
    from rlscale.rl.grpo import HF_RL_LR, suggested_rl_lr, with_model_defaults

    pol = tiny_policy()
    pol.meta["size"] = "m"
    assert suggested_rl_lr("ignored", pol) == RL_LR["m"]
    pol.save(str(tmp_path / "lab"))
    assert suggested_rl_lr(str(tmp_path / "lab")) == RL_LR["m"]
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert suggested_rl_lr(str(tmp_path / "hf")) == HF_RL_LR == 1e-6
    assert with_model_defaults(GRPOConfig(model=str(tmp_path / "hf"), iterations=1)).lr == 1e-6
    assert with_model_defaults(GRPOConfig(model=str(tmp_path / "hf"), iterations=1, lr=3e-5)).lr == 3e-5
    pol.meta["size"] = "xs"
    train(small_cfg(tmp_path, iterations=1, val_every=0), tmp_path / "run", progress=False, policy=pol)
    assert RunStore.open(tmp_path / "run").config["lr"] == RL_LR["xs"]


def test_default_micro_batch_is_the_models_suggestion(tmp_path):
    """micro_batch_size unset: 64 rollouts per update chunk for a lab model (the value every lab run before stop 31
    had: their stored configs and hashes stay the same), 8 for a Hugging Face model (TRL's per-device batch);
    an explicit value is kept and recorded."""
    from rlscale.rl.grpo import suggested_micro_batch, with_model_defaults

    pol = tiny_policy()
    assert suggested_micro_batch("ignored", pol) == 64
    pol.save(str(tmp_path / "lab"))
    assert with_model_defaults(GRPOConfig(model=str(tmp_path / "lab"), iterations=1)).micro_batch_size == 64
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert with_model_defaults(GRPOConfig(model=str(tmp_path / "hf"), iterations=1)).micro_batch_size == 8
    assert with_model_defaults(GRPOConfig(model=str(tmp_path / "hf"), iterations=1,
                                          micro_batch_size=2)).micro_batch_size == 2
    with pytest.raises(UserError, match="micro_batch_size"):
        GRPOConfig(model="m", iterations=1, micro_batch_size=0).validate()
    train(small_cfg(tmp_path, iterations=1, val_every=0, micro_batch_size=None), tmp_path / "run", progress=False,
          policy=pol)
    assert RunStore.open(tmp_path / "run").config["micro_batch_size"] == 64


def test_problem_order_epochs():
    seen = [i for s in range(5) for i in problem_indices(s, 4, 10, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != list(range(10))
    assert problem_indices(2, 4, 10, 3) == seen[8:12]  # the cursor is the step: resumable


@pytest.mark.slow
def test_learning_briefly_pretrained_lab_model(tmp_path):
    """The lab path end to end: pretrain an xs model briefly, then GRPO raises the reward and moves parameters."""
    from rlscale.lab.pretrain import PretrainConfig, pretrain

    pol = pretrain(PretrainConfig(size="xs", tokens=200_000), str(tmp_path / "lab"), progress=False)
    before = params_vec(pol)
    cfg = small_cfg(tmp_path, model=str(tmp_path / "lab"), iterations=25, rollouts_per_problem=8,
                    problems_per_batch=8, lr=3e-3, val_every=0, checkpoint_every=100, max_new_tokens=24)
    train(cfg, tmp_path / "run", progress=False, policy=pol)
    r = [x["rollout/reward_mean"] for x in RunStore.open(tmp_path / "run").steps()]
    assert sum(r[-5:]) / 5 > sum(r[:5]) / 5 + 0.1, r
    assert (params_vec(pol) - before).abs().max() > 1e-3


def test_zero_variance_drop_counts_generation_not_training(tmp_path):
    """Filtered groups still count as generated rollouts; they skip the update, so they cost no training FLOPs."""
    rows = [{"id": f"u{i}", "question": f"a={i % 10};a?", "answer": "-98765"} for i in range(16)]
    (tmp_path / "never.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # reward 0 always
    for filt, filtered in (("drop", 16), ("off", 0)):
        cfg = small_cfg(tmp_path, iterations=2, zero_variance_filter=filt, val_every=0,
                        train_set=str(tmp_path / "never.jsonl"))
        train(cfg, tmp_path / filt, progress=False, policy=tiny_policy())
        for r in RunStore.open(tmp_path / filt).steps():
            assert r["rollout/frac_all_wrong"] == 1.0 and r["rollout/frac_zero_variance"] == 1.0
            assert r["compute/rollouts"] == 16 * r["step"]
            assert r["compute/rollouts_filtered"] == filtered * r["step"]
            assert r["compute/rollouts_used"] == (16 - filtered) * r["step"]
            assert (r["compute/flops_train"] == 0) == (filt == "drop")
            assert r["compute/flops_gen"] > 0


@pytest.mark.parametrize("agg", ["token-mean", "sequence-mean", "constant-length"])
def test_loop_micro_batching_does_not_change_training(tmp_path, agg):
    """1, 2 and 4 micro-batches per step (16 rollouts) give the same weights after two steps."""
    finals = []
    for mb in (16, 8, 4):
        pol = tiny_policy()
        cfg = small_cfg(tmp_path, iterations=2, micro_batch_size=mb, loss_aggregation=agg, val_every=0, lr=1e-2,
                        kl_coef=0.1, entropy_coef=0.01)
        train(cfg, tmp_path / f"mb{mb}{agg}", progress=False, policy=pol)
        finals.append(params_vec(pol))
    # Adam's step is 1e-2 per coordinate whatever the gradient's size, so a coordinate with a near-zero gradient
    # moves by rounding-level amounts that differ between splits; a wrong split (a row lost or counted twice)
    # moves weights by ~1e-2
    torch.testing.assert_close(finals[0], finals[1], rtol=0, atol=5e-5)
    torch.testing.assert_close(finals[0], finals[2], rtol=0, atol=5e-5)


def test_workers_match_one_worker_and_repeat_exactly(tmp_path):
    """workers=2 (generation chunks and update micro-batches on two threads): the same first-step rollouts and, up to
    rounding of the micro-batch split, the same weights as one worker; bitwise the same from run to run."""
    finals, rewards = [], []
    for name, w in (("w1", 1), ("w2a", 2), ("w2b", 2)):
        pol = tiny_policy()
        cfg = small_cfg(tmp_path, iterations=2, val_every=0, lr=1e-2, kl_coef=0.1, entropy_coef=0.01)
        train(cfg, tmp_path / name, progress=False, policy=pol, workers=w)
        finals.append(params_vec(pol))
        rewards.append(RunStore.open(tmp_path / name).steps()[0]["rollout/reward_mean"])
    assert rewards[0] == rewards[1] == rewards[2]
    torch.testing.assert_close(finals[0], finals[1], rtol=0, atol=5e-5)  # see the micro-batching test
    assert torch.equal(finals[1], finals[2])
    assert float((finals[0] - params_vec(tiny_policy())).abs().max()) > 1e-3  # training moved the weights


def test_replay_buffer_keeps_the_correct_completions(tmp_path):
    """replay_correct: every rollout with reward 1 is in the replay table, as many per problem as problem_passes
    counts correct, and each grades correct against its gold; off by default."""
    pol = tiny_policy()
    cfg = small_cfg(tmp_path, iterations=6, val_every=0, lr=1e-2, replay_correct=True, max_new_tokens=4)
    train(cfg, tmp_path / "on", progress=False, policy=pol)
    st = RunStore.open(tmp_path / "on")
    correct = sum(c for _, _, _, c in st.problem_passes())
    rows = st._db.execute("SELECT problem_id, text FROM replay").fetchall()
    assert correct > 0 and len(rows) == correct
    assert grade([t for _, t in rows], ["7"] * len(rows), "flexible") == [1.0] * len(rows)  # every gold is 7
    assert sum(len(v) for v in st.replay_solutions(10**6).values()) == len({(p, t) for p, t in rows})
    train(small_cfg(tmp_path, iterations=1, val_every=0), tmp_path / "off", progress=False, policy=tiny_policy())
    assert RunStore.open(tmp_path / "off").replay_solutions(10) == {}


def test_problem_passes_sums_repeats_across_an_epoch_boundary():
    import torch

    from rlscale.rl.grpo import problem_passes

    rewards = torch.tensor([[1.0, 0.0], [float("nan"), 1.0], [1.0, 1.0]])
    valid = ~torch.isnan(rewards)
    assert problem_passes(["a", "b", "a"], valid, rewards) == [("a", 4, 3), ("b", 1, 1)]


def test_validation_at_explicit_steps(tmp_path):
    """val_steps adds validation points (the sweep's log-spaced compute points); 0 and M are always there."""
    cfg = small_cfg(tmp_path, iterations=6, val_every=0, val_steps=(1, 2, 4), checkpoint_every=100)
    train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    assert sorted(RunStore.open(tmp_path / "run").evals_df()["step"].tolist()) == [0, 1, 2, 4, 6]
    assert GRPOConfig.from_dict({"val_steps": "1,3"}).val_steps == (1, 3)
    with pytest.raises(UserError, match="val_steps"):
        GRPOConfig(model="m", iterations=2, val_steps=(0,)).validate()


def test_final_model_evaluated_under_a_second_seed(tmp_path):
    """val_reseed: the last evaluation also holds the final model's val/avg under the second seed (what evaluating
    it alone under that seed gives), the summary has it, the training is unchanged; a finished run keeps it."""
    from rlscale.models import load_policy
    from rlscale.rl.grpo import load_problems, validate_policy

    cfg = small_cfg(tmp_path, iterations=3, val_every=0, val_n=4, val_reseed=99)
    s = train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    plain = train(small_cfg(tmp_path, iterations=3, val_every=0, val_n=4), tmp_path / "plain", progress=False,
                  policy=tiny_policy())
    assert s["val_after"] == plain["val_after"] and "val_after_reseed" not in plain
    ev = RunStore.open(tmp_path / "run").evals_df().set_index("step")
    assert ev.loc[3, "val/avg_reseed"] == s["val_after_reseed"] and ev["val/avg_reseed"].notna().sum() == 1
    again = validate_policy(load_policy(str(tmp_path / "run" / "model")), load_problems(cfg, "val"),
                            dataclasses.replace(cfg, val_seed=99), "plain", "flexible")
    assert again["val/avg"] == s["val_after_reseed"]
    assert train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())["val_after_reseed"] == \
        s["val_after_reseed"]
    with pytest.raises(UserError, match="val_reseed=1234 equals val_seed"):
        small_cfg(tmp_path, val_reseed=1234).validate()


def test_a_field_added_later_at_its_default_keeps_old_runs(tmp_path):
    """A run stored before a config field existed (its stored config lacks it) resumes and reports as before when
    the field is left at its default; set to anything else, the config differs."""
    cfg = small_cfg(tmp_path, iterations=2)
    s = train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    store = RunStore.open(tmp_path / "run")
    old = {k: v for k, v in store.config.items() if k != "val_reseed"}  # as a run made before stop 33 stored it
    store.close()
    cfg_path = next(p for p in (tmp_path / "run").iterdir() if p.name == "config.json")
    stored = json.loads(cfg_path.read_text())
    from rlscale.store import config_hash

    cfg_path.write_text(json.dumps({**stored, "config": old, "config_hash": config_hash(old)}))
    assert train(cfg, tmp_path / "run", progress=False, policy=tiny_policy()) == s
    with pytest.raises(UserError, match="config differs.*val_reseed"):
        train(dataclasses.replace(cfg, val_reseed=7), tmp_path / "run", progress=False, policy=tiny_policy())


def test_strict_reward_validation_reports_the_other_format(tmp_path):
    """With the strict reward, validation also reports flexible avg and the rollouts only flexible can read."""
    cfg = small_cfg(tmp_path, iterations=1, val_every=1, reward="strict", checkpoint_every=100)
    train(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    ev = RunStore.open(tmp_path / "run").evals_df()
    for key in ("val/avg", "val/no_answer_frac", "val/flexible_avg", "val/flexible_only_format"):
        assert key in ev.columns and ev[key].between(0, 1).all(), key
    assert (ev["val/flexible_avg"] >= ev["val/avg"]).all()


def test_generation_budget_defaults_to_the_task():
    from rlscale.rl.grpo import with_task_defaults

    assert with_task_defaults(GRPOConfig(model="m", task="arith")).max_new_tokens == 128
    assert with_task_defaults(GRPOConfig(model="m", task="gsm8k")).max_new_tokens == 512
    assert with_task_defaults(GRPOConfig(model="m", task="arith", max_new_tokens=40)).max_new_tokens == 40


def test_initial_validation_shared_through_cache(tmp_path, monkeypatch):
    """Runs from the same weights with the same validation settings share the step-0 result; anything that
    changes it (weights, validation settings) gets its own entry."""
    import dataclasses

    from rlscale.models.tiny import TinyConfig, TinyPolicy
    from rlscale.models.tokenizer import CharTokenizer
    from rlscale.rl import grpo
    from rlscale.tasks.arith import ALPHABET, load_arith

    monkeypatch.setenv(grpo.VAL_CACHE_ENV, str(tmp_path / "cache"))
    tok = CharTokenizer(ALPHABET)
    pol = TinyPolicy.create(TinyConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                       max_seq_len=128), tok, seed=0)
    cfg = grpo.GRPOConfig(model="x", task="arith", val_n=2, val_limit=6, max_new_tokens=16)
    probs = load_arith("val", limit=6)
    calls = []
    real = grpo.validate_policy
    monkeypatch.setattr(grpo, "validate_policy", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = grpo.initial_validation(pol, probs, cfg, "plain", "flexible")
    b = grpo.initial_validation(pol, probs, cfg, "plain", "flexible")
    assert a == b and len(calls) == 1 and len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert a == real(pol, probs, cfg, "plain", "flexible")  # the cached value is the computed one
    grpo.initial_validation(pol, probs, dataclasses.replace(cfg, val_n=3), "plain", "flexible")
    with torch.no_grad():
        next(pol.module.parameters()).add_(0.01)
    grpo.initial_validation(pol, probs, cfg, "plain", "flexible")
    assert len(calls) == 3 and len(list((tmp_path / "cache").glob("*.json"))) == 3


def test_workers_with_several_passes_over_a_batch_match_one_worker(tmp_path):
    """updates_per_batch = 2 (ratio clipping on the second pass) with micro-batches on two worker threads: the
    second pass uses the old log-probs each micro-batch cached on the first, so the weights match one worker's up
    to rounding of the micro-batch split."""
    finals = []
    for name, w in (("w1", 1), ("w2", 2)):
        pol = tiny_policy()
        cfg = small_cfg(tmp_path, iterations=2, val_every=0, lr=1e-2, updates_per_batch=2, clip_eps_high=0.28)
        train(cfg, tmp_path / name, progress=False, policy=pol, workers=w)
        finals.append(params_vec(pol))
        rows = RunStore.open(tmp_path / name).steps()
        assert [r["train/steps_per_batch"] for r in rows] == [2, 2]
    torch.testing.assert_close(finals[0], finals[1], rtol=0, atol=5e-5)
    assert float((finals[0] - params_vec(tiny_policy())).abs().max()) > 1e-3


def test_pack_completions_matches_row_by_row_construction():
    toks = [[3, 4, 5], [], [7] * 9, [1]]
    lps = [[-0.5, -1.0, -2.0], [], [-0.1] * 9, [-3.0]]
    ids, mask, lp = pack_completions(toks, lps, pad_id=0)
    C = 16  # longest (9) rounded up to 8
    ref_ids, ref_mask, ref_lp = torch.zeros(4, C, dtype=torch.long), torch.zeros(4, C), torch.zeros(4, C)
    for i, (t, x) in enumerate(zip(toks, lps)):
        for j in range(len(t)):
            ref_ids[i, j], ref_mask[i, j], ref_lp[i, j] = t[j], 1.0, x[j]
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask) and torch.equal(lp, ref_lp)
    assert pack_completions([[]], [[]], 0)[0].shape == (1, 8)  # an empty completion still gets one padded block


def test_replayed_forward_trains_like_the_recomputed_one(tmp_path, monkeypatch):
    """The update's first pass taking its forward from the sampler (rlscale.models.fused.forward_grouped_replay)
    reaches the weights of recomputing it, up to float rounding; and it is what the lab model's run uses."""
    from rlscale.models import fused
    from rlscale.rl import grpo

    if fused.load() is None:
        pytest.skip("no C compiler: neither path is the fused one")
    used = []
    real = fused.forward_grouped_replay
    monkeypatch.setattr(fused, "forward_grouped_replay", lambda *a, **k: used.append(1) or real(*a, **k))
    vecs = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("RLSCALE_REPLAY", mode)
        pol = tiny_policy(seed=3)
        assert grpo.replay_applies(pol, small_cfg(tmp_path)) == (mode == "1")
        train(small_cfg(tmp_path, lr=3e-3, val_every=0), tmp_path / f"run{mode}", progress=False, policy=pol,
              workers=2)
        vecs[mode] = params_vec(pol)
        if mode == "1":
            assert len(used) >= 4  # every step's micro-batches
    start = params_vec(tiny_policy(seed=3))
    moved = vecs["0"] - start
    assert float(moved.abs().max()) > 1e-3
    # AdamW divides each gradient by its own running RMS, so on an element whose gradient is near zero a rounding
    # difference moves the step by a sizeable share of the learning rate: compare whole vectors, not one element
    assert float((vecs["1"] - vecs["0"]).norm()) < 1e-3 * float(moved.norm())
    assert float((vecs["1"] - vecs["0"]).abs().max()) < 1e-2 * float(moved.abs().max())


def test_backward_rows_leave_out_exactly_zero_losses(monkeypatch):
    """Rows with A = 0 and no KL/entropy term skip the backward; an entropy term or a reference model (the logged
    KL) keeps them; a step without any other row still differentiates its shortest kept row (so AdamW steps as it
    would); the switch turns it off."""
    from rlscale.rl.grpo import backward_rows

    adv = torch.tensor([0.0, 0.0, 1.0, -1.0, 0.0, 0.0])
    keep = torch.tensor([True, True, True, True, True, False])
    lens = [5, 3, 4, 4, 2, 1]
    bwd, skipped = backward_rows(adv, keep, keep, False, False, lens)
    assert bwd.tolist() == [False, False, True, True, False, False]
    assert skipped.tolist() == [True, True, False, False, True, False]
    for reg_on, ref in ((True, False), (False, True)):
        bwd, skipped = backward_rows(adv, keep, keep, reg_on, ref, lens)
        assert bwd.tolist() == keep.tolist() and not skipped.any()
    bwd, skipped = backward_rows(torch.zeros(6), keep, keep, False, False, lens)
    assert bwd.tolist() == [False, False, False, False, True, False]  # the shortest kept row (row 5 is not kept)
    assert skipped.tolist() == [True, True, True, True, False, False]
    none = torch.zeros(6, dtype=torch.bool)
    bwd, skipped = backward_rows(torch.zeros(6), none, none, False, False, lens)  # all filtered: nothing to do
    assert not bwd.any() and not skipped.any()
    monkeypatch.setenv("RLSCALE_SKIP_ZERO", "0")
    bwd, skipped = backward_rows(adv, keep, keep, False, False, lens)
    assert bwd.tolist() == keep.tolist() and not skipped.any()


@pytest.mark.parametrize("workers", [1, 2])
def test_skipping_zero_loss_rows_trains_like_differentiating_them(tmp_path, monkeypatch, workers):
    """Leaving the rows with A = 0 out of the backward (backward_rows) reaches the weights of differentiating every
    row, up to float rounding, logs the same entropy over every row (the skipped ones' from the sampler), and
    counts only the training FLOPs spent.
    The toy set has mostly all-wrong groups and one step with nothing but them (where AdamW still steps)."""
    runs, vecs = {}, {}
    for mode in ("1", "0"):
        monkeypatch.setenv("RLSCALE_SKIP_ZERO", mode)
        pol = tiny_policy(seed=3)
        cfg = small_cfg(tmp_path, lr=1e-2, val_every=0, iterations=6, problems_per_batch=8, micro_batch_size=8)
        train(cfg, tmp_path / f"run{mode}w{workers}", progress=False, policy=pol, workers=workers)
        vecs[mode], runs[mode] = params_vec(pol), RunStore.open(tmp_path / f"run{mode}w{workers}").steps()
    fz = [r["rollout/frac_zero_variance"] for r in runs["1"]]
    assert 1.0 in fz and min(fz) < 1.0  # a step of all-wrong groups, and steps with a gradient
    assert all(r["train/backward_frac"] == 1.0 for r in runs["0"])
    assert all(r["train/backward_frac"] <= 1 - r["rollout/frac_zero_variance"] + 1 / 32 for r in runs["1"])
    for a, b in zip(runs["1"], runs["0"]):
        assert a["rollout/reward_mean"] == b["rollout/reward_mean"]  # the same rollouts, step after step
        assert a["train/entropy"] == pytest.approx(b["train/entropy"], rel=1e-5)  # the sampler's, for skipped rows
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-4, abs=1e-7)
        assert a["compute/flops_gen"] == b["compute/flops_gen"]
        assert a["compute/flops_train"] < b["compute/flops_train"]
    moved = vecs["0"] - params_vec(tiny_policy(seed=3))
    assert float(moved.abs().max()) > 1e-2
    # see test_replayed_forward_trains_like_the_recomputed_one: AdamW's per-element steps amplify rounding
    assert float((vecs["1"] - vecs["0"]).norm()) < 1e-4 * float(moved.norm())
    assert float((vecs["1"] - vecs["0"]).abs().max()) < 1e-3 * float(moved.abs().max())
