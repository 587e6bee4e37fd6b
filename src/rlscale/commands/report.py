"""`rlscale report DIR`: (re)build DIR/report.html from the stored records of a lab or sweep directory."""

from __future__ import annotations

HELP = "build DIR/report.html (self-contained, figures embedded) from a lab or sweep directory's records"
DESCRIPTION = HELP + (
    "\n\nA lab directory (`rlscale lab --out DIR`) gives the whole study: configuration, difficulty histogram,"
    "\nreward-vs-compute per n with fits and the frontier, n*(C) for Easy and Hard with CIs, best@k / worst@k,"
    "\ntraining diagnostics, compute per stage and the planner's prescription. A sweep directory gives the"
    "\nsweep and fit sections. Everything is read from the store (run.db, fit.json, stages.json, plan.json)."
    "\n\nThe CoScale-RL section (pool transitions, N per partition, accuracy vs rollouts against plain GRPO, the"
    "\nlab table) is added from DIR/coscale when it exists (`rlscale coscale --preset lab-quick --out DIR/coscale`)"
    "\nor from the directory given with --coscale."
)


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="lab directory (has lab.json) or sweep directory (has sweep.json)")
    parser.add_argument("--coscale", metavar="CSDIR", default=None,
                        help="CoScale-RL run or lab comparison directory (`rlscale coscale --out CSDIR`) whose "
                             "section is added; default: DIR/coscale when it exists")


def run(args) -> int:
    from rlscale.report import build_report, read_headline

    path = build_report(args.dir, coscale=args.coscale)
    print(f"wrote {path}")
    headline = read_headline(args.dir)
    if headline:
        print(headline)
    return 0
