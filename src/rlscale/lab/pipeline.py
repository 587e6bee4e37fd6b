"""`rlscale lab`: the whole compute-optimal RL study on a CPU, end to end, resumable stage by stage.

    pretrain -> profile (avg@16 of the arith training pool) -> curate (Easy / Hard, held-out val splits)
    -> sweep_easy, sweep_hard (iso-compute sweeps over n at fixed B_problem, rlscale.sweep)
    -> export (tidy tables) -> fit (rlscale.scaling.isocompute per set) -> plan (4x the spent budget)
    -> sizes (the same study for each further model size of the preset, each a lab of its own in sizes/<size>/)
    -> report

OUT layout:
    lab.json                 the preset (a changed preset on an existing OUT is refused)
    stages.json              per stage: status, wall_s, rollouts, tokens, flops (written atomically)
    model/                   the pretrained lab model (reused when present)
    profile.parquet          per-problem avg@n of the pool (+ profile.hist.png); profile_parts/ = resumable chunks
    sets/{easy,hard}/{train,val}.jsonl, sets/manifest.json
    specs/{easy,hard}.yaml   the sweep specs (built from the preset)
    sweeps/{easy,hard}/      sweep directories (rlscale.sweep.run); table.parquet after export
    fits/{easy,hard}/        fit.json + PNGs
    plan.json                the planner's prescription per set
    sizes/<size>/            one lab directory (this layout) per size in the preset's `sizes`
    report.html              rlscale.report.build_report(OUT)
    summary.txt              the report's verdicts as plain text (its first paragraph: "In short: ...")

A stage is skipped when stages.json marks it done and its outputs exist; a stage that ran invalidates the later
ones. The sweep layer resumes interrupted runs, so kill -9 mid-sweep and re-running continues. Presets are plain
frozen dataclasses: copy one with dataclasses.replace to change a knob. Tests: tests/test_lab.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlscale.config import changed_keys, check_field_types, seeds_grew
from rlscale.errors import UserError
from rlscale.evals.difficulty import DEFAULT_BUCKETS
from rlscale.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

SETS = ("easy", "hard")
STAGES = ("pretrain", "profile", "curate", "sweep_easy", "sweep_hard", "export", "fit", "plan", "sizes", "report")
SIZES_DIR = "sizes"
SET_OVERRIDE_FIELDS = ("val_size", "val_n", "val_points", "max_rollouts", "n_grid", "seeds", "val_reseed")
"""the preset fields a set can override (LabPreset.set_overrides): its validation, budget and grid"""
RESEED = 4321
"""the second validation seed of runs whose preset sets val_reseed (GRPOConfig.val_reseed; the first is its
val_seed, 1234)"""
SIZE_OVERRIDE_FIELDS = (*SET_OVERRIDE_FIELDS, "lr", "lr_grid", "set_overrides")
"""the preset fields a further size can override (LabPreset.size_overrides): a set's fields, its RL rate and its
per-set overrides"""
PAPER_HARD_BOUNDS = (DEFAULT_BUCKETS["hard"].lo, DEFAULT_BUCKETS["hard"].hi)
"""the Hard bucket of the study the lab reproduces (avg@16 <= 1/16)"""
STAGES_FILE = "stages.json"
LAB_FILE = "lab.json"
REPORT_FILE = "report.html"
SUMMARY_TEXT_FILE = "summary.txt"
"""the report's "What the data shows" as plain text, written with it (rlscale.report.build_report)"""

# Throughput guesses for the ETA only, per worker (one process, one thread) of the s model; corrected on the fly by
# the ratio of measured to estimated time of the stages that ran. Measured in the quick lab of stop 26 (Zen 3 EPYC,
# 2 workers; sums of the runs' logged time/*): validation sampling 1,850 (Easy) / 1,280 (Hard) samples/s, training
# (generate + grade + update) 517 / 359 rollouts/s, the constants in between; a sweep stage's wall beyond its
# runs' ~2 s per run and worker; pretraining 62k tokens/s on 2 processes (Zen 4: 8M tokens in 184 s, 43k). Until stop 26 these were 1-thread guesses from before the C sampler and the fused update
# (400 / 150 / 35k), and the first ETA overstated the quick lab ~3x.
SAMPLE_ROLLOUTS_PER_S = 1500.0
TRAIN_ROLLOUTS_PER_S = 420.0
PRETRAIN_TOKENS_PER_S_PER_PROCESS = 25_000.0
RUN_OVERHEAD_S = 2.0
SIZE_COST = {"xs": 0.8, "s": 1.0, "m": 3.2, "l": 10.8}
"""cost of a lab of each size relative to s, for the ETA only: xs from the labs of stop 27 (Zen 3 EPYC; quick: 529 s
of stages for xs, 616 s for s, 0.86; full: 30m40s for xs, 40m38s for s, 0.75), m and l from 1-thread pretraining
seconds per token (rlscale.lab.presets: bench/size_table.py, 53 / 172 / 574 s per 1M tokens for s / m / l)"""


