"""`rlscale sweep plan|run|status|export`: iso-compute grids over (n, B_problem, M), resumable, local or on Ray."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

HELP = "iso-compute sweeps over (n, B_problem, M): plan, run (local workers or Ray), status, export"
DESCRIPTION = """Iso-compute sweeps: every budget C is spent as C = n * B_problem * M with n, B_problem powers of two
and n * B_problem <= B_max. A spec file (TOML or YAML) declares the grid; see examples/sweeps/lab_small.toml.

  rlscale sweep plan SPEC                       list the runs, epochs and estimated wall time
  rlscale sweep run SPEC --out DIR [--workers W] [--ray ADDRESS|auto]
                                                run (re-run the same command to resume; a spec
                                                with more seeds adds their runs to DIR)
  rlscale sweep status DIR                      runs done/running/queued/failed, rollouts, last val/avg
  rlscale sweep export DIR --format csv|parquet --output FILE
                                                one row per (run, validation point), ready for `rlscale fit`"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlscale.sweep.plan import DEFAULT_SEC_PER_ROLLOUT, DEFAULT_SEC_PER_VAL, DEFAULT_STARTUP_S

    sub = parser.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True,
                                parser_class=type(parser))
    fmt = parser.formatter_class

    p = sub.add_parser("plan", help="print the runs of a spec (nothing is run)", formatter_class=fmt)
    p.add_argument("spec", help="sweep spec file (.toml, .yaml)")
    p.add_argument("--calibrate", action="store_true",
                   help="time a 2-step GRPO run of the base model to estimate seconds per rollout")
    p.add_argument("--sec-per-rollout", type=float, default=DEFAULT_SEC_PER_ROLLOUT,
                   help="seconds per rollout for the wall-time estimate when not calibrating")
    p.add_argument("--sec-per-val", type=float, default=DEFAULT_SEC_PER_VAL,
                   help="seconds per validation point when not calibrating")
    p.add_argument("--startup-s", type=float, default=DEFAULT_STARTUP_S,
                   help="start-up seconds per run process when not calibrating")
    p.add_argument("--workers", type=int, default=1, help="parallel workers assumed for the total wall time")
    p.set_defaults(_run=run_plan)

    p = sub.add_parser("run", help="run the grid (resumes: finished runs are skipped; more seeds extend it)", formatter_class=fmt)
    p.add_argument("spec", help="sweep spec file (.toml, .yaml)")
    p.add_argument("--out", required=True, help="sweep directory (created; re-use it to resume)")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel runs (local processes; with --ray auto, the local cluster's CPU slots)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run as Ray tasks on the cluster at ADDRESS (host:port or ray://host:port); "
                        "'auto' starts a local Ray cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress view on stderr")
    p.set_defaults(_run=run_run)

    p = sub.add_parser("status", help="status of each run of a sweep directory", formatter_class=fmt)
    p.add_argument("sweepdir", help="sweep directory")
    p.set_defaults(_run=run_status)

    p = sub.add_parser("export", help="write the tidy table (run, validation point)", formatter_class=fmt)
    p.add_argument("sweepdir", help="sweep directory")
    p.add_argument("--format", choices=("parquet", "csv", "jsonl"), default=None,
                   help="table format (default: from the --output suffix)")
    p.add_argument("--output", required=True, help="output file")
    p.set_defaults(_run=run_export)


def run(args: argparse.Namespace) -> int:  # dispatched through set_defaults(_run=...) of each subcommand
    return args._run(args)


def run_plan(args: argparse.Namespace) -> int:
    from rlscale.errors import UserError
    from rlscale.sweep.plan import Costs, calibrate, format_plan, plan_rows
    from rlscale.sweep.spec import load_spec

    spec = load_spec(args.spec)
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    for name in ("sec_per_rollout", "sec_per_val", "startup_s"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0")
    costs = calibrate(spec) if args.calibrate else Costs(args.sec_per_rollout, args.sec_per_val, args.startup_s)
    print(format_plan(plan_rows(spec, costs), workers=args.workers, costs=costs))
    return 0


def run_run(args: argparse.Namespace) -> int:
    from rlscale.sweep.run import failure_message, run_sweep
    from rlscale.sweep.spec import load_spec

    spec = load_spec(args.spec)
    result = run_sweep(spec, args.out, workers=args.workers, ray_address=args.ray, progress=not args.no_progress)
    out = Path(args.out).resolve()
    print(f"sweep {out}: {len(result.done)} run(s) finished now, {len(result.skipped)} already finished, "
          f"{len(result.failed)} failed; {result.wall_s:.1f} s")
    if result.failed:
        print(failure_message(out, result.failed), file=sys.stderr)
        print(f"re-run `rlscale sweep run {args.spec} --out {args.out}` to resume the failed runs", file=sys.stderr)
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    from rlscale.sweep.export import status_rows

    rows = status_rows(args.sweepdir)
    print(f"{'run_id':<12} {'budget':>9} {'n':>4} {'B_prob':>6} {'M':>6} {'seed':>5} {'status':>8} "
          f"{'rollouts':>17} {'val/avg':>8}")
    for r in rows:
        val = "-" if math.isnan(r["val/avg"]) else f"{r['val/avg']:.4f}"
        spent = f"{r['rollouts_done']}/{r['rollouts_planned']}"
        print(f"{r['run_id']:<12} {r['budget']:>9} {r['n']:>4} {r['problems_per_batch']:>6} {r['iterations']:>6} "
              f"{r['seed']:>5} {r['status']:>8} {spent:>17} {val:>8}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "queued", "failed", "interrupted")}
    print(f"{len(rows)} runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from rlscale.errors import UserError
    from rlscale.io import write_table
    from rlscale.sweep.export import load_sweep_table, status_rows

    output = Path(args.output)
    fmt = args.format or output.suffix.lower().lstrip(".")
    if fmt not in ("parquet", "csv", "jsonl"):
        raise UserError(f"--output {output}: cannot tell the format from the suffix; give --format parquet|csv")
    if output.suffix.lower() != f".{fmt}":
        raise UserError(f"--output {output}: suffix does not match --format {fmt}; name the file *.{fmt}")
    df = load_sweep_table(args.sweepdir)
    write_table(df, output)
    unfinished = [r["run_id"] for r in status_rows(args.sweepdir) if r["status"] != "done"]
    print(f"wrote {output}: {len(df)} rows, {df['run_id'].nunique() if len(df) else 0} runs")
    if unfinished:
        print(f"note: {len(unfinished)} run(s) not finished ({', '.join(unfinished[:5])}"
              f"{', ...' if len(unfinished) > 5 else ''}); their rows so far are included", file=sys.stderr)
    return 0
