"""Process-level settings (rlscale.procs): with the allocator keeping freed memory, the fused trunk's training
step stops paying page faults for its activations every step; RLSCALE_MALLOC_TUNE=0 keeps glibc's defaults."""

import os
import subprocess
import sys

import pytest

STEP_FAULTS = r"""
import resource, torch
from rlscale.procs import keep_freed_memory
tuned = keep_freed_memory()
from rlscale.lab.pretrain import build_policy
torch.manual_seed(0)
pol = build_policy("m", seed=0)
V = pol.module.cfg.vocab_size
prompt, pm = torch.randint(0, V, (4, 40)), torch.ones(4, 40, dtype=torch.long)
comp, group = torch.randint(0, V, (32, 32)), torch.arange(4).repeat_interleave(8)
def step():  # one update micro-batch of the GRPO bench: 4 prompts x 8 completions of 32 tokens
    logp, _ = pol.completion_logprobs(prompt, pm, comp, group)
    logp.sum().backward()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
f0 = faults()
for _ in range(5):
    step()
print(tuned, faults() - f0)
"""


def step_faults(tune: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "RLSCALE_MALLOC_TUNE"}
    if tune is not None:
        env["RLSCALE_MALLOC_TUNE"] = tune
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS], capture_output=True, text=True, env=env, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_freed_memory_stops_the_per_step_page_faults():
    # medians of three processes each: glibc's dynamic mmap threshold makes one process's count vary (stop 27, five
    # steps: 3,900-14,500 faults with the defaults, 0-520 tuned; one CI run's default process counted only 740)
    tuned, faults = zip(*(step_faults(None) for _ in range(3)))
    default, faults_default = zip(*(step_faults("0") for _ in range(3)))
    assert all(tuned) and not any(default)
    faults, faults_default = sorted(faults)[1], sorted(faults_default)[1]
    assert faults_default > 1000  # glibc's defaults: activations mapped fresh (and zeroed) step after step
    assert faults * 4 < faults_default
