"""`rlscale ingest`: TRL trainer_state.json, verl console/JSONL logs and CSVs -> the sweep table schema."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.sweep.export import RUN_COLUMNS
from rlscale.sweep.ingest import _parse_console_line, ingest


def trl_state(tmp_path):
    """A trainer_state.json with the key names TRL 1.16's GRPOTrainer logs (train every step, eval every 2)."""
    history = []
    for step in range(1, 5):
        history.append({"loss": 0.01 * step, "grad_norm": 0.5, "learning_rate": 1e-6, "num_tokens": 1000.0 * step,
                        "completions/mean_length": 40.0, "rewards/accuracy_reward/mean": 0.1 * step,
                        "rewards/accuracy_reward/std": 0.3, "reward": 0.1 * step, "reward_std": 0.3,
                        "frac_reward_zero_std": 0.25, "kl": 0.001, "entropy": 0.9, "clip_ratio/region_mean": 0.0,
                        "epoch": step / 8, "step": step})
        if step % 2 == 0:
            history.append({"eval_loss": 0.0, "eval_reward": 0.2 + 0.05 * step, "eval_reward_std": 0.4,
                            "eval_runtime": 1.0, "epoch": step / 8, "step": step})
    history.append({"train_runtime": 10.0, "train_loss": 0.02, "epoch": 0.5, "step": 4})
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"global_step": 4, "log_history": history}))
    return path


