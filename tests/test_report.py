"""`rlscale report`: built from a synthetic lab store (run stores written with the store API, then the lab's own
export / fit / plan stages), the statement about n*(C) follows the data, and every number follows the store."""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pytest

from rlscale.cli import main
from rlscale.lab.pipeline import LabPreset, stage_export, stage_fit, stage_plan
from rlscale.scaling.laws import sigmoid_law
from rlscale.store import RunStore

# Easy family: n*(C) rises 2 -> 8 over the range. Hard family: n = 2 dominates everywhere (n* flat at 2).
FAMILIES = {
    "easy": {2: (0.2, 0.45, 800.0, 1.5), 4: (0.2, 0.55, 2000.0, 1.5), 8: (0.2, 0.65, 5000.0, 1.5)},
    "hard": {2: (0.02, 0.12, 1500.0, 1.5), 4: (0.02, 0.09, 3000.0, 1.5), 8: (0.02, 0.07, 6000.0, 1.5)},
}
BP, BUDGET, VAL_EVERY_ROLLOUTS, SEEDS = 8, 16384, 1024, (0, 1)
PRESET = LabPreset(name="synthetic", size="xs", pretrain_tokens=1, n_grid=(2, 4, 8), problems_per_batch=BP,
                   max_rollouts=BUDGET, val_points=16, B_max=64, n_bootstrap=60)


