"""`rlscale report DIR`: a self-contained HTML page (PNG figures embedded, no network) built from the store alone.

DIR is a lab directory (`rlscale lab --out DIR`: lab.json, stages.json, profile.parquet, sets/, sweeps/, fits/,
plan.json) or a plain sweep directory (`rlscale sweep run --out DIR`: the sweep/fit sections only; the fit is read
from DIR/fit/fit.json when present, else computed here from the sweep's run stores).

Every number is read from the stored records: validation curves and diagnostics from the run stores (run.db, via
rlscale.sweep.export / rlscale.store), fitted curves from fit.json, compute from stages.json, the prescription from
plan.json. Nothing is taken from stdout or from inside a training loop. The statement about n*(C) is computed from
the fits (`n_star_evidence`) and worded from its numbers, twice: the frontier's argmax n* compared between the first
compute every n has and C_max, and the iso-FLOP-profile vertex (`_isoflop_evidence`) compared between the learning
onset and C_max with a two-sided CI calibrated on simulated sweeps (scripts/nstar_calibration.py). The CoScale-RL
section (rlscale.coscale.report, from its summary.json / result.json / plain-GRPO run store) is appended when DIR/coscale exists (`rlscale coscale --preset
lab-quick --out DIR/coscale`) or when `--coscale CSDIR` names a run. Tests: tests/test_report.py,
tests/test_report_browser.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from rlscale.errors import UserError
from rlscale.html import Section, figure_png, img, kv_table, page, para, plain_text, table
from rlscale.lab.pipeline import PAPER_HARD_BOUNDS, PRESETS, REPORT_FILE, SIZES_DIR, STAGES, SUMMARY_TEXT_FILE

PAPER_HARD = "study's hard"
"""the bucket name of the study's Hard bounds when the lab's Hard set has other bounds (profile figure and notes)"""

X = "compute/rollouts"
Y = "val/avg"
COSCALE_SUBDIR = "coscale"  # `rlscale coscale --preset lab-quick --out LABDIR/coscale` puts the CoScale-RL lab here


# ------------------------------------------------------------------------------------------------ evidence (pure)
def _frontier_n_star(params_by_n: dict, C: np.ndarray, c_first: dict | None = None) -> np.ndarray:
    from rlscale.scaling.isocompute import frontier

    return frontier(params_by_n, C, c_first)["n_star"].to_numpy(float)


def _saturation_C(C: np.ndarray, n_star: np.ndarray) -> float:
    """Smallest C from which the frontier's n* stays at its value at the largest C."""
    last = n_star[-1]
    i = len(n_star) - 1
    while i > 0 and n_star[i - 1] == last:
        i -= 1
    return float(C[i])


def n_star_evidence(fit: dict, level: float | None = None, grid: int = 120) -> dict:
    """Does n*(C) rise with C over the fitted range, and where does it saturate? From a fit.json dict.

    Point estimates come from the stored frontier; uncertainty from the stored joint bootstrap samples of the
    per-n sigmoids (sample i of every n is one resample): for each resample the frontier is recomputed and n* read
    at the smallest and largest fitted compute. Returns n_lo, n_hi, C_lo, C_hi, C_sat (start of the final n*),
    rise_frac / fall_frac (share of resamples with n*(C_hi) > / < n*(C_lo)), CIs of log2(n_hi / n_lo), n_hi and
    C_sat, the n* sigmoid's plateau 2^A with its CI, the RL gain (the largest per-n fitted rise R_n(C_hi) -
    R_n(C_lo), with its CI), the measured gain (the largest per-n mean over runs of last - first validation, with a
    run-resampling CI; from the fit's `measured_gains`) and the verdict: rises | falls | flat | no-rise | no-fall
    (one-sided: n*(C_max) <= or >= n*(C_min) in >= level of the resamples) | unresolved, or no-gain when the fitted
    or the measured gain's CI reaches down to 0 (RL moved no allocation on this set: there is no compute-optimal n
    to speak of, whatever the noise picks). The measured gain guards against the record-breaking envelope, which
    rises on flat noisy curves by the running maximum of the noise.

    With k runs per n, a bootstrap that resamples them understates every interval by ~small_sample_widening(k)
    (1.44 for k = 6; on the full lab's sweeps disjoint 6-seed halves disagreed by 1.48x their own bootstrap spread),
    so the levels `level` names are kept by widening continuous draws (gains, iso-FLOP n*, allocation gaps) and by
    reading the discrete argmax n* at expanded levels (`one_sided_level` for its verdict; isocompute.expanded_level).
    """
    from rlscale.scaling.isocompute import expanded_level, fit_widening, joint_resamples, widen

    level = level or fit.get("ci_level", 0.95)
    q = (1.0 - level) / 2.0
    C_lo, C_hi = (float(v) for v in fit["x_range"])
    per_n = {float(k): v for k, v in fit["per_n"].items()}
    # compare n* only where every swept n has data: below the first step of the largest n, n* would be the
    # smaller n by construction (the larger allocation does not exist there), which is no evidence of a rise
    c_first = {n: float(v["C_first"]) for n, v in per_n.items() if v.get("C_first") is not None} or None
    if c_first:
        C_lo = min(max(C_lo, max(c_first.values())), C_hi)
    C = np.geomspace(C_lo, C_hi, grid)
    point = {n: v["params"] for n, v in per_n.items()}
    ns_point = _frontier_n_star(point, C, c_first)
    gain = _rl_gain(point, C_lo, C_hi)
    out = {"C_lo": C_lo, "C_hi": C_hi, "n_lo": float(ns_point[0]), "n_hi": float(ns_point[-1]),
           "C_sat": _saturation_C(C, ns_point), "level": level, "n_bootstrap": 0,
           "plateau_n": 2.0 ** float(fit["params"]["A"]), "start_n": 2.0 ** float(fit["params"]["R0"]),
           "n_max_swept": max(per_n), "n_min_swept": min(per_n), "gain": gain,
           "point_bootstrap": sorted(n for n, v in per_n.items() if v.get("bootstrap_unit") == "points")}
    # every interval below comes from resampling a few runs per n, which understates it: continuous draws are
    # widened about the point estimate by the small-sample factor (isocompute.small_sample_widening; 1.44 for 6
    # runs), discrete ones read at the matching expanded levels (isocompute.expanded_level)
    f, k = fit_widening(per_n, level)
    out.update({"widening": f, "runs_per_n": k, "seed_stability": fit.get("seed_stability")})
    ci_A, A = (fit.get("ci") or {}).get("A"), float(fit["params"]["A"])
    out["plateau_n_ci"] = [2.0 ** float(widen(c, A, f)) for c in ci_A] if ci_A else None
    out.update(_measured_gain(per_n, level, int(fit.get("n_bootstrap") or 0) or 1000, int(fit.get("seed", 0)), f))
    samples = {n: np.asarray(v.get("bootstrap_samples") or [], float) for n, v in per_n.items()}
    B = min((len(s) for s in samples.values()), default=0)
    if B:
        lo, hi, sat, gains = np.empty(B), np.empty(B), np.empty(B), np.empty(B)
        names = ("R0", "A", "C_mid", "B")
        for i in range(B):
            params = {n: dict(zip(names, s[i])) for n, s in samples.items()}
            ns = _frontier_n_star(params, C, c_first)
            lo[i], hi[i], sat[i] = ns[0], ns[-1], _saturation_C(C, ns)
            gains[i] = _rl_gain(params, C_lo, C_hi)
        gains = widen(gains, gain, f)
        ratio = np.log2(hi / lo)
        # the argmax n* takes grid values (widening would move its ties): its intervals and one-sided shares are
        # read at the expanded levels instead
        ql, qh, one_sided = expanded_level(q, k), expanded_level(1 - q, k), expanded_level(level, k)
        out.update({"n_bootstrap": B, "rise_frac": float(np.mean(hi > lo)), "fall_frac": float(np.mean(hi < lo)),
                    "one_sided_level": one_sided,
                    "log2_ratio_ci": [float(np.quantile(ratio, ql)), float(np.quantile(ratio, qh))],
                    "n_hi_ci": [float(np.quantile(hi, ql)), float(np.quantile(hi, qh))],
                    "C_sat_ci": [float(np.quantile(sat, ql)), float(np.quantile(sat, qh))],
                    "n_hi_samples": hi.tolist(),
                    "gain_ci": [float(np.quantile(gains, q)), float(np.quantile(gains, 1 - q))]})
        no_gain = out["gain_ci"][0] <= 0.0 or out.get("measured_gain_ci", [np.inf])[0] <= 0.0
        resamples = joint_resamples(samples)  # the usable ones, shared by the iso-FLOP and near-optimal reads
        if len(per_n) >= 3:
            out["isoflop"] = _isoflop_evidence(point, resamples, C, level, no_gain, f)
        out["near_optimal"] = _near_optimal(point, resamples, out, level, c_first, f)
        if no_gain:
            out["verdict"] = "no-gain"
        elif out["rise_frac"] >= one_sided:
            out["verdict"] = "rises"
        elif out["fall_frac"] >= one_sided:
            out["verdict"] = "falls"
        elif np.mean(hi == lo) >= one_sided:
            out["verdict"] = "flat"
        elif np.mean(hi <= lo) >= one_sided:  # one-sided: neither 'falls' nor 'flat' alone, but no rise
            out["verdict"] = "no-rise"
        elif np.mean(hi >= lo) >= one_sided:
            out["verdict"] = "no-fall"
        else:
            out["verdict"] = "unresolved"
    else:
        out["verdict"] = ("rises" if out["n_hi"] > out["n_lo"] else "falls" if out["n_hi"] < out["n_lo"]
                          else "flat") + " (point estimate, no bootstrap)"
    return out


