"""Named crash points, so tests can kill a real process at an exact step of a commit.

Set `CALVE_CRASH_AT=consumer.after_commit` (a comma-separated list) and the process sends itself
SIGKILL when it reaches that point: no cleanup handler, no `finally`, exactly like a killed worker.
Unset (always, outside tests), a crash point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CALVE_CRASH_AT"


def crash_point(name: str) -> None:
    points = os.environ.get(ENV)
    if points and name in points.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
