"""Frozen-dataclass config helpers shared by every trainer/pipeline config (GRPO, SFT, CoScale).

`config_from_dict` rejects unknown fields in one line and turns `tuple[int, ...]` fields given as lists (JSON/TOML)
or "1,4,16" strings (command line) into tuples; `config_to_dict` is the inverse (tuples -> lists, JSON-ready).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from rlscale.errors import UserError

T = TypeVar("T")


def _int_tuple_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if str(f.type).replace(" ", "") == "tuple[int,...]"]


def config_from_dict(cls: type[T], d: dict[str, Any], what: str, help_cmd: str) -> T:
    """cls(**d) after checking field names ("unknown <what> config field 'x'; see `<help_cmd> --help`") and
    coercing tuple[int, ...] fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UserError(f"unknown {what} config field '{unknown[0]}'; see `{help_cmd} --help`")
    d = dict(d)
    for key in _int_tuple_fields(cls):
        if key in d:
            v = d[key]
            try:
                d[key] = tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v) if str(x).strip())
            except (TypeError, ValueError):
                raise UserError(f"{key}={v!r}: give integers, e.g. 4,8,16") from None
    return cls(**d)


def changed_keys(old: dict, new: dict) -> list[str]:
    """Keys whose values differ between two config dicts (missing counts as None), sorted: the first one names the
    field in a "made with other settings" error."""
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """dataclasses.asdict with tuples as lists (what from_dict accepts back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
