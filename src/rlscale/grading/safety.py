"""Safety for symbolic grading: reject obvious bombs before sympy, and run sympy in worker processes that are
killed when they pass a hard time limit.

Nothing here evaluates model text.  `check_answer` is a cheap static screen (length, brace depth, power towers,
huge exponents and factorials, Python-looking payloads).  `SymbolicPool` owns a few long-lived worker processes
(fresh interpreters running rlscale/grading/worker.py); each job gets a hard deadline measured in the parent, and
a worker that misses it is killed and replaced (the replacement starts in the background; its start-up does not
count against any job).  Inside a worker a soft deadline (setitimer in the worker's main thread) stops most slow
comparisons without a restart, and an address-space limit turns memory bombs into a MemoryError.  This is needed
because Math-Verify's own timeouts use signal.alarm, which only works in the main thread and cannot interrupt
long C-level arithmetic (a power tower inside one sympy call).
"""

from __future__ import annotations

import atexit
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

MAX_ANSWER_CHARS = 1000  # an extracted answer longer than this is not a math answer
MAX_BRACE_DEPTH = 40
MAX_EXPONENT_LOG10 = 5.0  # exponents whose value exceeds 10^5 (10^{10^{10}}, 9^{9^9}) are rejected
MAX_FACTORIAL = 10_000
MAX_TOWER = 3  # a^{b^{c^{d}}} and deeper
WORKER_MEMORY_BYTES = 2 * 1024**3

_PAYLOAD_RE = re.compile(r"__|\b(?:import|lambda|eval|exec|compile|globals|locals|getattr|subprocess|system)\b|\bos\.")
_FACTORIAL_RE = re.compile(r"(\d+)\}?\s*!")
_GROUP_FACTORIAL_RE = re.compile(r"[})\]]\s*!")


def check_answer(text: str) -> str | None:
    """A reason string if text is an obvious bomb or payload that must not reach sympy, else None."""
    if len(text) > MAX_ANSWER_CHARS:
        return f"longer than {MAX_ANSWER_CHARS} characters"
    if _PAYLOAD_RE.search(text):
        return "contains a Python-looking payload"
    depth = max_depth = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            max_depth = max(max_depth, depth)
        elif ch in "})]":
            depth -= 1
    if max_depth > MAX_BRACE_DEPTH:
        return f"brackets nested deeper than {MAX_BRACE_DEPTH}"
    for m in _FACTORIAL_RE.finditer(text):
        if len(m.group(1)) > 6 or int(m.group(1)) > MAX_FACTORIAL:
            return f"factorial of a number above {MAX_FACTORIAL}"
    for m in _GROUP_FACTORIAL_RE.finditer(text):
        group = _group_before(text, m.start())
        if group is not None and "^" in group:
            return "factorial of a power"
    if "^" in text or "**" in text:
        reason = _check_powers(text.replace("**", "^"))
        if reason:
            return reason
    return None


def _group_before(text: str, close_index: int) -> str | None:
    """The bracket group ending at close_index (the `}`/`)`/`]`), or None if unbalanced."""
    depth = 0
    for i in range(close_index, -1, -1):
        if text[i] in "})]":
            depth += 1
        elif text[i] in "{([":
            depth -= 1
            if depth == 0:
                return text[i : close_index + 1]
    return None


