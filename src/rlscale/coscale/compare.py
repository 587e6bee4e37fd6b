"""The data-scaling comparison of CoScale-RL at lab scale (`rlscale coscale-compare`): P problems x M solutions
("deep") vs P*M problems x 1 solution ("wide") at an equal number of SFT solutions (equal SFT tokens up to the
problems' lengths; both token counts are reported), each followed by a short GRPO run on its own problems.

Problems are Hard arith problems (>= min_steps steps) that admit >= M distinct worked solutions (the same steps in
the same order, each + or * step writing its substituted operands in either order: rlscale.tasks.arith.solutions),
so both arms draw from the same distribution; the deep arm's P problems
are the first P of the wide arm's. Reported per arm and phase (after SFT, after RL): pass@1 and pass@16 with 95%
bootstrap CIs on (a) the arm's own training problems, (b) the P shared problems, (c) held-out Hard problems.

    OUT/sets/{deep,wide,heldout}.jsonl   OUT/{deep,wide}/{sft,grpo}/   OUT/evals/*.json   OUT/result.json
    OUT/compare.png

Measured on the quick lab's s model (`rlscale coscale-compare --model LAB/model --out D --json`, own-problem pass@16
after SFT + 20 GRPO steps, deep - wide with its 95% CI): the defaults (P 64, M 8, SFT lr 1e-3, 10 epochs; ~3.5 min)
seed 0 +0.229 [+0.133, +0.330], seed 1 +0.194 [+0.113, +0.280]: the paper's direction, while the deep arm's held-out
Hard pass@1 falls to 0.03 (wide 0.14-0.16, base 0.15). Where SFT has not fit its data the direction is not resolved:
P 32, lr 3e-4, 3 epochs -0.10 [-0.31, +0.10] (the deep arm's own pass@1 0.068, below the base's 0.121); P 64, lr
1e-3, 3 epochs +0.07 [-0.08, +0.23]; P 32, lr 1e-3, 10 epochs +0.27 [+0.19, +0.36] (seed 0) and +0.10 [-0.04,
+0.21] (seed 1); at 30 epochs both arms reach the pass@16 ceiling (+0.03 [0.00, +0.07]; pass@1 0.83 vs 0.56).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rlscale.errors import UserError
from rlscale.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl


@dataclass(frozen=True)
class CompareConfig:
    model: str = ""
    """initial policy (a lab checkpoint)"""
    problems: int = 64
    """P: problems of the deep arm"""
    solutions_per_problem: int = 8
    """M: solutions per problem of the deep arm (the wide arm has P*M problems x 1 solution)"""
    min_steps: int = 5
    """Hard = arith problems with at least this many steps"""
    heldout: int = 100
    """held-out Hard problems (arith val split)"""
    train_eval_limit: int = 100
    """at most this many of an arm's own training problems are evaluated"""
    eval_n: int = 16
    """samples per problem (pass@1 and pass@16 need >= 16)"""
    sft_lr: float = 1e-3
    """SFT learning rate"""
    sft_epochs: float = 10.0
    """SFT passes over the (equal-sized) data (enough for SFT to fit it: at 3 passes of 3e-4 the deep arm's own
    pass@1 fell below the base model's)"""
    rl_steps: int = 20
    """short GRPO after SFT (0 = SFT only)"""
    rl_n: int = 8
    """GRPO rollouts per problem"""
    rl_problems_per_batch: int = 8
    """GRPO problems per step"""
    rl_lr: float = 1e-4
    """GRPO learning rate"""
    max_new_tokens: int = 128
    """generation budget"""
    seed: int = 0
    """seed of data order, sampling and the evaluations"""

    def validate(self) -> CompareConfig:
        if not self.model or not Path(self.model).is_dir():
            raise UserError(f"--model {self.model!r}: not a directory; pass a lab checkpoint")
        if self.problems < 1 or self.solutions_per_problem < 2:
            raise UserError("need --problems >= 1 and --solutions-per-problem >= 2")
        if self.eval_n < 16:
            raise UserError(f"--eval-n {self.eval_n}: pass@16 needs >= 16 samples per problem")
        if self.heldout < 1 or self.train_eval_limit < 1 or self.rl_steps < 0:
            raise UserError("need --heldout >= 1, --train-eval-limit >= 1, --rl-steps >= 0")
        if self.rl_n < 2 or self.rl_problems_per_batch < 1 or self.sft_epochs <= 0 or self.sft_lr <= 0:
            raise UserError("need --rl-n >= 2, --rl-problems-per-batch >= 1, --sft-epochs > 0, --sft-lr > 0")
        return self


