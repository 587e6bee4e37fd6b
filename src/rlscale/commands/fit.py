"""`rlscale fit SWEEPDIR|TABLE --law LAW --out DIR`: fit a scaling law to a sweep table; writes DIR/fit.json + PNGs."""

from __future__ import annotations

from pathlib import Path

HELP = "fit a scaling law (isocompute frontier, sigmoid, power, loglinear-kn, chinchilla, pretrain-rl) to a table"
DESCRIPTION = (
    HELP + ".\n\nSource: a sweep directory (read with rlscale.sweep.export) or a .csv/.jsonl/.parquet table, one row per "
    "(run, validation point).\nWrites DIR/fit.json (law, params, ci, r2, rmse, n_points; for isocompute also per-n "
    "fits, frontier, n*(C) fit,\ntransitions) and PNG plots. Column defaults per law (override with --x/--x2/--y):\n"
    "  isocompute, sigmoid, power: x=compute/rollouts y=val/avg\n"
    "  loglinear-kn: x=compute/flops (X) x2=N y=loss;  chinchilla: x=N x2=D y=loss (or --flops COL: D = C/(6N))\n"
    "  pretrain-rl: x=C_pre x2=C_rl y=val/avg"
)

LAW_CHOICES = ("isocompute", "sigmoid", "power", "loglinear-kn", "chinchilla", "pretrain-rl")
DEFAULT_COLUMNS = {
    "isocompute": ("compute/rollouts", None, "val/avg"),
    "sigmoid": ("compute/rollouts", None, "val/avg"),
    "power": ("compute/rollouts", None, "val/avg"),
    "loglinear-kn": ("compute/flops", "N", "loss"),
    "chinchilla": ("N", "D", "loss"),
    "pretrain-rl": ("C_pre", "C_rl", "val/avg"),
}


def add_arguments(p) -> None:
    p.add_argument("source", help="sweep directory or table file (.csv/.jsonl/.parquet)")
    p.add_argument("--law", required=True, choices=LAW_CHOICES, help="which law/workflow to fit")
    p.add_argument("--out", required=True, help="output directory for fit.json and plots")
    p.add_argument("--x", default=None, help="x column (compute / X / N / C_pre; default per law)")
    p.add_argument("--x2", default=None, help="second variable column (N for loglinear-kn, D for chinchilla, "
                                              "C_rl for pretrain-rl)")
    p.add_argument("--y", default=None, help="response column (default per law)")
    p.add_argument("--by", default="n", help="column defining the curve family (isocompute; plots of other laws)")
    p.add_argument("--group", default="run_id", help="bootstrap unit column (runs); rows are resampled if absent")
    p.add_argument("--flops", default=None, help="chinchilla: derive D = FLOPS / (6 N) from this column")
    p.add_argument("--drop-highest", type=int, default=0, help="drop this many rows with the largest y first")
    p.add_argument("--offset", action="store_true", help="power: fit y = a x^b + c instead of a x^b")
    p.add_argument("--bucket-width", type=float, default=0.01,
                   help="isocompute: reward bucket width for record-breaking points (0 = every new max)")
    p.add_argument("--train-set-size", type=int, default=None,
                   help="isocompute: training problems, for epochs = rollouts/(n*size) when there is no epochs column")
    p.add_argument("--huber-delta", type=float, default=None, help="Huber delta in fit space (default per law)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for percentile CIs (0 = none)")
    p.add_argument("--ci-level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")


def load_source(source: str):
    """A sweep directory through rlscale.sweep.export.load_sweep_table, or a table file by suffix."""
    from rlscale.errors import UserError
    from rlscale.io import read_table

    path = Path(source)
    if path.is_dir():
        try:
            from rlscale.sweep.export import load_sweep_table
        except ImportError:
            raise UserError(f"{path}: reading a sweep directory needs rlscale.sweep.export; "
                            "export a table with `rlscale sweep export` and fit that") from None
        return load_sweep_table(path)
    return read_table(path)


def _numeric(df, col: str, positive: bool):
    import numpy as np
    import pandas as pd

    from rlscale.errors import UserError

    v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    bad = int((~np.isfinite(v)).sum())
    if bad:
        raise UserError(f"column '{col}': {bad} NaN/non-numeric value(s); drop or fix those rows")
    if positive and (v <= 0).any():
        raise UserError(f"column '{col}': {int((v <= 0).sum())} non-positive value(s); this law takes log({col}) "
                        "and needs values > 0")
    return v


