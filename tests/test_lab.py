"""`rlscale lab`: presets, the sweep spec it builds, refusals, and (slow) a micro preset through every stage end to
end via the CLI, the < 30 s re-run, and kill -9 mid-sweep then resume (after moving the lab elsewhere)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.lab.pipeline import (
    PAPER_HARD_BOUNDS,
    PRESETS,
    STAGES,
    LabPreset,
    estimate_seconds,
    get_preset,
    run_lab,
    seed_growth,
    sweep_spec_dict,
)

# Seconds-scale settings: an xs model pretrained on 300k tokens, a 128-problem pool, n in {2, 4}, 3 seeds.
MICRO = {"base": "quick", "name": "micro", "size": "xs", "pretrain_tokens": 300_000, "pool_size": 128,
         "profile_n": 8, "easy_bounds": [0.01, 1.0], "hard_bounds": [0.0, 0.0], "val_size": 8, "train_size": 32,
         "n_grid": [2, 4], "problems_per_batch": 4, "max_rollouts": 96, "val_points": 6, "val_n": 2,
         "val_ks": [1, 2], "seeds": [0, 1, 2], "B_max": 16, "bucket_width": 0.0, "n_bootstrap": 20,
         "checkpoint_every": 2, "max_new_tokens": 48}


def micro_file(tmp_path: Path) -> str:
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(MICRO))
    return str(path)


def test_presets_meet_the_bars():
    for name, p in PRESETS.items():
        p.validate()
        assert max(p.n_grid) / min(p.n_grid) >= 8, name  # n spans >= 8x
        from rlscale.sweep.spec import log_spaced_steps

        for q in (p.for_set("easy"), p.for_set("hard")):
            assert max(q.n_grid) / min(q.n_grid) >= 8, name
            for n in q.n_grid:  # validation points span >= 16x in compute for every n
                steps = log_spaced_steps(q.val_points, q.max_rollouts // (n * q.problems_per_batch))
                assert steps[-1] / steps[0] >= 16, (name, n, steps)
        assert p.easy_bounds == (0.3, 0.6)
        assert p.profile_n == 16 and p.plan_factor == 4.0
    q, f = PRESETS["quick"], PRESETS["full"]
    assert f.max_rollouts > q.max_rollouts and len(f.seeds) > len(q.seeds) and len(f.n_grid) > len(q.n_grid)
    assert len(f.sizes) > len(q.sizes)  # "full uses more budgets, seeds and sizes"
    # quick keeps the study's Hard bounds; full takes the above-chance bucket, validated on 400 x 16
    assert q.hard_bounds == PAPER_HARD_BOUNDS == (0.0, 0.0625) and f.hard_bounds == (0.0625, 0.25)
    assert (f.for_set("hard").val_size, f.for_set("hard").val_n) == (400, 16)


def test_example_preset_files_are_valid():
    """The preset files under examples/lab load and validate; quick_hard is quick with an above-chance Hard set at
    4x the budget, validated on 400 x 16, and quick's Easy half unchanged."""
    files = sorted((Path(__file__).resolve().parents[1] / "examples" / "lab").glob("*.json"))
    assert files
    for f in files:
        get_preset(str(f)).validate()
    qh, q = get_preset(str(files[0].with_name("quick_hard.json"))), PRESETS["quick"]
    assert qh.hard_bounds == (0.0625, 0.25)
    assert qh.for_set("easy") == dataclasses.replace(q.for_set("easy"), name="quick_hard", hard_bounds=qh.hard_bounds)
    h = qh.for_set("hard")
    assert (h.max_rollouts, h.val_size, h.val_n, h.seeds) == (4 * q.max_rollouts, 400, 16, q.seeds)
    # quick_hard_10seeds extends a finished quick_hard lab in place: five more Hard seeds, nothing else
    more = get_preset(str(files[0].with_name("quick_hard_10seeds.json")))
    assert seed_growth(qh.to_dict(), more) == {"s/hard": (5, 6, 7, 8, 9)}


def test_a_preset_file_field_holds_for_every_set(tmp_path):
    """quick's Easy set runs its own seeds; a file on quick that sets seeds sets them for both sets (the micro labs
    of the slow tests rely on it), and one that gives set_overrides keeps its own."""
    (tmp_path / "v.json").write_text(json.dumps({"base": "quick", "seeds": [0, 1, 2], "max_rollouts": 96}))
    p = get_preset(str(tmp_path / "v.json"))
    assert p.for_set("easy").seeds == p.for_set("hard").seeds == (0, 1, 2) and p.set_overrides == {}
    (tmp_path / "w.json").write_text(json.dumps({"base": "quick", "max_rollouts": 96}))
    assert get_preset(str(tmp_path / "w.json")).for_set("easy").seeds == PRESETS["quick"].for_set("easy").seeds
    (tmp_path / "x.json").write_text(json.dumps({"base": "quick", "seeds": [0], "set_overrides": {"easy": {
        "seeds": [4, 5]}}}))
    assert get_preset(str(tmp_path / "x.json")).for_set("easy").seeds == (4, 5)


def test_set_overrides_apply_to_one_set(tmp_path):
    from rlscale.sweep.spec import parse_spec

    p = dataclasses.replace(PRESETS["quick"], set_overrides={"hard": {"val_n": 16, "n_grid": [2, 8], "seeds": [0],
                                                                      "max_rollouts": 1024}}).validate()
    hard, easy = p.for_set("hard"), p.for_set("easy")
    assert (hard.val_n, hard.n_grid, hard.seeds, hard.max_rollouts) == (16, (2, 8), (0,), 1024)
    assert easy == dataclasses.replace(p, set_overrides={}) and hard.set_overrides == {}
    spec = parse_spec(sweep_spec_dict(p, "hard", 50), tmp_path / "specs" / "hard.yaml", check_files=False)
    assert {(r.n, r.seed, r.rollouts) for r in spec.runs} == {(2, 0, 1024), (8, 0, 1024)}
    assert {r.config["val_n"] for r in spec.runs} == {16}
    easy_spec = sweep_spec_dict(p, "easy", 50)
    assert easy_spec["n"] == list(p.n_grid) and easy_spec["train"]["val_n"] == p.val_n
    # the ETA follows the overrides: fewer, shorter Hard runs
    est = estimate_seconds(p, 2)
    assert est["sweep_hard"] < est["sweep_easy"]
    assert p.for_size("xs").set_overrides == p.set_overrides  # a further size studies the same sets


