"""Peak host memory of this process, per benchmark row where Linux allows it.

Linux resets the resident-set high-water mark (``VmHWM``) when ``5`` is written to
``/proc/self/clear_refs``, so each configuration gets its own peak. Elsewhere the figure is
``ru_maxrss``, the peak over the process lifetime, and says so.
"""
from __future__ import annotations

import resource
import sys
from typing import Tuple


def reset_host_peak() -> bool:
    """Start a new host peak; False where the platform cannot (the peak is then lifetime)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def host_peak() -> Tuple[int, str]:
    """``(bytes, how measured)``: VmHWM since :func:`reset_host_peak`, else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM (peak resident set of this row)"
    except (OSError, ValueError, IndexError):
        pass  # no /proc (macOS) or an unexpected format: ru_maxrss below is the fallback
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return (rss if sys.platform == "darwin" else rss * 1024), "ru_maxrss (peak over the process lifetime)"


__all__ = ["host_peak", "reset_host_peak"]
