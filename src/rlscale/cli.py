"""The one entry point, `rlscale`. Each subcommand lives in `rlscale/commands/<name>.py` and exposes
`HELP`, `add_arguments(parser)` and `run(args) -> int`; this file only wires them together.

Run `rlscale --help` for the list; every subcommand has `--help` showing its defaults.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rlscale import __version__
from rlscale.errors import UserError

# name -> module; order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "lab": "rlscale.commands.lab",
    "tasks": "rlscale.commands.tasks",
    "show": "rlscale.commands.show",
    "grade": "rlscale.commands.grade",
    "pretrain": "rlscale.commands.pretrain",
    "sample": "rlscale.commands.sample",
    "export-hf": "rlscale.commands.export_hf",
    "eval": "rlscale.commands.eval",
    "profile": "rlscale.commands.profile",
    "curate": "rlscale.commands.curate",
    "train": "rlscale.commands.train",
    "sweep": "rlscale.commands.sweep",
    "ingest": "rlscale.commands.ingest",
    "fit": "rlscale.commands.fit",
    "plan": "rlscale.commands.plan",
    "report": "rlscale.commands.report",
    "coscale": "rlscale.commands.coscale",
    "coscale-compare": "rlscale.commands.coscale_compare",
}

# commands that load a model: they take --device (where Hugging Face models run; lab models always run on CPU)
DEVICE_COMMANDS = {"lab", "sample", "eval", "profile", "train", "sweep", "coscale", "coscale-compare"}

DESCRIPTION = (
    "rlscale: given a base model, a problem set and a compute budget, how should RL sampling compute be spent,\n"
    "and what will it buy? GRPO/SFT, grading, pass@k evals, iso-compute sweeps, scaling fits, CoScale-RL, CPU lab."
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps description line breaks."""


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:  # command not built yet
            return None
        raise


def _add_device_flag(parser: argparse.ArgumentParser) -> None:
    """--device and --gradient-checkpointing on the parser, or on each of its subcommands' parsers (`rlscale train
    grpo ... --device cuda`)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        for p in {id(p): p for a in subs for p in a.choices.values()}.values():
            _add_device_flag(p)
        return
    parser.add_argument("--device", default=None,
                        help="where Hugging Face models run: auto (the first CUDA device when torch has one, else "
                             "CPU), cpu, cuda, cuda:N or mps; default $RLSCALE_DEVICE, else auto. Exported to sweep "
                             "workers. Lab models always run on CPU")
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None,
                        help="Hugging Face models recompute each layer's activations in the backward instead of "
                             "keeping them: less memory, the same gradients (bench/hf_checkpointing.py); default "
                             "$RLSCALE_GRADIENT_CHECKPOINTING. Exported to sweep workers")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rlscale", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"rlscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module_name in COMMANDS.items():
        mod = _load(module_name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=HelpFormatter)
        mod.add_arguments(p)
        if name in DEVICE_COMMANDS:
            _add_device_flag(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rlscale.numerics import pin_cpu_numerics

    try:  # before any command imports torch: the same bits on every x86-64 CPU with AVX2 (rlscale.numerics)
        pin_cpu_numerics()
    except UserError as e:
        print(f"rlscale: error: {e}", file=sys.stderr)
        return e.exit_code
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from rlscale.procs import keep_freed_memory

    keep_freed_memory()  # every command: the samplers and trainers reuse freed activation memory
    try:
        if getattr(args, "device", None) is not None:
            from rlscale.models.device import ENV, resolve_device

            resolve_device(args.device)  # a bad --device fails now, in one line
            os.environ[ENV] = args.device  # every load in this process and its workers reads it
        if getattr(args, "gradient_checkpointing", None):
            from rlscale.models.device import CHECKPOINTING_ENV

            os.environ[CHECKPOINTING_ENV] = "1"
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"rlscale {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"rlscale {args.command}: interrupted; finished work is saved, re-run the same command to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
