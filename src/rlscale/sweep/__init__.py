"""Iso-compute sweeps over (n, B_problem, M): specs (spec.py), plans (plan.py), execution on local workers or Ray
(run.py, worker.py), the tidy table (export.py) and ingestion of other engines' logs (ingest.py)."""

from rlscale.sweep.export import load_sweep_table
from rlscale.sweep.run import run_sweep
from rlscale.sweep.spec import SweepSpec, load_spec, parse_spec

__all__ = ["SweepSpec", "load_spec", "parse_spec", "run_sweep", "load_sweep_table"]
