"""Sweep specs: grid expansion for the three designs, stable run ids, plan output, bad input -> exit 2."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.sweep.plan import Costs, format_plan, num_validations, plan_rows
from rlscale.sweep.spec import allocations, config_hash, load_spec, val_every_steps


def write_spec(tmp_path: Path, body: str, name: str = "s.toml") -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(body)
    return path


BASE = 'model = "model"\ntask = "arith"\nseeds = [0]\n'


def brute_force(n_grid, bp_grid, b_grid, b_max, budgets):
    """Reference: enumerate all (n, bp, M) with M = C // (n bp) over powers of two up to 2^12."""
    pows = [2**i for i in range(13)]
    out = set()
    for c in budgets:
        for n, bp in itertools.product(pows, pows):
            ok_pair = n in n_grid and (bp in bp_grid if not b_grid else (n * bp in b_grid and (not bp_grid or bp in bp_grid)))
            if ok_pair and n * bp <= b_max and c // (n * bp) >= 1:
                out.add((n, bp, c // (n * bp), c))
    return out


@pytest.mark.parametrize("grid,expected_runs", [
    ('n = [2, 4, 8, 16]\nproblems_per_batch = [8]\n', 4),           # fixed B_problem: n against M
    ('n = [2, 4, 8, 16]\nB = [64]\n', 4),                           # fixed B: B_problem against n
    ('n = [2, 4, 8, 16]\nproblems_per_batch = [8, 16, 32]\n', 11),  # joint; n=16 x 32 = 512 > B_max
])
def test_three_designs(tmp_path, grid, expected_runs):
    spec = load_spec(write_spec(tmp_path, BASE + grid + "B_max = 256\nbudgets_rollouts = [1024, 4096]\n"))
    assert len(spec.runs) == 2 * expected_runs
    for r in spec.runs:
        assert r.n * r.problems_per_batch * r.iterations == r.budget  # C = n * B_problem * M exactly
        assert r.n * r.problems_per_batch <= 256
        assert r.config["rollouts_per_problem"] == r.n and r.config["iterations"] == r.iterations
    got = {(r.n, r.problems_per_batch, r.iterations, r.budget) for r in spec.runs}
    assert got == brute_force(spec.n, spec.problems_per_batch, spec.B, 256, spec.budgets)
    if "B = [64]" in grid:
        assert {r.B for r in spec.runs} == {64}


def test_allocations_reference():
    for b_max in (16, 64, 100, 1024):
        pairs = allocations((2, 4, 8), (1, 4, 16), (), b_max)
        assert pairs == sorted((n, bp) for n in (2, 4, 8) for bp in (1, 4, 16) if n * bp <= b_max)
    assert allocations((2, 4, 8, 16), (), (32,), 1000) == [(2, 16), (4, 8), (8, 4), (16, 2)]
    assert allocations((2, 4, 8, 16), (4, 8), (32,), 1000) == [(4, 8), (8, 4)]


def test_budget_not_divisible_and_too_small_for_some(tmp_path):
    spec = load_spec(write_spec(tmp_path, BASE + 'n = [2, 16]\nproblems_per_batch = [32]\nB_max = 4096\n'
                                                 'budgets_rollouts = [100]\n'))
    # n=16 x 32 = 512 > 100 cannot take a step at this budget: dropped; n=2: M = floor(100 / 64) = 1
    assert [(r.n, r.iterations, r.rollouts) for r in spec.runs] == [(2, 1, 64)]


def test_seeds_and_val_every_rollouts(tmp_path):
    spec = load_spec(write_spec(tmp_path, BASE.replace("[0]", "[0, 1, 2]") + 'n = [2, 8]\nproblems_per_batch = [16]\n'
                                'B_max = 512\nmax_rollouts = 2048\nval_every_rollouts = 256\n'))
    assert len(spec.runs) == 6 and {r.seed for r in spec.runs} == {0, 1, 2}
    for r in spec.runs:  # validation at the same compute points: every 256 rollouts
        assert r.config["val_every"] * r.B == 256
    assert val_every_steps(None, 256, 512) == 1 and val_every_steps(5, None, 64) == 5


def test_run_ids_stable_and_sensitive(tmp_path):
    body = BASE + 'n = [2, 4]\nproblems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [512]\n[train]\nlr = 1e-4\n'
    ids1 = [r.run_id for r in load_spec(write_spec(tmp_path, body)).runs]
    ids2 = [r.run_id for r in load_spec(write_spec(tmp_path, body)).runs]
    assert ids1 == ids2 and len(set(ids1)) == 2
    ids3 = [r.run_id for r in load_spec(write_spec(tmp_path, body.replace("1e-4", "2e-4"))).runs]
    assert not set(ids1) & set(ids3)
    # the id is the hash of the resolved config, independent of key order
    run = load_spec(write_spec(tmp_path, body)).runs[0]
    assert run.run_id == config_hash(dict(reversed(list(run.config.items()))))


def test_lr_grid_multiplies_the_runs_and_keeps_other_specs_ids(tmp_path):
    body = BASE + 'n = [2, 4]\nproblems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [512]\n'
    plain = load_spec(write_spec(tmp_path, body))
    grid = load_spec(write_spec(tmp_path, body + 'lr = [1.4e-4, 3.5e-5, 7e-5, 7e-5]\n'))
    assert grid.lr == (3.5e-5, 7e-5, 1.4e-4) and len(grid.runs) == 3 * len(plain.runs)
    assert {(r.n, r.config["lr"]) for r in grid.runs} == {(n, lr) for n in (2, 4) for lr in grid.lr}
    assert len({r.run_id for r in grid.runs}) == len(grid.runs)
    assert "lr" not in plain.runs[0].config and "lr" not in plain.resolved()  # no grid: ids as before
    fixed = load_spec(write_spec(tmp_path, body + '[train]\nlr = 7e-5\n'))
    same = [r for r in grid.runs if r.config["lr"] == 7e-5]
    assert [r.run_id for r in same] == [r.run_id for r in fixed.runs]  # a grid point = that rate in [train]
    table = format_plan(plan_rows(grid, Costs(), train_size=100)).splitlines()
    assert table[0].split()[8] == "lr" and {line.split()[8] for line in table[2:2 + len(grid.runs)]} == {
        "3.5e-05", "7e-05", "0.00014"}
    assert " lr " not in format_plan(plan_rows(plain, Costs(), train_size=100)).splitlines()[0]


def test_yaml_equals_toml(tmp_path):
    toml = load_spec(write_spec(tmp_path, BASE + 'n = [2, 4]\nproblems_per_batch = [8]\nB_max = 64\n'
                                                 'budgets_rollouts = [512]\n'))
    yaml = load_spec(write_spec(tmp_path, 'model: model\ntask: arith\nseeds: [0]\nn: [2, 4]\n'
                                          'problems_per_batch: [8]\nB_max: 64\nbudgets_rollouts: [512]\n', "s.yaml"))
    assert [r.run_id for r in toml.runs] == [r.run_id for r in yaml.runs]


def test_env_var_model_path(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("LABDIR", str(tmp_path / "elsewhere"))
    spec = load_spec(write_spec(tmp_path, 'model = "${LABDIR}"\ntask = "arith"\nn = [2]\nproblems_per_batch = [8]\n'
                                          'B_max = 64\nbudgets_rollouts = [64]\n'))
    assert spec.model == str(tmp_path / "elsewhere")
    spec = load_spec(write_spec(tmp_path, 'model = "${NOPE_UNSET_X:-model}"\ntask = "arith"\nn = [2]\n'
                                          'problems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [64]\n'))
    assert spec.model == str(tmp_path / "model")


GOOD = 'n = [2, 4]\nproblems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [512]\n'


@pytest.mark.parametrize("body,needle", [
    (BASE + 'n = []\nproblems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [512]\n', "empty"),
    (BASE + 'n = [4]\nB = [2]\nB_max = 64\nbudgets_rollouts = [512]\n', "empty grid"),
    (BASE + 'n = [4, 8]\nproblems_per_batch = [8]\nB_max = 16\nbudgets_rollouts = [512]\n', "B_max = 16"),
    (BASE + 'n = [4]\nproblems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [16]\n', "smaller than one step"),
    (BASE + GOOD + 'bogus = 1\n', "unknown key 'bogus'"),
    (BASE + GOOD + '[resources]\ntpus = 1\n', "resources.tpus"),
    (BASE + GOOD + '[train]\niterations = 3\n', "train.iterations"),
    (BASE + 'n = [3]\nproblems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [512]\n', "powers of two"),
    (BASE + 'n = [1]\nproblems_per_batch = [8]\nB_max = 64\nbudgets_rollouts = [512]\n', "'n'"),
    (BASE.replace('"model"', '"missing_model"') + GOOD, "'model'"),
    (BASE + 'train_set = "nope.jsonl"\n' + GOOD, "'train_set'"),
    (BASE + 'n = [2]\nproblems_per_batch = [8]\nB_max = 64\n', "budgets_rollouts"),
    (BASE + 'n = [2]\nproblems_per_batch = [8]\nB_max = 64\nmax_rollouts = 64\nbudgets_rollouts = [64]\n', "either"),
    ('model = "model"\ntask = "arith"\nn = [2]\nproblems_per_batch = [8]\nbudgets_rollouts = [64]\n', "B_max"),
    ('model = "model"\n' + GOOD, "'task'"),
    (BASE + GOOD + "[[[", "invalid TOML"),
    (BASE + GOOD + '[train]\nval_n = 2\nval_ks = [4]\n', "val_ks"),
    (BASE + GOOD + '[train]\nadvantage = "nope"\n', "advantage"),
    (BASE + GOOD + '[train]\nbogus_field = 1\n', "train.bogus_field"),
    (BASE + GOOD + 'lr = [1e-4, -1e-5]\n', "'lr' must hold positive numbers"),
    (BASE + GOOD + 'lr = []\n', "'lr' is an empty list"),
    (BASE + GOOD + 'lr = [1e-4]\n[train]\nlr = 1e-4\n', "either as the grid 'lr' or as 'train.lr'"),
])
def test_bad_input_exit_2(tmp_path, capsys, body, needle):
    path = write_spec(tmp_path, body)
    with pytest.raises(UserError, match=needle.replace("[", r"\[")):
        load_spec(path)
    assert main(["sweep", "plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rlscale sweep: error:")
    out = tmp_path / "never"
    assert main(["sweep", "run", str(path), "--out", str(out)]) == 2
    assert not out.exists()  # nothing started


def test_plan_output(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"id": str(i), "question": "q", "answer": "1"}) + "\n"
                                                  for i in range(100)))
    path = write_spec(tmp_path, BASE + 'train_set = "train.jsonl"\nn = [2, 4, 8, 16]\nproblems_per_batch = [8, 16, 32]\n'
                                       'B_max = 512\nbudgets_rollouts = [4096]\n')
    assert main(["sweep", "plan", str(path), "--sec-per-rollout", "0.001", "--sec-per-val", "0", "--startup-s", "0",
                 "--workers", "2"]) == 0
    out = capsys.readouterr().out
    spec = load_spec(path)
    assert len(spec.runs) == 12
    for r in spec.runs:
        assert r.run_id in out
    assert "12 runs, 49152 rollouts" in out
    assert "25s with 2 worker(s)" in out  # 49152 * 1 ms / 2 workers = 24.6 s
    rows = {r.run_id: r for r in plan_rows(spec, Costs(0.001, 2.0, 10.0))}
    r = next(r for r in spec.runs if r.n == 2 and r.problems_per_batch == 8)
    assert rows[r.run_id].iterations == 256 and rows[r.run_id].epochs == pytest.approx(4096 / 2 / 100)
    assert rows[r.run_id].est_wall_s == pytest.approx(10.0 + 4.096 + 2 * 2.0)  # no val_every: before + after
    assert "20.48" in format_plan(list(rows.values()))


def test_num_validations():
    for m in range(1, 30):
        for ve in (None, 0, 1, 3, 7, 50):
            ref = len({0, m} | ({s for s in range(1, m + 1) if s % ve == 0} if ve else set()))
            assert num_validations(m, ve) == ref


def test_log_spaced_validation_points(tmp_path):
    from rlscale.sweep.spec import log_spaced_steps

    spec = load_spec(write_spec(tmp_path, BASE + 'n = [2, 16]\nproblems_per_batch = [8]\nB_max = 256\n'
                                'max_rollouts = 8192\nval_log_points = 9\n'))
    for r in spec.runs:
        steps = r.config["val_steps"]
        assert r.config["val_every"] == 0 and steps[-1] == r.iterations and steps == sorted(set(steps))
        # evenly spaced in log compute: consecutive ratios are close to (M)^(1/8) once rounding no longer merges
        ratios = [b / a for a, b in zip(steps, steps[1:]) if a >= 8]
        assert all(abs(x - r.iterations ** (1 / 8)) < 0.35 for x in ratios)
    # the run with M = 512 (n = 2) spans 512x in compute with 9 points: 1, 2, 5, 11, 23, 45, 91, 181, 362?, 512
    assert log_spaced_steps(9, 512) == (1, 2, 5, 11, 23, 45, 91, 181, 362, 512)[:0] or len(log_spaced_steps(9, 512)) == 9
    assert log_spaced_steps(5, 1) == (1,) and log_spaced_steps(0, 10) == ()
    # brute-force reference for the count of validation points
    assert num_validations(512, 0, log_spaced_steps(9, 512)) == 1 + len(log_spaced_steps(9, 512))


def test_val_cadence_keys_are_exclusive(tmp_path, capsys):
    path = write_spec(tmp_path, BASE + 'n = [2]\nproblems_per_batch = [8]\nB_max = 256\nmax_rollouts = 512\n'
                      'val_every = 2\nval_log_points = 4\n')
    assert main(["sweep", "plan", str(path)]) == 2
    assert "val_log_points" in capsys.readouterr().err