@pytest.mark.parametrize("over,needle", [
    ({"medium": {}}, "set_overrides names set 'medium'"),
    ({"hard": {"lr": 1e-4}}, "set_overrides.hard.lr cannot differ per set"),
    ({"hard": {"val_n": 2}}, "val_ks [1, 4] must be <= val_n=2 (in set_overrides.hard)"),
    ({"hard": {"n_grid": [2]}}, "n_grid needs >= 2 values"),
    ({"hard": [400]}, "set_overrides.hard must be a dict"),
])
def test_set_overrides_validation(over, needle, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"base": "quick", "set_overrides": over}))
    with pytest.raises(UserError) as e:
        get_preset(str(path)).validate()
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fields,needle", [
    ({"max_rollouts": "6144"}, "preset bad: max_rollouts must be an integer, got '6144'"),
    ({"pretrain_tokens": 8e6}, "pretrain_tokens must be an integer or null, got 8000000.0"),
    ({"hard_bounds": [0.1]}, "hard_bounds must be a list of 2 numbers, got [0.1]"),
    ({"set_overrides": {"hard": {"seeds": [1.5]}}}, "seeds must be a list of integers, got [1.5] (in "
                                                    "set_overrides.hard)"),
    ({"seeds": []}, "seeds [] must hold >= 1 distinct training seeds"),
    ({"seeds": [0, 0]}, "seeds [0, 0] must hold >= 1 distinct"),
    ({"n_grid": [2, 0]}, "n_grid [2, 0] must hold distinct rollout counts >= 1"),
    ({"problems_per_batch": 0}, "problems_per_batch must be >= 1, got 0"),
])
def test_a_bad_preset_field_is_one_line(fields, needle, tmp_path):
    """Caught when the preset is read, before any stage runs (seeds [] used to fail only at the Easy sweep)."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"base": "quick", **fields}))
    with pytest.raises(UserError) as e:
        get_preset(str(path)).validate()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["lab", "--out", str(tmp_path / "f")]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err


def test_sweep_spec_from_preset(tmp_path):
    from rlscale.sweep.spec import parse_spec

    p = PRESETS["quick"]
    spec = parse_spec(sweep_spec_dict(p, "easy", 100), tmp_path / "specs" / "easy.yaml", check_files=False)
    seeds = p.for_set("easy").seeds
    assert seeds == tuple(range(8)) and p.for_set("hard").seeds == p.seeds == tuple(range(5))
    assert sorted(r.n for r in spec.runs) == sorted(n for n in p.n_grid for _ in seeds)
    assert {(r.n, r.seed) for r in spec.runs} == {(n, s) for n in p.n_grid for s in seeds}
    for r in spec.runs:
        assert r.problems_per_batch == p.problems_per_batch and r.rollouts == p.max_rollouts
        assert r.config["lr_scaling"] == "sqrt" and r.config["lr"] == p.rl_lr and r.config["val_limit"] == 100
        assert r.config["val_every"] == 0 and r.config["val_steps"][-1] == r.iterations
        assert r.config["val_steps"][-1] / r.config["val_steps"][0] >= 16  # log-spaced, >= 16x in compute
        assert r.config["train_set"].endswith("sets/easy/train.jsonl")


def test_lr_grid_preset_sweeps_every_rate(tmp_path):
    from rlscale.errors import UserError
    from rlscale.sweep.spec import parse_spec

    p = dataclasses.replace(PRESETS["quick"], lr_grid=(3.5e-5, 7e-5, 1.4e-4)).validate()
    d = sweep_spec_dict(p, "easy", 100)
    assert d["lr"] == [3.5e-5, 7e-5, 1.4e-4] and "lr" not in d["train"]
    spec = parse_spec(d, tmp_path / "specs" / "easy.yaml", check_files=False)
    assert {(r.n, r.seed, r.config["lr"]) for r in spec.runs} == {
        (n, s, lr) for n in p.n_grid for s in p.for_set("easy").seeds for lr in p.lr_grid}
    with pytest.raises(UserError, match="lr_grid"):
        dataclasses.replace(p, lr_grid=(7e-5, -1.0)).validate()


def test_preset_file_and_bad_input(tmp_path, capsys):
    p = get_preset(micro_file(tmp_path))
    assert p.name == "micro" and p.n_grid == (2, 4) and p.pool_size == 128 and p.profile_n == 8
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pool_sise": 3}))
    assert main(["lab", "--preset", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown field 'pool_sise'" in capsys.readouterr().err
    assert main(["lab", "--preset", "huge", "--out", str(tmp_path / "o")]) == 2
    assert "unknown lab preset 'huge'" in capsys.readouterr().err
    assert main(["lab", "--workers", "0", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_changed_preset_is_refused(tmp_path):
    from rlscale.errors import UserError
    from rlscale.lab.pipeline import check_lab_dir

    check_lab_dir(PRESETS["quick"], tmp_path)
    with pytest.raises(UserError, match="different preset .max_rollouts"):
        run_lab(LabPreset(max_rollouts=2 * PRESETS["quick"].max_rollouts), tmp_path)


def test_further_sizes_in_a_preset(tmp_path):
    from rlscale.errors import UserError
    from rlscale.lab.pipeline import check_lab_dir, estimate_seconds

    q = PRESETS["quick"]
    p = dataclasses.replace(q, sizes=("xs", "m")).validate()
    sub = p.for_size("xs")
    assert (sub.name, sub.size, sub.sizes) == ("quick-xs", "xs", ())
    assert dataclasses.replace(sub, name=q.name, size=q.size) == q  # nothing else changes
    assert sub.rl_lr == 3e-5 and dataclasses.replace(p, lr=3e-5).for_size("xs").rl_lr == 3e-5
    for bad, match in (((q.size,), "must be distinct and differ"), (("xs", "xs"), "must be distinct"),
                       (("xl",), "unknown size 'xl'")):
        with pytest.raises(UserError, match=match):
            dataclasses.replace(q, sizes=bad).validate()
    # ETA: a further size costs about one lab of that size (xs cheaper than s, m dearer)
    one = sum(v for k, v in estimate_seconds(q, 2).items() if k != "sizes")
    xs, m = (estimate_seconds(dataclasses.replace(q, sizes=(s,)), 2)["sizes"] for s in ("xs", "m"))
    assert estimate_seconds(q, 2)["sizes"] == 0 and 0.5 * one < xs < one < 2 * one < m
    assert estimate_seconds(p, 2)["sizes"] == pytest.approx(xs + m)
    # a lab made before the field existed is still this preset (a missing field counts as its default)
    (tmp_path / "lab.json").write_text(json.dumps({"preset": {k: v for k, v in q.to_dict().items()
                                                              if k != "sizes"}}))
    check_lab_dir(q, tmp_path)
    with pytest.raises(UserError, match="different preset .sizes"):
        check_lab_dir(p, tmp_path)


def test_size_overrides_apply_to_one_size(tmp_path):
    """full runs 12 seeds on s and 4 on xs; a size's field holds for both its sets; a preset file that sets the field
    or drops the size drops the base's override; bad overrides are one-line errors."""
    from rlscale.lab.pipeline import estimate_seconds

    f = PRESETS["full"]
    xs = f.for_size("xs")
    assert f.seeds == tuple(range(12)) and xs.seeds == (0, 1, 2, 3) and xs.size_overrides == {}
    assert dataclasses.replace(xs, name=f.name, size=f.size, sizes=f.sizes, seeds=f.seeds,
                               size_overrides=f.size_overrides) == f  # nothing else changes
    assert xs.for_set("hard").seeds == xs.for_set("easy").seeds == (0, 1, 2, 3)
    assert xs.for_set("hard").val_n == 16  # the set overrides of other fields stay
    # a size's field replaces the sets' overrides of it (quick's Easy set runs its own seeds)
    q = dataclasses.replace(PRESETS["quick"], sizes=("xs",), size_overrides={"xs": {"seeds": [7], "lr": 1e-5}})
    qx = q.validate().for_size("xs")
    assert qx.for_set("easy").seeds == qx.for_set("hard").seeds == (7,) and qx.rl_lr == 1e-5
    assert q.for_set("easy").seeds == tuple(range(8)) and q.rl_lr == 7e-5  # the s lab keeps its own
    # the ETA of the sizes stage follows the size's seeds
    more = dataclasses.replace(f, size_overrides={})
    assert estimate_seconds(f, 2)["sizes"] < 0.5 * estimate_seconds(more, 2)["sizes"]
    # preset files: a field set for every size, a dropped size
    for fields, want in (({"seeds": [0, 1]}, (0, 1)), ({"max_rollouts": 4096}, (0, 1, 2, 3)),
                         ({"size_overrides": {"xs": {"seeds": [5]}}}, (5,))):
        (tmp_path / "v.json").write_text(json.dumps({"base": "full", **fields}))
        assert get_preset(str(tmp_path / "v.json")).validate().for_size("xs").seeds == want, fields
    (tmp_path / "v.json").write_text(json.dumps({"base": "full", "sizes": []}))
    assert get_preset(str(tmp_path / "v.json")).validate().size_overrides == {}
    for over, needle in (({"m": {"seeds": [0]}}, "size_overrides names size 'm'; sizes: xs"),
                         ({"xs": {"pool_size": 9}}, "size_overrides.xs.pool_size cannot differ per size"),
                         ({"xs": {"n_grid": [2]}}, "n_grid needs >= 2 values, got [2] (in size_overrides.xs)"),
                         ({"xs": {"set_overrides": {"mid": {}}}}, "set_overrides names set 'mid'; sets: easy, "
                                                                   "hard (in size_overrides.xs)"),
                         ({"xs": 4}, "size_overrides.xs must be a dict")):
        (tmp_path / "bad.json").write_text(json.dumps({"base": "full", "size_overrides": over}))
        with pytest.raises(UserError) as e:
            get_preset(str(tmp_path / "bad.json")).validate()
        assert needle in str(e.value) and "\n" not in str(e.value), (over, str(e.value))