ISO_TOLERANCE = 0.5
"""|log2 n*(C_max) / n*(C_on)| below which the iso-FLOP estimate calls n* unchanged (a factor sqrt 2)"""
ONSET_FRAC = 0.1
"""the iso-FLOP comparison starts where the frontier has made this share of its rise (isocompute.learning_onset)"""


def _isoflop_evidence(point: dict, resamples: list[dict], C: np.ndarray, level: float, no_gain: bool,
                      widening: float = 1.0) -> dict:
    """n*(C) by the iso-FLOP-profile vertex (isocompute.isoflop_n_star), compared between the learning onset C_on
    (where the frontier has made ONSET_FRAC of its rise; below it every n ties at the base reward) and C_max, per
    joint resample (each resample its own onset). Verdict on the two-sided `level` CI [lo, hi] of d = log2
    n*(C_max) / n*(C_on): rises when lo > 0, falls when hi < 0, flat when it lies within +-ISO_TOLERANCE, no-rise
    when hi < ISO_TOLERANCE, no-fall when lo > -ISO_TOLERANCE, else unresolved; no-gain as the argmax verdict.

    Two-sided, not the argmax verdict's one-sided share, because the joint run bootstrap is too narrow at the onset
    (5 runs per n; n* there is noisy). Calibrated on simulated lab-like sweeps with a known n*(C) (scripts/
    nstar_calibration.py: 5 n x 5 runs, 14 validation points, noise 0.012 per point + 0.004 per run, 200
    resamples): with n* = 4 or n* = 2 at every C, 'rises' in 0 of 60 sweeps and 'falls' in 3 of 60 (n* = 2 with
    larger n learning later, `null2d`: neither in 30); with the full lab's fitted Easy curves as the truth (n* 2 ->
    ~7), 'rises' in 7 of 30 and 'no-fall' in 11, where the argmax verdict called 'rises' in 0 of 30 (`--sweeps 30
    --scenarios null4,null2,null2d,lab --workers 1`, ~11 min). That is with the resampled C_on and n* widened about
    the point ones by `widening` (in log space, within the swept range; 1.58x for 5 runs): before it (stop 28 and
    earlier) the same simulation gave 'falls' in 5 of 60 null sweeps and 'rises' in 21 of 30 lab sweeps, i.e. the
    narrower intervals bought power with false 'falls'. Without usable resamples: the point estimates and verdict
    'unresolved'."""
    from rlscale.scaling.isocompute import curves, isoflop_n_star, learning_onset, widen_ratio

    def one(params: dict) -> tuple[float, float, float]:
        """(C_on, n* at C_on, n* at C_max) of one set of per-n curves."""
        ns, R = curves(params, C)
        v = isoflop_n_star(R, ns)
        j = learning_onset(C, R.max(axis=0), ONSET_FRAC)
        return float(C[j]), float(v[j]), float(v[-1])

    q = (1.0 - level) / 2.0
    C_on, n_on, n_hi = one(point)
    out = {"C_on": C_on, "n_on": n_on, "n_hi": n_hi, "onset_frac": ONSET_FRAC, "tolerance": ISO_TOLERANCE,
           "verdict": "unresolved"}
    if not resamples:
        return out
    draws = np.array([one(params) for params in resamples])
    span = (min(point), max(point))
    for j, v, bounds in ((0, C_on, (C[0], C[-1])), (1, n_on, span), (2, n_hi, span)):
        draws[:, j] = widen_ratio(draws[:, j], v, widening, bounds)
    d = np.log2(draws[:, 2] / draws[:, 1])
    ci = lambda a: [float(np.quantile(a, q)), float(np.quantile(a, 1 - q))]  # noqa: E731
    out.update({"n_resamples": len(resamples), "rise_frac": float(np.mean(d > 0)), "fall_frac": float(np.mean(d < 0)),
                "log2_ratio_ci": ci(d), "C_on_ci": ci(draws[:, 0]), "n_on_ci": ci(draws[:, 1]),
                "n_hi_ci": ci(draws[:, 2]), "n_hi_samples": draws[:, 2].tolist()})
    lo, hi = out["log2_ratio_ci"]
    tol = ISO_TOLERANCE
    out["verdict"] = ("no-gain" if no_gain else "rises" if lo > 0 else "falls" if hi < 0 else
                      "flat" if -tol < lo and hi < tol else "no-rise" if hi < tol else "no-fall" if lo > -tol else
                      "unresolved")
    return out


def _near_optimal(point: dict, resamples: list[dict], ev: dict, level: float, c_first: dict | None,
                  widening: float = 1.0) -> list[dict]:
    """isocompute.allocation_gaps at C_min (every n has data), the iso-FLOP learning onset (when there is one
    inside the range) and C_max: per compute point the best n, the n the data cannot tell from it and each n's
    gap to it with its interval (JSON-ready)."""
    from rlscale.scaling.isocompute import allocation_gaps

    where = {"C_min": ev["C_lo"], "C_max": ev["C_hi"]}
    C_on = (ev.get("isoflop") or {}).get("C_on")
    if C_on is not None and ev["C_lo"] * 1.01 < C_on < ev["C_hi"] / 1.01:
        where = {"C_min": ev["C_lo"], "onset": float(C_on), "C_max": ev["C_hi"]}
    g = allocation_gaps(point, resamples, np.array(list(where.values())), level, c_first, widening)
    return [{"at": name, "C": float(g["C"][j]), "best_n": float(g["best_n"][j]),
             "near": [float(n) for n in g["near_optimal"][j]],
             "gaps": {str(float(n)): [float(g["gap"][i, j]), float(g["lo"][i, j]), float(g["hi"][i, j])]
                      for i, n in enumerate(g["ns"]) if np.isfinite(g["gap"][i, j])}}
            for j, name in enumerate(where)]


def headline(evidence: dict) -> str:
    """The summary's opening line: 'In short: ' + verdicts(evidence)."""
    return "In short: " + verdicts(evidence)


def hard_bucket_pointer(hard_bounds: tuple, ev_hard: dict | None) -> str:
    """For a lab whose Hard set is the study's bucket and gained nothing: where the presets take a Hard set instead
    (appended to the headline, which `rlscale lab` prints); '' otherwise."""
    if tuple(hard_bounds) != PAPER_HARD_BOUNDS or (ev_hard or {}).get("verdict") != "no-gain":
        return ""
    lo, hi = PRESETS["full"].hard_bounds  # quick_hard.json's too (tests/test_lab.py)
    return (f" This Hard set is the study's bucket, avg@16 in [{PAPER_HARD_BOUNDS[0]:g}, {PAPER_HARD_BOUNDS[1]:g}] "
            "(the difficulty profile compares its pass rate with chance); the full preset and "
            f"examples/lab/quick_hard.json take one above it, hard_bounds [{lo:g}, {hi:g}].")


def stability_counts(st: dict, key: str) -> tuple[int, int, dict[str, list[int]]]:
    """(refits agreeing with the full fit's verdict `key` ('verdict' or 'isoflop'), refits, {other verdict: the
    seeds whose removal gave it}) from a fit's leave-one-seed-out record (lab.pipeline.leave_one_seed_out)."""
    drops = st.get("drops") or []
    changed: dict[str, list[int]] = {}
    for d in drops:
        if d.get(key) != st.get(key):
            changed.setdefault(str(d.get(key)), []).append(int(d["seed"]))
    return len(drops) - sum(len(v) for v in changed.values()), len(drops), changed


def _agree(st: dict | None, key: str) -> str:
    """'; k of m refits without one seed agree' for the headline, or ''."""
    if not st or not st.get("drops") or st.get(key) is None:
        return ""
    k, m, _ = stability_counts(st, key)
    return f"; {k} of {m} refits without one seed agree"


def stability_sentence(ev: dict) -> str:
    """The leave-one-seed-out check in words (from the fit's seed_stability record), or '' without one."""
    st = ev.get("seed_stability")
    if not st or not st.get("drops"):
        return ""
    parts = []
    for key, label in (("verdict", "the frontier-argmax verdict"), ("isoflop", "the iso-FLOP verdict")):
        if st.get(key) is None:
            continue
        k, m, changed = stability_counts(st, key)
        text = f"{label} ({st[key]}) holds in {k} of {m}"
        if changed:
            text += " (" + "; ".join(f"{v} without seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))}"
                                     for v, ss in changed.items()) + ")"
        parts.append(text)
    frail = any(stability_counts(st, key)[2] for key in ("verdict", "isoflop") if st.get(key) is not None)
    return (f"Leave-one-seed-out check (the fit and its verdicts redone without each of the {len(st['seeds'])} seeds "
            "in turn): " + "; ".join(parts) + "." +
            (" A verdict that the removal of one seed changes rests on that seed: a lab with other seeds may not "
             "repeat it." if frail else ""))


def verdicts(evidence: dict) -> str:
    """One sentence per set from its n_star_evidence: the verdicts (argmax and iso-FLOP) and the near-optimal n at
    the first and last compute point, or that RL gained nothing; the paragraphs below give the numbers behind it."""
    def braces(ns) -> str:
        return "{" + ", ".join(_n(n) for n in ns) + "}"

    parts = []
    for name, ev in evidence.items():
        if ev.get("verdict") == "no-gain":
            parts.append(f"{name.capitalize()}: RL raised no validation reward at any n, so there is no "
                         "compute-optimal n to place")
            continue
        iso = (ev.get("isoflop") or {}).get("verdict")
        st = ev.get("seed_stability")
        text = (f"{name.capitalize()}: n*(C) {ev['verdict']} (frontier argmax{_agree(st, 'verdict')})"
                + (f", {iso} (iso-FLOP{_agree(st, 'isoflop')})" if iso else ""))
        rows = ev.get("near_optimal") or []
        if rows and ev.get("n_bootstrap"):
            text += (f"; near-optimal n {braces(rows[0]['near'])} at C = {_g(rows[0]['C'])}, "
                     f"{braces(rows[-1]['near'])} at C_max = {_g(rows[-1]['C'])}")
        parts.append(text)
    return ". ".join(parts) + "."


