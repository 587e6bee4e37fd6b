"""`VLLMSampler`: the Sampler protocol over vLLM (GPU users; `pip install rlscale[vllm]`). Import-guarded.

Each (prompt, sample) pair is one vLLM request with n=1 and its own seed, so seeds[i][j] determines sample j of
prompt i exactly as in the other backends (vLLM's prefix cache shares the prompt's KV across the n requests).
Mapping: temperature -> temperature (0 = greedy), top_p -> top_p, max_new_tokens -> max_tokens, stop -> stop with
include_stop_str_in_output=True (our stop strings are kept in the text), seed -> seed, logprobs=0 (the sampled
token's log-prob only; None when the caller asks for none, SamplingParams.logprobs). The engine is built with logprobs_mode="processed_logprobs" where vLLM supports it, so the
log-probs are those of the temperature-scaled distribution like our other samplers; older vLLM versions return raw
(T = 1) log-probs, which is recorded in each rollout's meta.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlscale.engine.base import Rollout, SamplingParams, default_seeds
from rlscale.errors import UserError


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise UserError("vllm is not installed; pip install rlscale[vllm]") from None
    return vllm


def to_vllm_params(params: SamplingParams, seed: int):
    """One vLLM SamplingParams for a single sample with the given seed."""
    vllm = _import_vllm()
    return vllm.SamplingParams(n=1, temperature=params.temperature, top_p=params.top_p,
                               max_tokens=params.max_new_tokens, stop=list(params.stop),
                               include_stop_str_in_output=True, seed=int(seed) % (1 << 63),
                               logprobs=0 if params.logprobs else None)


class VLLMSampler:
    """generate(prompts, params, seeds) -> per prompt, params.n Rollouts, via vllm.LLM.generate."""

    def __init__(self, model: str | object, **llm_kwargs):
        vllm = _import_vllm()
        if isinstance(model, str):
            try:
                self.llm = vllm.LLM(model=model, logprobs_mode="processed_logprobs", **llm_kwargs)
                self.processed_logprobs = True
            except TypeError:  # vLLM < 0.10.2 has no logprobs_mode
                self.llm = vllm.LLM(model=model, **llm_kwargs)
                self.processed_logprobs = False
        else:  # an existing vllm.LLM
            self.llm, self.processed_logprobs = model, False
        self.eos_id = self.llm.get_tokenizer().eos_token_id

    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[Sequence[int]] | None = None) -> list[list[Rollout]]:
        seeds = default_seeds(params, len(prompts)) if seeds is None else seeds
        pairs = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        requests = [prompts[i] for i, _ in pairs]
        sampling = [to_vllm_params(params, seeds[i][j]) for i, j in pairs]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        result: list[list[Rollout]] = [[None] * params.n for _ in prompts]  # type: ignore[list-item]
        for (i, j), req in zip(pairs, outputs):
            comp = req.outputs[0]
            token_ids = list(comp.token_ids)
            logprobs = [d[t].logprob for d, t in zip(comp.logprobs or [], token_ids)]
            result[i][j] = Rollout(prompt_index=i, sample_index=j, prompt_ids=list(req.prompt_token_ids or []),
                                   token_ids=token_ids, text=comp.text, logprobs=logprobs,
                                   finished=comp.finish_reason != "length", seed=int(seeds[i][j]),
                                   meta={"finish_reason": comp.finish_reason,
                                         "processed_logprobs": self.processed_logprobs})
        return result
