"""The run store: one directory per run, crash-safe and readable while the run is in progress.

Layout:
    RUN/config.json           resolved config + config_hash (written once, atomically)
    RUN/run.db                SQLite (WAL): steps(step, metrics JSON), evals(step, metrics JSON),
                              problem_passes(step, problem_id, n, correct),
                              replay(step, k, problem_id, text): correct completions, when the run keeps them
    RUN/checkpoints/step_XXXXXX/   written to a temp dir then renamed; the last `keep` are kept
    RUN/summary.json          written last: its presence means the run finished

Why SQLite with WAL rather than JSONL files: a step's metrics and its per-problem pass counts go in one transaction,
so a kill -9 leaves either the whole step or nothing (an appended JSONL line can be torn); the rollback on resume
("delete every row after the checkpoint's step") is one atomic statement group instead of a file rewrite; WAL lets
readers (`rlscale sweep status`, reports, a notebook) query a run while it writes, without locks on the writer;
and it is one file in the standard library, no server. Metrics are stored as JSON so new keys need no migration.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

from rlscale.errors import UserError
from rlscale.io import atomic_write_json

CONFIG_FILE = "config.json"
DB_FILE = "run.db"
SUMMARY_FILE = "summary.json"
CKPT_DIR = "checkpoints"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evals (step INTEGER PRIMARY KEY, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS problem_passes (step INTEGER NOT NULL, problem_id TEXT NOT NULL, n INTEGER NOT NULL,
    correct INTEGER NOT NULL, PRIMARY KEY (step, problem_id));
CREATE TABLE IF NOT EXISTS replay (step INTEGER NOT NULL, k INTEGER NOT NULL, problem_id TEXT NOT NULL,
    text TEXT NOT NULL, PRIMARY KEY (step, k));
"""


