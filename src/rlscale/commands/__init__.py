"""CLI subcommands: one module each with HELP, add_arguments(parser) and run(args) -> int (see rlscale/cli.py)."""