def write_run(rundir, n: int, seed: int, params, rng) -> None:
    M = BUDGET // (n * BP)
    cfg = {"model": "synthetic", "task": "arith", "rollouts_per_problem": n, "problems_per_batch": BP,
           "iterations": M, "seed": seed, "val_n": 4, "val_limit": 50, "lr": 1e-4}
    with RunStore.create(rundir, cfg) as store:
        every = max(1, VAL_EVERY_ROLLOUTS // (n * BP))
        for step in range(0, M + 1):
            C = step * n * BP
            if step:
                r = float(np.clip(sigmoid_law(C, *params) + rng.normal(0, 0.02), 0, 1))
                passes = [(f"p{(step * BP + i) % 40}", n, int(rng.binomial(n, r))) for i in range(BP)]
                store.log_step(step, {"compute/rollouts": float(C), "compute/tokens_generated": 20.0 * C,
                                      "compute/tokens_prompt": 15.0 * C, "compute/flops": 1e6 * C,
                                      "rollout/reward_mean": r, "train/entropy": 0.5 - 0.1 * step / M,
                                      "rollout/frac_all_wrong": (1 - r) ** n, "rollout/frac_all_right": r ** n,
                                      "epochs": step * BP / 300}, passes)
            if step % every == 0 or step == M:
                v = float(sigmoid_law(max(C, 1), *params) + rng.normal(0, 0.003))
                store.log_eval(step, {"val/avg": v, "val/pass@1": v, "val/pass@4": min(1.0, 1.6 * v),
                                      "val/worst@4": v ** 3, "epochs": step * BP / 300,
                                      "compute/rollouts": float(C)})
        store.write_summary({"val_after": v, "rollouts": float(M * n * BP)})


def write_sweep(sweepdir, family, rng, seeds=SEEDS) -> None:
    runs = {}
    for n, params in family.items():
        for seed in seeds:
            rid = f"r{n}s{seed}"
            write_run(sweepdir / "runs" / rid, n, seed, params, rng)
            runs[rid] = {"n": n, "problems_per_batch": BP, "iterations": BUDGET // (n * BP), "budget": BUDGET,
                         "seed": seed, "train": {"lr": 1e-4}, "status": "done"}
    spec = {"name": sweepdir.name, "n": sorted(family), "problems_per_batch": [BP], "budgets_rollouts": [BUDGET],
            "train": {"lr": 1e-4}}
    (sweepdir / "sweep.json").write_text(json.dumps({"runs": runs, "spec": spec, "identity": {}}))


@pytest.fixture(scope="module")
def labdir(tmp_path_factory):
    import pandas as pd

    root = tmp_path_factory.mktemp("lab")
    rng = np.random.default_rng(0)
    (root / "lab.json").write_text(json.dumps({"preset": PRESET.to_dict()}))
    avg = np.clip(rng.beta(0.6, 1.2, 300), 0, 1)
    correct = np.round(avg * 16).astype(int)
    valid = rng.binomial(correct, np.clip(avg + 0.1, 0, 1))  # chains right more often on easier problems
    pd.DataFrame({"problem_id": [f"p{i}" for i in range(300)], "n": 16, "correct": correct,
                  "avg": correct / 16, "correct_valid_chain": valid,
                  "answer": np.random.default_rng(1).integers(0, 60, 300).astype(str)}).to_parquet(root / "profile.parquet")
    (root / "sets").mkdir()
    (root / "sets" / "manifest.json").write_text(json.dumps(
        {"sets": {"easy": {"train": 300, "val": 50}, "hard": {"train": 300, "val": 50}}}))
    for name, fam in FAMILIES.items():
        write_sweep(root / "sweeps" / name, fam, rng)
    stages = {"pretrain": {"status": "done", "wall_s": 12.5, "rollouts": 0, "tokens": 123456, "flops": 7.5e11}}
    stage_export(root)
    stage_fit(PRESET, root)
    stage_plan(PRESET, root)
    stages["sweep_easy"] = {"status": "done", "wall_s": 99.0, "rollouts": 98304.0, "tokens": 3.4e6, "flops": 9.8e10}
    (root / "stages.json").write_text(json.dumps(stages))
    return root


def build(labdir) -> str:
    assert main(["report", str(labdir)]) == 0
    return (labdir / "report.html").read_text()


def test_report_sections_and_statement(labdir):
    html = build(labdir)
    for title in ("What the data shows", "Run configuration", "Difficulty profile", "Easy set: reward vs compute",
                  "Hard set: reward vs compute", "best@k and worst@k", "training diagnostics", "Compute per stage",
                  "Planner"):
        assert title in html, title
    assert html.count("<img") == 13  # profile + per set: curves, n*, gaps, best/worst, diagnostics, pass histogram
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    summary = html.split("Run configuration")[0]
    easy = re.search(r"Easy: over the compute range where every n has data.*?</p>", summary).group(0)
    hard = re.search(r"Hard: over the compute range where every n has data.*?</p>", summary).group(0)
    assert "n* = 2 to n* = 8" in easy and "rises with C at the 95% level" in easy
    assert "In short: Easy: n*(C) rises (frontier argmax)" in summary
    assert "stays at n* = 2" in hard
    assert "the Hard set saturates at a smaller n than the Easy set" in summary
    assert "123456" in html and "7.5e+11" in html  # compute table from stages.json


def test_summary_text_is_the_reports_summary(labdir, capsys):
    """`rlscale report` writes the report's "What the data shows" as plain text (summary.txt) and prints its first
    paragraph, the verdicts; every paragraph of it is a paragraph of the page's summary section."""
    import html as html_mod

    page = build(labdir)
    printed = capsys.readouterr().out
    paras = (labdir / "summary.txt").read_text().strip().split("\n\n")
    assert paras[0].startswith("In short: Easy: n*(C) rises (frontier argmax)") and paras[0] in printed
    section = html_mod.unescape(page.split("<h2>What the data shows</h2>")[1].split("</section>")[0])
    assert len(paras) == section.count("<p") >= 4
    assert all(p in " ".join(section.split()) for p in paras)


def test_headline_points_to_an_above_chance_bucket_when_the_studys_gains_nothing(labdir, tmp_path, capsys):
    """A lab on the study's Hard bucket whose Hard set gained nothing: the printed verdicts say where the presets
    take a Hard set instead; with a Hard set that gained (the fixture's), they do not."""
    import shutil

    from rlscale.report import hard_bucket_pointer

    build(labdir)
    assert "quick_hard.json" not in (labdir / "summary.txt").read_text()
    root = tmp_path / "lab"
    shutil.copytree(labdir, root)
    path = root / "fits" / "hard" / "fit.json"
    fit = json.loads(path.read_text())
    rng = np.random.default_rng(0)
    for d in fit["per_n"].values():  # flat curves, as in test_no_gain_set_has_no_n_star_verdict
        d["params"]["A"] = d["params"]["R0"]
        d["bootstrap_samples"] = [[s[0], s[0] + rng.normal(0, 0.01), s[2], s[3]] for s in d["bootstrap_samples"]]
    path.write_text(json.dumps(fit))
    assert main(["report", str(root)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "Hard: RL raised no validation reward at any n" in line and line.endswith(
        "the full preset and examples/lab/quick_hard.json take one above it, hard_bounds [0.0625, 0.25].")
    assert hard_bucket_pointer((0.0625, 0.25), {"verdict": "no-gain"}) == ""  # already above the study's bucket


def test_evidence_matches_brute_force_frontier(labdir):
    from rlscale.report import n_star_evidence

    fit = json.loads((labdir / "fits" / "easy" / "fit.json").read_text())
    ev = n_star_evidence(fit)
    lo, hi = fit["x_range"]
    lo = max(lo, max(v["C_first"] for v in fit["per_n"].values()))  # the range where every n has data
    best = {C: max(fit["per_n"], key=lambda n: sigmoid_law(C, **fit["per_n"][n]["params"])) for C in (lo, hi)}
    assert (ev["n_lo"], ev["n_hi"]) == (float(best[lo]), float(best[hi]))
    assert ev["n_bootstrap"] == 60 and ev["rise_frac"] >= 0.95 and ev["verdict"] == "rises"


def test_report_changes_when_store_changes(labdir):
    before = build(labdir)
    # 1) a validation metric in one run's store
    db = labdir / "sweeps" / "easy" / "runs" / "r4s0" / "run.db"
    con = sqlite3.connect(db)
    step, metrics = con.execute("SELECT step, metrics FROM evals ORDER BY step DESC LIMIT 1").fetchone()
    m = json.loads(metrics)
    m["val/worst@4"] = 0.123456
    con.execute("UPDATE evals SET metrics = ? WHERE step = ?", (json.dumps(m), step))
    con.commit()
    con.close()
    # 2) a fit parameter in fit.json
    path = labdir / "fits" / "hard" / "fit.json"
    fit = json.loads(path.read_text())
    fit["per_n"]["2"]["params"]["A"] = 0.777777
    path.write_text(json.dumps(fit))
    # 3) the plan's prescription
    plan = json.loads((labdir / "plan.json").read_text())
    plan["easy"]["plan"]["iterations"] = 424242
    (labdir / "plan.json").write_text(json.dumps(plan))
    after = build(labdir)
    for text in ("0.1235", "0.7778", "424242"):
        assert text not in before and text in after, text


def test_reward_precision_per_bucket_is_read_from_the_profile(labdir):
    import pandas as pd

    df = pd.read_parquet(labdir / "profile.parquet")
    expect = []
    for name, (lo, hi) in (("Easy", PRESET.easy_bounds), ("Hard", PRESET.hard_bounds)):
        sub = df[(df["avg"] >= lo) & (df["avg"] <= hi)]
        expect.append(f"{name} bucket {100 * sub['correct_valid_chain'].sum() / sub['correct'].sum():.0f}% of "
                      f"{sub['correct'].sum()}")
    html = build(labdir)
    summary = html.split("Run configuration")[0]
    assert "Reward precision" in summary and all(e in summary for e in expect), expect
    from rlscale.report import precision_sentence

    assert precision_sentence(df.drop(columns="correct_valid_chain"), {"easy": (0.3, 0.6)}) == ""
    assert precision_sentence(df[df["correct"] == 0], {"hard": (0.0, 0.0)}) == ""  # no correct sample: no figure


def test_chance_rates_brute_force():
    from rlscale.evals.difficulty import chance_rates

    answers = ["4", "4", "4", "7", "7", "9", " 4"]  # the gold strings as stored; whitespace is not an answer
    got = chance_rates(answers)
    assert got["constant"] == pytest.approx(4 / 7) and got["answers"] == 3
    # a guess drawn from the same distribution, independently of the question: brute force over all pairs
    assert got["guess"] == pytest.approx(sum(a.strip() == b.strip() for a in answers for b in answers) / 49)
    assert chance_rates([]) is None


def test_chance_baselines_per_bucket_are_read_from_the_profile(labdir):
    import pandas as pd

    from rlscale.evals.difficulty import chance_rates
    from rlscale.report import chance_sentence

    df = pd.read_parquet(labdir / "profile.parquet")
    hard = df[(df["avg"] >= PRESET.hard_bounds[0]) & (df["avg"] <= PRESET.hard_bounds[1])]
    rates = chance_rates(hard["answer"])
    expect = (f"Hard bucket mean pass rate {hard['avg'].mean():.3f} against {rates['constant']:.3f} for the best "
              f"constant answer and {rates['guess']:.3f}")
    summary = build(labdir).split("Run configuration")[0]
    assert "Chance baselines" in summary and expect in summary, expect
    assert chance_sentence(df.drop(columns="answer"), {"hard": PRESET.hard_bounds}) == ""


def test_a_lab_with_other_hard_bounds_states_the_studys_hard_bucket(labdir, tmp_path):
    """When the Hard set is not the study's [0, 1/16] (the full preset's above-chance set), the summary still gives
    that bucket's chance figures from the profile, next to the Hard set's own."""
    import html
    import shutil

    import pandas as pd

    from rlscale.evals.difficulty import chance_rates

    root = tmp_path / "lab"
    shutil.copytree(labdir, root)
    lab = json.loads((root / "lab.json").read_text())
    lab["preset"]["hard_bounds"] = [0.0625, 0.25]
    (root / "lab.json").write_text(json.dumps(lab))
    df = pd.read_parquet(root / "profile.parquet")
    summary = html.unescape(build(root).split("Run configuration")[0])
    for name, (lo, hi) in (("Hard", (0.0625, 0.25)), ("Study's hard", (0.0, 0.0625))):
        sub = df[(df["avg"] >= lo) & (df["avg"] <= hi)]
        rates = chance_rates(sub["answer"])
        expect = f"{name} bucket mean pass rate {sub['avg'].mean():.3f} against {rates['constant']:.3f}"
        assert expect in summary, expect
    assert "This lab's Hard set is the avg@16 bucket [0.0625, 0.25], not the study's [0, 0.0625]" in summary
    assert "Study's hard" not in html.unescape(build(labdir))  # a lab on the study's bounds names its Hard bucket once


def test_report_on_plain_sweep_dir(labdir, capsys):
    sweepdir = labdir / "sweeps" / "easy"
    assert main(["report", str(sweepdir)]) == 0
    html = (sweepdir / "report.html").read_text()
    assert "Sweep configuration" in html and "computed by the report" in html and html.count("<img") >= 4
    assert "Difficulty profile" not in html


def test_report_bad_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a lab directory" in capsys.readouterr().err


def test_evidence_without_bootstrap_says_so(labdir):
    from rlscale.report import evidence_sentence, n_star_evidence

    fit = json.loads((labdir / "fits" / "easy" / "fit.json").read_text())
    for d in fit["per_n"].values():
        d["bootstrap_samples"] = []
    fit["ci"] = {}
    ev = n_star_evidence(fit)
    assert ev["n_bootstrap"] == 0 and ev["verdict"] == "rises (point estimate, no bootstrap)"
    text = evidence_sentence("Easy", ev)
    assert "no bootstrap samples stored: no confidence interval" in text and "point estimate" in text
    assert "reaches the largest n swept (8)" in text  # n* = 8 = max n: saturation not resolved by the grid


def test_no_gain_set_has_no_n_star_verdict(labdir):
    """A set where no n moved the reward: the gain's CI reaches 0, so the verdict is no-gain, not a noise-picked n*."""
    from rlscale.report import compare_saturation, evidence_sentence, n_star_evidence

    fit = json.loads((labdir / "fits" / "hard" / "fit.json").read_text())
    ev0 = n_star_evidence(fit)
    assert ev0["verdict"] != "no-gain" and ev0["gain_ci"][0] > 0
    rng = np.random.default_rng(0)
    for d in fit["per_n"].values():  # flat curves: A = R0 (+- noise in the resamples, both signs)
        d["params"]["A"] = d["params"]["R0"]
        d["bootstrap_samples"] = [[s[0], s[0] + rng.normal(0, 0.01), s[2], s[3]] for s in d["bootstrap_samples"]]
    ev = n_star_evidence(fit)
    assert ev["verdict"] == "no-gain" and ev["gain_ci"][0] <= 0 < ev["gain_ci"][1] and abs(ev["gain"]) < 1e-9
    text = evidence_sentence("Hard", ev)
    assert "RL did not raise the validation reward at any n" in text and "no compute-optimal n" in text
    assert "saturates" not in text and "plateaus" not in text
    which = "the measured one, which counts from the before-training evaluation rather than from C_min, includes 0"
    assert which not in text  # here the fitted gain's interval reaches 0 too
    # the quick lab's Hard set: the fitted gain from C_min is above 0, the measured one from step 0 is not
    quick = {**ev, "gain": 0.016, "gain_ci": [0.005, 0.027], "measured_gain": 0.006,
             "measured_gain_ci": [-0.004, 0.021]}
    assert which in evidence_sentence("Hard", quick)
    assert "RL raised no validation reward on the Hard set" in compare_saturation(ev0, ev)
    from rlscale.report import headline

    line = headline({"easy": ev0, "hard": ev})
    assert line.startswith(f"In short: Easy: n*(C) {ev0['verdict']} (frontier argmax), ")
    assert f"at C_max = {ev0['C_hi']:.3g}" in line
    assert line.endswith("Hard: RL raised no validation reward at any n, so there is no compute-optimal n to place.")




def test_measured_gain_overrules_a_rising_envelope(labdir):
    """Flat noisy curves: the record-breaking envelope still rises (fitted gain > 0), but the runs' own last-minus-
    first changes straddle 0, so the verdict is no-gain (the guard against the running maximum of noise)."""
    from rlscale.report import evidence_sentence, n_star_evidence

    fit = json.loads((labdir / "fits" / "easy" / "fit.json").read_text())
    ev0 = n_star_evidence(fit)
    assert ev0["gain_ci"][0] > 0 and ev0["measured_gain_ci"][0] > 0 and ev0["verdict"] != "no-gain"
    for n, d in fit["per_n"].items():  # the stored gains are the runs' last - first validation values
        assert len(d["measured_gains"]) == len(SEEDS) and all(g > 0.05 for g in d["measured_gains"])
        assert ev0["measured_gain_by_n"][float(n)] == pytest.approx(np.mean(d["measured_gains"]))
    for d in fit["per_n"].values():
        d["measured_gains"] = [0.004, -0.003, 0.006, -0.005]
    ev = n_star_evidence(fit)
    assert ev["gain_ci"][0] > 0 and ev["measured_gain_ci"][0] <= 0 < ev["measured_gain_ci"][1]
    assert ev["verdict"] == "no-gain" and ev["measured_gain"] == pytest.approx(0.0005)
    text = evidence_sentence("Easy", ev)
    assert "largest measured gain, last minus first validation averaged over runs, +0.001" in text
    assert "no compute-optimal n" in text


def test_measured_gains_brute_force():
    import pandas as pd

    from rlscale.scaling.isocompute import measured_gains

    df = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 2,
                       "n": [2, 2, 2, 2, 2, 2, 4, 4],
                       "compute/rollouts": [100.0, 0.0, 50.0, 0.0, 50.0, 100.0, 0.0, 64.0],
                       "val/avg": [0.5, 0.2, 0.9, 0.3, 0.1, 0.35, 0.4, 0.38]})
    got = measured_gains(df)
    assert got[2] == pytest.approx([0.3, 0.05]) and got[4] == pytest.approx([-0.02])


def test_measured_gains_list_runs_by_seed_not_by_run_id():
    """Run ids hash the output path: the same sweep written elsewhere must list its runs (which the bootstrap
    draws from) in the same order, by seed."""
    import pandas as pd

    from rlscale.scaling.isocompute import measured_gains

    def table(ids):
        return pd.DataFrame({"run_id": [ids[0]] * 2 + [ids[1]] * 2, "n": [2] * 4, "seed": [0, 0, 1, 1],
                             "compute/rollouts": [0.0, 64.0] * 2, "val/avg": [0.2, 0.5, 0.3, 0.35]})
    a, b = measured_gains(table(["a1", "z9"])), measured_gains(table(["z9", "a1"]))
    assert a[2] == pytest.approx([0.3, 0.05]) and b[2] == a[2]


def test_initial_stderr_bounds_the_shared_first_measurement():
    """The before-training value every run shares: its Bernoulli bound (closed form, and >= the simulated sampling
    SD of such a mean); the stored stderr column for other metrics; 0 when the runs' first values differ."""
    import pandas as pd

    from rlscale.scaling.isocompute import initial_stderr

    rng = np.random.default_rng(0)
    p_i = rng.beta(0.5, 3.0, 150)  # per-problem pass rates, mean ~0.14
    k = 8
    sims = rng.binomial(k, p_i, (20000, 150)).mean(axis=1) / k  # the validation mean, 20,000 times
    p = float(p_i.mean())
    df = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "n": [2] * 4, "step": [0, 5, 0, 5],
                       "compute/rollouts": [0.0, 80.0, 0.0, 80.0], "val/avg": [p, p + 0.01, p, p + 0.02],
                       "val/avg_stderr": [0.03] * 4, "val/problems": [150.0] * 4, "val_n": [k] * 4,
                       "val/pass@4": [0.5, 0.6, 0.5, 0.6], "val/pass@4_stderr": [0.04] * 4})
    se = initial_stderr(df)[2]
    assert se == pytest.approx(np.sqrt(p * (1 - p) / (k * 150)))
    assert sims.std() <= se <= 1.15 * sims.std()  # the bound holds and is not loose for spread-out pass rates
    assert initial_stderr(df, y="val/pass@4")[2] == pytest.approx(0.04)
    df.loc[2, "val/avg"] = p + 0.001  # runs evaluated before training with different seeds: resampling covers it
    assert initial_stderr(df)[2] == 0.0


