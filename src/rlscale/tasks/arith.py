"""The generated `arith` task of the CPU lab: chained variable arithmetic with a worked chain of thought.

A problem defines a literal and then k computed variables; the question asks for the last one:

    prompt    a=7,b=a*3,c=b+5;c?
    solution  b=a*3=7*3=21;c=b+5=21+5=26;####26        (or ...;answer: 26 for a fraction of pretraining data)

Each step restates its definition, substitutes the values and computes (LAB_NOTES: the only form a tiny model learned
in minutes). Difficulty is the number of steps k. Everything is deterministic from a seed; answers are kept balanced
(no value dominates; see `constant_answer_baseline`). Splits `train`/`val`/`test` are fixed and disjoint by question.
"""

from __future__ import annotations

import functools
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from rlscale.errors import UserError
from rlscale.tasks.base import Problem, Task, register

VAR_NAMES = string.ascii_lowercase
ALPHABET = " 0123456789" + string.ascii_lowercase + "=+-*,;?#:"
"""every character a question or solution of this task can contain (the lab tokenizer's vocabulary)"""

HARDER_RARER = (0.30, 0.24, 0.18, 0.13, 0.09, 0.06)
"""a corpus mix where harder problems are rarer (the lab's default before the uniform mix); used in examples"""


def step_weights_problem(weights: Sequence[float], max_steps: int) -> str | None:
    """What is wrong with a mix of difficulties (None if nothing): one relative weight per k = 1..max_steps."""
    if len(weights) != max_steps or min(weights, default=0) < 0 or sum(weights) <= 0:
        return (f"give {max_steps} non-negative weights (P(k) for k = 1..{max_steps} steps) with a positive sum, "
                f"e.g. {','.join(f'{w:g}' for w in HARDER_RARER)}")
    return None


