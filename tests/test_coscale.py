"""CoScale-RL: pure functions (efficiency argmax, partitioning, N assignment and doubling, pool transitions, budget
accounting), a micro end-to-end run through the CLI (tiny lab model built in code, a handful of problems), resume
skipping finished stages, the report section, and bad input (exit code 2). The lab comparison is `slow`."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rlscale.cli import main
from rlscale.coscale.pipeline import (
    CoScaleConfig,
    Ledger,
    assign_rollouts,
    best_eta_over_N,
    class_counts,
    classify,
    efficiency,
    min_iteration_cost,
    next_n,
    partition_by_difficulty,
    plateaued,
    segment_cost,
    transitions,
)
from rlscale.store import RunStore

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- pure functions
@pytest.mark.parametrize("p,n,mu", [(0.1, 4.0, 1.0), (0.5, 16.0, 0.3), (0.02, 1.5, 7.0)])
def test_efficiency_argmax_closed_form(p, n, mu):
    x_star = best_eta_over_N(p, n)
    assert x_star == pytest.approx(p / (2 * n))
    # brute force over a fine grid agrees with the closed form, and E(x*) = mu p^2 / (4 n)
    grid = np.linspace(0, 4 * x_star, 40001)
    e = np.array([efficiency(x, mu, p, n) for x in grid])
    assert grid[e.argmax()] == pytest.approx(x_star, rel=1e-3)
    assert efficiency(x_star, mu, p, n) == pytest.approx(mu * p * p / (4 * n))
    assert efficiency(0.0, mu, p, n) == 0.0 and efficiency(2 * x_star, mu, p, n) == pytest.approx(0.0, abs=1e-12)


def test_classify_boundaries():
    lo, hi = 0.05, 0.70
    assert classify(0.0, lo, hi) == "unsolvable" and classify(0.0499, lo, hi) == "unsolvable"
    assert classify(0.05, lo, hi) == "solvable" and classify(0.6999, lo, hi) == "solvable"
    assert classify(0.70, lo, hi) == "solved" and classify(1.0, lo, hi) == "solved"


def test_partition_by_difficulty():
    acc = {f"q{i}": a for i, a in enumerate([0.1, 0.6, 0.3, 0.5, 0.2, 0.65, 0.05])}
    parts = partition_by_difficulty(acc, 3)
    assert sorted(len(p) for p in parts) == [2, 2, 3]
    assert sorted(i for p in parts for i in p) == sorted(acc)
    # easiest first: every problem of a partition is at least as easy as every problem of the next
    for a, b in zip(parts, parts[1:]):
        assert min(acc[i] for i in a) >= max(acc[i] for i in b)
    assert parts[0][0] == "q5"
    assert partition_by_difficulty({"a": 0.3, "b": 0.2}, 5) == [["a"], ["b"]]
    assert partition_by_difficulty({}, 3) == []


def test_assign_rollouts_harder_gets_more():
    assert assign_rollouts(3, (4, 8, 16)) == [4, 8, 16]
    assert assign_rollouts(2, (4, 8, 16)) == [8, 16]  # fewer partitions keep the hard end
    assert assign_rollouts(1, (4, 8, 16)) == [16]


def test_plateau_and_doubling():
    flat = [0.3] * 10
    rising = [0.1 * i for i in range(10)]
    assert not plateaued(flat[:9], 5, 0.02)  # needs 2 windows
    assert plateaued(flat, 5, 0.02) and not plateaued(rising, 5, 0.02)
    assert plateaued([0.1, 0.1, 0.11, 0.11], 2, 0.02) and not plateaued([0.1, 0.1, 0.2, 0.2], 2, 0.02)
    assert plateaued([0.3, float("nan"), 0.3, 0.3, 0.3], 2, 0.01)  # NaN steps are skipped
    assert next_n(8, flat, 5, 0.02, 64) == 16
    assert next_n(8, rising, 5, 0.02, 64) == 8
    assert next_n(48, flat, 5, 0.02, 64) == 64  # capped


def test_transitions_and_counts():
    before = {"a": "unsolvable", "b": "solvable", "c": "solvable", "d": "solved"}
    after = {"a": "solvable", "b": "solved", "c": "unsolvable", "d": "solved", "e": "solvable"}
    t = transitions(before, after)
    assert t["unsolvable->solvable"] == 1 and t["solvable->solved"] == 1 and t["solvable->unsolvable"] == 1
    assert t["solved->solved"] == 1 and sum(t.values()) == 4
    assert class_counts(after) == {"unsolvable": 1, "solvable": 2, "solved": 2}


def test_budget_accounting():
    led = Ledger(100)
    assert led.afford(60, reserve=40) and not led.afford(61, reserve=40)
    led.spend(60)
    assert led.remaining == 40 and not led.afford(41)
    assert segment_cost(8, 4, 5) == 8 * 4 * 5 + 2
    cfg = CoScaleConfig(model="m", eval_n=4, initial_n=(4, 8, 16), plateau_window=3, collect_n=2)
    assert min_iteration_cost(cfg, 10) == 4 * 10 + (4 * 1 * 3 + 2) + 2


# ------------------------------------------------------------------------------------------------- end to end
def _write(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random lab model saved to disk and a handful of 1-2 step arith problems."""
    from rlscale.models.tiny import TinyConfig, TinyPolicy
    from rlscale.models.tokenizer import CharTokenizer
    from rlscale.tasks.arith import ALPHABET, load_arith

    d = tmp_path_factory.mktemp("coscale")
    tok = CharTokenizer(ALPHABET)
    TinyPolicy.create(TinyConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, d_ff=64), tok,
                      seed=0).save(str(d / "model"))
    rows = lambda split, k: [{"id": p.id, "question": p.question, "answer": p.answer}  # noqa: E731
                             for p in load_arith(split) if p.meta["steps"] <= 2][:k]
    return {"dir": d, "model": str(d / "model"), "train": _write(d / "train.jsonl", rows("train", 5)),
            "val": _write(d / "val.jsonl", rows("val", 3)), "train_rows": rows("train", 5)}


