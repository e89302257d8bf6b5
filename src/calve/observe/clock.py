"""The timing helper of a step: which phase the time went to, which files it read, its peak memory.

The runner opens one `StepObservation` per step (`observe_step`); code anywhere below it marks its
phases with `with phase("read"):` and reports the record counts of the files it reads with
`note_input_files`. Both are no-ops outside a step, so library callers (a `Consumer` used on its
own) pay nothing. Phases nest without double counting: time spent in an inner phase (the commit
inside the write) is taken off the outer one, so the phases never overlap.

`CALVE_OBSERVE=0` turns off the extra collection (phases, files, memory and the metrics computed
from them at the end of a step and a run), so that its cost can be measured against a run without
it (benchmarks/observe.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from calve.observe.memory import peak_rss_bytes, reset_peak_rss
from calve.state.records import StepTimings

PHASES = ("plan", "read", "compute", "write", "commit")


def enabled() -> bool:
    """Whether the extra metrics are collected (`CALVE_OBSERVE=0` turns them off)."""
    return os.environ.get("CALVE_OBSERVE", "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class StepObservation:
    """What one step did while it ran, beyond its result: phase seconds, files read, peak memory."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    input_file_rows: list[int] = field(default_factory=list)
    peak_reset: bool = False  # the peak memory was reset when the step started (Linux)
    _stack: list[tuple[str, float]] = field(default_factory=list)

    def peak_rss_bytes(self) -> int | None:
        """The peak resident memory since the step started (since the process started, without a reset)."""
        return peak_rss_bytes(since_reset=self.peak_reset)

    def timings(self) -> StepTimings:
        s = self.seconds
        return StepTimings(s["plan"], s["read"], s["compute"], s["write"], s["commit"])

    def _enter(self, name: str) -> None:
        now = time.perf_counter()
        if self._stack:  # pause the outer phase
            outer, since = self._stack[-1]
            self.seconds[outer] += now - since
        self._stack.append((name, now))

    def _exit(self) -> None:
        now = time.perf_counter()
        name, since = self._stack.pop()
        self.seconds[name] += now - since
        if self._stack:  # resume the outer phase
            outer, _ = self._stack[-1]
            self._stack[-1] = (outer, now)


_current: ContextVar[StepObservation | None] = ContextVar("calve_step_observation", default=None)


@contextmanager
def observe_step() -> Iterator[StepObservation | None]:
    """Collect what the step run inside does (None, and nothing collected, with CALVE_OBSERVE=0)."""
    if not enabled():
        yield None
        return
    observation = StepObservation(peak_reset=reset_peak_rss())
    token = _current.set(observation)
    try:
        yield observation
    finally:
        _current.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time inside as phase `name` (one of PHASES) of the step being observed, if any."""
    observation = _current.get()
    if observation is None:
        yield
        return
    observation._enter(name)
    try:
        yield
    finally:
        observation._exit()


def note_input_files(record_counts: Iterable[int]) -> None:
    """Record the record counts of data files a step reads (for its skew), if a step is observed."""
    observation = _current.get()
    if observation is not None:
        observation.input_file_rows.extend(record_counts)
