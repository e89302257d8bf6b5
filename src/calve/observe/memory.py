"""Peak resident memory of this process, per step where the platform allows it.

On Linux, writing 5 to /proc/self/clear_refs resets the peak (VmHWM), so each step's peak is its own;
elsewhere (or when that file is not writable) the peak is the process's since it started
(`getrusage`), which can only grow: a step's figure is then an upper bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory to its current size; False where that is impossible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes(since_reset: bool = True) -> int | None:
    """The peak resident memory in bytes (since the last reset, where one happened)."""
    if since_reset:
        try:
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
        except OSError:
            pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
