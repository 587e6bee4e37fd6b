"""Lab presets: tiny model sizes (~30x in parameters) and the default pretraining recipe.

Used by `rlscale pretrain`, `rlscale lab` and the sweep/coscale defaults. Parameter counts (vocab 49, tied
embeddings): xs 0.06M, s 0.11M, m 0.48M, l 1.8M. Pretraining speed of s: ~37-44k tokens/s on 1 thread of a quiet
Zen 4 (AVX-512) machine; on a quiet AVX2 EPYC (bench: `rlscale pretrain --size s --tokens 2000000`): 1 thread 24k/s,
2 threads 36k/s, 2 data-parallel processes (--processes 2) 37k/s, which the lab uses because, unlike threads, it is
deterministic and does not collapse when the cores are shared. 8M tokens on 2 processes (harder-rarer mix): 197 s, held-out loss 0.080,
mean avg@16 0.351 on the lab's 6,000-problem pool, Easy 12.2%, Hard 43.5% (30% never solved in 16 samples).

Measured (`bench/size_table.py --tokens 1000000 --sizes l,m,s,xs`, 1 thread each, uniform corpus mix, greedy
accuracy on 500 test problems; at 1M tokens every size is still before the knee of learning, so accuracy is ~3%):
xs 57,888 params, held-out loss 1.238, acc 0.024, 36 s; s 109,952, 1.068, 0.034, 53 s; m 479,360, 0.929, 0.026,
172 s; l 1,780,608, 0.649, 0.034, 574 s (harder-rarer mix: xs 1.255, s 1.114, m 0.964).
Measured (bench/lab_profile.py, size s, 8M tokens): held-out loss 0.087, flexible avg@16 0.43, strict 0.29,
accuracy by steps 0.85/0.76/0.43/0.31/0.16/0.05, Easy (avg@16 in [0.3, 0.6]) 13.8%, Hard (<= 1/16) 32.8%.
Token budget matters sharply: 4.5M -> avg 0.07, 6M -> 0.13 (Easy 5.8%), 8M -> 0.43 (Easy 13.8%), 12M -> 0.41
(Easy 6.8%, 20% of problems at 16/16); per-problem avg@16 is bimodal, so the Easy bar (>= 20%) is not yet met.
Corpus slips (--slip-frac, 8M tokens, same seed) slow the learning of the arithmetic itself, so they did not help:
result slips 0.10 -> avg 0.107, Easy 7.8%; 0.15 -> 0.167, 12.4%; operand slips 0.10 -> 0.129, 10.8% (clean: 0.43,
13.8%). The default corpus is therefore clean (slip_frac 0).

Corpus mix of difficulties (--step-weights, 8M tokens, seed 0, `bench/lab_profile.py --step-weights W --tokens
8000000 [--processes 2]`, 500 test problems x 16 samples, this AVX2 machine): harder-rarer 0.30,0.24,0.18,0.13,0.09,
0.06 (2 processes, the previous default): avg 0.416, Easy 10.8%, Hard 39.6%; uniform, 1 process: avg 0.374, Easy
17.6%, Hard 35.4%; **uniform, 2 processes (the lab's pretraining, the default since): avg 0.280, Easy 21.0%, Hard
40.0%, accuracy by steps 0.56/0.46/0.30/0.17/0.12/0.06, 242 s**; rising 0.1,...,0.24: 0.216, 14.4%, 56.6%;
0.1,0.18,0.2,0.2,0.18,0.14: 0.234, 12.2%, 54.0%; 0.05,0.15,0.2,0.2,0.2,0.2: 0.232, 16.4%, 47.4% (1 process each).
Fewer easy documents leave fewer problems at 16/16 (3% vs 10%); mixes that starve short problems learn more slowly
(held-out loss 0.115-0.133 vs 0.08). Same-mix runs differ by a few points (the knee of learning moves with the
stream), so the Easy share is ~18-21%, not a sharp figure.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlscale.errors import UserError


@dataclass(frozen=True)
class SizePreset:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    lr: float
    """peak pretraining learning rate (AdamW)"""
    batch_tokens: int
    """tokens per optimizer step"""
    default_tokens: int
    """pretraining tokens of the default recipe for this size"""


SIZES: dict[str, SizePreset] = {
    "xs": SizePreset(d_model=48, n_layers=2, n_heads=2, d_ff=128, lr=3e-3, batch_tokens=4096, default_tokens=8_000_000),
    "s": SizePreset(d_model=64, n_layers=2, n_heads=2, d_ff=192, lr=3e-3, batch_tokens=4096, default_tokens=8_000_000),
    "m": SizePreset(d_model=112, n_layers=3, n_heads=4, d_ff=320, lr=2e-3, batch_tokens=4096, default_tokens=8_000_000),
    "l": SizePreset(d_model=192, n_layers=4, n_heads=6, d_ff=512, lr=1.5e-3, batch_tokens=4096,
                    default_tokens=8_000_000),
}

DEFAULT_SIZE = "s"
MAX_SEQ_LEN = 256
"""model context; the longest arith document (6 steps, two-digit values) is ~150 characters"""

PRETRAIN_DEFAULTS = {
    "size": DEFAULT_SIZE,
    "seed": 0,
    "alt_format_frac": 0.3,  # strict vs flexible grading differ, as for real base models
    "slip_frac": 0.0,  # per-step slips in corpus solutions (pass rates spread over (0, 1))
    "slip_kind": "result",
    "warmup_frac": 0.02,
    "min_lr_frac": 0.1,
    "weight_decay": 0.1,
    "heldout_docs": 256,
    "eval_every_s": 30.0,
}
"""the default lab pretraining recipe (the tokens budget comes from the size preset unless --tokens/--minutes)"""

RL_LR = {"xs": 3e-5, "s": 7e-5, "m": 7e-5, "l": 5e-5}
"""suggested GRPO learning rates (LAB_NOTES: stable RL LR was ~30x below the pretraining LR).