def micro_args(s, out, *extra):
    # a warm-up SFT with a high LR makes some problems solvable, so GRPO partitions are exercised (30 epochs: with
    # 40 or 50 the run leaves none solvable in one of the fused and torch paths, so it depends on rounding)
    return ["coscale", "--model", s["model"], "--task", "arith", "--train-set", s["train"], "--val-set", s["val"],
            "--budget-rollouts", "1500", "--out", str(out), "--eval-n", "8", "--collect-n", "4", "--rl-steps", "2",
            "--plateau-window", "1", "--max-iterations", "2", "--max-new-tokens", "24", "--val-n", "2",
            "--sft-epochs", "30", "--sft-lr", "1e-2", "--sft-batch-size", "8", "--warmup-problems", "5",
            "--problems-per-batch", "2", "--solved-at", "0.95", "--json", *extra]


def test_micro_end_to_end_and_resume(setup, tmp_path, capsys):
    out = tmp_path / "cs"
    assert main(micro_args(setup, out)) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    stages = json.loads((out / "stages.json").read_text())
    assert res["rollouts"] == summary["rollouts"] <= 1500
    # every counted stage's rollouts, and nothing else, is charged to the budget
    assert summary["rollouts"] == sum(v["rollouts"] for v in stages.values() if v["counted"])
    assert {"warmup_sft", "val_initial", "it0/eval_pool", "final_sft", "val_final"} <= set(stages)
    segs = {k: v for k, v in stages.items() if "/seg" in k}
    assert segs, "the warm-up must leave solvable problems so that GRPO runs"
    for k, v in segs.items():
        r = v["result"]
        assert r["train_rollouts"] == r["n"] * min(2, _part_size(summary, k)) * r["steps"]
        assert v["rollouts"] == r["train_rollouts"] + 2
    # N per partition follows the doubling rule on the recorded rewards
    for it in summary["iterations"]:
        for j, part in enumerate(it["partitions"]):
            rewards = [stages[f"it{it['iteration']}/p{j}/seg{s}"]["result"]["rewards"][0] for s in range(2)]
            n = part["n0"]
            n = next_n(n, rewards[:1], 1, 0.02, 64)
            n = next_n(n, rewards, 1, 0.02, 64) if n == part["n0"] else n
            assert it["n_final"][j] == n
        assert sum(it["transitions"].values()) == sum(it["pool_start"].values())
    # re-distillation data = the last K correct rollouts per problem of each partition's replay buffer (its GRPO
    # segments' run stores), as recorded by the segments
    assert any(v["result"]["solutions"] for v in segs.values()), "RL found no correct rollout to re-distil"
    for it in summary["iterations"]:
        replay_rows = set()
        for j in range(len(it["partitions"])):
            merged: dict[str, list[str]] = {}  # the partition's segments in order, newest last
            for sg in sorted(int(k.rsplit("seg", 1)[1]) for k in segs if k.startswith(f"it{it['iteration']}/p{j}/")):
                for i, texts in segs[f"it{it['iteration']}/p{j}/seg{sg}"]["result"]["solutions"].items():
                    merged[i] = [t for t in merged.get(i, []) if t not in texts] + texts
            replay_rows |= {(i, t) for i, texts in merged.items() for t in texts[-8:]}
        d = out / "stages" / f"it{it['iteration']}" / "redistill" / "data.jsonl"
        if d.exists():
            data = {(r["problem_id"], r["solution"]) for r in map(json.loads, d.read_text().splitlines())}
            assert replay_rows <= data
        for k, v in segs.items():
            store = RunStore.open(out / "stages" / k / "run")
            assert all(len(t) <= 8 for t in v["result"]["solutions"].values())
            assert sum(len(t) for t in store.replay_solutions(10**6).values()) >= \
                sum(len(t) for t in v["result"]["solutions"].values())
    assert Path(summary["final_model"], "rlscale_model.json").exists()
    assert 0.0 <= summary["val_final"]["acc"] <= 1.0 and len(summary["val_final"]["ci95"]) == 2

    # finished: a re-run returns the stored summary and runs nothing
    assert main(micro_args(setup, out, "--quiet")) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rollouts"] == res["rollouts"]

    # resume: drop the last stages (as if killed after it1); only they run again, with identical results
    (out / "summary.json").unlink()
    kept = {k: v for k, v in stages.items() if k not in ("final_sft", "val_final")}
    (out / "stages.json").write_text(json.dumps(kept))
    assert main(micro_args(setup, out)) == 0
    err = capsys.readouterr().err
    ran = [line.split("stage ")[1].split(" ")[0] for line in err.splitlines() if line.startswith("coscale: stage")]
    assert ran == ["final_sft", "val_final"]
    again = json.loads((out / "summary.json").read_text())
    for k in ("rollouts", "iterations", "n_timeline", "collected_solutions", "pool"):
        assert again[k] == summary[k]

    # the report section is built from the records
    from rlscale.coscale.report import coscale_section
    from rlscale.html import page

    html = page("t", [coscale_section(out)])
    assert "CoScale-RL" in html and "data:image/png;base64," in html

    # a changed config on the same --out is refused
    assert main(micro_args(setup, out, "--seed", "3")) == 2
    assert "different config" in capsys.readouterr().err