def test_tiny_gain_within_the_first_measurements_noise_is_no_gain(labdir):
    """Runs that all gain ~0.001 give a run-resampled CI above 0, but the before-training value they share has a
    sampling error of ~0.006: the gain is within it, so the verdict is no-gain (stop 22's pretrain_seed-1 Hard set)."""
    from rlscale.report import evidence_sentence, n_star_evidence

    fit = json.loads((labdir / "fits" / "easy" / "fit.json").read_text())
    assert all(d["initial_stderr"] == 0.0 for d in fit["per_n"].values())  # the fixture's first values differ
    for d in fit["per_n"].values():
        d["measured_gains"] = [0.0010, 0.0012, 0.0008, 0.0011]
        d["initial_stderr"] = 0.0
    ev_runs = n_star_evidence(fit)
    assert ev_runs["measured_gain_ci"][0] > 0 and ev_runs["verdict"] != "no-gain"
    for d in fit["per_n"].values():
        d["initial_stderr"] = 0.006
    ev = n_star_evidence(fit)
    lo, hi = ev["measured_gain_ci"]
    assert ev["verdict"] == "no-gain" and lo < 0 < hi and 0.7 < (hi - lo) / (2 * 1.96 * 0.006) < 1.3
    assert "counting the sampling error 0.006 of the before-training evaluation" in evidence_sentence("Hard", ev)


