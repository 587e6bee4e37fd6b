"""Refit a finished lab on a subset of its seeds (or of its n): would a lab run with only these seeds say the same?

A lab's run depends only on its n and seed, and validation does not touch training, so keeping some seeds' rows of
each set's sweep table gives exactly the table a lab run with only those seeds would have exported. This copies
LAB to OUT (files hard-linked, run stores copied, since opening one writes to it), keeps the chosen rows, and re-runs
the lab's own fit, plan and report stages on them (stop 40 used it to refit disjoint seed groups: the quick lab's
Easy rise came back on neither seeds 8-15 nor 4-11).

    .venv/bin/python scripts/refit_seeds.py LAB OUT --seeds easy=0-3 --seeds hard=0-2,4 [--n hard=2,8,16]
        [--workers 2]

A set without --seeds keeps all its seeds. Prints the new report's verdicts ("In short: ...") as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path

from rlscale.errors import UserError

SETS = ("easy", "hard")


def parse_ints(spec: str, what: str) -> list[int]:
    """'0-3,5,7-8' -> [0, 1, 2, 3, 5, 7, 8]."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise UserError(f"{what}: '{spec}' is not a list of integers and ranges like 0-3,5") from None
    if not out:
        raise UserError(f"{what}: empty")
    return sorted(set(out))


def parse_choice(items: list[str], flag: str) -> dict[str, list[int]]:
    """['easy=0-3', ...] -> {'easy': [0, 1, 2, 3], ...}."""
    chosen = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or name not in SETS:
            raise UserError(f"{flag} {item}: expected SET=LIST with SET one of {', '.join(SETS)}, e.g. easy=0-3")
        chosen[name] = parse_ints(spec, f"{flag} {item}")
    return chosen


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.basename(src).startswith("run.db"):  # a run store is written to when opened
        shutil.copy2(src, dst)
    else:
        os.link(src, dst)


def refit(lab: Path, out: Path, seeds: dict[str, list[int]], ns: dict[str, list[int]], workers: int = 1) -> str:
    """Copy LAB to OUT with only the chosen seeds (and n) in each set's table, refit, re-plan, re-report; returns the
    report's verdict line."""
    from rlscale.io import read_table, write_table
    from rlscale.lab.pipeline import LabPreset, _tupled, stage_fit, stage_plan, stage_report, stored_preset
    from rlscale.report import read_headline

    stored = stored_preset(lab)
    if stored is None or not all((lab / "sweeps" / s / "table.parquet").exists() for s in SETS):
        raise UserError(f"{lab}: not a finished lab (needs lab.json and sweeps/*/table.parquet; run `rlscale lab` "
                        "to the end first)")
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new OUT")
    tables = {s: read_table(lab / "sweeps" / s / "table.parquet") for s in SETS}
    for s in SETS:
        for col, chosen in (("seed", seeds.get(s)), ("n", ns.get(s))):
            have = sorted(int(v) for v in tables[s][col].unique())
            missing = sorted(set(chosen or []) - set(have))
            if missing:
                raise UserError(f"--{col if col == 'n' else 'seeds'} {s}: {missing[0]} is not among the lab's "
                                f"{s} runs ({', '.join(map(str, have))})")
            if chosen:
                tables[s] = tables[s][tables[s][col].isin(chosen)]
    shutil.copytree(lab, out, copy_function=_link_or_copy)
    for d in ("fits", "plan.json", "report.html", "summary.txt"):
        path = out / d
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for s in SETS:
        target = out / "sweeps" / s / "table.parquet"
        target.unlink()  # a hard link to LAB's: replaced, not written through
        write_table(tables[s], target)
    fields = {f.name for f in dataclasses.fields(LabPreset)}
    p = LabPreset(**_tupled({k: v for k, v in stored.items() if k in fields}))
    stage_fit(p, out, workers)
    stage_plan(p, out)
    stage_report(out)
    return read_headline(out) or ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lab", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", action="append", default=[], metavar="SET=LIST", help="seeds to keep, e.g. easy=0-3")
    ap.add_argument("--n", action="append", default=[], metavar="SET=LIST", help="n to keep, e.g. hard=2,8,16")
    ap.add_argument("--workers", type=int, default=2, help="processes for the leave-one-seed-out refits")
    args = ap.parse_args(argv)
    try:
        line = refit(args.lab, args.out, parse_choice(args.seeds, "--seeds"), parse_choice(args.n, "--n"),
                     args.workers)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
