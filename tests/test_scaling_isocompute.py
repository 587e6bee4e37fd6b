"""Iso-compute workflow: record-breaking points, per-n fits, frontier, n*(C), transitions, epochs.
Run: .venv/bin/python -m pytest tests/test_scaling_isocompute.py -q"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlscale.errors import UserError
from rlscale.scaling.isocompute import (
    IsoCompute,
    epochs_per_rollout,
    frontier,
    record_breaking_points,
    running_max_envelope,
    transitions,
)
from rlscale.scaling.laws import sigmoid_law

TRAIN_SET = 100


def family(shift: float = 1.3) -> dict:
    """Larger n: higher ceiling, later midpoint -> n*(C) rises with C (known exactly from these params)."""
    return {n: {"R0": 0.05, "A": 0.45 + 0.1 * np.log2(n), "C_mid": 300.0 * n**shift, "B": 1.4}
            for n in (2, 4, 8, 16, 32)}


def sweep_table(seed: int, fam: dict, runs_per_n: int = 2, points: int = 40, noise: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for n, p in fam.items():
        for r in range(runs_per_n):
            C = np.geomspace(50, 3e5, points)
            y = sigmoid_law(C, **p) + rng.normal(0, noise, points)
            for step, (c, v) in enumerate(zip(C, y)):
                rows.append({"run_id": f"n{n}-r{r}", "n": n, "step": step, "compute/rollouts": c, "val/avg": v,
                             "epochs": c / (n * TRAIN_SET)})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed)  # shuffled: order must not matter


def brute_records(df, w):
    """Reference: scan each run in compute order, keep a point iff its bucket beats every earlier one."""
    keep = []
    for _, g in df.groupby("run_id"):
        g = g.sort_values("compute/rollouts")
        seen = []
        for idx, v in zip(g.index, g["val/avg"]):
            b = np.floor(v / w) if w > 0 else v
            if all(b > s for s in seen):
                keep.append(idx)
            seen.append(b)
    return sorted(keep)


@pytest.mark.parametrize("w", [0.0, 0.01, 0.05])
def test_record_points_match_brute_force_and_keep_order(w):
    df = sweep_table(0, family())
    rec = record_breaking_points(df, w)
    assert sorted(rec.index) == brute_records(df, w)
    # order-preserving: a subsequence of the input rows in their original order
    pos = [df.index.get_loc(i) for i in rec.index]
    assert pos == sorted(pos)
    # within a run, record rewards strictly rise with compute
    for _, g in rec.groupby("run_id"):
        assert np.all(np.diff(g.sort_values("compute/rollouts")["val/avg"].to_numpy()) > 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_empirical_frontier_from_records_equals_frontier_from_all_points(seed):
    df = sweep_table(seed, family())
    rec = record_breaking_points(df, 0.0)
    grid = np.geomspace(50, 3e5, 97)
    b_all, n_all = running_max_envelope(df, grid)
    b_rec, n_rec = running_max_envelope(rec, grid)
    np.testing.assert_array_equal(b_all, b_rec)
    np.testing.assert_array_equal(n_all, n_rec)


@pytest.mark.parametrize("seed", [0, 1])
def test_fitted_frontier_from_records_equals_from_all_points(seed):
    df = sweep_table(seed, family())
    a = IsoCompute(bucket_width=0.01).fit(df)
    b = IsoCompute(bucket_width=0.0).fit(df)
    agree = (a.frontier_["n_star"].to_numpy() == b.frontier_["n_star"].to_numpy()).mean()
    assert agree >= 0.97


def test_frontier_and_n_star_recovered():
    fam = family()
    df = sweep_table(0, fam)
    iso = IsoCompute(n_bootstrap=40, seed=0).fit(df)
    true = frontier(fam, iso.C_grid_)
    agree = (true["n_star"].to_numpy() == iso.frontier_["n_star"].to_numpy()).mean()
    assert agree >= 0.95
    np.testing.assert_allclose(iso.frontier_["reward"], true["reward"], atol=0.02)
    # transitions between adjacent n: within 15% of the true crossing compute
    true_t = transitions(fam, iso.C_grid_)
    assert [(t["from_n"], t["to_n"]) for t in iso.transitions_] == [(t["from_n"], t["to_n"]) for t in true_t]
    for got, want in zip(iso.transitions_, true_t):
        assert got["C"] == pytest.approx(want["C"], rel=0.15)
        # epochs = C / (n * train set size), read from the epochs column
        assert got["epochs_to"] == pytest.approx(got["C"] / (got["to_n"] * TRAIN_SET), rel=1e-9)
    # n*(C) rises: the log2 n* sigmoid goes from ~1 (n=2) to ~5 (n=32)
    p = iso.params_
    assert p["R0"] < 1.5 and p["A"] > 4.5 and p["B"] > 0
    lo, hi = iso.ci_["A"]
    assert lo <= hi


def test_transition_is_a_true_crossing():
    fam = family()
    grid = np.geomspace(50, 3e5, 200)
    for t in transitions(fam, grid):
        a = sigmoid_law(t["C"], **fam[t["from_n"]])
        b = sigmoid_law(t["C"], **fam[t["to_n"]])
        assert a == pytest.approx(b, abs=1e-9)
        assert sigmoid_law(t["C"] * 1.1, **fam[t["to_n"]]) > sigmoid_law(t["C"] * 1.1, **fam[t["from_n"]])


def test_flat_family_keeps_smallest_n():
    """A family where n does not matter (identical curves but larger n is slower) has n* = smallest n."""
    fam = {n: {"R0": 0.05, "A": 0.7, "C_mid": 300.0 * n, "B": 1.4} for n in (2, 4, 8)}
    iso = IsoCompute().fit(sweep_table(3, fam))
    assert set(iso.frontier_["n_star"]) == {2}
    assert iso.transitions_ == []


def test_flat_runs_fall_back_to_all_points():
    fam = family()
    df = sweep_table(0, fam, noise=0.0)
    flat = df["n"] == 2
    df.loc[flat, "val/avg"] = 0.3  # n=2 never improves: one record point per run
    iso = IsoCompute().fit(df)
    assert iso.points_used_[2] == "all" and iso.points_used_[4] == "records"
    assert iso.per_n_[2].n_points_ == int(flat.sum())
    assert iso.per_n_[2].params_["A"] == pytest.approx(0.3, abs=1e-3)


def test_epochs_from_train_set_size_without_column():
    df = sweep_table(0, family()).drop(columns="epochs")
    e = epochs_per_rollout(df, train_set_size=TRAIN_SET)
    assert e[4] == pytest.approx(1 / (4 * TRAIN_SET))
    assert epochs_per_rollout(df) is None


def test_to_dict_is_json_ready():
    import json

    iso = IsoCompute(n_bootstrap=5).fit(sweep_table(0, family()))
    d = json.loads(json.dumps(iso.to_dict()))
    assert set(d["per_n"]) == {"2", "4", "8", "16", "32"}
    assert len(d["per_n"]["8"]["bootstrap_samples"]) == 5
    assert d["per_n"]["8"]["bootstrap_unit"] == "points"  # 2 runs per n < 5: points are resampled
    assert "n=2" in iso.summary()


def test_bad_input():
    df = sweep_table(0, family())
    with pytest.raises(UserError, match="no column 'val/avg'"):
        IsoCompute().fit(df.drop(columns="val/avg"))
    bad = df.copy()
    bad.loc[bad.index[3], "val/avg"] = np.nan
    with pytest.raises(UserError, match="column 'val/avg': 1 NaN"):
        IsoCompute().fit(bad)
    bad = df.copy()
    bad.loc[bad.index[0], "compute/rollouts"] = 0
    with pytest.raises(UserError, match="column 'compute/rollouts': 1 non-positive"):
        IsoCompute().fit(bad)
    few = df[df["step"] < 2]  # 2 runs x 2 points per n
    with pytest.raises(UserError, match="n=2: 4 point"):
        IsoCompute().fit(few)
    with pytest.raises(UserError, match=">= 2 values of 'n'"):
        IsoCompute().fit(df[df["n"] == 4])


def test_frontier_ignores_an_allocation_below_its_first_step():
    """n=16's curve is higher everywhere, but its first step costs 128 rollouts: below that only n=2 exists."""
    import numpy as np

    from rlscale.scaling.isocompute import frontier, transitions

    params = {2: {"R0": 0.1, "A": 0.5, "C_mid": 1000.0, "B": 1.0}, 16: {"R0": 0.2, "A": 0.6, "C_mid": 1000.0, "B": 1.0}}
    C = np.geomspace(16, 8192, 50)
    free = frontier(params, C)
    assert (free["n_star"] == 16).all()
    gated = frontier(params, C, {2: 16.0, 16: 128.0})
    assert (gated.loc[gated["C"] < 128, "n_star"] == 2).all() and (gated.loc[gated["C"] >= 128, "n_star"] == 16).all()
    # below every allocation's first step there is no frontier at all
    assert frontier(params, C, {2: 64.0, 16: 128.0})["C"].min() >= 64.0
    # a crossing that lies below one of the two first steps is not a transition
    crossing = {2: {"R0": 0.1, "A": 0.4, "C_mid": 100.0, "B": 2.0}, 16: {"R0": 0.0, "A": 0.6, "C_mid": 400.0, "B": 2.0}}
    assert transitions(crossing, C)  # n=16 overtakes n=2 somewhere
    t = transitions(crossing, C, c_first={2: 16.0, 16: 4096.0})
    assert all(row["C"] >= 4096.0 for row in t)


