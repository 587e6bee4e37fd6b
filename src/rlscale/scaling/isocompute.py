"""The iso-compute workflow on a sweep table (one row per (run, validation point)):

0. `best_setting_per_n`: when the sweep had a learning-rate grid (an `lr` column with several values per n), each n
   keeps the runs of its best rate, so allocations are compared each at its own tuned rate.
1. `record_breaking_points`: per run, in compute order, keep the first point reaching each new bucket of validation
   reward (bucket width w; w = 0 keeps every strict new maximum). Order-preserving: rows keep their table order.
   An n left with <= 4 record points (runs that barely improve) is fitted on all its points instead.
2. `fit_per_n`: a saturating sigmoid R(C) (laws.sigmoid_law) per n on the record points.
3. `frontier`: the upper envelope of the fitted curves on a log-spaced C grid and n*(C), the n attaining it.
4. `fit_n_star`: a sigmoid of log2 n*(C) in log C (R0 = log2 n* at small C, A = at large C).
5. `transitions`: C where the curve of the next larger n overtakes the smaller one, with the epochs each n has
   spent there (epochs = rollouts / (n * train_set_size), or the `epochs` column's epochs-per-rollout when present).

Step-0 evaluations with zero compute (before training) are dropped (`drop_initial_points`); other non-positive
compute, NaN metrics or missing columns are one-line UserErrors. `IsoCompute` runs all of it with a joint bootstrap over runs (points when an n has fewer than `min_runs_for_run_bootstrap`
runs) and gives `to_dict()` for fit.json. Tests: tests/test_scaling_isocompute.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rlscale.errors import UserError
from rlscale.scaling.estimators import SigmoidLaw, one_blas_thread

X_DEFAULT = "compute/rollouts"
Y_DEFAULT = "val/avg"


def require_columns(df: pd.DataFrame, cols, what: str = "table") -> None:
    """UserError naming the first missing column."""
    for c in cols:
        if c not in df.columns:
            raise UserError(f"{what} has no column '{c}' (columns: {', '.join(map(str, df.columns))})")


def drop_initial_points(df: pd.DataFrame, x: str = X_DEFAULT) -> pd.DataFrame:
    """Drop the before-training evaluations (step 0 with zero compute): log C is undefined there. Any other
    non-positive compute is left for check_values to reject."""
    if "step" not in df.columns or x not in df.columns:
        return df
    initial = (pd.to_numeric(df[x], errors="coerce") == 0) & (pd.to_numeric(df["step"], errors="coerce") == 0)
    return df[~initial.to_numpy()]


def measured_gains(df: pd.DataFrame, *, by: str = "n", x: str = X_DEFAULT, y: str = Y_DEFAULT,
                   run_col: str = "run_id") -> dict:
    """{n: [last - first validation value of each run]}, ordered by compute within a run (the first point is the
    before-training evaluation when it was stored). The raw end-to-end change, not the record-breaking envelope:
    the envelope of a flat, noisy curve rises by the running maximum of its noise, so a fitted gain alone can
    report progress where none was made.

    Runs are listed by (budget, problems_per_batch, seed) where the table has those columns, the run id last: run
    ids hash the output path, and the order of the list is the order a bootstrap draws from, so the same sweep
    written elsewhere gives the same intervals."""
    out: dict = {}
    keys = [by] + [c for c in ("budget", "problems_per_batch", "seed") if c in df.columns and c != by] + [run_col]
    for _, g in df.sort_values(keys + [x], kind="stable").groupby(keys, sort=True):
        n = g[by].iloc[0]
        v = pd.to_numeric(g[y], errors="coerce").to_numpy(float)
        v = v[np.isfinite(v)]
        if v.size >= 2:
            out.setdefault(_key(n), []).append(float(v[-1] - v[0]))
    return out


BERNOULLI_MEANS = ("val/avg", "val/pass@1", "val/worst@1", "val/maj@1")
"""validation metrics that are a mean over problems of each problem's share of val_n 0/1 samples"""


