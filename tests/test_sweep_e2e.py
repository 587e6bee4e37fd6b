"""Sweeps through the real GRPO trainer (rlscale.rl.grpo) on a tiny lab model: run + export + resume, and
(slow) kill -9 of the driver and workers at random moments versus an uninterrupted sweep."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from rlscale.cli import main
from rlscale.sweep.export import load_sweep_table

SPEC = """model = "{model}"
task = "arith"
train_set = "train.jsonl"
val_set = "val.jsonl"
n = [2, 4]
problems_per_batch = [4]
B_max = 16
budgets_rollouts = [{budget}]
val_every_rollouts = 8
seeds = [0]
[train]
lr = 1e-4
val_limit = 8
val_n = 2
max_new_tokens = 24
checkpoint_every = 1
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A tiny (untrained) lab model and small train/val sets: the sweep machinery, not learning, is tested here."""
    from rlscale.lab.pretrain import build_policy
    from rlscale.tasks.arith import generate_problems

    root = tmp_path_factory.mktemp("lab")
    build_policy("xs", seed=0).save(str(root / "model"))
    for name, count, seed in (("train", 64, 11), ("val", 8, 22)):
        rows = [{"id": p.id, "question": p.question, "answer": p.answer}
                for p in generate_problems(count, seed, uniform_steps=True, prefix=name)]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_spec(lab: Path, budget: int) -> Path:
    path = lab / f"spec_{budget}.toml"
    path.write_text(SPEC.format(model="model", budget=budget))
    return path


def test_real_trainer_sweep(lab, capsys):
    spec = write_spec(lab, 16)  # (n=2, M=2) and (n=4, M=1)
    out = lab / "sweep"
    assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    assert "2 run(s) finished now" in capsys.readouterr().out
    df = load_sweep_table(out)
    assert sorted(df.groupby("n")["step"].apply(list).to_dict().items()) == [(2, [0, 1, 2]), (4, [0, 1])]
    assert (df["compute/rollouts"] == df["step"] * df["B"]).all()  # the trainer's own count, joined by step
    assert (df.loc[df["step"] > 0, "compute/tokens_generated"] > 0).all()
    assert df["val/avg"].between(0, 1).all() and "val/pass@1" in df.columns
    assert not any(c.startswith("time/") for c in df.columns)
    assert main(["sweep", "run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "0 run(s) finished now, 2 already finished" in capsys.readouterr().out


FORKED_RUN_IMPORTS = """
import importlib, json, sys
from rlscale.sweep.run import FORK_PRELOAD
for m in ("rlscale.sweep.worker", *FORK_PRELOAD):
    importlib.import_module(m)
before = set(sys.modules)
from rlscale.sweep.worker import grpo_train
grpo_train({"model": sys.argv[1], "task": "arith", "train_set": sys.argv[2], "problems_per_batch": 2,
            "rollouts_per_problem": 2, "iterations": 2, "max_new_tokens": 8, "val_limit": 2, "val_n": 1},
           sys.argv[3])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_a_forked_run_imports_nothing_heavy(lab, tmp_path):
    """What a run imports after the fork server's preload is paid by every run: torch._dynamo (which torch's
    optimizers import when the first one is built, with sympy, 1.3-2 s) must be preloaded, not imported per run."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FORKED_RUN_IMPORTS, str(lab / "model"), str(lab / "train.jsonl"),
                          str(tmp_path / "run")], capture_output=True, text=True, check=True)
    new = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in new if m.split(".")[0] in ("sympy", "mpmath") or m.startswith("torch._dynamo")]
    assert not heavy and len(new) < 100, (len(new), heavy[:5])


@pytest.mark.slow
def test_real_trainer_kill_and_resume(lab, monkeypatch):
    from test_sweep_run import _kill_cycle

    spec = write_spec(lab, 256)  # M = 32 and 16 steps, a checkpoint after every step
    killed = lab / "killed"

    def checkpointed_unfinished(out: Path) -> bool:  # kill once a run is under way: runs take ~1 s on a fast CPU
        return any(r.joinpath("checkpoints").is_dir() and any(r.joinpath("checkpoints").iterdir())
                   and not r.joinpath("summary.json").exists() for r in out.glob("runs/*"))

    finished = _kill_cycle(spec, killed, random.Random(1), cycles=5, wait=(0.0, 0.3), until=checkpointed_unfinished)
    assert finished[0] < 2, finished
    assert main(["sweep", "run", str(spec), "--out", str(killed), "--workers", "2", "--no-progress"]) == 0
    clean = lab / "clean"
    assert main(["sweep", "run", str(spec), "--out", str(clean), "--workers", "2", "--no-progress"]) == 0
    pd.testing.assert_frame_equal(load_sweep_table(killed), load_sweep_table(clean))


@pytest.mark.slow
def test_plan_calibrate(lab, capsys):
    assert main(["sweep", "plan", str(write_spec(lab, 16)), "--calibrate"]) == 0
    out = capsys.readouterr().out
    assert "(calibrated)" in out and "2 runs, 32 rollouts" in out
    ms = float(out.split("costs: ")[1].split(" ms/rollout")[0])
    assert 0 < ms < 1000
