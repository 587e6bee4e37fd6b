"""`rlscale eval`: sample n completions per problem with a model's sampler, grade every requested mode from the
same samples, and report avg / pass@k / worst@k / maj@k (+ stderr) per mode and shot count."""

from __future__ import annotations

import argparse

HELP = "evaluate a model: pass@k, worst@k, avg@k, maj@k per grading mode and shot count, from one sampling"
DESCRIPTION = HELP + """

Writes into --out (per shot count S): records_S.jsonl (per problem: id, n, correct count, extracted answers, lengths,
truncation, per mode) and summary.json (all shot counts and modes, plus the settings)."""


def parse_int_list(text: str, flag: str) -> list[int]:
    from rlscale.errors import UserError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: write comma-separated integers, e.g. 1,4,16") from None
    if not values:
        raise UserError(f"{flag}: give at least one value")
    return values


def add_sampling_arguments(parser: argparse.ArgumentParser, n_default: int = 16) -> None:
    parser.add_argument("--model", required=True, help="model directory (lab checkpoint or Hugging Face model)")
    parser.add_argument("--task", required=True, help="task name (see `rlscale tasks`)")
    parser.add_argument("--split", default="test", help="split to evaluate")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first L problems")
    parser.add_argument("--data-path", default=None, help="a .jsonl/.parquet file holding the problems")
    parser.add_argument("--hf", action="store_true", help="download the data with datasets.load_dataset if needed")
    parser.add_argument("--n", type=int, default=n_default, help="samples per problem")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (temperature 0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation budget (default: 64 for arith, 512 otherwise)")
    parser.add_argument("--template", default=None, help="prompt template (default: the task's)")
    parser.add_argument("--mode", default=None, help="comma-separated grading modes (default: the task's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (per-sample seeds derive from it)")
    parser.add_argument("--engine", choices=("native", "vllm"), default="native",
                        help="sampler: native (the lab model's sampler, or our KV-cache loop over a Hugging Face "
                             "model on --device) or vllm (a Hugging Face model through vLLM, `pip install "
                             "rlscale[vllm]`; the same per-sample seeds, vLLM's own random streams)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser)
    parser.add_argument("--k", default="1", help="comma-separated k values for pass@k / worst@k / maj@k")
    parser.add_argument("--shots", default="0", help="comma-separated shot counts, e.g. 0,1,2,3,4,5")
    parser.add_argument("--exemplar-path", default=None, help="file to draw few-shot exemplars from")
    parser.add_argument("--out", default=None, help="output directory for records and summary.json")
    parser.add_argument("--save-completions", action="store_true", help="keep completion texts in the records")


def sampling_params(args, task):
    from rlscale.engine.base import SamplingParams
    from rlscale.errors import UserError
    from rlscale.prompts import stop_strings

    if args.n < 1:
        raise UserError(f"--n {args.n}: must be >= 1")
    temperature = 0.0 if args.greedy else args.temperature
    if temperature < 0:
        raise UserError(f"--temperature {temperature}: must be >= 0")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p {args.top_p}: must be in (0, 1]")
    max_new = args.max_new_tokens or task.max_new_tokens
    template = args.template or task.template
    return SamplingParams(n=args.n, temperature=temperature, top_p=args.top_p, max_new_tokens=max_new,
                          stop=stop_strings(template), seed=args.seed), template


def load_sampler(path: str, engine: str = "native"):
    """The sampler of --model on --engine: native (load_policy(path).sampler()) or vllm (VLLMSampler of a Hugging
    Face model directory; a lab checkpoint is refused, naming export-hf)."""
    if engine == "vllm":
        from rlscale.engine.vllm import VLLMSampler
        from rlscale.errors import UserError
        from rlscale.models import is_tiny_checkpoint

        if is_tiny_checkpoint(path):
            raise UserError(f"--engine vllm: {path} is a lab checkpoint; export it with `rlscale export-hf` first "
                            "or use --engine native")
        return VLLMSampler(path)
    import torch

    from rlscale.models import load_policy

    torch.set_num_threads(1)
    return load_policy(path).sampler()


def format_table(summaries: list[dict], ks) -> str:
    """One header, one row per mode: mean±stderr (over problems) of avg, pass@k, worst@k, maj@k, avg's sampling
    stderr (the problems fixed: how far a rerun with other samples moves it) and the truncated fraction."""
    def cell(summary, name):
        v, se = summary.get(name), summary.get(f"{name}_stderr")
        return "-" if v is None else f"{v:.4f}±{se:.4f}"

    def sampling(summary) -> str:
        se = summary.get("avg_sampling_stderr")
        return "-" if se is None or se != se else f"{se:.4f}"

    cols = ["avg"] + [f"{m}@{k}" for k in ks for m in ("pass", "worst", "maj")]
    lines = [f"{'mode':<16}" + "  ".join(f"{c:>15}" for c in cols) + f"  {'avg sampling se':>15}  {'truncated':>9}"]
    for s in summaries:
        lines.append(f"{s['mode']:<16}" + "  ".join(f"{cell(s, c):>15}" for c in cols)
                     + f"  {sampling(s):>15}  {s['truncated_frac']:>9.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlscale.evals.evaluate import check_modes, evaluate, exemplar_pool, load_problems
    from rlscale.io import atomic_write_json, atomic_write_jsonl
    from rlscale.prompts import select_exemplars
    from rlscale.tasks import get_task

    task = get_task(args.task)
    params, template = sampling_params(args, task)
    modes = tuple(m.strip() for m in (args.mode or task.default_mode).split(",") if m.strip())
    check_modes(modes)
    ks = parse_int_list(args.k, "--k")
    shots_list = parse_int_list(args.shots, "--shots")
    from rlscale.errors import UserError

    for k in ks:
        if k > params.n or k < 1:
            raise UserError(f"--k {k}: must be in 1..n={params.n} (raise --n or lower --k)")
    problems = load_problems(task, args.split, data_path=args.data_path, limit=args.limit, hf=args.hf)
    pool = exemplar_pool(task, args.split, args.exemplar_path, args.data_path, args.hf) if max(shots_list) else []
    exemplars = select_exemplars(pool, min(max(shots_list) + 1, len(pool)), seed=args.seed) if pool else []
    sampler = load_sampler(args.model, args.engine)

    out = Path(args.out) if args.out else None
    summary = {"task": task.name, "split": args.split, "model": str(args.model), "results": {}}
    for shots in shots_list:
        res = evaluate(problems, sampler, template=template, shots=shots, params=params, modes=modes, ks=ks,
                       exemplars=exemplars, progress=not args.no_progress, keep_text=args.save_completions)
        summary["settings"] = {k: v for k, v in res.settings.items() if k not in ("shots", "exemplar_ids")}
        summary["results"][str(shots)] = {"exemplar_ids": res.settings["exemplar_ids"], **res.summaries()}
        print(f"{task.name}/{args.split}: {len(problems)} problems x {params.n} samples, {shots}-shot")
        print(format_table([res.summary(m) for m in modes], ks))
        if out is not None:
            atomic_write_jsonl(out / f"records_{shots}shot.jsonl", res.records)
    if out is not None:
        atomic_write_json(out / "summary.json", summary)
        print(f"wrote {out}/summary.json")
    return 0
