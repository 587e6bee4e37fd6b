"""Sweep execution with a fake trainer (tests/test_sweep_fakes.py, writing a real RunStore): run, resume, changed
specs, failures, kill -9 of driver and workers, export table, Ray. The end-to-end test with the real GRPO trainer
lives in tests/test_sweep_e2e.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rlscale.cli import main
from rlscale.sweep.export import load_sweep_table, run_finished, status_rows
from rlscale.sweep.spec import load_spec
from rlscale.sweep.worker import lock_held

TESTS = Path(__file__).resolve().parent
SPEC = """model = "model"
task = "arith"
seeds = [SEEDS]
n = [2, 4]
problems_per_batch = [4, 8]
B_max = 64
budgets_rollouts = [256]
val_every_rollouts = 64
[train]
lr = LR
"""


@pytest.fixture(autouse=True)
def fake_trainer(monkeypatch):
    monkeypatch.setenv("RLSCALE_SWEEP_TRAINER", "test_sweep_fakes:fake_train")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("RLSCALE_FAKE_FAIL", raising=False)
    monkeypatch.delenv("RLSCALE_FAKE_STEP_S", raising=False)


def make_spec(tmp_path: Path, lr: str = "1e-4", seeds: str = "0", name: str = "s.toml") -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(SPEC.replace("LR", lr).replace("SEEDS", seeds))
    return path


def expected_rows(spec_path: Path) -> int:
    """Validation points: step 0 plus every val_every steps (and the last step)."""
    total = 0
    for r in load_spec(spec_path).runs:
        ve = r.config["val_every"]
        total += 1 + len({s for s in range(1, r.iterations + 1) if s % ve == 0 or s == r.iterations})
    return total


def test_run_export_status_and_resume(tmp_path, capsys):
    spec = make_spec(tmp_path)
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "4 run(s) finished now" in captured.out and "[sweep] done 4/4" in captured.err
    sweep = json.loads((out / "sweep.json").read_text())
    ids = [r.run_id for r in load_spec(spec).runs]
    assert sorted(sweep["runs"]) == sorted(ids) and all(v["status"] == "done" for v in sweep["runs"].values())
    assert (out / "spec.toml").read_text() == spec.read_text()
    for rid in ids:
        assert (out / "runs" / rid / "summary.json").is_file()

    df = load_sweep_table(out)
    assert len(df) == expected_rows(spec) and df["run_id"].nunique() == 4
    assert (df["compute/rollouts"] == df["step"] * df["n"] * df["problems_per_batch"]).all()
    assert (df["compute/tokens_generated"] == 7 * df["compute/rollouts"]).all()
    assert (df["B"] * df["iterations"] == df["budget"]).all() and (df["lr"] == 1e-4).all()
    assert not any(c.startswith("time/") for c in df.columns)
    assert {"val/avg", "val/pass@4", "epochs"} <= set(df.columns)
    assert df.equals(df.sort_values(["budget", "n", "problems_per_batch", "seed", "run_id", "step"])
                     .reset_index(drop=True))
    # the same compute points across runs of the budget: every 64 rollouts
    assert set(df["compute/rollouts"]) == {0, 64, 128, 192, 256}

    assert main(["sweep", "export", str(out), "--format", "csv", "--output", str(tmp_path / "t.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), df, check_dtype=False)
    assert main(["sweep", "export", str(out), "--output", str(tmp_path / "t.parquet")]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)
    assert main(["sweep", "status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "4 runs: 4 done" in status and "256/256" in status

    # resume: nothing is re-run
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "2"]) == 0
    assert "0 run(s) finished now, 4 already finished" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}


def test_forked_and_fresh_interpreter_runs_give_the_same_sweep(tmp_path, monkeypatch):
    """Runs forked from the fork server (default) and runs in a fresh interpreter (RLSCALE_SWEEP_FORK=0) write
    the same records; a forked run's log gets its output."""
    spec = make_spec(tmp_path, seeds="0, 1")
    tables = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("RLSCALE_SWEEP_FORK", mode)
        out = tmp_path / f"fork{mode}"
        assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
        tables[mode] = load_sweep_table(out)
        logs = list((out / "logs").glob("*.log"))
        assert len(logs) == 8 and all('"summary"' in p.read_text() for p in logs)  # the worker's last line
    pd.testing.assert_frame_equal(tables["1"], tables["0"])


