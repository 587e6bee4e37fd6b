"""`rlscale tasks`: list the registered tasks with their splits, default grading mode, template and data location."""

from __future__ import annotations

import argparse

HELP = "list the tasks (gsm8k, math500, math, mmlu, arith): splits, default grading mode, where data is looked for"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per task instead of a table")


def data_location(name: str) -> str:
    from rlscale.tasks import real

    if name in real.HF_SOURCES:
        return real.where(name)
    return "generated from a fixed seed (or --data-path FILE.jsonl with id/question/answer)"


def run(args: argparse.Namespace) -> int:
    import json

    from rlscale.tasks import TASKS

    for name, task in TASKS.items():
        row = {"name": name, "description": task.description, "splits": list(task.splits),
               "default_mode": task.default_mode, "template": task.template, "data": data_location(name)}
        if args.json:
            print(json.dumps(row))
            continue
        print(f"{name:<9} {task.description}")
        print(f"{'':<9} splits: {', '.join(task.splits)}; mode: {task.default_mode}; template: {task.template}")
        print(f"{'':<9} data: {row['data']}")
    return 0