@dataclass(frozen=True)
class LabPreset:
    """Every knob of the lab. Defaults are the `quick` preset's."""

    name: str = "quick"
    # ---- pretraining
    size: str = "s"
    """model size (rlscale.lab.presets.SIZES)"""
    pretrain_tokens: int | None = 8_000_000
    """pretraining tokens (or pretrain_minutes); 8M gives the s model held-out loss ~0.08 and mean avg@16 0.24 on
    the uniform-steps pool with the uniform corpus mix (0.36 with the harder-rarer mix; 5M: ~0.31 and ~0.06, too
    weak for RL to move the Easy set much)"""
    pretrain_minutes: float | None = None
    pretrain_seed: int = 0
    sizes: tuple[str, ...] = ()
    """further model sizes (rlscale.lab.presets.SIZES), each studied end to end like `size` in OUT/sizes/<size>/:
    its own model (the same pretraining recipe and tokens), profile, Easy/Hard sets, sweeps, fits and plan, with
    the RL rate `lr` when given, else RL_LR of that size; the report compares the sizes (RL gain and n*(C))"""
    pretrain_step_weights: tuple[float, ...] | None = None
    """corpus mix of difficulties, P(k) for k = 1..6 steps (None: the default, uniform)"""
    pretrain_processes: int = 0
    """data-parallel pretraining processes, one torch thread each (0: as many as the lab's workers; nothing else
    runs during pretraining)"""
    # ---- or a given base model on a given task (the study at full scale: `rlscale lab --model DIR --task gsm8k`)
    model: str | None = None
    """a base model to study instead of pretraining one: a Hugging Face causal-LM directory (or an rlscale
    checkpoint), made absolute when the lab starts. The pretrain stage then only checks and records it, the RL rate
    defaults to the model's suggested one (rlscale.rl.grpo.suggested_rl_lr: 1e-6 for Hugging Face models, TRL's
    default), and `sizes` must be empty; the pretraining fields are ignored"""
    task: str = "arith"
    """the task whose train split is the profiled pool and whose grader is the reward (`rlscale tasks`); the lab
    pretrains on arith only, so another task needs `model`"""
    data_path: str | None = None
    """a .jsonl/.parquet file of the task's training problems (the pool, first pool_size of it; made absolute when
    the lab starts); None: the task's train split (arith: generated; gsm8k, math: RLSCALE_DATA_DIR)"""
    template: str | None = None
    """prompt template of profiling, training and validation (None: the task's, `rlscale tasks`)"""
    # ---- profiling
    pool_size: int = 5000
    """first problems of the arith train split that are profiled (a 5M-token s model puts ~6% of the uniform-steps
    pool in Easy: 1500 gave a 48-problem Easy train set that RL memorised within ~1k rollouts)"""
    profile_n: int = 16
    """samples per problem of the profile (avg@16)"""
    max_new_tokens: int = 128
    """generation budget for profiling, training and validation"""
    grading_mode: str = "flexible"
    """profile grading mode = training reward = validation grader"""
    # ---- curation
    easy_bounds: tuple[float, float] = (0.3, 0.6)
    hard_bounds: tuple[float, float] = PAPER_HARD_BOUNDS
    """the Hard set's avg@16 bounds: the study's [0, 1/16] by default. On the lab's models that bucket is solved at
    chance (its mean pass rate ~1x the best constant answer's), so RL has nothing to reinforce there; the `full`
    preset takes [1/16, 1/4] (above chance: 3.5-4.3x, 41-43% of its correct samples with a right chain on the s
    model) and the report still states the chance figures of [0, 1/16] from the profile"""
    val_size: int = 150
    """held-out validation problems per set"""
    train_size: int = 400
    """training problems per set at most"""
    curate_seed: int = 0
    # ---- the iso-compute sweep per set (fixed B_problem, trade n against M)
    n_grid: tuple[int, ...] = (2, 4, 8, 16)
    problems_per_batch: int = 8
    max_rollouts: int = 6144
    """budget C of every run in rollouts; validation points are log-spaced from one step to C. 6,144 since stop 26:
    at 3,072 the Easy curves are still rising and n* has not yet left n = 2-4, so no quick lab resolved whether n*(C)
    rises (docs/lab_results.md); the validation points stay 6, so doubling C costs ~1.5x the sweeps' time"""
    val_points: int = 6
    """log-spaced validation points per run (the sweep's val_log_points): a span of C / (n B_problem) >= 48x in
    compute for n <= 16 at the quick budget, with fewer points than an even grid needs for the same span, so each
    point can afford more samples (lower noise)"""
    val_n: int = 8
    val_ks: tuple[int, ...] = (1, 4)
    val_reseed: bool = True
    """evaluate every run's final model under a second validation seed too (GRPOConfig.val_reseed, one more
    evaluation per run): the report's validation budget then measures the sampling error the runs do not share
    instead of bounding it (rlscale.scaling.validation_budget)"""
    set_overrides: dict = field(default_factory=dict)
    """per set ("easy" / "hard"), preset fields that differ for that set's curation and sweep, among
    SET_OVERRIDE_FIELDS: e.g. {"hard": {"val_size": 400, "val_n": 16}} validates Hard on 400 problems x 16 samples,
    where an RL gain of ~0.02 is not lost in the validation noise (stop 27: 150 x 8 -> gain CI [-0.006, +0.038],
    400 x 16 -> [+0.012, +0.034])"""
    size_overrides: dict = field(default_factory=dict)
    """per further size (a name in `sizes`), preset fields that differ for that size's lab, among
    SIZE_OVERRIDE_FIELDS: e.g. {"xs": {"seeds": [0, 1, 2, 3]}} runs the xs lab on 4 seeds; a field given here holds
    for both of its sets (the preset's set_overrides of that field are dropped unless set_overrides is given too)"""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """training seeds per n: the run bootstrap resamples them (3 runs give it 2/3 of their variance and 10 distinct
    resamples, which made the intervals too narrow: stop 24's 6-seed rerun of the quick Easy sweep turned a
    one-sided 'no-rise' into 'unresolved'; 5 as in scripts/nstar_calibration.py)"""
    lr: float | None = None
    """RL learning rate at lr_ref_batch rollouts per step (default rlscale.lab.presets.RL_LR[size])"""
    lr_grid: tuple[float, ...] = ()
    """optional grid of RL learning rates (at lr_ref_batch) swept for every n; the fit then compares each n at its
    own best rate (isocompute.best_setting_per_n) and the planner uses the planned n's rate. Multiplies the sweeps'
    runs by its length; empty: every run at `lr`"""
    lr_ref_batch: int = 128
    lr_scaling: str = "sqrt"
    temperature: float = 1.0
    checkpoint_every: int = 25
    B_max: int = 256
    """hardware batch limit n * B_problem (sweep and planner)"""
    # ---- fit and plan
    bucket_width: float = 0.01
    """record-breaking bucket width of validation reward"""
    n_bootstrap: int = 200
    runs_for_run_bootstrap: int = 3
    """an n with at least this many runs (seeds) is bootstrapped by resampling whole runs (training-seed and
    validation noise); with fewer, record points within its run are resampled and the report flags the intervals
    as too narrow"""
    fit_seed: int = 0
    plan_factor: float = 4.0
    """the planner prescribes for plan_factor x the largest budget a run spent"""
    extra_train: dict = field(default_factory=dict)
    """further GRPOConfig fields for every run"""

    @property
    def rl_lr(self) -> float:
        from rlscale.lab.presets import RL_LR

        if self.lr is not None:
            return self.lr
        if self.model is not None:
            from rlscale.rl.grpo import suggested_rl_lr

            return suggested_rl_lr(self.model)
        return RL_LR.get(self.size, 1e-4)

    def model_dir(self, out: Path) -> Path:
        """The base model: `model` when given, else the lab's pretrained OUT/model."""
        return Path(self.model) if self.model is not None else Path(out) / "model"

    def with_absolute_paths(self) -> LabPreset:
        """model and data_path made absolute (relative ones are read from the working directory)."""
        return dataclasses.replace(self, **{k: str(Path(v).resolve()) for k in ("model", "data_path")
                                            if (v := getattr(self, k)) is not None})

    def pretrain_process_count(self, workers: int) -> int:
        """data-parallel pretraining processes: pretrain_processes, or one per lab worker when it is 0"""
        return self.pretrain_processes or workers

    def for_set(self, name: str) -> LabPreset:
        """The preset of one set's curation and sweep: this one with set_overrides[name] applied."""
        return dataclasses.replace(self, **_tupled(self.set_overrides.get(name, {})), set_overrides={})

    def for_size(self, size: str) -> LabPreset:
        """The preset of the lab of one further size (OUT/sizes/<size>/): this one with that size, no sizes, and
        size_overrides[size] applied."""
        over = _tupled(self.size_overrides.get(size, {}))
        over.setdefault("set_overrides", _without(self.set_overrides, over))
        return dataclasses.replace(self, name=f"{self.name}-{size}", size=size, sizes=(), size_overrides={}, **over)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rl_lr"] = self.rl_lr
        return json.loads(json.dumps(d))  # tuples -> lists

    def validate(self) -> LabPreset:
        from rlscale.lab.presets import get_size

        check_field_types(self, f"preset {self.name}")
        get_size(self.size)
        for s in self.sizes:
            get_size(s)
        self._validate_model_and_task()
        if self.size in self.sizes or len(set(self.sizes)) < len(self.sizes):
            raise UserError(f"preset {self.name}: sizes {list(self.sizes)} must be distinct and differ from size "
                            f"'{self.size}' (the lab's own model)")
        if (self.pretrain_tokens is None) == (self.pretrain_minutes is None):
            raise UserError(f"preset {self.name}: give exactly one of pretrain_tokens and pretrain_minutes")
        if len(self.n_grid) < 2:
            raise UserError(f"preset {self.name}: n_grid needs >= 2 values, got {list(self.n_grid)}")
        if min(self.n_grid) < 1 or len(set(self.n_grid)) < len(self.n_grid):
            raise UserError(f"preset {self.name}: n_grid {list(self.n_grid)} must hold distinct rollout counts >= 1")
        if not self.seeds or len(set(self.seeds)) < len(self.seeds):
            raise UserError(f"preset {self.name}: seeds {list(self.seeds)} must hold >= 1 distinct training seeds, "
                            "e.g. [0, 1, 2, 3, 4]")
        small = [k for k in ("pool_size", "val_size", "train_size", "problems_per_batch", "max_rollouts",
                             "val_points", "val_n", "profile_n", "max_new_tokens", "n_bootstrap", "B_max")
                 if getattr(self, k) < 1]
        if small:
            raise UserError(f"preset {self.name}: {small[0]} must be >= 1, got {getattr(self, small[0])}")
        if max(self.n_grid) * self.problems_per_batch > self.B_max:
            raise UserError(f"preset {self.name}: n={max(self.n_grid)} x problems_per_batch="
                            f"{self.problems_per_batch} exceeds B_max={self.B_max}")
        if self.max_rollouts < max(self.n_grid) * self.problems_per_batch:
            raise UserError(f"preset {self.name}: max_rollouts={self.max_rollouts} is less than one step of the "
                            f"largest n")
        if self.runs_for_run_bootstrap < 2:
            raise UserError(f"preset {self.name}: runs_for_run_bootstrap={self.runs_for_run_bootstrap} must be >= 2 "
                            "(resampling one run is no resampling)")
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0 for v in self.lr_grid):
            raise UserError(f"preset {self.name}: lr_grid {list(self.lr_grid)} must hold positive learning rates")
        if any(k > self.val_n for k in self.val_ks):
            raise UserError(f"preset {self.name}: val_ks {list(self.val_ks)} must be <= val_n={self.val_n}")
        self._validate_overrides("size", self.sizes, SIZE_OVERRIDE_FIELDS, self.for_size)
        self._validate_overrides("set", SETS, SET_OVERRIDE_FIELDS, self.for_set)
        return self

    def _validate_model_and_task(self) -> None:
        from rlscale.evals.evaluate import check_modes
        from rlscale.tasks import get_task

        try:
            get_task(self.task)
        except UserError as e:
            raise UserError(f"preset {self.name}: task: {e}") from None
        if self.model is None and self.task != "arith":
            raise UserError(f"preset {self.name}: task '{self.task}' needs a base model (`--model DIR`, a Hugging "
                            "Face model directory): the lab pretrains its own models on arith only")
        if self.model is not None and self.sizes:
            raise UserError(f"preset {self.name}: sizes {list(self.sizes)} are pretrained lab models; with a given "
                            "model (--model) set sizes to [] and run one lab per model")
        try:
            check_modes([self.grading_mode])
        except UserError as e:
            raise UserError(f"preset {self.name}: grading_mode: {e}") from None

    def _validate_overrides(self, kind: str, names: tuple[str, ...], fields: tuple[str, ...], derive) -> None:
        """set_overrides (kind "set") or size_overrides (kind "size"): each names one of `names` and maps it to
        fields among `fields`, and the preset derive(name) makes of it is valid."""
        where, overrides = f"{kind}_overrides", getattr(self, f"{kind}_overrides")
        if not isinstance(overrides, dict):
            raise UserError(f"preset {self.name}: {where} must map a {kind} ({', '.join(names) or 'none here'}) to "
                            f"a dict of fields, got {overrides!r}")
        for name, over in overrides.items():
            if name not in names:
                raise UserError(f"preset {self.name}: {where} names {kind} '{name}'; {kind}s: "
                                f"{', '.join(names) or 'none (add it to the preset first)'}")
            if not isinstance(over, dict):
                raise UserError(f"preset {self.name}: {where}.{name} must be a dict of fields, got {over!r}")
            bad = sorted(set(over) - set(fields))
            if bad:
                raise UserError(f"preset {self.name}: {where}.{name}.{bad[0]} cannot differ per {kind}; fields: "
                                f"{', '.join(fields)}")
            try:
                derive(name).validate()
            except UserError as e:
                raise UserError(f"{e} (in {where}.{name})") from None
            except TypeError as e:
                raise UserError(f"preset {self.name}: {where}.{name}: {e}") from None


