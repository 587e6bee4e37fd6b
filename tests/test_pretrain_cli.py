"""Pretraining: the LR schedule, batching, a few-second `rlscale pretrain` smoke run that must learn, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.lab.pretrain import (
    PretrainConfig,
    batches,
    build_policy,
    dp_backward,
    encode_doc,
    loss_of,
    lr_at,
    make_batch,
)
from rlscale.models.tiny import TinyPolicy
from rlscale.models.tokenizer import CharTokenizer
from rlscale.tasks.arith import ALPHABET, ArithConfig, corpus_stream

torch.set_num_threads(1)


def test_lr_schedule_closed_form():
    assert lr_at(0.0, 1.0, 0.1, 0.1) == 0.0
    assert lr_at(0.05, 1.0, 0.1, 0.1) == pytest.approx(0.5)
    assert lr_at(0.1, 1.0, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_at(0.55, 1.0, 0.1, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(1.0, 1.0, 0.1, 0.1) == pytest.approx(0.1)


def test_batches_bucketed_and_loss_on_solution():
    tok = CharTokenizer(ALPHABET)
    it = batches(corpus_stream(0, ArithConfig()), tok, 1024, __import__("random").Random(0), pool=256)
    for _ in range(10):
        docs = next(it)
        ids, tgt = make_batch(docs, tok.pad_id)
        assert ids.shape[1] % 8 == 0 and ids.numel() <= 1024 + ids.shape[1]
        for b, (d, q_end) in enumerate(docs):
            # targets: exactly the solution tokens and EOS (shifted by one)
            assert tgt[b][tgt[b] != -100].tolist() == d[q_end:]
    d, q_end = encode_doc(tok, "a=1,b=a+2;b?b=a+2=1+2=3;####3")
    assert tok.decode(d[:q_end]) == "a=1,b=a+2;b?" and d[-1] == tok.eos_id


def test_pretrain_smoke_learns(tmp_path, capsys):
    out = tmp_path / "ck"
    assert main(["pretrain", "--size", "xs", "--tokens", "150000", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    meta = json.loads((out / "rlscale_model.json").read_text())
    assert meta["size"] == "xs" and meta["compute"]["tokens"] >= 150000 and meta["compute"]["flops"] > 0
    assert meta["data_recipe"]["arith"]["alt_format_frac"] == 0.3
    assert meta["data_recipe"]["arith"]["step_weights"] == list(ArithConfig().step_weights)
    assert meta["heldout_loss"] < 0.75 * math.log(meta["config"]["vocab_size"])  # it learned something
    pol = TinyPolicy.load(str(out))
    assert pol.meta["compute"]["wall_s"] > 0
    assert main(["sample", "--model", str(out), "--n", "2", "--limit", "2", "--max-new-tokens", "16"]) == 0


def test_pretrain_bad_input(tmp_path, capsys):
    assert main(["pretrain", "--size", "xl", "--tokens", "10", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown size 'xl'" in err and len(err.strip().splitlines()) == 1
    assert main(["pretrain", "--tokens", "-5", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit) as e:  # argparse: --tokens and --minutes are mutually exclusive
        main(["pretrain", "--tokens", "5", "--minutes", "1"])
    assert e.value.code == 2
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError, match="alt-format-frac"):
        PretrainConfig(alt_format_frac=2.0).validate()
    capsys.readouterr()
    for bad, msg in (("0.5,0.5", "give 6 non-negative weights"), ("1,2,x,4,5,6", "comma-separated numbers"),
                     ("0,0,0,0,0,0", "positive sum"), ("1,1,1,1,1,-1", "non-negative")):
        assert main(["pretrain", "--step-weights", bad, "--tokens", "10", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "--step-weights" in err and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_corpus_mix_of_difficulties():
    """--step-weights sets P(k) of the pretraining corpus (and is recorded in the data recipe)."""
    def steps_of(doc: str) -> int:
        return doc.split(";")[0].count(",")  # one definition per computed variable

    only_hard = PretrainConfig(step_weights=(0, 0, 0, 0, 0, 1)).validate().arith_config()
    assert {steps_of(d) for d, _ in zip(corpus_stream(0, only_hard), range(200))} == {6}
    mix = PretrainConfig(step_weights=(3, 1, 0, 0, 0, 0)).validate().arith_config()
    counts = [steps_of(d) for d, _ in zip(corpus_stream(0, mix), range(4000))]
    assert set(counts) == {1, 2} and abs(counts.count(1) / len(counts) - 0.75) < 0.03
    assert PretrainConfig().arith_config().step_weights == ArithConfig().step_weights  # default: uniform


def test_dp_gradient_equals_union_batch():
    """Shards normalised by the global target count and summed give the gradient of the mean loss on the union."""
    tok = CharTokenizer(ALPHABET)
    it = batches(corpus_stream(3, ArithConfig()), tok, 2048, __import__("random").Random(0), pool=256)
    ids, tgt = make_batch(next(it), tok.pad_id)
    model = build_policy("xs", 0).module
    loss_of(model, ids, tgt).backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    k = ids.shape[0] // 3  # unequal shards
    total = float((tgt != -100).sum())
    acc = [torch.zeros_like(p) for p in model.parameters()]
    for sl in (slice(0, k), slice(k, None)):
        dp_backward(model, ids[sl], tgt[sl], total)
        acc = [a + p.grad for a, p in zip(acc, model.parameters())]
        model.zero_grad(set_to_none=True)
    for a, w in zip(acc, want):
        torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-7)


def test_pretrain_data_parallel(tmp_path, capfd):
    """Two processes: learns, records the process count, and a run killed (-9) mid-way and started again gives
    bit-identical weights to an uninterrupted one (every rank reloads the checkpoint and replays its stream)."""
    import subprocess
    import sys
    import time

    from rlscale.lab.pretrain import state_path

    outs = [tmp_path / "a", tmp_path / "b"]
    args = ["pretrain", "--size", "xs", "--tokens", "150000", "--seed", "1", "--processes", "2"]
    assert main([*args, "--out", str(outs[0]), "--quiet"]) == 0
    state = state_path(outs[1])
    proc = subprocess.Popen([sys.executable, "-m", "rlscale", *args, "--out", str(outs[1]), "--quiet",
                             "--checkpoint-every-s", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.kill()
    proc.wait()
    assert state.exists() and not outs[1].exists()
    steps_done = torch.load(state, weights_only=False)["steps"]
    assert main([*args, "--out", str(outs[1])]) == 0  # the same command resumes
    assert f"resuming from step {steps_done}" in capfd.readouterr().err
    assert not state.exists()  # removed once the model is written
    meta = json.loads((outs[0] / "rlscale_model.json").read_text())
    assert meta["compute"]["processes"] == 2 and meta["compute"]["tokens"] >= 150000
    assert len(set(meta["data_recipe"]["stream_seeds"])) == 2
    assert meta["heldout_loss"] < 0.75 * math.log(meta["config"]["vocab_size"])
    a, b = (TinyPolicy.load(str(o)).module.state_dict() for o in outs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main(["pretrain", "--processes", "0", "--tokens", "10", "--out", str(tmp_path / "x")]) == 2
    assert "--processes 0" in capfd.readouterr().err


def test_pretrain_resumes_after_a_crash_bit_identically_and_refuses_other_settings(tmp_path, monkeypatch):
    """One process: a crash after some steps leaves the last checkpoint; the same call continues from it and ends
    with the weights, tokens and steps of an uninterrupted run. A checkpoint of other settings is a one-line
    error naming the field, and is left alone."""
    import rlscale.lab.pretrain as P

    cfg = PretrainConfig(size="xs", tokens=60000, seed=2, checkpoint_every_s=0.0)
    ref = P.pretrain(cfg, out=str(tmp_path / "ref"), progress=False)
    real, calls = P.dp_backward, {"n": 0}

    def crash_at_7(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(P, "dp_backward", crash_at_7)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        P.pretrain(cfg, out=str(out), progress=False)
    state = P.state_path(out)
    assert torch.load(state, weights_only=False)["steps"] == 6 and not out.exists()
    with pytest.raises(UserError, match="seed: 2 vs 3"):
        P.pretrain(dataclasses.replace(cfg, seed=3), out=str(out), progress=False)
    assert state.exists()
    monkeypatch.setattr(P, "dp_backward", real)
    got = P.pretrain(dataclasses.replace(cfg, checkpoint_every_s=30.0), out=str(out), progress=False)
    a, b = ref.module.state_dict(), got.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for k in ("tokens", "steps", "tokens_padded", "flops"):
        assert got.meta["compute"][k] == ref.meta["compute"][k]
    assert not state.exists()


def _children(pid: int) -> list[int]:
    """pids whose parent is pid."""
    import subprocess

    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_data_parallel_workers_die_with_a_killed_pretrain(tmp_path):
    """kill -9 of `rlscale pretrain --processes 2` mid-run: its worker processes are gone within seconds instead of
    training on as orphans (which is what a killed `rlscale lab` used to leave)."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "rlscale", "pretrain", "--size", "xs", "--tokens", "50000000",
                             "--processes", "2", "--out", str(tmp_path / "m")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [c for c in _children(proc.pid) if "spawn_main" in open(f"/proc/{c}/cmdline").read()]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "the two data-parallel workers never started"
        time.sleep(1.0)  # past their start-up
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
        # the killed run's rendezvous directory is left behind; the next data-parallel pretraining removes it
        import tempfile

        from rlscale.lab.pretrain import RENDEZVOUS_PREFIX, remove_stale_rendezvous

        left = list(Path(tempfile.gettempdir()).glob(f"{RENDEZVOUS_PREFIX}{proc.pid}-*"))
        assert len(left) == 1
        assert left[0] in remove_stale_rendezvous(Path(tempfile.gettempdir())) and not left[0].exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_stale_rendezvous_directories_are_removed(tmp_path):
    """Only directories of pretraining processes that are gone: a live process's, and names without a pid (older
    versions), stay."""
    import subprocess
    import sys

    from rlscale.lab.pretrain import RENDEZVOUS_PREFIX, remove_stale_rendezvous

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    dead = tmp_path / f"{RENDEZVOUS_PREFIX}{done.pid}-abc"
    live = tmp_path / f"{RENDEZVOUS_PREFIX}{os.getpid()}-def"
    old = tmp_path / f"{RENDEZVOUS_PREFIX}x1y2z3"
    for d in (dead, live, old):
        d.mkdir()
        (d / "rendezvous").write_text("x")
    assert remove_stale_rendezvous(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and old.exists()