def best_setting_per_n(df: pd.DataFrame, col: str = "lr", *, by: str = "n", x: str = X_DEFAULT, y: str = Y_DEFAULT,
                       run_col: str = "run_id") -> tuple[pd.DataFrame, dict]:
    """Keep, for each n, only the runs of its best value of a swept setting (a learning-rate grid), as Chinchilla
    tuned the learning rate per model size before comparing sizes: each n is compared at its own best setting.

    Best = the highest mean over runs of y at each run's last point, among the runs at that n's largest budget
    (`budget` column, else the largest last compute); ties go to the smaller value. Returns (the kept rows, {n:
    {"chosen": value, "final": {value: mean}, "runs": {value: count}}}). The choice is made once on the data, not
    inside the bootstrap, so intervals leave out its selection noise."""
    require_columns(df, (col, by, x, y, run_col))
    last = df.sort_values(x).groupby(run_col).tail(1)
    chosen_by_n, info = {}, {}
    for n, g in last.groupby(by, sort=True):
        top = g[g["budget"] == g["budget"].max()] if "budget" in g.columns else g[g[x] == g[x].max()]
        means = top.groupby(col, sort=True)[y].mean()
        chosen = means.index[int(np.argmax(means.to_numpy(float)))]
        info[_key(n)] = {"chosen": float(chosen), "final": {str(float(v)): float(m) for v, m in means.items()},
                         "runs": {str(float(v)): int(c) for v, c in top.groupby(col)[run_col].nunique().items()}}
        chosen_by_n[float(n)] = float(chosen)
    return _rows_at(df, by, col, chosen_by_n), info


def _rows_at(df: pd.DataFrame, by: str, col: str, chosen: dict) -> pd.DataFrame:
    """The rows whose `col` is their n's chosen value ({float n: value}); rows of an n not in `chosen` stay."""
    want = df[by].astype(float).map(chosen)
    return df[(want.isna() | (df[col].astype(float) == want)).to_numpy()]


def selected_values(fit: dict) -> dict:
    """{float n: chosen value} of a fit.json's `selected` setting (best_setting_per_n); {} when it selected nothing."""
    return {float(n): float(v["chosen"]) for n, v in ((fit.get("selected") or {}).get("by_n") or {}).items()}


def selected_rate(fit: dict, n: float, default: float) -> float:
    """The chosen rate of the swept n nearest to n in log2 (a planned n need not be swept); `default` without a
    selection."""
    chosen = selected_values(fit)
    return chosen[min(chosen, key=lambda m: abs(math.log2(m / n)))] if chosen else default


def keep_selected(df: pd.DataFrame, fit: dict) -> pd.DataFrame:
    """The rows of a sweep table that a fit.json's `selected` setting kept (best_setting_per_n); all rows when the
    fit selected nothing or the table lacks the column."""
    col, by = (fit.get("selected") or {}).get("column"), fit.get("by", "n")
    if not col or col not in df.columns or by not in df.columns:
        return df
    return _rows_at(df, by, col, selected_values(fit))


def initial_stderr(df: pd.DataFrame, *, by: str = "n", x: str = X_DEFAULT, y: str = Y_DEFAULT) -> dict:
    """{n: sampling standard error of the before-training validation value that every run of n shares}.

    The measured gain (last - first validation, `measured_gains`) is resampled over runs, but when every run starts
    from one before-training evaluation (the same model, validation set and sampling seed: equal first values) that
    measurement's sampling error is common to all of them, and resampling runs leaves it out. The stored
    `{y}_sampling_stderr` column when the evaluation recorded it (val/avg since stop 33: `evals.metrics.
    sampling_stderr`, the unbiased estimate from each problem's correct count); else, for a mean over N problems of
    each problem's share of k Bernoulli samples (BERNOULLI_MEANS), whose variance is sum_i p_i (1 - p_i) / (k N^2)
    <= p (1 - p) / (k N) (Jensen), that bound, with p the stored value, N the `val/problems` and k the `val_n`
    column; otherwise the stored `{y}_stderr` column (the standard error over problems, which also counts problem
    sampling: wider). 0 where the first values differ across runs (the run resampling covers them) or the table
    has none of these."""
    out: dict = {}
    if "step" not in df.columns:
        return out
    first = df[(pd.to_numeric(df["step"], errors="coerce") == 0) & (pd.to_numeric(df[x], errors="coerce") == 0)]
    for n, g in first.groupby(by, sort=True):
        v = pd.to_numeric(g[y], errors="coerce").to_numpy(float)
        if v.size == 0 or not np.all(v == v[0]) or not np.isfinite(v[0]):
            out[_key(n)] = 0.0
            continue
        row = g.iloc[0]
        measured = float(pd.to_numeric(row.get(f"{y}_sampling_stderr"), errors="coerce"))
        if np.isfinite(measured) and measured >= 0:
            out[_key(n)] = measured
        elif y in BERNOULLI_MEANS and {"val_n", "val/problems"} <= set(g.columns) and 0.0 <= v[0] <= 1.0:
            k_N = float(row["val_n"]) * float(row["val/problems"])
            out[_key(n)] = math.sqrt(v[0] * (1.0 - v[0]) / k_N) if k_N > 0 else 0.0
        elif f"{y}_stderr" in g.columns and np.isfinite(float(row[f"{y}_stderr"])):
            out[_key(n)] = float(row[f"{y}_stderr"])
        else:
            out[_key(n)] = 0.0
    return out


