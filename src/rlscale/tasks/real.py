"""Loaders for the public benchmarks: GSM8K, MATH-500, full MATH and MMLU, from local files (or `datasets`).

Where the data comes from, in order:
  1. `data_path` (`--data-path FILE`): one .jsonl or .parquet file in the data set's public format;
  2. `$RLSCALE_DATA_DIR/<task>/<split>.jsonl` (or `.parquet`);
  3. `datasets.load_dataset(...)` only when asked (`hf=True`, the CLI's `--hf`); never at import or in tests.
A missing file is a one-line UserError listing the paths tried and how to supply the data.

Formats and ids (a file whose rows carry `id`/`question`/`answer` [`solution`, `meta`], as `rlscale curate` writes,
is read as-is for every task):
  gsm8k    `question`/`answer`; gold = the `#### n` value with commas removed; solution = answer text with the
           `<<...>>` calculator annotations stripped; id `gsm8k/<split>/<row>`.
  math500  `problem`/`solution`/`answer`/`subject`/`level`/`unique_id`; id = unique_id.
  math     the same format (full MATH; `answer` may be absent, then it is the last \\boxed{} of the solution;
           `type` and "Level 3" style levels, as in the Hendrycks release, are accepted); id = unique_id or
           `math/<split>/<row>`.
  mmlu     `question`/`choices` (4 strings)/`answer` (index 0-3 or a letter) [/`subject`]; gold = letter A-D;
           id `mmlu/<subject>/<split>/<row>` (row = line number in the file, 0-based).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from rlscale.errors import UserError
from rlscale.tasks.base import Problem, Task, register

DATA_DIR_ENV = "RLSCALE_DATA_DIR"
LETTERS = "ABCD"

# (path, config name) for datasets.load_dataset, per task; `math` needs one config per subject.
HF_SOURCES: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "math500": ("HuggingFaceH4/MATH-500", None),
    "math": ("EleutherAI/hendrycks_math", None),
    "mmlu": ("cais/mmlu", "all"),
}
HF_MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                    "prealgebra", "precalculus")

_CALC = re.compile(r"<<[^>]*>>")
_GSM_FINAL = re.compile(r"####\s*(-?[0-9.,]+)\s*$")


# ----------------------------------------------------------------------------------------------- locating the data
def candidate_paths(task: str, split: str) -> list[Path]:
    """Files looked for under $RLSCALE_DATA_DIR (empty when the variable is unset)."""
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        return []
    return [Path(root) / task / f"{split}{suffix}" for suffix in (".jsonl", ".parquet")]


def where(task: str) -> str:
    """One line saying where a task's data is looked for (for `rlscale tasks`)."""
    root = os.environ.get(DATA_DIR_ENV)
    base = f"${DATA_DIR_ENV}/{task}/<split>.jsonl|.parquet"
    if root:
        base += f" (= {Path(root) / task}/)"
    else:
        base += f" ({DATA_DIR_ENV} unset)"
    return f"--data-path FILE, or {base}, or --hf ({HF_SOURCES[task][0]})"


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a .jsonl or .parquet file as dicts."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: data file not found; pass an existing .jsonl or .parquet file to --data-path")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        from rlscale.io import read_jsonl

        return read_jsonl(path)
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    raise UserError(f"{path}: unknown data file suffix '{suffix}'; use .jsonl or .parquet")


