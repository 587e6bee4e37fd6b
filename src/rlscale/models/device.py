"""Where and how Hugging Face models run: `resolve_device(spec)` turns `--device` / `RLSCALE_DEVICE` into a
torch.device; `gradient_checkpointing()` reads `--gradient-checkpointing` / `RLSCALE_GRADIENT_CHECKPOINTING`.

    resolve_device(None)     # RLSCALE_DEVICE if set, else "auto": the first CUDA device when torch has one, else CPU
    resolve_device("cuda:1") # that device, or a one-line UserError when this torch cannot use it

Lab (tiny) models always run on CPU: their sampler is native CPU code. A Hugging Face policy keeps its module on the
resolved device and takes and returns CPU tensors (see HFPolicy.token_logprobs), so the trainers' bookkeeping
(advantages, loss weights, metrics) stays on CPU whatever the device, and only the model's forward and backward,
and the sampler's decode loop, run on it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rlscale.errors import UserError

if TYPE_CHECKING:  # torch is imported where used: the sweep driver reads ENV without paying torch's import
    import torch

ENV = "RLSCALE_DEVICE"
CHOICES = "auto, cpu, cuda, cuda:N or mps"
CHECKPOINTING_ENV = "RLSCALE_GRADIENT_CHECKPOINTING"
"""1: Hugging Face models recompute each layer's activations in the backward instead of keeping them (memory for
time; the gradients are the same). Like the device, a property of where a run executes, not of the run: not in
its config or hash, so a run may resume with it switched"""


def resolve_device(spec: str | None = None) -> torch.device:
    """spec (or $RLSCALE_DEVICE, or "auto") -> a usable torch.device; UserError naming the source and the fix."""
    import torch

    source = "--device"
    if spec is None:
        spec, source = os.environ.get(ENV) or "auto", ENV
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"{source} {spec!r}: not a device; use {CHOICES}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{source} {spec!r}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu "
                            "or install a CUDA build of torch on a GPU machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"{source} {spec!r}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0 .. "
                            f"cuda:{torch.cuda.device_count() - 1}")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{source} {spec!r}: this torch sees no MPS device; use --device cpu")
        return dev
    raise UserError(f"{source} {spec!r}: unsupported device type {dev.type!r}; use {CHOICES}")


def gradient_checkpointing() -> bool:
    """Whether $RLSCALE_GRADIENT_CHECKPOINTING asks for gradient checkpointing (1/true/yes; 0/false/no/unset)."""
    value = os.environ.get(CHECKPOINTING_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise UserError(f"{CHECKPOINTING_ENV}={value!r}: use 1 or 0")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    import torch

    p = next(module.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def bf16_autocast(device: torch.device, enabled: bool):
    """bf16 autocast for the forward/backward of an update on `device` (the trainers' dtype="bf16")."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