def check_values(df: pd.DataFrame, x: str, y: str) -> None:
    """NaN metrics and non-positive compute are one-line errors naming the column."""
    for c in (x, y):
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        bad = int((~np.isfinite(v)).sum())
        if bad:
            raise UserError(f"column '{c}': {bad} NaN/non-numeric value(s); drop or fix those rows")
    if (df[x].to_numpy(float) <= 0).any():
        raise UserError(f"column '{x}': {int((df[x].to_numpy(float) <= 0).sum())} non-positive compute value(s); "
                        "compute must be > 0 (drop the step-0 point)")


def record_breaking_points(df: pd.DataFrame, bucket_width: float = 0.01, *, x: str = X_DEFAULT, y: str = Y_DEFAULT,
                           run_col: str = "run_id") -> pd.DataFrame:
    """Rows (original order and index) where a run first reaches a new bucket floor(y / w) of validation reward,
    scanning each run in increasing x. w = 0: every strict new maximum. The first point of a run is always kept."""
    if bucket_width < 0:
        raise UserError(f"bucket_width must be >= 0, got {bucket_width}")
    require_columns(df, (x, y, run_col))
    keep = np.zeros(len(df), dtype=bool)
    xs = df[x].to_numpy(float)
    ys = df[y].to_numpy(float)
    runs = df[run_col].to_numpy()
    for r in pd.unique(runs):
        rows = np.flatnonzero(runs == r)
        rows = rows[np.argsort(xs[rows], kind="stable")]  # compute order within the run
        best = -math.inf
        for i in rows:
            level = math.floor(ys[i] / bucket_width) if bucket_width > 0 else ys[i]
            if level > best:
                keep[i] = True
                best = level
    return df[keep]


def running_max_envelope(df: pd.DataFrame, C_grid: np.ndarray, *, x: str = X_DEFAULT, y: str = Y_DEFAULT,
                         by: str = "n") -> tuple[np.ndarray, np.ndarray]:
    """Empirical frontier: at each C, the best reward any point with x <= C reached, and the n that reached it
    (the smallest n on ties; NaN where no point yet). Used to check record extraction against all points."""
    xs = df[x].to_numpy(float)
    ys = df[y].to_numpy(float)
    ns = df[by].to_numpy(float)
    best = np.full(len(C_grid), np.nan)
    who = np.full(len(C_grid), np.nan)
    for i, C in enumerate(C_grid):
        m = xs <= C
        if m.any():
            j = np.flatnonzero(m)
            top = ys[j].max()
            best[i] = top
            who[i] = ns[j][ys[j] == top].min()
    return best, who


def fit_per_n(df: pd.DataFrame, *, by: str = "n", x: str = X_DEFAULT, y: str = Y_DEFAULT, huber_delta=None,
              B_max: float = 20.0, profile: bool = False) -> dict:
    """{n: fitted SigmoidLaw} on the given points (usually record points), no bootstrap; `profile` adds the
    profile-likelihood interval of each asymptote A."""
    fits = {}
    for n, g in df.groupby(by, sort=True):
        if len(g) <= 4:
            raise UserError(f"{by}={n}: {len(g)} point(s); the per-{by} sigmoid has 4 parameters and needs >= 5 "
                            "(use a smaller --bucket-width or validate more often)")
        fits[_key(n)] = SigmoidLaw(huber_delta=huber_delta, B_max=B_max, profile=profile).fit(
            g[x].to_numpy(float), g[y].to_numpy(float))
    return fits


def _key(n):
    f = float(n)
    return int(f) if f.is_integer() else f