def config_hash(config: dict) -> str:
    """sha256 (16 hex) of the canonical JSON of a config dict."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _dumps(metrics: dict) -> str:
    def default(o):
        if hasattr(o, "item"):
            return o.item()
        return str(o)
    return json.dumps(metrics, sort_keys=True, default=default, allow_nan=True)


class RunStore:
    """A run directory. Use `RunStore.create(dir, config)` for a new run and `RunStore.open(dir)` for an existing one."""

    def __init__(self, root: str | os.PathLike, config: dict, config_hash_: str):
        self.root = Path(root)
        self.config = config
        self.config_hash = config_hash_
        self._db = sqlite3.connect(self.root / DB_FILE, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # ---- opening -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, config: dict) -> RunStore:
        """Start a new run in `root` (created; must not already hold a run)."""
        root = Path(root)
        if (root / CONFIG_FILE).exists():
            raise UserError(f"{root}: already holds a run; pass --resume to continue it or choose a new --out")
        root.mkdir(parents=True, exist_ok=True)
        h = config_hash(config)
        atomic_write_json(root / CONFIG_FILE, {"config": config, "config_hash": h})
        return cls(root, config, h)

    @classmethod
    def open(cls, root: str | os.PathLike) -> RunStore:
        root = Path(root)
        try:
            d = json.loads((root / CONFIG_FILE).read_text())
            config, h = d["config"], d["config_hash"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{root}: not a run directory (no readable {CONFIG_FILE})") from None
        return cls(root, config, h)

    @classmethod
    def exists(cls, root: str | os.PathLike) -> bool:
        return (Path(root) / CONFIG_FILE).exists()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- records -------------------------------------------------------------------------------------------
    def log_step(self, step: int, metrics: dict, problem_passes: Iterable[tuple[str, int, int]] = (),
                 replay: Iterable[tuple[str, str]] = ()) -> None:
        """Record one step, its per-problem (problem_id, n, correct) pass counts and its replay entries
        (problem_id, completion text) in one transaction."""
        with self._tx():
            self._db.execute("INSERT INTO steps (step, metrics) VALUES (?, ?)", (step, _dumps(metrics)))
            self._db.executemany("INSERT INTO problem_passes (step, problem_id, n, correct) VALUES (?, ?, ?, ?)",
                                 [(step, str(p), int(n), int(c)) for p, n, c in problem_passes])
            self._db.executemany("INSERT INTO replay (step, k, problem_id, text) VALUES (?, ?, ?, ?)",
                                 [(step, k, str(p), t) for k, (p, t) in enumerate(replay)])

    def log_eval(self, step: int, metrics: dict) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO evals (step, metrics) VALUES (?, ?)", (step, _dumps(metrics)))

    def truncate_after(self, step: int) -> None:
        """Delete every step/eval/pass row with step > `step` in one transaction (rollback to a checkpoint)."""
        with self._tx():
            for table in ("steps", "evals", "problem_passes", "replay"):
                self._db.execute(f"DELETE FROM {table} WHERE step > ?", (step,))

    def _tx(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *rest):
                db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return _Tx()

    def steps(self) -> list[dict]:
        rows = self._db.execute("SELECT step, metrics FROM steps ORDER BY step").fetchall()
        return [{"step": s, **json.loads(m)} for s, m in rows]

    def evals(self) -> list[dict]:
        rows = self._db.execute("SELECT step, metrics FROM evals ORDER BY step").fetchall()
        return [{"step": s, **json.loads(m)} for s, m in rows]

    def problem_passes(self) -> list[tuple[int, str, int, int]]:
        return self._db.execute("SELECT step, problem_id, n, correct FROM problem_passes ORDER BY step, problem_id"
                                ).fetchall()

    def replay_solutions(self, last: int) -> dict[str, list[str]]:
        """The replay buffer: per problem, its `last` most recent distinct recorded completions (oldest first)."""
        out: dict[str, list[str]] = {}
        for pid, text in self._db.execute("SELECT problem_id, text FROM replay ORDER BY step DESC, k DESC"):
            sols = out.setdefault(pid, [])
            if len(sols) < last and text not in sols:
                sols.append(text)
        return {pid: sols[::-1] for pid, sols in out.items()}

    def steps_df(self):
        import pandas as pd
        return pd.DataFrame(self.steps())

    def evals_df(self):
        import pandas as pd
        return pd.DataFrame(self.evals())

    def problems_df(self):
        """Per-problem pass counts summed over training: problem_id, n, correct, steps_seen."""
        import pandas as pd
        df = pd.DataFrame(self.problem_passes(), columns=["step", "problem_id", "n", "correct"])
        if df.empty:
            return pd.DataFrame(columns=["problem_id", "n", "correct", "steps_seen"])
        return (df.groupby("problem_id").agg(n=("n", "sum"), correct=("correct", "sum"), steps_seen=("step", "count"))
                .reset_index())

    # ---- checkpoints ---------------------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.root / CKPT_DIR

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (step, path), oldest first."""
        if not self.checkpoint_root.exists():
            return []
        out = []
        for p in self.checkpoint_root.iterdir():
            if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit():
                out.append((int(p.name[5:]), p))
        return sorted(out)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def save_checkpoint(self, step: int, write: Callable[[Path], None], keep: int = 2) -> Path:
        """write(tmp_dir) fills a temp dir, which is then renamed to checkpoints/step_XXXXXX; older ones beyond the
        last `keep` are removed. A kill at any moment leaves only complete checkpoint dirs (temp dirs are swept)."""
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_root / f"step_{step:06d}"
        tmp = self.checkpoint_root / f".tmp_step_{step:06d}_{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.checkpoint_root)
        for _, old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def sweep_temp(self) -> None:
        """Remove leftovers of checkpoints interrupted while being written."""
        if self.checkpoint_root.exists():
            for p in self.checkpoint_root.glob(".tmp_step_*"):
                shutil.rmtree(p, ignore_errors=True)

    # ---- summary -------------------------------------------------------------------------------------------
    def is_finished(self) -> bool:
        return (self.root / SUMMARY_FILE).exists()

    def summary(self) -> dict | None:
        p = self.root / SUMMARY_FILE
        return json.loads(p.read_text()) if p.exists() else None

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.root / SUMMARY_FILE, summary)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