def selection_sentence(fit: dict) -> str:
    """Which value of a swept setting (the lr grid) each n kept, with every value's final mean (from fit.json)."""
    sel = fit["selected"]
    parts = []
    for n, v in sorted(sel["by_n"].items(), key=lambda kv: float(kv[0])):
        finals = ", ".join(f"{float(k):g}: {m:.4f}" for k, m in sorted(v["final"].items(), key=lambda kv: float(kv[0])))
        parts.append(f"n = {_n(float(n))} at {sel['column']} {v['chosen']:g} ({finals})")
    return (f"Each n is compared at its own best {sel['column']} of the swept grid (the highest mean final validation "
            f"{fit.get('y', Y)} at its largest budget; the fits, tables and diagnostics below use those runs only; "
            "the choice is made once, so the intervals leave out its selection noise): " + "; ".join(parts) + ".")


def near_optimal_sentence(name: str, ev: dict) -> str:
    """The allocations the data cannot tell from the best, at C_min / onset / C_max, in words ('' without them)."""
    rows = ev.get("near_optimal")
    if not rows or not ev.get("n_bootstrap") or ev.get("verdict") == "no-gain":
        return ""
    pct = f"{round(100 * ev['level'])}%"
    label = {"C_min": "where every n has data", "onset": "at the learning onset", "C_max": "at C_max"}
    parts = []
    for r in rows:
        near = ", ".join(_n(n) for n in r["near"])
        parts.append(f"C = {_g(r['C'])} ({label[r['at']]}): n in {{{near}}} (best {_n(r['best_n'])})")
    last = rows[-1]
    costs = [f"n = {_n(float(k))} {-v[0]:.3f} lower ({pct} CI [{-v[2]:.3f}, {-v[1]:.3f}])"
             for k, v in sorted(last["gaps"].items(), key=lambda kv: float(kv[0])) if float(k) not in last["near"]]
    text = (f"{name}: allocations the data cannot tell from the best one (each n's fitted reward minus the best n's, "
            f"{pct} interval from the same joint resamples, reaching 0): " + "; ".join(parts) + ".")
    if costs:
        text += " Outside that set at C_max: " + ", ".join(costs) + "."
    if len(last["near"]) > 1:
        text += (f" The optimum at C_max is a plateau over {len(last['near'])} swept n, so an n* read as a single "
                 "argmax or vertex there is placed within it by noise.")
    return text


def _measured_gain(per_n: dict, level: float, B: int, seed: int, widening: float = 1.0) -> dict:
    """max_n of the mean over runs of (last - first validation), and its CI from resampling each n's runs (widened
    about the point estimate by `widening`, the small-sample factor) plus the sampling error of the before-training
    value the runs share (`initial_stderr`: one normal draw per resample, common to every n, since every n starts
    from that one measurement); {} when the fit stored no measured gains (fits written before they were)."""
    from rlscale.scaling.isocompute import widen

    gains = {n: np.asarray(v.get("measured_gains") or [], float) for n, v in per_n.items()}
    if not gains or any(g.size == 0 for g in gains.values()):
        return {}
    rng = np.random.default_rng(seed)
    point = max(float(g.mean()) for g in gains.values())
    draws = np.max([rng.choice(g, (B, g.size)).mean(axis=1) for g in gains.values()], axis=0)  # (B,)
    draws = widen(draws, point, widening)
    se0 = max(float(v.get("initial_stderr") or 0.0) for v in per_n.values())
    if se0 > 0:
        draws = draws - rng.normal(0.0, se0, B)
    q = (1.0 - level) / 2.0
    return {"measured_gain": point,
            "measured_gain_ci": [float(np.quantile(draws, q)), float(np.quantile(draws, 1 - q))],
            "measured_gain_by_n": {float(n): float(g.mean()) for n, g in gains.items()},
            "initial_stderr": se0}


def _rl_gain(params_by_n: dict, C_lo: float, C_hi: float) -> float:
    """The largest fitted rise of validation reward over the compared compute range: max_n R_n(C_hi) - R_n(C_lo).
    (Not against R0, the sigmoid's C -> 0 limit: that is an extrapolation below the data.)"""
    from rlscale.scaling.laws import sigmoid_law

    C = np.asarray([C_lo, C_hi], float)
    return max(float(np.diff(sigmoid_law(C, **p))[0]) for p in params_by_n.values())


def _g(x: float) -> str:
    return f"{x:.3g}"


def _n(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.2f}"


def evidence_sentence(name: str, ev: dict) -> str:
    """One paragraph worded from the numbers of n_star_evidence."""
    pct = f"{round(100 * ev['level'])}%"
    head = (f"{name}: over the compute range where every n has data, C = {_g(ev['C_lo'])} to {_g(ev['C_hi'])} rollouts, the frontier's "
            f"compute-optimal n goes from n* = {_n(ev['n_lo'])} to n* = {_n(ev['n_hi'])}")
    if ev["n_bootstrap"]:
        lr = ev["log2_ratio_ci"]
        boot = (f"; in {ev['n_bootstrap']} bootstrap resamples n*(C_max) > n*(C_min) in {ev['rise_frac']:.0%} and "
                f"< in {ev['fall_frac']:.0%} (log2 n*(C_max)/n*(C_min): {pct} CI [{lr[0]:.2f}, {lr[1]:.2f}])")
    else:
        boot = " (no bootstrap samples stored: no confidence interval)"
    verdict = {"rises": f"so n*(C) rises with C at the {pct} level",
               "falls": f"so n*(C) falls with C at the {pct} level",
               "flat": f"so n*(C) stays at n* = {_n(ev['n_lo'])} over this range at the {pct} level",
               "no-rise": (f"so n*(C) does not rise with C at the {pct} level (one-sided: in "
                           f"{1 - ev.get('rise_frac', 0):.0%} of resamples it falls or stays)"),
               "no-fall": (f"so n*(C) does not fall with C at the {pct} level (one-sided: in "
                           f"{1 - ev.get('fall_frac', 0):.0%} of resamples it rises or stays), although a rise "
                           "alone is not resolved"),
               "unresolved": "so the data do not resolve whether n*(C) rises with C on this set",
               }.get(ev["verdict"], f"point estimate: n*(C) {ev['verdict']}")
    measured = ""
    if ev.get("measured_gain_ci"):
        mg = ev["measured_gain_ci"]
        se0 = (f", counting the sampling error {ev['initial_stderr']:.3f} of the before-training evaluation every run "
               "shares" if ev.get("initial_stderr") else "")
        measured = (f"; largest measured gain, last minus first validation averaged over runs, {ev['measured_gain']:+.3f} "
                    f"({pct} CI [{mg[0]:+.3f}, {mg[1]:+.3f}]{se0})")
    if ev["verdict"] == "no-gain":
        which = ""
        if ev["gain_ci"][0] > 0 and ev.get("measured_gain_ci") and ev["measured_gain_ci"][0] <= 0:
            which = ("; a gain needs both intervals above 0, and the measured one, which counts from the "
                     "before-training evaluation rather than from C_min, includes 0")
        verdict = ("but RL did not raise the validation reward at any n: the largest fitted gain from C_min to C_max is "
                   f"{ev['gain']:+.3f} ({pct} CI [{ev['gain_ci'][0]:+.3f}, {ev['gain_ci'][1]:+.3f}]){measured}{which}, "
                   "so this set has no compute-optimal n at these budgets (the frontier's n* is picked by noise) and "
                   "whether n*(C) rises is not defined here")
    elif ev.get("gain_ci"):
        verdict += (f" (largest fitted RL gain from C_min to C_max {ev['gain']:+.3f}, {pct} CI [{ev['gain_ci'][0]:+.3f}, "
                    f"{ev['gain_ci'][1]:+.3f}]{measured})")
    caveat = ""
    if ev.get("point_bootstrap"):
        caveat = (f" Caveat: n = {', '.join(_n(n) for n in ev['point_bootstrap'])} had fewer runs than the fit needs "
                  "to resample runs, so the bootstrap resampled record points within a run; those intervals leave "
                  "out run-to-run and validation noise and are too narrow (more seeds fix this).")
    if ev.get("widening", 1.0) > 1.0 and ev.get("n_bootstrap"):
        caveat += (f" The intervals resample only {ev['runs_per_n']} runs per n, which understates them, so they are "
                   f"widened {ev['widening']:.2f}x about the estimates (Student's t with {ev['runs_per_n'] - 1} "
                   f"degrees of freedom) and the one-sided shares above must reach {ev['one_sided_level']:.1%}.")
    if ev["verdict"] == "no-gain":  # where a noise-picked n* saturates means nothing
        return f"{head}{boot}, {verdict}.{caveat}"
    iso = f" {isoflop_sentence(ev['isoflop'], pct)}" if ev.get("isoflop") and "rise_frac" in ev["isoflop"] else ""
    if ev["n_hi"] >= ev["n_max_swept"]:
        sat = (f" n* reaches the largest n swept ({_n(ev['n_max_swept'])}) from C = {_g(ev['C_sat'])}, so where it "
               "saturates is not resolved by this grid (a larger n may be optimal there)")
    else:
        sat = f" The frontier settles on n* = {_n(ev['n_hi'])} from C = {_g(ev['C_sat'])}"
    if ev.get("C_sat_ci"):
        sat += (f" ({pct} CI of that onset [{_g(ev['C_sat_ci'][0])}, {_g(ev['C_sat_ci'][1])}]; n* at C_max "
                f"{pct} CI [{_n(ev['n_hi_ci'][0])}, {_n(ev['n_hi_ci'][1])}])")
    sat += f"; the sigmoid fit of log2 n* plateaus at n = {ev['plateau_n']:.3g}"
    if ev.get("plateau_n_ci"):
        sat += f" ({pct} CI [{ev['plateau_n_ci'][0]:.3g}, {ev['plateau_n_ci'][1]:.3g}])"
    if ev["plateau_n"] > ev["n_max_swept"] * 1.05 or ev["plateau_n"] < ev["n_min_swept"] / 1.05:
        sat += " (outside the swept n, an extrapolation)"
    stab = stability_sentence(ev)
    return f"{head}{boot}, {verdict}.{sat}.{iso}{caveat}" + (f" {stab}" if stab else "")