def build_sets(cfg: CompareConfig, out: Path) -> dict[str, str]:
    """deep.jsonl / wide.jsonl (SFT rows: problem_id, question, solution), their problem files, heldout.jsonl."""
    from rlscale.tasks.arith import load_arith, solutions

    d = out / "sets"
    files = {k: str(d / f"{k}.jsonl") for k in ("deep_sft", "wide_sft", "deep", "wide", "shared", "heldout")}
    if all(Path(f).exists() for f in files.values()):
        return files
    P, M = cfg.problems, cfg.solutions_per_problem
    chosen, sols = [], {}
    for p in load_arith("train"):
        if p.meta.get("steps", 0) < cfg.min_steps:
            continue
        s = solutions(p, M, seed=cfg.seed)
        if len(s) >= M:
            chosen.append(p)
            sols[p.id] = s
        if len(chosen) == P * M:
            break
    if len(chosen) < P * M:
        raise UserError(f"only {len(chosen)} Hard problems with >= {M} distinct solutions; lower --problems or "
                        "--solutions-per-problem")
    rows = lambda ps: [{"id": p.id, "question": p.question, "answer": p.answer, "meta": dict(p.meta)}  # noqa: E731
                       for p in ps]
    held = [p for p in load_arith("val") if p.meta.get("steps", 0) >= cfg.min_steps][:cfg.heldout]
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(files["deep_sft"], [{"problem_id": p.id, "question": p.question, "solution": s}
                                           for p in chosen[:P] for s in sols[p.id]])
    atomic_write_jsonl(files["wide_sft"], [{"problem_id": p.id, "question": p.question, "solution": sols[p.id][0]}
                                           for p in chosen])
    atomic_write_jsonl(files["deep"], rows(chosen[:P]))
    atomic_write_jsonl(files["shared"], rows(chosen[:P]))
    atomic_write_jsonl(files["wide"], rows(chosen))
    atomic_write_jsonl(files["heldout"], rows(held))
    return files


def pass_table(cfg: CompareConfig, out: Path, name: str, model: str, problems_file: str, limit: int | None,
               progress: bool) -> dict:
    """pass@1 and pass@16 (unbiased, eval_n samples) with 95% bootstrap CIs; cached in OUT/evals/NAME.json."""
    f = out / "evals" / f"{name}.json"
    if f.exists():
        return json.loads(f.read_text())
    import numpy as np

    from rlscale.engine.base import SamplingParams
    from rlscale.evals import metrics
    from rlscale.evals.evaluate import evaluate
    from rlscale.models import load_policy
    from rlscale.prompts import stop_strings
    from rlscale.tasks.arith import load_arith

    probs = load_arith("train", data_path=problems_file, limit=limit)
    policy = load_policy(model)
    policy.module.eval()
    params = SamplingParams(n=cfg.eval_n, temperature=1.0, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
                            stop=stop_strings("plain"), seed=cfg.seed + 77)
    res = evaluate(probs, policy.sampler(), template="plain", params=params, modes=("flexible",), progress=False)
    n = np.array([r["n"] for r in res.records])
    c = np.array([r["modes"]["flexible"]["correct"] for r in res.records])
    r: dict = {"problems": len(probs)}
    for k in (1, 16):
        per = metrics.pass_at_k(n, c, k)
        r[f"pass@{k}"] = float(per.mean())
        r[f"pass@{k}_ci"] = list(metrics.bootstrap_ci(per, seed=0))
        r[f"pass@{k}_per_problem"] = per.tolist()
    atomic_write_json(f, r)
    if progress:
        print(f"coscale-compare: {name}: pass@1 {r['pass@1']:.3f} pass@16 {r['pass@16']:.3f}", file=sys.stderr)
    return r