def _without(overrides: dict, fields: dict) -> dict:
    """set_overrides or size_overrides without the fields that `fields` sets for all of them (an entry left with
    none is dropped)."""
    return {s: kept for s, over in overrides.items() if (kept := {k: v for k, v in over.items() if k not in fields})}


PRESETS: dict[str, LabPreset] = {
    # <= 15 min on a quiet 2-core machine: 8M-token s model (2 data-parallel processes), a 5,000-problem pool,
    # n in {2, 4, 8, 16} (8x) x 5 seeds per set (a run-level bootstrap; 3 until stop 23), 6,144 rollouts per run
    # (3,072 until stop 25), 6 log-spaced validation points each (48x-384x span in compute). At 3,072 rollouts and
    # 5 seeds: 8m03s of stages on a Zen 3 EPYC (stop 26; sweeps 2m11s + 2m44s), 8m11s on a Zen 4 EPYC; at 6,144:
    # 10m16s of stages on the Zen 3 EPYC (sweeps 3m03s + 4m12s), 11m38s with setup. Since stop 29 the Easy set
    # runs 8 seeds: the report's intervals are widened for the few runs they resample (1.58x for 5, 1.30x for 8),
    # and on the Zen 3 kind's model five seeds leave the Easy rise unresolved (> 0 in 94% of resamples) where 6 to
    # 10 resolve it (iso-FLOP log2 CI [0.22, 1.54] with 8); 10 seeds took 13m29s of stages, 8 fit with margin.
    # The Hard set, at chance, keeps 5. A fresh clone on the Zen 3 EPYC: 15m52s with setup at stop 31 (a slow day),
    # 13m29s at stop 32 (12m06s of stages) once the sweep's fork server preloaded torch._dynamo. Since stop 33 every
    # run also evaluates its final model under a second validation seed (val_reseed; ~24 s of the lab): 15m54s with
    # setup, 14m13s of stages, on a day the host ran every sweep phase 18-22% slower than at stop 32. On a Zen 1
    # EPYC at 2.0 GHz (stop 34; the same model and validation points): 22m01s with setup, 20m21s of stages, over
    # the bar; with the update on live rows only (models.fused.live_rows): 22m57s (21m05s), the host ~1.19x slower.
    # Stop 35 there (the sampler's rows read their prompt's one cache and draw their noise per window, the fused
    # attention skips its causal zeros; every validation point and fit the same): 19m16s with setup, 17m21s of
    # stages, still over the bar. Since stop 36 the CPU numerics are pinned (rlscale.numerics), so every x86-64 CPU
    # with AVX2 pretrains this model: on a Zen 4 EPYC 11m09s with setup, 9m52s of stages, Easy rises (iso-FLOP
    # log2 CI [0.25, 1.55]); that kind's own model, unpinned, left it unresolved in 8m25s.
    "quick": LabPreset(set_overrides={"easy": {"seeds": tuple(range(8))}}),
    # <= 2 h: bigger pool and val sets, 5 values of n (16x), 4x the quick budget (8x until stop 25), 6 seeds per n
    # (5 until stop 23), and since stop 27 a second model size: the whole study again on xs (OUT/sizes/xs/).
    # With 5 seeds, end to end in a fresh clone: 1h11m46s on a quiet AVX2 EPYC (sweeps 26m15s + 38m38s), 35m02s on
    # a Zen 4 EPYC (sweeps 11m54s + 19m02s); with 6 there: 39m12s (sweeps 18m35s + 16m53s, other work sharing the
    # cores for part of it); with 6 on a Zen 3 EPYC (stop 26): 40m38s (sweeps 14m58s + 21m49s).
    # Since stop 28 its Hard set is above chance ([1/16, 1/4], hard_bounds), validated on 400 problems x 16 samples
    # at 8 points: the study's [0, 1/16] is solved at chance by every lab model and RL gained nothing on it. End to
    # end in a fresh clone on the Zen 3 EPYC: 1h19m50s with setup, 78m26s of stages (s 45m52s, xs 32m33s).
    # Since stop 30 the s model runs 12 seeds and xs 4 (size_overrides): with 6, the widened intervals left every
    # n*(C) question on s unresolved, including where Hard saturates relative to Easy ([-1.57, 1.07]); stop 29 ran
    # seeds 6-11 as a second lab and relocated both into one: that comparison resolved ([0.11, 2.00]). xs, which
    # the report compares by RL gain, gives up 2 seeds to keep the preset inside 2 hours: end to end in a fresh
    # clone on the Zen 3 EPYC 1h59m03s with setup, 7,056 s of stages (s 91m50s, xs 25m33s), with no margin.
    # Stop 33 weighed every trim on stop 30's runs (exact: a run depends only on its n and seed) and lost a result
    # with each: 10 seeds on s leave Hard vs Easy unresolved ([-0.22, 2.03]); 3 on xs, or n in {2, 8, 32} / {2, 4, 8,
    # 32} there, change xs's verdicts; Hard validated on 8 samples instead of 16 (simulated from the measured
    # sampling error) lost Hard vs Easy in 4 of 6 replicates. Validation is 36% of the Hard runs' time and 21% of
    # Easy's: with the part of the sampling error the runs do not share (measured), the optimum would shed 5% of
    # the variance on Hard (0.59x the samples) and 0.4% on Easy (1.2x) (docs/lab_results.md, stop 33).
    # The second validation seed that measures that part (val_reseed) runs on Easy only here: one more evaluation
    # per run costs ~1 s on Easy, ~5 s on Hard (~3 min of the full lab's two hours); Hard's budget is then a bound.
    "full": LabPreset(name="full", pretrain_tokens=8_000_000, pool_size=12000, val_size=200, train_size=1000,
                      n_grid=(2, 4, 8, 16, 32), max_rollouts=24576, val_points=14, seeds=tuple(range(12)),
                      n_bootstrap=500, sizes=("xs",), size_overrides={"xs": {"seeds": (0, 1, 2, 3)}},
                      hard_bounds=(0.0625, 0.25), val_reseed=False,
                      set_overrides={"hard": {"val_size": 400, "val_n": 16, "val_points": 8},
                                     "easy": {"val_reseed": True}}),
}


