"""The Problem record and the task registry (a plain dict). Loaders live in sibling modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from rlscale.errors import UserError


@dataclass(frozen=True)
class Problem:
    """One problem: a stable id, the question text, the gold final answer, and an optional worked solution."""

    id: str
    question: str
    answer: str
    solution: str = ""
    meta: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A named task: how to load its problems and how to grade and prompt them by default.

    load(split, data_path, limit) -> list[Problem]; data_path None means the default local location
    (env var RLSCALE_DATA_DIR) or, for generated tasks, the generator.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    default_mode: str  # grading mode used as reward/metric by default
    template: str  # prompt template name (see rlscale.prompts)
    load: Callable[..., list[Problem]]
    max_new_tokens: int = 512
    """default generation budget: long enough for the task's reference solutions (a shorter budget truncates
    the longest answers and makes those problems unsolvable whatever the policy)"""


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    import rlscale.tasks  # noqa: F401  (registers the built-in tasks)

    if name not in TASKS:
        raise UserError(f"unknown task '{name}'; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
