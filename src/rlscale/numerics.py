"""CPU numerics pinned to one instruction set, so that a command gives the same bits on every x86-64 CPU with AVX2.

MKL's sgemm and ATen's vectorised kernels pick their code path by the CPU they run on (AVX2, AVX-512, AMX), and the
paths sum in different orders. So the same lab recipe pretrained another model on an AVX-512 CPU than on AVX2 ones
(Zen 4: held-out loss 0.0967 against 0.0836 on Zen 1 and Zen 3; docs/lab_results.md), and the lab's report
differed by machine. Pinned to the AVX2 paths (MKL's conditional numerical reproducibility, `MKL_CBWR=AVX2`, and
ATen's `ATEN_CPU_CAPABILITY=avx2`), the Zen 4 kind pretrains the AVX2 kinds' model bitwise and its lab reproduces
their report (stop 36). The package's own C kernels are built for one fixed target under the pin (x86-64-v3,
generic tuning: c_target).

`rlscale` pins by default (the CLI calls `pin_cpu_numerics()` before anything imports torch). `RLSCALE_CPU_NUMERICS=
native` keeps each library's widest kernels instead (faster where AVX-512 matters; results then depend on the
CPU). A variable the user set (MKL_CBWR, ATEN_CPU_CAPABILITY) is kept.
oneDNN (bf16 matmuls, AMX) and GPU kernels are not affected. Library users who want the pin call `pin_cpu_numerics()` before torch runs its
first operation: both settings are read once per process, at first use.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from rlscale.errors import UserError

ENV = "RLSCALE_CPU_NUMERICS"
MODES = ("avx2", "native")
AVX2_PIN = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
"""the environment that selects the AVX2 code paths: MKL (sgemm, read at its first call) and ATen (read at its
first vectorised kernel)"""


def cpu_flags_line(cpuinfo: str | None = None) -> str:
    """The CPU's feature line of /proc/cpuinfo (x86 `flags`, Arm `Features`), or "" where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    return next((line for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))), "")


def cpu_has_avx2(cpuinfo: str | None = None) -> bool:
    """Whether this CPU is x86-64 with AVX2 and FMA (Linux: the flags line of /proc/cpuinfo)."""
    if cpuinfo is None and platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    line = cpu_flags_line(cpuinfo)
    return line.startswith("flags") and {"avx2", "fma"} <= set(line.split(":", 1)[1].split())


def requested_mode() -> str:
    """RLSCALE_CPU_NUMERICS, checked: avx2 (the default) or native."""
    mode = os.environ.get(ENV, "avx2").strip().lower() or "avx2"
    if mode not in MODES:
        raise UserError(f"{ENV}={os.environ[ENV]!r} is not a CPU numerics mode: use avx2 (the same bits on every "
                        "x86-64 CPU with AVX2; the default) or native (each library's widest kernels)")
    return mode


def pin_cpu_numerics(cpuinfo: str | None = None) -> str:
    """Select the AVX2 code paths for this process and its children unless RLSCALE_CPU_NUMERICS=native or the CPU
    has no AVX2. Returns the mode in effect ("avx2" or "native") and exports it as RLSCALE_CPU_NUMERICS, which the
    C kernels' build reads."""
    mode = requested_mode()
    if mode == "avx2" and not cpu_has_avx2(cpuinfo):
        mode = "native"  # nothing to pin to: e.g. aarch64, whose paths do not vary by CPU here
    if mode == "avx2":
        for key, value in AVX2_PIN.items():
            os.environ.setdefault(key, value)
    os.environ[ENV] = mode
    return mode


def current_cpu_numerics() -> str:
    """The numerics this process runs with, as recorded with a model: "avx2" when both libraries are pinned to
    AVX2 (and, once torch is imported, ATen runs its AVX2 kernels: a pin set after torch's first vectorised
    operation comes too late for ATen), else "native"."""
    pinned = all(os.environ.get(k, "").lower() == v.lower() for k, v in AVX2_PIN.items())
    if pinned and "torch" in sys.modules:
        import torch

        pinned = torch.backends.cpu.get_cpu_capability() == "AVX2"
    return "avx2" if pinned else "native"


PINNED_C_TARGET = ["-march=x86-64-v3", "-mtune=generic"]
"""the C kernels' target under the AVX2 pin: AVX2 + FMA with generic tuning, the same machine code on every x86-64
CPU (with the same compiler). With -march=native the code depends on the CPU: GCC vectorises by its widths and
tuning, and under -fassociative-math and -ffp-contract=fast that moves the sums' order and the fused multiply-adds
(measured on Zen 4: the fused update's weights after 24 steps differ between builds with and without AVX-512,
even without -fassociative-math)."""


def c_target() -> list[str]:
    """-march/-mtune of the package's C kernels: the fixed AVX2 target when the numerics are pinned, else the
    CPU's own (-march=native)."""
    return PINNED_C_TARGET if os.environ.get(ENV) == "avx2" and current_cpu_numerics() == "avx2" else ["-march=native"]


def numerics_record() -> dict:
    """What decides the bits of a result computed in this process, as a model and each training run record it: the
    CPU numerics mode, torch's version and the CPU kernels ATen runs, and the compiler of the package's C kernels
    when they are loaded (None otherwise: RLSCALE_NATIVE=0, no compiler, or a model without C kernels), and the CUDA
    version torch was built for (None on CPU builds; GPU kernels are not pinned). Two results
    with equal records and equal inputs are the same bits on any x86-64 CPU with AVX2 under the pin."""
    import torch

    from rlscale.engine.native import loaded_compiler

    return {"cpu_numerics": current_cpu_numerics(), "torch": torch.__version__,
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(), "c_compiler": loaded_compiler(),
            "cuda": torch.version.cuda}