def curves(params_by_n: dict, C_grid: np.ndarray, c_first: dict | None = None) -> tuple[list, np.ndarray]:
    """(sorted ns, matrix (len(ns), len(C_grid)) of fitted rewards) from {n: {R0, A, C_mid, B}}. With c_first
    {n: compute of n's first measured point}, a curve is -inf below it: an allocation whose first step costs more
    than C does not exist at C, so its extrapolated fit must not win the frontier there."""
    from rlscale.scaling.laws import sigmoid_law

    ns = sorted(params_by_n)
    R = np.array([sigmoid_law(C_grid, **params_by_n[n]) for n in ns], dtype=float)
    for i, n in enumerate(ns):
        if c_first and n in c_first:
            R[i, C_grid < c_first[n] * (1 - 1e-9)] = -np.inf
    return ns, R


def frontier(params_by_n: dict, C_grid: np.ndarray, c_first: dict | None = None) -> pd.DataFrame:
    """Upper envelope of the fitted curves: columns C, reward, n_star (smallest n on exact ties); see curves() for
    c_first. Grid points where no n has data yet are dropped."""
    ns, R = curves(params_by_n, C_grid, c_first)
    ok = np.isfinite(R).any(axis=0)
    R, C_grid = R[:, ok], C_grid[ok]
    j = np.argmax(R, axis=0)
    return pd.DataFrame({"C": C_grid, "reward": R[j, np.arange(len(C_grid))], "n_star": np.array(ns)[j]})


def isoflop_n_star(R: np.ndarray, ns) -> np.ndarray:
    """Compute-optimal n from iso-compute profiles, as Hoffmann et al. (2022, approach 2) read N_opt from iso-FLOP
    profiles: at each C (a column of R, rows = sorted swept ns) a least-squares parabola of reward in log2 n; n* =
    2 ** its vertex when it is concave, clipped to the swept range (an optimum outside the grid is not measured),
    else the best swept n. Continuous in the data: near-ties between adjacent n move it a little instead of flipping
    an argmax between them. Needs >= 3 swept n and finite R."""
    x = np.log2(np.asarray(ns, float))
    R = np.asarray(R, float)
    if x.size < 3 or R.shape[0] != x.size or not np.isfinite(R).all():
        raise ValueError("isoflop_n_star needs >= 3 ns and a finite (len(ns), len(C)) reward matrix")
    (a, b, _), *_ = np.linalg.lstsq(np.vander(x, 3), R, rcond=None)  # columns x^2, x, 1
    best = x[np.argmax(R, axis=0)]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(a < 0, -b / (2 * a), best)
    return 2.0 ** np.clip(vertex, x[0], x[-1])


def allocation_gaps(point: dict, resamples: list[dict], C: np.ndarray, level: float = 0.95,
                    c_first: dict | None = None, widening: float = 1.0) -> dict:
    """How much each allocation loses against the best one, at each C of a grid, from fitted per-n curves.

    best_n[j] is the n with the highest point-estimate curve at C[j]; gap[i, j] = R_{n_i}(C[j]) - R_{best_n[j]}(C[j])
    (<= 0; NaN where n_i has no data yet, see curves()). With joint resamples (`joint_resamples`), the same
    difference in each resample gives a two-sided `level` interval [lo, hi] (the best n's own is [0, 0]), and
    near_optimal[j] lists the n whose interval reaches 0: the allocations the data cannot tell from the best at C[j].
    The best n is chosen on the same data, which favours it (a winner's curse), so the set errs small. Where
    the optimum is a plateau several n sit in it, and an argmax or vertex n* there is picked by noise; the set
    says how wide the plateau is and what leaving it costs. The resampled gaps are widened about the point ones by
    `widening` (fit_widening of the runs behind them). Without resamples lo = hi = gap."""
    ns, R = curves(point, C, c_first)
    best, cols, missing = np.argmax(R, axis=0), np.arange(R.shape[1]), ~np.isfinite(R)

    def gaps(R: np.ndarray) -> np.ndarray:
        return np.where(missing, np.nan, R - R[best, cols])

    gap = lo = hi = gaps(R)
    if resamples:
        d = widen(np.array([gaps(curves(params, C, c_first)[1]) for params in resamples]), gap, widening)
        q = (1.0 - level) / 2.0
        lo, hi = np.quantile(d, q, axis=0), np.quantile(d, 1.0 - q, axis=0)
    near = [[ns[i] for i in range(len(ns)) if np.isfinite(gap[i, j]) and hi[i, j] >= 0.0] for j in cols]
    return {"C": np.asarray(C, float), "ns": ns, "best_n": [ns[i] for i in best], "gap": gap, "lo": lo, "hi": hi,
            "near_optimal": near, "level": level, "n_resamples": len(resamples)}


