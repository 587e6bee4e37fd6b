"""Child processes that die with their parent: a killed `rlscale lab`, `pretrain` or `sweep` leaves no orphan
burning the cores (or writing a run store) after it."""

from __future__ import annotations

import ctypes
import os
import signal


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
