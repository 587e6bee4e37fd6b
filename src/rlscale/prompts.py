"""Problem -> prompt text: templates for 0..k-shot prompting, stop strings, deterministic exemplar choice. Pure.

Templates
  gsm8k  "Question: <q>\\nAnswer:"; an exemplar is "Question: <q>\\nAnswer: <solution ending '#### n'>", exemplars
         separated by a blank line (the lm-evaluation-harness GSM8K format). Stop: "Question:".
  boxed  an instruction to put the final answer in \\boxed{}, then "Problem: <q>\\nSolution:"; exemplars are
         "Problem: <q>\\nSolution: <solution>" (MATH solutions end in \\boxed{}). Stop: "Problem:".
  mmlu   "The following are multiple choice questions (with answers) about <subject>.", then per question
         "<q>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:" (exemplars end " <letter>"). Stop: newline.
  plain  the lab's: the question unchanged at 0 shots (an arith question ends in '?', the model continues with the
         solution); with k shots, k exemplars "<question><solution>" then the question, joined by PLAIN_SEPARATOR.
         That is a space, not a newline: the lab's character tokenizer has no newline (a space is in its alphabet),
         so a newline-separated prompt could not be encoded. No stop strings: the lab model ends with EOS.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rlscale.errors import UserError
from rlscale.tasks.base import Problem

TEMPLATES = ("gsm8k", "boxed", "mmlu", "plain")
BOXED_INSTRUCTION = "Solve the following math problem step by step. Put your final answer within \\boxed{}."
MMLU_LETTERS = "ABCD"
PLAIN_SEPARATOR = " "
"""between the exemplars and the question of a k-shot `plain` prompt (the lab alphabet has no newline)"""

_STOPS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("Question:",),
    "boxed": ("Problem:",),
    "mmlu": ("\n",),
    "plain": (),
}


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise UserError(f"unknown prompt template '{template}'; valid templates: {', '.join(TEMPLATES)}")


def _mmlu_block(p: Problem) -> str:
    choices = list(p.meta.get("choices") or [])
    if not choices:
        raise UserError(f"problem {p.id}: the mmlu template needs meta['choices']")
    lines = [p.question.strip()] + [f"{MMLU_LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def _query(p: Problem, template: str) -> str:
    if template == "gsm8k":
        return f"Question: {p.question.strip()}\nAnswer:"
    if template == "boxed":
        return f"Problem: {p.question.strip()}\nSolution:"
    if template == "mmlu":
        return _mmlu_block(p)
    return p.question


def _exemplar(p: Problem, template: str) -> str:
    if template == "mmlu":
        return f"{_query(p, template)} {p.answer}"
    if not p.solution:
        raise UserError(f"exemplar {p.id} has no solution; draw exemplars from a split with worked solutions")
    if template == "plain":
        return p.question + p.solution
    return f"{_query(p, template)} {p.solution.strip()}"


def render(problem: Problem, template: str, shots: int = 0, exemplars: Sequence[Problem] = ()) -> str:
    """The prompt for `problem`: the first `shots` exemplars (in order) as worked examples, then the problem."""
    _check_template(template)
    if shots < 0:
        raise UserError(f"--shots {shots}: must be >= 0")
    if shots > len(exemplars):
        raise UserError(f"--shots {shots}: only {len(exemplars)} exemplars available; draw more from the train split")
    shown = [_exemplar(e, template) for e in exemplars[:shots]]
    query = _query(problem, template)
    if template == "plain":
        return PLAIN_SEPARATOR.join(shown + [query])
    body = "\n\n".join(shown + [query])
    if template == "boxed":
        return f"{BOXED_INSTRUCTION}\n\n{body}"
    if template == "mmlu":
        subject = str(problem.meta.get("subject") or "").replace("_", " ").strip()
        about = f" about {subject}" if subject and subject != "all" else ""
        return f"The following are multiple choice questions (with answers){about}.\n\n{body}"
    return body


def stop_strings(template: str) -> tuple[str, ...]:
    """Strings that end generation for this template (kept in the text by the samplers)."""
    _check_template(template)
    return _STOPS[template]


def select_exemplars(train_problems: Sequence[Problem], k: int, seed: int = 0,
                     exclude: Sequence[str] = ()) -> list[Problem]:
    """k exemplars drawn from train_problems without replacement, deterministic in (seed, the pool's ids).

    Problems whose id or question is in `exclude` (pass the evaluated problem's id) are never drawn, and neither
    are problems without a worked solution when any have one. Sorting by id first makes the choice independent of
    the pool's order.
    """
    if k < 0:
        raise UserError(f"number of exemplars {k}: must be >= 0")
    banned = set(exclude)
    pool = [p for p in train_problems if p.id not in banned and p.question not in banned]
    with_solution = [p for p in pool if p.solution]
    pool = sorted(with_solution or pool, key=lambda p: p.id)
    if k > len(pool):
        raise UserError(f"cannot draw {k} exemplars from {len(pool)} eligible train problems; lower --shots")
    return random.Random(seed).sample(pool, k)