# ------------------------------------------------------------------------------------------------ iso-FLOP n*(C)
@pytest.mark.parametrize("vertex", [1.0, 1.7, 2.5, 3.9, 5.0])
def test_isoflop_n_star_recovers_an_exact_parabola(vertex):
    """Exact concave profiles in log2 n: the vertex comes back to rounding; outside the swept range it is clipped."""
    from rlscale.scaling.isocompute import isoflop_n_star

    ns = [2, 4, 8, 16, 32]
    x = np.log2(ns)
    scale = np.array([0.01, 0.03, 0.2])  # three C columns: same vertex, different curvature
    R = 0.4 - scale[None, :] * (x[:, None] - vertex) ** 2
    got = np.log2(isoflop_n_star(R, ns))
    assert got == pytest.approx([np.clip(vertex, 1.0, 5.0)] * 3, abs=1e-9)


def test_isoflop_n_star_matches_polyfit_and_falls_back_to_argmax():
    from rlscale.scaling.isocompute import isoflop_n_star

    rng = np.random.default_rng(3)
    ns = [2, 4, 8, 16]
    x = np.log2(ns)
    R = rng.uniform(0.2, 0.6, (4, 50))
    got = np.log2(isoflop_n_star(R, ns))
    for j in range(R.shape[1]):  # reference: numpy's polyfit per column, then the same rule by hand
        a, b, _ = np.polyfit(x, R[:, j], 2)
        ref = np.clip(-b / (2 * a), x[0], x[-1]) if a < 0 else x[np.argmax(R[:, j])]
        assert got[j] == pytest.approx(ref, abs=1e-9)
    convex = np.array([[0.5], [0.3], [0.31], [0.45]])  # U-shaped: no interior maximum -> the best swept n
    assert isoflop_n_star(convex, ns)[0] == 2.0
    with pytest.raises(ValueError):
        isoflop_n_star(R[:2], ns[:2])


