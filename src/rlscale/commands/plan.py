"""`rlscale plan --fit DIR --budget C [--problems-per-batch B]`: prescribe n, B_problem, M and lr for a rollout
budget from an isocompute fit (B_problem chosen, or fixed to B and only n chosen)."""

from __future__ import annotations

from pathlib import Path

HELP = "prescribe n, B_problem, steps and learning rate for a rollout budget from an isocompute fit"


def add_arguments(p) -> None:
    p.add_argument("--fit", required=True, help="directory holding fit.json from `rlscale fit --law isocompute`")
    p.add_argument("--budget", required=True, type=float, help="compute budget C in rollouts")
    p.add_argument("--B-max", dest="B_max", type=int, default=1024, help="max rollouts per step (n * B_problem)")
    p.add_argument("--problems", type=int, default=None, help="training-set size (caps B_problem; epoch warning)")
    p.add_argument("--problems-per-batch", dest="problems_per_batch", type=int, default=None,
                   help="fix B_problem (problems per step) to this value, e.g. the one the sweep held fixed; the "
                        "plan then chooses n among the fitted n with n * B_problem <= --B-max "
                        "(default: B_problem is chosen, the largest power of two that fits)")
    p.add_argument("--lr", type=float, default=None, help="anchor learning rate (default: the fit's anchor)")
    p.add_argument("--lr-batch", type=float, default=None, help="rollouts per step at which --lr was tuned")
    p.add_argument("--emit", choices=("trl", "verl"), default=None, help="also print TRL or verl arguments")
    p.add_argument("--num-processes", type=int, default=1, help="TRL: data-parallel processes for --emit trl")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of text")


def run(args) -> int:
    import json

    from rlscale.errors import UserError
    from rlscale.scaling.plan import emit_trl, emit_verl, format_plan, plan

    path = Path(args.fit)
    path = path / "fit.json" if path.is_dir() else path
    if not path.exists():
        raise UserError(f"{path}: no fit.json; run `rlscale fit SWEEP --law isocompute --out DIR` first")
    try:
        fit = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg})") from None
    if (args.lr is None) != (args.lr_batch is None):
        raise UserError("--lr and --lr-batch go together (the anchor lr and the rollouts per step it was tuned at)")
    anchor = (args.lr, args.lr_batch) if args.lr is not None else None
    p = plan(fit, args.budget, args.B_max, args.problems, lr_anchor=anchor, problems_per_batch=args.problems_per_batch)
    if args.json:
        d = p.to_dict()
        if args.emit == "trl":
            d["trl"] = emit_trl(p, args.num_processes)
        elif args.emit == "verl":
            d["verl"] = emit_verl(p)
        print(json.dumps(d, indent=2))
        return 0
    print(format_plan(p))
    if args.emit == "trl":
        print(emit_trl(p, args.num_processes))
    elif args.emit == "verl":
        print(emit_verl(p))
    return 0
