"""Task registry: importing this package registers every built-in task into `rlscale.tasks.base.TASKS`.

Real benchmarks (gsm8k, math500, math, mmlu) live in `real.py`; the generated lab task `arith` in `arith.py`.
"""

from rlscale.tasks import real  # noqa: F401  (registers gsm8k, math500, math, mmlu)
from rlscale.tasks.base import TASKS, Problem, Task, get_task, register

try:
    from rlscale.tasks import arith  # noqa: F401  (registers arith)
except ModuleNotFoundError as e:  # the arith module may not exist yet in a partial checkout
    if e.name != "rlscale.tasks.arith":
        raise

__all__ = ["TASKS", "Problem", "Task", "get_task", "register"]