def get_preset(name: str) -> LabPreset:
    """A named preset, or a JSON file of LabPreset fields ({"base": "quick", "pool_size": 500, ...}); a field the file
    sets applies to every set and size, replacing the base's set_overrides (size_overrides) of it unless the file
    gives set_overrides (size_overrides)."""
    if name in PRESETS:
        return PRESETS[name]
    if not name.endswith(".json"):
        raise UserError(f"unknown lab preset '{name}'; valid presets: {', '.join(PRESETS)} or a .json file of "
                        "LabPreset fields")
    try:
        fields = json.loads(Path(name).read_text())
    except FileNotFoundError:
        raise UserError(f"--preset {name}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"--preset {name}: malformed JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(fields, dict):
        raise UserError(f"--preset {name}: expected a JSON object of LabPreset fields")
    base = get_preset(str(fields.pop("base", "quick")))
    known = {f.name for f in dataclasses.fields(LabPreset)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UserError(f"--preset {name}: unknown field '{unknown[0]}'; fields: {', '.join(sorted(known))}")
    fields.setdefault("name", Path(name).stem)
    if "set_overrides" not in fields:  # a field the file sets holds for every set: drop the base's overrides of it
        fields["set_overrides"] = _without(base.set_overrides, fields)
    if "size_overrides" not in fields:  # ... and for every size; sizes the file drops lose their overrides
        sizes = fields.get("sizes", base.sizes)
        fields["size_overrides"] = {s: o for s, o in _without(base.size_overrides, fields).items() if s in sizes}
    return dataclasses.replace(base, **_tupled(fields))


def _tupled(fields: dict) -> dict:
    """LabPreset fields as read from JSON: lists become the tuples the preset holds."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


# ------------------------------------------------------------------------------------------------ stage records
def _fmt(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = max(0.0, s)
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m" if s >= 3600 else f"{int(s // 60)}m{int(s % 60):02d}s"


def estimate_seconds(p: LabPreset, workers: int) -> dict[str, float]:
    """Rough wall-time guess per stage (for the ETA before a stage has run)."""
    pre_rate = PRETRAIN_TOKENS_PER_S_PER_PROCESS * p.pretrain_process_count(workers)
    if p.model is not None:  # a given model is only loaded
        pre = 0.0
    else:
        pre = p.pretrain_tokens / pre_rate if p.pretrain_tokens else 60.0 * (p.pretrain_minutes or 0)

    def sweep(q: LabPreset) -> float:
        evals = q.val_points + int(q.val_reseed)  # the before-training evaluation is shared (val_cache)
        per_run = (q.max_rollouts / TRAIN_ROLLOUTS_PER_S + evals * q.val_n * q.val_size / SAMPLE_ROLLOUTS_PER_S
                   + RUN_OVERHEAD_S)
        return math.ceil(len(q.n_grid) * len(q.seeds) / workers) * per_run

    def fits(q: LabPreset) -> float:  # the fit, and one per seed for the leave-one-seed-out check
        refits = len(q.seeds) if len(q.seeds) > q.runs_for_run_bootstrap else 0
        return (1 + refits) * (1.0 + 0.004 * q.n_bootstrap * len(q.n_grid))

    est = {"pretrain": pre + 5.0, "profile": p.pool_size * p.profile_n / (SAMPLE_ROLLOUTS_PER_S * workers) + 8.0,
           "curate": 1.0, **{f"sweep_{name}": sweep(p.for_set(name)) for name in SETS}, "export": 2.0,
           "fit": sum(fits(p.for_set(name)) for name in SETS), "plan": 0.5, "report": 8.0}
    est["sizes"] = sum(SIZE_COST.get(s, 1.0) / SIZE_COST.get(p.size, 1.0)
                       * sum(estimate_seconds(p.for_size(s), workers).values())
                       for s in p.sizes)
    return est


class StageLog:
    """stages.json: {stage: {status, wall_s, rollouts, tokens, flops, ...}}, rewritten atomically on every change."""

    def __init__(self, out: Path):
        self.path = out / STAGES_FILE
        self.data: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, stage: str) -> dict:
        return self.data.get(stage, {})

    def set(self, stage: str, **fields) -> None:
        self.data[stage] = {**self.data.get(stage, {}), **fields}
        atomic_write_json(self.path, self.data)


class LabProgress:
    """The lab's progress view on stderr: stage i/N, name, elapsed, ETA (estimates scaled by measured speed)."""

    def __init__(self, estimates: dict[str, float], enabled: bool = True, label: str = "lab"):
        self.est, self.enabled, self.label = estimates, enabled, label
        self.t0 = time.monotonic()
        self.measured, self.estimated = 0.0, 0.0

    def eta(self, remaining: list[str]) -> float:
        speed = self.measured / self.estimated if self.estimated > 30.0 else 1.0
        return speed * sum(self.est[s] for s in remaining)

    def line(self, i: int, stage: str, what: str, remaining: list[str]) -> None:
        if self.enabled:
            print(f"[{self.label} {i}/{len(STAGES)}] {stage}: {what} | elapsed {_fmt(time.monotonic() - self.t0)} | "
                  f"ETA {_fmt(self.eta(remaining))}", file=sys.stderr, flush=True)

    def ran(self, stage: str, wall_s: float) -> None:
        if wall_s < 0.1 * self.est[stage]:  # the stage found its work done (reused checkpoint, finished runs)
            return
        self.measured += wall_s
        self.estimated += self.est[stage]


# ------------------------------------------------------------------------------------------------ stages
def stage_pretrain(p: LabPreset, out: Path, progress: bool, workers: int = 1) -> dict:
    if p.model is not None:  # a given base model: check that it loads, record it
        from rlscale.models import load_policy
        from rlscale.models.device import resolve_device

        # loaded on the CPU: the lab's own process holds no GPU memory (and no CUDA context) while its workers run
        policy = load_policy(p.model, "cpu")
        device = "cpu" if policy.kind == "tiny" else str(resolve_device())  # where the stages will run it
        return {"rollouts": 0, "tokens": 0, "flops": 0.0, "model": p.model, "num_params": policy.num_params(),
                "model_kind": type(policy).__name__, "device": device}
    model = out / "model"
    if not (model / "rlscale_model.json").exists():
        from rlscale.lab.pretrain import PretrainConfig, pretrain

        pretrain(PretrainConfig(size=p.size, tokens=p.pretrain_tokens, minutes=p.pretrain_minutes,
                                seed=p.pretrain_seed, step_weights=p.pretrain_step_weights,
                                processes=p.pretrain_process_count(workers)),
                 out=str(model), progress=progress)
    meta = json.loads((model / "rlscale_model.json").read_text())
    c = meta.get("compute", {})
    return {"rollouts": 0, "tokens": c.get("tokens", 0), "flops": c.get("flops", 0.0),
            "model_wall_s": c.get("wall_s"), "num_params": meta.get("num_params"),
            "heldout_loss": meta.get("heldout_loss")}


def add_chain_counts(problems: list, records: list[dict], mode: str) -> None:
    """Replace each eval record's completions (evaluate(keep_text=True)) by chain_valid: how many of its samples
    graded correct under `mode` also have a right worked chain (arith.chain_is_valid), for the reward precision."""
    from rlscale.tasks.arith import chain_checker

    for prob, rec in zip(problems, records, strict=True):
        texts, ok = rec.pop("completions"), rec["modes"][mode]["rewards"]
        correct = [t for t, good in zip(texts, ok) if good]
        rec["chain_valid"] = sum(map(chain_checker(prob.question), correct)) if correct else 0  # parsed once


def _profile_part(model_dir: str, problems: list[dict], n: int, max_new_tokens: int, seed: int, mode: str,
                  template: str, chains: bool, path: str) -> None:
    """Worker: evaluate a chunk of the pool and write {records, compute} to path (atomically); `chains` (arith)
    counts the correct samples with a right worked chain."""
    import torch

    torch.set_num_threads(1)
    from rlscale.compute import cumulative_forward_flops, generation_flops
    from rlscale.engine.base import SamplingParams
    from rlscale.evals.evaluate import build_prompts, evaluate
    from rlscale.models import load_policy
    from rlscale.prompts import stop_strings
    from rlscale.tasks.base import Problem

    probs = [Problem(**d) for d in problems]
    policy = load_policy(model_dir)
    params = SamplingParams(n=n, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens,
                            stop=tuple(stop_strings(template)), seed=seed)
    res = evaluate(probs, policy.sampler(), template=template, params=params, modes=(mode,), ks=(1,),
                   progress=False, keep_text=chains)
    if chains:
        add_chain_counts(probs, res.records, mode)
    prompt_lens = [len(policy.tokenizer.encode(t)) for t in build_prompts(probs, template, 0, ())]
    P = [prompt_lens[i] for i, r in enumerate(res.records) for _ in r["lengths"]]
    G = [g for r in res.records for g in r["lengths"]]
    F = cumulative_forward_flops(policy.flops_per_token, max(P) + max(G) + 1)
    compute = {"rollouts": len(G), "tokens": sum(P) + sum(G), "tokens_generated": sum(G),
               "flops": generation_flops(P, G, F)}
    atomic_write_text(path, json.dumps({"records": res.records, "compute": compute}))


def _profile_worker_main(jobs_file: str, parent: int | None = None) -> None:
    """Entry of a profile worker process: run the jobs listed in jobs_file (JSON list of _profile_part args); it
    dies with the lab process `parent`."""
    from rlscale.procs import die_with_parent

    die_with_parent(parent)
    for job in json.loads(Path(jobs_file).read_text()):
        if not Path(job[-1]).exists():
            _profile_part(*job)


def _run_profile_workers(jobs: list, parts_dir: Path, workers: int, n_parts: int, progress: bool) -> None:
    """Split the jobs over `workers` subprocesses (one torch thread each) and wait, showing chunks done."""
    import subprocess

    from rlscale.sweep.run import cuda_count, gpu_slots, worker_env

    procs = []
    env = {**os.environ, **worker_env(1)}
    slots = gpu_slots(workers, env, cuda_count())  # several GPUs: one per worker
    for w in range(min(workers, len(jobs))):
        jf = parts_dir / f"jobs_{w}.json"
        atomic_write_text(jf, json.dumps(jobs[w::workers]))
        cmd = [sys.executable, "-c",
               f"from rlscale.lab.pipeline import _profile_worker_main as m; m({str(jf)!r}, {os.getpid()})"]
        procs.append(subprocess.Popen(cmd, env={**env, **slots[w]}, stdin=subprocess.DEVNULL))
    t0, last = time.monotonic(), 0.0
    try:
        while any(pr.poll() is None for pr in procs):
            time.sleep(0.5)
            if progress and time.monotonic() - last > 10.0:
                last = time.monotonic()
                done = len(list(parts_dir.glob("part_*.json")))
                new = done - (n_parts - len(jobs))
                el = time.monotonic() - t0
                eta = el / new * (n_parts - done) if new > 0 else float("nan")
                print(f"[profile] {done}/{n_parts} chunks | ETA {_fmt(eta)}", file=sys.stderr, flush=True)
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
    bad = [pr.returncode for pr in procs if pr.returncode != 0]
    if bad:
        raise UserError(f"profile: a worker process failed (exit code {bad[0]}); re-run to resume")


def stage_profile(p: LabPreset, out: Path, workers: int, progress: bool) -> dict:
    from rlscale.evals.difficulty import plot_histogram, profile_table
    from rlscale.evals.evaluate import EvalResult, load_problems
    from rlscale.io import write_table
    from rlscale.tasks import get_task

    task = get_task(p.task)
    problems = load_problems(task, "train", data_path=p.data_path, limit=p.pool_size)
    if not problems:
        raise UserError(f"profile: the {p.task} train pool is empty (data_path {p.data_path}); give a file of problems")
    parts_dir = out / "profile_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    chunk = max(8, min(128, -(-len(problems) // max(workers, 1))))  # a function of the preset: parts resume
    jobs = []
    for k, lo in enumerate(range(0, len(problems), chunk)):
        path = parts_dir / f"part_{k:05d}_{chunk}.json"
        if not path.exists():
            dicts = [dataclasses.asdict(q) for q in problems[lo:lo + chunk]]
            jobs.append((str(p.model_dir(out)), dicts, p.profile_n, p.max_new_tokens, p.pretrain_seed,
                         p.grading_mode, p.template or task.template, p.task == "arith", str(path)))
    n_parts = -(-len(problems) // chunk)
    if jobs:
        _run_profile_workers(jobs, parts_dir, workers, n_parts, progress)
    records, compute = [], {"rollouts": 0, "tokens": 0, "tokens_generated": 0, "flops": 0.0}
    for k in range(n_parts):
        d = json.loads((parts_dir / f"part_{k:05d}_{chunk}.json").read_text())
        records += d["records"]
        for key in compute:
            compute[key] += d["compute"][key]
    df = profile_table(EvalResult(records=records, modes=(p.grading_mode,), ks=(1,)), problems, p.grading_mode)
    write_table(df, out / "profile.parquet")
    plot_histogram(df["avg"].to_numpy(), p.profile_n, out / "profile.hist.png",
                   title=f"{p.task} train pool ({len(df)} problems), avg@{p.profile_n}")
    return {**compute, "mean_avg": float(df["avg"].mean())}


def stage_curate(p: LabPreset, out: Path) -> dict:
    import numpy as np

    from rlscale.commands.curate import rows_for
    from rlscale.evals.difficulty import Bucket, chance_rates, check_profile, reward_precision
    from rlscale.io import read_table

    df = read_table(out / "profile.parquet")
    check_profile(df, str(out / "profile.parquet"))
    manifest = {"profile": "profile.parquet", "problems": len(df), "seed": p.curate_seed, "sets": {}}
    for name, (lo, hi) in (("easy", p.easy_bounds), ("hard", p.hard_bounds)):
        q = p.for_set(name)
        b = Bucket(name, lo, hi)
        ids = sorted(df["problem_id"][b.mask(df)].astype(str))
        if len(ids) < 2:
            raise UserError(f"curate: the {name} bucket {b.describe()} holds {len(ids)} of {len(df)} problems; "
                            f"widen {name}_bounds or raise pool_size")
        perm = [ids[i] for i in np.random.default_rng(p.curate_seed).permutation(len(ids))]
        n_val = min(q.val_size, len(ids) // 2)  # never hold out more than half
        # whole batches per epoch: a step never straddles two epochs, so no problem appears twice in a step
        n_train = min(p.train_size, len(ids) - n_val) // p.problems_per_batch * p.problems_per_batch
        if n_train < p.problems_per_batch:
            raise UserError(f"curate: the {name} bucket {b.describe()} holds {len(ids)} of {len(df)} problems, "
                            f"too few for {n_val} validation + one batch of {p.problems_per_batch}; widen "
                            f"{name}_bounds or raise pool_size")
        val, train = perm[:n_val], perm[n_val:n_val + n_train]
        atomic_write_jsonl(out / "sets" / name / "train.jsonl", rows_for(df, train))
        atomic_write_jsonl(out / "sets" / name / "val.jsonl", rows_for(df, val))
        chosen = df.set_index(df["problem_id"].astype(str)).loc[train + val]
        avg = chosen["avg"]
        manifest["sets"][name] = {"bounds": b.describe(), "bucket_size": len(ids), "train": len(train),
                                  "val": len(val), "avg_min": float(avg.min()), "avg_max": float(avg.max()),
                                  "train_mean_avg": float(avg.loc[train].mean()),
                                  "val_mean_avg": float(avg.loc[val].mean())}
        if "correct_valid_chain" in df.columns:  # profiles written before the column have no such figure
            manifest["sets"][name]["valid_chain_frac"] = reward_precision(chosen)
        rates = chance_rates(chosen["answer"]) if "answer" in chosen.columns else None
        if rates:
            manifest["sets"][name]["constant_answer"] = rates["constant"]
    atomic_write_json(out / "sets" / "manifest.json", manifest)
    return {"sets": manifest["sets"]}


def sweep_spec_dict(p: LabPreset, name: str, val_size: int) -> dict:
    """The sweep spec of one set (paths relative to OUT/specs/), with the set's overrides (LabPreset.for_set)."""
    p = p.for_set(name)
    train = ({} if p.lr_grid else {"lr": p.rl_lr}) | {"lr_scaling": p.lr_scaling, "lr_ref_batch": p.lr_ref_batch,
             "reward": p.grading_mode, "temperature": p.temperature, "max_new_tokens": p.max_new_tokens,
             "val_n": p.val_n, "val_ks": list(p.val_ks), "val_limit": val_size,
             **({"val_reseed": RESEED} if p.val_reseed else {}),
             "checkpoint_every": p.checkpoint_every, **({"template": p.template} if p.template else {}),
             **p.extra_train}
    return {"name": f"lab_{p.name}_{name}", "model": p.model or "../model", "task": p.task,
            "train_set": f"../sets/{name}/train.jsonl", "val_set": f"../sets/{name}/val.jsonl",
            "n": list(p.n_grid), "problems_per_batch": [p.problems_per_batch], "B_max": p.B_max,
            "max_rollouts": p.max_rollouts, "val_log_points": p.val_points, "seeds": list(p.seeds),
            "resources": {"cpus": 1, "gpus": 0}, "train": train} | ({"lr": list(p.lr_grid)} if p.lr_grid else {})


def load_set_spec(p: LabPreset, out: Path, name: str):
    import yaml

    from rlscale.sweep.spec import load_spec

    manifest = json.loads((out / "sets" / "manifest.json").read_text())
    path = out / "specs" / f"{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(sweep_spec_dict(p, name, manifest["sets"][name]["val"]),
                                           sort_keys=False))
    return load_spec(path)


def sweep_compute(sweepdir: Path) -> dict:
    """Training compute (last step of every run store) and validation rollouts of a sweep directory."""
    from rlscale.store import RunStore

    tot = {"rollouts": 0.0, "tokens": 0.0, "flops": 0.0, "val_rollouts": 0.0, "runs": 0, "runs_finished": 0}
    for rundir in sorted((sweepdir / "runs").glob("*")):
        if not RunStore.exists(rundir):
            continue
        with RunStore.open(rundir) as store:
            steps = store.steps()
            evals = store.evals()
            cfg = store.config
            tot["runs"] += 1
            tot["runs_finished"] += int(store.is_finished())
        if steps:
            last = steps[-1]
            tot["rollouts"] += last.get("compute/rollouts", 0.0)
            tot["tokens"] += last.get("compute/tokens_generated", 0.0) + last.get("compute/tokens_prompt", 0.0)
            tot["flops"] += last.get("compute/flops", 0.0)
        reseeded = sum("val/avg_reseed" in e for e in evals)  # a second evaluation of the final model
        tot["val_rollouts"] += (len(evals) + reseeded) * cfg.get("val_n", 0) * (cfg.get("val_limit") or 0)
    return tot


def stage_sweep(p: LabPreset, out: Path, name: str, workers: int, progress: bool) -> dict:
    from rlscale.sweep.run import failure_message, run_sweep

    spec = load_set_spec(p, out, name)
    sweepdir = out / "sweeps" / name
    res = run_sweep(spec, sweepdir, workers=workers, progress=progress)
    if res.failed:
        raise UserError(f"sweep {name}: {len(res.failed)} run(s) failed; re-run to resume\n"
                        + failure_message(sweepdir, res.failed))
    return {**sweep_compute(sweepdir), "skipped_runs": len(res.skipped)}


def stage_export(out: Path) -> dict:
    from rlscale.io import write_table
    from rlscale.sweep.export import load_sweep_table

    rows = {}
    for name in SETS:
        df = load_sweep_table(out / "sweeps" / name)
        write_table(df, out / "sweeps" / name / "table.parquet")
        rows[name] = len(df)
    return {"rows": rows}


def fit_table(df, p: LabPreset, train_size: int | None) -> dict:
    """IsoCompute on a sweep table: it measures each run's gain from its before-training (step-0) value, then fits
    the points with compute > 0."""
    from rlscale.scaling.isocompute import IsoCompute, selected_rate

    iso = IsoCompute(bucket_width=p.bucket_width, n_bootstrap=p.n_bootstrap, seed=p.fit_seed,
                     train_set_size=train_size, min_runs_for_run_bootstrap=p.runs_for_run_bootstrap).fit(df)
    fit = iso.to_dict()
    fit["anchor"] = [p.rl_lr, float(p.lr_ref_batch)]
    # an lr grid: the rate of the frontier's n at the largest compute
    fit["anchor"][0] = selected_rate(fit, float(fit["frontier"][-1]["n_star"]), p.rl_lr)
    return fit


def _refit_without_seed(df, p: LabPreset, train_size: int | None, seed: int) -> dict:
    """One leave-one-seed-out refit's verdicts (JSON-ready); a subset the fit cannot take is recorded as failed."""
    from rlscale.report import n_star_evidence

    try:
        ev = n_star_evidence(fit_table(df[df["seed"] != seed], p, train_size))
    except UserError as e:
        return {"seed": seed, "verdict": "failed", "isoflop": None, "error": str(e)}
    iso = ev.get("isoflop") or {}
    return {"seed": seed, "verdict": ev["verdict"], "isoflop": iso.get("verdict"),
            "log2_ratio_ci": ev.get("log2_ratio_ci"), "isoflop_log2_ratio_ci": iso.get("log2_ratio_ci")}


def leave_one_seed_out(df, p: LabPreset, train_size: int | None, fit: dict, workers: int = 1) -> dict | None:
    """The fit's two n*(C) verdicts (report.n_star_evidence: frontier argmax and iso-FLOP) redone without each seed
    in turn, so the report can say whether a verdict rests on one seed. Stop 40 found the quick lab's Easy verdicts
    fragile that way: the iso-FLOP 'rises' of seeds 0-7 held in 3 of their 8 leave-one-out refits, and seeds 8-15
    alone left both verdicts unresolved. None when it does not apply: no seed column, fewer than
    runs_for_run_bootstrap + 1 seeds at some n (a refit would fall back to resampling points), or a set whose
    verdict is no-gain (nothing to check). One fit per seed (~2.5 s each for the quick lab's Easy set), on
    `workers` spawned processes."""
    from rlscale.report import n_star_evidence

    if "seed" not in df.columns or (df.groupby("n")["seed"].nunique().min() < p.runs_for_run_bootstrap + 1):
        return None
    full = n_star_evidence(fit)
    if full["verdict"] == "no-gain" or not full["n_bootstrap"]:
        return None
    seeds = sorted(int(s) for s in df["seed"].unique())
    args = [(df, p, train_size, s) for s in seeds]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(seeds)), mp_context=multiprocessing.get_context("spawn")) as ex:
            drops = list(ex.map(_refit_without_seed, *zip(*args)))
    else:
        drops = [_refit_without_seed(*a) for a in args]
    return {"seeds": seeds, "verdict": full["verdict"], "isoflop": (full.get("isoflop") or {}).get("verdict"),
            "drops": drops}


