"""`rlscale show TASK`: print problems with their gold answers (and optionally the rendered prompt)."""

from __future__ import annotations

import argparse

HELP = "print a task's problems and gold answers, optionally the rendered k-shot prompt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="task name (see `rlscale tasks`)")
    parser.add_argument("--split", default="test", help="split to show")
    parser.add_argument("--limit", type=int, default=3, help="number of problems")
    parser.add_argument("--data-path", default=None, help="a .jsonl/.parquet file to read instead of the data dir")
    parser.add_argument("--hf", action="store_true", help="download with datasets.load_dataset if no local file")
    parser.add_argument("--shots", type=int, default=None,
                        help="also print the prompt rendered with this many exemplars (0 = zero-shot prompt)")
    parser.add_argument("--exemplar-path", default=None,
                        help="file to draw exemplars from (default: the task's exemplar split, see `rlscale eval`)")
    parser.add_argument("--template", default=None, help="prompt template (default: the task's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the exemplar choice")
    parser.add_argument("--solution", action="store_true", help="also print each problem's worked solution")


def run(args: argparse.Namespace) -> int:
    from rlscale.evals.evaluate import exemplar_pool, load_problems
    from rlscale.prompts import render, select_exemplars
    from rlscale.tasks import get_task

    task = get_task(args.task)
    problems = load_problems(task, args.split, data_path=args.data_path, limit=args.limit, hf=args.hf)
    template = args.template or task.template
    pool = []
    if args.shots:
        pool = exemplar_pool(task, args.split, exemplar_path=args.exemplar_path, data_path=args.data_path,
                             hf=args.hf)
    for p in problems:
        print(f"=== {p.id}")
        print(p.question)
        if args.solution and p.solution:
            print(f"--- solution\n{p.solution}")
        print(f"--- gold: {p.answer}")
        if args.shots is not None:
            ex = select_exemplars(pool, args.shots, seed=args.seed, exclude=(p.id, p.question)) if args.shots else []
            print(f"--- prompt ({template}, {args.shots}-shot)")
            print(render(p, template, shots=args.shots, exemplars=ex))
    print(f"({len(problems)} problems from {task.name}/{args.split})")
    return 0

