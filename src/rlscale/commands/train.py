"""`rlscale train grpo|sft`: flags are generated from the GRPOConfig / SFTConfig fields (their docstrings are the
help texts); `--config FILE.toml|yaml` loads fields, flags given on the command line override them."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rlscale.errors import UserError

HELP = "train a policy: GRPO (RL with verifiable rewards) or SFT"
DESCRIPTION = ("Train a policy. `rlscale train grpo --model DIR --task arith --rollouts-per-problem 8 "
               "--problems-per-batch 16 --iterations 50 --out RUN` runs GRPO into a resumable run store;\n"
               "`rlscale train sft --model DIR --data FILE.jsonl --out RUN` fine-tunes on solutions.")

_CLI_ONLY = ("out", "resume", "json", "config", "threads", "quiet", "sub", "command", "_run")


def _field_type(annotation: str):
    a = annotation.replace(" ", "")
    if a.startswith("tuple[int"):
        return lambda s: tuple(int(x) for x in s.split(",") if x)
    base = a.split("|")[0]
    return {"int": int, "float": float, "str": str, "bool": bool}[base]


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    from rlscale.rl.grpo import field_docs

    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_ = f"{docs.get(f.name, '')} (default: {shown})"
        typ = _field_type(str(f.type))
        if typ is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_)
        else:
            parser.add_argument(flag, dest=f.name, type=typ, default=argparse.SUPPRESS, help=help_,
                                metavar=f.name.upper())


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run directory (created; holds config, run.db, checkpoints, summary)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    p.add_argument("--config", help="TOML or YAML file of config fields (flags override it)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads: lab models (grpo) run generation chunks and update micro-batches on this many "
                        "threads, one torch thread each; otherwise torch intra-op threads (1 is fastest on a shared CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlscale.rl.grpo import GRPOConfig
    from rlscale.sft.sft import SFTConfig

    sub = parser.add_subparsers(dest="sub", metavar="ALGO", parser_class=type(parser))
    fmt = parser.formatter_class
    g = sub.add_parser("grpo", help="on-policy GRPO with group advantages", formatter_class=fmt,
                       description="GRPO into a run store. Give --iterations M or --budget-rollouts C.")
    add_config_flags(g, GRPOConfig)
    _common(g)
    s = sub.add_parser("sft", help="supervised fine-tuning on (prompt, solution) pairs", formatter_class=fmt,
                       description="SFT, loss on solution tokens only; writes RUN/model.")
    add_config_flags(s, SFTConfig)
    _common(s)
    parser.set_defaults(_print_help=parser.print_help)


def load_config_file(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError(f"--config {path}: file not found")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            import tomllib
            d = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError(f"--config {path}: PyYAML is not installed; use a .toml file") from None
            d = yaml.safe_load(text) or {}
        else:
            raise UserError(f"--config {path}: unknown suffix '{p.suffix}'; use .toml or .yaml")
    except UserError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise UserError(f"--config {path}: cannot parse ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise UserError(f"--config {path}: expected a table of config fields")
    return dict(d.get("train", d))


def _config_from_args(args: argparse.Namespace, cls: type):
    fields = {f.name for f in dataclasses.fields(cls)}
    d = load_config_file(args.config) if args.config else {}
    d.update({k: v for k, v in vars(args).items() if k in fields})
    return cls.from_dict(d).validate()


def _finish(args, summary: dict, keys: tuple[str, ...]) -> int:
    if args.json:
        print(json.dumps({k: summary.get(k) for k in keys} | {"out": str(args.out)}, default=str))
    else:
        print(" ".join(f"{k}={summary.get(k)}" for k in keys))
    return 0


def run_grpo(args: argparse.Namespace) -> int:
    from rlscale.rl.grpo import GRPOConfig

    cfg = _config_from_args(args, GRPOConfig)
    import torch

    from rlscale.models import is_tiny_checkpoint
    from rlscale.rl.grpo import train

    lab_model = is_tiny_checkpoint(cfg.model)  # lab model: threads are workers over micro-batches
    torch.set_num_threads(1 if lab_model else max(1, args.threads))
    summary = train(cfg, args.out, resume=args.resume, progress=not args.quiet,
                    workers=max(1, args.threads) if lab_model else 1)
    return _finish(args, summary, ("val_before", "val_after", "rollouts", "steps", "wall_s", "flops"))


def run_sft(args: argparse.Namespace) -> int:
    from rlscale.sft.sft import SFTConfig

    cfg = _config_from_args(args, SFTConfig)
    import torch
    torch.set_num_threads(max(1, args.threads))
    from rlscale.sft.sft import train_sft

    summary = train_sft(cfg, args.out, resume=args.resume, progress=not args.quiet)
    return _finish(args, summary, ("steps", "examples", "tokens", "loss_first", "loss_last", "wall_s", "model_dir"))


def run(args: argparse.Namespace) -> int:
    if args.sub == "grpo":
        return run_grpo(args)
    if args.sub == "sft":
        return run_sft(args)
    args._print_help()
    return 2
