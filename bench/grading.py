"""Grading throughput benchmark (not a test).  Run: `.venv/bin/python bench/grading.py [--reps 5]`.

Measures, on the real data in ../shared/data:
- GSM8K: the 1,319 gold solutions graded in strict / flexible / custom_flexible, one process (bar >= 5,000/s);
- MATH-500: the 500 solutions in math mode against their answers, with 2 worker processes (bar >= 300/s), and
  the symbolic-heavy case (each solution against the next problem's answer);
- baseline in the same run: Math-Verify 0.9.0 called directly (parse(solution), parse(\\boxed{answer}), verify)
  on the same inputs, one fresh process (cold caches, like our fresh workers), its default settings; for the
  symbolic-heavy case ours and the baseline alternate, so both see the same machine load.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rlscale.grading import _gold_answer, _gold_number, _Pending, _plan, _pool, score_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _rate(fn, n_items: int, reps: int) -> float:
    """Median items/s over reps runs of fn(); the parent's gold caches are cleared before each run (cold golds)."""
    times = []
    for _ in range(reps):
        _gold_answer.cache_clear()
        _gold_number.cache_clear()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_items / statistics.median(times)


def _math_verify_direct(solutions, answers) -> int:
    from math_verify import parse, verify

    return sum(bool(verify(parse("\\boxed{" + a + "}"), parse(s))) for s, a in zip(solutions, answers))


_FRESH_BASELINE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from grading import _math_verify_direct
sols, answers = json.load(sys.stdin)
_math_verify_direct(["\\\\boxed{\\\\frac{1}{2}}"], ["0.5"])  # imports and grammar outside the timing
t0 = time.perf_counter()
n = _math_verify_direct(sols, answers)
print(json.dumps([time.perf_counter() - t0, n]))
"""


def _math_verify_fresh(solutions, answers) -> tuple[float, int]:
    """Math-Verify direct in a fresh interpreter (cold sympy caches, like our fresh workers): (seconds, correct)."""
    out = subprocess.run([sys.executable, "-c", _FRESH_BASELINE, str(Path(__file__).parent)],
                         input=json.dumps([solutions, answers]), capture_output=True, text=True, check=True)
    seconds, correct = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per measurement (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for math mode")
    parser.add_argument("--rot-reps", type=int, default=2, help="alternating repetitions of the symbolic-heavy case")
    args = parser.parse_args()

    gsm = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()]
    gsm_comps = [r["answer"] for r in gsm]
    gsm_golds = [r["answer"].rsplit("####", 1)[1].strip() for r in gsm]
    rates = {}
    for mode in ("strict", "flexible", "custom_flexible"):
        assert all(r.reason == "correct" for r in score_batch(gsm_comps, gsm_golds, mode))
        rates[mode] = _rate(lambda m=mode: score_batch(gsm_comps, gsm_golds, m), len(gsm), args.reps)

    m5 = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    sols, answers = [r["solution"] for r in m5], [r["answer"] for r in m5]
    rotated = answers[1:] + answers[:1]
    t0 = time.perf_counter()
    _pool(args.workers).run([("1", "1")] * args.workers, 60.0)  # start and warm the workers
    startup_s = time.perf_counter() - t0
    own_correct = sum(r.reason == "correct" for r in score_batch(sols, answers, "math", workers=args.workers))
    math_rate = _rate(lambda: score_batch(sols, answers, "math", workers=args.workers), len(m5), args.reps)
    symbolic_own = sum(isinstance(_plan(s, a, "math"), _Pending) for s, a in zip(sols, answers))
    symbolic_rot = sum(isinstance(_plan(s, a, "math"), _Pending) for s, a in zip(sols, rotated))
    # Symbolic-heavy case: each solution against the next problem's answer.  Ours and the baseline alternate
    # (the machine is shared, so load drifts); each of our runs gets fresh warm workers with cold caches.
    ours_s, base_s, rot_results = [], [], []
    for _ in range(args.rot_reps):
        pool = _pool(args.workers)
        pool.close()
        pool.run([("1", "1")] * args.workers, 60.0)
        _gold_answer.cache_clear()
        t0 = time.perf_counter()
        rot_results = score_batch(sols, rotated, "math", workers=args.workers)
        ours_s.append(time.perf_counter() - t0)
        base_s.append(_math_verify_fresh(sols, rotated)[0])
    rot_rate = len(m5) / statistics.median(ours_s)
    baseline_rot_rate = len(m5) / statistics.median(base_s)

    seconds, baseline_correct = _math_verify_fresh(sols, answers)
    baseline_rate = len(m5) / seconds

    result = {
        "gsm8k_per_s": round(min(rates["strict"], rates["flexible"])),
        "strict_per_s": round(rates["strict"]),
        "flexible_per_s": round(rates["flexible"]),
        "custom_flexible_per_s": round(rates["custom_flexible"]),
        "math_per_s": round(math_rate),
        "math_correct": own_correct,
        "math_symbolic_items": symbolic_own,
        "math_rotated_per_s": round(rot_rate, 1),
        "math_rotated_wrong": sum(r.reason == "wrong" for r in rot_results),
        "math_rotated_symbolic_items": symbolic_rot,
        "baseline_math_verify_per_s": round(baseline_rate, 1),
        "baseline_math_verify_correct": baseline_correct,
        "baseline_math_verify_rotated_per_s": round(baseline_rot_rate, 1),
        "speedup_vs_math_verify": round(math_rate / baseline_rate, 1),
        "speedup_vs_math_verify_rotated": round(rot_rate / baseline_rot_rate, 2),
        "worker_startup_s": round(startup_s, 2),
        "workers": args.workers,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
