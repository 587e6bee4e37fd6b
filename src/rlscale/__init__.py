"""rlscale: compute-optimal RL post-training for language models.

GRPO/SFT on the same engine, verifiable math grading, unbiased pass@k evaluation, iso-compute sweeps,
scaling-law fits and a planner, CoScale-RL, and a CPU lab of tiny transformers. See README.md.
"""

__version__ = "0.1.0"