def test_trl(tmp_path):
    df = ingest(trl_state(tmp_path), "trl", run_id="trl1", n=8, problems_per_batch=4)
    assert list(df.columns[:len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert list(df["step"]) == [2, 4]  # rows at validation points
    assert list(df["val/avg"]) == pytest.approx([0.3, 0.4])
    assert list(df["compute/rollouts"]) == [64, 128]  # step * n * B_problem
    assert list(df["compute/tokens"]) == [2000.0, 4000.0]  # TRL's cumulative num_tokens
    assert list(df["rollout/reward_mean"]) == pytest.approx([0.2, 0.4])
    assert list(df["epochs"]) == pytest.approx([0.25, 0.5])
    assert (df["B"] == 32).all() and (df["budget"] == 128).all() and (df["iterations"] == 4).all()
    # training-reward curve when asked
    df = ingest(trl_state(tmp_path), "trl", n=8, problems_per_batch=4, reward_as_val=True)
    assert list(df["step"]) == [1, 2, 3, 4] and list(df["val/avg"]) == pytest.approx([0.1, 0.2, 0.3, 0.4])


VERL_LOG = """\
(TaskRunner pid=1) Training Progress:   0%|          | 0/3
(TaskRunner pid=1) step:0 - val-core/openai/gsm8k/acc/mean@4:0.25 - val-aux/openai/gsm8k/acc/best@4/mean:0.5 - val-aux/openai/gsm8k/acc/best@4/std:0.1 - val-aux/openai/gsm8k/acc/worst@4/mean:0.05 - val-aux/openai/gsm8k/reward/mean@4:0.25
(TaskRunner pid=1) step:1 - global_seqlen/mean:900 - actor/entropy:1.2 - actor/pg_loss:-0.01 - actor/lr:1e-06 - critic/score/mean:0.3 - critic/rewards/mean:0.3 - response_length/mean:100.0 - prompt_length/mean:50.0 - training/global_step:1 - training/epoch:0
(TaskRunner pid=1) step:2 - critic/score/mean:0.35 - response_length/mean:120.0 - prompt_length/mean:50.0 - val-core/openai/gsm8k/acc/mean@4:0.4 - val-aux/openai/gsm8k/acc/best@4/mean:0.7 - val-aux/openai/gsm8k/acc/worst@4/mean:0.1 - training/epoch:0
(TaskRunner pid=1) step:3 - critic/score/mean:0.4 - response_length/mean:80.0 - prompt_length/mean:50.0 - training/epoch:1
"""


def test_verl_console_and_jsonl(tmp_path):
    path = tmp_path / "verl.log"
    path.write_text(VERL_LOG)
    df = ingest(path, "verl", run_id="v", n=4, problems_per_batch=2)
    assert list(df["step"]) == [0, 2]
    assert list(df["val/avg"]) == [0.25, 0.4] and list(df["val/pass@4"]) == [0.5, 0.7]
    assert list(df["val/worst@4"]) == [0.05, 0.1]
    assert list(df["compute/rollouts"]) == [0, 16]
    # per-step mean lengths summed: step 1: 100 * 8, step 2: 120 * 8
    assert list(df["compute/tokens_generated"]) == [0.0, 1760.0]
    assert list(df["compute/tokens_prompt"]) == [0.0, 800.0]
    # the JSONL file logger gives the same table
    lines = [json.dumps({"step": r.pop("step"), "data": r}) for r in
             (_parse_console_line(x) for x in VERL_LOG.splitlines()) if r is not None]
    jpath = tmp_path / "verl.jsonl"
    jpath.write_text("\n".join(lines) + "\n")
    pd.testing.assert_frame_equal(ingest(jpath, "verl", run_id="v", n=4, problems_per_batch=2), df)


def test_verl_several_sources(tmp_path):
    path = tmp_path / "verl.log"
    path.write_text("step:0 - val-core/a/acc/mean@1:0.1 - val-core/b/acc/mean@1:0.9\n")
    with pytest.raises(UserError, match="several"):
        ingest(path, "verl", n=2, problems_per_batch=2)
    df = ingest(path, "verl", n=2, problems_per_batch=2, val_source="b")
    assert list(df["val/avg"]) == [0.9]


def test_csv_and_cli(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    csv.write_text("step,rollouts,reward\n0,0,0.2\n10,640,0.3\n20,1280,0.35\n")
    out = tmp_path / "t.parquet"
    assert main(["ingest", str(csv), "--format", "csv", "--run-id", "a", "--n", "8", "--problems-per-batch", "8",
                 "--set", "lr=1e-6", "--output", str(out)]) == 0
    assert main(["ingest", str(trl_state(tmp_path)), "--format", "trl", "--run-id", "b", "--n", "8",
                 "--problems-per-batch", "4", "--output", str(out), "--append"]) == 0
    df = pd.read_parquet(out)
    assert sorted(set(df["run_id"])) == ["a", "b"] and len(df) == 5
    a = df[df["run_id"] == "a"]
    assert list(a["compute/rollouts"]) == [0, 640, 1280] and list(a["val/avg"]) == [0.2, 0.3, 0.35]
    assert (a["lr"] == 1e-6).all()
    # re-ingesting a run replaces its rows
    assert main(["ingest", str(csv), "--format", "csv", "--run-id", "a", "--output", str(out), "--append"]) == 0
    assert len(pd.read_parquet(out)) == 5


@pytest.mark.parametrize("fmt,content,needle", [
    ("trl", '{"global_step": 1}', "log_history"),
    ("trl", "not json", "trainer_state"),
    ("verl", "nothing here\n", "no verl metrics"),
    ("csv", "a,b\n1,2\n", "'step'"),
    ("csv", "step,rollouts\n1,2\n", "metric column"),
])
def test_bad_input(tmp_path, capsys, fmt, content, needle):
    path = tmp_path / ("x.csv" if fmt == "csv" else "x.log")
    path.write_text(content)
    assert main(["ingest", str(path), "--format", fmt, "--n", "2", "--problems-per-batch", "2",
                 "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not (tmp_path / "o.csv").exists()


def test_missing_batch_shape(tmp_path, capsys):
    assert main(["ingest", str(trl_state(tmp_path)), "--format", "trl", "--output", str(tmp_path / "o.csv")]) == 2
    assert "--n and --problems-per-batch" in capsys.readouterr().err