def isoflop_sentence(iso: dict, pct: str) -> str:
    """The iso-FLOP-profile estimate of n*(C) in words (from _isoflop_evidence)."""
    verdict = {"rises": f"n*(C) rises with C at the {pct} level",
               "falls": f"n*(C) falls with C at the {pct} level",
               "flat": f"n*(C) stays within a factor sqrt 2 at the {pct} level",
               "no-rise": f"n*(C) does not rise by more than a factor sqrt 2 at the {pct} level (one-sided)",
               "no-fall": f"n*(C) does not fall by more than a factor sqrt 2 at the {pct} level (one-sided), although "
                          "a rise alone is not resolved",
               "unresolved": "the iso-FLOP estimate does not resolve whether n*(C) rises"}[iso["verdict"]]
    ci, c_on, n_hi = iso["log2_ratio_ci"], iso["C_on_ci"], iso["n_hi_ci"]
    return (f"Iso-FLOP-profile estimate (at each C the vertex of a parabola of reward in log2 n, as Hoffmann et al.'s "
            f"approach 2 reads the optimal size; compared from the learning onset, where the frontier has made "
            f"{iso['onset_frac']:.0%} of its rise, since below it every n ties at the base reward): from C_on = "
            f"{_g(iso['C_on'])} ({pct} CI [{_g(c_on[0])}, {_g(c_on[1])}]) to C_max, n* goes from {iso['n_on']:.3g} to "
            f"{iso['n_hi']:.3g} (n* at C_max {pct} CI [{n_hi[0]:.3g}, {n_hi[1]:.3g}]); log2 n*(C_max)/n*(C_on) {pct} CI "
            f"[{ci[0]:.2f}, {ci[1]:.2f}] (a factor {2 ** ci[0]:.3g} to {2 ** ci[1]:.3g}), > 0 in {iso['rise_frac']:.1%} "
            f"and < 0 in {iso['fall_frac']:.1%} of resamples, so {verdict}.")


def at_common_compute(fits: dict[str, dict], evidence: dict[str, dict]) -> tuple[dict[str, dict], float | None]:
    """Each set's n_star_evidence read up to the largest compute every set reached, and that compute (None when the
    sets already end together). n*(C) moves with C, so sets swept to different budgets and compared at their own
    C_max credit the larger budget: the quick_hard lab (Easy 6,144 rollouts per run, Hard 24,576) had Hard's n*
    larger than Easy's at their own C_max (iso-FLOP log2 CI [0.22, 1.23], 15 Hard seeds) and unresolved at 6,144
    ([-0.24, 1.76]; stop 40). The cut evidence keeps the measured gain of the whole runs (its no-gain guard)."""
    c = min(ev["C_hi"] for ev in evidence.values())
    if all(ev["C_hi"] <= c * 1.001 for ev in evidence.values()):
        return evidence, None
    return {name: ev if ev["C_hi"] <= c * 1.001 else
            n_star_evidence({**fits[name], "x_range": [float(fits[name]["x_range"][0]), c]})
            for name, ev in evidence.items()}, c


def compare_saturation(ev_easy: dict, ev_hard: dict, own: dict[str, dict] | None = None) -> str:
    """Whether Hard saturates at a smaller n than Easy, from the n*(C_max) bootstrap samples of each (the argmax
    ones compared at the expanded one-sided level, the iso-FLOP ones already widened; see n_star_evidence). With
    `own` (each set's evidence at its own C_max, when the two given are cut to a common compute by
    at_common_compute) the sentence says so and gives the own-budget n* too."""
    from rlscale.scaling.isocompute import expanded_level

    a, b = ev_easy.get("n_hi_samples"), ev_hard.get("n_hi_samples")
    head = f"n* at the largest fitted compute: Easy {_n(ev_easy['n_hi'])}, Hard {_n(ev_hard['n_hi'])}"
    if own:
        head = (f"n* at C = {_g(ev_easy['C_hi'])} rollouts per run, the largest compute both sets reached (compared "
                "there because n* moves with compute; at their own largest budgets Easy "
                f"{_n(own['easy']['n_hi'])} at {_g(own['easy']['C_hi'])}, Hard {_n(own['hard']['n_hi'])} at "
                f"{_g(own['hard']['C_hi'])}): Easy {_n(ev_easy['n_hi'])}, Hard {_n(ev_hard['n_hi'])}")
    moot = [name for name, ev in (("Easy", ev_easy), ("Hard", ev_hard)) if ev.get("verdict") == "no-gain"]
    if moot:
        return (f"{head}; RL raised no validation reward on the {' and '.join(moot)} set{'s' if len(moot) > 1 else ''}"
                " at these budgets, so where each set saturates in n cannot be compared.")
    if not a or not b:
        return head + " (no bootstrap samples: no confidence statement)."
    m = min(len(a), len(b))
    a, b = np.asarray(a[:m]), np.asarray(b[:m])
    smaller, larger = float(np.mean(b < a)), float(np.mean(b > a))
    lvl = ev_easy["level"]
    ks = [k for k in (ev_easy.get("runs_per_n"), ev_hard.get("runs_per_n")) if k]
    one_sided = expanded_level(lvl, min(ks) if ks else None)  # discrete argmax draws: the expanded level
    if smaller >= one_sided:
        word = "the Hard set saturates at a smaller n than the Easy set"
    elif larger >= one_sided:
        word = "the Hard set saturates at a larger n than the Easy set"
    else:
        word = "the data do not resolve which set saturates at the smaller n"
    text = (f"{head}; pairing {m} independent bootstrap resamples, Hard < Easy in {smaller:.0%} and Hard > Easy in "
            f"{larger:.0%}: {word}.")
    ie, ih = ev_easy.get("isoflop") or {}, ev_hard.get("isoflop") or {}
    if ie.get("n_hi_samples") and ih.get("n_hi_samples"):
        m = min(len(ie["n_hi_samples"]), len(ih["n_hi_samples"]))
        d = np.log2(np.asarray(ih["n_hi_samples"][:m]) / np.asarray(ie["n_hi_samples"][:m]))
        lo, hi = float(np.quantile(d, (1 - lvl) / 2)), float(np.quantile(d, (1 + lvl) / 2))
        word = ("the Hard set's n* is smaller" if hi < 0 else "the Hard set's n* is larger" if lo > 0 else
                "the data do not resolve which is smaller")
        where = f"C = {_g(ev_easy['C_hi'])}" if own else "C_max"
        text += (f" Iso-FLOP estimate of n* at {where}: Easy {ie['n_hi']:.3g} ({round(100 * lvl)}% CI "
                 f"[{ie['n_hi_ci'][0]:.3g}, {ie['n_hi_ci'][1]:.3g}]), Hard {ih['n_hi']:.3g} ([{ih['n_hi_ci'][0]:.3g}, "
                 f"{ih['n_hi_ci'][1]:.3g}]); log2 Hard / Easy {round(100 * lvl)}% CI [{lo:.2f}, {hi:.2f}]: {word}.")
    return text


# ------------------------------------------------------------------------------------------------ loading
def _bucket_rows(df, bounds: dict):
    """(name, the profile's rows in that bucket) per {name: (lo, hi)} of the lab's bounds."""
    from rlscale.evals.difficulty import Bucket

    for name, (lo, hi) in bounds.items():
        yield name, df[Bucket(name, lo, hi).mask(df)]


def precision_sentence(df, bounds: dict) -> str:
    """Reward precision per difficulty bucket of a profile (the base model's correct samples whose worked chain is
    also right, `evals.difficulty.reward_precision`), in words; "" when the profile has no chain column."""
    from rlscale.evals.difficulty import reward_precision

    if "correct_valid_chain" not in df.columns:
        return ""
    parts = []
    for name, sub in _bucket_rows(df, bounds):
        frac = reward_precision(sub)
        if frac is not None:
            parts.append(f"{name.capitalize()} bucket {100 * frac:.0f}% of {int(sub['correct'].sum())}")
    if not parts:
        return ""
    return ("Reward precision of the pretrained model (correct profile samples whose worked chain is also right, "
            "every step restated with the true values and results): " + ", ".join(parts) + " correct samples. "
            "The others reach the gold answer through wrong steps (lucky hits), and the outcome reward pays RL "
            "for them all the same.")


