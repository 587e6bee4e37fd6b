"""Iso-compute sweeps over (n, B_problem, M): specs (spec.py), plans (plan.py), execution on local workers or Ray
(run.py, worker.py), the tidy table (export.py) and ingestion of other engines' logs (ingest.py).

The names below are imported lazily, so that a run process (`python -m rlscale.sweep.worker`) does not import the
driver, pandas or itself twice before it starts."""

from __future__ import annotations

import importlib

_EXPORTS = {"SweepSpec": "spec", "load_spec": "spec", "parse_spec": "spec", "run_sweep": "run",
            "load_sweep_table": "export"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"rlscale.sweep.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rlscale.sweep' has no attribute {name!r}")