@pytest.mark.parametrize("rise_share, verdict", [(0.0, "no-rise"), (0.03, "no-rise"), (0.10, "unresolved")])
def test_one_sided_verdict(labdir, monkeypatch, rise_share, verdict):
    """Resamples that fall or stay, but neither alone in 95% of them: the one-sided answer 'does not rise'."""
    import rlscale.report as report

    fit = json.loads((labdir / "fits" / "easy" / "fit.json").read_text())
    B = min(len(v["bootstrap_samples"]) for v in fit["per_n"].values())
    n_rise = round(rise_share * B)
    patterns = [np.array([8.0, 2.0])] + [np.array([2.0, 8.0])] * n_rise + \
        [np.array([8.0, 2.0]) if i % 2 else np.array([4.0, 4.0]) for i in range(B - n_rise)]
    calls = iter(patterns)
    monkeypatch.setattr(report, "_frontier_n_star", lambda params, C, c_first: next(calls))
    ev = report.n_star_evidence(fit)
    assert ev["verdict"] == verdict and ev["fall_frac"] < 0.95 and abs(ev["rise_frac"] - n_rise / B) < 1e-12
    if verdict == "no-rise":
        assert "does not rise with C at the 95% level" in report.evidence_sentence("Easy", ev)

# ------------------------------------------------------------------------------------------------ CoScale-RL section
def write_coscale_lab(csdir) -> None:
    """A finished CoScale-RL lab comparison as `rlscale coscale --preset lab-quick --out CSDIR` leaves it: the
    pipeline's coscale.json + summary.json, the plain-GRPO run store and result.json (values chosen to be findable)."""
    run = csdir / "coscale"
    run.mkdir(parents=True)
    (run / "coscale.json").write_text(json.dumps({"config": {"budget_rollouts": 5000}, "config_hash": "x"}))
    pools = {"pool_start": {"unsolvable": 7, "solvable": 3, "solved": 0},
             "pool_after_sft": {"unsolvable": 4, "solvable": 6, "solved": 0},
             "pool_end": {"unsolvable": 2, "solvable": 5, "solved": 3}}
    summary = {"final_model": str(run / "stages" / "final_sft" / "model"), "rollouts": 4864, "budget_rollouts": 5000,
               "iterations": [{"iteration": 0, **pools, "sft_problems": 7,
                               "partitions": [{"size": 3, "mean_acc": 0.4, "n0": 4}, {"size": 3, "mean_acc": 0.1,
                                                                                      "n0": 16}],
                               "n_final": [8, 16], "transitions": {"unsolvable->solvable": 5, "solvable->solved": 3,
                                                                   "unsolvable->unsolvable": 2},
                               "rollouts_end": 4700}],
               "n_timeline": [{"iteration": 0, "partition": 0, "rollouts": 100, "n": 4},
                              {"iteration": 0, "partition": 0, "rollouts": 900, "n": 8},
                              {"iteration": 0, "partition": 1, "rollouts": 1000, "n": 16}],
               "val_curve": [{"iteration": 0, "rollouts": 4700, "acc": 0.21, "stderr": 0.02},
                             {"iteration": "final", "rollouts": 4864, "acc": 0.25, "stderr": 0.02}],
               "val_final": {"acc": 0.25, "stderr": 0.02, "ci95": [0.21, 0.29]},
               "collected_problems": 8, "collected_solutions": 61, "pool": pools["pool_end"]}
    (run / "summary.json").write_text(json.dumps(summary))
    with RunStore.create(csdir / "grpo", {"model": "synthetic", "rollouts_per_problem": 8}) as store:
        for step, (C, v) in enumerate([(0.0, 0.1), (2400.0, 0.11), (4800.0, 0.12)]):
            store.log_eval(step, {"val/avg": v, "compute/rollouts": C})
    (csdir / "result.json").write_text(json.dumps({
        "base_acc": 0.1, "base_ci": [0.08, 0.12], "grpo_acc": 0.11, "grpo_ci": [0.09, 0.13], "coscale_acc": 0.25,
        "coscale_ci": [0.21, 0.29], "coscale_rollouts": 4864, "grpo_rollouts": 4864, "heldout_problems": 200,
        "heldout_n": 8, "bar_met": True}))


