"""CPU numerics pinned to AVX2 (rlscale.numerics): the mode's rules, that torch and MKL take the pin in a fresh
process, and that the pinned kernels give the bits every AVX2 CPU gives."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rlscale import numerics
from rlscale.errors import UserError

AVX2_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
AVX512_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu sse2 sse4_2 avx\n"


@pytest.fixture
def clean_env(monkeypatch):
    for key in (numerics.ENV, *numerics.AVX2_PIN):
        monkeypatch.setenv(key, "")  # records the key's state, set or not, for the teardown to restore
        monkeypatch.delenv(key)
    return monkeypatch


def test_cpu_flags_are_read():
    assert numerics.cpu_has_avx2(AVX2_CPU) and numerics.cpu_has_avx2(AVX512_CPU)
    assert not numerics.cpu_has_avx2(OLD_CPU)
    assert not numerics.cpu_has_avx2("processor\t: 0\n")


def test_pin_sets_both_libraries_and_exports_the_mode(clean_env):
    assert numerics.pin_cpu_numerics(AVX512_CPU) == "avx2"
    assert os.environ["MKL_CBWR"] == "AVX2" and os.environ["ATEN_CPU_CAPABILITY"] == "avx2"
    assert os.environ[numerics.ENV] == "avx2"
    assert numerics.current_cpu_numerics() == "avx2"
    assert numerics.c_target() == ["-march=x86-64-v3", "-mtune=generic"]


def test_native_and_cpus_without_avx2_are_left_alone(clean_env):
    clean_env.setenv(numerics.ENV, "native")
    assert numerics.pin_cpu_numerics(AVX512_CPU) == "native"
    assert "MKL_CBWR" not in os.environ and numerics.c_target() == ["-march=native"]
    clean_env.delenv(numerics.ENV)
    assert numerics.pin_cpu_numerics(OLD_CPU) == "native"
    assert "ATEN_CPU_CAPABILITY" not in os.environ and os.environ[numerics.ENV] == "native"
    assert numerics.current_cpu_numerics() == "native"


def test_a_setting_the_user_made_is_kept(clean_env):
    clean_env.setenv("MKL_CBWR", "COMPATIBLE")
    assert numerics.pin_cpu_numerics(AVX2_CPU) == "avx2"
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"
    assert numerics.current_cpu_numerics() == "native"  # not the AVX2 pin: recorded as such
    assert numerics.c_target() == ["-march=native"]


def test_a_bad_mode_is_one_line_naming_the_variable(clean_env):
    clean_env.setenv(numerics.ENV, "avx512")
    with pytest.raises(UserError, match="RLSCALE_CPU_NUMERICS='avx512'.*use avx2.*or native"):
        numerics.pin_cpu_numerics(AVX2_CPU)
    from rlscale.cli import main

    assert main(["tasks"]) == 2


# A matmul (MKL's sgemm), a softmax and a row sum (ATen's vectorised kernels) of seeded normal draws (ATen's
# vectorised Box-Muller). The digest was measured with the pin on a Zen 4 EPYC (AVX-512; stop 36), where the same
# computation unpinned gives another digest: every CPU with AVX2 must give this one under the pin.
PROBE = """
import hashlib, torch
from rlscale.numerics import pin_cpu_numerics, current_cpu_numerics
mode = pin_cpu_numerics()
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x = torch.randn(61, 200, generator=g)
w = torch.randn(200, 93, generator=g)
y = x @ w
z = torch.softmax(y / 7, dim=-1)
s = (y * z).sum(dim=0)
h = hashlib.sha256(b"".join(t.contiguous().numpy().tobytes() for t in (x, y, z, s))).hexdigest()[:16]
print(mode, current_cpu_numerics(), torch.backends.cpu.get_cpu_capability(), h)
"""
PINNED_DIGEST = "c4b98c4417e57dd0"


def _fresh(code: str, mode: str | None = None) -> list[str]:
    """The words `code` prints in a fresh process, with the pin's variables cleared and RLSCALE_CPU_NUMERICS=mode."""
    env = {k: v for k, v in os.environ.items() if k not in (numerics.ENV, *numerics.AVX2_PIN)}
    if mode is not None:
        env[numerics.ENV] = mode
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="needs an x86-64 CPU with AVX2")
def test_torch_takes_the_pin_and_gives_the_avx2_bits():
    mode, recorded, capability, digest = _fresh(PROBE, "avx2")
    assert (mode, recorded, capability) == ("avx2", "avx2", "AVX2")
    assert digest == PINNED_DIGEST
    native = _fresh(PROBE, "native")
    assert native[:2] == ["native", "native"]
    if native[2] == "AVX2":  # an AVX2 CPU runs the AVX2 paths anyway: the same bits
        assert native[3] == digest


def test_the_c_kernels_are_built_for_one_target_under_the_pin(clean_env):
    from rlscale.engine import native

    clean_env.setenv(numerics.ENV, "native")
    plain = native.library_path()
    clean_env.delenv(numerics.ENV)
    assert numerics.pin_cpu_numerics(AVX2_CPU) == "avx2"
    assert "-march=x86-64-v3" in native.flags() and "-march=native" not in native.flags()
    assert native.library_path() != plain  # another build, cached under its own key


