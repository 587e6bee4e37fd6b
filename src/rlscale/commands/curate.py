"""`rlscale curate`: problem sets from a difficulty profile: Easy, Hard, Very Easy, Extremely Hard and mixtures,
each as DIR/<set>/train.jsonl and val.jsonl (disjoint), plus DIR/manifest.json."""

from __future__ import annotations

import argparse

HELP = "curate Easy/Hard/Very-Easy/Extremely-Hard sets and mixtures from a profile, each with a held-out val split"
DESCRIPTION = HELP + """

Bounds are intervals of per-problem avg: LO,HI is closed; brackets choose open/closed ends, e.g. (0.6,0.9].
Extremely Hard is correct == 0 (pass@n = 0). Every written row holds the problem (id, question, answer, solution,
meta) and its profile stats, so `--data-path DIR/<set>/train.jsonl` loads it for any task."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", required=True, help="profile table written by `rlscale profile`")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--easy", default="0.3,0.6", help="Easy bounds on avg")
    parser.add_argument("--hard", default="0,0.0625", help="Hard bounds on avg")
    parser.add_argument("--very-easy", default="(0.6,0.9]", help="Very Easy bounds on avg")
    parser.add_argument("--sets", default="easy,hard,very_easy,extremely_hard",
                        help="comma-separated bucket sets to write (empty: only the mixture)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fraction of each set held out as val")
    parser.add_argument("--mix", default=None, help="mixture proportions, e.g. hard=0.5,easy=0.5")
    parser.add_argument("--total", type=int, default=None, help="mixture size (train + val)")
    parser.add_argument("--name", default=None, help="mixture set name (default: mix_<bucket><pct>_...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and the mixture draw")


def rows_for(df, ids):
    import json

    by_id = df.set_index(df["problem_id"].astype(str))
    rows = []
    for pid in ids:
        r = by_id.loc[pid]
        meta = r.get("meta", "{}")
        meta = json.loads(meta) if isinstance(meta, str) and meta else (meta if isinstance(meta, dict) else {})
        rows.append({"id": pid, "question": str(r.get("question", "")), "answer": str(r.get("answer", "")),
                     "solution": str(r.get("solution", "") or ""), "meta": meta, "n": int(r["n"]),
                     "correct": int(r["correct"]), "avg": float(r["avg"])})
    return rows


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlscale.errors import UserError
    from rlscale.evals.difficulty import (
        DEFAULT_BUCKETS,
        bucket_sets,
        check_profile,
        mixture,
        parse_bucket,
        parse_mix,
    )
    from rlscale.io import atomic_write_json, atomic_write_jsonl, read_table

    df = read_table(args.profile)
    check_profile(df, args.profile)
    if "question" not in df.columns:
        raise UserError(f"{args.profile}: no 'question' column; profiles from `rlscale profile` carry the problems")
    buckets = dict(DEFAULT_BUCKETS)
    buckets["easy"] = parse_bucket("easy", args.easy)
    buckets["hard"] = parse_bucket("hard", args.hard)
    buckets["very_easy"] = parse_bucket("very_easy", args.very_easy)
    wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in buckets]
    if unknown:
        raise UserError(f"--sets: unknown set(s) {', '.join(unknown)}; choose from {', '.join(buckets)}")
    sets = bucket_sets(df, {s: buckets[s] for s in wanted}, args.val_fraction, args.seed)
    manifest = {"profile": str(args.profile), "problems": len(df), "seed": args.seed,
                "val_fraction": args.val_fraction, "sets": {}}
    for s in wanted:
        manifest["sets"][s] = {"bounds": buckets[s].describe()}
    if args.mix:
        if args.total is None:
            raise UserError("--mix needs --total N (the mixture size, train + val)")
        props = parse_mix(args.mix)
        name = args.name or "mix_" + "_".join(f"{b}{round(100 * p / sum(props.values()))}" for b, p in props.items())
        sets[name] = mixture(df, props, args.total, buckets, args.val_fraction, args.seed)
        manifest["sets"][name] = {"mix": props, "total": args.total}
    elif args.total is not None:
        raise UserError("--total is only used with --mix")
    if not sets:
        raise UserError("nothing to write: pass --sets and/or --mix")
    out = Path(args.out)
    for name, (train, val) in sets.items():
        atomic_write_jsonl(out / name / "train.jsonl", rows_for(df, train))
        atomic_write_jsonl(out / name / "val.jsonl", rows_for(df, val))
        avg = df.set_index(df["problem_id"].astype(str)).loc[train + val, "avg"]
        manifest["sets"][name].update({"train": len(train), "val": len(val),
                                       "avg_min": float(avg.min()), "avg_max": float(avg.max())})
        print(f"{name:<24} train {len(train):>6}  val {len(val):>5}  avg in [{avg.min():.4f}, {avg.max():.4f}]")
    atomic_write_json(out / "manifest.json", manifest)
    print(f"wrote {out}/manifest.json")
    return 0
