"""Sweep specs: a TOML/YAML file declaring an iso-compute grid, validated once and expanded into runs.

A spec names the base model, the data (task + optional train/val set files), the grids for
`n` (rollouts per problem), `problems_per_batch` (B_problem) and/or fixed `B` (= n * B_problem), the budgets in
rollouts (`budgets_rollouts`, or one `max_rollouts`), the hardware batch limit `B_max`, the validation cadence
(`val_every` steps or `val_every_rollouts`), seeds, per-run resources and a `[train]` table of base GRPO config fields.

Every budget C is spent as C = n * B_problem * M (M = iterations) with n and B_problem powers of two and
n * B_problem <= B_max. The three designs of the iso-compute study:
  - fixed B_problem (trade n against M):   problems_per_batch = [8],  n = [2, 4, 8, 16]
  - fixed B (trade B_problem against n):    B = [64],  n = [2, 4, 8, 16]        (B_problem = B / n)
  - joint:                                  n = [2, 4, 8, 16], problems_per_batch = [8, 16, 32]

Each run gets a resolved config dict (the `[train]` table plus the grid point) and a run id: a short hash of the
sorted-JSON config, so a changed config always gets a new id. See tests/test_sweep_spec.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlscale.errors import UserError

# Spec keys -> documentation (unknown keys are refused naming the key).
TOP_KEYS: dict[str, str] = {
    "name": "free-form sweep name",
    "model": "base model directory (relative to the spec file; $VAR and ${VAR:-default} are expanded)",
    "task": "task name (rlscale tasks)",
    "train_set": "optional training set file (.jsonl/.csv/.parquet)",
    "val_set": "optional validation set file",
    "n": "grid of rollouts per problem (powers of two >= 2)",
    "problems_per_batch": "grid of B_problem (powers of two)",
    "B": "fixed total batch sizes n * B_problem (powers of two); with n gives B_problem = B / n",
    "budgets_rollouts": "list of compute budgets C in rollouts (one run per allocation and budget)",
    "max_rollouts": "single budget in rollouts (alternative to budgets_rollouts)",
    "B_max": "hardware batch limit: n * B_problem <= B_max",
    "val_every": "validate every k optimizer steps",
    "val_every_rollouts": "validate every R rollouts (same compute points across runs of a budget)",
    "val_log_points": "validate at K log-spaced compute points from one step to the run's budget (fits want them)",
    "seeds": "list of run seeds",
    "lr": "optional grid of base learning rates (each run's train.lr; the isocompute fit keeps each n's best)",
    "resources": "per-run resources table: cpus, gpus",
    "train": "base training config fields (rlscale.rl.grpo.GRPOConfig)",
}
RESOURCE_KEYS = ("cpus", "gpus")

# Grid/spec fields -> GRPOConfig field names (the trainer's vocabulary; see `rlscale train grpo --help`).
CFG_MODEL = "model"
CFG_TASK = "task"
CFG_TRAIN_SET = "train_set"
CFG_VAL_SET = "val_set"
CFG_N = "rollouts_per_problem"
CFG_BP = "problems_per_batch"
CFG_ITERS = "iterations"
CFG_SEED = "seed"
CFG_VAL_EVERY = "val_every"
CFG_LR = "lr"
GRID_FIELDS = (CFG_MODEL, CFG_TASK, CFG_TRAIN_SET, CFG_VAL_SET, CFG_N, CFG_BP, CFG_ITERS, CFG_SEED, CFG_VAL_EVERY)
# Fields the sweep sets itself; a [train] table must not set them.
RESERVED_TRAIN_FIELDS = GRID_FIELDS + ("budget_rollouts", "batch_rollouts", "val_steps")


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: the grid point and the resolved trainer config (a plain dict)."""

    run_id: str
    n: int
    problems_per_batch: int
    iterations: int
    budget: int  # the budget C this allocation spends (rollouts = n * B_problem * M <= C)
    seed: int
    config: dict

    @property
    def B(self) -> int:  # noqa: N802  (the study's name)
        return self.n * self.problems_per_batch

    @property
    def rollouts(self) -> int:
        return self.n * self.problems_per_batch * self.iterations

    @property
    def train(self) -> dict:
        """The run's own trainer fields: its config minus what the sweep sets (the spec's [train] table, plus the
        run's rate when the spec has an lr grid)."""
        return {k: v for k, v in self.config.items() if k not in RESERVED_TRAIN_FIELDS}