def _hf_rows(task: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise UserError("--hf needs the `datasets` package; pip install rlscale[trl] or pip install datasets") from None
    name, config = HF_SOURCES[task]
    hf_split = {"val": "validation"}.get(split, split)
    try:
        if task == "math":
            rows = []
            for subject in HF_MATH_SUBJECTS:
                rows.extend(datasets.load_dataset(name, subject, split=hf_split))
            return [dict(r) for r in rows]
        return [dict(r) for r in datasets.load_dataset(name, config, split=hf_split)]
    except Exception as e:  # network, unknown split, auth: all user-fixable
        raise UserError(f"{task}: datasets.load_dataset({name!r}, split={hf_split!r}) failed: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def locate_rows(task: str, split: str, data_path: str | None, hf: bool) -> tuple[list[dict], str]:
    """(rows, source description) from data_path, the data dir, or (if hf) the Hub."""
    if data_path is not None:
        return read_rows(data_path), str(data_path)
    tried = candidate_paths(task, split)
    for p in tried:
        if p.exists():
            return read_rows(p), str(p)
    if hf:
        return _hf_rows(task, split), f"hf:{HF_SOURCES[task][0]}"
    tried_s = ", ".join(str(p) for p in tried) if tried else f"nothing (${DATA_DIR_ENV} is unset)"
    raise UserError(f"{task} {split}: no data found; tried {tried_s}; pass --data-path FILE.jsonl|.parquet, "
                    f"set {DATA_DIR_ENV}=DIR holding {task}/{split}.jsonl, or use --hf to download")


def _field(row: dict, key: str, source: str, i: int):
    if key not in row or row[key] is None:
        raise UserError(f"{source}: row {i + 1}: missing field '{key}'")
    return row[key]


# ------------------------------------------------------------------------------------------------------- parsers
def gsm8k_gold(answer_text: str) -> str | None:
    """The `#### n` value of a GSM8K answer, commas removed (None if there is no final `####` line)."""
    m = _GSM_FINAL.search(answer_text.strip())
    return m.group(1).replace(",", "") if m else None


def strip_calculator(text: str) -> str:
    """Remove GSM8K `<<48/2=24>>` calculator annotations."""
    return _CALC.sub("", text)


def parse_gsm8k(rows: list[dict], split: str, source: str) -> list[Problem]:
    out = []
    for i, r in enumerate(rows):
        question, answer = _field(r, "question", source, i), _field(r, "answer", source, i)
        gold = gsm8k_gold(answer)
        if gold is None:
            raise UserError(f"{source}: row {i + 1}: field 'answer' has no final '#### n' line")
        out.append(Problem(id=f"gsm8k/{split}/{i}", question=question, answer=gold,
                           solution=strip_calculator(answer).strip(), meta={"split": split}))
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in text, brace-matched; None if absent or unclosed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def _level(v) -> int | None:
    if v is None:
        return None
    m = re.search(r"\d+", str(v))
    return int(m.group()) if m else None


def make_math_parser(task: str) -> Callable[[list[dict], str, str], list[Problem]]:
    def parse(rows: list[dict], split: str, source: str) -> list[Problem]:
        out = []
        for i, r in enumerate(rows):
            problem, solution = _field(r, "problem", source, i), _field(r, "solution", source, i)
            answer = r.get("answer")
            if answer is None:
                answer = last_boxed(solution)
                if answer is None:
                    raise UserError(f"{source}: row {i + 1}: no 'answer' field and no \\boxed{{}} in 'solution'")
            pid = r.get("unique_id") or f"{task}/{split}/{i}"
            meta = {"subject": r.get("subject") or r.get("type"), "level": _level(r.get("level"))}
            out.append(Problem(id=str(pid), question=problem, answer=str(answer), solution=solution, meta=meta))
        return out

    return parse


def mmlu_letter(answer, source: str, i: int, num_choices: int) -> str:
    """The gold letter from an index (int or digit string) or a letter."""
    if isinstance(answer, str) and answer.strip().upper() in LETTERS[:num_choices] and not answer.strip().isdigit():
        return answer.strip().upper()
    try:
        idx = int(answer)
    except (TypeError, ValueError):
        idx = -1
    if not 0 <= idx < num_choices:
        raise UserError(f"{source}: row {i + 1}: field 'answer'={answer!r} is not an index 0..{num_choices - 1} "
                        f"or a letter A-{LETTERS[num_choices - 1]}")
    return LETTERS[idx]


def parse_mmlu(rows: list[dict], split: str, source: str) -> list[Problem]:
    out = []
    for i, r in enumerate(rows):
        question = _field(r, "question", source, i)
        choices = [str(c) for c in list(_field(r, "choices", source, i))]
        if not 2 <= len(choices) <= len(LETTERS):
            raise UserError(f"{source}: row {i + 1}: field 'choices' must hold 2-{len(LETTERS)} options, "
                            f"got {len(choices)}")
        gold = mmlu_letter(_field(r, "answer", source, i), source, i, len(choices))
        subject = str(r.get("subject") or "all")
        out.append(Problem(id=f"mmlu/{subject}/{split}/{i}", question=question, answer=gold,
                           solution="", meta={"subject": subject, "choices": choices}))
    return out


def is_problem_format(row: dict) -> bool:
    """True for rows written by rlscale itself (e.g. `rlscale curate`): id, question, answer[, solution, meta]."""
    return "id" in row and "question" in row and "answer" in row


def parse_problem_rows(rows: list[dict], source: str) -> list[Problem]:
    out = []
    for i, r in enumerate(rows):
        meta = r.get("meta") or {}
        if isinstance(meta, str):
            import json

            try:
                meta = json.loads(meta)
            except json.JSONDecodeError:
                raise UserError(f"{source}: row {i + 1}: field 'meta' is not a JSON object") from None
        out.append(Problem(id=str(_field(r, "id", source, i)), question=str(_field(r, "question", source, i)),
                           answer=str(_field(r, "answer", source, i)), solution=str(r.get("solution") or ""),
                           meta=dict(meta)))
    return out


# ------------------------------------------------------------------------------------------------------- loaders
def make_loader(task: str, splits: tuple[str, ...], parse: Callable[[list[dict], str, str], list[Problem]]):
    def load(split: str = "test", data_path: str | None = None, limit: int | None = None,
             hf: bool = False) -> list[Problem]:
        if limit is not None and limit < 0:
            raise UserError(f"--limit {limit}: must be >= 0")
        if data_path is None and split not in splits:
            raise UserError(f"{task} split '{split}': valid splits are {', '.join(splits)}")
        rows, source = locate_rows(task, split, data_path, hf)
        if limit is not None:
            rows = rows[:limit]
        if rows and is_problem_format(rows[0]):
            return parse_problem_rows(rows, source)
        return parse(rows, split, source)

    load.__name__ = f"load_{task}"
    load.__doc__ = f"Problems of {task} split `split` (see rlscale.tasks.real for where data is looked for)."
    return load


load_gsm8k = make_loader("gsm8k", ("train", "test"), parse_gsm8k)
load_math500 = make_loader("math500", ("test",), make_math_parser("math500"))
load_math = make_loader("math", ("train", "test"), make_math_parser("math"))
load_mmlu = make_loader("mmlu", ("test", "validation", "dev"), parse_mmlu)

REAL_TASKS = (
    Task(name="gsm8k", description="GSM8K grade-school math word problems (integer answers, '#### n')",
         splits=("train", "test"), default_mode="flexible", template="gsm8k", load=load_gsm8k),
    Task(name="math500", description="MATH-500: the 500-problem MATH test subset (boxed LaTeX answers)",
         splits=("test",), default_mode="math", template="boxed", load=load_math500),
    Task(name="math", description="full MATH competition set (12.5k problems; when you have the files)",
         splits=("train", "test"), default_mode="math", template="boxed", load=load_math),
    # MMLU is graded by letter extraction (grading mode 'letter'), not by a number.
    Task(name="mmlu", description="MMLU multiple choice (57 subjects; gold is the letter A-D)",
         splits=("test", "validation", "dev"), default_mode="letter", template="mmlu", load=load_mmlu),
)
for _t in REAL_TASKS:
    register(_t)