def test_sizes_stage_runs_each_size_lab_and_sums_its_compute(tmp_path, monkeypatch):
    from rlscale.lab import pipeline

    calls = []

    def fake_run_lab(preset, out, progress, workers, label):
        calls.append((preset.name, preset.size, Path(out), label))
        log = pipeline.StageLog(Path(out))
        if not log.data:  # the first call "runs" every stage, a second finds them done
            for st in STAGES:
                log.set(st, status="done", rollouts=10, tokens=100, flops=1e3)
            Path(out, "report.html").write_text("r")
        return log.data

    monkeypatch.setattr(pipeline, "run_lab", fake_run_lab)
    p = dataclasses.replace(PRESETS["quick"], sizes=("xs", "m"))
    info = pipeline.stage_sizes(p, tmp_path, workers=2, progress=False)
    assert calls == [("quick-xs", "xs", tmp_path / "sizes" / "xs", "lab xs"),
                     ("quick-m", "m", tmp_path / "sizes" / "m", "lab m")]
    n = len(STAGES)
    assert info == {"rollouts": 20.0 * n, "tokens": 200.0 * n, "flops": 2e3 * n, "val_rollouts": 0.0, "runs": 2,
                    "skipped_runs": 0}
    assert pipeline.outputs_exist("sizes", tmp_path, p)
    assert pipeline.stage_sizes(p, tmp_path, workers=2, progress=False)["skipped_runs"] == 2
    assert not pipeline.outputs_exist("sizes", tmp_path, dataclasses.replace(p, sizes=("xs", "l")))


