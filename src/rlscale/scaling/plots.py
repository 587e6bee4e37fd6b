"""Figures for scaling fits (matplotlib, Agg). Plot functions take data + fit dicts and return a Figure; no I/O
inside them; `save(fig, path)` writes a PNG. Tests: tests/test_scaling_plan.py (figures written by the fit command)."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(ns):
    plt = _plt()
    cmap = plt.get_cmap("viridis")
    k = max(len(ns) - 1, 1)
    return {n: cmap(i / k) for i, n in enumerate(ns)}


def reward_vs_compute(df, fit: dict, *, x: str, y: str, by: str = "n"):
    """Points per n (record points solid, others faint), fitted sigmoids, and the frontier coloured by n*."""
    from rlscale.scaling.laws import sigmoid_law

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    per_n = {float(k): v for k, v in fit["per_n"].items()}
    ns = sorted(per_n)
    col = _colors(ns)
    grid = np.geomspace(*fit["x_range"], 300)
    for n in ns:
        g = df[df[by].astype(float) == n]
        ax.scatter(g[x], g[y], s=8, alpha=0.35, color=col[n])
        ax.plot(grid, sigmoid_law(grid, **per_n[n]["params"]), color=col[n], lw=1.2, label=f"{by}={n:g}")
    fr = fit["frontier"]
    C = np.array([r["C"] for r in fr])
    R = np.array([r["reward"] for r in fr])
    ns_star = np.array([float(r["n_star"]) for r in fr])
    for n in ns:
        m = ns_star == n
        if m.any():
            ax.scatter(C[m], R[m], s=14, marker="s", color=col[n], edgecolor="black", linewidth=0.4, zorder=3)
    ax.plot(C, R, color="black", lw=0.8, ls="--", label="frontier (colour = n*)")
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=8)
    ax.set_title("reward vs compute per n, frontier coloured by n*")
    fig.tight_layout()
    return fig


def n_star_vs_compute(fit: dict):
    """n*(C) on the frontier grid (steps) with its fitted sigmoid in log2 n."""
    from rlscale.scaling.laws import sigmoid_law

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    fr = fit["frontier"]
    C = np.array([r["C"] for r in fr])
    ax.step(C, [float(r["n_star"]) for r in fr], where="mid", color="tab:blue", label="n* (frontier)")
    ax.plot(C, 2.0 ** sigmoid_law(C, **fit["params"]), color="tab:red", label="sigmoid fit of log2 n*")
    iso = _isoflop_band(fit, C)
    if iso is not None:
        Ci, mid, lo, hi = iso
        ax.plot(Ci, mid, color="tab:green", label="iso-FLOP vertex n*")
        if lo is not None:
            ax.fill_between(Ci, lo, hi, color="tab:green", alpha=0.2, lw=0, label="95% band (bootstrap)")
    for t in fit.get("transitions", []):
        ax.axvline(t["C"], color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("compute")
    ax.set_ylabel("n*")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _family(fit: dict) -> tuple[dict, list[dict], float]:
    """(per-n fitted params, the usable joint bootstrap resamples, the smallest compute where every n has data) of
    a fit.json."""
    from rlscale.scaling.isocompute import joint_resamples

    per_n = {float(k): v for k, v in fit.get("per_n", {}).items()}
    return ({n: v["params"] for n, v in per_n.items()},
            joint_resamples({n: v.get("bootstrap_samples") or [] for n, v in per_n.items()}),
            max((float(v.get("C_first") or 0.0) for v in per_n.values()), default=0.0))


def allocation_gaps(fit: dict, points: int = 60, level: float = 0.95):
    """Each n's fitted reward minus the best n's vs compute (isocompute.allocation_gaps), with the joint-bootstrap
    band, where every n has data: the n whose band reaches 0 are the near-optimal allocations at that C."""
    from rlscale.scaling.isocompute import allocation_gaps as gaps
    from rlscale.scaling.isocompute import fit_widening

    point, resamples, c_all = _family(fit)
    lo, hi = (float(v) for v in fit["x_range"])
    C = np.geomspace(min(max(lo, c_all), hi), hi, points)
    g = gaps(point, resamples, C, level, widening=fit_widening(fit.get("per_n", {}), level)[0])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    col = _colors(g["ns"])
    for i, n in enumerate(g["ns"]):
        ax.plot(C, g["gap"][i], color=col[n], label=f"n={n:g}")
        if g["n_resamples"]:
            ax.fill_between(C, g["lo"][i], g["hi"][i], color=col[n], alpha=0.15, lw=0)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("compute")
    ax.set_ylabel("fitted reward - best n's")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _isoflop_band(fit: dict, C: np.ndarray):
    """(C, n*, lo, hi) of the iso-FLOP-vertex n*(C) (isocompute.isoflop_n_star) where every n has data, with a
    pointwise 95% band from the stored joint bootstrap samples, widened by the small-sample factor (lo = hi = None
    without them); None for < 3 ns."""
    from rlscale.scaling.isocompute import curves, fit_widening, isoflop_n_star, widen_ratio

    point, resamples, c_all = _family(fit)
    if len(point) < 3:
        return None
    C = C[C >= c_all]
    if C.size < 2:
        return None
    ns, R = curves(point, C)
    mid = isoflop_n_star(R, ns)
    if not resamples:
        return C, mid, None, None
    draws = np.array([isoflop_n_star(curves(params, C)[1], ns) for params in resamples])
    draws = widen_ratio(draws, mid, fit_widening(fit.get("per_n", {}))[0], (min(ns), max(ns)))
    return C, mid, np.quantile(draws, 0.025, axis=0), np.quantile(draws, 0.975, axis=0)


def law_fit(x: np.ndarray, y: np.ndarray, pred: np.ndarray, *, group=None, xlabel: str = "x", ylabel: str = "y",
            log_y: bool = False):
    """Data and fitted values against x (per group when given) with residuals (fit space) below."""
    plt = _plt()
    fig, (ax, axr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    x, y, pred = map(np.asarray, (x, y, pred))
    groups = [None] if group is None else sorted(set(np.asarray(group).tolist()))
    col = _colors(groups)
    for g in groups:
        m = np.ones(len(x), bool) if g is None else (np.asarray(group) == g)
        o = np.argsort(x[m])
        ax.scatter(x[m], y[m], s=10, color=col[g], alpha=0.6, label=None if g is None else f"{g:g}")
        ax.plot(x[m][o], pred[m][o], color=col[g], lw=1)
        r = np.log(y[m]) - np.log(pred[m]) if log_y else y[m] - pred[m]
        axr.scatter(x[m], r, s=8, color=col[g])
    axr.axhline(0, color="black", lw=0.6)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    axr.set_xlabel(xlabel)
    axr.set_ylabel("residual (log)" if log_y else "residual")
    if group is not None and len(groups) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    """Write a figure as PNG (atomically) and close it."""
    import io

    from rlscale.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