# The lab's own paths: the C sampler (prefill, decode, log-probs) on a perturbed random s model, and the fused C
# update's forward and every gradient, with their MKL matmuls and ATen ops. Measured under the pin on a Zen 4 EPYC
# (stop 36); there the same probe gives other digests unpinned, with the C kernels built by -march=native under the
# pin (the AVX-512 build of stop 36's first commit), and with -march=native -mno-avx512f. Every CPU with AVX2 and the
# same compiler must give this one.
C_PROBE = """
import hashlib, torch
from rlscale.numerics import pin_cpu_numerics
mode = pin_cpu_numerics()
torch.set_num_threads(1)
from rlscale.engine import native
from rlscale.engine.base import SamplingParams
from rlscale.lab.pretrain import build_policy
from rlscale.models import fused
from rlscale.tasks.arith import load_arith

h = hashlib.sha256()
pol = build_policy("s", seed=1)
with torch.no_grad():  # off the init, so that norms and attention are not near-uniform
    g = torch.Generator().manual_seed(2)
    for p in pol.module.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
outs = pol.sampler().generate([p.question for p in load_arith("test", limit=12)],
                              SamplingParams(n=4, temperature=1.0, max_new_tokens=40, seed=0))
for rs in outs:
    for r in rs:
        h.update(torch.tensor(r.token_ids).numpy().tobytes() + torch.tensor(r.logprobs).numpy().tobytes())
m = pol.module
g = torch.Generator().manual_seed(3)
G, P, n, C = 5, 37, 4, 45
pid = torch.randint(0, 49, (G, P), generator=g)
pm = torch.ones(G, P, dtype=torch.long)
pm[0, :6] = 0
cid = torch.randint(0, 49, (G * n, C), generator=g)
group = torch.arange(G).repeat_interleave(n)
out = fused.forward_grouped(m, pid, pm, cid, group)
m.zero_grad()
sum((o * torch.randn(o.shape, generator=g)).sum() for o in out).backward()
for o in out:
    h.update(o.detach().numpy().tobytes())
for _, p in sorted(m.named_parameters()):
    h.update(p.grad.numpy().tobytes())
print(mode, native.load() is not None, fused.load() is not None, h.hexdigest()[:16])
"""
C_PINNED_DIGEST = "18af574ed35bdd72"


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="needs an x86-64 CPU with AVX2")
def test_the_lab_paths_give_the_avx2_bits():
    mode, sampler_in_c, update_in_c, digest = _fresh(C_PROBE, "avx2")
    if (sampler_in_c, update_in_c) != ("True", "True"):
        pytest.skip("no C compiler: the lab's C paths are not used")
    assert mode == "avx2"
    assert digest == C_PINNED_DIGEST


LATE_PIN = """
import torch
from rlscale.numerics import pin_cpu_numerics, current_cpu_numerics
torch.softmax(torch.randn(4, 40), dim=-1)  # ATen picks its kernels here, before the pin
print(pin_cpu_numerics(), torch.backends.cpu.get_cpu_capability(), current_cpu_numerics())
"""


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="needs an x86-64 CPU with AVX2")
def test_a_pin_after_torch_started_is_not_recorded_as_pinned():
    mode, capability, recorded = _fresh(LATE_PIN)
    assert mode == "avx2"
    assert recorded == ("avx2" if capability == "AVX2" else "native")  # AVX2-only CPUs run AVX2 kernels anyway


def test_sweep_workers_get_the_mode(clean_env):
    from rlscale.sweep.run import worker_env

    assert numerics.ENV not in worker_env()
    clean_env.setenv(numerics.ENV, "native")  # a Ray task on another node pins its own libraries by this
    assert worker_env()[numerics.ENV] == "native"


RECORD_PROBE = """
import json
from rlscale.numerics import pin_cpu_numerics, numerics_record
pin_cpu_numerics()
from rlscale.engine import native
before = numerics_record()
lib = native.load()
print(json.dumps([before, numerics_record(), lib is not None, native.compiler_version(native._compiler())]))
"""


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="needs an x86-64 CPU with AVX2")
def test_a_result_records_its_numerics():
    import json

    import torch

    env = {k: v for k, v in os.environ.items() if k not in (numerics.ENV, *numerics.AVX2_PIN)}
    out = subprocess.run([sys.executable, "-c", RECORD_PROBE], env=env, capture_output=True, text=True, check=True)
    before, after, loaded, compiler = json.loads(out.stdout.splitlines()[-1])
    assert before == {"cpu_numerics": "avx2", "torch": torch.__version__, "aten_cpu_capability": "AVX2",
                      "c_compiler": None, "cuda": torch.version.cuda}  # no C kernels loaded yet: none recorded
    assert after == before | {"c_compiler": compiler if loaded else None}
    assert not loaded or compiler  # the kernels ran: their compiler is named


def test_another_compiler_rebuilds_the_c_kernels(monkeypatch):
    from rlscale.engine import native

    key = native.library_path()
    monkeypatch.setattr(native, "compiler_version", lambda cc: "gcc (Debian 99.1.0-1) 99.1.0")
    assert native.library_path() != key  # an upgraded or other compiler builds other code: its own cache entry


def test_compiler_version_is_the_first_line_and_none_without_one():
    from rlscale.engine import native

    assert native.compiler_version(None) is None
    assert native.compiler_version("/nonexistent/cc") is None
    cc = native._compiler()
    if cc is not None:
        version = native.compiler_version(cc)
        assert version and "\n" not in version
