"""`rlscale lab`: pretrain -> profile -> curate Easy/Hard -> iso-compute sweeps -> fit -> plan -> report, on a CPU."""

from __future__ import annotations

HELP = "run the whole compute-optimal RL study on a tiny lab model end to end (resumable) and write a report"
DESCRIPTION = HELP + (
    "\n\nStages: pretrain, profile (avg@16 of the arith pool), curate (Easy [0.3,0.6], Hard [0,0.0625] in quick,"
    "\n[0.0625,0.25] in full, with held-out validation), sweep_easy, sweep_hard (n at fixed B_problem; a set's"
    "\nvalidation, budget and grid can differ: preset field set_overrides), export, fit (frontier, n*(C)), plan"
    "\n(4x the spent budget), sizes (the same study for each further model size of the preset's `sizes`, in"
    "\nOUT/sizes/<size>/; a size's seeds, budget, grid or rate can differ: size_overrides), report. Finished"
    "\nstages are reused; re-run the same command to resume. A preset that only adds seeds (with the lab's"
    "\nname) extends a finished lab in place: only the new runs train, then fit and report are redone."
    "\nPresets: quick (<= 15 min on 2 cores), full (<= 2 h). Knobs: rlscale.lab.pipeline.PRESETS."
    "\n\nA real model instead of a lab model: `--model HF_DIR --task gsm8k --data-path train.jsonl` skips"
    "\npretraining and runs the same stages on that model and task (RL rate 1e-6 unless the preset sets lr)."
)


def add_arguments(parser) -> None:
    from rlscale.lab.pipeline import PRESETS

    parser.add_argument("--preset", default="quick",
                        help=f"lab preset: {' | '.join(PRESETS)}, or a .json file of LabPreset fields "
                             '(e.g. {"base": "quick", "max_rollouts": 16384})')
    parser.add_argument("--out", default="lab_out", help="output directory (reused and resumed when it exists)")
    parser.add_argument("--reuse", metavar="LAB_DIR", default=None,
                        help="start a new --out from another lab's model (and profile, when the preset's pretraining "
                             "and profiling fields agree with it): for variants of the curation, sweeps or fit")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="study this base model (a Hugging Face causal-LM directory) instead of pretraining one; "
                             "sets the preset's `model` (its pretraining fields are then ignored)")
    parser.add_argument("--task", default=None,
                        help="the task of the pool, reward and validation (`rlscale tasks`; default arith, the only "
                             "one the lab pretrains on: others need --model)")
    parser.add_argument("--data-path", default=None, metavar="FILE",
                        help="a .jsonl/.parquet file of the task's training problems, the profiled pool")
    parser.add_argument("--template", default=None, help="prompt template (default: the task's)")
    parser.add_argument("--grading-mode", default=None,
                        help="grader of the profile, the reward and validation (default: the preset's; with --task, "
                             "the task's own, e.g. math for \\boxed{} answers)")
    parser.add_argument("--workers", type=int, default=2, help="parallel worker processes (profile and sweeps)")
    parser.add_argument("--json", action="store_true", help="print stages.json as JSON at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def preset_from_args(args):
    """The preset named by --preset with --model / --task / --data-path / --template / --grading-mode applied;
    --task without --grading-mode takes the task's own grader."""
    import dataclasses

    from rlscale.lab.pipeline import get_preset

    given = {k: v for k in ("model", "task", "data_path", "template", "grading_mode")
             if (v := getattr(args, k)) is not None}
    if args.task is not None and args.grading_mode is None:
        from rlscale.tasks import get_task

        given["grading_mode"] = get_task(args.task).default_mode
    return dataclasses.replace(get_preset(args.preset), **given)


def run(args) -> int:
    import json
    from pathlib import Path

    from rlscale.lab.pipeline import run_lab
    from rlscale.report import read_headline

    preset = preset_from_args(args)
    stages = run_lab(preset, args.out, progress=not args.quiet, workers=args.workers,
                     reuse=args.reuse)
    report = Path(args.out).resolve() / "report.html"
    headline = read_headline(args.out)  # the report's verdicts, "In short: ..."
    if args.json:
        print(json.dumps({"report": str(report), "stages": stages, "headline": headline}, indent=2, sort_keys=True))
    else:
        wall = sum(float(s.get("wall_s") or 0.0) for s in stages.values())
        print(f"lab '{args.preset}' finished ({wall:.0f} s of stage time in total); report: {report}")
        if headline:
            print(headline)
    return 0