def stage_fit(p: LabPreset, out: Path, workers: int = 1) -> dict:
    from rlscale.io import read_table
    from rlscale.scaling import plots

    manifest = json.loads((out / "sets" / "manifest.json").read_text())
    result = {}
    for name in SETS:
        df = read_table(out / "sweeps" / name / "table.parquet")
        fdir = out / "fits" / name
        try:
            fit = fit_table(df, p, manifest["sets"][name]["train"])
            try:  # a check on the fit: its failure must not cost the fit itself
                fit["seed_stability"] = leave_one_seed_out(df, p, manifest["sets"][name]["train"], fit, workers)
            except Exception as e:  # noqa: BLE001 (e.g. a worker process that could not start)
                fit["seed_stability"] = {"error": f"{type(e).__name__}: {e}"}
        except UserError as e:  # too few record points etc.: recorded, shown in the report
            fit = {"law": "isocompute", "status": "failed", "error": str(e)}
        fit["set"] = name
        fit["source"] = f"sweeps/{name}/table.parquet"
        atomic_write_json(fdir / "fit.json", fit)
        if "error" not in fit:
            pos = df[df["compute/rollouts"].astype(float) > 0]
            plots.save(plots.reward_vs_compute(pos, fit, x=fit["x"], y=fit["y"]), fdir / "reward_vs_compute.png")
            plots.save(plots.n_star_vs_compute(fit), fdir / "n_star.png")
        result[name] = fit.get("error", "ok")
    return {"fits": result}


