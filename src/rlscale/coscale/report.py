"""The CoScale-RL section of `rlscale report`, built from stored records only (never from stdout).

    from rlscale.coscale.report import coscale_section
    section = coscale_section("runs/coscale_lab")   # a lab dir (OUT/coscale + OUT/grpo) or a pipeline dir

Shows the lab table (when OUT/result.json exists), pool transitions per iteration (unsolvable -> solvable -> solved),
N per partition over rollouts, and held-out accuracy vs total rollouts against the plain-GRPO baseline at equal
compute (the GRPO run store's val/avg at compute/rollouts).
"""

from __future__ import annotations

import json
from pathlib import Path

from rlscale.coscale.pipeline import CLASSES, SUMMARY_FILE
from rlscale.errors import UserError
from rlscale.html import Section, figure_png, img, kv_table, para, table


def find_dirs(out_dir: str | Path) -> tuple[Path, Path | None, Path | None]:
    """(coscale pipeline dir, plain-GRPO baseline run dir or None, lab result.json or None)."""
    root = Path(out_dir)
    if (root / "coscale" / SUMMARY_FILE).exists() or (root / "coscale" / "coscale.json").exists():
        cs = root / "coscale"
    elif (root / "coscale.json").exists():
        cs = root
    else:
        raise UserError(f"{root}: no CoScale-RL run (coscale.json) found; give the directory passed to "
                        "`rlscale coscale --out`")
    grpo = root / "grpo" if (root / "grpo" / "config.json").exists() else None
    result = root / "result.json" if (root / "result.json").exists() else None
    return cs, grpo, result


def has_coscale_run(out_dir: str | Path) -> bool:
    """Whether find_dirs(out_dir) finds a CoScale-RL run (its coscale.json or summary.json)."""
    try:
        find_dirs(out_dir)
    except UserError:
        return False
    return True


def pool_rows(summary: dict) -> list[dict]:
    """One row per iteration: class counts at the start / after SFT / at the end and the non-zero transitions."""
    rows = []
    for it in summary.get("iterations", []):
        r: dict = {"iteration": it["iteration"]}
        for when in ("pool_start", "pool_after_sft", "pool_end"):
            r[when.replace("pool_", "")] = "/".join(str(it.get(when, {}).get(c, 0)) for c in CLASSES)
        r["sft problems"] = it.get("sft_problems", 0)
        r["partitions (size@N0)"] = ", ".join(f"{p['size']}@{p['n0']}" for p in it.get("partitions", []))
        r["N final"] = ",".join(map(str, it.get("n_final", [])))
        r["transitions"] = ", ".join(f"{k}: {v}" for k, v in it.get("transitions", {}).items()
                                     if v and k.split("->")[0] != k.split("->")[1])
        r["rollouts"] = it.get("rollouts_end")
        rows.append(r)
    return rows


def baseline_curve(grpo_dir: Path | None) -> list[tuple[float, float]]:
    if grpo_dir is None:
        return []
    from rlscale.store import RunStore

    with RunStore.open(grpo_dir) as st:
        return [(float(e.get("compute/rollouts", 0.0)), float(e["val/avg"])) for e in st.evals() if "val/avg" in e]


def plot_n_timeline(summary: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    tl = summary.get("n_timeline", [])
    for key in sorted({(t["iteration"], t["partition"]) for t in tl}):
        pts = [t for t in tl if (t["iteration"], t["partition"]) == key]
        ax.step([t["rollouts"] for t in pts], [t["n"] for t in pts], where="post", marker="o",
                label=f"iter {key[0]} part {key[1]}")
    ax.set_xlabel("total rollouts spent")
    ax.set_ylabel("N (rollouts per problem)")
    ax.set_yscale("log", base=2)
    if tl:
        ax.legend(fontsize=7)
    return fig


def plot_accuracy(summary: dict, baseline: list[tuple[float, float]]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    vc = summary.get("val_curve", [])
    if vc:
        ax.errorbar([v["rollouts"] for v in vc], [v["acc"] for v in vc], yerr=[1.96 * v["stderr"] for v in vc],
                    marker="o", capsize=3, label="CoScale-RL (after each iteration; last = final SFT)")
    if baseline:
        ax.plot([b[0] for b in baseline], [b[1] for b in baseline], marker="s", label="plain GRPO")
    ax.set_xlabel("total rollouts spent")
    ax.set_ylabel("held-out accuracy (avg@n)")
    ax.legend(fontsize=7)
    return fig


def coscale_section(out_dir: str | Path) -> Section:
    """The report section for a CoScale-RL run dir or a lab comparison dir."""
    cs, grpo, result = find_dirs(out_dir)
    sec = Section("CoScale-RL")
    s_path = cs / SUMMARY_FILE
    if not s_path.exists():
        return sec.add(para(f"{cs}: the CoScale-RL run has not finished (no {SUMMARY_FILE}); re-run it to resume.",
                            "note"))
    summary = json.loads(s_path.read_text())
    if result is not None:
        r = json.loads(result.read_text())
        rows = [{"method": m, "held-out acc": r[f"{k}_acc"], "95% CI": f"[{r[f'{k}_ci'][0]:.3f}, {r[f'{k}_ci'][1]:.3f}]"}
                for m, k in (("base model", "base"), ("plain GRPO (equal rollouts)", "grpo"), ("CoScale-RL", "coscale"))]
        sec.add(table(rows, floatfmt="{:.3f}"))
        sec.add(para(f"Rollouts: CoScale-RL {r['coscale_rollouts']:.0f}, plain GRPO {r['grpo_rollouts']:.0f}; "
                     f"held-out {r['heldout_problems']} problems x {r['heldout_n']} samples. Bar (CoScale >= 2x base, "
                     f"GRPO within 2 points of base): {'met' if r.get('bar_met') else 'not met'}."))
    sec.add(para(f"Budget {summary['budget_rollouts']} rollouts, spent {summary['rollouts']} (GRPO + pool "
                 f"evaluations + harvests). Pool classes are written unsolvable/solvable/solved."))
    sec.add(table(pool_rows(summary)))
    figs = [img(figure_png(plot_n_timeline(summary)), "N per partition over rollouts (doubling on reward plateaus)"),
            img(figure_png(plot_accuracy(summary, baseline_curve(grpo))),
                "Held-out accuracy vs total rollouts (error bars: 95% normal CI)")]
    sec.add('<div class="grid">' + "".join(figs) + "</div>")
    sec.add(kv_table({"final model": summary["final_model"], "collected problems": summary["collected_problems"],
                      "collected solutions": summary["collected_solutions"],
                      "final held-out acc": summary["val_final"]["acc"],
                      "final held-out 95% CI": summary["val_final"]["ci95"]}))
    return sec
