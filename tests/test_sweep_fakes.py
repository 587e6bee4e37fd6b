"""A fake GRPO trainer and run store for the sweep tests (no tests here; imported by worker processes).

fake_train(config, out_dir, resume, progress) has the trainer's signature: it takes config['iterations'] steps of
n * B_problem rollouts, logs deterministic metrics (a function of seed, step and grid point only), validates every
config['val_every'] steps and at step 0 into a real rlscale.store.RunStore (each step is one transaction, so the steps table is its own
checkpoint) and writes summary.json last. RLSCALE_FAKE_STEP_S sleeps per step (kill tests); RLSCALE_FAKE_FAIL=<n>
makes runs with that n fail; RLSCALE_FAKE_LR_AWARE=1 makes the validation depend on config['lr'] too.
"""

from __future__ import annotations

import math
import os
import time

from rlscale.seeds import derive_seed
from rlscale.store import RunStore, config_hash


def _val(seed: int, n: int, bp: int, step: int, lr: float | None = None) -> float:
    """Rises with compute; with an lr (an lr-grid sweep) the rise shrinks away from the n-dependent best rate
    1.75e-5 * n (n = 2: 3.5e-5, n = 4: 7e-5, n = 8: 1.4e-4)."""
    noise = derive_seed(seed, n, bp, step) % 1000 / 1e5
    fit = 1.0 if lr is None else 1.0 / (1.0 + math.log2(lr / (1.75e-5 * n)) ** 2)
    return round(0.2 + 0.3 * fit * (1 - 1 / (1 + step * n * bp / 2000)) + noise, 6)


def fake_train(config: dict, out_dir: str, resume: bool = True, progress: bool = False) -> dict:
    n, bp, m, seed = (config["rollouts_per_problem"], config["problems_per_batch"], config["iterations"],
                      config["seed"])
    lr = config.get("lr") if os.environ.get("RLSCALE_FAKE_LR_AWARE") else None
    if str(n) == os.environ.get("RLSCALE_FAKE_FAIL"):
        raise RuntimeError(f"fake failure for n={n}")
    val_every = config.get("val_every") or m
    if RunStore.exists(out_dir):
        assert resume, "run exists and resume is off"
        store = RunStore.open(out_dir)
        if store.config_hash != config_hash(config):  # as the real trainer (rlscale.rl.grpo.open_run) refuses it
            raise RuntimeError(f"{out_dir}: config differs from the stored run")
    else:
        store = RunStore.create(out_dir, config)
    done = [s["step"] for s in store.steps()]
    last = max(done, default=0)
    store.truncate_after(last)  # an eval logged before its step was: redo both
    if not store.evals():
        store.log_eval(0, {"val/avg": _val(seed, n, bp, 0, lr), "epochs": 0.0})
    delay = float(os.environ.get("RLSCALE_FAKE_STEP_S", "0"))
    for step in range(last + 1, m + 1):
        time.sleep(delay)
        rollouts = step * n * bp
        if step % val_every == 0 or step == m:
            store.log_eval(step, {"val/avg": _val(seed, n, bp, step, lr), "val/pass@4": min(1.0, 2 * _val(seed, n, bp, step, lr)),
                                  "epochs": rollouts / n / 1000})
        store.log_step(step, {"compute/rollouts": rollouts, "compute/tokens_generated": 7 * rollouts,
                              "compute/tokens_prompt": 11 * rollouts, "compute/flops": 1000.0 * rollouts,
                              "time/wall_s": time.time(), "rollout/reward_mean": _val(seed, n, bp, step, lr) / 2})
    evals = store.evals()
    summary = {"steps": m, "rollouts": m * n * bp, "val_before": evals[0]["val/avg"], "val_after": evals[-1]["val/avg"],
               "wall_s": 0.0}
    store.write_summary(summary)
    store.close()
    return summary