def stage_plan(p: LabPreset, out: Path) -> dict:
    from rlscale.scaling.isocompute import selected_rate
    from rlscale.scaling.plan import plan

    manifest = json.loads((out / "sets" / "manifest.json").read_text())
    plans = {}
    for name in SETS:
        fit = json.loads((out / "fits" / name / "fit.json").read_text())
        spent = sweep_max_run_rollouts(out / "sweeps" / name)
        budget = p.plan_factor * spent
        entry = {"spent_max_run_rollouts": spent, "plan_factor": p.plan_factor, "budget_rollouts": budget,
                 "B_max": p.B_max, "problems": manifest["sets"][name]["train"]}
        if "error" in fit:
            entry["error"] = f"no fit: {fit['error']}"
        else:
            try:
                # the sweep held B_problem fixed, so the prescription does too: n from the fit, then B_problem
                # capped at the swept value (B_max = n * B_problem), M = C / (n * B_problem), lr by sqrt scaling
                args = (manifest["sets"][name]["train"],)
                anchor = (p.rl_lr, float(p.lr_ref_batch))
                n = plan(fit, budget, p.B_max, *args, lr_anchor=anchor).n
                anchor = (selected_rate(fit, n, p.rl_lr), anchor[1])  # an lr grid: the nearest swept n's rate
                entry["plan"] = plan(fit, budget, min(p.B_max, n * p.problems_per_batch), *args,
                                     lr_anchor=anchor).to_dict()
                entry["design"] = f"fixed B_problem = {p.problems_per_batch} (as swept)"
            except UserError as e:
                entry["error"] = str(e)
        plans[name] = entry
    atomic_write_json(out / "plan.json", plans)
    return {"plans": {k: ("error" not in v) for k, v in plans.items()}}