def test_learning_onset_is_the_first_grid_point_past_the_share():
    from rlscale.scaling.isocompute import learning_onset

    C = np.geomspace(100, 1e5, 400)
    p = {"R0": 0.2, "A": 0.6, "C_mid": 3000.0, "B": 1.5}
    f = sigmoid_law(C, **p)
    j = learning_onset(C, f, 0.1)
    target = f[0] + 0.1 * (f[-1] - f[0])
    assert f[j] >= target > f[j - 1]
    # closed form: R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B) reaches `target` at C = C_mid * (frac / (1 - frac))^(1/B)
    share = (target - p["R0"]) / (p["A"] - p["R0"])
    assert C[j - 1] < p["C_mid"] * (share / (1 - share)) ** (1 / p["B"]) <= C[j]
    assert learning_onset(C, np.full_like(C, 0.3)) == 0 and learning_onset(C, f[::-1]) == 0


# ------------------------------------------------------------------------------------------------ allocation gaps
def test_allocation_gaps_match_direct_differences_and_find_the_plateau():
    """A plateau over n = 2..8 with n = 16 lower: the gaps are the curves' differences evaluated directly, the
    resampled intervals are the quantiles of the same differences per resample, and near_optimal is {2, 4, 8}."""
    from rlscale.scaling.isocompute import allocation_gaps

    top = {"R0": 0.4, "A": 0.5, "C_mid": 500.0, "B": 1.2}
    point = {2: dict(top), 4: {**top, "A": 0.502}, 8: {**top, "A": 0.501}, 16: {**top, "A": 0.46}}
    rng = np.random.default_rng(0)
    resamples = [{n: {**p, "A": p["A"] + rng.normal(0, 0.01)} for n, p in point.items()} for _ in range(400)]
    C = np.geomspace(200, 3000, 7)
    g = allocation_gaps(point, resamples, C, level=0.9)
    assert g["best_n"] == [4] * len(C)
    for i, n in enumerate(g["ns"]):
        ref = sigmoid_law(C, **point[n]) - sigmoid_law(C, **point[4])
        assert g["gap"][i] == pytest.approx(ref, abs=1e-12)
        d = np.array([sigmoid_law(C, **r[n]) - sigmoid_law(C, **r[4]) for r in resamples])
        assert g["lo"][i] == pytest.approx(np.quantile(d, 0.05, axis=0), abs=1e-12)
        assert g["hi"][i] == pytest.approx(np.quantile(d, 0.95, axis=0), abs=1e-12)
    assert g["lo"][1] == pytest.approx(np.zeros(len(C))) and g["hi"][1] == pytest.approx(np.zeros(len(C)))
    assert g["near_optimal"][-1] == [2, 4, 8]  # n = 16 is 0.04 x (share of the rise) below: outside at C_max
    assert g["hi"][3, -1] < 0


