"""Observability: what runs cost and saved, how late a table's data is, and how to watch it.

- `clock`: the phases of a step (plan, read, compute, write, commit), its input files and its peak
  memory, collected while it runs; `CALVE_OBSERVE=0` turns the extra collection off.
- `errors`: a failure classed as a user error (validation, SQL, data) or a system one (commit
  conflict, I/O, resources).
- `steps`, `runs`: the typed `StepMetrics` and `RunMetrics` completed from what was collected.
- `lookback`: rows a lookback of X days would have read, from manifest statistics only.
- `lateness`: how late a table's rows arrive, per snapshot (`calve lateness`).
- `prometheus`, `logs`: the scheduler's /metrics endpoint and its JSON-lines log.

Nothing here imports pyiceberg, pyarrow or prometheus_client at import time except the modules that
need them (`lookback`, `lateness`, `steps`, `prometheus`), which the runner and the commands import
when they run. Every metric is documented, with its unit, in docs/observability.md.
"""