def sweep_max_run_rollouts(sweepdir: Path) -> float:
    """The largest rollouts any run of the sweep spent (from the run stores)."""
    from rlscale.store import RunStore

    best = 0.0
    for rundir in (sweepdir / "runs").glob("*"):
        if RunStore.exists(rundir):
            with RunStore.open(rundir) as store:
                steps = store.steps()
            if steps:
                best = max(best, float(steps[-1].get("compute/rollouts", 0.0)))
    return best


def size_dirs(out: Path, sizes) -> dict[str, Path]:
    """{size: its lab directory} for the further sizes of a lab."""
    return {s: out / SIZES_DIR / s for s in sizes}


def stage_sizes(p: LabPreset, out: Path, workers: int, progress: bool) -> dict:
    """Run (or resume) the lab of every further size in OUT/sizes/<size>/; the compute is the sum of theirs.
    `runs` / `skipped_runs` count the size labs and those in which no stage ran (all reused)."""
    tot = {"rollouts": 0.0, "tokens": 0.0, "flops": 0.0, "val_rollouts": 0.0, "runs": len(p.sizes), "skipped_runs": 0}
    for size, sub in size_dirs(out, p.sizes).items():
        before = StageLog(sub).data  # {} for a lab not started
        stages = run_lab(p.for_size(size), sub, progress=progress, workers=workers, label=f"lab {size}")
        tot["skipped_runs"] += int(stages == before)
        for rec in stages.values():
            for key in ("rollouts", "tokens", "flops", "val_rollouts"):
                tot[key] += float(rec.get(key) or 0.0)
    return tot


def stage_report(out: Path) -> dict:
    from rlscale.report import build_report

    path = build_report(out)
    return {"report": str(path.relative_to(out))}


def outputs_exist(stage: str, out: Path, p: LabPreset) -> bool:
    if stage == "sizes":
        return all((d / REPORT_FILE).exists() for d in size_dirs(out, p.sizes).values())
    if stage == "pretrain":
        return p.model_dir(out).is_dir() if p.model is not None else (out / "model" / "rlscale_model.json").exists()
    if stage == "profile":
        return (out / "profile.parquet").exists()
    if stage == "curate":
        return (out / "sets" / "manifest.json").exists()
    if stage.startswith("sweep_"):
        return (out / "sweeps" / stage[6:] / "sweep.json").exists()
    if stage == "export":
        return all((out / "sweeps" / s / "table.parquet").exists() for s in SETS)
    if stage == "fit":
        return all((out / "fits" / s / "fit.json").exists() for s in SETS)
    if stage == "plan":
        return (out / "plan.json").exists()
    return (out / REPORT_FILE).exists() and (out / SUMMARY_TEXT_FILE).exists()


# ------------------------------------------------------------------------------------------------ driver
def stored_preset(out: Path) -> dict | None:
    """The preset dict OUT/lab.json holds (None without one); a field added to LabPreset after that lab was made
    counts as its default there."""
    path = Path(out) / LAB_FILE
    return {**LabPreset().to_dict(), **json.loads(path.read_text()).get("preset", {})} if path.exists() else None


def _labs_and_sets(p: LabPreset) -> dict[str, LabPreset]:
    """The effective preset of every (model size, set) a lab studies, keyed "size/set": the main size's and each
    further size's (for_size), each set's overrides applied (for_set)."""
    labs = [(p.size, p)] + [(z, p.for_size(z)) for z in p.sizes]
    return {f"{z}/{name}": dataclasses.replace(q.for_set(name), size_overrides={}) for z, q in labs for name in SETS}


def seed_growth(old: dict, p: LabPreset) -> dict[str, tuple[int, ...]] | None:
    """The seeds the preset p adds to the stored preset `old` (a lab.json dict), per "size/set" that gains any,
    when p is `old` with more training seeds and nothing else changed: for every model size and set the seeds are
    a superset of the old ones and every other effective field is equal. None otherwise (or nothing added). Such
    a lab is extended in place (check_lab_dir): its finished runs are kept, only the new seeds' runs are trained."""
    fields = {f.name for f in dataclasses.fields(LabPreset)}
    try:
        before = LabPreset(**_tupled({k: v for k, v in old.items() if k in fields}))
    except (TypeError, ValueError):
        return None
    a, b = _labs_and_sets(before), _labs_and_sets(p)
    if a.keys() != b.keys() or not all(
            set(a[k].seeds) <= set(b[k].seeds)
            and dataclasses.replace(a[k], seeds=()).to_dict() == dataclasses.replace(b[k], seeds=()).to_dict()
            for k in a):
        return None
    added = {k: tuple(sorted(set(b[k].seeds) - set(a[k].seeds))) for k in a if seeds_grew(a[k].seeds, b[k].seeds)}
    return added or None


def adds_only_seeds(old: dict, p: LabPreset) -> bool:
    """Whether the preset p is the stored preset `old` with more training seeds and nothing else changed."""
    return seed_growth(old, p) is not None


EXTENDED_STAGES = ("sweep_easy", "sweep_hard", "sizes")
"""the stages a lab extended by seeds runs again (each resumes: finished runs are skipped); the stages after them
follow, as after any stage that ran"""


def check_lab_dir(p: LabPreset, out: Path, progress: bool = False) -> None:
    """Write lab.json for a new OUT; refuse an OUT made with a different preset (naming the first field), unless
    the preset only adds seeds (seed_growth): then lab.json takes the new preset, the sweeps run again for the new
    seeds' runs, and with `progress` a line on stderr says which seeds each size and set gains (a preset file's
    top-level `seeds` also replaces the base preset's per-set and per-size seeds)."""
    new = {"preset": p.to_dict()}
    old = stored_preset(out)
    if old is not None:
        diff = changed_keys(old, new["preset"])
        added = seed_growth(old, p) if diff else None
        if added:
            if progress:
                print("[lab] adding seeds (the finished runs are kept): " + "; ".join(
                    f"{k} +{len(v)} ({', '.join(map(str, v))})" for k, v in added.items()), file=sys.stderr,
                    flush=True)
            log = StageLog(out)
            for stage in EXTENDED_STAGES:
                if log.get(stage).get("status") == "done":
                    log.set(stage, status="extending")
            atomic_write_json(out / LAB_FILE, new)
            return
        if diff and "name" in diff and adds_only_seeds({**old, "name": p.name}, p):
            raise UserError(f"{out}: holds the lab '{old['name']}'; to add seeds to it, give the preset its name "
                            f"(\"name\": \"{old['name']}\"), e.g. {{\"base\": ..., \"name\": \"{old['name']}\", "
                            "\"seeds\": [...]}")
        if diff:
            raise UserError(f"{out}: holds a lab made with a different preset ({diff[0]}: {old.get(diff[0])!r} vs "
                            f"{new['preset'].get(diff[0])!r}); use a new --out or the same preset")
        return
    atomic_write_json(out / LAB_FILE, new)