@pytest.fixture
def lab_with_coscale(labdir, tmp_path):
    import shutil

    root = tmp_path / "lab"
    shutil.copytree(labdir, root)  # a copy: the module's labdir stays without CoScale (its tests count figures)
    write_coscale_lab(root / "coscale")
    return root


def _coscale_part(html: str) -> str:
    return html.split("<h2>CoScale-RL</h2>")[1].split("</section>")[0]


def test_report_includes_coscale_from_lab_subdir(lab_with_coscale):
    html = build(lab_with_coscale)
    assert html.count("<h2>CoScale-RL</h2>") == 1 and html.count("<img") == 13 + 2  # + N timeline, accuracy
    cs = _coscale_part(html)
    for text in ("7/3/0", "4/6/0", "2/5/3", "unsolvable-&gt;solvable: 5", "3@4, 3@16", "Budget 5000 rollouts, spent 4864",
                 "held-out 200 problems x 8 samples", "met", "61", "[0.210, 0.290]"):
        assert text in cs, text
    assert "unsolvable-&gt;unsolvable" not in cs  # unchanged classes are not transitions
    # the numbers follow the stored files
    res_path = lab_with_coscale / "coscale" / "result.json"
    res = json.loads(res_path.read_text())
    res["coscale_acc"], res["bar_met"] = 0.424242, False
    res_path.write_text(json.dumps(res))
    s_path = lab_with_coscale / "coscale" / "coscale" / "summary.json"
    summary = json.loads(s_path.read_text())
    summary["collected_solutions"] = 98765
    s_path.write_text(json.dumps(summary))
    cs_after = _coscale_part(build(lab_with_coscale))
    for text in ("0.424", "98765", "not met"):
        assert text not in cs and text in cs_after, text