def fit_table(df, args) -> tuple[dict, list]:
    """Fit per args; returns (fit.json dict, [(png name, Figure)])."""
    import numpy as np
    import pandas as pd

    from rlscale.scaling import plots
    from rlscale.scaling.estimators import LAWS, PowerLaw, SigmoidLaw
    from rlscale.scaling.isocompute import IsoCompute, drop_initial_points, keep_selected, require_columns

    x0, x20, y0 = DEFAULT_COLUMNS[args.law]
    x, x2, y = args.x or x0, args.x2 or x20, args.y or y0
    if args.flops and args.law == "chinchilla":
        x2 = None
    need = [c for c in (x, x2, y, args.flops) if c]
    if args.law == "isocompute":
        need += [args.by, args.group]
    require_columns(df, need, f"table ({args.source})")
    initial = df.drop(drop_initial_points(df, x).index)  # step-0 evaluations at zero compute
    df = df.drop(initial.index)
    if args.drop_highest:
        df = df.sort_values(y, kind="stable").iloc[: len(df) - args.drop_highest] if args.drop_highest < len(df) \
            else df.iloc[:0]
    figs = []
    if args.law == "isocompute":
        _numeric(df, x, True)
        _numeric(df, y, False)
        # IsoCompute measures each run's gain from its step-0 value, then drops those rows itself
        iso = IsoCompute(x=x, y=y, by=args.by, run_col=args.group, bucket_width=args.bucket_width,
                         n_bootstrap=args.bootstrap, ci_level=args.ci_level, seed=args.seed,
                         huber_delta=args.huber_delta, train_set_size=args.train_set_size).fit(
                             pd.concat([initial, df]) if len(initial) else df)
        out = iso.to_dict()
        df = keep_selected(df, out)  # with an lr grid: each n's runs at its best rate
        out["anchor"] = _anchor(df, x, y, args.by)
        if not args.no_plots:
            figs = [("reward_vs_compute.png", plots.reward_vs_compute(df, out, x=x, y=y, by=args.by)),
                    ("n_star.png", plots.n_star_vs_compute(out))]
        return out, figs

    cls = LAWS[args.law]
    log_y = cls.fit_space == "log y"
    cols = [_numeric(df, x, True)]
    if args.law == "chinchilla" and args.flops:
        cols.append(_numeric(df, args.flops, True) / (6.0 * cols[0]))
        x2 = f"{args.flops}/(6*{x})"
    elif x2:
        cols.append(_numeric(df, x2, True))
    yv = _numeric(df, y, log_y)
    X = np.column_stack(cols)
    kwargs = {"huber_delta": args.huber_delta, "n_bootstrap": args.bootstrap, "ci_level": args.ci_level,
              "seed": args.seed}
    if cls is SigmoidLaw:
        kwargs["profile"] = True
    if cls is PowerLaw:
        kwargs["offset"] = args.offset
    groups = df[args.group].to_numpy() if args.group in df.columns else None
    if groups is not None and len(set(groups.tolist())) < 2:
        groups = None
    est = cls(**kwargs).fit(X, yv, groups)
    out = est.to_dict()
    out.update({"columns": {"x": x, "x2": x2, "y": y}, "bootstrap_unit": "groups" if groups is not None else "rows"})
    if not args.no_plots:
        group = df[args.by].to_numpy(float) if args.by in df.columns else (X[:, 1] if X.shape[1] > 1 else None)
        figs = [("fit.png", plots.law_fit(X[:, 0], yv, est.predict(X), group=group, xlabel=x, ylabel=y,
                                          log_y=log_y))]
    return out, figs


def _anchor(df, x: str, y: str, by: str):
    """(lr, rollouts per step) of the best point's run, when the table has lr and problems_per_batch columns."""
    if "lr" not in df.columns or "problems_per_batch" not in df.columns:
        return None
    best = df.loc[df[y].astype(float).idxmax()]
    return [float(best["lr"]), float(best[by]) * float(best["problems_per_batch"])]


def run(args) -> int:
    from rlscale.io import atomic_write_json
    from rlscale.scaling import plots

    df = load_source(args.source)
    out_dir = Path(args.out)
    out, figs = fit_table(df, args)
    out["source"] = str(args.source)
    atomic_write_json(out_dir / "fit.json", out)
    for name, fig in figs:
        plots.save(fig, out_dir / name)
    params = ", ".join(f"{k}={v:.4g}" for k, v in out["params"].items())
    print(f"{args.law}: {params}; R^2={out['r2']:.4f} RMSE={out['rmse']:.4g} ({out['n_points']} points)")
    print(f"wrote {out_dir / 'fit.json'}" + (f" and {len(figs)} plot(s)" if figs else ""))
    return 0
