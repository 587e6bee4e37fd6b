"""The native (C) prefill and decode loop of the TinyGPT sampler: compiled on first use, cached, loaded with ctypes.

Why C: at the lab's sizes (d_model 48-192) a decode step is ~40 tiny torch ops whose fixed cost (dispatch,
allocation, small-GEMM setup) is most of the time; one C loop over the rows does the same arithmetic with
register-blocked matmuls. The torch loop in tiny_sampler.py stays the reference (tests compare the two) and the
fallback: no C compiler, a failed build, or RLSCALE_NATIVE=0 use it. The shared object is built with the system
compiler (`$CC`, else cc/gcc) for x86-64-v3 (AVX2, FMA, generic tuning) when the CPU numerics are pinned
(rlscale.numerics, the default on such CPUs), else for this CPU (-march=native), into $RLSCALE_CACHE (default
~/.cache/rlscale), keyed by a hash of the source, flags, CPU flags and compiler version; the build writes a temporary file and renames
it (safe when several processes start at once). No -ffast-math (it can change the whole process's floating-point mode); the flags that
let the compiler vectorise reductions and fuse multiply-adds are given one by one. `compile_and_load` is shared
by every C library of the package (this decode loop and rlscale.models.fused's kernels).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

SRC = Path(__file__).with_name("_tiny_decode.c")
FLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
         "-fassociative-math", "-fPIC", "-shared", "-std=gnu11"]


def flags() -> list[str]:
    """The target (rlscale.numerics.c_target: x86-64-v3 when the CPU numerics are pinned to AVX2, else
    -march=native) and FLAGS."""
    from rlscale.numerics import c_target

    return c_target() + FLAGS


_loaded: dict[Path, ctypes.CDLL | None] = {}  # per source: the configured library, or None (not available)
_load_lock = threading.Lock()


def _cpu_key() -> str:
    from rlscale.numerics import cpu_flags_line

    return cpu_flags_line() or platform.processor() or platform.machine()


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


@functools.cache
def compiler_version(cc: str | None) -> str | None:
    """The first line of `cc --version` (e.g. "gcc (Debian 12.2.0-14) 12.2.0"), None without a compiler: part of
    the C libraries' cache key (another compiler, or an upgraded one, builds other code: it rebuilds them) and of
    the numerics a run records (rlscale.numerics.numerics_record)."""
    if cc is None:
        return None
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next(iter(out.splitlines()), "").strip() or None


def loaded_compiler() -> str | None:
    """The compiler version of the C libraries this process has loaded (its C kernels ran, or may run), None when
    none is loaded (RLSCALE_NATIVE=0, no compiler, or a model without C kernels, e.g. Hugging Face)."""
    return compiler_version(_compiler()) if any(lib is not None for lib in _loaded.values()) else None


def _source_bytes(src_path: Path) -> bytes:
    """The source and, appended, every header it includes with `#include "..."` (relative to it), so that a
    header change rebuilds each library that uses it."""
    src = src_path.read_bytes()
    for name in re.findall(rb'^\s*#include\s+"([^"]+)"', src, flags=re.M):
        src += (src_path.parent / name.decode()).read_bytes()
    return src


def library_path(src_path: Path = SRC) -> Path:
    src = _source_bytes(src_path)
    key = hashlib.sha256(src + " ".join(flags()).encode() + _cpu_key().encode() + platform.machine().encode()
                         + str(compiler_version(_compiler())).encode())
    cache = Path(os.environ.get("RLSCALE_CACHE", Path.home() / ".cache" / "rlscale"))
    return cache / f"{src_path.stem.lstrip('_')}_{key.hexdigest()[:16]}.so"


def build(path: Path, src_path: Path = SRC) -> None:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags(), str(src_path), "-o", tmp, "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-500:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compile_and_load(src_path: Path, what: str, fallback: str,
                     configure: Callable[[ctypes.CDLL], None] | None = None) -> ctypes.CDLL | None:
    """The C library of `src_path`, built (cached on disk per source, flags, CPU and compiler), loaded and given its ctypes
    signatures by `configure` at most once per process; None, with a one-line note naming `what` and the
    `fallback` used instead, when RLSCALE_NATIVE=0 or there is no working compiler. Thread-safe: the sampler's and
    the trainer's worker threads may ask at once."""
    if src_path in _loaded:  # the hot path: every decode and every fused forward asks
        return _loaded[src_path]
    with _load_lock:
        if src_path not in _loaded:
            lib = _open(src_path, what, fallback)
            if lib is not None and configure is not None:
                configure(lib)
            _loaded[src_path] = lib
    return _loaded[src_path]


def _open(src_path: Path, what: str, fallback: str) -> ctypes.CDLL | None:
    if os.environ.get("RLSCALE_NATIVE", "1") == "0":
        return None
    try:
        path = library_path(src_path)
        if not path.exists():
            build(path, src_path)
        return ctypes.CDLL(str(path))
    except (OSError, RuntimeError) as e:
        print(f"[rlscale] {what} unavailable ({e}); using {fallback}", file=sys.stderr)
        return None


def _configure_decode(lib: ctypes.CDLL) -> None:
    f = lib.tiny_decode
    ptr_t, int_t = ctypes.c_void_p, ctypes.c_int
    # 12 ints (shapes, the window t0, t1), emb, head_t, norm_eps, 4 weight-pointer arrays, eps, Kp, Vp, inv, K, V,
    # cos, sin, pad, limit, noise, noise_row, logits_io, eos, tokens, all_logits, end_at, save (the activation
    # buffers' pointer array, or NULL)
    f.argtypes = [int_t] * 12 + [ptr_t, ptr_t, ctypes.c_float] + [ptr_t] * 17 + [ctypes.c_int64] + [ptr_t] * 4
    f.restype = int_t
    f = lib.tiny_prefill
    # 8 ints (shapes), ids, upad, emb, head_t, norm_eps, 4 weight-pointer arrays, eps, cos, sin, Kp, Vp, logits, save
    f.argtypes = [int_t] * 8 + [ptr_t] * 4 + [ctypes.c_float] + [ptr_t] * 11
    f.restype = int_t


def load() -> ctypes.CDLL | None:
    """The compiled decode library, or None (then the torch loop is used)."""
    return compile_and_load(SRC, "native sampler", "the torch decode loop", _configure_decode)


def ptr(t) -> int:
    return t.data_ptr()


def ptr_array(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])