def chance_sentence(df, bounds: dict) -> str:
    """Each bucket's mean pass rate against the chance rates of its gold answers (`evals.difficulty.chance_rates`),
    in words; "" when the profile has no answer column."""
    from rlscale.evals.difficulty import chance_rates

    if "answer" not in df.columns:
        return ""
    parts = []
    for name, sub in _bucket_rows(df, bounds):
        rates = chance_rates(sub["answer"])
        if rates is None:
            continue
        mean = float(sub["avg"].mean())
        parts.append(f"{name.capitalize()} bucket mean pass rate {mean:.3f} against {rates['constant']:.3f} for the "
                     f"best constant answer and {rates['guess']:.3f} for a guess from its {rates['answers']} gold "
                     f"answers' distribution ({mean / rates['constant']:.2g}x the constant answer)")
    if not parts:
        return ""
    return ("Chance baselines (answering without solving): " + "; ".join(parts) + ". A bucket near 1x is solved at "
            "chance: its rewarded samples say little about the reasoning, so RL has little to reinforce.")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg}, line {e.lineno})") from None


NUMERICS_FIELDS = ("cpu_numerics", "torch", "aten_cpu_capability", "c_compiler", "cuda")


def run_numerics(sweepdirs: list[Path]) -> list[dict]:
    """The distinct numerics (rlscale.numerics.numerics_record) the finished runs of these sweeps (sweep_runs)
    recorded in their summary.json, each with its count of runs ("not recorded" for runs that predate the record).
    More than one row means the runs did not all compute alike, e.g. workers of a Ray cluster of mixed CPUs under
    RLSCALE_CPU_NUMERICS=native: their results are not one machine's bits."""
    counts: dict[tuple, int] = {}
    for sweepdir in sweepdirs:
        for run in sweep_runs(Path(sweepdir)):
            summary = read_json(run["dir"] / "summary.json")
            if summary is None:
                continue
            rec = summary.get("numerics")
            key = tuple(str(rec.get(f)) for f in NUMERICS_FIELDS) if rec else ("not recorded",) * len(NUMERICS_FIELDS)
            counts[key] = counts.get(key, 0) + 1
    return [dict(zip(NUMERICS_FIELDS, k), runs=v) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]


def numerics_html(rows: list[dict]) -> str:
    """The report's table of the runs' numerics, with a sentence saying whether they all computed alike."""
    if not rows:
        return ""
    if len(rows) == 1 and rows[0]["cpu_numerics"] == "not recorded":
        note = "These runs predate the record (rlscale before stop 37): their numerics are not known."
    elif len(rows) == 1:
        note = "Every finished run recorded the same numerics."
    else:
        note = (f"The finished runs recorded {len(rows)} different numerics: they did not all compute alike, so this "
                "study's numbers are not one machine's bits (RLSCALE_CPU_NUMERICS=avx2 on every worker, the same "
                "torch and C compiler, makes them so on x86-64 CPUs with AVX2).")
    return "<h3>Numerics of the sweep runs</h3>" + para(note + " Read from each run's summary.json.") + table(rows)


def sweep_runs(sweepdir: Path) -> list[dict]:
    """Runs of a sweep (from sweep.json) that have a run store: run_id, n, budget, seed, dir."""
    from rlscale.sweep.export import read_sweep_json

    sweep = read_sweep_json(sweepdir)
    out = []
    for rid, r in sweep["runs"].items():
        d = sweepdir / "runs" / rid
        if (d / "config.json").exists():
            out.append({"run_id": rid, "n": r["n"], "budget": r["budget"], "seed": r["seed"],
                        "problems_per_batch": r["problems_per_batch"], "lr": (r.get("train") or {}).get("lr"),
                        "dir": d})
    return sorted(out, key=lambda r: (r["budget"], r["n"], r["seed"]))


def diag_runs(sweepdir: Path, chosen_lr: dict | None = None) -> list[dict]:
    """One run per n for the diagnostics: the largest budget, the smallest seed (and, with an lr grid, the n's
    chosen rate: chosen_lr {n: lr})."""
    runs = [r for r in sweep_runs(sweepdir)
            if not chosen_lr or chosen_lr.get(float(r["n"])) is None or r["lr"] == chosen_lr[float(r["n"])]]
    if not runs:
        return []
    top = max(r["budget"] for r in runs)
    pick: dict[int, dict] = {}
    for r in runs:
        if r["budget"] == top and (r["n"] not in pick or r["seed"] < pick[r["n"]]["seed"]):
            pick[r["n"]] = r
    return [pick[n] for n in sorted(pick)]


def load_run_records(run: dict) -> tuple:
    """(steps DataFrame, problem_passes DataFrame) of a run store."""
    import pandas as pd

    from rlscale.store import RunStore

    with RunStore.open(run["dir"]) as store:
        steps = store.steps_df()
        passes = pd.DataFrame(store.problem_passes(), columns=["step", "problem_id", "n", "correct"])
    return steps, passes


# ------------------------------------------------------------------------------------------------ figures (no I/O)
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(ns):
    cmap = _plt().get_cmap("viridis")
    k = max(len(ns) - 1, 1)
    return {n: cmap(i / k) for i, n in enumerate(sorted(ns))}


def fig_profile(avg: np.ndarray, n: int, bounds: dict):
    from rlscale.evals.difficulty import histogram

    plt = _plt()
    counts, edges = histogram(avg, n)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black", color="tab:blue")
    shade = {"easy": "tab:orange", "hard": "tab:red"}
    for name, (lo, hi) in bounds.items():
        ax.axvspan(lo, hi, alpha=0.15, color=shade.get(name, "tab:grey"), label=f"{name} [{lo:g}, {hi:g}]")
    ax.set_xlabel(f"per-problem pass rate of the base model (avg@{n})")
    ax.set_ylabel("problems")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_bestworst(rows: list[dict], ks: list[int]):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    ns = [r["n"] for r in rows]
    width = 0.8 / max(len(ks), 1)
    for ax, kind in zip(axes, ("pass", "worst")):
        for j, k in enumerate(ks):
            vals = [np.nan if r.get(f"val/{kind}@{k}") is None else r[f"val/{kind}@{k}"] for r in rows]
            ax.bar(np.arange(len(ns)) + j * width, vals, width=width, label=f"k={k}")
        ax.set_xticks(np.arange(len(ns)) + width * (len(ks) - 1) / 2)
        ax.set_xticklabels([f"n={n}" for n in ns])
        ax.set_title("best@k (pass@k)" if kind == "pass" else "worst@k")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("validation, last point")
    fig.tight_layout()
    return fig


