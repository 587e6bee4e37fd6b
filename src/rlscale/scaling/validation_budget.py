"""How a sweep spends its validation compute against its runs: the split of the run-to-run variance of the final
validation reward into validation sampling and everything else (the policy each seed trains), and the validation
share of each run's time that minimises that variance for a fixed compute.

Model (per run): cost T (training) + V (validation); final reward = the policy's value (variance P across seeds)
+ the validation sampling error (variance S at today's V, S V constant: samples scale with time). A sweep of fixed
compute B has R = B / (T + V) runs per n, so the variance of a mean over runs is (P + S V / V') (T + V') / B at a
validation time V'. Its minimum: V* = sqrt(S V T / P); `optimal_validation` gives V* / V and the variance a
same-compute sweep at V* sheds. Pure functions; tests/test_validation_budget.py checks them against brute force.

S comes from `val/avg_sampling_stderr` (rlscale.evals.metrics.sampling_stderr: each problem's completions
resampled, the validation problems held fixed). Runs of one sweep share the validation seeds, which cancels part
of S between runs, so the share of the spread it explains is an upper bound (stop 33 measured the part not shared
at 60-80% of S on the full lab's model). Where the runs also evaluated their final model under a second seed
(GRPOConfig.val_reseed: the `{y}_reseed` column), the part not shared is measured: with y = policy + seed effect
(shared by the runs) + own error, the difference of a run's two evaluations is seed effect difference + own error
difference, so its variance across the runs of one n is twice the own error's variance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rlscale.scaling.isocompute import X_DEFAULT as X
from rlscale.scaling.isocompute import Y_DEFAULT as Y


def _values(g: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(g[col], errors="coerce").to_numpy(float)


def _pooled_var(groups: list[np.ndarray]) -> tuple[float, int]:
    """(within-group variance pooled over the groups of >= 2 values, ddof 1 each, weighted by degrees of freedom;
    its degrees of freedom). NaN with none."""
    groups = [g for g in groups if g.size >= 2]
    dof = sum(g.size - 1 for g in groups)
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    return (ss / dof if dof else float("nan")), dof


def variance_split(df: pd.DataFrame, *, by: str = "n", x: str = X, y: str = Y, run: str = "run_id") -> dict | None:
    """At each n's largest compute: the variance between that n's runs (ddof 1, pooled over the n with >= 2 runs,
    weighted by degrees of freedom), the mean squared sampling stderr of those points (`{y}_sampling_stderr`), and,
    where the runs have a second evaluation (`{y}_reseed`), the variance of the error they do not share
    (`own_var`: half the pooled variance of the two evaluations' difference; NaN without the column). None when
    the table has no sampling stderr or no n has two runs at its largest compute."""
    se_col, re_col = f"{y}_sampling_stderr", f"{y}_reseed"
    if len(df) == 0 or se_col not in df.columns or not {by, x, y, run} <= set(df.columns):
        return None
    c = pd.to_numeric(df[x], errors="coerce")
    last = df[c > 0].assign(_c=c).sort_values("_c").groupby(run).tail(1)  # each run's last point
    values, diffs, se2 = [], [], []
    for _, g in last.groupby(by):
        g = g[g["_c"] == g["_c"].max()]  # the n's largest compute (its budget)
        v, s = _values(g, y), _values(g, se_col)
        if v.size < 2 or not np.isfinite(v).all() or not np.isfinite(s).all():
            continue
        values.append(v)
        se2.extend(s ** 2)
        if re_col in g.columns:
            d = v - _values(g, re_col)
            diffs.append(d[np.isfinite(d)])
    if not values:
        return None
    (between, dof), (diff_var, own_dof) = _pooled_var(values), _pooled_var(diffs)
    sampling = float(np.mean(se2))
    return {"between_var": between, "sampling_var": sampling, "runs": sum(v.size for v in values), "dof": dof,
            "share": min(1.0, sampling / between) if between > 0 else 1.0,
            "own_var": diff_var / 2, "own_dof": own_dof}


def optimal_validation(between_var: float, sampling_var: float, train_s: float, val_s: float) -> dict:
    """The variance-per-compute optimal validation time for runs of training time `train_s` and validation time
    `val_s` whose final rewards vary by `between_var` across seeds, `sampling_var` of it from validation sampling.
    Returns ratio = V* / V (the factor on validation samples per point), the validation share of a run's time today
    and at V*, and shed = 1 - f(V*) / f(V) with f(V') = (P + S V / V') (T + V'): the fraction of the variance a
    same-compute sweep sheds at V* (0 when today's split is optimal). P = between - sampling, floored at 0: with
    P = 0 the whole spread is validation noise, f falls towards S V as V' grows (ratio inf, shed T / (T + V)); with
    S = 0 validation adds no noise worth its time (V* = 0, shed V / (T + V))."""
    T, V, S = float(train_s), float(val_s), float(sampling_var)
    if T <= 0 or V <= 0 or S < 0 or between_var <= 0:
        raise ValueError("optimal_validation: train_s, val_s and between_var must be > 0, sampling_var >= 0")
    P = max(float(between_var) - S, 0.0)

    def f(v: float) -> float:
        return (P + S * V / v) * (T + v)

    if P == 0.0:  # the variance only falls with more validation: f decreases towards S V as V' grows
        return {"ratio": math.inf, "share_now": V / (T + V), "share_opt": 1.0, "shed": 1.0 - S * V / f(V)}
    v_opt = math.sqrt(S * V * T / P)
    return {"ratio": v_opt / V, "share_now": V / (T + V), "share_opt": v_opt / (T + v_opt),
            "shed": 1.0 - f(v_opt) / f(V) if v_opt > 0 else 1.0 - P * T / f(V)}
