"""One sweep run in its own process: `python -m rlscale.sweep.worker RUNDIR CONFIG_JSON LOCKFILE`.

Pins torch to OMP_NUM_THREADS threads (1 by default), dies with its parent (Linux PR_SET_PDEATHSIG, so a kill -9 of the sweep driver leaves no
orphan writing a run store), holds an exclusive lock on LOCKFILE while training (a second worker for the same run
waits) and calls the trainer with resume=True. The trainer is `rlscale.rl.grpo.train` unless the environment
variable RLSCALE_SWEEP_TRAINER names another callable as `module:function` with the signature
`fn(config: dict, out_dir: str, resume: bool, progress: bool) -> dict` (tests inject a fake trainer this way).
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

TRAINER_ENV = "RLSCALE_SWEEP_TRAINER"
PARENT_ENV = "RLSCALE_SWEEP_PARENT"


def grpo_train(config: dict, out_dir: str, resume: bool = True, progress: bool = False) -> dict:
    """The real trainer: GRPOConfig.from_dict(config) -> rlscale.rl.grpo.train, on OMP_NUM_THREADS torch threads
    (the sweep driver sets it from the spec's resources.cpus, default 1)."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from rlscale.rl.grpo import GRPOConfig, train

    return train(GRPOConfig.from_dict(config), out_dir, resume=resume, progress=progress)


def load_trainer(name: str | None = None) -> Callable[..., dict]:
    """The trainer callable named by `module:function` (default: RLSCALE_SWEEP_TRAINER, else grpo_train)."""
    name = name or os.environ.get(TRAINER_ENV)
    if not name:
        return grpo_train
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr or "train")


def die_with_parent() -> None:
    """Die with the sweep driver (its pid is in RLSCALE_SWEEP_PARENT)."""
    from rlscale.procs import die_with_parent as _die

    expected = os.environ.get(PARENT_ENV)
    _die(int(expected) if expected else None)


def lock_held(path: Path) -> bool:
    """True when some process holds the exclusive flock on path (a worker is training that run)."""
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def main(argv: list[str]) -> int:
    rundir, config_path, lock_path = (Path(a) for a in argv[:3])
    die_with_parent()
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # an orphan of a killed driver may still hold it for a moment
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        config = json.loads(config_path.read_text(encoding="utf-8"))
        trainer = load_trainer()
        summary = trainer(config, str(rundir), resume=True, progress=False)
    print(json.dumps({"run_dir": str(rundir), "summary": summary}, default=str), flush=True)
    return 0


def forked_main(argv: list[str], env: dict, log_path: str) -> None:
    """Entry of a run forked from the sweep driver's fork server (which has torch and the trainer imported, so a
    run starts in milliseconds instead of re-importing them): output to log_path, the run's environment, then
    `main`; the exit code is main's. The fork server is this process's parent. It exits when the driver dies (its
    "alive" pipe reaches EOF), and PR_SET_PDEATHSIG then takes the run down too; for that the run must not hold a
    copy of the pipe's write end, which multiprocessing hands every forked child, so it is closed here."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        server._forkserver_alive_fd = None
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update({**env, PARENT_ENV: str(os.getppid())})
    try:
        code = main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    from rlscale.numerics import pin_cpu_numerics

    pin_cpu_numerics()  # before torch: a Ray task on another node gets only RLSCALE_CPU_NUMERICS (worker_env)
    sys.exit(main(sys.argv[1:]))
