"""Model loading: `load_policy(path)` returns a Policy for a lab checkpoint or any local Hugging Face causal LM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rlscale.errors import UserError

if TYPE_CHECKING:
    from rlscale.models.base import Policy

__all__ = ["Policy", "Tokenizer", "load_policy", "is_tiny_checkpoint"]


def __getattr__(name: str):
    """Policy and Tokenizer on first use: importing this package (e.g. rlscale.models.device's names in a sweep
    driver) does not import torch."""
    if name in ("Policy", "Tokenizer"):
        from rlscale.models import base

        return getattr(base, name)
    raise AttributeError(f"module 'rlscale.models' has no attribute {name!r}")

TINY_MARKER = "rlscale_model.json"


def is_tiny_checkpoint(path: str | Path) -> bool:
    return (Path(path) / TINY_MARKER).exists()


def load_policy(path: str | Path, device: str | None = None) -> Policy:
    """Load a policy from a directory: a lab checkpoint (has rlscale_model.json; always on CPU) or an HF model dir
    (config.json; on `device`, default RLSCALE_DEVICE or auto, see rlscale.models.device)."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"--model {path}: not a directory; pass a checkpoint written by `rlscale pretrain` or an HF model dir")
    if is_tiny_checkpoint(p):
        from rlscale.models.tiny import TinyPolicy

        return TinyPolicy.load(str(p))
    if (p / "config.json").exists():
        from rlscale.models.hf import HFPolicy

        return HFPolicy.load(str(p), device)
    raise UserError(f"--model {path}: neither {TINY_MARKER} (lab checkpoint) nor config.json (Hugging Face) found")
