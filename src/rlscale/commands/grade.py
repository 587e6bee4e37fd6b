"""`rlscale grade`: grade a JSONL file of completions, write one result line per input line, print a summary.

    rlscale grade --task gsm8k --predictions preds.jsonl --mode strict --output graded.jsonl --json

Input lines: {"id": ..., "completion": ...} (gold looked up in --task by id) or {"gold": ..., "completion": ...}.
Everything is validated before anything is graded or written; the output is written atomically.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from rlscale.errors import UserError

HELP = "grade completions against gold answers (strict/flexible/custom_flexible/boxed/math)"
DESCRIPTION = (
    "Grade a JSONL file whose lines hold {\"id\": ..., \"completion\": ...} (gold from --task by id) or\n"
    "{\"gold\": ..., \"completion\": ...}. Writes the input fields plus extracted, reward, reason, mode and\n"
    "grading_version per line, in order, and prints a summary (with --json the last line is one JSON object)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlscale.grading import MODES

    parser.add_argument("--predictions", required=True, metavar="P.jsonl", help="completions to grade (JSONL)")
    parser.add_argument("--task", default=None, help="task whose gold answers are looked up by id "
                        "(gsm8k, math500, arith, ...); needed only for lines without a 'gold' field")
    parser.add_argument("--mode", default=None, choices=MODES, help="grading mode (default: the task's default mode)")
    parser.add_argument("--split", default="test", help="task split the ids come from")
    parser.add_argument("--data-path", default=None, metavar="FILE", help="local data file for the task "
                        "(.jsonl/.parquet); default: the task's usual location")
    parser.add_argument("--output", default=None, metavar="R.jsonl",
                        help="where to write graded lines (default: P.graded.jsonl next to the predictions)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object (last line)")
    parser.add_argument("--workers", type=int, default=None, help="processes for symbolic checks (default: all cores)")
    parser.add_argument("--timeout", type=float, default=3.0, help="hard time limit per symbolic comparison, seconds")


def _load_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every non-empty line; malformed JSON names file and line."""
    from rlscale.io import iter_jsonl_numbered

    if not path.exists():
        raise UserError(f"{path}: file not found; pass --predictions with a JSONL file of completions")
    rows = list(iter_jsonl_numbered(path))
    if not rows:
        raise UserError(f"{path}: no predictions (the file is empty)")
    return rows


def _golds_by_id(args) -> tuple[dict[str, str], str]:
    from rlscale.tasks.base import get_task

    task = get_task(args.task)
    if args.split not in task.splits:
        raise UserError(f"--split '{args.split}' is not a split of task '{task.name}'; valid: {', '.join(task.splits)}")
    problems = task.load(args.split, args.data_path)
    return {str(p.id): p.answer for p in problems}, task.default_mode


def resolve_golds(rows: list[tuple[int, dict]], path: Path, args) -> tuple[list, list[str], str]:
    """Validate every line and return (golds, completions, mode) before any grading."""
    task_golds: dict[str, str] | None = None
    default_mode = None
    if args.task is not None:
        task_golds, default_mode = _golds_by_id(args)
    golds, completions = [], []
    for lineno, row in rows:
        if "completion" not in row:
            raise UserError(f"{path}:{lineno}: missing field 'completion'")
        if not isinstance(row["completion"], str):
            raise UserError(f"{path}:{lineno}: field 'completion' must be a string, got {type(row['completion']).__name__}")
        if "gold" in row:
            gold = row["gold"]
            if not isinstance(gold, (str, int, float)) or isinstance(gold, bool):
                raise UserError(f"{path}:{lineno}: field 'gold' must be a string or number")
        elif "id" in row:
            if task_golds is None:
                raise UserError(f"{path}:{lineno}: field 'id' needs --task to look up the gold (or give a 'gold' field)")
            key = str(row["id"])
            if key not in task_golds:
                example = next(iter(task_golds), "none")
                raise UserError(f"{path}:{lineno}: field 'id': unknown id '{key}' in task '{args.task}' split "
                                f"'{args.split}' (ids look like '{example}')")
            gold = task_golds[key]
        else:
            raise UserError(f"{path}:{lineno}: missing field 'gold' (or 'id' together with --task)")
        golds.append(gold)
        completions.append(row["completion"])
    mode = args.mode or default_mode
    if mode is None:
        raise UserError("--mode is required when --task is not given")
    from rlscale.grading import check_mode

    return golds, completions, check_mode(mode)


def summarize(results) -> dict:
    """{"n", "correct", "accuracy" (over scorable lines), "unscorable", "timeouts", "by_reason"}."""
    by_reason = Counter(r.reason for r in results)
    n = len(results)
    unscorable = sum(r.reward is None for r in results)
    correct = by_reason.get("correct", 0)
    scorable = n - unscorable
    return {"n": n, "correct": correct, "accuracy": correct / scorable if scorable else None,
            "unscorable": unscorable, "timeouts": by_reason.get("timeout", 0), "by_reason": dict(sorted(by_reason.items()))}


def run(args) -> int:
    from rlscale.grading import GRADING_VERSION, score_batch
    from rlscale.io import atomic_write_jsonl

    path = Path(args.predictions)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be > 0 seconds, got {args.timeout}")
    output = Path(args.output) if args.output else path.with_name(path.name.removesuffix(".jsonl") + ".graded.jsonl")
    if output.resolve() == path.resolve():
        raise UserError(f"--output {output} would overwrite the predictions; choose another path")
    rows = _load_rows(path)
    golds, completions, mode = resolve_golds(rows, path, args)
    results = score_batch(completions, golds, mode, workers=args.workers, timeout_s=args.timeout)
    out_rows = [{**row, **r.to_dict(), "mode": mode, "grading_version": GRADING_VERSION}
                for (_, row), r in zip(rows, results)]
    atomic_write_jsonl(output, out_rows)
    summary = summarize(results)
    acc = "n/a" if summary["accuracy"] is None else f"{summary['accuracy']:.4f}"
    print(f"graded {summary['n']} lines in mode {mode} (grading v{GRADING_VERSION}): correct {summary['correct']}, "
          f"accuracy {acc}, unscorable {summary['unscorable']}, timeouts {summary['timeouts']}")
    print("by reason: " + ", ".join(f"{k} {v}" for k, v in summary["by_reason"].items()))
    print(f"wrote {output}")
    if args.json:
        print(json.dumps({**summary, "mode": mode, "grading_version": GRADING_VERSION, "output": str(output)}))
    return 0
