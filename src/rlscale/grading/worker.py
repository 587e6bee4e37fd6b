"""Grading worker process: `python -m rlscale.grading.worker MODULE:FUNC READ_FD WRITE_FD MEMORY_BYTES`.

Started by rlscale.grading.safety.SymbolicPool.  Imports the job function, limits its address space, reports
"ready", then loops: receive (job_id, soft_s, args), run func(*args) under a soft interval timer, send
(job_id, result).  Soft timeouts, MemoryError and RecursionError give "timeout"; other exceptions "error".
"""

from __future__ import annotations

import importlib
import signal
import sys
from multiprocessing.connection import Connection

from rlscale.grading.safety import ERROR, TIMEOUT


class SoftTimeout(BaseException):
    """Raised by the interval timer (BaseException so library `except Exception` blocks cannot swallow it)."""


def _on_alarm(signum, frame):
    raise SoftTimeout


def main(argv: list[str]) -> int:
    func_path, read_fd, write_fd, memory_bytes = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    recv_conn, send_conn = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ImportError, ValueError, OSError):
        pass
    module_name, func_name = func_path.rsplit(":", 1)
    func = getattr(importlib.import_module(module_name), func_name)
    warm = getattr(sys.modules[module_name], "warm_up", None)
    if warm is not None:
        warm()
    signal.signal(signal.SIGALRM, _on_alarm)
    send_conn.send("ready")
    while True:
        try:
            msg = recv_conn.recv()
        except (EOFError, OSError):
            return 0
        if msg is None:
            return 0
        job_id, soft_s, args = msg
        try:
            signal.setitimer(signal.ITIMER_REAL, soft_s)
            try:
                result = func(*args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except (SoftTimeout, MemoryError, RecursionError):
            result = TIMEOUT
        except Exception:  # the job function should catch its own errors; never let one kill the worker
            result = ERROR
        try:
            send_conn.send((job_id, result))
        except Exception:  # result not picklable
            send_conn.send((job_id, ERROR))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