def joint_resamples(samples: dict) -> list[dict]:
    """{n: stored bootstrap rows (R0, A, C_mid, B)} -> one {n: params} per joint resample (row i of every n), leaving
    out the resamples where some n's refit failed (stored as NaN)."""
    names = SigmoidLaw.param_names
    B = min((len(s) for s in samples.values()), default=0)
    return [{n: dict(zip(names, map(float, s[i]))) for n, s in samples.items()} for i in range(B)
            if all(np.isfinite(s[i]).all() for s in samples.values())]


def small_sample_widening(k: int | None, level: float = 0.95) -> float:
    """The factor by which a percentile interval from resampling k runs with replacement understates a two-sided
    `level` interval: sqrt(k / (k - 1)) * t_{k-1} / z. A resampled mean of k runs has variance (k - 1) / k * s^2 / k,
    and a mean of k runs has Student's t quantiles, not normal ones (the factor of Hesterberg's expanded percentile
    interval, 2015). k = 5: 1.58, 6: 1.44, 10: 1.22, 30: 1.05; 1 when k is None or < 2 (no run bootstrap). Measured
    on the full lab's Easy sweeps (docs/lab_results.md, stop 29): disjoint halves of 12 seeds disagreed about log2
    n*(C_max) by 1.48x the spread of their own 6-run bootstraps."""
    if k is None or k < 2:
        return 1.0
    from scipy import stats

    a = (1.0 + level) / 2.0
    return float(_expanded_z(a, k) / stats.norm.ppf(a))


def expanded_level(p: float, k: int | None) -> float:
    """The quantile level to read off a k-run bootstrap in place of the nominal `p`: Phi(sqrt(k / (k - 1)) *
    t_{k-1}^-1(p)) (Hesterberg's expanded percentile interval, 2015); p when k is None or < 2. Used where the
    draws are discrete (the frontier's argmax n*), so they cannot be widened (`widen`) without moving ties."""
    if k is None or k < 2:
        return p
    from scipy import stats

    return float(stats.norm.cdf(_expanded_z(p, k)))


def _expanded_z(p: float, k: int) -> float:
    """sqrt(k / (k - 1)) * t_{k-1}^-1(p): the normal quantile a k-run bootstrap must reach to stand for level p."""
    from scipy import stats

    return float(np.sqrt(k / (k - 1)) * stats.t.ppf(p, k - 1))


def fit_widening(per_n: dict, level: float = 0.95) -> tuple[float, int | None]:
    """(small_sample_widening(k), k) of a fit.json's per_n, k = the fewest runs among the n resampled by runs (their
    `n_runs`, else their count of measured gains); (1.0, None) when no n is."""
    ks = [int(v.get("n_runs") or len(v.get("measured_gains") or [])) for v in per_n.values()
          if v.get("bootstrap_unit") == "runs"]
    ks = [k for k in ks if k > 0]
    k = min(ks) if ks else None
    return small_sample_widening(k, level), k