def test_changed_spec_new_ids_and_conflict_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(make_spec(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    old_ids = set(json.loads((out / "sweep.json").read_text())["runs"])
    # a changed run config: new run ids, old records never mixed into the export
    spec2 = make_spec(tmp_path, lr="3e-4", name="s2.toml")
    assert main(["sweep", "run", str(spec2), "--out", str(out), "--no-progress"]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert not set(sweep["runs"]) & old_ids and len(sweep["history"]) == 2
    df = load_sweep_table(out)
    assert set(df["run_id"]) == set(sweep["runs"]) and (df["lr"] == 3e-4).all()
    # a conflicting sweep identity (another seed set, not the old one and more) is refused, nothing written
    before = (out / "sweep.json").read_text()
    capsys.readouterr()
    assert main(["sweep", "run", str(make_spec(tmp_path, seeds="1", name="s3.toml")), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "different seeds" in err and "\n" not in err
    assert (out / "sweep.json").read_text() == before
    # a directory that is not a sweep is refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    assert main(["sweep", "run", str(spec2), "--out", str(tmp_path / "other")]) == 2


def test_a_moved_sweep_keeps_its_runs(tmp_path, capsys):
    """A directory holding the spec, its model and SWEEPDIR, moved elsewhere: finished runs are skipped, an
    interrupted one resumes (its stored config carries the new paths, as the real trainer checks), the table is the
    unmoved one's; data that moved without the SWEEPDIR, or another model, are still refused."""
    from rlscale.store import RunStore, config_hash
    from rlscale.sweep.relocate import moved_roots

    a = tmp_path / "a" / "proj"
    a.mkdir(parents=True)
    spec = make_spec(a)
    assert main(["sweep", "run", str(spec), "--out", str(a / "sweep"), "--workers", "2", "--no-progress"]) == 0
    table = load_sweep_table(a / "sweep")
    cut = sorted((a / "sweep" / "runs").iterdir())[0]
    (cut / "summary.json").unlink()  # interrupted after its first step
    with RunStore.open(cut) as store:
        store.truncate_after(1)
    b = tmp_path / "b" / "elsewhere"
    b.parent.mkdir()
    os.replace(a, b)
    capsys.readouterr()
    mtimes = {p.parent.name: p.stat().st_mtime_ns for p in (b / "sweep").glob("runs/*/summary.json")}
    assert main(["sweep", "run", str(b / "s.toml"), "--out", str(b / "sweep"), "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "1 run(s) finished now, 3 already finished" in captured.out
    assert f"moved from {tmp_path / 'a' / 'proj'} to {b}; 4 run(s) carried over" in captured.err
    new_ids = {r.run_id for r in load_spec(b / "s.toml").runs}
    assert {p.name for p in (b / "sweep" / "runs").iterdir()} == new_ids
    assert {p.stem for p in (b / "sweep" / "configs").glob("*.json")} == new_ids
    assert {p.stem for p in (b / "sweep" / "logs").glob("*.log")} == new_ids
    for rid in new_ids:
        with RunStore.open(b / "sweep" / "runs" / rid) as store:
            assert store.config["model"] == str(b / "model") and store.config_hash == config_hash(store.config)
    done = {p.parent.name: p.stat().st_mtime_ns for p in (b / "sweep").glob("runs/*/summary.json")}
    assert len(mtimes) == 3 and len(done) == 4 and set(mtimes.values()) <= set(done.values())  # not re-run
    assert json.loads((b / "sweep" / "sweep.json").read_text())["identity"]["model"] == str(b / "model")
    moved = load_sweep_table(b / "sweep")
    pd.testing.assert_frame_equal(moved.drop(columns="run_id"), table.drop(columns="run_id"))

    ident = {"model": "/x/lab/model", "task": "arith", "train_set": "/x/lab/sets/t.jsonl", "val_set": None,
             "seeds": [0]}
    moved_ident = {**ident, "model": "/y/lab2/model", "train_set": "/y/lab2/sets/t.jsonl"}
    assert moved_roots(ident, moved_ident, "/y/lab2/sweeps/easy") == ("/x/lab", "/y/lab2")
    assert moved_roots(ident, moved_ident, "/x/lab/sweeps/easy") is None  # the data moved, the sweep did not
    assert moved_roots(ident, {**moved_ident, "train_set": "/z/lab2/sets/t.jsonl"}, "/y/lab2/s") is None
    assert moved_roots(ident, {**moved_ident, "model": "/y/lab2/other"}, "/y/lab2/s") is None
    assert moved_roots(ident, {**moved_ident, "seeds": [1]}, "/y/lab2/s") is None
    assert moved_roots(ident, {**ident, "model": "/model"}, "/s") is None


def test_failed_run_reported_then_resumed(tmp_path, monkeypatch, capsys):
    spec = make_spec(tmp_path)
    out = tmp_path / "sweep"
    monkeypatch.setenv("RLSCALE_FAKE_FAIL", "4")
    assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("failed (log:") == 2 and "fake failure for n=4" in err
    assert main(["sweep", "status", str(out)]) == 0
    assert "2 done, 0 running, 0 queued, 2 failed, 0 interrupted" in capsys.readouterr().out
    monkeypatch.delenv("RLSCALE_FAKE_FAIL")
    assert main(["sweep", "run", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "2 run(s) finished now, 2 already finished" in capsys.readouterr().out
    clean = tmp_path / "clean"
    assert main(["sweep", "run", str(spec), "--out", str(clean), "--workers", "2", "--no-progress"]) == 0
    pd.testing.assert_frame_equal(load_sweep_table(out), load_sweep_table(clean))


def test_bad_ray_address_and_workers(tmp_path, capsys):
    spec = make_spec(tmp_path)
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(spec), "--out", str(out), "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unreachable" in err and "\n" not in err
    assert main(["sweep", "run", str(spec), "--out", str(out), "--ray", "nonsense"]) == 2
    assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "0"]) == 2
    assert not out.exists()
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert main(["sweep", "export", str(out), "--output", str(tmp_path / "x.txt")]) == 2


def test_driver_killed_before_sweep_json(tmp_path, capsys):
    out = tmp_path / "sweep"
    (out / "locks").mkdir(parents=True)
    (out / "locks" / "driver.lock").write_text("")
    assert main(["sweep", "run", str(make_spec(tmp_path)), "--out", str(out), "--no-progress"]) == 0


def test_one_driver_per_sweepdir(tmp_path, monkeypatch, capsys):
    spec = make_spec(tmp_path)
    out = tmp_path / "sweep"
    monkeypatch.setenv("RLSCALE_FAKE_STEP_S", "0.05")
    driver = subprocess.Popen([sys.executable, "-m", "rlscale", "sweep", "run", str(spec), "--out", str(out)],
                              stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not list(out.glob("logs/*.log")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(["sweep", "run", str(spec), "--out", str(out)]) == 2
        assert "another `rlscale sweep run`" in capsys.readouterr().err
    finally:
        driver.kill()
        driver.wait()


def _kill_cycle(spec: Path, out: Path, rng: random.Random, cycles: int,
                wait: tuple[float, float] = (0.3, 1.5), until=None) -> list[int]:
    """Start the driver, kill -9 it (or one of its workers) at a random moment, `cycles` times; with `until` (a
    predicate on out), the random wait starts once it holds (e.g. a run has checkpointed), so the kill lands mid-run
    however fast the machine is. Returns the number of finished runs after each kill."""
    finished = []
    for i in range(cycles):
        driver = subprocess.Popen([sys.executable, "-m", "rlscale", "sweep", "run", str(spec), "--out", str(out),
                                   "--workers", "2", "--no-progress"],
                                  stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # past the driver's start-up (slow on a loaded machine), then at random
        while not (out / "sweep.json").exists() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        while until is not None and not until(out) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(*wait))
        if i % 2 == 1:  # kill a worker, let the driver carry on with the others, then kill the driver too
            pids = subprocess.run(["pgrep", "-P", str(driver.pid)], capture_output=True, text=True).stdout.split()
            if pids:
                os.kill(int(rng.choice(pids)), signal.SIGKILL)
            time.sleep(rng.uniform(0.1, 0.5))
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        finished.append(len(list(out.glob("runs/*/summary.json"))))
    return finished


def test_kill_driver_and_workers_then_resume(tmp_path, monkeypatch):
    spec = make_spec(tmp_path, seeds="0, 1")
    monkeypatch.setenv("RLSCALE_FAKE_STEP_S", "0.05")
    out = tmp_path / "killed"

    def training(out: Path) -> bool:  # a worker trains a run: the kill lands mid-run however slow the start-up
        return any(not run_finished(r) and lock_held(out / "locks" / f"{r.name}.lock") for r in out.glob("runs/*"))

    finished = _kill_cycle(spec, out, random.Random(0), cycles=5, wait=(0.0, 0.5), until=training)
    assert finished[-1] < 8, finished  # the kills interrupted the sweep (8 runs, ~7 s of steps on 2 workers)
    deadline = time.monotonic() + 10  # workers die with the driver (PR_SET_PDEATHSIG): their run locks free up
    while "running" in (status := {r["run_id"]: r["status"] for r in status_rows(out)}).values():
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert "interrupted" in status.values(), status
    assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    monkeypatch.setenv("RLSCALE_FAKE_STEP_S", "0")
    clean = tmp_path / "clean"
    assert main(["sweep", "run", str(spec), "--out", str(clean), "--workers", "2", "--no-progress"]) == 0
    killed_df, clean_df = load_sweep_table(out), load_sweep_table(clean)
    assert len(clean_df) == expected_rows(spec)
    pd.testing.assert_frame_equal(killed_df, clean_df)


def test_spec_built_in_code(tmp_path):
    from rlscale.sweep.run import run_sweep
    from rlscale.sweep.spec import parse_spec

    (tmp_path / "model").mkdir()
    data = {"model": "model", "task": "arith", "n": [2], "problems_per_batch": [4], "B_max": 8,
            "budgets_rollouts": [16], "train": {"lr": 1e-4}}
    spec = parse_spec(data, tmp_path / "inline.yaml")
    result = run_sweep(spec, tmp_path / "sweep", workers=1, progress=False)
    assert len(result.done) == 1 and not result.failed
    assert "budgets_rollouts" in (tmp_path / "sweep" / "spec.yaml").read_text()
    assert list(load_sweep_table(tmp_path / "sweep")["step"]) == [0, 2]


def test_ray_auto_equals_local(tmp_path):
    spec = make_spec(tmp_path)
    assert main(["sweep", "run", str(spec), "--out", str(tmp_path / "local"), "--workers", "2", "--no-progress"]) == 0
    assert main(["sweep", "run", str(spec), "--out", str(tmp_path / "ray"), "--workers", "2", "--ray", "auto",
                 "--no-progress"]) == 0
    pd.testing.assert_frame_equal(load_sweep_table(tmp_path / "ray"), load_sweep_table(tmp_path / "local"))


def test_lr_grid_sweep_fit_and_report_keep_each_n_at_its_best_rate(tmp_path, monkeypatch, capsys):
    """An lr grid in the spec: 3 rates x 2 n x 2 seeds; the fake's best rate grows with n (3.5e-5 at n = 2, 7e-5 at
    n = 4). The table has the lr column, the isocompute fit keeps each n's best rate (and equals a fit of only those
    runs), and the report says which rate each n was compared at."""
    from rlscale.scaling.isocompute import IsoCompute

    monkeypatch.setenv("RLSCALE_FAKE_LR_AWARE", "1")
    (tmp_path / "model").mkdir()
    spec = tmp_path / "lr.toml"
    spec.write_text('model = "model"\ntask = "arith"\nseeds = [0, 1]\nn = [2, 4]\nproblems_per_batch = [8]\n'
                    'B_max = 64\nbudgets_rollouts = [512]\nval_every_rollouts = 64\nlr = [3.5e-5, 7e-5, 1.4e-4]\n')
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(spec), "--out", str(out), "--workers", "2"]) == 0
    df = load_sweep_table(out)
    assert df["run_id"].nunique() == 12 and sorted(df["lr"].unique()) == [3.5e-5, 7e-5, 1.4e-4]
    assert main(["fit", str(out), "--law", "isocompute", "--out", str(tmp_path / "fit"), "--bootstrap", "0",
                 "--bucket-width", "0"]) == 0
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    by_n = fit["selected"]["by_n"]
    assert fit["selected"]["column"] == "lr" and {n: v["chosen"] for n, v in by_n.items()} == {"2": 3.5e-5, "4": 7e-5}
    assert all(v["runs"] == {"3.5e-05": 2, "7e-05": 2, "0.00014": 2} for v in by_n.values())
    best = df[((df["n"] == 2) & (df["lr"] == 3.5e-5)) | ((df["n"] == 4) & (df["lr"] == 7e-5))]
    ref = IsoCompute(bucket_width=0.0, select=None).fit(best).to_dict()
    for n in ("2", "4"):
        assert fit["per_n"][n]["params"] == pytest.approx(ref["per_n"][n]["params"], rel=1e-9)
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Each n is compared at its own best lr" in html and "n = 2 at lr 3.5e-05" in html


def test_gpu_slots_give_each_local_worker_its_own_gpu():
    from rlscale.sweep.run import gpu_slots

    assert gpu_slots(3, {}, 0) == [{}, {}, {}]  # no CUDA: nothing to pin
    assert gpu_slots(2, {}, 1) == [{}, {}]  # one GPU: every run on it
    assert gpu_slots(4, {}, 2) == [{"CUDA_VISIBLE_DEVICES": d} for d in "0101"]
    assert gpu_slots(3, {"CUDA_VISIBLE_DEVICES": "5, 7", "RLSCALE_DEVICE": "cuda"}, 2) == \
        [{"CUDA_VISIBLE_DEVICES": d} for d in ("5", "7", "5")]
    for pinned in ("cuda:1", "cpu"):
        assert gpu_slots(2, {"RLSCALE_DEVICE": pinned}, 4) == [{}, {}]


def test_local_runs_hold_distinct_gpu_slots(tmp_path, monkeypatch):
    """_run_local hands each started run a free slot's CUDA_VISIBLE_DEVICES: runs that overlap never share one,
    and a finished run's slot is reused."""
    import rlscale.sweep.run as run_mod

    started, running = [], set()

    class FakeRun:
        def __init__(self, out, run_id, env, log_path):
            self.gpu, self.polls, self.returncode = env.get("CUDA_VISIBLE_DEVICES"), 0, None
            self.length = 12 if run_id == "r0" else 2  # the first run outlasts several others
            assert self.gpu not in running, "two running runs on one GPU"
            running.add(self.gpu)
            started.append(self.gpu)

        def poll(self):
            self.polls += 1
            if self.polls >= self.length and self.returncode is None:
                self.returncode = 0
                running.discard(self.gpu)
            return self.returncode

    monkeypatch.setenv(run_mod.FORK_ENV, "0")
    monkeypatch.setattr(run_mod, "FreshRun", FakeRun)
    monkeypatch.setattr(run_mod, "cuda_count", lambda: 3)
    monkeypatch.setattr(run_mod, "run_finished", lambda path: True)
    monkeypatch.setattr(run_mod.time, "sleep", lambda s: None)
    monkeypatch.delenv("RLSCALE_DEVICE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    todo = [run_mod.RunSpec(f"r{i}", 2, 2, 1, 4, i, {}) for i in range(8)]
    status: dict = {}
    run_mod._run_local(todo, tmp_path, 3, {}, status, lambda changed: None)
    assert len(started) == 8 and set(started) == {"0", "1", "2"} and started[:3] == ["0", "1", "2"]
    assert set(status.values()) == {"done"}


def test_progress_line_shows_rollouts_per_second_and_eta(tmp_path):
    import io

    from rlscale.sweep.run import Progress
    from rlscale.sweep.spec import RunSpec

    runs = [RunSpec(f"r{i}", n=2, problems_per_batch=4, iterations=50, budget=400, seed=i, config={}) for i in range(2)]
    stream = io.StringIO()
    prog = Progress(runs, tmp_path, stream=stream)
    prog.update({"r0": "running", "r1": "queued"}, force=True)
    assert "rollouts 0/800  elapsed" in stream.getvalue()  # no rate before anything was spent
    (tmp_path / "runs" / "r0").mkdir(parents=True)
    (tmp_path / "runs" / "r0" / "summary.json").write_text("{}")
    prog.t0 = time.monotonic() - 10.0  # 400 rollouts in ~10 s
    prog.update({"r0": "done", "r1": "running"}, force=True)
    line = stream.getvalue().splitlines()[-1]
    rate = float(line.split("rollouts 400/800 (")[1].split("/s)")[0])
    eta = line.split("ETA ")[1]
    assert 35 <= rate <= 40 and eta in ("10s", "11s"), line


def test_more_seeds_extend_a_sweep_and_keep_its_runs(tmp_path, capsys):
    """A spec that only adds seeds runs the new seeds' runs in the same SWEEPDIR; the finished runs are kept
    untouched and the export holds both. Dropping a seed is still refused."""
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(make_spec(tmp_path, seeds="0")), "--out", str(out), "--no-progress"]) == 0
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    more = make_spec(tmp_path, seeds="0, 1, 2", name="more.toml")
    capsys.readouterr()
    assert main(["sweep", "run", str(more), "--out", str(out), "--no-progress"]) == 0
    assert "8 run(s) finished now, 4 already finished" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["identity"]["seeds"] == [0, 1, 2] and len(sweep["runs"]) == 12
    df = load_sweep_table(out)
    assert sorted(df["seed"].unique()) == [0, 1, 2] and df["run_id"].nunique() == 12
    assert main(["sweep", "run", str(make_spec(tmp_path, seeds="0, 1", name="fewer.toml")), "--out", str(out)]) == 2
    assert "different seeds" in capsys.readouterr().err
