"""Seeds are data: per-sample seeds derive from (run seed, step, problem, sample) by a stable hash."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints/strings, stable across processes and Python versions.

    derive_seed(run_seed, step, problem_id, sample_index) gives the same seed for the same rollout everywhere.
    """
    h = hashlib.blake2b(repr(tuple(parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