def fake_lab(root: Path, preset: LabPreset, profiled: bool = True) -> Path:
    """A lab directory with a 'pretrained model' and a profile, as far as --reuse looks."""
    from rlscale.lab.pipeline import StageLog, check_lab_dir

    root.mkdir(parents=True)
    check_lab_dir(preset, root)
    (root / "model").mkdir()
    (root / "model" / "rlscale_model.json").write_text('{"size": "s"}')
    (root / "model" / "weights.bin").write_bytes(b"w" * 64)
    log = StageLog(root)
    log.set("pretrain", status="done", wall_s=150.0, tokens=8_000_000, flops=5e12)
    if profiled:
        (root / "profile.parquet").write_bytes(b"parquet")
        log.set("profile", status="done", wall_s=30.0, rollouts=80_000, tokens=4e6, flops=1e12)
    return root


def test_a_preset_that_adds_seeds_extends_the_lab(tmp_path, capsys):
    """More seeds for any set or size (and nothing else changed) extend a lab in place: lab.json takes the new
    preset and the sweep and sizes stages run again (resuming: finished runs are kept); anything else is refused."""
    from rlscale.errors import UserError
    from rlscale.lab.pipeline import StageLog, adds_only_seeds, check_lab_dir, get_preset, seed_growth

    def _write(path, fields):
        path.write_text(json.dumps(fields))
        return path

    full = PRESETS["full"]
    old = full.to_dict()
    assert adds_only_seeds(old, dataclasses.replace(full, seeds=tuple(range(18))))
    # a preset file's top-level seeds hold for every size too: xs gains 14, which the progress line states
    added = seed_growth(old, get_preset(str(_write(tmp_path / "f18.json", {"base": "full", "name": "full",
                                                                           "seeds": list(range(18))}))))
    assert added == {"s/easy": tuple(range(12, 18)), "s/hard": tuple(range(12, 18)),
                     "xs/easy": tuple(range(4, 18)), "xs/hard": tuple(range(4, 18))}
    keep_xs = {"base": "full", "name": "full", "seeds": list(range(18)), "size_overrides": {"xs": {"seeds": [0, 1, 2, 3]}}}
    assert seed_growth(old, get_preset(str(_write(tmp_path / "k.json", keep_xs)))) == {
        "s/easy": tuple(range(12, 18)), "s/hard": tuple(range(12, 18))}
    assert adds_only_seeds(old, dataclasses.replace(full, size_overrides={"xs": {"seeds": tuple(range(6))}}))
    assert not adds_only_seeds(old, full)  # nothing added
    assert not adds_only_seeds(old, dataclasses.replace(full, seeds=(0, 1)))  # seeds dropped
    assert not adds_only_seeds(old, dataclasses.replace(full, seeds=tuple(range(18)), max_rollouts=100))
    assert not adds_only_seeds(old, dataclasses.replace(full, seeds=tuple(range(18)), sizes=()))
    quick = PRESETS["quick"]
    assert adds_only_seeds(quick.to_dict(), dataclasses.replace(quick, set_overrides={"easy": {"seeds": tuple(
        range(10))}}))
    assert not adds_only_seeds(quick.to_dict(), dataclasses.replace(quick, set_overrides={"easy": {
        "seeds": tuple(range(10)), "val_n": 4}}))
    lab = fake_lab(tmp_path / "lab", quick)
    log = StageLog(lab)
    for stage in ("curate", "sweep_easy", "sweep_hard", "export", "fit", "plan", "sizes", "report"):
        log.set(stage, status="done", wall_s=10.0)
    more = dataclasses.replace(quick, seeds=tuple(range(7)))
    check_lab_dir(more, lab, progress=True)
    assert "[lab] adding seeds (the finished runs are kept): s/hard +2 (5, 6)" in capsys.readouterr().err
    stages = StageLog(lab).data
    assert sorted(s for s, r in stages.items() if r["status"] == "extending") == ["sizes", "sweep_easy", "sweep_hard"]
    assert json.loads((lab / "lab.json").read_text())["preset"]["seeds"] == list(range(7))
    with pytest.raises(UserError, match="different preset"):
        check_lab_dir(quick, lab)  # back to fewer seeds
    with pytest.raises(UserError, match="holds the lab 'quick'; to add seeds to it, give the preset its name"):
        check_lab_dir(dataclasses.replace(more, name="more", seeds=tuple(range(9))), lab)  # a file's own name


def test_reuse_of_a_given_models_profile(tmp_path):
    """A lab of a given model (`model`) shares its profile with a variant of the same model and pool; nothing is
    copied for the model, and another model or pool is refused or re-profiled."""
    from rlscale.lab.pipeline import StageLog, check_lab_dir, reusable_stages, reuse_stages

    g = dataclasses.replace(PRESETS["quick"], model="/models/m", task="gsm8k", data_path="/d/train.jsonl")
    base = tmp_path / "base"
    base.mkdir()
    check_lab_dir(g, base)
    (base / "profile.parquet").write_bytes(b"parquet")
    log = StageLog(base)
    log.set("pretrain", status="done", wall_s=3.0, model="/models/m")
    log.set("profile", status="done", wall_s=900.0, rollouts=80_000)
    variant = dataclasses.replace(g, name="v", easy_bounds=(0.2, 0.7), size="xs", pretrain_tokens=1)
    assert reusable_stages(variant, base, tmp_path / "v") == ["pretrain", "profile"]  # pretraining fields ignored
    assert reusable_stages(dataclasses.replace(g, data_path="/d/other.jsonl"), base, tmp_path / "v") == ["pretrain"]
    with pytest.raises(UserError, match="model = '/models/m', this preset has '/models/n'"):
        reusable_stages(dataclasses.replace(g, model="/models/n"), base, tmp_path / "v")
    with pytest.raises(UserError, match="model = '/models/m', this preset has None"):
        reusable_stages(PRESETS["quick"], base, tmp_path / "v")
    out = tmp_path / "v"
    out.mkdir()
    reuse_stages(base, out, ["pretrain", "profile"])
    assert not (out / "model").exists() and (out / "profile.parquet").read_bytes() == b"parquet"
    assert StageLog(out).get("profile")["reused_wall_s"] == 900.0


