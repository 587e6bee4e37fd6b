"""Run a sweep's grid, each run in its own process, on local workers or as Ray tasks; resumable.

SWEEPDIR layout:
  spec.toml|spec.yaml     copy of the spec file of the latest invocation
  sweep.json              spec hash, sweep identity, resolved spec, current runs with status, spec history
  configs/<run_id>.json   resolved trainer config of each run
  runs/<run_id>/          the run store written by the trainer (summary.json present = finished)
  logs/<run_id>.log       stdout/stderr of the run's worker process
  locks/                  driver.lock (one driver per SWEEPDIR) and <run_id>.lock (held by the run's worker)

Resume: re-running the same command skips finished runs, resumes interrupted ones (the trainer resumes from its
checkpoints; the worker's lock guarantees one writer per run store) and refuses a spec whose sweep identity
(model, task, data, seeds) differs from the one that created SWEEPDIR, except when the directory tree holding
SWEEPDIR, its model and its data moved (sweep/relocate.py: its runs are carried over) or the spec only adds seeds
(the finished runs are kept and the new seeds' runs added: more runs per n for the run bootstrap). A changed run config has a
new run id, so records of different configs never mix. Workers die with the driver (PR_SET_PDEATHSIG).

Local runs are forked from a fork server that imported torch and the trainer once (`ForkedRun`), so a run's
process starts in milliseconds instead of re-importing them (bench/sweep_startup.py); RLSCALE_SWEEP_FORK=0 starts
each in a fresh interpreter instead (`FreshRun`, as Ray tasks do). Either way a run has its own process.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlscale.config import changed_keys, seeds_grew
from rlscale.errors import UserError
from rlscale.io import atomic_write_json, atomic_write_text
from rlscale.rl.grpo import VAL_CACHE_ENV
from rlscale.sweep.export import read_store, run_finished
from rlscale.sweep.plan import format_duration
from rlscale.sweep.relocate import moved_roots, relocate_runs
from rlscale.sweep.spec import RunSpec, SweepSpec
from rlscale.sweep.worker import PARENT_ENV, TRAINER_ENV, lock_held


@dataclass
class SweepResult:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before this invocation
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------- sweep dir


def check_sweepdir(spec: SweepSpec, out: Path) -> tuple[dict | None, tuple[str, str] | None]:
    """(the existing sweep.json of SWEEPDIR or None for a new/empty dir, (old_root, new_root) when SWEEPDIR moved
    with its data (sweep/relocate.py) or None); UserError if its identity conflicts otherwise."""
    sweep_json = out / "sweep.json"
    if sweep_json.is_file():
        old = json.loads(sweep_json.read_text(encoding="utf-8"))
        identity = dict(old["identity"])
        if seeds_grew(identity.get("seeds"), spec.identity()["seeds"]):
            identity["seeds"] = spec.identity()["seeds"]  # more seeds: the finished runs stay, the new ones run
        diff = changed_keys(identity, spec.identity())
        roots = moved_roots(identity, spec.identity(), out) if diff else None
        if diff and roots is None:
            k = diff[0]
            raise UserError(f"{out}: holds a sweep with a different {k} ({old['identity'].get(k)!r} vs "
                            f"{spec.identity().get(k)!r}); use a new --out directory")
        return old, roots
    # a driver killed between taking its lock and writing sweep.json leaves only locks/
    if out.exists() and (not out.is_dir() or any(p.name != "locks" for p in out.iterdir())):
        raise UserError(f"{out}: exists and is not a sweep directory (no sweep.json); use a new or empty --out")
    return None, None


def prepare_sweepdir(spec: SweepSpec, out: Path, old: dict | None) -> dict:
    """Write sweep.json (first: it makes SWEEPDIR a sweep directory), the spec copy and the run configs."""
    history = list(old.get("history", [])) if old else []
    if spec.spec_hash() not in history:
        history.append(spec.spec_hash())
    sweep = {"spec_hash": spec.spec_hash(), "identity": spec.identity(), "spec": spec.resolved(),
             "history": history,
             "runs": {r.run_id: {"n": r.n, "problems_per_batch": r.problems_per_batch, "iterations": r.iterations,
                                 "budget": r.budget, "seed": r.seed, "train": r.train,
                                 "status": "done" if run_finished(out / "runs" / r.run_id) else "queued"}
                      for r in spec.runs}}
    atomic_write_json(out / "sweep.json", sweep)
    for sub in ("configs", "runs", "logs", "locks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    from_file = spec.path.is_file()
    ext = ".toml" if from_file and spec.path.suffix.lower() == ".toml" else ".yaml"
    for stale in ("spec.toml", "spec.yaml"):
        if stale != f"spec{ext}" and (out / stale).exists():
            (out / stale).unlink()
    if from_file:
        atomic_write_text(out / f"spec{ext}", spec.path.read_text(encoding="utf-8"))
    else:  # a spec built in code: its resolved form
        import yaml

        atomic_write_text(out / "spec.yaml", yaml.safe_dump(spec.resolved(), sort_keys=False))
    for run in spec.runs:
        cfg_path = out / "configs" / f"{run.run_id}.json"
        if not cfg_path.exists():
            atomic_write_json(cfg_path, run.config)
    return sweep


def _lock_driver(out: Path):
    f = open(out / "locks" / "driver.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UserError(f"{out}: another `rlscale sweep run` is running on this directory; wait for it or stop "
                        f"it") from None
    return f


def worker_env(threads: int = 1, trainer: str | None = None) -> dict:
    """Environment overrides of a worker process (applied over the environment of the process starting it, so
    Ray's CUDA_VISIBLE_DEVICES survives): `threads` torch/OpenMP threads (the spec's cpus), the trainer override,
    the device (RLSCALE_DEVICE; "cuda" in a Ray task with gpus is the GPU Ray gave it), gradient checkpointing and
    the CPU numerics mode (the worker pins its own node's libraries by it: rlscale.numerics)."""
    threads = str(max(1, int(threads)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           "TOKENIZERS_PARALLELISM": "false"}
    trainer = trainer or os.environ.get(TRAINER_ENV)
    if trainer:
        env[TRAINER_ENV] = trainer
    from rlscale.models.device import CHECKPOINTING_ENV
    from rlscale.models.device import ENV as DEVICE_ENV
    from rlscale.numerics import ENV as NUMERICS_ENV

    for name in (DEVICE_ENV, CHECKPOINTING_ENV, NUMERICS_ENV):  # --device etc.: Ray tasks on other nodes see only this dict
        if os.environ.get(name):
            env[name] = os.environ[name]
    src = str(Path(__file__).resolve().parents[2])  # so a worker imports this rlscale even when not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return env


def worker_args(out: Path, run_id: str) -> list[str]:
    return [str(out / "runs" / run_id), str(out / "configs" / f"{run_id}.json"), str(out / "locks" / f"{run_id}.lock")]


def worker_cmd(out: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "rlscale.sweep.worker", *worker_args(out, run_id)]


FORK_PRELOAD = ("torch", "torch._dynamo", "rlscale.rl.grpo", "rlscale.models", "rlscale.grading")
"""modules the local fork server imports once for the default trainer, so a run's process starts without
importing them (bench/sweep_startup.py: 12 runs of 256 rollouts on 2 workers, 0.77x the wall time of a fresh
interpreter per run, 2.25 s saved per run). torch._dynamo since stop 32: torch's optimizers import it (with
sympy: 856 modules in a short training before, 37 after) the first time one is built, so without it every forked run paid 1.3-2.1 s for that
before its first step (bench/sweep_startup.py: 1.64 s per run; the quick lab's 52 runs on 2 workers: ~43 s, estimated)"""


FORK_ENV = "RLSCALE_SWEEP_FORK"
"""0: start every local run in a fresh interpreter (`python -m rlscale.sweep.worker`) instead of forking it from
the fork server"""


class FreshRun(subprocess.Popen):
    """One local run in a fresh interpreter (FORK_ENV=0; what Ray tasks run too)."""

    def __init__(self, out: Path, run_id: str, env: dict, log_path: Path):
        with open(log_path, "ab") as log:
            super().__init__(worker_cmd(out, run_id), env=env, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)


class ForkedRun:
    """One local run in its own process, forked from a fork server that has the trainer imported. The interface
    of subprocess.Popen that _run_local uses (poll, returncode, terminate, kill, wait)."""

    _ctx = None

    def __init__(self, out: Path, run_id: str, env: dict, log_path: Path):
        from rlscale.sweep.worker import forked_main

        if ForkedRun._ctx is None:  # one fork server per driver process, started by the first run
            import multiprocessing as mp

            ForkedRun._ctx = mp.get_context("forkserver")
            heavy = [] if env.get(TRAINER_ENV) else list(FORK_PRELOAD)  # an injected trainer may not need torch
            ForkedRun._ctx.set_forkserver_preload(["rlscale.sweep.worker", *heavy])
        self.proc = ForkedRun._ctx.Process(target=forked_main, args=(worker_args(out, run_id), env, str(log_path)))
        self.proc.start()

    @property
    def returncode(self) -> int | None:
        return self.proc.exitcode

    def poll(self) -> int | None:
        return self.proc.exitcode

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise subprocess.TimeoutExpired("sweep run", timeout)
        return self.proc.exitcode


# ---------------------------------------------------------------------------------------------- progress


class Progress:
    """Runs done/running/queued, rollouts spent and ETA on stderr (one line; rewritten in place on a TTY)."""

    def __init__(self, runs: list[RunSpec], out: Path, enabled: bool = True, stream=None):
        self.runs, self.out, self.enabled = runs, out, enabled
        self.stream = stream or sys.stderr
        self.total = sum(r.rollouts for r in runs)
        self.t0 = time.monotonic()
        self.spent0: float | None = None
        self.last_line, self.last_t, self.last_print, self._cache = "", 0.0, 0.0, {}

    def _spent(self, run: RunSpec, running: bool) -> float:
        rundir = self.out / "runs" / run.run_id
        if run_finished(rundir):
            return float(run.rollouts)
        if not running and run.run_id in self._cache:
            return self._cache[run.run_id]
        spent = 0.0
        if rundir.is_dir():
            try:
                steps, _ = read_store(rundir)
                if len(steps) and "compute/rollouts" in steps.columns:
                    spent = float(steps["compute/rollouts"].max())
            except Exception:  # store not created yet, or mid-write
                spent = self._cache.get(run.run_id, 0.0)
        self._cache[run.run_id] = spent
        return spent

    def update(self, status: dict[str, str], force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last_t < 2.0:
            return
        self.last_t = now
        counts = {s: sum(1 for v in status.values() if v == s) for s in ("done", "running", "queued", "failed")}
        spent = sum(self._spent(r, status[r.run_id] == "running") for r in self.runs)
        if self.spent0 is None:
            self.spent0 = spent
        elapsed = now - self.t0
        rate = (spent - self.spent0) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - spent) / rate if rate > 0 else float("nan")
        line = (f"[sweep] done {counts['done']}/{len(self.runs)}  running {counts['running']}  queued "
                f"{counts['queued']}  failed {counts['failed']}  rollouts {int(spent)}/{self.total}"
                f"{f' ({rate:,.0f}/s)' if rate > 0 else ''}  elapsed {format_duration(elapsed)}  "
                f"ETA {format_duration(eta)}")
        if not self.stream.isatty() and not force:  # logs: a line when a run changes state, else every 30 s
            same_runs = line.split("  rollouts")[0] == self.last_line.split("  rollouts")[0]
            if same_runs and now - self.last_print < 30.0:
                return
        self.last_line, self.last_print = line, now
        end = "\r" if self.stream.isatty() and not force else "\n"
        print(line.ljust(100) if end == "\r" else line, end=end, file=self.stream, flush=True)


# ---------------------------------------------------------------------------------------------- execution


def _record(out: Path, sweep: dict, status: dict[str, str]) -> None:
    for rid, st in status.items():
        sweep["runs"][rid]["status"] = st
    atomic_write_json(out / "sweep.json", sweep)


def gpu_slots(workers: int, environ: dict, gpu_count: int) -> list[dict]:
    """Environment overrides of each local worker slot: with more than one CUDA device visible and the device
    unpinned (RLSCALE_DEVICE unset, auto or cuda), slot i sees only device i mod count (CUDA_VISIBLE_DEVICES, taken
    from the visible list when one is set), so `--workers 4` on a 4-GPU machine gives each run its own GPU; else
    no overrides (every run on the one device, or on the CPU)."""
    from rlscale.models.device import ENV as DEVICE_ENV

    spec = (environ.get(DEVICE_ENV) or "auto").strip().lower()
    if gpu_count < 2 or spec not in ("auto", "cuda"):
        return [{} for _ in range(workers)]
    visible = [d.strip() for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids = visible[:gpu_count] if visible else [str(i) for i in range(gpu_count)]
    return [{"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} for i in range(workers)]


def cuda_count() -> int:
    """NVIDIA GPUs of this machine: torch's count when torch is already imported, else the driver's entries in
    /proc/driver/nvidia/gpus (0 without the driver), so a sweep driver neither imports torch nor creates a CUDA
    context to place its workers (gpu_slots limits it to CUDA_VISIBLE_DEVICES)."""
    if "torch" in sys.modules:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def _run_local(todo: list[RunSpec], out: Path, workers: int, env: dict, status: dict, on_change) -> None:
    queue = list(todo)
    procs: dict[str, ForkedRun | FreshRun] = {}
    env = {**os.environ, **env, PARENT_ENV: str(os.getpid())}
    start = FreshRun if os.environ.get(FORK_ENV, "1") == "0" else ForkedRun
    slots = gpu_slots(workers, env, cuda_count())
    slot_of: dict[str, int] = {}
    try:
        while queue or procs:
            while queue and len(procs) < workers:
                run = queue.pop(0)
                slot = min(set(range(workers)) - set(slot_of.values()))
                slot_of[run.run_id] = slot
                procs[run.run_id] = start(out, run.run_id, {**env, **slots[slot]}, out / "logs" / f"{run.run_id}.log")
                status[run.run_id] = "running"
                on_change(True)
            for rid, proc in list(procs.items()):
                if proc.poll() is not None:
                    del procs[rid]
                    del slot_of[rid]
                    ok = proc.returncode == 0 and run_finished(out / "runs" / rid)
                    status[rid] = "done" if ok else "failed"
                    on_change(True)
            on_change(False)
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            proc.terminate()
        for rid, proc in procs.items():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            status[rid] = "queued"


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """UserError unless host:port of a Ray address (host:port or ray://host:port) accepts a TCP connection."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray '{address}': expected HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--ray '{address}': Ray cluster unreachable ({e.strerror or e}); start it with "
                        f"`ray start --head` or use --ray auto") from None


def _ray_task(cmd: list[str], env: dict, log_path: str) -> int:
    """Body of the Ray task: the same worker process as locally, so each run has its own process."""
    with open(log_path, "ab") as log:
        return subprocess.run(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode


def _run_ray(todo: list[RunSpec], out: Path, spec: SweepSpec, address: str, workers: int, env: dict,
             status: dict, on_change) -> None:
    import ray

    try:
        if address == "auto":
            ray.init(address="local", num_cpus=max(spec.cpus, 1) * workers, num_gpus=0 if not spec.gpus else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as e:  # ConnectionError, RuntimeError, ...: one line, not a traceback
        msg = " ".join(str(e).split())[:300]
        raise UserError(f"--ray {address}: could not start/connect to Ray ({type(e).__name__}: {msg})") from None
    try:
        remote = ray.remote(_ray_task).options(num_cpus=spec.cpus, num_gpus=spec.gpus, max_retries=0)
        refs = {remote.remote(worker_cmd(out, r.run_id), env, str(out / "logs" / f"{r.run_id}.log")): r.run_id
                for r in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                rid = refs[ref]
                try:
                    rc = ray.get(ref)
                except Exception:  # a worker node died: the run is resumable
                    rc = 1
                status[rid] = "done" if rc == 0 and run_finished(out / "runs" / rid) else "failed"
                on_change(True)
            for ref in pending:  # a run is running when its worker holds the run lock
                rid = refs[ref]
                status[rid] = "running" if lock_held(out / "locks" / f"{rid}.lock") else "queued"
            on_change(False)
    finally:
        for rid, st in status.items():
            if st == "running":
                status[rid] = "queued"
        ray.shutdown()


def run_sweep(spec: SweepSpec, out: str | os.PathLike, workers: int = 1, ray_address: str | None = None,
              trainer: str | None = None, progress: bool = True) -> SweepResult:
    """Run every unfinished run of the spec into SWEEPDIR `out`; see the module docstring for the layout."""
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if ray_address is not None and ray_address != "auto":
        check_ray_address(ray_address)
    if ray_address is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--ray needs the ray package: pip install 'rlscale[ray]'") from None
    out = Path(out).resolve()
    old, roots = check_sweepdir(spec, out)
    (out / "locks").mkdir(parents=True, exist_ok=True)
    driver_lock = _lock_driver(out)
    try:
        if roots is not None:  # moved with its data
            carried = relocate_runs(out, *roots)
            if progress:
                print(f"[sweep] {out}: moved from {roots[0]} to {roots[1]}; {carried} run(s) carried over",
                      file=sys.stderr, flush=True)
        sweep = prepare_sweepdir(spec, out, old)
    except BaseException:
        driver_lock.close()
        raise
    t0 = time.monotonic()
    result = SweepResult()
    try:
        runs = list(spec.runs)
        status = {r.run_id: ("done" if run_finished(out / "runs" / r.run_id) else "queued") for r in runs}
        result.skipped = [rid for rid, s in status.items() if s == "done"]
        todo = [r for r in runs if status[r.run_id] != "done"]
        view = Progress(runs, out, enabled=progress)

        def on_change(changed: bool) -> None:
            if changed:
                _record(out, sweep, status)
            view.update(status, force=False)

        _record(out, sweep, status)
        view.update(status, force=True)
        env = worker_env(spec.cpus, trainer)
        # runs that start from the same weights validate identically at step 0 (fixed validation seed): one of
        # them computes it, the others read it (rlscale.rl.grpo.initial_validation)
        env[VAL_CACHE_ENV] = str(out.resolve() / "val_cache")
        if ray_address is None:
            _run_local(todo, out, workers, env, status, on_change)
        else:
            _run_ray(todo, out, spec, ray_address, workers, env, status, on_change)
        view.update(status, force=True)
        result.done = [rid for rid, s in status.items() if s == "done" and rid not in result.skipped]
        result.failed = [rid for rid, s in status.items() if s == "failed"]
    finally:
        _record(out, sweep, status)
        driver_lock.close()
    result.wall_s = time.monotonic() - t0
    return result


def failure_message(out: Path, failed: list[str]) -> str:
    """One line per failed run with the last line of its log."""
    lines = []
    for rid in failed:
        log = out / "logs" / f"{rid}.log"
        tail = ""
        if log.is_file():
            text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            tail = text[-1] if text else ""
        lines.append(f"run {rid} failed (log: {log}): {tail}")
    return "\n".join(lines)