def test_report_coscale_flag_and_errors(labdir, lab_with_coscale, tmp_path, capsys):
    # --coscale names the run explicitly (here for a plain sweep dir, which has no coscale/ of its own)
    sweepdir = lab_with_coscale / "sweeps" / "easy"
    assert main(["report", str(sweepdir)]) == 0
    assert "CoScale-RL" not in (sweepdir / "report.html").read_text()
    assert main(["report", str(sweepdir), "--coscale", str(lab_with_coscale / "coscale")]) == 0
    assert "Budget 5000 rollouts, spent 4864" in _coscale_part((sweepdir / "report.html").read_text())
    # the pipeline dir itself (no lab table) works too
    assert main(["report", str(sweepdir), "--coscale", str(lab_with_coscale / "coscale" / "coscale")]) == 0
    cs = _coscale_part((sweepdir / "report.html").read_text())
    assert "Budget 5000" in cs and "held-out 200 problems" not in cs
    # a directory without a CoScale-RL run: one-line error, exit 2
    capsys.readouterr()
    assert main(["report", str(labdir), "--coscale", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CoScale-RL run (coscale.json) found" in err and len(err.strip().splitlines()) == 1
    # DIR/coscale that has no records yet (the lab comparison is still pretraining): a note, the report is built
    (lab_with_coscale / "coscale" / "result.json").unlink()
    import shutil

    shutil.rmtree(lab_with_coscale / "coscale" / "coscale")
    shutil.rmtree(lab_with_coscale / "coscale" / "grpo")
    assert "no CoScale-RL records yet" in _coscale_part(build(lab_with_coscale))
    # a started but unfinished run (coscale.json, no summary.json)
    (lab_with_coscale / "coscale" / "coscale").mkdir()
    (lab_with_coscale / "coscale" / "coscale" / "coscale.json").write_text("{}")
    assert "has not finished" in _coscale_part(build(lab_with_coscale))


# ------------------------------------------------------------------------------------------------ iso-FLOP n*(C)
def fit_from_truth(family: dict, B: int = 200, jitter: float = 0.004, seed: int = 0) -> dict:
    """A fit.json as IsoCompute writes it, from known per-n sigmoids: resample i jitters every n's ceiling A
    (the joint bootstrap's spread, independent per n), measured gains = the true rise over the range."""
    rng = np.random.default_rng(seed)
    C_lo, C_hi = 256.0, 24576.0
    per_n = {}
    for n, p in family.items():
        samples = [[p["R0"], p["A"] + rng.normal(0, jitter), p["C_mid"], p["B"]] for _ in range(B)]
        gain = float(np.diff(sigmoid_law(np.array([C_lo, C_hi]), **p))[0])
        per_n[str(n)] = {"params": p, "C_first": 8.0 * n, "bootstrap_samples": samples,
                         "measured_gains": [gain - 0.002, gain, gain + 0.002]}
    return {"x_range": [C_lo, C_hi], "per_n": per_n, "ci_level": 0.95, "n_bootstrap": B, "seed": 0, "ci": {},
            "params": {"R0": 1.0, "A": 2.0, "C_mid": 3000.0, "B": 1.0}}


def rising_family(ns) -> dict:
    """Ceilings that peak at a larger n than the early leaders, midpoints that move out with n: n*(C) rises."""
    return {n: {"R0": 0.42, "A": 0.50 + 0.06 * np.log2(n) - 0.012 * np.log2(n) ** 2, "C_mid": 600.0 * n ** 0.8,
                "B": 1.5} for n in ns}


def test_isoflop_verdict_follows_the_truth():
    """n* known in closed form: a constant vertex (n* = 4 at every C) is 'flat', never 'rises'; ceilings that grow
    with n and midpoints that move out with n (n* rises) give 'rises'; the mirror image gives 'falls'."""
    from rlscale.report import compare_saturation, evidence_sentence, n_star_evidence

    ns = (2, 4, 8, 16, 32)
    flat = {n: {"R0": 0.42, "A": 0.56 - 0.01 * (np.log2(n) - 2) ** 2, "C_mid": 4000.0, "B": 1.5} for n in ns}
    flat_ev = n_star_evidence(fit_from_truth(flat))
    iso = flat_ev["isoflop"]
    assert iso["n_on"] == pytest.approx(4.0) and iso["n_hi"] == pytest.approx(4.0)  # the exact vertex, both ends
    assert iso["verdict"] == "flat" and iso["rise_frac"] < 0.95
    ev = n_star_evidence(fit_from_truth(rising_family(ns)))
    iso = ev["isoflop"]
    assert iso["verdict"] == "rises" and iso["n_hi"] > 2 * iso["n_on"] and iso["log2_ratio_ci"][0] > 0
    assert "Iso-FLOP-profile estimate" in evidence_sentence("Easy", ev)
    assert "so n*(C) rises with C at the 95% level." in evidence_sentence("Easy", ev).split("Iso-FLOP")[1]
    assert iso["n_hi_ci"][0] > flat_ev["isoflop"]["n_hi_ci"][1]  # the rising family ends well above n* = 4
    assert "Hard set's n* is smaller" in compare_saturation(ev, flat_ev)
    assert "Hard set's n* is larger" in compare_saturation(flat_ev, ev)
    # larger n learn earlier, smaller n reach higher: n* falls
    falling = {n: {"R0": 0.42, "A": 0.56 - 0.01 * (np.log2(n) - 1.5) ** 2, "C_mid": 600.0 * (64 / n) ** 0.8,
                   "B": 1.5} for n in ns}
    iso = n_star_evidence(fit_from_truth(falling))["isoflop"]
    assert iso["verdict"] == "falls" and iso["n_hi"] < iso["n_on"] / 2


def test_near_optimal_set_is_the_plateau():
    """n = 2, 4, 8 share a ceiling and n = 16, 32 end 0.05 lower: at C_max the near-optimal set is {2, 4, 8}, the
    sentence names the cost of leaving it with its interval, and each gap equals the curves' difference."""
    from rlscale.report import n_star_evidence, near_optimal_sentence

    ns = (2, 4, 8, 16, 32)
    plateau = {n: {"R0": 0.42, "A": 0.55 if n <= 8 else 0.50, "C_mid": 2000.0, "B": 1.5} for n in ns}
    fit = fit_from_truth(plateau)
    ev = n_star_evidence(fit)
    last = ev["near_optimal"][-1]
    assert last["at"] == "C_max" and last["C"] == ev["C_hi"] and last["near"] == [2.0, 4.0, 8.0]
    best = plateau[int(last["best_n"])]
    for n in (16, 32):
        ref = float(sigmoid_law(ev["C_hi"], **plateau[n]) - sigmoid_law(ev["C_hi"], **best))
        gap, lo, hi = last["gaps"][str(float(n))]
        assert gap == pytest.approx(ref, abs=1e-12) and lo < gap < hi < 0
    text = near_optimal_sentence("Easy", ev)
    assert "at C_max): n in {2, 4, 8}" in text and "plateau over 3 swept n" in text
    assert f"n = 16 {-last['gaps']['16.0'][0]:.3f} lower" in text
    ev["verdict"] = "no-gain"  # no allocation to speak of on a set RL did not move
    assert near_optimal_sentence("Easy", ev) == ""


def test_isoflop_onset_skips_the_tied_start(labdir):
    """The comparison starts where the frontier has made 10% of its rise, not at the first compute every n has."""
    from rlscale.report import n_star_evidence
    from rlscale.scaling.isocompute import curves

    fit = json.loads((labdir / "fits" / "easy" / "fit.json").read_text())
    ev = n_star_evidence(fit)
    iso = ev["isoflop"]
    params = {float(k): v["params"] for k, v in fit["per_n"].items()}
    _, R = curves(params, np.array([ev["C_lo"], iso["C_on"], ev["C_hi"]]))
    front = R.max(axis=0)
    assert front[1] - front[0] == pytest.approx(0.1 * (front[2] - front[0]), abs=0.02 * (front[2] - front[0]))
    assert iso["C_on"] > ev["C_lo"] and iso["verdict"] == "rises"


def test_nstar_calibration_script_runs():
    """scripts/nstar_calibration.py (the simulation behind the iso-FLOP verdict's calibration) at toy size."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "nstar_calibration.py"
    res = subprocess.run([sys.executable, str(script), "--sweeps", "1", "--bootstrap", "20", "--workers", "1",
                          "--scenarios", "null4,lab"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    valid = {"rises", "falls", "flat", "no-rise", "no-fall", "unresolved", "no-gain"}
    for name in ("null4", "lab"):
        assert out[name]["sweeps"] == 1 and sum(out[name]["isoflop"].values()) == 1
        assert set(out[name]["isoflop"]) <= valid and set(out[name]["argmax"]) <= valid
    bad = subprocess.run([sys.executable, str(script), "--scenarios", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown scenario 'nope'" in bad.stderr


def test_isoflop_skips_failed_resamples():
    """A bootstrap refit that failed is stored as NaN: the iso-FLOP evidence and its figure band leave it out."""
    from rlscale.report import n_star_evidence
    from rlscale.scaling import plots

    fit = fit_from_truth(rising_family((2, 4, 8, 16)), B=50)
    fit["per_n"]["4"]["bootstrap_samples"][7] = [float("nan")] * 4
    iso = n_star_evidence(fit)["isoflop"]
    assert iso["n_resamples"] == 49 and len(iso["n_hi_samples"]) == 49 and np.isfinite(iso["log2_ratio_ci"]).all()
    C, mid, lo, hi = plots._isoflop_band(fit, np.geomspace(256, 24576, 30))
    assert np.isfinite(lo).all() and np.all(lo <= mid + 1e-9) and np.all(mid <= hi + 1e-9)


def test_sizes_section_compares_the_labs_of_each_size(labdir, tmp_path):
    import shutil

    from rlscale.report import n_star_evidence

    root = tmp_path / "lab"
    shutil.copytree(labdir, root)
    preset = {**PRESET.to_dict(), "sizes": ["s"]}
    (root / "lab.json").write_text(json.dumps({"preset": preset}))
    sub = root / "sizes" / "s"
    shutil.copytree(labdir, sub)
    (sub / "lab.json").write_text(json.dumps({"preset": {**PRESET.to_dict(), "size": "s"}}))
    (sub / "model").mkdir()
    (sub / "model" / "rlscale_model.json").write_text(json.dumps(
        {"num_params": 109952, "heldout_loss": 0.0836, "compute": {"tokens": 8000118, "flops": 6.1e12}}))
    html = build(root)
    part = html.split(">Across model sizes</h2>")[1].split("Compute per stage")[0]
    assert part.count("<tr>") >= 3 and "109952" in part and "0.0836" in part and part.count("<img") == 1
    # the measured Easy gain of the s lab, as n_star_evidence reads it from its fit
    ev = n_star_evidence(json.loads((sub / "fits" / "easy" / "fit.json").read_text()))
    assert f"{ev['measured_gain']:.4g}" in part and "Size s: Easy: n*(C) rises" in part
    assert "By model size" in html.split("Run configuration")[0]  # the summary names each size's verdicts
    # every number follows the sub-lab's store
    meta = json.loads((sub / "model" / "rlscale_model.json").read_text())
    meta["heldout_loss"] = 0.0424242
    (sub / "model" / "rlscale_model.json").write_text(json.dumps(meta))
    assert "0.04242" in build(root).split(">Across model sizes</h2>")[1]
    # a further size that has not run yet is listed as such; a lab without sizes has no such section
    (root / "lab.json").write_text(json.dumps({"preset": {**preset, "sizes": ["s", "m"]}}))
    assert "not run yet" in build(root).split(">Across model sizes</h2>")[1]
    assert "Across model sizes" not in build(labdir)


def test_intervals_from_a_few_runs_are_widened_by_the_small_sample_factor(monkeypatch):
    """A fit whose n were resampled by runs (6 each): the fitted and measured gains' intervals are the unwidened
    ones stretched about the estimate by small_sample_widening(6) = 1.44 exactly, the iso-FLOP interval is wider,
    and the argmax verdict needs the expanded one-sided level (0.986)."""
    import rlscale.scaling.isocompute as iso
    from rlscale.report import n_star_evidence

    fit = fit_from_truth(rising_family((2, 4, 8, 16, 32)), B=300)
    for d in fit["per_n"].values():
        d.update(bootstrap_unit="runs", n_runs=6, measured_gains=[d["measured_gains"][1] + e for e in
                                                                   (-0.01, -0.004, 0.0, 0.002, 0.005, 0.012)])
    ev = n_star_evidence(fit)
    f = iso.small_sample_widening(6)
    assert ev["widening"] == pytest.approx(f) and ev["runs_per_n"] == 6
    assert ev["one_sided_level"] == pytest.approx(iso.expanded_level(0.95, 6)) and ev["one_sided_level"] > 0.98
    monkeypatch.setattr(iso, "fit_widening", lambda per_n, level=0.95: (1.0, None))
    raw = n_star_evidence(fit)
    assert raw["one_sided_level"] == 0.95
    for key, point in (("gain_ci", ev["gain"]), ("measured_gain_ci", ev["measured_gain"])):
        assert ev[key] == pytest.approx([point + f * (c - point) for c in raw[key]], abs=1e-12)
    w = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert w(ev["isoflop"]["log2_ratio_ci"]) > 1.2 * w(raw["isoflop"]["log2_ratio_ci"])
    from rlscale.report import evidence_sentence

    assert "resample only 6 runs per n, which understates them, so they are widened 1.44x" in \
        evidence_sentence("Easy", ev) and "widened" not in evidence_sentence("Easy", raw)


def test_the_runs_numerics_are_read_from_their_summaries(labdir, tmp_path):
    from rlscale.report import numerics_html, run_numerics

    html = build(labdir)
    assert "Numerics of the sweep runs" in html and "not recorded" in html  # stores written before the record
    rec = {"cpu_numerics": "avx2", "torch": "2.13.0+cpu", "aten_cpu_capability": "AVX2",
           "c_compiler": "gcc (Debian 12.2.0-14) 12.2.0", "cuda": None}
    runs = {}
    for i, numerics in enumerate([rec, rec, rec | {"cpu_numerics": "native", "aten_cpu_capability": "AVX512"}, None]):
        rid = f"r{i}" if numerics else "unfinished"
        d = tmp_path / "sweep" / "runs" / rid
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        if numerics:  # the unfinished run has no summary.json: not counted
            (d / "summary.json").write_text(json.dumps({"val_after": 0.5, "numerics": numerics}))
        runs[rid] = {"n": 2, "budget": 64, "seed": i, "problems_per_batch": 4}
    (tmp_path / "sweep" / "runs" / "orphan").mkdir()  # a directory the sweep does not list: not counted either
    (tmp_path / "sweep" / "runs" / "orphan" / "summary.json").write_text(json.dumps({"numerics": rec}))
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps({"runs": runs}))
    rows = run_numerics([tmp_path / "sweep"])
    assert [(r["cpu_numerics"], r["aten_cpu_capability"], r["runs"]) for r in rows] == [("avx2", "AVX2", 2),
                                                                                      ("native", "AVX512", 1)]
    assert rows[0]["c_compiler"] == rec["c_compiler"] and rows[0]["cuda"] == "None"
    assert "2 different numerics" in numerics_html(rows) and "did not all compute alike" in numerics_html(rows)
    assert "Every finished run recorded the same numerics" in numerics_html(rows[:1])
    assert numerics_html([]) == ""
    assert "predate the record" in numerics_html(run_numerics([labdir / "sweeps" / "easy"]))


def test_leave_one_seed_out_refits_without_each_seed(tmp_path):
    """The fit stage's leave-one-seed-out record: one refit per seed whose verdicts are those of the fit redone
    by hand on the table without that seed (brute force), the same on spawned workers; none where it cannot
    apply (fewer than runs_for_run_bootstrap + 1 seeds per n, or a set that gained nothing)."""
    from rlscale.lab.pipeline import fit_table, leave_one_seed_out
    from rlscale.report import n_star_evidence
    from rlscale.sweep.export import load_sweep_table

    write_sweep(tmp_path / "easy", FAMILIES["easy"], np.random.default_rng(3), seeds=(0, 1, 2, 3))
    df = load_sweep_table(tmp_path / "easy")
    fit = fit_table(df, PRESET, 300)
    st = leave_one_seed_out(df, PRESET, 300, fit)
    assert st["seeds"] == [0, 1, 2, 3] and [d["seed"] for d in st["drops"]] == [0, 1, 2, 3]
    full = n_star_evidence(fit)
    assert (st["verdict"], st["isoflop"]) == (full["verdict"], full["isoflop"]["verdict"])
    by_hand = n_star_evidence(fit_table(df[df["seed"] != 2], PRESET, 300))
    assert st["drops"][2]["verdict"] == by_hand["verdict"]
    assert st["drops"][2]["isoflop"] == by_hand["isoflop"]["verdict"]
    assert st["drops"][2]["log2_ratio_ci"] == by_hand["log2_ratio_ci"]
    assert leave_one_seed_out(df, PRESET, 300, fit, workers=2) == st
    assert leave_one_seed_out(df[df["seed"] < 3], PRESET, 300, fit) is None  # 3 seeds: a refit keeps 2 runs
    no_gain = {**fit, "per_n": {n: {**v, "params": {**v["params"], "A": v["params"]["R0"]},
                                    "bootstrap_samples": [[b[0], b[0], b[2], b[3]] for b in v["bootstrap_samples"]]}
                                for n, v in fit["per_n"].items()}}
    assert n_star_evidence(no_gain)["verdict"] == "no-gain" and leave_one_seed_out(df, PRESET, 300, no_gain) is None


def test_the_leave_one_seed_out_check_is_read_from_the_store(labdir, tmp_path):
    """The headline and the set's paragraph count the stored refits that agree with the verdict and name the seeds
    whose removal changed it; editing the stored record changes the page."""
    import shutil

    root = tmp_path / "lab"
    shutil.copytree(labdir, root)
    path = root / "fits" / "easy" / "fit.json"
    fit = json.loads(path.read_text())
    assert fit["seed_stability"] is None  # the fixture has 2 seeds per n
    fit["seed_stability"] = {"seeds": [0, 1, 2, 3], "verdict": "rises", "isoflop": "rises", "drops": [
        {"seed": s, "verdict": "rises", "isoflop": "rises" if s != 1 else "no-fall"} for s in range(4)]}
    path.write_text(json.dumps(fit))
    html = build(root)
    assert ("In short: Easy: n*(C) rises (frontier argmax; 4 of 4 refits without one seed agree), rises (iso-FLOP; "
            "3 of 4 refits without one seed agree)") in html
    assert ("the frontier-argmax verdict (rises) holds in 4 of 4; the iso-FLOP verdict (rises) holds in 3 of 4 "
            "(no-fall without seed 1)") in html
    fit["seed_stability"]["drops"][3]["verdict"] = "unresolved"
    path.write_text(json.dumps(fit))
    html = build(root)
    assert "(frontier argmax; 3 of 4 refits without one seed agree)" in html
    assert "holds in 3 of 4 (unresolved without seed 3)" in html


def test_refit_seeds_script_refits_a_copy_on_the_chosen_seeds(labdir, tmp_path):
    """scripts/refit_seeds.py: the copy's tables hold only the chosen seeds and n, its fit and report are redone from
    them (the seed-0 refit equals the lab's fit stage on the filtered table), and the lab itself is left as it was."""
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from rlscale.lab.pipeline import fit_table

    script = Path(__file__).resolve().parents[1] / "scripts" / "refit_seeds.py"
    build(labdir)
    before = {p: p.read_bytes() for p in (labdir / "fits" / "easy" / "fit.json", labdir / "summary.txt")}
    out = tmp_path / "refit"
    res = subprocess.run([sys.executable, str(script), str(labdir), str(out), "--seeds", "easy=0", "--n", "hard=2,8",
                          "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1].startswith("In short: Easy: n*(C)")
    easy = pd.read_parquet(out / "sweeps" / "easy" / "table.parquet")
    hard = pd.read_parquet(out / "sweeps" / "hard" / "table.parquet")
    assert set(easy["seed"]) == {0} and set(easy["n"]) == {2, 4, 8}
    assert set(hard["seed"]) == {0, 1} and set(hard["n"]) == {2, 8}
    fit = json.loads((out / "fits" / "easy" / "fit.json").read_text())
    full = pd.read_parquet(labdir / "sweeps" / "easy" / "table.parquet")
    by_hand = fit_table(full[full["seed"] == 0], PRESET, 300)
    assert fit["frontier"] == json.loads(json.dumps(by_hand["frontier"]))
    assert (out / "report.html").exists() and all(p.read_bytes() == b for p, b in before.items())
    run_db = Path("sweeps") / "easy" / "runs" / "r2s0" / "run.db"
    assert (out / run_db).stat().st_ino != (labdir / run_db).stat().st_ino  # a copy, not a link
    for args, needle in ((["--seeds", "easy=7"], "--seeds easy: 7 is not among the lab's easy runs (0, 1)"),
                         (["--seeds", "medium=0"], "expected SET=LIST with SET one of easy, hard"),
                         (["--n", "hard=2-x"], "is not a list of integers")):
        bad = subprocess.run([sys.executable, str(script), str(labdir), str(tmp_path / "x"), *args],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
    again = subprocess.run([sys.executable, str(script), str(labdir), str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_saturation_is_compared_at_the_compute_both_sets_reached(labdir, tmp_path):
    """Sets swept to different budgets are compared at the smaller one (n* moves with compute): the Hard fit read
    to twice the Easy budget is cut back to Easy's, where its evidence is the one a fit ending there gives, and
    the sentence names that compute and each set's n* at its own budget."""
    import shutil

    from rlscale.report import at_common_compute, n_star_evidence

    root = tmp_path / "lab"
    shutil.copytree(labdir, root)
    fits = {s: json.loads((root / "fits" / s / "fit.json").read_text()) for s in ("easy", "hard")}
    evidence = {s: n_star_evidence(f) for s, f in fits.items()}
    assert at_common_compute(fits, evidence) == (evidence, None)  # the fixture's sets end together
    longer = {**fits["hard"], "x_range": [fits["hard"]["x_range"][0], 2 * fits["hard"]["x_range"][1]]}
    (root / "fits" / "hard" / "fit.json").write_text(json.dumps(longer))
    own = {"easy": evidence["easy"], "hard": n_star_evidence(longer)}
    common, c = at_common_compute({"easy": fits["easy"], "hard": longer}, own)
    assert c == evidence["easy"]["C_hi"] and common["easy"] is own["easy"]
    assert common["hard"]["n_hi_samples"] == evidence["hard"]["n_hi_samples"]
    assert common["hard"]["C_hi"] == evidence["hard"]["C_hi"]
    html = build(root)
    assert (f"n* at C = {c:.3g} rollouts per run, the largest compute both sets reached (compared there because n* "
            "moves with compute; at their own largest budgets Easy") in html
    assert f"Hard {own['hard']['n_hi']:.0f} at {2 * c:.3g}" in html


def test_a_failing_seed_check_keeps_the_fit(labdir, tmp_path, monkeypatch):
    """The leave-one-seed-out check is a check on the fit: when it fails (here: raises), the fit is stored anyway with
    the error in place of the record, and the report builds without the check's sentence."""
    import shutil

    from rlscale.lab import pipeline

    root = tmp_path / "lab"
    shutil.copytree(labdir, root)

    def broken(*a, **k):
        raise RuntimeError("no worker could start")

    monkeypatch.setattr(pipeline, "leave_one_seed_out", broken)
    pipeline.stage_fit(PRESET, root)
    fit = json.loads((root / "fits" / "easy" / "fit.json").read_text())
    assert fit["frontier"] and fit["seed_stability"] == {"error": "RuntimeError: no worker could start"}
    html = build(root)
    assert "In short: Easy: n*(C) rises (frontier argmax)" in html and "Leave-one-seed-out" not in html