def _part_size(summary, stage):
    it, p = stage.split("/")[:2]
    return summary["iterations"][int(it[2:])]["partitions"][int(p[1:])]["size"]


def test_bad_input(setup, tmp_path, capsys):
    base = micro_args(setup, tmp_path / "x")
    bad = [
        (["--solutions", str(tmp_path / "missing.jsonl")], "file not found"),
        (["--unsolvable-below", "0.97"], "thresholds out of order"),
        (["--budget-rollouts", "10"], "too small for one iteration"),
        (["--initial-n", "16,8,4"], "increasing order"),
    ]
    for extra, msg in bad:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    sols = _write(tmp_path / "sols.jsonl", [{"problem_id": "nope", "solution": "b=1;####1"}])
    assert main(base + ["--solutions", sols]) == 2
    assert "not in the training set" in capsys.readouterr().err
    assert main(["coscale", "--preset", "lab-quick", "--out", str(tmp_path / "p"), "--eval-n", "3"]) == 2
    assert main(["coscale", "--out", str(tmp_path / "q"), "--budget-rollouts", "5"]) == 2
    assert not (tmp_path / "x").exists()  # nothing written on bad input


def test_solutions_file_is_used(setup, tmp_path):
    from rlscale.coscale.pipeline import load_reference_solutions

    rows = setup["train_rows"]
    f = _write(tmp_path / "s.jsonl", [{"problem_id": rows[0]["id"], "solution": "x"},
                                      {"problem_id": rows[0]["id"], "solution": "y"},
                                      {"problem_id": rows[0]["id"], "solution": "x"}])
    from rlscale.tasks.base import Problem

    probs = [Problem(r["id"], r["question"], r["answer"]) for r in rows]
    refs = load_reference_solutions(CoScaleConfig(model="m", solutions=f), probs)
    assert refs == {rows[0]["id"]: ["x", "y"]}
    gen = load_reference_solutions(CoScaleConfig(model="m", solutions_per_problem=3), probs)
    assert set(gen) == {p.id for p in probs} and all(1 <= len(v) <= 16 for v in gen.values())