def plot(result: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, where in zip(axes, ("own", "shared", "heldout")):
        labels, xs = [], 0
        for metric, hatch in (("pass@1", ""), ("pass@16", "//")):
            for arm, color in (("deep", "C0"), ("wide", "C1")):
                for phase in ("sft", "rl"):
                    e = result["arms"][arm].get(phase, {}).get(where)
                    if e is None:
                        continue
                    lo, hi = e[f"{metric}_ci"]
                    ax.bar(xs, e[metric], color=color, hatch=hatch, alpha=0.55 if phase == "sft" else 0.95,
                           yerr=[[e[metric] - lo], [hi - e[metric]]], capsize=3)
                    labels.append(f"{arm}\n{phase}\n{metric}")
                    xs += 1
        ax.set_xticks(range(len(labels)), labels, fontsize=6)
        ax.set_title({"own": "own training problems", "shared": "the P shared problems",
                      "heldout": "held-out Hard problems"}[where], fontsize=9)
    axes[0].set_ylabel("pass@k (95% bootstrap CI)")
    fig.suptitle(f"deep = {result['P']} problems x {result['M']} solutions; wide = {result['P'] * result['M']} x 1",
                 fontsize=9)
    return fig


def run_compare(cfg: CompareConfig, out_dir: str | Path, progress: bool = True) -> dict:
    from rlscale.evals import metrics
    from rlscale.html import figure_png
    from rlscale.rl.grpo import GRPOConfig, train
    from rlscale.sft.sft import SFTConfig, train_sft

    cfg.validate()
    out = Path(out_dir)
    cf = out / "compare.json"
    if cf.exists() and json.loads(cf.read_text()) != asdict(cfg):
        raise UserError(f"{out}: holds a comparison with a different config; use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cf, asdict(cfg))
    files = build_sets(cfg, out)
    result: dict = {"P": cfg.problems, "M": cfg.solutions_per_problem, "arms": {}, "config": asdict(cfg)}
    base = {w: pass_table(cfg, out, f"base_{w}", cfg.model, files[f], cfg.train_eval_limit, progress)
            for w, f in (("shared", "shared"), ("heldout", "heldout"))}
    result["base"] = base
    for arm in ("deep", "wide"):
        s = train_sft(SFTConfig(model=cfg.model, data=files[f"{arm}_sft"], epochs=cfg.sft_epochs, lr=cfg.sft_lr,
                                seed=cfg.seed), out / arm / "sft", resume=True, progress=progress)
        models = {"sft": s["model_dir"]}
        if cfg.rl_steps:
            g = GRPOConfig(model=s["model_dir"], task="arith", train_set=files[arm], val_set=files["heldout"],
                           rollouts_per_problem=cfg.rl_n, problems_per_batch=cfg.rl_problems_per_batch,
                           iterations=cfg.rl_steps, lr=cfg.rl_lr, reward="flexible",
                           max_new_tokens=cfg.max_new_tokens, val_every=0, val_n=1, val_limit=1, seed=cfg.seed,
                           checkpoint_every=max(1, cfg.rl_steps))
            gs = train(g, out / arm / "grpo", resume=True, progress=progress)
            models["rl"] = str(out / arm / "grpo" / "model")
            result.setdefault("rl_rollouts", {})[arm] = gs["rollouts"]
        a: dict = {"sft_examples": s["examples"], "sft_tokens": s["tokens"]}
        for phase, m in models.items():
            a[phase] = {w: pass_table(cfg, out, f"{arm}_{phase}_{w}", m, files[f], cfg.train_eval_limit, progress)
                        for w, f in (("own", arm), ("shared", "shared"), ("heldout", "heldout"))}
        result["arms"][arm] = a
    last = "rl" if cfg.rl_steps else "sft"
    d, w = result["arms"]["deep"][last], result["arms"]["wide"][last]
    result["summary"] = {
        "phase": last,
        "deep_own_pass@16": d["own"]["pass@16"], "deep_own_pass@16_ci": d["own"]["pass@16_ci"],
        "wide_own_pass@16": w["own"]["pass@16"], "wide_own_pass@16_ci": w["own"]["pass@16_ci"],
        "deep_own_pass@1": d["own"]["pass@1"], "wide_own_pass@1": w["own"]["pass@1"],
        "deep_heldout_pass@1": d["heldout"]["pass@1"], "deep_heldout_pass@1_ci": d["heldout"]["pass@1_ci"],
        "wide_heldout_pass@1": w["heldout"]["pass@1"], "wide_heldout_pass@1_ci": w["heldout"]["pass@1_ci"],
        "deep_heldout_pass@16": d["heldout"]["pass@16"], "wide_heldout_pass@16": w["heldout"]["pass@16"],
        "sft_tokens_ratio_deep_over_wide": result["arms"]["deep"]["sft_tokens"] / result["arms"]["wide"]["sft_tokens"],
    }
    # the paper's direction: the deep arm's own training problems reach a higher pass@16 than the wide arm's; judged
    # by the 95% CI of the difference (the two arms' problems are independent sets, resampled separately)
    diff = d["own"]["pass@16"] - w["own"]["pass@16"]
    diff_ci = list(metrics.bootstrap_diff_ci(d["own"]["pass@16_per_problem"], w["own"]["pass@16_per_problem"]))
    result["summary"].update({
        "own_pass@16_deep_minus_wide": diff, "own_pass@16_deep_minus_wide_ci": diff_ci,
        "direction": ("reproduced" if diff_ci[0] > 0 else "reversed" if diff_ci[1] < 0 else "unresolved"),
        "direction_reproduced": diff_ci[0] > 0,
    })
    atomic_write_bytes(out / "compare.png", figure_png(plot(result)))
    result["plot"] = str(out / "compare.png")
    atomic_write_json(out / "result.json", result)
    return result