_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def _exponent_at(text: str, i: int) -> tuple[str, int]:
    """The exponent written right after the `^` at index i-1: a braced group, or one token. Returns (text, end)."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j], j + 1
        return text[i + 1 :], len(text)
    m = re.compile(r"-?\d+(?:\.\d+)?|\\?[A-Za-z]+|.").match(text, i)
    return (m.group(), m.end()) if m else ("", i)


def _log10_value(expr: str, tower: int = 0) -> float | None:
    """Upper estimate of log10 |value| of a purely numeric power expression like `2^{3^{4}}`; None if the
    expression has symbols or other operators (then only the tower depth is checked)."""
    expr = expr.strip().lstrip("-")
    if _NUMBER_RE.fullmatch(expr):
        value = float(expr)
        return math.log10(value) if value > 0 else -math.inf
    i = expr.find("^")
    if i < 0:
        return None
    base = expr[:i].strip().strip("{}()")
    exponent, end = _exponent_at(expr, i + 1)
    if end != len(expr) and expr[end:].strip():
        # `a^{b}^{c}`: exponentiation chained after a group is a tower too.
        if expr[end:].lstrip().startswith("^"):
            exponent = exponent + expr[end:]
        else:
            return None
    if not _NUMBER_RE.fullmatch(base):
        return None
    log_exp = _log10_value(exponent, tower + 1)
    if log_exp is None:
        return None
    if log_exp > 300:
        return math.inf
    exponent_value = 10**log_exp
    base_value = float(base)
    return exponent_value * math.log10(base_value) if base_value > 1 else 0.0


def _check_powers(text: str) -> str | None:
    for i, ch in enumerate(text):
        if ch != "^":
            continue
        exponent, end = _exponent_at(text, i + 1)
        depth = exponent.count("^")
        chained = text[end:].lstrip().startswith("^")
        if depth + 1 + chained > MAX_TOWER:
            return "power tower"
        log_exp = _log10_value(exponent + (text[end:] if chained else ""))
        if log_exp is not None and log_exp > MAX_EXPONENT_LOG10:
            return "exponent above 10^5"
    return None


# ---- worker processes with a hard time limit ---------------------------------------------------------------------

Job = tuple  # picklable arguments of the worker function
TIMEOUT = "timeout"
ERROR = "error"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # .../src
PIPELINE = 2  # jobs queued per worker
WORKER_START_S = 120.0  # a worker must import sympy/Math-Verify and report ready within this (contended machine)


class _Worker:
    """One `python -m rlscale.grading.worker` subprocess talking over two pipes (pickled messages).

    A fresh interpreter (not fork/forkserver) so nothing of the caller is inherited or re-imported: it works from
    any thread, from scripts without a `__main__` guard, and next to torch."""

    def __init__(self, func_path: str):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        cmd = [sys.executable, "-m", "rlscale.grading.worker", func_path, str(to_child_r), str(from_child_w),
               str(WORKER_MEMORY_BYTES)]
        env = dict(os.environ)  # the child must import this very rlscale even if it is only on the caller's sys.path
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(cmd, pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, close_fds=True, env=env)
        os.close(to_child_r)
        os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.recv_conn = Connection(from_child_r, writable=False)
        self.ready = False  # True once it has imported everything and said so
        self.inflight: deque[int] = deque()  # job ids sent, in order; the first one is running
        self.deadline = time.monotonic() + WORKER_START_S  # start-up, then the running job's hard limit

    def send(self, job_id: int, soft_s: float, args: Job) -> None:
        self.inflight.append(job_id)
        self.send_conn.send((job_id, soft_s, args))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.send_conn.close()
        self.recv_conn.close()

    def close(self) -> None:
        try:
            self.send_conn.send(None)
            self.proc.wait(1)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class SymbolicPool:
    """Long-lived worker processes running `func_path` ("module:function") with a hard per-job time limit.

    run(jobs, timeout_s) -> results in order; a job that exceeds timeout_s (its worker is killed and replaced),
    crashes its worker, or hits the soft or memory limit inside the worker yields TIMEOUT; an exception inside the
    job function yields ERROR.  PIPELINE jobs are queued per worker so workers never idle waiting for the parent
    to be scheduled; a queued job's hard limit counts from when the parent saw the previous one finish (>= its
    real start).  Thread-safe (one run at a time)."""

    def __init__(self, func_path: str, workers: int):
        self.func_path = func_path
        self.size = max(1, workers)
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()
        self.restarts = 0

    def run(self, jobs: Sequence[Job], timeout_s: float) -> list:
        if not jobs:
            return []
        with self.lock:
            return self._run(jobs, timeout_s)

    def _run(self, jobs: Sequence[Job], timeout_s: float) -> list:
        results: list = [None] * len(jobs)
        self.workers = [w for w in self.workers if w.proc.poll() is None]
        while len(self.workers) < self.size:  # all of them, so a spare is warm while a killed one restarts
            self.workers.append(_Worker(self.func_path))
        soft_s = max(0.05, 0.8 * timeout_s)
        todo = deque(range(len(jobs)))
        remaining = len(jobs)
        while remaining:
            for w in self.workers:
                # Keep PIPELINE jobs queued per worker, so it never waits for this (possibly descheduled) process.
                while w.ready and todo and len(w.inflight) < PIPELINE:
                    job = todo.popleft()
                    try:
                        w.send(job, soft_s, jobs[job])
                    except OSError:  # died while idle: requeue its jobs and replace it
                        w.inflight.pop()
                        todo.appendleft(job)
                        self._drop(w, todo)
                        break
                    if len(w.inflight) == 1:
                        w.deadline = time.monotonic() + timeout_s
            watched = [w for w in self.workers if not w.ready or w.inflight]
            wait_s = max(0.0, min(w.deadline for w in watched) - time.monotonic())
            ready = wait([w.recv_conn for w in watched], timeout=wait_s)
            for w in watched:
                if w.recv_conn in ready:
                    try:
                        msg = w.recv_conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if not w.ready:
                        if msg != "ready":
                            raise RuntimeError(f"grading worker failed to start (exit code {w.proc.poll()})")
                        w.ready, w.deadline = True, math.inf
                        continue
                    if msg is None:  # crashed mid-job (e.g. killed by the OS): the running job is a timeout
                        results[w.inflight.popleft()] = TIMEOUT
                        remaining -= 1
                        self._drop(w, todo)
                        continue
                    job_id, result = msg
                    w.inflight.popleft()
                    results[job_id] = result
                    remaining -= 1
                    # the next queued job started at the latest now: its hard limit counts from here
                    w.deadline = time.monotonic() + timeout_s if w.inflight else math.inf
                elif time.monotonic() >= w.deadline:
                    if not w.ready:
                        raise RuntimeError(f"grading worker did not start within {WORKER_START_S:.0f} s")
                    results[w.inflight.popleft()] = TIMEOUT
                    remaining -= 1
                    self._drop(w, todo)
        return results

    def _drop(self, worker: _Worker, todo: deque) -> None:
        """Kill worker, put its queued (not yet running) jobs back at the front of todo, start a replacement."""
        todo.extendleft(reversed(worker.inflight))
        worker.inflight.clear()
        self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.restarts += 1
        self.workers[self.workers.index(worker)] = _Worker(self.func_path)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []


_POOLS: dict[str, SymbolicPool] = {}


def get_pool(func_path: str, workers: int) -> SymbolicPool:
    """The shared pool for func_path, allowed at least `workers` processes (started on first use)."""
    pool = _POOLS.get(func_path)
    if pool is None:
        pool = _POOLS[func_path] = SymbolicPool(func_path, workers)
    pool.size = max(pool.size, workers)
    return pool


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()
