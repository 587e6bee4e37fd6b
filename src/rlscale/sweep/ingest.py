"""Training logs of other engines -> the sweep table schema (see rlscale.sweep.export), so fits run on them.

Readers (each returns one row per logged step, columns `step` + metric keys in rlscale's namespaces):
  - TRL: `trainer_state.json` -> `log_history`. Train entries carry `reward`, `reward_std`, `rewards/<fn>/mean`,
    `frac_reward_zero_std`, `kl`, `entropy`, `loss`, `grad_norm`, `learning_rate`, `num_tokens` (cumulative prompt +
    completion tokens), `completions/mean_length`, `epoch`, `step`; eval entries the same keys prefixed `eval_`
    (`eval_reward` -> val/avg: the mean 0/1 reward over the eval samples).
  - verl: console lines `step:10 - critic/score/mean:0.41 - val-core/<source>/acc/mean@4:0.5 - ...` or its JSONL file
    logger (`{"step": 10, "data": {...}}`, or flat objects with a `step` key). `critic/score/mean` -> rollout/reward_mean;
    `val-core|val-aux/<source>/<var>/mean@N` -> val/avg, `best@N/mean` -> val/pass@N, `worst@N/mean` -> val/worst@N,
    `maj@N/mean` -> val/maj@N (var: acc, else score, else reward); the older `val/test_score/<source>` -> val/avg.
  - CSV (or .jsonl/.parquet): a `step` column, compute (`compute/rollouts` or `rollouts`; else derived from n and
    problems_per_batch), and the metric to fit (`val/avg`, or `reward` which is taken as val/avg).

Compute: compute/rollouts = step * n * problems_per_batch unless the log has it (neither TRL nor verl logs rollouts);
TRL's cumulative `num_tokens` -> compute/tokens (prompt + generated); verl's per-step `response_length/mean` and
`prompt_length/mean` are summed into compute/tokens_generated / compute/tokens_prompt when every step is logged.
Every source metric is kept under its own name as well.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rlscale.errors import UserError
from rlscale.sweep.spec import config_hash

FORMATS = ("trl", "verl", "csv")

TRL_TRAIN = {"reward": "rollout/reward_mean", "reward_std": "rollout/reward_std", "kl": "train/kl",
             "entropy": "train/entropy", "loss": "train/loss", "grad_norm": "train/grad_norm",
             "learning_rate": "train/lr", "frac_reward_zero_std": "rollout/frac_zero_std",
             "completions/mean_length": "rollout/response_len_mean", "num_tokens": "compute/tokens",
             "epoch": "epochs"}
VERL_TRAIN = {"critic/score/mean": "rollout/reward_mean", "actor/entropy": "train/entropy",
              "actor/pg_loss": "train/loss", "actor/kl_loss": "train/kl", "actor/grad_norm": "train/grad_norm",
              "actor/lr": "train/lr", "response_length/mean": "rollout/response_len_mean", "training/epoch": "epochs"}
_VERL_VAL = re.compile(r"^val-(?:core|aux)/(?P<src>.+)/(?P<var>[^/]+)/(?P<stat>mean|best|worst|maj)@(?P<k>\d+)"
                       r"(?:/mean)?$")
_VERL_OLD_VAL = re.compile(r"^val/test_score/(?P<src>.+)$")
_NUM = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?(?:nan|inf)$", re.I)


# ---------------------------------------------------------------------------------------------- TRL


def read_trl(path: Path) -> list[dict]:
    """Rows (step + metrics) from a TRL trainer_state.json; train and eval entries of a step are merged."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable trainer_state.json ({e})") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise UserError(f"{path}: no 'log_history' list; pass TRL's trainer_state.json (in each checkpoint dir)")
    rows: dict[int, dict] = {}
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or "step" not in entry:
            raise UserError(f"{path}: log_history[{i}] has no 'step'")
        row = rows.setdefault(int(entry["step"]), {"step": int(entry["step"])})
        for key, val in entry.items():
            if key == "step" or not isinstance(val, (int, float)) or isinstance(val, bool):
                continue
            row[key] = val
            if key in TRL_TRAIN:
                row[TRL_TRAIN[key]] = val
            elif key == "eval_reward":
                row["val/avg"] = val
    return [rows[s] for s in sorted(rows)]