def _smooth(v: np.ndarray) -> np.ndarray:
    import pandas as pd

    w = max(1, len(v) // 25)
    return pd.Series(v).rolling(w, min_periods=1).mean().to_numpy()


def fig_diagnostics(per_n: dict):
    """per_n: {n: steps DataFrame}. Reward, entropy, all-wrong and all-right fractions vs step (smoothed)."""
    plt = _plt()
    keys = [("rollout/reward_mean", "training reward"), ("train/entropy", "entropy (nats/token)"),
            ("rollout/frac_all_wrong", "fraction of all-wrong groups"),
            ("rollout/frac_all_right", "fraction of all-right groups")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=False)
    col = _colors(per_n)
    for ax, (key, label) in zip(axes.ravel(), keys):
        for n, steps in sorted(per_n.items()):
            if key in steps.columns and len(steps):
                ax.plot(steps["step"], _smooth(steps[key].to_numpy(float)), color=col[n], lw=1.1, label=f"n={n}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def pass_rate_phases(passes, phases: int = 3) -> list:
    """Per-problem pass rates (sum correct / sum n) in each of `phases` equal step ranges of training."""
    if passes is None or len(passes) == 0:
        return []
    last = int(passes["step"].max())
    out = []
    for i in range(phases):
        lo, hi = last * i / phases, last * (i + 1) / phases
        g = passes[(passes["step"] > lo) & (passes["step"] <= hi)].groupby("problem_id")[["n", "correct"]].sum()
        g = g[g["n"] > 0]
        out.append((lo, hi, (g["correct"] / g["n"]).to_numpy(float)))
    return out


def fig_pass_hist(per_n: dict):
    """per_n: {n: problem_passes DataFrame}. Histogram of per-problem training pass@1 early / middle / late."""
    plt = _plt()
    ns = sorted(per_n)
    fig, axes = plt.subplots(1, len(ns), figsize=(3.2 * len(ns), 3), sharey=True, squeeze=False)
    bins = np.linspace(0, 1, 11)
    for ax, n in zip(axes[0], ns):
        for (lo, hi, rates), c in zip(pass_rate_phases(per_n[n]), ("tab:grey", "tab:blue", "tab:red")):
            ax.hist(rates, bins=bins, histtype="step", lw=1.4, color=c,
                    weights=np.full(len(rates), 1.0 / max(len(rates), 1)), label=f"steps {lo:.0f}-{hi:.0f}")
        ax.set_title(f"n={n}", fontsize=10)
        ax.set_xlabel("per-problem pass@1 in training")
        if ax.get_legend_handles_labels()[0]:  # no training steps logged problem passes: nothing to label
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("fraction of problems")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ sections
def _ci(v) -> str:
    return f"[{v[0]:.4g}, {v[1]:.4g}]" if v else ""


def fit_tables(fit: dict) -> str:
    rows = []
    for n, d in sorted(fit["per_n"].items(), key=lambda kv: float(kv[0])):
        p, ci = d["params"], d.get("ci") or {}
        rows.append({"n": n, "R0": p["R0"], "A (asymptote)": p["A"], "A CI": _ci(ci.get("A")), "C_mid": p["C_mid"],
                     "C_mid CI": _ci(ci.get("C_mid")), "B": p["B"], "R^2": d.get("r2"), "runs": d.get("n_runs"),
                     "bootstrap": d.get("bootstrap_unit")})
    ns = fit["n_star_fit"]
    star = [{"param": k, "value": v, "CI": _ci((fit.get("ci") or {}).get(k))} for k, v in ns["params"].items()]
    trans = table([{"from n": t["from_n"], "to n": t["to_n"], "at C": t["C"], "reward": t["reward"],
                    "epochs (from n)": t.get("epochs_from"), "epochs (to n)": t.get("epochs_to")}
                   for t in fit.get("transitions", [])]) if fit.get("transitions") else \
        para("No crossing of adjacent per-n curves inside the fitted range.")
    return ("<h3>Per-n sigmoid fits on record-breaking points</h3>" + table(rows)
            + f"<h3>Sigmoid fit of log2 n*(C) (R^2 {ns.get('r2', float('nan')):.3f})</h3>" + table(star)
            + "<h3>Transitions between adjacent n</h3>" + trans)


def final_points(df) -> list[dict]:
    """Last validation point of every run (sweep table rows)."""
    if len(df) == 0:
        return []
    last = df.sort_values("step").groupby("run_id").tail(1)
    cols = [c for c in last.columns if c.startswith("val/") and not c.endswith("_stderr") and "ci95" not in c]
    keep = ["n", "problems_per_batch", "budget", "seed", "step", X, *sorted(cols)]
    return last.sort_values(["budget", "n", "seed"])[[c for c in keep if c in last.columns]].to_dict("records")


def best_worst_rows(df) -> tuple[list[dict], list[int]]:
    """Per n, at the largest budget: mean over seeds of the last point's pass@k / worst@k / avg."""
    rows = final_points(df)
    if not rows:
        return [], []
    top = max(r["budget"] for r in rows)
    rows = [r for r in rows if r["budget"] == top]
    ks = sorted({int(c.split("@")[1]) for r in rows for c in r if c.startswith("val/pass@")})
    out = []
    for n in sorted({r["n"] for r in rows}):
        g = [r for r in rows if r["n"] == n]
        row = {"n": n, "budget": top, "seeds": len(g), X: float(np.mean([r[X] for r in g]))}
        for c in ["val/avg", *[f"val/{m}@{k}" for k in ks for m in ("pass", "worst")]]:
            vals = [r[c] for r in g if c in r and r[c] is not None]
            row[c] = float(np.mean(vals)) if vals else None
        out.append(row)
    return out, ks


def noise_sentence(df) -> str:
    """Validation noise against the signal: median stderr of val/avg vs the spread of the run means."""
    if len(df) == 0 or Y not in df.columns:
        return ""
    txt = (f"Validation {Y} over all runs and points (compute > 0) ranges {df[Y].min():.4g} to {df[Y].max():.4g}; "
           f"each run's change from its first to its best point has median {_run_gain(df):.4g}")
    if f"{Y}_stderr" in df.columns:
        txt += (f"; the median standard error of one validation point over problems (which also counts which problems "
                f"were drawn, shared by every run) is {df[f'{Y}_stderr'].median():.4g}")
    return txt + "."


def run_times(sweepdir: Path) -> tuple[float, float] | None:
    """Median (training seconds, validation seconds) per run over the sweep's finished runs at its largest budget:
    validation is the sum of the run's `time/val_s` records, training its wall time minus that."""
    from rlscale.store import RunStore

    runs = sweep_runs(sweepdir)
    top = max((r["budget"] for r in runs), default=None)
    times = []
    for r in runs:
        summary = read_json(r["dir"] / "summary.json") if r["budget"] == top else None
        if not summary or not summary.get("wall_s"):
            continue
        with RunStore.open(r["dir"]) as store:
            val = sum(float(e.get("time/val_s") or 0.0) for e in store.evals())
        if 0 < val < float(summary["wall_s"]):
            times.append((float(summary["wall_s"]) - val, val))
    if not times:
        return None
    t = np.median(np.asarray(times), axis=0)
    return float(t[0]), float(t[1])


def budget_sentence(df, times: tuple[float, float] | None) -> str:
    """How the validation compute compares with the runs' spread (rlscale.scaling.validation_budget), in words;
    "" without the sampling-stderr column (evaluations before stop 33) or two runs of an n.

    The runs share the validation seeds, which cancels part of the sampling error between them. Where they also
    evaluated their final model under a second seed (the `_reseed` column), the part they do not share is measured
    and the optimum is an estimate. Otherwise it is computed with all of the error (an upper bound) and worded only
    as far as that bound holds: the optimal validation time grows with the error and the variance shed moves away
    from 1 on either side, so an optimum below today's is at most that (and sheds at least that much), one above
    today's sheds at most that much."""
    from rlscale.scaling.validation_budget import optimal_validation, variance_split

    split = variance_split(df, x=X, y=Y)
    if split is None:
        return ""
    between, own = split["between_var"], split["own_var"]
    if between <= 0:
        return (f"Validation budget: runs of the same n ended equal at their largest compute ({split['runs']} runs), "
                "so there is no spread between them to split into validation noise and policy.")
    measured = bool(np.isfinite(own)) and split["own_dof"] >= 2
    txt = (f"Validation budget: at each n's largest compute, runs of the same n differ by sd {np.sqrt(between):.4f} "
           f"(pooled, {split['runs']} runs); one validation point's sampling error there (its completions resampled, "
           f"the validation problems fixed) is {np.sqrt(split['sampling_var']):.4f}, ")
    if measured:
        txt += (f"and the part of it the runs do not share (their final models evaluated under a second seed too) "
                f"sd {np.sqrt(own):.4f}: {min(1.0, own / between):.0%} of that variance.")
    else:
        txt += (f"at most {split['share']:.0%} of that variance (runs share the validation seeds, which cancels part "
                "of it).")
    if times is None:
        return txt
    opt = optimal_validation(between, min(own, between) if measured else split["sampling_var"], *times)
    txt += f" Validation took {opt['share_now']:.0%} of a run's time (median {times[0] + times[1]:.0f} s). "
    spread = "the run-to-run spread the intervals above resample"
    if measured:
        if math.isinf(opt["ratio"]):
            return txt + f"The whole spread is validation noise: more validation samples per point shrink {spread}."
        txt += (f"The variance per unit compute is least at a validation share of {opt['share_opt']:.0%} "
                f"({opt['ratio']:.2g}x today's samples per point), which would shed {opt['shed']:.0%} of a "
                "same-compute sweep's variance: ")
        if opt["shed"] < 0.05:
            return txt + f"the split is near its optimum, and more runs (seeds) are what shrink {spread}."
        if opt["ratio"] > 1:
            return txt + f"more validation samples per point shrink {spread} more cheaply than more runs."
        return txt + "fewer validation samples per point, with the time they free spent on more runs, shrink it."
    if opt["ratio"] <= 1:
        return txt + (f"Even with none of that error shared, the variance per unit compute is least at a validation "
                      f"share of at most {opt['share_opt']:.0%} ({opt['ratio']:.2g}x today's samples per point or "
                      f"fewer), which sheds at least {opt['shed']:.0%} of a same-compute sweep's variance: fewer "
                      f"validation samples per point, with the time they free spent on more runs (seeds), shrink "
                      f"{spread}.")
    more = "any number of" if math.isinf(opt["ratio"]) else f"{opt['ratio']:.2g}x today's"
    txt += (f"More validation samples per point would shed at most {opt['shed']:.0%} of a same-compute sweep's "
            f"variance ({more} samples per point, if none of that error were shared)")
    if opt["shed"] < 0.05:
        return txt + (f": they would buy little. More runs (seeds) are what shrink {spread}; fewer validation samples "
                      "could free time for them if the runs share much of that error.")
    return txt + (". How much the runs share (their common validation seeds lower it) decides whether that holds: "
                  "evaluating the final models under a second seed too (the trainer's val_reseed; `rlscale eval "
                  "--seed` on a few) measures it.")


def _run_gain(df) -> float:
    gains = [g.sort_values(X)[Y].max() - g.sort_values(X)[Y].iloc[0] for _, g in df.groupby("run_id")]
    return float(np.median(gains)) if gains else float("nan")


def set_sections(name: str, sweepdir: Path, fit: dict | None, fit_note: str = "") -> tuple[list[Section], dict]:
    """Sections for one sweep (curves + fits, best/worst@k, diagnostics); returns (sections, evidence or {})."""
    from rlscale.scaling import plots
    from rlscale.sweep.export import load_sweep_table

    df = load_sweep_table(sweepdir)
    title = name.capitalize() if name in ("easy", "hard") else name
    fits = Section(f"{title} set: reward vs compute and n*(C)")
    ev: dict = {}
    if fit_note:
        fits.add(para(fit_note, "note"))
    chosen_lr = {}
    if fit is not None and "error" not in fit and fit.get("selected"):
        from rlscale.scaling.isocompute import keep_selected, selected_values

        df = keep_selected(df, fit)  # an lr grid: each n at its best rate, everywhere below
        chosen_lr = selected_values(fit)
        fits.add(para(selection_sentence(fit), "note"))
    pos = df[df[X].astype(float) > 0] if len(df) and X in df.columns else df
    if fit is None or "error" in fit:
        fits.add(para(f"No fit: {fit.get('error') if fit else 'fit.json missing'}", "note"))
    else:
        ev = n_star_evidence(fit)
        fits.add(para(evidence_sentence(title, ev), "note"))
        near = near_optimal_sentence(title, ev)
        if near:
            fits.add(para(near, "note"))
        fits.add('<div class="grid">'
                 + img(figure_png(plots.reward_vs_compute(pos, fit, x=fit["x"], y=fit["y"])),
                       f"{title}: validation {fit['y']} vs {fit['x']} per n (points), fitted sigmoids (lines), "
                       "frontier (squares coloured by n*)")
                 + img(figure_png(plots.n_star_vs_compute(fit)),
                       f"{title}: n*(C) on the frontier, its sigmoid fit and the iso-FLOP vertex (95% band)")
                 + img(figure_png(plots.allocation_gaps(fit)),
                       f"{title}: each n's fitted reward minus the best n's (95% bands): where a band reaches 0, "
                       "that n is as good as the best within the noise")
                 + "</div>")
        fits.add(fit_tables(fit))
    noise = noise_sentence(pos)
    if noise:
        fits.add(para(noise))
    budget = budget_sentence(pos, run_times(sweepdir))
    if budget:
        fits.add(para(budget))
    fits.add("<h3>Last validation point of every run</h3>" + table(final_points(df)))
    bw = Section(f"{title} set: best@k and worst@k at the largest budget")
    rows, ks = best_worst_rows(df)
    if rows:
        bw.add(table(rows))
        bw.add(img(figure_png(fig_bestworst(rows, ks)), f"{title}: best@k (coverage) and worst@k (sharpening) per n"))
    else:
        bw.add(para("No validation points recorded yet."))
    diag = Section(f"{title} set: training diagnostics")
    runs = diag_runs(sweepdir, chosen_lr)
    recs = {r["n"]: load_run_records(r) for r in runs}
    if recs:
        diag.add(para(f"Runs at budget {runs[0]['budget']} rollouts, seed {min(r['seed'] for r in runs)}; curves "
                      "smoothed over ~4% of the steps. Entropy is the policy's over every completion token; on the "
                      "rows the update left out (advantage 0, no KL or entropy term) the sampler's."))
        diag.add(img(figure_png(fig_diagnostics({n: s for n, (s, _) in recs.items()})),
                     f"{title}: training reward, entropy and the fractions of all-wrong / all-right groups per n"))
        diag.add(img(figure_png(fig_pass_hist({n: p for n, (_, p) in recs.items()})),
                     f"{title}: per-problem pass@1 during training (from the stored per-problem pass counts), "
                     "first / middle / last third of the steps"))
    else:
        diag.add(para("No run stores yet."))
    return [fits, bw, diag], ev


# ------------------------------------------------------------------------------------------------ model sizes
def size_labs(root: Path, preset: dict) -> list[tuple[str, Path]]:
    """(size, lab directory) of the lab itself and of each further size in its preset (OUT/sizes/<size>/)."""
    return [(str(preset.get("size", "?")), root)] + [(s, root / SIZES_DIR / s) for s in preset.get("sizes") or []]


def size_row(size: str, lab: Path, evidence: dict | None = None) -> tuple[dict, dict, dict]:
    """One row of the size comparison, read from a lab directory's records, {set: n_star_evidence} and {set: fit}.
    `evidence`: the sets' evidence when the caller has it already (the lab's own, from its set sections)."""
    from rlscale.io import read_table

    meta = read_json(lab / "model" / "rlscale_model.json") or {}
    comp = meta.get("compute") or {}
    stages = read_json(lab / "stages.json") or {}
    row = {"size": size, "parameters": meta.get("num_params"), "pretraining tokens": comp.get("tokens"),
           "pretraining FLOPs": comp.get("flops"), "held-out loss": meta.get("heldout_loss"),
           "pool mean pass rate": (stages.get("profile") or {}).get("mean_avg")}
    evidence, fits = dict(evidence or {}), {}
    for name in ("easy", "hard"):
        title = name.capitalize()
        tab = lab / "sweeps" / name / "table.parquet"
        fit = fits[name] = read_json(lab / "fits" / name / "fit.json")
        if tab.exists():
            df = read_table(tab)
            row[f"{title} base"] = float(df[df[X].astype(float) == 0][Y].mean())
        if fit is None or "error" in fit:
            row[f"{title} verdict"] = "no fit yet" if fit is None else "fit failed"
            continue
        ev = evidence[name] = evidence.get(name) or n_star_evidence(fit)
        if "measured_gain" in ev:
            row[f"{title} gain"] = ev["measured_gain"]
            row[f"{title} gain CI"] = _ci(ev.get("measured_gain_ci"))
        iso = ev.get("isoflop") or {}
        if iso and ev["verdict"] != "no-gain":
            row[f"{title} n* (iso-FLOP)"] = f"{iso['n_on']:.3g} -> {iso['n_hi']:.3g}"
            row[f"{title} log2 ratio CI"] = _ci(iso.get("log2_ratio_ci"))
        row[f"{title} verdict"] = ev["verdict"] + (f" / {iso['verdict']} (iso-FLOP)" if iso else "")
    return row, evidence, fits


def fig_sizes(frontiers: dict):
    """Per set, the fitted frontier (best reward over n at each compute) of every model size:
    {size label: {set: (frontier rows, legend note)}}; a dashed line where RL gained nothing (the note says so)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = plt.get_cmap("tab10")
    for ax, name in zip(axes, ("easy", "hard")):
        for i, (label, per_set) in enumerate(frontiers.items()):
            fr, note = per_set.get(name) or ([], "")
            if fr:
                ax.plot([r["C"] for r in fr], [r["reward"] for r in fr], color=colors(i % 10),
                        ls="--" if note else "-", label=label + (f" ({note})" if note else ""))
        ax.set_xscale("log")
        ax.set_xlabel("training rollouts per run (C)")
        ax.set_title(f"{name.capitalize()} set: fitted frontier per model size")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"validation {Y}")
    fig.tight_layout()
    return fig


def sizes_section(root: Path, preset: dict, evidence: dict) -> tuple[Section, list[str]]:
    """The same study per model size: a table of each size's model, base rewards, RL gains and n*(C) verdicts, the
    frontiers per size, and one line per size from its evidence (also returned, for the summary). `evidence`: the
    lab's own sets' evidence, already computed by lab_sections."""
    sec = Section("Across model sizes")
    labs = size_labs(root, preset)
    sec.add(para(f"The same study (pretraining recipe and tokens, pool, bounds, sweeps and fits) on {len(labs)} model "
                 "sizes, each a lab of its own (sizes/<size>/ holds each further size's records and report). Base is "
                 "the validation reward before training; gain the largest over n of the mean last-minus-first "
                 "validation change (95% CI); n* (iso-FLOP) from the learning onset to C_max."))
    rows, frontiers, lines = [], {}, []
    for size, lab in labs:
        if not (lab / "stages.json").exists():
            rows.append({"size": size, "Easy verdict": "not run yet"})
            continue
        row, ev, fits = size_row(size, lab, evidence if lab == root else None)
        rows.append(row)
        frontiers[f"{size}, {_g(float(row['parameters'] or 0) / 1e6)}M params"] = {
            name: ((fits.get(name) or {}).get("frontier") or [],
                   "no measured gain" if (ev.get(name) or {}).get("verdict") == "no-gain" else "")
            for name in ("easy", "hard")}
        if ev:
            lines.append(f"Size {size}: " + verdicts(ev))
    sec.add(table(rows))
    if any(fr for per_set in frontiers.values() for fr, _ in per_set.values()):
        sec.add(img(figure_png(fig_sizes(frontiers)),
                    "fitted frontier (the best n's fitted curve at each compute) of each model size, Easy and Hard; "
                    "dashed where RL raised no validation reward (the envelope of record-breaking points then rises "
                    "on noise)"))
    for line in lines:
        sec.add(para(line))
    return sec, lines


def lab_sections(root: Path) -> tuple[list[Section], str]:
    from rlscale.io import read_table

    lab = read_json(root / "lab.json") or {}
    preset = lab.get("preset", {})
    stages = read_json(root / "stages.json") or {}
    sections = []
    summary = Section("What the data shows")
    sections.append(summary)

    cfg = Section("Run configuration")
    cfg.add(para(f"Preset '{preset.get('name', '?')}'. Every field below is read from lab.json."))
    cfg.add(kv_table(preset))
    pre = stages.get("pretrain", {})
    if preset.get("model"):  # a given base model (rlscale lab --model): not pretrained here
        cfg.add("<h3>Base model</h3>" + kv_table({
            "model": preset["model"], "kind": pre.get("model_kind"), "parameters": pre.get("num_params"),
            "device": pre.get("device"), "task": preset.get("task"), "pool": preset.get("data_path") or f"the {preset.get('task')} train split"}))
    else:
        model_meta = read_json(root / "model" / "rlscale_model.json") or {}
        cfg.add("<h3>Lab model</h3>" + kv_table({
            "size": model_meta.get("size"), "parameters": model_meta.get("num_params"),
            "pretraining tokens": (model_meta.get("compute") or {}).get("tokens"),
            "held-out loss": model_meta.get("heldout_loss"),
            # avx2: the weights every x86-64 CPU with AVX2 pretrains (rlscale.numerics); native: this CPU's own
            "CPU numerics": model_meta.get("cpu_numerics", "not recorded"),
            "torch": (model_meta.get("numerics") or {}).get("torch", "not recorded"),
            "pretraining wall s": (model_meta.get("compute") or {}).get("wall_s") or pre.get("wall_s")}))
    sweepdirs = [root / "sweeps" / name for name in ("easy", "hard")]
    cfg.add(numerics_html(run_numerics([d for d in sweepdirs if (d / "sweep.json").exists()])))
    manifest = read_json(root / "sets" / "manifest.json")
    if manifest:
        cfg.add("<h3>Curated sets</h3>" + table([{"set": k, **v} for k, v in manifest["sets"].items()]))
    sections.append(cfg)

    hard = tuple(preset.get("hard_bounds", PAPER_HARD_BOUNDS))
    prof = Section("Difficulty profile of the training pool")
    profile_notes = ""
    if (root / "profile.parquet").exists():
        df = read_table(root / "profile.parquet")
        n = int(df["n"].max())
        bounds = {"easy": tuple(preset.get("easy_bounds", (0.3, 0.6))), "hard": hard}
        if hard != PAPER_HARD_BOUNDS:  # the study's Hard bucket, for its chance figures
            bounds[PAPER_HARD] = PAPER_HARD_BOUNDS
        avg = df["avg"].to_numpy(float)
        prof.add(para(f"{len(df)} problems x {n} samples; mean avg@{n} = {avg.mean():.4f}; "
                      f"{int((avg == 0).sum())} problems with no correct sample."))
        prof.add(img(figure_png(fig_profile(avg, n, bounds)), "per-problem pass rates of the base model, with "
                                                             "the Easy and Hard bounds shaded"))
        profile_notes = " ".join(t for t in (precision_sentence(df, bounds), chance_sentence(df, bounds)) if t)
        if profile_notes:
            prof.add(para(profile_notes))
    else:
        prof.add(para("profile.parquet missing."))
    sections.append(prof)

    evidence = {}
    for name in ("easy", "hard"):
        sweepdir = root / "sweeps" / name
        if not (sweepdir / "sweep.json").exists():
            sections.append(Section(f"{name.capitalize()} set").add(para("The sweep has not started.")))
            continue
        secs, ev = set_sections(name, sweepdir, read_json(root / "fits" / name / "fit.json"))
        sections += secs
        if ev:
            evidence[name] = ev
    if evidence:
        summary.add(para(headline(evidence) + hard_bucket_pointer(hard, evidence.get("hard")), "note"))
    for name in ("easy", "hard"):
        if name in evidence:
            summary.add(para(evidence_sentence(name.capitalize(), evidence[name])))
            near = near_optimal_sentence(name.capitalize(), evidence[name])
            if near:
                summary.add(para(near))
        else:
            summary.add(para(f"{name.capitalize()}: no fit available (see its section)."))
    if len(evidence) == 2:
        fits = {name: read_json(root / "fits" / name / "fit.json") for name in evidence}
        common, c = at_common_compute(fits, evidence)
        summary.add(para(compare_saturation(common["easy"], common["hard"], evidence if c else None)))
    if hard != PAPER_HARD_BOUNDS:
        summary.add(para(f"This lab's Hard set is the avg@16 bucket [{hard[0]:g}, {hard[1]:g}], not the study's "
                         f"[{PAPER_HARD_BOUNDS[0]:g}, {PAPER_HARD_BOUNDS[1]:g}] (the preset's hard_bounds); the study's "
                         "bucket is reported below as \"study's hard\" from the profile alone (not swept)."))
    if profile_notes:
        summary.add(para(profile_notes))

    if preset.get("sizes"):
        sec, lines = sizes_section(root, preset, evidence)
        sections.append(sec)
        if lines:
            summary.add(para("By model size (section 'Across model sizes'): " + " ".join(lines)))

    comp = Section("Compute per stage")
    rows = []
    for st in sorted(stages, key=lambda k: (STAGES.index(k) if k in STAGES else len(STAGES), k)):
        rec = stages[st]
        note = ""
        if rec.get("reused_from"):
            note = f"reused from {rec['reused_from']} (took {float(rec.get('reused_wall_s') or 0):.0f} s there)"
        elif st == "pretrain" and rec.get("model"):
            note = f"a given model ({rec['model']}), not pretrained here"
        elif st == "pretrain" and (rec.get("model_wall_s") or 0) > (rec.get("wall_s") or 0) + 1:
            note = f"existing checkpoint reused; its pretraining took {rec['model_wall_s']:.0f} s"
        elif st == "sizes" and rec.get("runs"):
            note = f"the labs of {rec['runs']} further model size(s) in sizes/, as summed from their stages"
        elif st.startswith("sweep_") and rec.get("runs"):
            note = f"{rec.get('runs_finished', 0)}/{rec['runs']} runs finished"
        rows.append({"stage": st, "status": rec.get("status"), "wall_s": rec.get("wall_s"),
                     "rollouts": rec.get("rollouts"), "validation rollouts": rec.get("val_rollouts"),
                     "tokens": rec.get("tokens"), "FLOPs": rec.get("flops"), "note": note})
    tot = {"stage": "total", "wall_s": sum(r["wall_s"] or 0 for r in rows),
           "rollouts": sum(r["rollouts"] or 0 for r in rows),
           "validation rollouts": sum(r["validation rollouts"] or 0 for r in rows),
           "tokens": sum(r["tokens"] or 0 for r in rows), "FLOPs": sum(r["FLOPs"] or 0 for r in rows)}
    comp.add(para("From stages.json. Rollouts and tokens of the sweeps are training compute (validation rollouts "
                  "separately); pretraining tokens are training tokens; FLOPs count generation and training."))
    comp.add(table(rows + [tot] if rows else []))
    sections.append(comp)

    plan_sec = Section("Planner: prescription for a larger budget")
    plans = read_json(root / "plan.json")
    if plans:
        prow = []
        for name, e in plans.items():
            row = {"set": name, "largest run spent": e.get("spent_max_run_rollouts"), "factor": e.get("plan_factor"),
                   "budget C": e.get("budget_rollouts"), "design": e.get("design")}
            if "plan" in e:
                pl = e["plan"]
                ci = pl.get("ci")
                row.update({"n": pl["n"], "n*(C) continuous": pl["n_star_continuous"],
                            "B_problem": pl["problems_per_batch"], "M steps": pl["iterations"], "lr": pl["lr"],
                            "predicted val reward": pl["predicted_reward"], "CI": _ci(ci),
                            "warnings": "; ".join(pl.get("warnings", []))})
            else:
                row["warnings"] = e.get("error")
            prow.append(row)
        plan_sec.add(para("rlscale.scaling.plan on each set's fit for a budget of (factor x the largest budget a "
                          "run spent), read from plan.json."))
        plan_sec.add(table(prow))
    else:
        plan_sec.add(para("plan.json missing."))
    sections.append(plan_sec)
    return sections, f"rlscale lab report: preset '{preset.get('name', '?')}'"


def sweep_sections(root: Path) -> tuple[list[Section], str]:
    fit = read_json(root / "fit" / "fit.json")
    note = "Fit read from fit/fit.json."
    if fit is None:
        from rlscale.scaling.isocompute import IsoCompute
        from rlscale.sweep.export import load_sweep_table

        df = load_sweep_table(root)
        try:
            fit = IsoCompute(n_bootstrap=100).fit(df).to_dict()
            note = "No stored fit: computed by the report from the run stores (IsoCompute, 100 bootstrap resamples)."
        except UserError as e:
            fit, note = {"error": str(e)}, ""
    sweep = read_json(root / "sweep.json")
    cfg = Section("Sweep configuration").add(kv_table({k: v for k, v in sweep["spec"].items() if k != "train"}))
    cfg.add("<h3>Training config</h3>" + kv_table(sweep["spec"].get("train", {})))
    cfg.add(numerics_html(run_numerics([root])))
    secs, _ = set_sections(sweep["spec"].get("name", root.name), root, fit, note)
    return [cfg, *secs], f"rlscale sweep report: {sweep['spec'].get('name', root.name)}"


def coscale_sections(root: Path, coscale: str | Path | None = None) -> list[Section]:
    """The CoScale-RL section: from `coscale` when given (a UserError if it holds no CoScale-RL run), else from
    ROOT/coscale when that directory exists (a note while it holds no records yet), else none."""
    from rlscale.coscale.report import coscale_section, has_coscale_run

    if coscale is not None:
        return [coscale_section(coscale)]
    auto = root / COSCALE_SUBDIR
    if not auto.is_dir():
        return []
    if not has_coscale_run(auto):
        return [Section("CoScale-RL").add(para(f"{auto}: no CoScale-RL records yet (no coscale.json); the section "
                                               "appears once `rlscale coscale --out` has started there.", "note"))]
    return [coscale_section(auto)]


def build_report(path: str | Path, coscale: str | Path | None = None) -> Path:
    """(Re)build DIR/report.html from the store; returns its path. `coscale`: a CoScale-RL run or lab comparison
    directory whose section is appended; by default DIR/coscale is used when it exists."""
    from rlscale.io import atomic_write_text

    root = Path(path)
    if (root / "lab.json").exists():
        sections, title = lab_sections(root)
    elif (root / "sweep.json").exists():
        sections, title = sweep_sections(root)
    else:
        raise UserError(f"{root}: neither a lab directory (lab.json) nor a sweep directory (sweep.json)")
    sections += coscale_sections(root, coscale)
    out = root / REPORT_FILE
    atomic_write_text(out, page(title, sections, subtitle=f"built from the records in {root.resolve()}"))
    if (root / "lab.json").exists():  # the verdicts as plain text, for the terminal (`rlscale lab`, `rlscale report`)
        atomic_write_text(root / SUMMARY_TEXT_FILE, plain_text(sections[0].parts) + "\n")
    return out


def read_headline(root: str | Path) -> str | None:
    """The first paragraph of a lab's summary.txt (the report's 'In short: ...' verdicts), or None before the
    report was built."""
    path = Path(root) / SUMMARY_TEXT_FILE
    if not path.exists():
        return None
    return path.read_text().split("\n\n")[0].strip() or None
