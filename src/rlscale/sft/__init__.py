"""Supervised fine-tuning (single- and multi-solution); see sft.py."""

from rlscale.sft.sft import SFTConfig, load_examples, train_sft

__all__ = ["SFTConfig", "train_sft", "load_examples"]