def widen(draws, point, factor: float, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Resampled values moved away from the point estimate by `factor` (point + factor * (draws - point)), clipped
    to `bounds`: how rlscale turns run-bootstrap draws into intervals of the right width (small_sample_widening)."""
    out = point + factor * (np.asarray(draws, float) - point)
    return out if bounds is None else np.clip(out, *bounds)


def widen_ratio(draws, point, factor: float, bounds: tuple[float, float]) -> np.ndarray:
    """`widen` for positive quantities read on a log scale (n*, compute): the log-ratio to the point estimate is
    stretched by `factor`, the result clipped to `bounds` (the swept range, in the quantity's own units)."""
    return np.exp(widen(np.log(draws), np.log(point), factor, (np.log(bounds[0]), np.log(bounds[1]))))


def learning_onset(C: np.ndarray, reward: np.ndarray, frac: float = 0.1) -> int:
    """Index of the smallest C on the grid where `reward` (the frontier) has made `frac` of its largest rise over
    the grid; 0 when it does not rise. Below it no allocation has learnt yet and every n ties at the base reward,
    so an n* read there (argmax or vertex) is picked by noise."""
    gain = np.asarray(reward, float) - float(reward[0])
    top = float(gain.max())
    if not top > 0:
        return 0
    return int(np.argmax(gain >= frac * top))


def first_compute(df: pd.DataFrame, *, by: str = "n", x: str = X_DEFAULT) -> dict:
    """{n: smallest positive compute measured for n} (the cost of its first step when validated after step 1)."""
    return {_key(n): float(g[x].min()) for n, g in df.groupby(by)}


def fit_n_star(front: pd.DataFrame, huber_delta: float = 0.25) -> SigmoidLaw:
    """Sigmoid of log2 n*(C) in log C on the frontier grid (R0/A = log2 n* at small/large C)."""
    return SigmoidLaw(huber_delta=huber_delta).fit(front["C"].to_numpy(float),
                                                    np.log2(front["n_star"].to_numpy(float)))


def n_star_from_fit(C, params: dict) -> np.ndarray:
    """n*(C) = 2 ** sigmoid(C) from the n* sigmoid params."""
    from rlscale.scaling.laws import sigmoid_law

    return 2.0 ** sigmoid_law(np.asarray(C, float), **params)


def transitions(params_by_n: dict, C_grid: np.ndarray, epochs_per_rollout: dict | None = None,
                c_first: dict | None = None) -> list[dict]:
    """For each pair of adjacent n (sorted), the compute C where the larger n's curve overtakes the smaller one
    (first sign change of f_big - f_small from <= 0 to > 0 on the grid, refined by bisection), with the reward
    there and epochs spent by each n (C * epochs_per_rollout[n])."""
    from scipy.optimize import brentq

    from rlscale.scaling.laws import sigmoid_law

    ns = sorted(params_by_n)
    out = []
    for small, big in zip(ns, ns[1:]):
        def diff(C, small=small, big=big):
            return float(sigmoid_law(C, **params_by_n[big]) - sigmoid_law(C, **params_by_n[small]))

        lo = max((c_first or {}).get(small, 0.0), (c_first or {}).get(big, 0.0))
        grid = C_grid[C_grid >= lo * (1 - 1e-9)]  # both allocations exist
        d = np.array([diff(C) for C in grid])
        idx = np.flatnonzero((d[:-1] <= 0) & (d[1:] > 0))
        if not idx.size:
            continue
        i = idx[0]
        C = grid[i] if d[i] == 0 else math.exp(brentq(lambda u: diff(math.exp(u)), math.log(grid[i]),
                                                      math.log(grid[i + 1]), xtol=1e-10))
        row = {"from_n": small, "to_n": big, "C": float(C),
               "reward": float(sigmoid_law(C, **params_by_n[big]))}
        if epochs_per_rollout:
            row["epochs_from"] = float(C * epochs_per_rollout[small]) if small in epochs_per_rollout else None
            row["epochs_to"] = float(C * epochs_per_rollout[big]) if big in epochs_per_rollout else None
        out.append(row)
    return out


def epochs_per_rollout(df: pd.DataFrame, *, by: str = "n", x: str = X_DEFAULT,
                       train_set_size: int | None = None) -> dict | None:
    """{n: epochs per rollout}: median of epochs / x from an `epochs` column, else 1 / (n * train_set_size)."""
    if "epochs" in df.columns:
        out = {}
        for n, g in df.groupby(by):
            r = (g["epochs"].to_numpy(float) / g[x].to_numpy(float))
            r = r[np.isfinite(r)]
            if r.size:
                out[_key(n)] = float(np.median(r))
        return out
    if train_set_size:
        return {_key(n): 1.0 / (float(n) * train_set_size) for n in df[by].unique()}
    return None


class IsoCompute:
    """The whole workflow; settings in __init__, `fit(df)` returns self; fitted: `records_`, `per_n_` {n: SigmoidLaw},
    `frontier_` (DataFrame), `n_star_fit_` (SigmoidLaw of log2 n*), `transitions_`, `params_`/`ci_` (n* sigmoid)."""

    name = "isocompute"

    def __init__(self, x: str = X_DEFAULT, y: str = Y_DEFAULT, by: str = "n", run_col: str = "run_id",
                 bucket_width: float = 0.01, n_grid: int = 200, n_bootstrap: int = 0, ci_level: float = 0.95,
                 seed: int = 0, huber_delta: float | None = None, train_set_size: int | None = None,
                 min_runs_for_run_bootstrap: int = 5, profile: bool = True, select: str | None = "lr"):
        self.x, self.y, self.by, self.run_col = x, y, by, run_col
        self.bucket_width = bucket_width
        self.n_grid = n_grid
        self.n_bootstrap = n_bootstrap
        self.ci_level = ci_level
        self.seed = seed
        self.huber_delta = huber_delta
        self.train_set_size = train_set_size
        self.min_runs_for_run_bootstrap = min_runs_for_run_bootstrap
        self.profile = profile
        self.select = select

    def fit(self, df: pd.DataFrame) -> IsoCompute:
        with one_blas_thread():
            return self._fit(df)

    def _fit(self, df: pd.DataFrame) -> IsoCompute:
        require_columns(df, (self.x, self.y, self.by, self.run_col))
        self.selected_ = {}
        if self.select and self.select in df.columns and (df.groupby(self.by)[self.select].nunique() > 1).any():
            df, self.selected_ = best_setting_per_n(df, self.select, by=self.by, x=self.x, y=self.y,
                                                    run_col=self.run_col)
        self.measured_gains_ = measured_gains(df, by=self.by, x=self.x, y=self.y, run_col=self.run_col)
        self.initial_stderr_ = initial_stderr(df, by=self.by, x=self.x, y=self.y)
        df = drop_initial_points(df, self.x)
        check_values(df, self.x, self.y)
        if df[self.by].nunique() < 2:
            raise UserError(f"isocompute needs runs at >= 2 values of '{self.by}', got {df[self.by].nunique()}")
        records = record_breaking_points(df, self.bucket_width, x=self.x, y=self.y, run_col=self.run_col)
        # an n whose runs barely improve has too few record points for a 4-parameter sigmoid: use all its points
        few = [n for n, g in records.groupby(self.by) if len(g) <= 4]
        self.points_used_ = {_key(n): ("all" if n in few else "records") for n in df[self.by].unique()}
        self.records_ = pd.concat([records[~records[self.by].isin(few)], df[df[self.by].isin(few)]])
        self.per_n_ = fit_per_n(self.records_, by=self.by, x=self.x, y=self.y, huber_delta=self.huber_delta,
                                profile=self.profile)
        xs = df[self.x].to_numpy(float)
        self.C_grid_ = np.geomspace(xs.min(), xs.max(), self.n_grid)
        params = {n: f.params_ for n, f in self.per_n_.items()}
        self.c_first_ = first_compute(df, by=self.by, x=self.x)
        self.frontier_ = frontier(params, self.C_grid_, self.c_first_)
        self.n_star_fit_ = fit_n_star(self.frontier_)
        self.params_ = self.n_star_fit_.params_
        self.epochs_per_rollout_ = epochs_per_rollout(df, by=self.by, x=self.x, train_set_size=self.train_set_size)
        self.transitions_ = transitions(params, self.C_grid_, self.epochs_per_rollout_, self.c_first_)
        self.ci_, self.per_n_ci_, self.bootstrap_ = {}, {}, {}
        self.bootstrap_unit_ = {}
        if self.n_bootstrap > 0:
            self._bootstrap()
        return self

    def _bootstrap(self) -> None:
        rng = np.random.default_rng(self.seed)
        rec = self.records_
        pools = {}
        for n, g in rec.groupby(self.by, sort=True):
            n = _key(n)
            runs = g[self.run_col].to_numpy()
            uniq = pd.unique(runs)
            if len(uniq) >= self.min_runs_for_run_bootstrap:
                pools[n] = ("runs", [np.flatnonzero(runs == r) for r in uniq], g)
            else:
                pools[n] = ("points", None, g)
            self.bootstrap_unit_[n] = pools[n][0]
        names = ("R0", "A", "C_mid", "B")
        per_n_samples = {n: [] for n in pools}
        star_samples = []
        for _ in range(self.n_bootstrap):
            params = {}
            for n, (unit, members, g) in pools.items():
                if unit == "runs":
                    pick = rng.integers(0, len(members), len(members))
                    idx = np.concatenate([members[k] for k in pick])
                else:
                    idx = rng.integers(0, len(g), len(g))
                est = self.per_n_[n]
                F = est._prepare(g[self.x].to_numpy(float)[idx][:, None])
                theta, _ = est._minimise(F, g[self.y].to_numpy(float)[idx], [est.theta_],
                                         est._bounds(F, g[self.y].to_numpy(float)[idx]))
                params[n] = est._to_params(theta)
                per_n_samples[n].append([params[n][k] for k in names])
            front = frontier(params, self.C_grid_, self.c_first_)
            ns_est = self.n_star_fit_
            zb = np.log2(front["n_star"].to_numpy(float))
            Fb = ns_est._prepare(front["C"].to_numpy(float)[:, None])
            theta, _ = ns_est._minimise(Fb, zb, [ns_est.theta_], ns_est._bounds(Fb, zb))
            star_samples.append([ns_est._to_params(theta)[k] for k in names])
        q = (1.0 - self.ci_level) / 2.0
        star = np.array(star_samples)
        self.ci_ = {k: [float(np.quantile(star[:, j], q)), float(np.quantile(star[:, j], 1 - q))]
                    for j, k in enumerate(names)}
        for n, rows in per_n_samples.items():
            arr = np.array(rows)
            self.per_n_ci_[n] = {k: [float(np.quantile(arr[:, j], q)), float(np.quantile(arr[:, j], 1 - q))]
                                 for j, k in enumerate(names)}
            self.bootstrap_[n] = arr

    def to_dict(self) -> dict:
        """JSON-ready result for fit.json."""
        per_n = {}
        for n, f in self.per_n_.items():
            d = f.to_dict()
            d["ci"] = self.per_n_ci_.get(n, {})
            d["n_runs"] = int(self.records_[self.records_[self.by] == n][self.run_col].nunique())
            d["bootstrap_unit"] = self.bootstrap_unit_.get(n)
            d["points_used"] = self.points_used_.get(n)
            d["C_first"] = self.c_first_.get(n)
            d["bootstrap_samples"] = self.bootstrap_[n].tolist() if n in self.bootstrap_ else []
            d["measured_gains"] = self.measured_gains_.get(n, [])
            d["initial_stderr"] = self.initial_stderr_.get(n, 0.0)
            per_n[str(n)] = d
        nsf = self.n_star_fit_
        return {
            "law": "isocompute", "x": self.x, "y": self.y, "by": self.by,
            "params": self.params_, "ci": self.ci_, "ci_level": self.ci_level,
            "r2": nsf.r2_, "rmse": nsf.rmse_, "n_points": int(len(self.records_)),
            "n_star_fit": {"space": "log2 n*", "params": nsf.params_, "ci": self.ci_, "r2": nsf.r2_,
                           "rmse": nsf.rmse_},
            "per_n": per_n,
            "frontier": self.frontier_.to_dict(orient="records"),
            "transitions": self.transitions_,
            "epochs_per_rollout": {str(k): v for k, v in (self.epochs_per_rollout_ or {}).items()},
            "x_range": [float(self.C_grid_[0]), float(self.C_grid_[-1])],
            "bucket_width": self.bucket_width, "n_bootstrap": self.n_bootstrap, "seed": self.seed,
        } | ({"selected": {"column": self.select, "by_n": {str(k): v for k, v in self.selected_.items()}}}
             if self.selected_ else {})

    def summary(self) -> str:
        lines = [f"isocompute: {len(self.records_)} record points, n in {sorted(self.per_n_)}"]
        for n, v in self.selected_.items():
            lines.append(f"  n={n}: best {self.select} {v['chosen']:g} of {', '.join(v['final'])} (final {self.y} "
                         + ", ".join(f"{m:.4g}" for m in v["final"].values()) + ")")
        for n, f in self.per_n_.items():
            p = f.params_
            lines.append(f"  n={n}: R0={p['R0']:.3f} A={p['A']:.3f} C_mid={p['C_mid']:.4g} B={p['B']:.3f} "
                         f"R^2={f.r2_:.3f}")
        p = self.params_
        lines.append(f"  log2 n*(C): {p['R0']:.2f} -> {p['A']:.2f}, C_mid={p['C_mid']:.4g}, B={p['B']:.3f}")
        for t in self.transitions_:
            lines.append(f"  n={t['from_n']} -> {t['to_n']} at C={t['C']:.4g}")
        return "\n".join(lines)


def _fitters() -> dict:
    from rlscale.scaling.estimators import LAWS

    return {**LAWS, "isocompute": IsoCompute}


FITTERS: dict = _fitters()  # every law estimator plus the isocompute workflow, by CLI name
