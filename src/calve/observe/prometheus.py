"""The scheduler's Prometheus endpoint (`calve scheduler --metrics-port PORT`).

What the runs did is read from the state store at each scrape (so runs of other processes, such as
a manual `calve run`, count too); what is pending per consumer is measured by the scheduler after
each tick (`observe_pending`) and kept until the next. The endpoint binds 127.0.0.1 unless told
otherwise: run metrics name tables and workflows, which is not for every network.

prometheus_client is imported here only, and this module only when the scheduler serves metrics:
`calve --help` never loads it. The metric names and labels are listed in docs/observability.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

if TYPE_CHECKING:
    from calve.state import StateStore
    from calve.workflows.model import Workflow
    from calve.workflows.pending import Pending

DEFAULT_METRICS_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ConsumerLag:
    """What one consumer (a workflow step) has pending on one source table."""

    consumer: str
    table: str
    snapshots: int  # logical snapshots past its checkpoint
    lag_s: float  # age of the oldest of them (0 when none is pending)


class SchedulerMetrics:
    """A Prometheus collector of calve's run history, pending changes and freshness."""

    def __init__(self, state: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self._lock = threading.Lock()
        self._lags: dict[tuple[str, str], ConsumerLag] = {}
        self._ticks = 0
        self._last_tick: float | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]

    def observe_pending(self, workflow: Workflow, pending: Pending) -> None:
        """Record what each step of `workflow` has pending (from the scheduler's `Runner.pending`)."""
        now = self.clock()
        lags = {}
        for step in workflow.steps:
            for table, change_set in pending.changes.get(step.id, {}).items():
                logical = change_set.logical_snapshots
                oldest = min((s.timestamp_ms for s in logical), default=None)
                consumer = workflow.consumer_name(step)
                lag_s = max(0.0, now - oldest / 1000) if oldest is not None else 0.0
                lags[(consumer, table)] = ConsumerLag(consumer, table, len(logical), lag_s)
        with self._lock:
            self._lags.update(lags)

    def observe_tick(self) -> None:
        with self._lock:
            self._ticks += 1
            self._last_tick = self.clock()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        """The metrics, read now (called by prometheus_client on each scrape)."""
        per_workflow = ["workflow"]
        runs = CounterMetricFamily(
            "calve_runs", "Runs recorded, by workflow and status.", labels=["workflow", "status"]
        )
        duration = SummaryMetricFamily(
            "calve_run_duration_seconds", "Wall time of finished runs, start to end.", labels=per_workflow
        )
        cpu = CounterMetricFamily("calve_run_cpu_seconds", "Process CPU time of runs.", labels=per_workflow)
        read = CounterMetricFamily(
            "calve_rows_read", "Rows read by runs (decoded from data files).", labels=per_workflow
        )
        written = CounterMetricFamily("calve_rows_written", "Rows runs committed.", labels=per_workflow)
        by_workflow: dict[str, list[float]] = {}
        for totals in self.state.run_totals():
            runs.add_metric([totals.workflow, totals.status], totals.runs)
            sums = by_workflow.setdefault(totals.workflow, [0, 0.0, 0.0, 0, 0])
            sums[0] += totals.timed_runs
            sums[1] += totals.duration_s
            sums[2] += totals.cpu_s
            sums[3] += totals.rows_read
            sums[4] += totals.rows_written
        for workflow, (count, seconds, cpu_s, rows_read, rows_written) in by_workflow.items():
            duration.add_metric([workflow], count_value=int(count), sum_value=seconds)
            cpu.add_metric([workflow], cpu_s)
            read.add_metric([workflow], rows_read)
            written.add_metric([workflow], rows_written)
        yield from (runs, duration, cpu, read, written)

        now = self.clock()
        freshness = GaugeMetricFamily(
            "calve_freshness_seconds",
            "Age of the newest source commit that each target table includes.",
            labels=["target"],
        )
        for target, commit_at in sorted(self.state.newest_source_commits().items()):
            freshness.add_metric([target], max(0.0, now - commit_at))
        yield freshness

        with self._lock:
            lags: Mapping[tuple[str, str], ConsumerLag] = dict(self._lags)
            ticks, last_tick = self._ticks, self._last_tick
        pending = GaugeMetricFamily(
            "calve_pending_snapshots",
            "Snapshots of a source past a consumer's checkpoint, at the scheduler's last tick.",
            labels=["consumer", "table"],
        )
        lag = GaugeMetricFamily(
            "calve_consumer_lag_seconds",
            "Age of the oldest snapshot a consumer has not processed, at the scheduler's last tick.",
            labels=["consumer", "table"],
        )
        for key in sorted(lags):
            pending.add_metric(list(key), lags[key].snapshots)
            lag.add_metric(list(key), lags[key].lag_s)
        yield from (pending, lag)
        tick_count = CounterMetricFamily("calve_scheduler_ticks", "Ticks of this scheduler process.")
        tick_count.add_metric([], ticks)
        yield tick_count
        if last_tick is not None:
            tick_at = GaugeMetricFamily(
                "calve_scheduler_last_tick_timestamp_seconds", "When this scheduler's last tick ended."
            )
            tick_at.add_metric([], last_tick)
            yield tick_at

    def serve(self, port: int, host: str = DEFAULT_METRICS_HOST) -> tuple[str, int, Callable[[], None]]:
        """Serve /metrics on host:port in a daemon thread: (host, bound port, stop)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return host, int(server.server_port), stop
