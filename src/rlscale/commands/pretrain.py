"""`rlscale pretrain`: pretrain a tiny lab GPT on generated arith worked solutions and write a checkpoint dir."""

from __future__ import annotations

HELP = "pretrain a tiny lab model on generated arith worked solutions (CPU, minutes)"
DESCRIPTION = HELP + (
    "\n\nWrites DIR/{rlscale_model.json, model.safetensors, tokenizer.json} atomically; rlscale_model.json records"
    "\nthe config, tokenizer, data recipe, compute spent (tokens, FLOPs, wall) and held-out loss. A resumable"
    "\ncheckpoint (.DIR.pretrain-state.pt beside DIR) is written every --checkpoint-every-s; the same command"
    "\nafter a crash or kill -9 continues from it and gives the same model as an uninterrupted run."
)


def add_arguments(parser) -> None:
    from rlscale.lab.presets import PRETRAIN_DEFAULTS, SIZES

    parser.add_argument("--size", default=PRETRAIN_DEFAULTS["size"],
                        help=f"model size preset, one of {', '.join(SIZES)} (unknown sizes are rejected)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="wall-clock budget in minutes")
    budget.add_argument("--tokens", type=int, default=None,
                        help="token budget (default: the size preset's default_tokens)")
    parser.add_argument("--seed", type=int, default=PRETRAIN_DEFAULTS["seed"], help="init and corpus seed")
    parser.add_argument("--alt-format-frac", type=float, default=PRETRAIN_DEFAULTS["alt_format_frac"],
                        help="fraction of solutions ending 'answer: n' instead of '####n'")
    parser.add_argument("--slip-frac", type=float, default=PRETRAIN_DEFAULTS["slip_frac"],
                        help="per-step probability of a slip (a value off by 1..3) in corpus solutions")
    parser.add_argument("--slip-kind", choices=("result", "operand"), default=PRETRAIN_DEFAULTS["slip_kind"],
                        help="result: the step's result is off; operand: a substituted value is off, arithmetic right")
    parser.add_argument("--step-weights", default=None, metavar="W1,...,W6",
                        help="corpus mix of difficulties: relative weights of 1..6-step problems (default "
                             "uniform; e.g. 0.3,0.24,0.18,0.13,0.09,0.06 makes harder problems rarer)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the size preset's)")
    parser.add_argument("--out", default=None, help="checkpoint directory (default: lab/models/<size>)")
    parser.add_argument("--processes", type=int, default=1,
                        help="data-parallel processes, one per core (each takes 1/P of every step's batch)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads per process (1 is fastest on a shared machine)")
    parser.add_argument("--checkpoint-every-s", type=float, default=60.0,
                        help="seconds between resumable checkpoints (0: every step); the same command after a crash "
                             "or kill continues from the last one, bit-identically")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def parse_weights(text: str | None) -> tuple[float, ...] | None:
    """'0.3,0.2,...' -> floats; a one-line UserError naming the flag when malformed."""
    from rlscale.errors import UserError
    from rlscale.tasks.arith import HARDER_RARER

    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--step-weights {text!r}: expected comma-separated numbers, e.g. "
                        f"{','.join(f'{w:g}' for w in HARDER_RARER)}") from None


def run(args) -> int:
    from rlscale.lab.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(size=args.size, tokens=args.tokens, minutes=args.minutes, seed=args.seed,
                         alt_format_frac=args.alt_format_frac, slip_frac=args.slip_frac, slip_kind=args.slip_kind,
                         step_weights=parse_weights(args.step_weights), lr=args.lr,
                         threads=args.threads, processes=args.processes,
                         checkpoint_every_s=args.checkpoint_every_s)
    out = args.out or f"lab/models/{args.size}"
    policy = pretrain(cfg, out=out, progress=not args.quiet)
    c = policy.meta["compute"]
    print(f"wrote {out}: size {args.size}, {policy.num_params():,} params, {c['tokens']:,} tokens, "
          f"{c['flops']:.3g} FLOPs, {c['wall_s']:.0f}s, held-out loss {policy.meta['heldout_loss']:.4f}")
    return 0
