"""`rlscale profile`: per-problem pass rates (avg@n, and pass@128 when n >= 128) of a model on a split, saved as a
table, with a text histogram on stdout and a PNG histogram next to the table."""

from __future__ import annotations

import argparse

HELP = "difficulty profile: per-problem avg@n of a model on a split, saved as a table plus a histogram PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlscale.commands.eval import add_sampling_arguments

    add_sampling_arguments(parser)
    parser.set_defaults(split="train")
    parser.add_argument("--out", required=True, help="profile table (.jsonl, .csv or .parquet)")


def png_path(out):
    from pathlib import Path

    out = Path(out)
    return out.with_name(out.stem + ".hist.png")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlscale.commands.eval import load_sampler, sampling_params
    from rlscale.errors import UserError
    from rlscale.evals.difficulty import plot_histogram, profile_table, text_histogram
    from rlscale.evals.evaluate import check_modes, evaluate, load_problems
    from rlscale.io import TABLE_SUFFIXES, write_table
    from rlscale.tasks import get_task

    if Path(args.out).suffix.lower() not in TABLE_SUFFIXES:
        raise UserError(f"--out {args.out}: use a {', '.join(TABLE_SUFFIXES)} suffix")
    task = get_task(args.task)
    params, template = sampling_params(args, task)
    mode = (args.mode or task.default_mode).split(",")[0].strip()
    check_modes([mode])
    problems = load_problems(task, args.split, data_path=args.data_path, limit=args.limit, hf=args.hf)
    sampler = load_sampler(args.model, args.engine)
    res = evaluate(problems, sampler, template=template, params=params, modes=(mode,), ks=(1,),
                   progress=not args.no_progress)
    df = profile_table(res, problems, mode)
    write_table(df, args.out)
    avg = df["avg"].to_numpy()
    print(f"{task.name}/{args.split}: {len(df)} problems x {params.n} samples, mode {mode}, "
          f"mean avg@{params.n} = {avg.mean():.4f}")
    print(text_histogram(avg, params.n))
    plot_histogram(avg, params.n, png_path(args.out), title=f"{task.name}/{args.split} ({args.model})")
    print(f"wrote {args.out} and {png_path(args.out)}")
    return 0