@dataclass(frozen=True)
class SweepSpec:
    """A validated spec (paths resolved) and its expansion into runs."""

    path: Path
    name: str
    model: str
    task: str
    train_set: str | None
    val_set: str | None
    n: tuple[int, ...]
    problems_per_batch: tuple[int, ...]
    B: tuple[int, ...]  # noqa: N815
    budgets: tuple[int, ...]
    B_max: int  # noqa: N815
    val_every: int | None
    val_every_rollouts: int | None
    seeds: tuple[int, ...]
    cpus: float
    gpus: float
    train: dict
    runs: tuple[RunSpec, ...] = field(default=())
    val_log_points: int | None = None
    lr: tuple[float, ...] = ()

    def identity(self) -> dict:
        """Sweep-level identity: runs of specs with different identities must never share a sweep directory."""
        return {"model": self.model, "task": self.task, "train_set": self.train_set, "val_set": self.val_set,
                "seeds": list(self.seeds)}

    def resolved(self) -> dict:
        """The spec as a JSON-able dict with paths resolved (saved in sweep.json)."""
        return {"name": self.name, "model": self.model, "task": self.task, "train_set": self.train_set,
                "val_set": self.val_set, "n": list(self.n), "problems_per_batch": list(self.problems_per_batch),
                "B": list(self.B), "budgets_rollouts": list(self.budgets), "B_max": self.B_max,
                "val_every": self.val_every, "val_every_rollouts": self.val_every_rollouts,
                "seeds": list(self.seeds), "resources": {"cpus": self.cpus, "gpus": self.gpus},
                "train": dict(self.train)} | ({"val_log_points": self.val_log_points} if self.val_log_points else {}) \
            | ({"lr": list(self.lr)} if self.lr else {})

    def spec_hash(self) -> str:
        return config_hash(self.resolved())


# ---------------------------------------------------------------------------------------------- pure helpers


def config_hash(config: dict, length: int = 12) -> str:
    """Short stable hash of a JSON-able dict: sha256 of its sorted, compact JSON."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def is_pow2(x: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1 and (x & (x - 1)) == 0


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_vars(text: str) -> str:
    """Expand $VAR, ${VAR} and ${VAR:-default} from the environment (unset without default -> UserError)."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if m.group(2) is not None:
            return m.group(2)
        raise UserError(f"environment variable ${name} is not set (used in '{text}'); set it or use ${{{name}:-default}}")

    return os.path.expanduser(_VAR.sub(sub, text))


