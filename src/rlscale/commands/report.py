"""`rlscale report DIR`: (re)build DIR/report.html from the stored records of a lab or sweep directory."""

from __future__ import annotations

HELP = "build DIR/report.html (self-contained, figures embedded) from a lab or sweep directory's records"
DESCRIPTION = HELP + (
    "\n\nA lab directory (`rlscale lab --out DIR`) gives the whole study: configuration, difficulty histogram,"
    "\nreward-vs-compute per n with fits and the frontier, n*(C) for Easy and Hard with CIs, best@k / worst@k,"
    "\ntraining diagnostics, compute per stage and the planner's prescription. A sweep directory gives the"
    "\nsweep and fit sections. Everything is read from the store (run.db, fit.json, stages.json, plan.json)."
)


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="lab directory (has lab.json) or sweep directory (has sweep.json)")


def run(args) -> int:
    from rlscale.report import build_report

    path = build_report(args.dir)
    print(f"wrote {path}")
    return 0
