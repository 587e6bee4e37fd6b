"""The sweep's tidy table: one row per (run, validation point), read from the run stores, never from logs.

Columns: run config (run_id, n, problems_per_batch, B, iterations, budget, seed, then the scalar `[train]` fields),
`step`, cumulative compute at that step (compute/rollouts, compute/tokens_generated, compute/tokens_prompt,
compute/flops, ...) joined from the per-step records (the last step <= the validation step; zero before the first
step), `epochs`, and the validation metrics (val/avg, val/pass@k, val/worst@k, ...). Wall-time columns are left out
so that the table of a resumed sweep equals that of an uninterrupted one. Rows are sorted by
(budget, n, problems_per_batch, seed, run_id, step).

`load_sweep_table(sweepdir)` is what `rlscale sweep export` writes and `rlscale fit` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlscale.errors import UserError

RUN_COLUMNS = ("run_id", "n", "problems_per_batch", "B", "iterations", "budget", "seed")
SORT_COLUMNS = ("budget", "n", "problems_per_batch", "seed", "run_id", "step")
DROP_PREFIXES = ("time/",)


def read_store(rundir: str | os.PathLike):
    """(steps_df, evals_df) of a run store, wide (step + one column per metric); the store is closed again."""
    from rlscale.store import RunStore

    store = RunStore.open(rundir)
    try:
        return _wide(store.steps_df()), _wide(store.evals_df())
    finally:
        store.close()


def read_sweep_json(sweepdir: str | os.PathLike) -> dict:
    path = Path(sweepdir) / "sweep.json"
    if not path.is_file():
        raise UserError(f"{sweepdir}: not a sweep directory (no sweep.json); run `rlscale sweep run SPEC --out DIR`")
    return json.loads(path.read_text(encoding="utf-8"))


def run_finished(rundir: str | os.PathLike) -> bool:
    """A run is finished when its trainer wrote summary.json (written last)."""
    return (Path(rundir) / "summary.json").is_file()


def _wide(df):
    """Metrics frames in long form (step, key|metric|name, value) -> wide (step + one column per key)."""
    for key in ("key", "metric", "name"):
        if key in df.columns and "value" in df.columns and "step" in df.columns:
            return df.pivot_table(index="step", columns=key, values="value", aggfunc="last").reset_index()
    return df


def _keep(col: str) -> bool:
    return not any(col.startswith(p) for p in DROP_PREFIXES)


def run_table(rundir: str | os.PathLike, meta: dict):
    """Rows of one run: its validation points with compute joined by step; empty frame if nothing is logged yet."""
    import pandas as pd

    steps, evals = read_store(rundir)
    if len(evals) == 0:
        return pd.DataFrame()
    evals = evals[[c for c in evals.columns if _keep(c)]].copy()
    evals["step"] = evals["step"].astype("int64")
    evals = evals.sort_values("step").drop_duplicates("step", keep="last")
    join = [c for c in steps.columns if (c.startswith("compute/") or c == "epochs") and c not in evals.columns]
    if len(steps) and join:
        st = steps[["step", *join]].copy()
        st["step"] = st["step"].astype("int64")
        st = st.sort_values("step").drop_duplicates("step", keep="last")
        evals = pd.merge_asof(evals, st, on="step", direction="backward")
        evals[join] = evals[join].fillna(0)
    for col, val in reversed(list(meta.items())):
        evals.insert(0, col, val)
    return evals


def run_meta(run_id: str, run: dict) -> dict:
    """Run config columns: the grid point, then the scalar [train] fields of its config (sorted by name)."""
    meta = {"run_id": run_id, "n": run["n"], "problems_per_batch": run["problems_per_batch"],
            "B": run["n"] * run["problems_per_batch"], "iterations": run["iterations"], "budget": run["budget"],
            "seed": run["seed"]}
    skip = {"model", "task", "train_set", "val_set", "rollouts_per_problem", "problems_per_batch", "iterations",
            "seed"}
    for key in sorted(run.get("train", {})):
        val = run["train"][key]
        if key not in skip and key not in meta and isinstance(val, (int, float, str, bool)):
            meta[key] = val
    return meta


def load_sweep_table(sweepdir: str | os.PathLike):
    """The tidy table of the sweep's current runs (the run ids of its latest spec), sorted deterministically."""
    import pandas as pd

    sweep = read_sweep_json(sweepdir)
    frames = []
    for run_id, run in sweep["runs"].items():
        rundir = Path(sweepdir) / "runs" / run_id
        if not rundir.is_dir():
            continue
        try:
            frame = run_table(rundir, run_meta(run_id, run))
        except (FileNotFoundError, UserError):
            continue  # a run whose store is not created yet
        if len(frame):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*RUN_COLUMNS, "step"])
    df = pd.concat(frames, ignore_index=True, sort=False)
    fixed = [*RUN_COLUMNS]
    config_cols = [c for c in df.columns if c not in fixed and c != "step" and "/" not in c and c != "epochs"]
    compute_cols = sorted(c for c in df.columns if c.startswith("compute/"))
    rest = sorted(c for c in df.columns if c not in {*fixed, *config_cols, *compute_cols, "step", "epochs"})
    order = [*fixed, *config_cols, "step", *compute_cols, *(["epochs"] if "epochs" in df.columns else []), *rest]
    df = df[order].sort_values(list(SORT_COLUMNS), kind="mergesort").reset_index(drop=True)
    return df


def status_rows(sweepdir: str | os.PathLike) -> list[dict]:
    """Per run: grid point, status, rollouts spent, last val/avg. Status: done (summary.json), running (its worker
    holds the run lock), failed (as recorded by the driver), interrupted (started, not running, not finished),
    queued (never started)."""
    from rlscale.sweep.worker import lock_held

    sweep = read_sweep_json(sweepdir)
    rows = []
    for run_id, run in sweep["runs"].items():
        rundir = Path(sweepdir) / "runs" / run_id
        if run_finished(rundir):
            status = "done"
        elif lock_held(Path(sweepdir) / "locks" / f"{run_id}.lock"):
            status = "running"
        elif run.get("status") == "failed":
            status = "failed"
        else:
            status = "interrupted" if rundir.is_dir() else "queued"
        spent, last_val = 0.0, float("nan")
        if rundir.is_dir():
            try:
                steps, evals = read_store(rundir)
                if len(steps) and "compute/rollouts" in steps.columns:
                    spent = float(steps["compute/rollouts"].max())
                if len(evals) and "val/avg" in evals.columns:
                    last_val = float(evals.sort_values("step")["val/avg"].iloc[-1])
            except Exception:  # a store being created right now; shown as nothing spent
                pass
        rows.append({"run_id": run_id, "budget": run["budget"], "n": run["n"],
                     "problems_per_batch": run["problems_per_batch"], "iterations": run["iterations"],
                     "seed": run["seed"], "status": status, "rollouts_done": int(spent),
                     "rollouts_planned": run["n"] * run["problems_per_batch"] * run["iterations"],
                     "val/avg": last_val})
    return sorted(rows, key=lambda r: (r["budget"], r["n"], r["problems_per_batch"], r["seed"], r["run_id"]))
