"""Process-level settings: child processes that die with their parent (a killed `rlscale lab`, `pretrain` or
`sweep` leaves no orphan burning the cores, or writing a run store, after it), and an allocator that keeps freed
memory for reuse (the trainers' step allocates and frees the same multi-MB activations every step)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_MMAP_THRESHOLD = 1 << 28  # 256 MiB: every activation of the lab's steps is served from the heap
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap instead of returning it to the kernel
_tuned = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve large blocks from its heap and keep freed memory for reuse (mallopt
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD). Returns whether the setting is in effect.

    Why: by default glibc maps every block over ~128 KiB-32 MiB freshly from the kernel and unmaps it on free, so
    each training step pays page faults and page zeroing for every activation tensor again (measured on the lab's
    m update micro-batch, one thread: median 117-137 ms -> 82-103 ms per step; PyTorch's CPU performance guide
    recommends jemalloc/tcmalloc for the same reason). The cost: the process keeps its peak heap (at most 1 GiB
    beyond what is live) until it exits. Linux/glibc only; RLSCALE_MALLOC_TUNE=0 keeps the defaults."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get("RLSCALE_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, _MMAP_THRESHOLD) == 1 and libc.mallopt(-1, _TRIM_THRESHOLD) == 1  # M_MMAP_/M_TRIM_
    except (OSError, AttributeError):  # not glibc
        return False
    _tuned = ok
    return ok


def die_with_parent(expected_parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux PR_SET_PDEATHSIG; a no-op elsewhere).

    The signal fires when the thread that started this process exits, so start children from the main thread.
    `expected_parent`: the parent's pid as the parent saw it; if the parent is already gone (this process was
    re-parented before the call took effect), exit now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if expected_parent is not None and os.getppid() != int(expected_parent):
        os._exit(1)
