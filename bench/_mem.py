"""Peak resident memory of this process, for the memory benchmarks (Linux /proc): reset_peak() sets the peak to the
current RSS, peak_rss_bytes() reads it (VmHWM)."""

from __future__ import annotations


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