PRETRAIN_FIELDS = ("model", "size", "pretrain_tokens", "pretrain_minutes", "pretrain_seed", "pretrain_step_weights",
                   "pretrain_processes")
"""the preset fields that determine the pretrained model (data-parallel pretraining is deterministic per process
count, so the count is one of them)"""
PROFILE_FIELDS = ("task", "data_path", "template", "pool_size", "profile_n", "max_new_tokens", "grading_mode")
"""with PRETRAIN_FIELDS, the fields that determine profile.parquet (its sampling seed is pretrain_seed)"""


def reusable_stages(p: LabPreset, base: Path, out: Path) -> list[str]:
    """The stages a new OUT can take from another lab's directory `base`: pretrain when the preset's
    PRETRAIN_FIELDS agree with base's lab.json, and profile too when PROFILE_FIELDS also agree and base finished it
    (what a variant of the curation, the sweeps or the fit needs: the variant tables of docs/lab_results.md). Writes nothing;
    a UserError names the first pretraining field that differs, or what base lacks."""
    base = Path(base).resolve()
    old = stored_preset(base)
    if old is None:
        raise UserError(f"--reuse {base}: not a lab directory (no {LAB_FILE}); run `rlscale lab --out` there first")
    if old.get("model") is None and not (base / "model" / "rlscale_model.json").exists():
        raise UserError(f"--reuse {base}: not a lab directory with a pretrained model (no model/rlscale_model.json); "
                        "run `rlscale lab --out` there first")
    if (out / "model").exists() or (out / "profile.parquet").exists():
        raise UserError(f"--reuse: {out} already has a model or a profile; use a new --out")
    new = p.to_dict()

    def first_diff(fields):
        diff = changed_keys({k: old.get(k) for k in fields}, {k: new.get(k) for k in fields})
        return diff[0] if diff else None

    key = first_diff(("model",) if p.model is not None else PRETRAIN_FIELDS)
    if key:
        raise UserError(f"--reuse {base}: its model was pretrained with {key} = {old.get(key)!r}, this preset has "
                        f"{new.get(key)!r}; reuse a lab with the same pretraining or drop --reuse")
    profiled = StageLog(base).get("profile").get("status") == "done" and (base / "profile.parquet").exists()
    return ["pretrain", "profile"] if profiled and not first_diff(PROFILE_FIELDS) else ["pretrain"]


def reused_note(rec: dict) -> str:
    """The progress line of a stage found done: what it took when it ran, here or in the lab it was reused from
    (--reuse: its record's wall time here is 0, `reused_wall_s` keeps the time it took there)."""
    if rec.get("reused_from"):
        return f"reused from {rec['reused_from']} ({_fmt(rec.get('reused_wall_s') or 0.0)} when it ran there)"
    return f"reused ({_fmt(rec.get('wall_s', 0.0))} when it ran)"


def reuse_stages(base: Path, out: Path, stages: list[str]) -> None:
    """Copy the outputs of `stages` (reusable_stages) from base into out, hard links where the file system allows,
    and carry their stage records over: compute kept (the study used it), wall time 0 here (`reused_wall_s` keeps
    what it took there), `reused_from` naming base."""
    import shutil

    base = Path(base).resolve()
    base_log, log = StageLog(base), StageLog(out)
    for stage in stages:
        if stage == "pretrain" and (base / "model").is_dir():  # a given model (preset field `model`) stays put
            shutil.copytree(base / "model", out / "model", copy_function=_link_or_copy)
        elif stage == "profile":
            _link_or_copy(base / "profile.parquet", out / "profile.parquet")
        rec = base_log.get(stage)
        log.set(stage, **{**rec, "status": "done", "wall_s": 0.0, "reused_wall_s": rec.get("wall_s"),
                          "reused_from": str(base)})


def _link_or_copy(src, dst) -> None:
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_lab(preset: LabPreset, out_dir: str | os.PathLike, progress: bool = True, workers: int = 2,
            reuse: str | os.PathLike | None = None, label: str = "lab") -> dict:
    """Run (or resume) every stage; returns {stage: record} as in stages.json. With `reuse` (another lab's OUT),
    a new OUT starts from its model and profile where the preset allows (reusable_stages; the further sizes are
    never reused). `label` prefixes the progress lines."""
    p = preset.with_absolute_paths().validate()
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out_dir}: is a file; give a directory (a new one, or a lab's to resume)")
    base = Path(reuse).resolve() if reuse is not None else None
    reused: list[str] = []
    if base is not None and not (out / LAB_FILE).exists():  # an existing OUT resumes from its own outputs
        if base == out:
            raise UserError("--reuse: names the --out directory itself; give another lab's directory")
        reused = reusable_stages(p, base, out)
    out.mkdir(parents=True, exist_ok=True)
    check_lab_dir(p, out, progress)
    if reused:
        reuse_stages(base, out, reused)
        if progress:
            print(f"[lab] reusing {', '.join(reused)} from {base}", file=sys.stderr, flush=True)
    log = StageLog(out)
    view = LabProgress(estimate_seconds(p, workers), progress, label)
    dirty = False  # an earlier stage ran in this invocation: later outputs are stale
    for i, stage in enumerate(STAGES, 1):
        rest = list(STAGES[i - 1:])
        rec = log.get(stage)
        nested = stage.startswith("sweep_") or stage == "sizes"  # resumes its own work; reports what it skipped
        if not dirty and rec.get("status") == "done" and outputs_exist(stage, out, p):
            view.line(i, stage, reused_note(rec), rest[1:])
            continue
        if dirty and not nested and stage != "pretrain":
            _clear_outputs(stage, out)
        view.line(i, stage, "running", rest)
        log.set(stage, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        t0 = time.monotonic()
        try:
            info = _run_stage(stage, p, out, workers, progress)
        except BaseException:
            log.set(stage, status="failed", wall_s=rec.get("wall_s", 0.0) + time.monotonic() - t0)
            raise
        wall = time.monotonic() - t0
        prev = rec.get("wall_s", 0.0) if rec.get("status") in ("running", "failed", "extending") else 0.0
        info = {"rollouts": 0, "tokens": 0, "flops": 0.0, **info}  # every stage states its compute
        log.set(stage, status="done", wall_s=prev + wall, **info,
                finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        view.ran(stage, wall)
        view.line(i, stage, f"done in {_fmt(wall)}", rest[1:])
        if not nested or info.get("skipped_runs", 0) < info.get("runs", 0):
            dirty = True
    return log.data


def _clear_outputs(stage: str, out: Path) -> None:
    import shutil

    if stage == "profile":
        shutil.rmtree(out / "profile_parts", ignore_errors=True)
        (out / "profile.parquet").unlink(missing_ok=True)
    if stage == "curate" and (out / "sweeps").exists():
        # new sets under the same paths: finished runs of the old sets must not be reused (their run ids would
        # match), so the old sweeps are moved aside, never deleted
        os.replace(out / "sweeps", out / f"sweeps.stale.{int(time.time())}")


def _run_stage(stage: str, p: LabPreset, out: Path, workers: int, progress: bool) -> dict:
    if stage == "pretrain":
        return stage_pretrain(p, out, progress, workers)
    if stage == "profile":
        return stage_profile(p, out, workers, progress)
    if stage == "curate":
        return stage_curate(p, out)
    if stage.startswith("sweep_"):
        return stage_sweep(p, out, stage[6:], workers, progress)
    if stage == "export":
        return stage_export(out)
    if stage == "fit":
        return stage_fit(p, out, workers)
    if stage == "plan":
        return stage_plan(p, out)
    if stage == "sizes":
        return stage_sizes(p, out, workers, progress)
    return stage_report(out)
