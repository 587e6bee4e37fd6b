"""Small I/O helpers: atomic writes, JSONL, and tables read/written by suffix (.jsonl, .csv, .parquet)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlscale.errors import UserError

TABLE_SUFFIXES = (".jsonl", ".csv", ".parquet")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to path so that readers see either the old file or the whole new one (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """torch.save(obj) to path atomically (serialised in memory, then atomic_write_bytes)."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[dict]:
    """Yield one dict per non-empty line; a malformed line or missing field is a UserError naming file and line."""
    return (row for _, row in iter_jsonl_numbered(path, required))


def iter_jsonl_numbered(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, dict) per non-empty line, with the errors of `iter_jsonl`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    required = tuple(required)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for key in required:
                if key not in row:
                    raise UserError(f"{path}:{lineno}: missing field '{key}'")
            yield lineno, row


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required))


def read_table(path: str | os.PathLike):
    """Read a .jsonl/.csv/.parquet table into a pandas DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return pd.DataFrame(read_jsonl(path))
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise UserError(f"{path}: unknown table suffix '{suffix}'; use one of {', '.join(TABLE_SUFFIXES)}")


def write_table(df, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame atomically, format chosen by suffix (.jsonl/.csv/.parquet)."""
    import io as _io

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        atomic_write_text(path, df.to_json(orient="records", lines=True))
    elif suffix == ".csv":
        atomic_write_text(path, df.to_csv(index=False))
    elif suffix == ".parquet":
        buf = _io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    else:
        raise UserError(f"{path}: unknown table suffix '{suffix}'; use one of {', '.join(TABLE_SUFFIXES)}")
