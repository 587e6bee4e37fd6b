"""Frozen-dataclass config helpers shared by every trainer/pipeline config (GRPO, SFT, CoScale).

`config_from_dict` rejects unknown fields in one line and turns `tuple[int, ...]` fields given as lists (JSON/TOML)
or "1,4,16" strings (command line) into tuples; `config_to_dict` is the inverse (tuples -> lists, JSON-ready);
`check_field_types` checks every field against its annotation, so a config file's `"lr": "1e-4"` is a one-line
error naming the field instead of a TypeError deep in a trainer.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from typing import Any, TypeVar

from rlscale.errors import UserError

T = TypeVar("T")


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """A config dataclass's field annotations, resolved (its module uses `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def _int_tuple_fields(cls: type) -> list[str]:
    return [name for name, hint in field_hints(cls).items() if hint == tuple[int, ...]]


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


def seeds_grew(old, new) -> bool:
    """Whether the seeds `new` are the seeds `old` and more: a sweep (or lab) extended by seeds keeps its finished
    runs, whose records do not depend on which other seeds run (a run depends only on its own config)."""
    return old is not None and new is not None and set(old) < set(new)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """dataclasses.asdict with tuples as lists (what from_dict accepts back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _conforms(value: Any, hint: Any) -> bool:
    """Whether value fits a field annotation: int, float (any real; not bool), str, bool, dict, None,
    tuple[X, ...], tuple[X, Y] and unions of these; other annotations accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint in (str, dict):
        return isinstance(value, hint)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
    return True


_NOUNS = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object"}


def _describe(hint: Any) -> str:
    """An annotation as a config file's author reads it: 'an integer', 'a list of numbers', 'a string or null'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        count = "" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_NOUNS.get(args[0], 'value')}s"
    if hint is type(None):
        return "null"
    noun = _NOUNS.get(hint, getattr(hint, "__name__", str(hint)))
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}" + (" (true/false)" if hint is bool else "")


def check_field_types(cfg: Any, where: str) -> None:
    """Raise a one-line UserError "<where>: <field> must be <type>, got <value>" for the first field of the
    dataclass instance cfg whose value does not fit its annotation."""
    hints = field_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _conforms(value, hints[f.name]):
            shown = list(value) if isinstance(value, tuple) else value
            raise UserError(f"{where}: {f.name} must be {_describe(hints[f.name])}, got {shown!r}")
