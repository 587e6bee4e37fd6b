"""For the memory benchmarks (Linux /proc): each measurement runs in its own process (run_child), where reset_peak()
sets the peak resident memory to the current RSS and peak_rss_bytes() reads it (VmHWM)."""

from __future__ import annotations

import json
import subprocess
import sys


def run_child(script: str, *args: str) -> dict:
    """Run `python script *args` in a fresh process; the JSON object on its last stdout line."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def reset_peak() -> int:
    """Reset the peak RSS to the current RSS (clear_refs 5); return it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
