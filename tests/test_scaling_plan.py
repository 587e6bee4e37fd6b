"""Planner arithmetic, warnings, TRL/verl emission, and the `fit` / `plan` CLI end to end on a synthetic sweep.
Run: .venv/bin/python -m pytest tests/test_scaling_plan.py -q"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_scaling_isocompute import family, sweep_table

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.scaling.plan import emit_trl, emit_verl, largest_pow2_at_most, nearest_in_log2, plan, sqrt_lr


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    df = sweep_table(0, family())
    df["lr"] = 1e-3
    df["problems_per_batch"] = 8
    table = d / "sweep.csv"
    df.to_csv(table, index=False)
    out = d / "out"
    assert main(["fit", str(table), "--law", "isocompute", "--bootstrap", "30", "--out", str(out)]) == 0
    return table, out, json.loads((out / "fit.json").read_text())


def test_helpers():
    assert largest_pow2_at_most(1) == 1 and largest_pow2_at_most(31.9) == 16 and largest_pow2_at_most(32) == 32
    assert nearest_in_log2(5.9, [2, 4, 8, 16]) == 8 and nearest_in_log2(5.5, [2, 4, 8]) == 4
    assert sqrt_lr(1e-3, 256, 1024) == pytest.approx(2e-3)


def test_fit_json_contents(fitted):
    _, out, fit = fitted
    assert fit["law"] == "isocompute"
    assert set(fit["params"]) == {"R0", "A", "C_mid", "B"} and set(fit["ci"]) == set(fit["params"])
    assert 0 < fit["r2"] <= 1 and fit["rmse"] > 0 and fit["n_points"] > 0
    assert fit["anchor"] == [1e-3, 32 * 8]  # best point: n=32 run
    assert len(fit["transitions"]) == 4 and fit["frontier"]
    assert (out / "reward_vs_compute.png").stat().st_size > 5000
    assert (out / "n_star.png").stat().st_size > 5000


def test_plan_arithmetic(fitted):
    _, _, fit = fitted
    p = plan(fit, 2e5, B_max=256, num_problems=100)
    assert p.n == 32  # n*(2e5) is the largest n in this family
    assert p.problems_per_batch == 8  # largest power of two with 32 * B <= 256
    assert p.iterations == int(2e5 // 256)
    assert p.lr == pytest.approx(1e-3)  # same batch as the anchor
    lo, hi = p.ci
    assert lo <= p.predicted_reward <= hi
    assert p.warnings == []
    small = plan(fit, 2000, B_max=64)
    assert small.n == 2 and small.problems_per_batch == 32 and small.lr == pytest.approx(1e-3 * math.sqrt(64 / 256))


def test_plan_warnings(fitted):
    _, _, fit = fitted
    p = plan(fit, 1e7, B_max=1024)
    assert any("extrapolation" in w for w in p.warnings)
    p = plan(fit, 3000, B_max=64, num_problems=10_000)
    assert any("below one epoch" in w for w in p.warnings)
    with pytest.raises(UserError, match="less than one step"):
        plan(fit, 10, B_max=1024)


def test_emit(fitted):
    _, _, fit = fitted
    p = plan(fit, 2e5, B_max=256)
    trl = emit_trl(p)
    assert "num_generations=32" in trl and "generation_batch_size=256" in trl and f"max_steps={p.iterations}" in trl
    # the emitted arguments are valid for the installed TRL's GRPOConfig (field names and batch divisibility)
    pytest.importorskip("trl")
    import dataclasses

    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    args = dict(line.strip().rstrip(",").split("=", 1) for line in trl.splitlines()[1:-1])
    assert set(args) <= fields
    assert int(args["generation_batch_size"]) % int(args["num_generations"]) == 0
    verl = emit_verl(p)
    assert "actor_rollout_ref.rollout.n=32" in verl and "data.train_batch_size=8" in verl
    assert f"trainer.total_training_steps={p.iterations}" in verl and "actor_rollout_ref.actor.optim.lr=" in verl


def test_plan_cli(fitted, capsys):
    _, out, _ = fitted
    assert main(["plan", "--fit", str(out), "--budget", "2e5", "--B-max", "256", "--json", "--emit", "verl"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n"] == 32 and d["problems_per_batch"] == 8 and "rollout.n=32" in d["verl"]
    assert main(["plan", "--fit", str(out), "--budget", "1e7", "--emit", "trl"]) == 0
    text = capsys.readouterr().out
    assert "extrapolation" in text and "GRPOConfig(" in text


def test_other_law_cli(tmp_path):
    import pandas as pd

    from rlscale.scaling.laws import loglinear_kn

    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(1e6, 1e8, 5), 10)
    X = np.tile(np.geomspace(1e2, 1e6, 10), 5)
    df = pd.DataFrame({"compute/flops": X, "N": N,
                       "loss": loglinear_kn(X, N, 0.3, 5e6, 1.0, -0.05) * np.exp(rng.normal(0, 0.01, 50))})
    table = tmp_path / "t.parquet"
    df.to_parquet(table)
    out = tmp_path / "o"
    assert main(["fit", str(table), "--law", "loglinear-kn", "--bootstrap", "20", "--out", str(out)]) == 0
    fit = json.loads((out / "fit.json").read_text())
    assert fit["params"]["K_max"] == pytest.approx(0.3, rel=0.05)
    assert set(fit["ci"]) == {"K_max", "N0", "e0", "e1"} and fit["r2"] > 0.99
    assert (out / "fit.png").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df.drop(columns="val/avg"), "no column 'val/avg'"),
    (lambda df: df.assign(**{"val/avg": np.where(df["step"] == 3, np.nan, df["val/avg"])}), "'val/avg': 10 NaN"),
    (lambda df: df.assign(**{"compute/rollouts": df["compute/rollouts"] - 60}), "'compute/rollouts': 10 non-positive"),
])
def test_fit_cli_bad_input(tmp_path, capsys, mutate, message):
    df = mutate(sweep_table(0, family()))
    table = tmp_path / "t.csv"
    df.to_csv(table, index=False)
    rc = main(["fit", str(table), "--law", "isocompute", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_step0_zero_compute_points_are_dropped(tmp_path):
    df = sweep_table(0, family())
    df = df.assign(**{"compute/rollouts": np.where(df["step"] == 0, 0.0, df["compute/rollouts"])})
    table = tmp_path / "t.csv"
    df.to_csv(table, index=False)
    assert main(["fit", str(table), "--law", "isocompute", "--bootstrap", "0", "--no-plots",
                 "--out", str(tmp_path / "o")]) == 0
    # ... from the fit, but each run's measured gain is counted from its before-training (step-0) value
    fit = json.loads((tmp_path / "o" / "fit.json").read_text())
    for n, g in df.sort_values("compute/rollouts", kind="stable").groupby("n"):
        per_run = g.groupby("run_id")["val/avg"].agg(lambda v: v.iloc[-1] - v.iloc[0])
        assert sorted(fit["per_n"][str(n)]["measured_gains"]) == pytest.approx(sorted(per_run))


def test_fit_cli_too_few_points(tmp_path, capsys):
    import pandas as pd

    pd.DataFrame({"compute/rollouts": [1, 2, 3, 4], "val/avg": [0.1, 0.2, 0.3, 0.4]}).to_csv(tmp_path / "t.csv")
    rc = main(["fit", str(tmp_path / "t.csv"), "--law", "sigmoid", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs at least 5 points, got 4" in err


def test_plan_cli_bad_input(tmp_path, capsys, fitted):
    assert main(["plan", "--fit", str(tmp_path), "--budget", "1e5"]) == 2
    assert "no fit.json" in capsys.readouterr().err
    _, out, _ = fitted
    assert main(["plan", "--fit", str(out), "--budget", "-5"]) == 2
    assert "--budget must be > 0" in capsys.readouterr().err
    assert main(["plan", "--fit", str(out), "--budget", "1e5", "--B-max", "1"]) == 2
    assert "smaller than every fitted n" in capsys.readouterr().err


def test_plan_fixed_problems_per_batch(fitted):
    from rlscale.scaling.isocompute import n_star_from_fit

    _, _, fit = fitted
    ns = sorted(int(k) for k in fit["per_n"])
    # brute force: every fitted n with n * P <= B_max, the nearest to n*(C) in log2 (ties -> smaller), M = C // (n P)
    for C in (2000.0, 2e4, 2e5):
        n_cont = float(n_star_from_fit(C, fit["params"]))
        for P, B_max in ((8, 1024), (12, 256), (3, 16), (32, 64), (100, 256)):
            allowed = [m for m in ns if m * P <= B_max]
            best = min(allowed, key=lambda m: (abs(math.log2(m) - math.log2(n_cont)), m))
            p = plan(fit, C, B_max=B_max, problems_per_batch=P)
            assert (p.n, p.problems_per_batch, p.iterations) == (best, P, int(C // (best * P))), (C, P, B_max)
            assert p.lr == pytest.approx(1e-3 * math.sqrt(best * P / 256))  # sqrt scaling from the fit's anchor
            free = min(ns, key=lambda m: (abs(math.log2(m) - math.log2(n_cont)), m))
            assert any("exceeds B_max" in w for w in p.warnings) == (free != best)
    # a value the default would choose gives the default's plan
    assert plan(fit, 2e5, B_max=256, problems_per_batch=8) == plan(fit, 2e5, B_max=256)
    # B_problem need not be a power of two and is not capped by B_max / n*(C): n gives way instead
    p = plan(fit, 2e5, B_max=256, num_problems=100, problems_per_batch=12)
    assert (p.n, p.problems_per_batch, p.iterations) == (16, 12, int(2e5 // 192))
    assert plan(fit, 2e5, B_max=256, num_problems=100).problems_per_batch == 8  # unchanged without the argument
    with pytest.raises(UserError, match="exceeds --problems 10"):
        plan(fit, 2e5, B_max=1024, num_problems=10, problems_per_batch=16)
    with pytest.raises(UserError, match="less than one step"):
        plan(fit, 100, B_max=1024, problems_per_batch=64)


def test_plan_cli_problems_per_batch(fitted, capsys):
    _, out, _ = fitted
    assert main(["plan", "--fit", str(out), "--budget", "2e5", "--B-max", "256", "--problems-per-batch", "12",
                 "--json", "--emit", "verl"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["n"], d["problems_per_batch"], d["iterations"], d["rollouts_per_step"]) == (16, 12, 1041, 192)
    assert "data.train_batch_size=12" in d["verl"] and any("exceeds B_max" in w for w in d["warnings"])
    # no fitted n fits: the smallest fitted n is 2, so 2 * 200 > 256
    assert main(["plan", "--fit", str(out), "--budget", "2e5", "--B-max", "256", "--problems-per-batch", "200"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--problems-per-batch 200: no fitted n (2, 4, 8, 16, 32) has n * 200 <= --B-max 256" in err
    assert "lower --problems-per-batch to at most 128 or raise --B-max to at least 400" in err
    assert main(["plan", "--fit", str(out), "--budget", "2e5", "--problems-per-batch", "0"]) == 2
    assert "--problems-per-batch must be >= 1, got 0" in capsys.readouterr().err