@dataclass(frozen=True)
class ArithConfig:
    """Generator settings. Defaults are the lab's (LAB_NOTES: learnable by a 0.1M model in minutes)."""

    max_steps: int = 6
    """problems have k = 1..max_steps computed variables"""
    step_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    """relative P(k) for the pretraining corpus; len == max_steps. Uniform, like the RL/eval splits: harder problems
    are still learned imperfectly (accuracy falls with k), and the s model's per-problem pass rates spread more than
    with a harder-rarer mix (rlscale.lab.presets: Easy share 21% vs 11% of held-out problems)"""
    single_digit_frac: float = 0.75
    """probability a literal is a single digit (else two digits)"""
    max_operand: int = 30
    """largest literal"""
    max_value: int = 59
    """every intermediate result lies in [0, max_value]"""
    p_prev: float = 0.7
    """probability a new variable is computed from the previous one (else from a random earlier one)"""
    p_var_operand: float = 0.25
    """probability the right operand is another variable instead of a literal"""
    ops: tuple[str, ...] = ("+", "-", "*")
    """operators"""
    zero_keep: float = 0.15
    """probability a result of 0 is accepted (0 is otherwise over-represented: x-x, a*0)"""
    alt_format_frac: float = 0.0
    """fraction of solutions ending ';answer: n' instead of ';####n' (pretraining corpus only)"""
    slip_frac: float = 0.0
    """per-step probability that a pretraining solution slips (later steps carry the wrong value on), as real base
    models learn from imperfect worked solutions. A model that imitates its corpus then solves a k-step problem with
    probability ~ (1 - slip_frac)^k: per-problem pass rates spread over (0, 1) instead of piling up at 0 and 1, and
    RL has slips to remove (pretraining corpus only)"""
    slip_kind: str = "result"
    """'result': the step's result is off by 1..3 (the corpus then teaches wrong arithmetic facts too);
    'operand': a substituted variable value is off by 1..3 and the arithmetic on it is right (facts stay clean)"""

    def validate(self) -> ArithConfig:
        if not 1 <= self.max_steps <= len(VAR_NAMES) - 1:
            raise UserError(f"arith max_steps={self.max_steps}: must be in 1..{len(VAR_NAMES) - 1}")
        problem = step_weights_problem(self.step_weights, self.max_steps)
        if problem:
            raise UserError(f"arith step_weights: {problem}")
        if self.slip_kind not in ("result", "operand"):
            raise UserError(f"arith slip_kind={self.slip_kind!r}: choose 'result' or 'operand'")
        if not set(self.ops) <= {"+", "-", "*"} or not self.ops:
            raise UserError(f"arith ops={self.ops}: choose a non-empty subset of + - *")
        for name in ("single_digit_frac", "p_prev", "p_var_operand", "zero_keep", "alt_format_frac", "slip_frac"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise UserError(f"arith {name}={v}: must be in [0, 1]")
        if self.max_operand < 10 or self.max_value < 10:
            raise UserError("arith max_operand and max_value must be >= 10")
        return self


@dataclass(frozen=True)
class Step:
    """One computed variable: name = left op right (right is a variable name or a literal)."""

    name: str
    left: str
    op: str
    right: str  # variable name or decimal literal
    value: int


@dataclass(frozen=True)
class ArithProblem:
    start_name: str
    start_value: int
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def question(self) -> str:
        defs = [f"{self.start_name}={self.start_value}"] + [f"{s.name}={s.left}{s.op}{s.right}" for s in self.steps]
        return ",".join(defs) + f";{self.steps[-1].name}?"

    @property
    def answer(self) -> int:
        return self.steps[-1].value


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _literal(rng: random.Random, cfg: ArithConfig) -> int:
    if rng.random() < cfg.single_digit_frac:
        return rng.randint(0, 9)
    return rng.randint(10, cfg.max_operand)


def _ok(value: int, cfg: ArithConfig, rng: random.Random) -> bool:
    if not 0 <= value <= cfg.max_value:
        return False
    return value != 0 or rng.random() < cfg.zero_keep


def generate_problem(rng: random.Random, cfg: ArithConfig, k: int) -> ArithProblem:
    """One problem with k computed variables, drawn with `rng` (a random.Random)."""
    values = {VAR_NAMES[0]: _literal(rng, cfg)}
    names = [VAR_NAMES[0]]
    steps: list[Step] = []
    for i in range(1, k + 1):
        name = VAR_NAMES[i]
        left = names[-1] if (len(names) == 1 or rng.random() < cfg.p_prev) else rng.choice(names[:-1])
        step = None
        for _ in range(60):
            op = rng.choice(cfg.ops)
            if len(names) > 1 and rng.random() < cfg.p_var_operand:
                right = rng.choice([n for n in names if n != left])
                rv = values[right]
            else:
                rv = _literal(rng, cfg)
                if op == "*" and rv < 2:
                    continue  # x*0, x*1 are degenerate
                right = str(rv)
            value = _apply(values[left], op, rv)
            if _ok(value, cfg, rng):
                step = Step(name, left, op, right, value)
                break
        if step is None:  # always satisfiable: subtract a digit no larger than the left value
            rv = rng.randint(0, min(9, values[left]))
            step = Step(name, left, "-", str(rv), values[left] - rv)
        steps.append(step)
        values[name] = step.value
        names.append(name)
    return ArithProblem(VAR_NAMES[0], values[VAR_NAMES[0]], tuple(steps))


COMMUTATIVE = frozenset("+*")


def _step_text(s: Step, values: dict[str, int], commute: bool = False) -> str:
    """`c=b+5=21+5=26`; with commute (for + and * only) the substituted operands swap: `c=b+5=5+21=26`."""
    lv, rv = values[s.left], values[s.right] if s.right in values else int(s.right)
    if commute and s.op in COMMUTATIVE:
        lv, rv = rv, lv
    return f"{s.name}={s.left}{s.op}{s.right}={lv}{s.op}{rv}={s.value}"


def _answer_text(value: int, alt_format: bool = False) -> str:
    """A solution's last part: `####n`, or `answer: n` in the alternate format."""
    return f"answer: {value}" if alt_format else f"####{value}"


def format_solution(p: ArithProblem, order: Sequence[int] | None = None, alt_format: bool = False,
                    commute: Sequence[bool] | None = None) -> str:
    """The worked solution; `order` is a permutation of step indices (a topological order), default as defined;
    `commute[i]` swaps the substituted operands of step i when its operator is commutative (default: none)."""
    values = {p.start_name: p.start_value} | {s.name: s.value for s in p.steps}
    order = range(len(p.steps)) if order is None else order
    flips = commute if commute is not None else [False] * len(p.steps)
    body = ";".join(_step_text(p.steps[i], values, bool(flips[i])) for i in order)
    return f"{body};{_answer_text(p.answer, alt_format)}"


def slipped_solution(p: ArithProblem, rng: random.Random, slip_frac: float, alt_format: bool = False,
                     kind: str = "result") -> str:
    """The worked solution as an imperfect solver writes it: with probability slip_frac per step, the step's result
    (kind 'result') or the value it substitutes for its left variable (kind 'operand') is off by 1..3 (never below
    0); later steps compute with the values as written. slip_frac = 0 gives `format_solution(p)` exactly (and draws
    nothing from rng)."""
    if slip_frac <= 0.0:
        return format_solution(p, alt_format=alt_format)

    def off(v: int) -> int:
        delta = rng.choice((-3, -2, -1, 1, 2, 3))
        return v + delta if v + delta >= 0 else v - delta

    written = {p.start_name: p.start_value}
    parts = []
    for s in p.steps:
        lv = written[s.left]
        rv = written[s.right] if s.right in written else int(s.right)
        slip = rng.random() < slip_frac
        if slip and kind == "operand":
            lv = off(lv)
        value = _apply(lv, s.op, rv)
        if slip and kind == "result":
            value = off(value)
        written[s.name] = value
        parts.append(f"{s.name}={s.left}{s.op}{s.right}={lv}{s.op}{rv}={value}")
    return ";".join(parts) + ";" + _answer_text(written[p.steps[-1].name], alt_format)


def _deps(p: ArithProblem) -> list[set[int]]:
    index = {s.name: i for i, s in enumerate(p.steps)}
    return [{index[n] for n in (s.left, s.right) if n in index} for s in p.steps]


def _random_topological_order(deps: list[set[int]], rng: random.Random) -> tuple[int, ...]:
    done: list[int] = []
    remaining = set(range(len(deps)))
    while remaining:
        ready = sorted(i for i in remaining if deps[i] <= set(done))
        i = rng.choice(ready)
        done.append(i)
        remaining.remove(i)
    return tuple(done)


def to_problem(p: ArithProblem, pid: str, alt_format: bool = False) -> Problem:
    return Problem(id=pid, question=p.question, answer=str(p.answer),
                   solution=format_solution(p, alt_format=alt_format), meta={"steps": len(p.steps)})


def parse_question(question: str) -> ArithProblem:
    """Rebuild the structure from a question string (so solutions() works on problems loaded from JSONL)."""
    try:
        defs, target = question.rstrip("?").split(";")
        parts = defs.split(",")
        start_name, start_value = parts[0].split("=")
        values = {start_name: int(start_value)}
        steps = []
        for d in parts[1:]:
            name, expr = d.split("=")
            op = next(c for c in expr[1:] if c in "+-*")
            left, right = expr.split(op, 1)
            rv = values[right] if right in values else int(right)
            value = _apply(values[left], op, rv)
            steps.append(Step(name, left, op, right, value))
            values[name] = value
        if not steps or steps[-1].name != target:
            raise ValueError("target is not the last variable")
    except (ValueError, KeyError, StopIteration) as e:
        raise UserError(f"not an arith question: {question!r} ({e})") from None
    return ArithProblem(start_name, int(start_value), tuple(steps))


def chain_checker(question: str) -> Callable[[str], bool]:
    """The question parsed once, for many completions: a function telling whether a completion's worked chain is
    right (see chain_is_valid)."""
    p = parse_question(question)
    values = {p.start_name: p.start_value} | {s.name: s.value for s in p.steps}
    index = {s.name: i for i, s in enumerate(p.steps)}
    deps = _deps(p)
    ends = (_answer_text(p.answer), _answer_text(p.answer, alt_format=True))

    def valid(completion: str) -> bool:
        *body, end = completion.strip().split(";")
        if end not in ends or len(body) != len(p.steps):
            return False
        done: set[int] = set()
        for text in body:
            i = index.get(text.split("=", 1)[0])
            if i is None or i in done or not deps[i] <= done:
                return False
            s = p.steps[i]
            if text not in (_step_text(s, values), _step_text(s, values, commute=True)):
                return False
            done.add(i)
        return True

    return valid


def chain_is_valid(question: str, completion: str) -> bool:
    """True when the completion's worked chain is right: every step of the problem exactly once, in an order its
    dependencies allow, each restating its definition with the true values substituted (either operand order for +
    and *) and the true result, then `####n` or `answer: n` with the true answer. A completion can reach the gold
    answer through wrong steps (a lucky hit): the outcome grader rewards it and this returns False."""
    return chain_checker(question)(completion)


def solutions(problem: Problem, m: int, seed: int = 0, max_tries: int | None = None, reorder: bool = False) -> list[str]:
    """Up to m distinct correct worked solutions, the canonical one first. The others compute the same steps in
    the same order and differ in the order each + or * step writes its substituted operands (`21+5` or `5+21`,
    chosen per step), so a k-step problem with j commutative steps has up to 2^j chains; with `reorder`, the steps
    also come in any valid order (any topological order of the dependency graph). Fewer than m when the structure
    allows fewer. (Re-ordered chains broke the 0.1M lab model under SFT, as measured in rlscale.coscale.lab, so
    reordering is off by default.)"""
    p = parse_question(problem.question)
    rng = random.Random(seed)
    deps, k = _deps(p), len(p.steps)
    canonical = tuple(range(k))
    texts = [format_solution(p)]
    seen = set(texts)
    for _ in range(max_tries if max_tries is not None else 20 * m):
        if len(texts) >= m:
            break
        order = _random_topological_order(deps, rng) if reorder else canonical
        t = format_solution(p, order, commute=[rng.random() < 0.5 for _ in range(k)])
        if t not in seen:
            seen.add(t)
            texts.append(t)
    return texts[:m]


def sample_steps(rng: random.Random, cfg: ArithConfig, weights: Sequence[float] | None = None) -> int:
    w = cfg.step_weights if weights is None else weights
    return rng.choices(range(1, cfg.max_steps + 1), weights=w)[0]


def generate_problems(n: int, seed: int, cfg: ArithConfig | None = None, *, uniform_steps: bool = False,
                      exclude: frozenset[str] | set[str] = frozenset(), prefix: str = "arith") -> list[Problem]:
    """n distinct problems (deduplicated by question, skipping `exclude`), deterministic from seed.

    Steps k follow cfg.step_weights, or are uniform over 1..max_steps when uniform_steps (the RL/eval splits).
    A cfg.alt_format_frac fraction of solutions end 'answer: n'.
    """
    cfg = (cfg or ArithConfig()).validate()
    rng = random.Random(seed)
    weights = [1.0] * cfg.max_steps if uniform_steps else None
    out: list[Problem] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise UserError(f"arith: could not generate {n} distinct problems; lower n or widen the config")
        p = generate_problem(rng, cfg, sample_steps(rng, cfg, weights))
        q = p.question
        if q in seen or q in exclude:
            continue
        seen.add(q)
        out.append(to_problem(p, f"{prefix}-{len(out)}", alt_format=rng.random() < cfg.alt_format_frac))
    return out


def corpus_stream(seed: int, cfg: ArithConfig, exclude: frozenset[str] = frozenset()) -> Iterator[str]:
    """Endless pretraining documents `question + solution` (EOS added by the caller), P(k) = cfg.step_weights."""
    cfg = cfg.validate()
    rng = random.Random(seed)
    while True:
        p = generate_problem(rng, cfg, sample_steps(rng, cfg))
        if p.question in exclude:
            continue
        alt = rng.random() < cfg.alt_format_frac
        yield p.question + slipped_solution(p, rng, cfg.slip_frac, alt_format=alt, kind=cfg.slip_kind)


MAX_NEW_TOKENS = 128
"""arith's generation budget: the longest worked solution (6 steps of two-digit values) is ~100 characters; at 64,
every 5- and 6-step problem is truncated before its answer (a test checks the splits fit)"""

SPLIT_SIZES = {"train": 20_000, "val": 2_000, "test": 2_000}
SPLIT_SEEDS = {"train": 1001, "val": 2002, "test": 3003}


@functools.lru_cache(maxsize=4)
def _split(split: str) -> tuple[Problem, ...]:
    # test first, then val excluding test, then train excluding both: disjoint by construction
    test = generate_problems(SPLIT_SIZES["test"], SPLIT_SEEDS["test"], uniform_steps=True, prefix="arith-test")
    if split == "test":
        return tuple(test)
    tq = frozenset(p.question for p in test)
    val = generate_problems(SPLIT_SIZES["val"], SPLIT_SEEDS["val"], uniform_steps=True, exclude=tq,
                            prefix="arith-val")
    if split == "val":
        return tuple(val)
    vq = tq | {p.question for p in val}
    return tuple(generate_problems(SPLIT_SIZES["train"], SPLIT_SEEDS["train"], uniform_steps=True, exclude=vq,
                                   prefix="arith-train"))


def heldout_questions() -> frozenset[str]:
    """Questions of the val and test splits (the pretraining corpus never contains them)."""
    return frozenset(p.question for s in ("val", "test") for p in _split(s))


def load_arith(split: str, data_path: str | None = None, limit: int | None = None) -> list[Problem]:
    """Problems of a fixed split (steps uniform over 1..6), or of a JSONL file (id, question, answer[, solution,
    meta]) when data_path is given (curated sets are written in that format)."""
    if limit is not None and limit < 0:
        raise UserError(f"--limit {limit}: must be >= 0")
    if data_path is not None:
        from rlscale.io import read_jsonl

        rows = read_jsonl(data_path, required=("id", "question", "answer"))
        probs = [Problem(id=str(r["id"]), question=r["question"], answer=str(r["answer"]),
                         solution=r.get("solution", "") or "", meta=dict(r.get("meta") or {})) for r in rows]
    else:
        if split not in SPLIT_SIZES:
            raise UserError(f"arith split '{split}': valid splits are {', '.join(SPLIT_SIZES)}")
        probs = list(_split(split))
    return probs[:limit] if limit is not None else probs


def constant_answer_baseline(problems: Sequence[Problem]) -> float:
    """Best accuracy any constant answer achieves (the score of a collapsed policy that always prints it)."""
    if not problems:
        return 0.0
    return Counter(p.answer for p in problems).most_common(1)[0][1] / len(problems)


TASK = register(Task(name="arith", description="generated chained arithmetic with worked solutions (CPU lab)",
                     splits=tuple(SPLIT_SIZES), default_mode="flexible", template="plain", load=load_arith,
                     max_new_tokens=MAX_NEW_TOKENS))


_FINAL = re.compile(r"####\s*(-?\d+)|answer:\s*(-?\d+)")


def extract_answer(completion: str, strict: bool = False) -> str | None:
    """The final answer of a lab completion: the first '####n' (strict) or the first '####n' / 'answer: n'
    (flexible). A lightweight task-local check; rlscale.grading is the evaluation grader."""
    for m in _FINAL.finditer(completion):
        if m.group(1) is not None:
            return m.group(1)
        if not strict:
            return m.group(2)
    return None


def is_correct(completion: str, answer: str, strict: bool = False) -> bool:
    got = extract_answer(completion, strict)
    return got is not None and int(got) == int(answer)