Scan on the quick lab's 8M-token s model (`rlscale train grpo --reward flexible --rollouts-per-problem 8`, AdamW,
held-out flexible avg@16 on 500 val problems, base 0.354; two runs side by side on 2 cores, ~115 rollouts/s each):
B_problem 16 (128 rollouts/step): lr 1e-4 -> 0.378 at step 500 (454 s alone); 1e-4 + 50 warmup steps -> 0.329 at
175; 2e-4 -> 0.296 at 175; 3e-4 -> 0.172 at 175 (training reward falls from the first steps); 5e-5 + 50 warmup ->
0.372 / 0.381 / 0.387 / 0.379 at steps 175 / 350 / 525 / 700. B_problem 64 (512/step), sqrt scaling to 2e-4, 10
warmup -> 0.338 / 0.374 / 0.372 / 0.363 at steps 40 / 80 / 120 / 160. Greedy accuracy of the same model: 0.472, so
sharpening alone leaves room, but RL at any stable LR gains ~3 points in 10 minutes and higher LRs lose reward.
On the uniform-mix default model (base 0.248; same command, 600 steps = 76,800 rollouts, two runs side by side,
~137 rollouts/s each): lr 1e-4 (the trainer's default) -> 0.281 / 0.280 / 0.297 / 0.290 at steps 150 / 300 / 450 /
600 (640 s); **7e-5 + 20 warmup steps -> 0.281 / 0.295 / 0.311 / 0.311 (+6.3 in 593 s)**; 1.5e-4 -> 0.234 / 0.242 /
0.240 / 0.251 (593 s). **7e-5, no warmup, three seeds** (`--lr 7e-5 --seed S`, 1 thread, two runs side by side,
~125-150 rollouts/s): seed 0 0.287 / 0.283 / 0.314 / 0.298 (521 s), seed 1 0.287 / 0.267 / 0.305 / 0.308 (529 s),
seed 2 0.291 / 0.299 / 0.307 / 0.319 (555 s): +5.0 / +6.0 / +7.1 at step 600, mean +6.0; hence 7e-5 for s (the
default of `rlscale train grpo` on an s model since). m and l were not scanned on RL.
xs (stop 27, Zen 3 EPYC): the quick lab's sweeps on an 8M-token xs model (held-out loss 0.143, pool mean avg@16
0.128; `rlscale lab --preset V.json --reuse XS_LAB` with `{"base": "quick", "size": "xs", "lr": LR, "seeds": [0,
1]}`), Easy base 0.411, mean final avg@8 at 6,144 rollouts for n = 2 / 4 / 8 / 16: lr 2e-4 0.398 / 0.373 / 0.373 /
0.310 (n = 16 falls to 0.335 after one step); 1e-4 (5 seeds) 0.408 / 0.418 / 0.420 / 0.409, dips first; 5e-5 0.440
/ 0.442 / 0.443 / 0.439; **3e-5 0.448 / 0.443 / 0.455 / 0.442**, hence 3e-5 for xs (1e-4, unscanned, until stop
27): the smaller model takes half the rate of s.
The quick lab's sweeps at higher rates (its model, sets and specs with only `lr` changed; `rlscale sweep run`, 12
runs per set, n in {2, 4, 8, 16} x 3 seeds, 3,072 rollouts each; means over seeds at 3,072 rollouts, base Easy
0.420, Hard 0.044): lr 7e-5 (the preset) Easy 0.489 / 0.484 / 0.473 / 0.446; 1.4e-4 Easy 0.470 / 0.473 / 0.451 /
0.423, with a dip below the base first (n = 16: 0.387 at 512 rollouts), Hard 0.040 / 0.040 / 0.038 / 0.037 (below
its base: no gain); 2.1e-4 Easy 0.414 / 0.444 / 0.419 / 0.369 after dips to 0.32-0.39. A higher rate makes the
larger-n runs (which get the larger sqrt-scaled rate) dip, so n*(C) "rises" there by recovery from damage (Easy:
rises in 62% / 90% of 200 resamples, one-sided no-fall), not by the study's mechanism; the preset keeps 7e-5.
The rule across n decides the direction too (stop 22, another realisation of the quick-lab model, Easy, 6,144
rollouts; docs/lab_results.md "On a Zen 4 machine"): one rate for every n (`lr_scaling` constant, 7e-5) leaves n = 2 below its
start and the iso-FLOP n* "rises" 2 -> 9.4 (95.5% of resamples); sqrt anchored at 32 rollouts "falls" 16 -> 2.7
(CI excludes 0); sqrt at 128 (the preset) ties n = 2..16 within 0.015."""


def get_size(name: str) -> SizePreset:
    if name not in SIZES:
        raise UserError(f"unknown size '{name}'; valid sizes: {', '.join(SIZES)}")
    return SIZES[name]