def allocations(n_grid, bp_grid, b_grid, b_max: int) -> list[tuple[int, int]]:
    """(n, B_problem) pairs of the grid with n * B_problem <= b_max, sorted.

    With fixed B (b_grid non-empty): B_problem = B / n for each B and n (pairs where n does not divide B are
    skipped), optionally restricted to bp_grid. Otherwise the cartesian product n x B_problem.
    """
    pairs: set[tuple[int, int]] = set()
    if b_grid:
        for b in b_grid:
            for n in n_grid:
                if b % n == 0 and (not bp_grid or b // n in bp_grid):
                    pairs.add((n, b // n))
    else:
        pairs = {(n, bp) for n in n_grid for bp in bp_grid}
    return sorted((n, bp) for n, bp in pairs if n * bp <= b_max)


def log_spaced_steps(points: int, iterations: int) -> tuple[int, ...]:
    """About `points` steps in 1..iterations, evenly spaced in log(step) (so in log compute at a fixed batch);
    rounding can merge neighbours at small steps, so fewer may come back. The last step is always included."""
    import numpy as np

    if points < 1 or iterations < 1:
        return ()
    steps = np.unique(np.round(np.geomspace(1, iterations, num=points)).astype(int))
    return tuple(int(x) for x in steps if 1 <= x <= iterations)


def val_every_steps(val_every: int | None, val_every_rollouts: int | None, batch: int) -> int | None:
    """Validation cadence in steps for a run with n * B_problem = batch; val_every_rollouts // batch, at least 1."""
    if val_every_rollouts is not None:
        return max(1, val_every_rollouts // batch)
    return val_every


# ---------------------------------------------------------------------------------------------- loading


def read_spec_file(path: str | os.PathLike) -> dict:
    """Parse a .toml or .yaml/.yml spec file into a dict (UserError on a missing file or a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: sweep spec not found")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path}: invalid TOML: {e}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    else:
        raise UserError(f"{path}: unknown spec suffix '{suffix}'; use .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a sweep spec must be a table/mapping of keys")
    return data


def load_spec(path: str | os.PathLike, check_files: bool = True) -> SweepSpec:
    """Read, validate and expand a sweep spec. Every problem is a one-line UserError naming the key."""
    path = Path(path).resolve()
    return parse_spec(read_spec_file(path), path, check_files=check_files)


def _int_list(data: dict, key: str, where: str, required: bool = False, pow2: bool = False, minimum: int = 1):
    if key not in data:
        if required:
            raise UserError(f"{where}: missing key '{key}' ({TOP_KEYS[key]})")
        return ()
    val = data[key]
    vals = val if isinstance(val, list) else [val]
    out = []
    for v in vals:
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise UserError(f"{where}: '{key}' must hold integers >= {minimum}, got {v!r}")
        if pow2 and not is_pow2(v):
            raise UserError(f"{where}: '{key}' must hold powers of two, got {v}")
        out.append(v)
    if not out:
        raise UserError(f"{where}: '{key}' is an empty list; the grid would be empty")
    return tuple(sorted(set(out)))


def _lr_list(data: dict, where: str) -> tuple[float, ...]:
    """The optional learning-rate grid: positive finite numbers, sorted, deduplicated."""
    if "lr" not in data:
        return ()
    vals = data["lr"] if isinstance(data["lr"], list) else [data["lr"]]
    for v in vals:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{where}: 'lr' must hold positive numbers (e.g. [3.5e-5, 7e-5, 1.4e-4]), got {v!r}")
    if not vals:
        raise UserError(f"{where}: 'lr' is an empty list; the grid would be empty")
    if "lr" in (data.get("train") or {}):
        raise UserError(f"{where}: give the learning rate either as the grid 'lr' or as 'train.lr', not both")
    return tuple(sorted({float(v) for v in vals}))


def _opt_int(data: dict, key: str, where: str) -> int | None:
    if key not in data:
        return None
    v = data[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserError(f"{where}: '{key}' must be an integer >= 1, got {v!r}")
    return v


def _resolve_path(value: Any, key: str, base: Path, where: str, check: bool) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: '{key}' must be a non-empty path string")
    p = Path(expand_vars(value))
    if not p.is_absolute():
        p = base / p
    p = Path(os.path.normpath(p))
    if check and not p.exists():
        raise UserError(f"{where}: '{key}' = '{value}' does not exist ({p})")
    return str(p)


def _grpo_config_class():
    """rlscale.rl.grpo.GRPOConfig, or None when the trainer is not installed (fields then are not checked)."""
    try:
        from rlscale.rl.grpo import GRPOConfig
    except ImportError:
        return None
    return GRPOConfig


def _train_field_names() -> set[str] | None:
    import dataclasses

    cls = _grpo_config_class()
    return None if cls is None else {f.name for f in dataclasses.fields(cls)}


def check_run_configs(runs, where: str) -> None:
    """Validate every run config with GRPOConfig.from_dict(...).validate(), so a bad [train] value fails here,
    before any run starts (one-line UserError naming the spec)."""
    cls = _grpo_config_class()
    if cls is None:
        return
    for run in runs:
        try:
            cls.from_dict(run.config).validate()
        except UserError as e:
            raise UserError(f"{where}: [train] (run n={run.n}, problems_per_batch={run.problems_per_batch}): {e}") \
                from None
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: [train]: invalid value ({e})") from None


def parse_spec(data: dict, path: Path, check_files: bool = True) -> SweepSpec:
    """Validate a parsed spec dict and expand it. `path` is the spec file (relative paths are resolved against its
    directory; messages name it); for a spec built in code it need not exist (e.g. OUTDIR/sweep.yaml)."""
    where = str(path)
    for key in data:
        if key not in TOP_KEYS:
            raise UserError(f"{where}: unknown key '{key}'; valid keys: {', '.join(TOP_KEYS)}")
    base = path.parent
    if "model" not in data:
        raise UserError(f"{where}: missing key 'model' ({TOP_KEYS['model']})")
    model = _resolve_path(data["model"], "model", base, where, check_files)
    task = data.get("task")
    if not isinstance(task, str) or not task:
        raise UserError(f"{where}: missing or empty key 'task' (a task name, see `rlscale tasks`)")
    train_set = _resolve_path(data["train_set"], "train_set", base, where, check_files) if "train_set" in data else None
    val_set = _resolve_path(data["val_set"], "val_set", base, where, check_files) if "val_set" in data else None

    n_grid = _int_list(data, "n", where, required=True, pow2=True, minimum=2)
    bp_grid = _int_list(data, "problems_per_batch", where, pow2=True)
    b_grid = _int_list(data, "B", where, pow2=True)
    if not bp_grid and not b_grid:
        raise UserError(f"{where}: give 'problems_per_batch' (fixed/joint B_problem) and/or 'B' (fixed n * B_problem)")
    b_max = _opt_int(data, "B_max", where)
    if b_max is None:
        raise UserError(f"{where}: missing key 'B_max' ({TOP_KEYS['B_max']})")
    if "budgets_rollouts" in data and "max_rollouts" in data:
        raise UserError(f"{where}: give either 'budgets_rollouts' or 'max_rollouts', not both")
    if "budgets_rollouts" in data:
        budgets = _int_list(data, "budgets_rollouts", where)
    elif "max_rollouts" in data:
        budgets = (_opt_int(data, "max_rollouts", where),)
    else:
        raise UserError(f"{where}: missing key 'budgets_rollouts' (or 'max_rollouts'): the compute budget in rollouts")
    given = [k for k in ("val_every", "val_every_rollouts", "val_log_points") if k in data]
    if len(given) > 1:
        raise UserError(f"{where}: give one of 'val_every' (steps), 'val_every_rollouts' or 'val_log_points', "
                        f"not {' and '.join(given)}")
    val_log_points = _opt_int(data, "val_log_points", where)
    if val_log_points is not None and val_log_points < 2:
        raise UserError(f"{where}: val_log_points must be >= 2 (got {val_log_points})")
    val_every = _opt_int(data, "val_every", where)
    val_every_rollouts = _opt_int(data, "val_every_rollouts", where)
    seeds = _int_list(data, "seeds", where, minimum=0) if "seeds" in data else (0,)
    lr_grid = _lr_list(data, where)

    resources = data.get("resources", {})
    if not isinstance(resources, dict):
        raise UserError(f"{where}: 'resources' must be a table with keys {', '.join(RESOURCE_KEYS)}")
    for key in resources:
        if key not in RESOURCE_KEYS:
            raise UserError(f"{where}: unknown key 'resources.{key}'; valid keys: {', '.join(RESOURCE_KEYS)}")
    cpus, gpus = resources.get("cpus", 1), resources.get("gpus", 0)
    for key, v in (("cpus", cpus), ("gpus", gpus)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise UserError(f"{where}: 'resources.{key}' must be a number >= 0, got {v!r}")

    train = data.get("train", {})
    if not isinstance(train, dict):
        raise UserError(f"{where}: 'train' must be a table of training config fields")
    known = _train_field_names()
    for key in train:
        if key in RESERVED_TRAIN_FIELDS:
            raise UserError(f"{where}: 'train.{key}' is set by the sweep grid; remove it from [train]")
        if known is not None and key not in known:
            raise UserError(f"{where}: unknown key 'train.{key}'; see `rlscale train grpo --help` for the fields")

    pairs = allocations(n_grid, bp_grid, b_grid, b_max)
    if not pairs:
        if b_grid and not any(b % n == 0 and (not bp_grid or b // n in bp_grid) for b in b_grid for n in n_grid):
            raise UserError(f"{where}: empty grid: no n in {list(n_grid)} divides any B in {list(b_grid)}"
                            + (f" with B/n in problems_per_batch {list(bp_grid)}" if bp_grid else ""))
        smallest = min(n * bp for n, bp in allocations(n_grid, bp_grid, b_grid, 1 << 62))
        raise UserError(f"{where}: B_max = {b_max} is smaller than every n * B_problem (smallest is {smallest}); "
                        f"raise B_max or use smaller n/problems_per_batch")
    smallest_batch = min(n * bp for n, bp in pairs)
    for c in budgets:
        if c < smallest_batch:
            raise UserError(f"{where}: budget {c} rollouts is smaller than one step (smallest n * B_problem is "
                            f"{smallest_batch}); raise the budget")

    spec = SweepSpec(path=path, name=str(data.get("name", path.stem)), model=model, task=task, train_set=train_set,
                     val_set=val_set, n=n_grid, problems_per_batch=bp_grid, B=b_grid, budgets=budgets, B_max=b_max,
                     val_every=val_every, val_every_rollouts=val_every_rollouts, seeds=seeds, cpus=float(cpus),
                     gpus=float(gpus), train=dict(train), val_log_points=val_log_points, lr=lr_grid)
    runs = expand(spec, pairs)
    if not runs:
        raise UserError(f"{where}: empty grid: no allocation fits any budget")
    check_run_configs(runs, where)
    return SweepSpec(**{**spec.__dict__, "runs": tuple(runs)})


def run_config(spec: SweepSpec, n: int, bp: int, iterations: int, seed: int, lr: float | None = None) -> dict:
    """The resolved trainer config of one grid point: the [train] table plus the grid fields (lr only when the spec
    has an lr grid, so specs without one keep their run ids)."""
    cfg = dict(spec.train)
    cfg.update({CFG_MODEL: spec.model, CFG_TASK: spec.task, CFG_N: n, CFG_BP: bp, CFG_ITERS: iterations,
                CFG_SEED: seed})
    if lr is not None:
        cfg[CFG_LR] = lr
    if spec.train_set is not None:
        cfg[CFG_TRAIN_SET] = spec.train_set
    if spec.val_set is not None:
        cfg[CFG_VAL_SET] = spec.val_set
    if spec.val_log_points:
        cfg[CFG_VAL_EVERY] = 0
        cfg["val_steps"] = list(log_spaced_steps(spec.val_log_points, iterations))
        return cfg
    ve = val_every_steps(spec.val_every, spec.val_every_rollouts, n * bp)
    if ve is not None:
        cfg[CFG_VAL_EVERY] = ve
    return cfg


def expand(spec: SweepSpec, pairs: list[tuple[int, int]]) -> list[RunSpec]:
    """One run per (budget, allocation, seed[, lr]) with M = floor(C / (n * B_problem)) >= 1; sorted, ids unique."""
    runs: dict[str, RunSpec] = {}
    for c in spec.budgets:
        for n, bp in pairs:
            m = c // (n * bp)
            if m < 1:
                continue  # this allocation cannot take one step at this budget
            for lr in spec.lr or (None,):
                for seed in spec.seeds:
                    cfg = run_config(spec, n, bp, m, seed, lr)
                    rid = config_hash(cfg)
                    runs.setdefault(rid, RunSpec(rid, n, bp, m, c, seed, cfg))
    return sorted(runs.values(), key=lambda r: (r.budget, r.n, r.problems_per_batch, r.config.get(CFG_LR) or 0.0,
                                                r.seed))


def training_set_size(spec: SweepSpec) -> int | None:
    """Number of training problems (for epochs), from the train_set file or the task's train split; None if unknown."""
    try:
        if spec.train_set is not None:
            from rlscale.io import read_table

            return len(read_table(spec.train_set))
        from rlscale.tasks.base import get_task

        return len(get_task(spec.task).load("train"))
    except Exception:  # unknown size is shown as '-', never fatal for planning
        return None


def epochs(rollouts: float, n: int, train_size: int | None) -> float:
    """Passes over the training set: problems seen (rollouts / n) divided by the set size."""
    if not train_size:
        return math.nan
    return rollouts / n / train_size
