"""The Sampler protocol shared by every generation backend (tiny-model KV-cache sampler, HF generate, vLLM).

Log-probs returned by a sampler are those of the *sampling* distribution, softmax(logits / temperature), before
top-p truncation (the convention of TRL and verl); at temperature 0 (greedy) they are those of softmax(logits).
Per-sample seeds make generation reproducible: same seeds, same tokens, whatever the batch composition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rlscale.seeds import derive_seed


def first_occurrences(keys: Sequence) -> tuple[list[int], list[int]]:
    """(reps, inv) for a sequence of hashable keys: reps[u] is the first position of the u-th distinct key (in
    order of appearance), inv[i] the index u of keys[i]. Shared work (a prompt's prefill or forward) runs on reps
    and is copied back with inv."""
    index: dict = {}
    reps: list[int] = []
    inv = []
    for i, k in enumerate(keys):
        if k not in index:
            index[k] = len(reps)
            reps.append(i)
        inv.append(index[k])
    return reps, inv


def thread_map(fn, items: Sequence, workers: int) -> list:
    """[fn(x) for x in items], on `workers` threads when that is > 1 and there is more than one item (results in
    order). For work that releases the GIL: torch ops and the C decode loop."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    import threading

    if threading.current_thread().name.startswith("rlscale-w"):
        # called from a pool thread: the shared pool could wait on itself, so this call gets threads of its own
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    return list(_pool(workers).map(fn, items))


_POOLS: dict = {}


def _pool(workers: int):
    """One persistent pool per worker count: the same OS threads serve every call, so per-thread state (oneDNN's
    kernels and scratch, the AMX tile state, malloc arenas) is set up once instead of at every training step."""
    from concurrent.futures import ThreadPoolExecutor

    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix=f"rlscale-w{workers}")
    return _POOLS[workers]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    """samples per prompt"""
    temperature: float = 1.0
    """softmax temperature; 0 means greedy"""
    top_p: float = 1.0
    """nucleus sampling mass (1.0 = off)"""
    max_new_tokens: int = 64
    """generation stops after this many new tokens (the rollout is then 'truncated')"""
    stop: tuple[str, ...] = ()
    """stop strings: generation of a sample ends after the first one appears (kept in the text)"""
    seed: int = 0
    """base seed; per-sample seeds default to derive_seed(seed, prompt_index, sample_index)"""
    logprobs: bool = True
    """return each generated token's log-prob and entropy (Rollout.logprobs, Rollout.entropies); False, for
    evaluation and profiling that read only the text, lets a backend skip them (Rollout.logprobs is then [] and
    entropies None): the same tokens, less work (a lab validation call 1.09-1.15x faster, bench/sampler.py)"""


@dataclass
class Rollout:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    token_ids: list[int]  # generated tokens, EOS included if emitted
    text: str  # decoded generated text (EOS not included)
    logprobs: list[float]  # per generated token, sampling distribution (see module doc); [] when not requested
    finished: bool  # True if EOS or a stop string ended it; False if max_new_tokens truncated it
    seed: int = 0
    meta: dict = field(default_factory=dict)
    entropies: list[float] | None = None  # per generated token, the sampling distribution's entropy (nats); None:
    # the backend does not report it (vLLM)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def default_seeds(params: SamplingParams, num_prompts: int) -> list[list[int]]:
    return [[derive_seed(params.seed, i, j) for j in range(params.n)] for i in range(num_prompts)]


@runtime_checkable
class Sampler(Protocol):
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> list[list[Rollout]]:
        """Return, per prompt, params.n rollouts. seeds[i][j] seeds sample j of prompt i."""
        ...
