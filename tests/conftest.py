"""Test-session setup: one torch/OpenMP thread per process.

The suite's models are tiny, so a second thread buys little, while on a busy machine (CI running other jobs, or
the lab beside the tests) OpenMP threads that spin-wait for a core slow every op several-fold (LAB_NOTES: 2
threads on a contended machine were 11x slower than 1). Subprocesses inherit OMP_NUM_THREADS; a test that wants
more threads sets them explicitly.

The allocator is set as every rlscale command and trainer sets it (rlscale.procs.keep_freed_memory): freed blocks
are reused, so a kernel that read memory it never wrote (torch.empty is zero only when fresh from the kernel) shows
up in the tests comparing the fused and sampler paths with the torch reference.

The CPU numerics are pinned as the CLI pins them (rlscale.numerics), before torch runs anything: the tests that
call `main()` and the subprocesses they start then run the same kernels as the test process.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from rlscale.numerics import pin_cpu_numerics  # noqa: E402

pin_cpu_numerics()

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from rlscale.procs import keep_freed_memory  # noqa: E402

keep_freed_memory()