def test_reuse_takes_the_model_and_profile_a_variant_shares(tmp_path, capsys):
    from rlscale.errors import UserError
    from rlscale.lab.pipeline import StageLog, reusable_stages, reuse_stages

    q = PRESETS["quick"]
    base = fake_lab(tmp_path / "base", q)
    variant = dataclasses.replace(q, name="v", max_rollouts=6144, easy_bounds=(0.5, 0.85))
    assert reusable_stages(variant, base, tmp_path / "v") == ["pretrain", "profile"]
    assert reusable_stages(dataclasses.replace(q, profile_n=8), base, tmp_path / "v") == ["pretrain"]
    assert reusable_stages(variant, fake_lab(tmp_path / "b2", q, profiled=False), tmp_path / "v") == ["pretrain"]
    with pytest.raises(UserError, match="pretrained with pretrain_seed = 0, this preset has 1"):
        reusable_stages(dataclasses.replace(q, pretrain_seed=1), base, tmp_path / "v")
    with pytest.raises(UserError, match="not a lab directory"):
        reusable_stages(variant, tmp_path, tmp_path / "v")
    out = tmp_path / "v"
    out.mkdir()
    reuse_stages(base, out, ["pretrain", "profile"])
    assert (out / "model" / "weights.bin").read_bytes() == b"w" * 64 and (out / "profile.parquet").exists()
    rec = StageLog(out).get("pretrain")
    assert rec["status"] == "done" and rec["wall_s"] == 0.0 and rec["reused_wall_s"] == 150.0
    assert rec["tokens"] == 8_000_000 and rec["reused_from"] == str(base.resolve())
    from rlscale.lab.pipeline import reused_note

    assert reused_note(rec) == f"reused from {base.resolve()} (2m30s when it ran there)"  # not this lab's 0 s
    assert reused_note({"status": "done", "wall_s": 75.0}) == "reused (1m15s when it ran)"
    with pytest.raises(UserError, match="already has a model"):
        reusable_stages(variant, base, out)
    # the CLI: a preset whose pretraining differs is refused in one line and writes nothing
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base": "quick", "pretrain_tokens": 4_000_000}))
    assert main(["lab", "--preset", str(bad), "--reuse", str(base), "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "pretrain_tokens = 8000000, this preset has 4000000" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # ~1 min on a quiet 2-core machine (13 training processes), several minutes when contended
def test_micro_lab_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "lab"
    preset = micro_file(tmp_path)
    assert main(["lab", "--preset", preset, "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed
    headline = (out / "summary.txt").read_text().split("\n\n")[0]
    assert headline.startswith("In short: Easy: ") and f"\n{headline}\n" in printed  # the verdicts, in the terminal
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == set(STAGES) and all(s["status"] == "done" for s in stages.values())
    assert stages["profile"]["rollouts"] == 128 * 8 and stages["sweep_easy"]["rollouts"] == 3 * 2 * 96
    assert stages["pretrain"]["tokens"] >= 300_000 and stages["sweep_hard"]["flops"] > 0
    import pandas as pd

    prof = pd.read_parquet(out / "profile.parquet")
    assert len(prof) == 128 and set(prof["n"]) == {8}
    assert (prof["correct_valid_chain"] <= prof["correct"]).all() and (prof["correct_valid_chain"] >= 0).all()
    manifest = json.loads((out / "sets" / "manifest.json").read_text())
    assert all("valid_chain_frac" in manifest["sets"][s] for s in ("easy", "hard"))
    for name in ("easy", "hard"):
        train = [json.loads(x)["id"] for x in (out / "sets" / name / "train.jsonl").read_text().splitlines()]
        val = [json.loads(x)["id"] for x in (out / "sets" / name / "val.jsonl").read_text().splitlines()]
        assert train and val and not set(train) & set(val) and len(train) % 4 == 0
        runs = list((out / "sweeps" / name / "runs").iterdir())
        assert len(runs) == 6 and all((r / "summary.json").exists() for r in runs)
        table = pd.read_parquet(out / "sweeps" / name / "table.parquet")
        last = table[table["step"] == table.groupby("run_id")["step"].transform("max")]
        assert last["val/avg_reseed"].notna().all() and table["val/avg_sampling_stderr"].notna().all()
        fit = json.loads((out / "fits" / name / "fit.json").read_text())
        assert fit["law"] == "isocompute" and ("params" in fit or "error" in fit)
    plan = json.loads((out / "plan.json").read_text())
    assert all(plan[s]["budget_rollouts"] == 4 * 96 for s in ("easy", "hard"))
    html = (out / "report.html").read_text()
    assert "Compute per stage" in html and "Difficulty profile" in html and html.count("Validation budget") == 2
    # re-running a finished lab reuses everything
    t0 = time.monotonic()
    assert main(["lab", "--preset", preset, "--out", str(out), "--json"]) == 0
    assert time.monotonic() - t0 < 30
    cap = capsys.readouterr()
    assert json.loads(cap.out)["headline"] == headline
    err = cap.err
    assert err.count("reused") == len(STAGES)
    # the same lab with more seeds: only the new seeds' runs train; export, fit, plan and report follow
    summaries = {p: p.stat().st_mtime_ns for p in out.glob("sweeps/*/runs/*/summary.json")}
    fit_before = (out / "fits" / "easy" / "fit.json").read_text()
    (tmp_path / "more.json").write_text(json.dumps({**MICRO, "seeds": [0, 1, 2, 3]}))
    assert main(["lab", "--preset", str(tmp_path / "more.json"), "--out", str(out), "--quiet"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in summaries.items())  # the finished runs are kept as they were
    more = json.loads((out / "stages.json").read_text())
    assert all(s["status"] == "done" for s in more.values())
    for name in ("easy", "hard"):
        assert len(list((out / "sweeps" / name / "runs").glob("*/summary.json"))) == 8
        assert more[f"sweep_{name}"]["rollouts"] == 4 * 2 * 96
        assert more[f"sweep_{name}"]["wall_s"] > stages[f"sweep_{name}"]["wall_s"]  # both sessions' time
        assert sorted(pd.read_parquet(out / "sweeps" / name / "table.parquet")["seed"].unique()) == [0, 1, 2, 3]
    assert (out / "fits" / "easy" / "fit.json").read_text() != fit_before
    assert json.loads((out / "lab.json").read_text())["preset"]["seeds"] == [0, 1, 2, 3]
    assert main(["lab", "--preset", preset, "--out", str(out)]) == 2  # fewer seeds again: refused
    assert "different preset (seeds" in capsys.readouterr().err
    # a variant of the curation and sweeps starts from this lab's model and profile
    var = tmp_path / "variant.json"
    var.write_text(json.dumps({**MICRO, "name": "micro_v", "curate_seed": 1}))
    assert main(["lab", "--preset", str(var), "--out", str(tmp_path / "v"), "--reuse", str(out)]) == 0
    assert f"reusing pretrain, profile from {out}" in capsys.readouterr().err
    sv = json.loads((tmp_path / "v" / "stages.json").read_text())
    assert sv["pretrain"]["reused_from"] == str(out) and sv["profile"]["wall_s"] == 0.0
    assert all(sv[s]["status"] == "done" and "reused_from" not in sv[s] for s in STAGES[2:])
    for f in (out / "model").iterdir():
        assert (tmp_path / "v" / "model" / f.name).read_bytes() == f.read_bytes()
    # the same study on the lab model exported as a Hugging Face Llama (`--model`): the HF engine samples the same
    # distribution (logits equal to 1e-5, tests/test_export_hf.py), so its profile agrees within sampling noise
    hf = tmp_path / "hf"
    assert main(["export-hf", "--model", str(out / "model"), "--out", str(hf)]) == 0
    (tmp_path / "hf.json").write_text(json.dumps({**MICRO, "name": "micro_hf", "lr": 3e-5}))
    assert main(["lab", "--preset", str(tmp_path / "hf.json"), "--model", str(hf), "--out", str(tmp_path / "h"),
                 "--quiet"]) == 0
    sh = json.loads((tmp_path / "h" / "stages.json").read_text())
    assert all(s["status"] == "done" for s in sh.values()) and sh["pretrain"]["model"] == str(hf)
    assert sh["sweep_easy"]["rollouts"] == 3 * 2 * 96 and sh["sweep_easy"]["flops"] > 0
    hprof = pd.read_parquet(tmp_path / "h" / "profile.parquet")
    assert list(hprof["problem_id"]) == list(prof["problem_id"]) and "correct_valid_chain" in hprof
    pbar = (prof["avg"].to_numpy() + hprof["avg"].to_numpy()) / 2  # two samplings of the same 128 problems x 8
    se = (2 * (pbar * (1 - pbar) / 8).sum()) ** 0.5 / len(pbar)
    # the micro model solves ~2% of its samples (0 in 1,024 samples would be p < 1e-10 for a working engine)
    assert hprof["correct"].sum() > 0 and abs(hprof["avg"].mean() - prof["avg"].mean()) < 4 * se, (
        hprof["avg"].mean(), prof["avg"].mean(), se)
    assert "Base model" in (tmp_path / "h" / "report.html").read_text()


@pytest.mark.slow  # ~2 min: two micro labs (xs and s)
def test_micro_lab_with_a_further_size(tmp_path, capsys):
    out = tmp_path / "lab"
    preset = tmp_path / "sizes.json"
    preset.write_text(json.dumps({**MICRO, "name": "micro2", "sizes": ["s"]}))
    assert main(["lab", "--preset", str(preset), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "[lab s 1/" in err and "[lab 9/" in err
    sub = out / "sizes" / "s"
    lab = json.loads((sub / "lab.json").read_text())["preset"]
    assert lab["size"] == "s" and lab["sizes"] == [] and lab["name"] == "micro2-s"
    sub_stages = json.loads((sub / "stages.json").read_text())
    assert all(sub_stages[st]["status"] == "done" for st in STAGES)
    assert json.loads((sub / "model" / "rlscale_model.json").read_text())["size"] == "s"
    rec = json.loads((out / "stages.json").read_text())["sizes"]
    assert rec["rollouts"] == sum(v["rollouts"] for v in sub_stages.values()) > 0 and rec["runs"] == 1
    html = (out / "report.html").read_text()
    assert "Across model sizes" in html and (sub / "report.html").exists()
    assert main(["lab", "--preset", str(preset), "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("reused") == len(STAGES)


@pytest.mark.slow  # ~1-3 min: a lab subprocess is killed with SIGKILL mid-sweep, then resumed
def test_kill9_mid_sweep_resumes(tmp_path):
    out = tmp_path / "lab"
    preset = micro_file(tmp_path)
    cmd = [sys.executable, "-m", "rlscale", "lab", "--preset", preset, "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:  # wait until some run of the Easy sweep has logged a step
            dbs = list((out / "sweeps" / "easy" / "runs").glob("*/run.db")) if (out / "sweeps").exists() else []
            if any((d.parent / "checkpoints").exists() for d in dbs):
                break
            assert proc.poll() is None, "the lab finished or failed before it could be killed"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stages = json.loads((out / "stages.json").read_text())
    assert stages["sweep_easy"]["status"] == "running"
    from rlscale.store import RunStore

    def first_steps(lab):  # the first step of each run with a checkpoint, timings included: equal only if kept
        stores = [r for r in (lab / "sweeps" / "easy" / "runs").iterdir() if list(r.glob("checkpoints/step_*"))]
        return {json.dumps(RunStore.open(r).steps()[:1], sort_keys=True) for r in stores}

    before = first_steps(out)
    moved = tmp_path / "elsewhere" / "lab2"  # the lab is moved before it resumes: its runs are carried over
    moved.parent.mkdir()
    os.replace(out, moved)
    assert main(["lab", "--preset", preset, "--out", str(moved), "--quiet"]) == 0
    stages = json.loads((moved / "stages.json").read_text())
    assert all(s["status"] == "done" for s in stages.values())
    runs = list((moved / "sweeps" / "easy" / "runs").iterdir())
    assert len(runs) == 6 and all((r / "summary.json").exists() for r in runs)
    assert before and "[]" not in before and before <= first_steps(moved)


def test_profile_counts_correct_samples_with_a_right_chain():
    from rlscale.engine.base import Rollout
    from rlscale.evals.difficulty import profile_table
    from rlscale.evals.evaluate import EvalResult, _grade_groups
    from rlscale.lab.pipeline import add_chain_counts
    from rlscale.tasks.base import Problem

    probs = [Problem("p0", "a=7,b=a*3,c=b+5;c?", "26"), Problem("p1", "a=4,b=a-3;b?", "1")]
    texts = [["b=a*3=7*3=21;c=b+5=21+5=26;####26",  # right chain
              "b=a*3=7*3=22;c=b+5=22+5=26;####26",  # lucky hit: rewarded, wrong chain
              "b=a*3=3*7=21;c=b+5=5+21=26;answer: 26",  # right chain, operands swapped, alternate format
              "b=a*3=7*3=21;c=b+5=21+5=27;####27"],  # wrong
             ["b=a-3=4-3=1;####1", "b=a-3=4-3=2;####2"]]
    groups = [[Rollout(i, j, [], [], t, [], True) for j, t in enumerate(g)] for i, g in enumerate(texts)]
    records = _grade_groups(probs, groups, ("flexible",), keep_text=True)
    add_chain_counts(probs, records, "flexible")
    assert [r["chain_valid"] for r in records] == [2, 1] and all("completions" not in r for r in records)
    df = profile_table(EvalResult(records=records, modes=("flexible",), ks=(1,)), probs, "flexible")
    assert df["correct"].tolist() == [3, 1] and df["correct_valid_chain"].tolist() == [2, 1]
    del records[1]["chain_valid"]  # a part written before the count: the column is left out, not half filled
    df = profile_table(EvalResult(records=records, modes=("flexible",), ks=(1,)), probs, "flexible")
    assert "correct_valid_chain" not in df.columns


def test_eta_estimates_match_a_measured_quick_lab():
    """The first ETA comes from estimate_seconds before any stage ran: it should be the right size. The quick lab of
    stop 29 (Zen 3 EPYC, 2 workers, the README's first command; Easy with 8 seeds) took pretrain 133 s, profile
    31 s, sweeps 288 s + 254 s; the estimates must be within 2x of each (the 1-thread guesses they replaced were 3x
    too long)."""
    from rlscale.lab.pipeline import estimate_seconds

    est = estimate_seconds(PRESETS["quick"], workers=2)
    measured = {"pretrain": 133.0, "profile": 31.0, "sweep_easy": 288.0, "sweep_hard": 254.0}
    for stage, wall_s in measured.items():
        assert wall_s / 2 <= est[stage] <= wall_s * 2, (stage, est[stage], wall_s)
    one_worker = estimate_seconds(PRESETS["quick"], workers=1)
    assert one_worker["sweep_easy"] > 1.8 * est["sweep_easy"] and one_worker["pretrain"] > 1.8 * est["pretrain"]


def test_curate_holds_out_each_sets_val_size(tmp_path):
    """set_overrides.hard.val_size holds out that many Hard problems while Easy keeps the preset's val_size."""
    import pandas as pd

    from rlscale.io import write_table
    from rlscale.lab.pipeline import stage_curate

    avg = [c / 16 for c in range(17)] * 20  # 20 problems at every pass rate c/16
    df = pd.DataFrame({"problem_id": [f"p{i}" for i in range(len(avg))], "avg": avg, "n": 16,
                       "correct": [round(a * 16) for a in avg], "question": "q", "answer": "1"})
    write_table(df, tmp_path / "profile.parquet")
    p = dataclasses.replace(PRESETS["quick"], hard_bounds=(0.0625, 0.25), val_size=10, train_size=16,
                            set_overrides={"hard": {"val_size": 30}})
    sets = stage_curate(p, tmp_path)["sets"]
    assert (sets["easy"]["val"], sets["hard"]["val"]) == (10, 30)
    assert sets["hard"]["bucket_size"] == 80 and sets["hard"]["avg_min"] == 0.0625 and sets["hard"]["avg_max"] == 0.25
    assert len((tmp_path / "sets" / "hard" / "val.jsonl").read_text().splitlines()) == 30


# ------------------------------------------------------------------------------------------------ a given base model
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_a_given_model_and_task_in_the_preset(tmp_path):
    """`model` / `task` / `data_path` / `template`: validation, the RL rate, and the sweep spec they build."""
    from rlscale.rl.grpo import HF_RL_LR

    sys.path.insert(0, str(Path(__file__).parent))
    from hf_fixtures import make_tiny_hf_model

    hf = make_tiny_hf_model(tmp_path / "hf")
    q = PRESETS["quick"]
    p = dataclasses.replace(q, model=hf, task="gsm8k", data_path="pool.jsonl", template="gsm8k").validate()
    assert p.rl_lr == HF_RL_LR and dataclasses.replace(p, lr=3e-6).rl_lr == 3e-6
    assert p.model_dir(tmp_path) == Path(hf) and q.model_dir(tmp_path) == tmp_path / "model"
    assert p.with_absolute_paths().data_path == str(Path("pool.jsonl").resolve())
    spec = sweep_spec_dict(p, "easy", 10)
    assert (spec["model"], spec["task"], spec["train"]["template"], spec["train"]["lr"]) == (hf, "gsm8k", "gsm8k",
                                                                                          HF_RL_LR)
    assert sweep_spec_dict(q, "easy", 10)["model"] == "../model" and "template" not in sweep_spec_dict(q, "easy", 10)
    assert estimate_seconds(p, 2)["pretrain"] < 10 < estimate_seconds(q, 2)["pretrain"]
    for fields, needle in (({"task": "gsm8k"}, "task 'gsm8k' needs a base model (`--model DIR`"),
                           ({"model": hf, "sizes": ("xs",)}, "with a given model (--model) set sizes to []"),
                           ({"model": hf, "task": "chess"}, "task: unknown task 'chess'"),
                           ({"grading_mode": "fuzzy"}, "grading_mode:")):
        with pytest.raises(UserError) as e:
            dataclasses.replace(q, **fields).validate()
        assert needle in str(e.value) and "\n" not in str(e.value), (fields, str(e.value))


def test_lab_cli_model_and_task_flags(tmp_path):
    import argparse

    from rlscale.commands.lab import add_arguments, preset_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    p = preset_from_args(parser.parse_args(["--task", "math", "--model", "m", "--data-path", "d.jsonl"]))
    assert (p.task, p.grading_mode, p.model, p.data_path, p.name) == ("math", "math", "m", "d.jsonl", "quick")
    assert preset_from_args(parser.parse_args(["--task", "math", "--grading-mode", "boxed"])).grading_mode == "boxed"
    assert preset_from_args(parser.parse_args(["--preset", "full"])) == PRESETS["full"]


def test_lab_cli_refuses_a_model_that_is_not_one(tmp_path, capsys):
    assert main(["lab", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a directory" in err[0] and str(tmp_path / "nope") in err[0]


GSM_MICRO = {"base": "quick", "name": "gsm_micro", "pool_size": 12, "profile_n": 2, "max_new_tokens": 6,
             "easy_bounds": [0.0, 1.0], "hard_bounds": [0.0, 1.0], "val_size": 2, "train_size": 8, "n_grid": [2, 4],
             "problems_per_batch": 2, "max_rollouts": 16, "val_points": 2, "val_n": 2, "val_ks": [1, 2],
             "seeds": [0], "set_overrides": {}, "B_max": 8, "bucket_width": 0.0, "n_bootstrap": 10,
             "checkpoint_every": 2}


@pytest.mark.skipif(not (DATA / "gsm8k" / "train.jsonl").exists(), reason="shared data not present")
def test_a_hugging_face_model_on_gsm8k_through_every_stage(tmp_path, capsys, monkeypatch):
    """`rlscale lab --model HF --task gsm8k --data-path FILE --device cpu`: the same stages on a Hugging Face model
    and a real data set (a random tiny Llama solves nothing, so both sets take every problem here: [0, 1])."""
    monkeypatch.setenv("RLSCALE_DEVICE", "auto")  # undone after the test: --device exports it
    sys.path.insert(0, str(Path(__file__).parent))
    from hf_fixtures import make_tiny_hf_model

    hf = make_tiny_hf_model(tmp_path / "hf", max_positions=1024)
    (tmp_path / "g.json").write_text(json.dumps(GSM_MICRO))
    out = tmp_path / "lab"
    args = ["lab", "--preset", str(tmp_path / "g.json"), "--model", hf, "--task", "gsm8k", "--data-path",
            str(DATA / "gsm8k" / "train.jsonl"), "--out", str(out), "--workers", "2", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    stages = json.loads((out / "stages.json").read_text())
    assert all(s["status"] == "done" for s in stages.values()) and not (out / "model").exists()
    assert stages["pretrain"]["model"] == hf and stages["pretrain"]["num_params"] > 0
    assert stages["pretrain"]["device"] == "cpu"
    assert stages["profile"]["rollouts"] == 12 * 2 and stages["sweep_easy"]["rollouts"] == 2 * 16
    lab = json.loads((out / "lab.json").read_text())["preset"]
    assert (lab["model"], lab["task"], lab["rl_lr"]) == (hf, "gsm8k", 1e-6)
    import pandas as pd

    prof = pd.read_parquet(out / "profile.parquet")
    assert list(prof["problem_id"])[:2] == ["gsm8k/train/0", "gsm8k/train/1"] and "correct_valid_chain" not in prof
    first = json.loads((out / "sets" / "easy" / "train.jsonl").read_text().splitlines()[0])
    assert first["id"].startswith("gsm8k/train/")
    for name in ("easy", "hard"):
        runs = sorted((out / "sweeps" / name / "runs").iterdir())
        assert len(runs) == 2
        cfg = json.loads((runs[0] / "config.json").read_text())["config"]
        assert (cfg["model"], cfg["task"], cfg["lr"], cfg["micro_batch_size"]) == (hf, "gsm8k", 1e-6, 8)
        assert json.loads((runs[0] / "summary.json").read_text())["numerics"]["c_compiler"] is None  # no C kernels
    html = (out / "report.html").read_text()
    assert "Base model" in html and f"a given model ({hf}), not pretrained here" in html
    assert '<tr><td class="l">device</td><td>cpu</td></tr>' in html  # the Base model table
    # the same command resumes (everything reused); another model on the same OUT is refused, named
    assert main(args) == 0
    other = make_tiny_hf_model(tmp_path / "hf2", seed=1, max_positions=1024)
    assert main([*args[:4], other, *args[5:]]) == 2
    assert "different preset (model:" in capsys.readouterr().err
