"""Difficulty profiles (per-problem avg@n of a base model) and the problem sets curated from them.

Buckets (defaults; bounds configurable, intervals written "lo,hi" = closed or "(lo,hi]" etc.):
  easy            avg in [0.3, 0.6]
  hard            avg in [0, 0.0625]
  very_easy       avg in (0.6, 0.9]
  extremely_hard  correct == 0, i.e. pass@n = 0 (with n = 128: pass@128 = 0)
Each set is split into train and an in-domain validation part held apart (disjoint, seeded). Mixtures draw
components by proportion (largest-remainder rounding, so every component is within one problem of its share, in
train and in val separately) without reusing a problem across components.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rlscale.errors import UserError
from rlscale.evals import metrics

PROFILE_COLUMNS = ("problem_id", "n", "correct", "avg")


@dataclass(frozen=True)
class Bucket:
    """An interval of per-problem avg (or, when zero_only, the problems with no correct sample)."""

    name: str
    lo: float = 0.0
    hi: float = 1.0
    lo_open: bool = False
    hi_open: bool = False
    zero_only: bool = False

    def mask(self, df) -> np.ndarray:
        if self.zero_only:
            return (df["correct"].to_numpy() == 0)
        a = df["avg"].to_numpy(dtype=float)
        lo_ok = a > self.lo if self.lo_open else a >= self.lo
        hi_ok = a < self.hi if self.hi_open else a <= self.hi
        return lo_ok & hi_ok

    def describe(self) -> str:
        if self.zero_only:
            return "correct == 0 (pass@n = 0)"
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


DEFAULT_BUCKETS: dict[str, Bucket] = {
    "easy": Bucket("easy", 0.3, 0.6),
    "hard": Bucket("hard", 0.0, 0.0625),
    "very_easy": Bucket("very_easy", 0.6, 0.9, lo_open=True),
    "extremely_hard": Bucket("extremely_hard", zero_only=True),
}

_INTERVAL = re.compile(r"^\s*([\[(]?)\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*([\])]?)\s*$")


def parse_bucket(name: str, text: str) -> Bucket:
    """'0.3,0.6' (closed), '[0.3,0.6]', '(0.6,0.9]', '[0,0.5)' -> Bucket; lo <= hi within [0, 1]."""
    m = _INTERVAL.match(text)
    if not m:
        raise UserError(f"--{name.replace('_', '-')} {text!r}: write the bounds as LO,HI (closed) or e.g. (0.6,0.9]")
    lo, hi = float(m.group(2)), float(m.group(3))
    if not 0.0 <= lo <= hi <= 1.0:
        raise UserError(f"--{name.replace('_', '-')} {text!r}: need 0 <= LO <= HI <= 1")
    return Bucket(name, lo, hi, lo_open=m.group(1) == "(", hi_open=m.group(4) == ")")


# --------------------------------------------------------------------------------------------------- profiles
def profile_table(result, problems: Sequence, mode: str):
    """A DataFrame with one row per problem: problem_id, n, correct, avg (+ pass@128 when n >= 128), the mean
    response length, and the problem's fields (question, answer, solution, meta as JSON) for curation."""
    import pandas as pd

    by_id = {p.id: p for p in problems}
    # chain counts (the lab's arith profile) only when every record has one: parts written before the count (a
    # resumed profile) leave the column out rather than half filled
    chains = bool(result.records) and all("chain_valid" in r for r in result.records)
    rows = []
    for r in result.records:
        p = by_id[r["problem_id"]]
        m = r["modes"][mode]
        rows.append({"problem_id": r["problem_id"], "n": r["n"], "correct": m["correct"],
                     "avg": m["correct"] / r["n"], "scorable": m["scorable"],
                     "mean_length": float(np.mean(r["lengths"])) if r["lengths"] else 0.0,
                     "truncated": r["truncated"], "question": p.question, "answer": p.answer,
                     "solution": p.solution, "meta": json.dumps(dict(p.meta), default=str)})
        if chains:
            rows[-1]["correct_valid_chain"] = r["chain_valid"]
    df = pd.DataFrame(rows)
    if len(df) and int(df["n"].min()) >= 128:
        df["pass@128"] = metrics.pass_at_k(df["n"].to_numpy(), df["correct"].to_numpy(), 128)
    return df


def reward_precision(df) -> float | None:
    """Of the correct samples of a profile's rows, the fraction whose worked chain is right (column
    correct_valid_chain, written for the arith task); None when there is no correct sample. The rest reached the
    gold answer through wrong steps: the outcome reward pays for them all the same."""
    correct = int(df["correct"].sum())
    return float(df["correct_valid_chain"].sum()) / correct if correct else None


def chance_rates(answers) -> dict | None:
    """What answering without solving scores on problems with these gold answers: `constant`, the accuracy of the
    best constant answer (a collapsed policy that always prints it), and `guess`, sum_a f_a^2 over the answers'
    frequencies f_a (a policy that draws an answer from the same distribution, independently of the question);
    None for no answers. A set whose pass rate is near these is solved at chance: its rewards carry no more signal
    about the reasoning than a guess."""
    from collections import Counter

    counts = Counter(str(a).strip() for a in answers)
    total = sum(counts.values())
    if not total:
        return None
    freqs = np.array(list(counts.values()), float) / total
    return {"constant": float(freqs.max()), "guess": float((freqs ** 2).sum()), "answers": len(counts)}


