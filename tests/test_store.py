"""Run store: atomic step records, rollback to a checkpoint, checkpoint rotation, config hash, concurrent reads."""

import json
import sqlite3

import pytest

from rlscale.errors import UserError
from rlscale.store import RunStore, config_hash


def test_create_log_read(tmp_path):
    s = RunStore.create(tmp_path / "run", {"a": 1})
    s.log_step(1, {"train/loss": 0.5, "nan": float("nan")}, [("p1", 4, 2), ("p2", 4, 0)])
    s.log_step(2, {"train/loss": 0.4})
    s.log_eval(0, {"val/avg": 0.1})
    assert [r["step"] for r in s.steps()] == [1, 2]
    assert s.steps_df()["train/loss"].tolist() == [0.5, 0.4]
    assert s.evals_df()["val/avg"].tolist() == [0.1]
    assert s.problem_passes() == [(1, "p1", 4, 2), (1, "p2", 4, 0)]
    df = s.problems_df()
    assert df.set_index("problem_id").loc["p1", "correct"] == 2
    # a reader sees committed rows while the writer is open (WAL)
    r = RunStore.open(tmp_path / "run")
    assert len(r.steps()) == 2 and r.config == {"a": 1} and r.config_hash == config_hash({"a": 1})
    # a duplicated step is refused and leaves nothing half-written (one transaction)
    with pytest.raises(sqlite3.IntegrityError):
        s.log_step(2, {"x": 1}, [("p9", 1, 1)])
    assert all(p[1] != "p9" for p in r.problem_passes())
    with pytest.raises(UserError):
        RunStore.create(tmp_path / "run", {"a": 1})
    with pytest.raises(UserError):
        RunStore.open(tmp_path / "nothing")


def test_truncate_after_and_checkpoints(tmp_path):
    s = RunStore.create(tmp_path, {"a": 2})
    for k in range(1, 6):
        s.log_step(k, {"k": k}, [(f"p{k}", 2, 1)])
        s.log_eval(k, {"v": k})

        def write(d, k=k):
            (d / "state.txt").write_text(str(k))
        s.save_checkpoint(k, write, keep=2)
    assert [c[0] for c in s.checkpoints()] == [4, 5]
    assert (s.latest_checkpoint()[1] / "state.txt").read_text() == "5"
    s.truncate_after(3)
    assert [r["step"] for r in s.steps()] == [1, 2, 3]
    assert [r["step"] for r in s.evals()] == [1, 2, 3]
    assert max(p[0] for p in s.problem_passes()) == 3
    # an interrupted checkpoint (temp dir) is never listed and is swept
    (s.checkpoint_root / ".tmp_step_000009_1").mkdir()
    assert [c[0] for c in s.checkpoints()] == [4, 5]
    s.sweep_temp()
    assert not list(s.checkpoint_root.glob(".tmp*"))


def test_replay_buffer_last_k_distinct_and_rollback(tmp_path):
    """replay_solutions(K): per problem the K most recent distinct texts, oldest first; truncate_after drops the
    replay rows of rolled-back steps with the rest of the step."""
    s = RunStore.create(tmp_path / "run", {"a": 1})
    s.log_step(1, {}, replay=[("p1", "x"), ("p1", "y"), ("p2", "u")])
    s.log_step(2, {}, replay=[("p1", "x"), ("p1", "z")])
    s.log_step(3, {}, replay=[("p2", "v"), ("p2", "u")])
    assert s.replay_solutions(2) == {"p1": ["x", "z"], "p2": ["v", "u"]}
    assert s.replay_solutions(10) == {"p1": ["y", "x", "z"], "p2": ["v", "u"]}
    s.truncate_after(1)
    assert s.replay_solutions(10) == {"p1": ["x", "y"], "p2": ["u"]}
    s.log_step(2, {}, replay=[("p3", "w")])  # a re-run step writes its replay rows again, no key clash
    assert s.replay_solutions(1) == {"p1": ["y"], "p2": ["u"], "p3": ["w"]}


def test_summary_marks_finished(tmp_path):
    s = RunStore.create(tmp_path, {})
    assert not s.is_finished() and s.summary() is None
    s.write_summary({"steps": 3})
    assert s.is_finished() and s.summary() == {"steps": 3}
    assert json.loads((tmp_path / "config.json").read_text())["config_hash"] == config_hash({})
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 1, "b": 3})