def test_allocation_gaps_skip_an_allocation_before_its_first_step():
    from rlscale.scaling.isocompute import allocation_gaps

    p = {"R0": 0.2, "A": 0.6, "C_mid": 1000.0, "B": 1.0}
    point = {2: dict(p), 4: {**p, "A": 0.7}}
    g = allocation_gaps(point, [], np.array([100.0, 5000.0]), c_first={2: 16.0, 4: 1000.0})
    assert np.isnan(g["gap"][1, 0]) and g["best_n"][0] == 2 and g["near_optimal"][0] == [2]
    assert g["best_n"][1] == 4 and g["near_optimal"][1] == [4]  # no resamples: the point gaps, 2 is below


def test_best_setting_per_n_by_hand_and_keep_selected():
    """Two rates per n; the best is the highest mean of the runs' last points at the largest budget (a run at a
    smaller budget does not vote; a tie goes to the smaller rate); keep_selected re-applies it from fit.json."""
    from rlscale.scaling.isocompute import best_setting_per_n, keep_selected

    rows = []
    def run(rid, n, lr, budget, finals):
        for step, v in enumerate(finals):
            rows.append({"run_id": rid, "n": n, "lr": lr, "budget": budget, "compute/rollouts": 100.0 * step,
                         "val/avg": v})
    run("a", 2, 1e-4, 400, [0.3, 0.4, 0.50])
    run("b", 2, 1e-4, 400, [0.3, 0.4, 0.46])   # mean 0.48
    run("c", 2, 3e-4, 400, [0.3, 0.5, 0.47])   # mean 0.47 (its max is higher, its last is not)
    run("d", 2, 3e-4, 200, [0.3, 0.9])         # smaller budget: no vote
    run("e", 4, 1e-4, 400, [0.3, 0.4, 0.45])
    run("f", 4, 3e-4, 400, [0.3, 0.4, 0.45])   # tie -> the smaller rate
    df = pd.DataFrame(rows)
    kept, info = best_setting_per_n(df)
    assert info[2]["chosen"] == 1e-4 and info[2]["final"] == {"0.0001": pytest.approx(0.48), "0.0003": 0.47}
    assert info[4]["chosen"] == 1e-4 and info[2]["runs"] == {"0.0001": 2, "0.0003": 1}
    assert sorted(kept["run_id"].unique()) == ["a", "b", "e"]
    fit = {"by": "n", "selected": {"column": "lr", "by_n": {str(k): v for k, v in info.items()}}}
    assert keep_selected(df, fit).equals(kept) and keep_selected(df, {}).equals(df)