def check_profile(df, source: str = "profile") -> None:
    if df is None or len(df) == 0:
        raise UserError(f"{source}: the profile is empty; run `rlscale profile` on a non-empty split")
    missing = [c for c in PROFILE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)}; write it with `rlscale profile`")
    if df["problem_id"].duplicated().any():
        dup = df["problem_id"][df["problem_id"].duplicated()].iloc[0]
        raise UserError(f"{source}: problem_id {dup!r} appears twice")


def histogram(avg: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of per-problem pass rates: one bin per possible value c/n when n <= 32, else 20 bins."""
    if n <= 32:
        edges = (np.arange(n + 2) - 0.5) / n
    else:
        edges = np.linspace(0, 1, 21)
    counts, edges = np.histogram(np.clip(avg, 0, 1), bins=edges)
    return counts, edges


def text_histogram(avg: np.ndarray, n: int, width: int = 40) -> str:
    counts, edges = histogram(avg, n)
    top = max(int(counts.max()), 1) if len(counts) else 1
    lines = []
    for i, cnt in enumerate(counts):
        label = f"{round((edges[i] + edges[i + 1]) / 2 * n):>3}/{n}" if n <= 32 else \
            f"[{edges[i]:.2f},{edges[i + 1]:.2f})"
        lines.append(f"{label:>13} {'#' * round(width * int(cnt) / top):<{width}} {int(cnt)}")
    return "\n".join(lines)


def plot_histogram(avg: np.ndarray, n: int, path, title: str = "") -> None:
    """PNG histogram of per-problem pass rates (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from rlscale.io import atomic_write_bytes

    counts, edges = histogram(avg, n)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black")
    ax.set_xlabel(f"per-problem pass rate (avg@{n})")
    ax.set_ylabel("problems")
    ax.set_title(title)
    for b in (DEFAULT_BUCKETS["hard"], DEFAULT_BUCKETS["easy"]):
        ax.axvspan(b.lo, b.hi, alpha=0.12, color="tab:orange" if b.name == "easy" else "tab:red")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------------------------------- curation
def largest_remainder(proportions: Sequence[float], total: int) -> list[int]:
    """Integer counts summing to total, each within one of p_i * total (Hamilton's method; ties by order)."""
    p = np.asarray(proportions, dtype=float)
    if total < 0 or (p < 0).any() or p.sum() <= 0:
        raise UserError("mixture proportions must be >= 0 with a positive sum, and the total >= 0")
    quotas = p / p.sum() * total
    counts = np.floor(quotas + 1e-9).astype(int)
    rest = total - int(counts.sum())
    order = sorted(range(len(p)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return [int(c) for c in counts]


def split_train_val(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded shuffle, then round(val_fraction * len) ids held out for validation (disjoint from train)."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    ids = sorted(ids)
    rng = np.random.default_rng(seed)
    perm = [ids[i] for i in rng.permutation(len(ids))]
    n_val = int(round(val_fraction * len(perm)))
    return perm[n_val:], perm[:n_val]


def bucket_sets(df, buckets: Mapping[str, Bucket], val_fraction: float = 0.1,
                seed: int = 0) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (train ids, val ids) for each bucket; a bucket that selects nothing is a UserError."""
    check_profile(df)
    out = {}
    for name, b in buckets.items():
        ids = df["problem_id"][b.mask(df)].astype(str).tolist()
        if not ids:
            raise UserError(f"bucket {name} {b.describe()} selects no problem of the {len(df)} in the profile; "
                            f"widen --{name.replace('_', '-')}")
        out[name] = split_train_val(ids, val_fraction, seed)
    return out


def parse_mix(text: str) -> dict[str, float]:
    """'hard=0.5,easy=0.5' -> {'hard': 0.5, 'easy': 0.5}."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--mix {text!r}: write BUCKET=PROPORTION pairs, e.g. hard=0.5,easy=0.5")
    return out


def mixture(df, proportions: Mapping[str, float], total: int, buckets: Mapping[str, Bucket],
            val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train ids, val ids) of a mixture of `total` problems (train + val) drawn from buckets by proportion.

    Train holds total - round(val_fraction * total) problems and val the rest; each is split across components by
    largest remainder. Components draw (seeded, without replacement) from the bucket's problems not yet used by an
    earlier component, so train and val are disjoint and no problem appears twice.
    """
    check_profile(df)
    unknown = [b for b in proportions if b not in buckets]
    if unknown:
        raise UserError(f"--mix: unknown bucket(s) {', '.join(unknown)}; choose from {', '.join(buckets)}")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    if total < 1:
        raise UserError(f"--total {total}: must be >= 1")
    names = list(proportions)
    n_val = int(round(val_fraction * total))
    train_counts = largest_remainder([proportions[b] for b in names], total - n_val)
    val_counts = largest_remainder([proportions[b] for b in names], n_val)
    rng = np.random.default_rng(seed)
    used: set[str] = set()
    train, val = [], []
    for name, nt, nv in zip(names, train_counts, val_counts):
        pool = sorted(set(df["problem_id"][buckets[name].mask(df)].astype(str)) - used)
        if nt + nv > len(pool):
            raise UserError(f"--mix: bucket {name} has {len(pool)} unused problems but the mixture needs "
                            f"{nt + nv}; lower --total or change the proportions")
        pick = [pool[i] for i in rng.permutation(len(pool))[: nt + nv]]
        train += pick[:nt]
        val += pick[nt:]
        used.update(pick)
    return train, val
