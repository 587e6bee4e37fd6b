"""A sweep directory that moved together with its model and data keeps its runs.

Run ids and the sweep identity hold the model and data paths resolved to absolute paths (sweep/spec.py), so a
directory tree holding a spec, its data and its SWEEPDIR (a lab's OUT, a project copied to another disk) that is
moved or copied elsewhere gives the same spec new paths: new run ids, and an identity that differs from the one in
sweep.json. `moved_roots` recognises that case (every path that changed is the old one with one directory prefix
replaced by another, the same prefix for all, and the SWEEPDIR lies under the new one) and `relocate_runs` carries
the runs over: each run's stored config gets the new paths (and its config hash), and its run directory, config
file and log get the run id of the relocated config, so finished runs are skipped and interrupted ones resume.
Anything else that changed the identity (another model, other data, other seeds) is still refused by the driver.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath

from rlscale.io import atomic_write_json

PATH_KEYS = ("model", "train_set", "val_set")
"""the identity's path fields (the spec's model, train_set, val_set)"""


def _split_common_suffix(old: str, new: str) -> tuple[str, str]:
    """(old prefix, new prefix) left after removing the longest common trailing run of path components."""
    a, b = PurePath(old).parts, PurePath(new).parts
    k = 0
    while k < min(len(a), len(b)) - 1 and a[-1 - k] == b[-1 - k]:
        k += 1
    return str(PurePath(*a[:len(a) - k])), str(PurePath(*b[:len(b) - k]))


def moved_roots(old_identity: dict, new_identity: dict, sweepdir: str | os.PathLike) -> tuple[str, str] | None:
    """(old_root, new_root) when new_identity is old_identity with the directory old_root moved to new_root and
    sweepdir lies under new_root (it moved with its data); None otherwise (another model, data or seeds)."""
    keys = set(old_identity) | set(new_identity)
    if any(old_identity.get(k) != new_identity.get(k) for k in keys - set(PATH_KEYS)):
        return None
    roots = set()
    for k in PATH_KEYS:
        a, b = old_identity.get(k), new_identity.get(k)
        if a == b:
            continue
        if not (isinstance(a, str) and isinstance(b, str)):
            return None
        roots.add(_split_common_suffix(a, b))
    if len(roots) != 1:
        return None
    old_root, new_root = roots.pop()
    if min(len(PurePath(old_root).parts), len(PurePath(new_root).parts)) < 2:
        return None  # a move out of or into the file system's root is not told apart from other data
    if not Path(sweepdir).resolve().is_relative_to(new_root):
        return None
    return old_root, new_root


def relocated(value, old_root: str, new_root: str):
    """A config value with every string path under old_root moved under new_root (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: relocated(v, old_root, new_root) for k, v in value.items()}
    if isinstance(value, list):
        return [relocated(v, old_root, new_root) for v in value]
    if isinstance(value, str) and (value == old_root or value.startswith(old_root.rstrip(os.sep) + os.sep)):
        return new_root + value[len(old_root):]
    return value


def relocate_runs(sweepdir: str | os.PathLike, old_root: str, new_root: str) -> int:
    """Carry every run of SWEEPDIR from old_root to new_root (see the module docstring); returns how many runs got a
    new id. Each step is atomic and a repeated call redoes only what is left, so an interrupted relocation is
    finished by the next driver."""
    from rlscale.store import CONFIG_FILE
    from rlscale.store import config_hash as store_hash
    from rlscale.sweep.spec import config_hash as run_id_of

    out = Path(sweepdir)
    moved = 0
    for rundir in sorted(p for p in (out / "runs").glob("*") if p.is_dir()):
        rid = rundir.name
        store_cfg = rundir / CONFIG_FILE
        if store_cfg.is_file():
            cfg = json.loads(store_cfg.read_text())["config"]
            moved_cfg = relocated(cfg, old_root, new_root)
            if moved_cfg != cfg:
                atomic_write_json(store_cfg, {"config": moved_cfg, "config_hash": store_hash(moved_cfg)})
        cfg_path = out / "configs" / f"{rid}.json"
        if not cfg_path.is_file():
            continue  # not a run of this driver's (no config): left as it is
        run_cfg = relocated(json.loads(cfg_path.read_text()), old_root, new_root)
        new_id = run_id_of(run_cfg)
        if new_id == rid or (out / "runs" / new_id).exists():
            continue  # already carried over, or a run of the new id exists: both kept, the old one unused
        atomic_write_json(out / "configs" / f"{new_id}.json", run_cfg)
        os.replace(rundir, out / "runs" / new_id)
        log = out / "logs" / f"{rid}.log"
        if log.is_file():
            os.replace(log, out / "logs" / f"{new_id}.log")
        cfg_path.unlink()
        moved += 1
    return moved
