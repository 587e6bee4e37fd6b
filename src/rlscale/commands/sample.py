"""`rlscale sample`: print completions of a model on a task's problems, with their correctness."""

from __future__ import annotations

HELP = "sample completions from a model on a task's problems and print them with correctness"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (lab checkpoint or HF model dir)")
    parser.add_argument("--task", default="arith", help="task name")
    parser.add_argument("--split", default="test", help="task split")
    parser.add_argument("--data", default=None, help="JSONL of problems instead of the split")
    parser.add_argument("--n", type=int, default=8, help="samples per problem")
    parser.add_argument("--limit", type=int, default=4, help="number of problems")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="generation budget per sample")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def _correct(text: str, gold: str, mode: str) -> bool | None:
    try:
        from rlscale.grading import score
    except ImportError:  # grading module not available: use the arith task's own check
        from rlscale.tasks.arith import is_correct

        return is_correct(text, gold)
    return score(text, gold, mode).reward == 1.0


def run(args) -> int:
    import torch

    import rlscale.tasks.arith  # noqa: F401  (registers the arith task)
    from rlscale.engine.base import SamplingParams
    from rlscale.errors import UserError
    from rlscale.models import load_policy
    from rlscale.tasks.base import get_task

    torch.set_num_threads(1)
    if args.n < 1:
        raise UserError(f"--n {args.n}: must be >= 1")
    task = get_task(args.task)
    problems = task.load(args.split, data_path=args.data, limit=args.limit)
    policy = load_policy(args.model)
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    out = policy.sampler().generate([p.question for p in problems], params)
    total = 0
    for p, rolls in zip(problems, out):
        flags = [_correct(r.text, p.answer, task.default_mode) for r in rolls]
        total += sum(bool(f) for f in flags)
        print(f"== {p.id}  {p.question}  gold {p.answer}  ({sum(bool(f) for f in flags)}/{len(rolls)} correct)")
        for r, ok in zip(rolls, flags):
            end = "" if r.finished else "  [truncated]"
            print(f"  {'+' if ok else '-'} {r.text}{end}")
    print(f"accuracy {total}/{len(problems) * args.n}")
    return 0