def test_small_sample_widening_restores_the_coverage_of_a_few_runs_bootstrap():
    """The mean of k = 6 normal runs: a percentile interval from resampling the runs covers the true mean in ~87%
    of data sets, not 95%; widened about the estimate by small_sample_widening(6) (or read at expanded_level) it
    covers ~95%, as Student's t interval does. Closed forms: the factor is sqrt(k/(k-1)) t/z, 1 without runs."""
    from scipy import stats

    from rlscale.scaling.isocompute import expanded_level, small_sample_widening, widen

    k, sets, B = 6, 3000, 400
    t = stats.t.ppf(0.975, k - 1)
    assert small_sample_widening(k) == pytest.approx(np.sqrt(k / (k - 1)) * t / stats.norm.ppf(0.975))
    assert small_sample_widening(6) == pytest.approx(1.437, abs=1e-3) and small_sample_widening(None) == 1.0
    assert expanded_level(0.95, None) == 0.95 and expanded_level(0.5, 6) == pytest.approx(0.5)
    assert expanded_level(0.975, 6) == pytest.approx(stats.norm.cdf(np.sqrt(6 / 5) * t))
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (sets, k))
    draws = np.take_along_axis(x[:, None, :], rng.integers(0, k, (sets, B, k)), axis=2).mean(axis=2)
    est = x.mean(axis=1)
    f = small_sample_widening(k)

    def coverage(lo, hi):
        return float(np.mean((lo <= 0.0) & (0.0 <= hi)))

    raw = coverage(np.quantile(draws, 0.025, axis=1), np.quantile(draws, 0.975, axis=1))
    wide = widen(draws, est[:, None], f)
    widened = coverage(np.quantile(wide, 0.025, axis=1), np.quantile(wide, 0.975, axis=1))
    expanded = coverage(np.quantile(draws, expanded_level(0.025, k), axis=1),
                        np.quantile(draws, expanded_level(0.975, k), axis=1))
    half = t * x.std(axis=1, ddof=1) / np.sqrt(k)
    assert coverage(est - half, est + half) == pytest.approx(0.95, abs=0.015)  # Student's t, the reference
    assert raw < 0.90 and widened == pytest.approx(0.95, abs=0.02)
    assert 0.91 < expanded < 0.97 and expanded > raw + 0.05  # its extreme quantiles of 400 draws: ~0.93
    assert np.array_equal(widen(np.array([-5.0, 0.5, 5.0]), 0.0, 2.0, (-3.0, 3.0)), [-3.0, 1.0, 3.0])


def test_allocation_gaps_widen_their_resampled_intervals_about_the_point_gap():
    from rlscale.scaling.isocompute import allocation_gaps

    top = {"R0": 0.4, "A": 0.5, "C_mid": 500.0, "B": 1.2}
    point = {2: dict(top), 4: {**top, "A": 0.502}, 16: {**top, "A": 0.46}}
    rng = np.random.default_rng(1)
    resamples = [{n: {**p, "A": p["A"] + rng.normal(0, 0.01)} for n, p in point.items()} for _ in range(300)]
    C = np.geomspace(200, 3000, 5)
    g1, g2 = (allocation_gaps(point, resamples, C, 0.9, widening=w) for w in (1.0, 2.0))
    assert np.allclose(g2["gap"], g1["gap"])
    assert np.allclose(g2["lo"], g1["gap"] + 2.0 * (g1["lo"] - g1["gap"]), atol=1e-12)
    assert np.allclose(g2["hi"], g1["gap"] + 2.0 * (g1["hi"] - g1["gap"]), atol=1e-12)
