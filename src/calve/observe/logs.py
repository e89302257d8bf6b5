"""The scheduler's log as JSON lines (`calve scheduler --log-format json`): one object per line.

Every line has `ts` (ISO 8601, UTC, milliseconds), `level` (`info`, or `error` for a failed run),
`event` and `message` (the text log's line). Events: `log` (the scheduler's own lines: started,
stopped, a workflow waiting or in error), `progress` (a run's step progress), and `firing` (a
trigger fired or a workflow's state changed), which adds `workflow`, `trigger`, `slot`, `note`,
and, when it ran a run, `run_id`, `status`, `attempt`, `transient`, `error`, `duration_s` and the
run's metrics (`cpu_s`, `rows_read`, `rows_written`, `freshness_s`, `lookback_rows_estimate`,
`lookback_days`, `peak_rss_bytes`, `error_class`; absent when unknown). Documented in
docs/observability.md.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calve.workflows.scheduler import Firing


class JsonLog:
    """Writes JSON-lines log events to a stream (stdout by default), one whole line each."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        self._lock = threading.Lock()

    def event(self, event: str, message: str, level: str = "info", **fields: Any) -> None:
        stamp = self.clock().astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = {"ts": stamp, "level": level, "event": event, "message": message, **fields}
        text = json.dumps(line, default=str, separators=(",", ":"))
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def log(self, message: str) -> None:
        self.event("log", message)

    def progress(self, message: str) -> None:
        self.event("progress", message.strip())

    def firing(self, firing: Firing) -> None:
        fields: dict[str, Any] = {
            "workflow": firing.workflow,
            "trigger": firing.trigger,
            "slot": firing.slot,
            "note": firing.note or None,
        }
        level = "info"
        if firing.result is not None:
            run = firing.result.run
            took = run.finished_at - run.started_at if run.finished_at and run.started_at else None
            fields.update(
                run_id=run.run_id,
                status=run.status.value,
                attempt=run.attempt,
                transient=run.transient,
                error=run.error,
                duration_s=round(took, 3) if took is not None else None,
                **run.metrics.to_dict(),
            )
            level = "error" if run.status.value == "failed" else "info"
        self.event("firing", firing.describe(self.clock()), level=level, **fields)