@pytest.mark.slow
def test_lab_quick(tmp_path, capsys):
    assert main(["coscale", "--preset", "lab-quick", "--out", str(tmp_path / "lab"), "--json", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("base", "grpo", "coscale"):
        lo, hi = r[f"{k}_ci"]
        assert lo <= r[f"{k}_acc"] <= hi and not math.isnan(r[f"{k}_acc"])
    assert r["grpo_rollouts"] >= r["coscale_rollouts"] - 64


def test_coscale_compare_micro(setup, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["coscale-compare", "--model", setup["model"], "--out", str(out), "--problems", "2",
            "--solutions-per-problem", "2", "--heldout", "3", "--train-eval-limit", "4", "--rl-steps", "1",
            "--rl-n", "2", "--rl-problems-per-batch", "2", "--max-new-tokens", "12", "--json", "--quiet"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    full = json.loads((out / "result.json").read_text())
    deep = [json.loads(x) for x in (out / "sets" / "deep_sft.jsonl").read_text().splitlines()]
    wide = [json.loads(x) for x in (out / "sets" / "wide_sft.jsonl").read_text().splitlines()]
    assert len(deep) == len(wide) == 4  # equal solution count: 2 x 2 vs 4 x 1
    assert len({d["problem_id"] for d in deep}) == 2 and len({w["problem_id"] for w in wide}) == 4
    assert len({d["solution"] for d in deep}) == 4  # distinct solutions
    for arm in ("deep", "wide"):
        for phase in ("sft", "rl"):
            for where in ("own", "shared", "heldout"):
                e = full["arms"][arm][phase][where]
                assert 0 <= e["pass@1"] <= e["pass@16"] <= 1 and e["pass@16_ci"][0] <= e["pass@16"]
    assert Path(r["plot"]).read_bytes()[:4] == b"\x89PNG"
    lo, hi = r["own_pass@16_deep_minus_wide_ci"]
    d = full["arms"]["deep"]["rl"]["own"]["pass@16"] - full["arms"]["wide"]["rl"]["own"]["pass@16"]
    assert r["own_pass@16_deep_minus_wide"] == pytest.approx(d) and lo <= d <= hi
    assert r["direction"] == ("reproduced" if lo > 0 else "reversed" if hi < 0 else "unresolved")
    assert r["direction_reproduced"] is (lo > 0)
    assert main(args[:-2] + ["--problems", "3", "--quiet"]) == 2  # changed config on the same --out


@pytest.mark.slow
def test_kill9_resume_matches_uninterrupted(setup, tmp_path):
    """kill -9 the pipeline at a few points; re-running finishes with the records and final model of an
    uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    ref = tmp_path / "ref"
    assert main(micro_args(setup, ref, "--quiet")) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rlscale", *micro_args(setup, out, "--quiet")]
    for delay in (4.0, 7.0, 10.0):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref, out))
    for k in ("rollouts", "iterations", "n_timeline", "collected_solutions", "pool", "val_final"):
        if k == "iterations":
            for x, y in zip(a[k], b[k]):
                assert {q: v for q, v in x.items() if q != "start_model"} == \
                       {q: v for q, v in y.items() if q != "start_model"}
        else:
            assert a[k] == b[k], k
    wa = load_file(str(Path(a["final_model"]) / "model.safetensors"))
    wb = load_file(str(Path(b["final_model"]) / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pad_to_multiple_keeps_grpo_batches_duplicate_free():
    from rlscale.coscale.pipeline import pad_to_multiple
    from rlscale.rl.grpo import problem_indices

    ids = [f"q{i}" for i in range(7)]
    pairs = pad_to_multiple(ids, 3)
    assert len(pairs) == 9 and [s for s, _ in pairs[:7]] == ids and len({t for _, t in pairs}) == 9
    assert pairs[7] == ("q6", "q6~dup1") and pairs[8] == ("q5", "q5~dup1")
    for step in range(20):  # batches of 3 over 9 training ids never repeat a problem within a step
        idx = problem_indices(step, 3, len(pairs), seed=1)
        assert len(set(idx)) == 3
    assert pad_to_multiple(ids, 7) == [(i, i) for i in ids]
