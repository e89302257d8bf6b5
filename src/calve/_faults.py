"""Named crash points, so tests can kill a real process at an exact step of a commit.

Set `CALVE_CRASH_AT=consumer.after_commit` (a comma-separated list) and the process sends itself
SIGKILL when it reaches that point: no cleanup handler, no `finally`, exactly like a killed worker.
`consumer.after_commit@3` kills it the third time it reaches the point, so a test can stop a process
after exactly N commits, whatever the machine's speed. Unset (always, outside tests), a crash point
is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "CALVE_CRASH_AT"
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    points = os.environ.get(ENV)
    if not points:
        return
    _reached[name] += 1
    for point in points.split(","):
        where, _, nth = point.partition("@")
        if where == name and (not nth or int(nth) == _reached[name]):
            os.kill(os.getpid(), signal.SIGKILL)