# ---------------------------------------------------------------------------------------------- verl


def _parse_console_line(line: str) -> dict | None:
    """`step:10 - a/b:0.5 - c:1e-3` -> {"step": 10, "a/b": 0.5, "c": 0.001}; None for other lines."""
    m = re.search(r"(?:^|\s)step:(\d+)\s+-\s+", line)
    if not m:
        return None
    row: dict = {"step": int(m.group(1))}
    for part in line[m.end():].split(" - "):
        key, sep, val = part.strip().rpartition(":")
        val = val.strip()
        if sep and key and _NUM.match(val):
            row[key.strip()] = float(val)
    return row


def _read_verl_rows(path: Path) -> list[dict]:
    """Raw rows (step + source metric names) of a verl console log or JSONL metrics file."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    rows: dict[int, dict] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            row = None
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{lineno}: malformed JSON line") from None
                if isinstance(obj, dict):
                    data = obj.get("data", obj)
                    data = data if isinstance(data, dict) else {}
                    step = obj.get("step", data.get("training/global_step"))
                    if step is not None:
                        row = {"step": int(step), **{k: v for k, v in data.items() if k != "step" and
                                                     isinstance(v, (int, float)) and not isinstance(v, bool)}}
            else:
                row = _parse_console_line(line)
            if row is not None:
                rows.setdefault(row["step"], {}).update(row)
    if not rows:
        raise UserError(f"{path}: no verl metrics found (expected lines like 'step:1 - critic/score/mean:0.4 - ...' "
                        f"or JSON lines with 'step' and 'data')")
    return [rows[s] for s in sorted(rows)]


def read_verl(path: Path, source: str | None = None) -> list[dict]:
    """Rows from a verl log with rlscale names added; `source` keeps one validation data source."""
    rows = _read_verl_rows(path)
    if source is not None:
        rows = filter_verl_source(rows, source)
        if not any(_VERL_VAL.match(k) or _VERL_OLD_VAL.match(k) for r in rows for k in r):
            raise UserError(f"{path}: no validation metrics of data source '{source}'")
    for row in rows:
        for key, val in list(row.items()):
            if key in VERL_TRAIN:
                row[VERL_TRAIN[key]] = val
    _map_verl_val(rows, path)
    return rows


def _map_verl_val(rows: list[dict], path: Path) -> None:
    """val-core/... and val/test_score/... keys -> val/avg, val/pass@k, val/worst@k, val/maj@k (one data source)."""
    keys = sorted({k for r in rows for k in r if _VERL_VAL.match(k) or _VERL_OLD_VAL.match(k)})
    if not keys:
        return
    sources = sorted({(_VERL_VAL.match(k) or _VERL_OLD_VAL.match(k)).group("src") for k in keys})
    if len(sources) > 1:
        raise UserError(f"{path}: validation metrics of several data sources ({', '.join(sources)}); ingest one "
                        f"source per table with --val-source")
    variables = {m.group("var") for k in keys if (m := _VERL_VAL.match(k))}
    var = next((v for v in ("acc", "score", "reward") if v in variables), sorted(variables)[0] if variables else None)
    mapping: dict[str, str] = {}
    means = []
    for k in keys:
        m = _VERL_VAL.match(k)
        if m is None:
            mapping.setdefault(k, "val/avg")
            continue
        if m.group("var") != var:
            continue
        stat, n = m.group("stat"), int(m.group("k"))
        if stat == "mean":
            means.append((n, k))
        elif stat == "best":
            mapping[k] = f"val/pass@{n}"
        else:
            mapping[k] = f"val/{stat}@{n}"
    if means:
        mapping[max(means)[1]] = "val/avg"  # avg@N with the most samples
    for row in rows:
        for src, dst in mapping.items():
            if src in row:
                row[dst] = row[src]


def filter_verl_source(rows: list[dict], source: str) -> list[dict]:
    """Drop the val metrics of every data source but `source` (before _map_verl_val)."""
    def keep(k: str) -> bool:
        m = _VERL_VAL.match(k) or _VERL_OLD_VAL.match(k)
        return m is None or m.group("src") == source
    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


# ---------------------------------------------------------------------------------------------- CSV


def read_csv_log(path: Path) -> list[dict]:
    from rlscale.io import read_table

    df = read_table(path)
    if "step" not in df.columns:
        raise UserError(f"{path}: missing column 'step' (columns: {', '.join(map(str, df.columns))})")
    if "val/avg" not in df.columns and "reward" not in df.columns:
        raise UserError(f"{path}: missing a metric column: 'val/avg' or 'reward'")
    df = df.rename(columns={"rollouts": "compute/rollouts", **({} if "val/avg" in df.columns else
                                                                {"reward": "val/avg"})})
    rows = []
    for rec in df.to_dict("records"):
        rows.append({k: (int(v) if k == "step" else v) for k, v in rec.items()
                     if not (isinstance(v, float) and math.isnan(v))})
    return sorted(rows, key=lambda r: r["step"])


# ---------------------------------------------------------------------------------------------- table


def ingest(path: str | Path, fmt: str, *, run_id: str | None = None, n: int | None = None,
           problems_per_batch: int | None = None, seed: int = 0, val_source: str | None = None,
           reward_as_val: bool = False, extra: dict | None = None):
    """Read a log and return the tidy table (one row per logged step) in the sweep export schema."""
    import pandas as pd

    from rlscale.sweep.export import RUN_COLUMNS

    path = Path(path)
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    for name, v in (("--n", n), ("--problems-per-batch", problems_per_batch)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    if fmt == "trl":
        rows = read_trl(path)
    elif fmt == "verl":
        rows = read_verl(path, val_source)
    else:
        rows = read_csv_log(path)
    if not rows:
        raise UserError(f"{path}: no logged steps")
    if reward_as_val:
        for r in rows:
            if "rollout/reward_mean" in r:
                r["val/avg"] = r["rollout/reward_mean"]
    if not any("compute/rollouts" in r for r in rows):
        if n is None or problems_per_batch is None:
            raise UserError(f"{path}: the log has no rollout counts; give --n and --problems-per-batch "
                            f"(rollouts per step = n * problems_per_batch)")
        for r in rows:
            r["compute/rollouts"] = r["step"] * n * problems_per_batch
        if fmt == "verl":
            _verl_tokens(rows, n * problems_per_batch)
    if not any("val/avg" in r for r in rows):
        raise UserError(f"{path}: no validation metric found; for training-reward curves pass --reward-as-val")
    df = pd.DataFrame(rows)
    df = df[df["val/avg"].notna()] if "val/avg" in df.columns else df
    iterations = int(df["step"].max())
    budget = int(df["compute/rollouts"].max())
    meta = {"run_id": run_id or config_hash({"file": str(path.resolve()), "format": fmt}),
            "n": n if n is not None else pd.NA, "problems_per_batch": problems_per_batch if problems_per_batch
            is not None else pd.NA, "B": n * problems_per_batch if n and problems_per_batch else pd.NA,
            "iterations": iterations, "budget": budget, "seed": seed, **(extra or {})}
    for col, val in reversed(list(meta.items())):
        df.insert(0, col, val)
    fixed = [*RUN_COLUMNS, *(extra or {})]
    compute = sorted(c for c in df.columns if c.startswith("compute/"))
    rest = sorted(c for c in df.columns if c not in {*fixed, *compute, "step", "epochs"})
    order = [*fixed, "step", *compute, *(["epochs"] if "epochs" in df.columns else []), *rest]
    return df[order].sort_values(["run_id", "step"], kind="mergesort").reset_index(drop=True)


def _verl_tokens(rows: list[dict], rollouts_per_step: int) -> None:
    """Cumulative generated/prompt tokens from per-step mean lengths, only when steps 1..S are all logged."""
    steps = [r["step"] for r in rows if r["step"] > 0]
    if steps != list(range(1, len(steps) + 1)):
        return
    for src, dst in (("response_length/mean", "compute/tokens_generated"), ("prompt_length/mean",
                                                                           "compute/tokens_prompt")):
        if all(src in r for r in rows if r["step"] > 0):
            total = 0.0
            for r in rows:
                if r["step"] > 0:
                    total += r[src] * rollouts_per_step
                r[dst] = total
