"""Projects: a folder with `calve.yaml`, a `workflows/` folder and the embedded warehouse in `.calve/`.

    calve.yaml          settings (every key optional; `calve init` writes the defaults, commented)
    workflows/*.yaml    one workflow per file, SQL inline or in .sql files beside it
    .calve/             embedded catalog (catalog.db), warehouse/, state store (state.db)

Commands find the project by looking for `calve.yaml` in the current folder and its parents, or
take `--project DIR` (or $CALVE_PROJECT).

A problem in calve.yaml raises ProjectError, listing each as `calve.yaml:LINE: key: what; fix`.
Reading the settings and validating workflow files loads no engine, catalog library or Arrow: the
catalog, the state store and the engine are imported when a command first uses them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calve.engines import EngineSpec
from calve.errors import ConfigError, ProjectError, WorkflowError, did_you_mean
from calve.workflows.checker import Checker
from calve.workflows.loader import load_workflow
from calve.workflows.model import Workflow
from calve.workflows.values import (
    DEFAULT_MIN_FILES,
    DEFAULT_SMALL_FILE_BYTES,
    format_duration,
    parse_duration,
    parse_size,
)
from calve.workflows.yamlfile import load_yaml

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from calve.engines import Engine
    from calve.state import StateStore

PROJECT_FILE = "calve.yaml"

# The defaults of calve.yaml's keys, defined here only: code that needs one imports it.
DEFAULT_CATALOG = "embedded"
DEFAULT_ENGINE = "duckdb"
DEFAULT_STATE = ".calve/state.db"
DEFAULT_WORKFLOWS = "workflows"
# a run whose process stopped heartbeating this long ago no longer holds its workflow's lock
DEFAULT_LOCK_STALE_AFTER_S = 600
SETTINGS_KEYS = (
    "catalog",
    "warehouse",
    "engine",
    "state",
    "workflows",
    "lock_stale_after",
    "maintenance",
    "observe",
)
# `observe:`: a run's lookback estimate is what a lookback of this many days would have read
# (calve.observe.lookback; 0 turns the estimate off)
DEFAULT_LOOKBACK_DAYS = 14
OBSERVE_KEYS = ("lookback_days",)

# `maintenance:` (calve maintain, and the scheduler when the section is present). Compaction's
# size and count defaults are those of `compact:` steps (calve.workflows.values).
# a partition with more delete files than this is rewritten, deletes applied (0: any delete file)
DEFAULT_MAX_DELETE_FILES = 0
# a snapshot is expired once it stopped being current this long ago...
DEFAULT_EXPIRE_OLDER_THAN_S = 7 * 86400
# ...unless it is one of the last N of the current line of ancestry
DEFAULT_RETAIN_LAST = 1
# at most one maintenance of a table per this (without a window; with one: once per window)
DEFAULT_MAINTENANCE_EVERY_S = 86400
MAINTENANCE_KEYS = (
    "tables",
    "window",
    "idle",
    "every",
    "compact",
    "small_file_bytes",
    "min_files",
    "max_delete_files",
    "expire",
    "expire_older_than",
    "retain_last",
    "checkpoint_namespaces",
)

DEFAULT_SETTINGS = f"""\
# calve project settings. Every key is optional: these are the defaults.

# The Iceberg catalog: "embedded" (SQLite catalog and warehouse in .calve/, no server),
# a postgresql://USER@HOST:PORT/DATABASE URL (the embedded catalog's tables in PostgreSQL, for
# several machines: docs/deployment.md), or the name of a catalog in .pyiceberg.yaml /
# PYICEBERG_CATALOG__<NAME>__* variables.
catalog: {DEFAULT_CATALOG}

# Where the embedded catalog's tables keep their files (a folder, relative to this file, or a
# file:// URI); default: .calve/warehouse. With several machines, a folder they all mount.
# warehouse: .calve/warehouse

# The engine that runs SQL steps: duckdb (in process), daft (Daft's local runner) or ray (Daft on a
# Ray cluster: engine: {{name: ray, address: 127.0.0.1:6379}}); daft and ray need pip install 'calve[ray]'.
engine: {DEFAULT_ENGINE}

# Run history, run locks and trigger state: a SQLite file, relative to this file, or a
# postgresql://USER@HOST:PORT/DATABASE URL (several schedulers on several machines share it; the
# password from the URL or PGPASSWORD / ~/.pgpass; needs pip install 'calve[postgresql]').
state: {DEFAULT_STATE}

# Where workflow files live, relative to this file.
workflows: {DEFAULT_WORKFLOWS}

# A run whose process stopped heartbeating this long ago no longer holds its workflow's lock.
lock_stale_after: {format_duration(DEFAULT_LOCK_STALE_AFTER_S)}

# Run metrics (docs/observability.md): each run records how many rows a lookback of this many days
# over its range column would have read (from manifest statistics), beside the rows it read.
# observe:
#   lookback_days: {DEFAULT_LOOKBACK_DAYS}            # 0: no estimate

# Table maintenance by the scheduler (`calve maintain TABLE` by hand): compaction and snapshot
# expiry of the workflows' output tables (and `tables`). Without this section the scheduler
# maintains nothing. Uncomment to enable: the values shown are the defaults, except the examples
# of window and idle (both off by default).
# maintenance:
#   tables: []                  # more tables to maintain, as in [db.events]
#   window: "02:00-04:00"       # UTC; default: any time (then at most once per `every`)
#   idle: 10m                   # only when the table had no commit for this long; default: off
#   every: {format_duration(DEFAULT_MAINTENANCE_EVERY_S)}
#   compact: true
#   small_file_bytes: {DEFAULT_SMALL_FILE_BYTES >> 20}MiB  # compact min_files files smaller than this
#   min_files: {DEFAULT_MIN_FILES}
#   max_delete_files: {DEFAULT_MAX_DELETE_FILES}  # a partition with more delete files is rewritten
#   expire: true
#   expire_older_than: {format_duration(DEFAULT_EXPIRE_OLDER_THAN_S)}  # checkpoints are always kept
#   retain_last: {DEFAULT_RETAIN_LAST}
#   checkpoint_namespaces: null # where to look for consumer checkpoints; default: everywhere
"""

EXAMPLE_WORKFLOW = """\
# An example workflow (pattern 3 of docs/workflows.md): replace it with yours.
# It reads playback.events, which `calve demo` creates in this project's catalog.
id: hello
description: Views per day, recomputed only for the days that the new events touch.
params:
  min_seconds: {type: int, default: 0, description: views shorter than this are not counted}
triggers:
  - incremental: {sources: [playback.events], min_interval: 1m}
steps:
  - id: daily_views
    inputs:
      changed: {table: playback.events, read: ranges, ranges: [event_day]}
      events:
        table: playback.events
        columns: [event_day, view_seconds]
        filter: {event_day: {between: [$range_event_day_min, $range_event_day_max]}}
    sql: |
      SELECT event_day, count(*) AS views, sum(view_seconds) AS view_seconds
      FROM events
      WHERE view_seconds >= $min_seconds
      GROUP BY event_day
    output:
      table: hello.daily_views
      mode: overwrite
      filter: {event_day: {between: [$range_event_day_min, $range_event_day_max]}}
      partition_by: [event_day]
"""


@dataclass(frozen=True)
class MaintenancePolicy:
    """calve.yaml's `maintenance:`: which tables, when, and the thresholds (calve.write.maintenance).

    `window` is (start, end) in minutes after midnight UTC (end < start wraps past midnight)."""

    tables: tuple[str, ...] = ()  # besides the outputs of the project's workflows
    window: tuple[int, int] | None = None
    idle_s: int | None = None  # due only when the table had no commit for this long
    every_s: int = DEFAULT_MAINTENANCE_EVERY_S
    compact: bool = True
    small_file_bytes: int = DEFAULT_SMALL_FILE_BYTES
    min_files: int = DEFAULT_MIN_FILES
    max_delete_files: int | None = DEFAULT_MAX_DELETE_FILES
    expire: bool = True
    expire_older_than_s: int = DEFAULT_EXPIRE_OLDER_THAN_S
    retain_last: int = DEFAULT_RETAIN_LAST
    checkpoint_namespaces: tuple[str, ...] | None = None  # where consumer checkpoints are looked for


@dataclass(frozen=True)
class Settings:
    catalog: str | None  # None: the embedded catalog; a postgresql:// URL; or a pyiceberg catalog's name
    engine: EngineSpec
    state: Path | str  # a SQLite file, or a postgresql:// URL (calve.state.backends)
    workflows: Path
    lock_stale_after_s: int
    # None without a `maintenance:` section: the scheduler maintains nothing (calve maintain
    # then uses MaintenancePolicy's defaults)
    maintenance: MaintenancePolicy | None = None
    lookback_days: int = DEFAULT_LOOKBACK_DAYS  # `observe: {lookback_days: N}`
    warehouse: str | None = None  # the embedded catalog's warehouse URI; None: the project home's
    # the line of `engine:` in calve.yaml, for problems (None: not written); where, not a setting
    engine_line: int | None = field(default=None, compare=False)


class Project:
    def __init__(self, root: Path, catalog_override: str | None = None) -> None:
        self.root = root.resolve()
        self.settings = _load_settings(self.root)
        self._catalog_override = catalog_override

    @property
    def home(self) -> Path:
        if env := os.environ.get("CALVE_HOME"):
            return Path(env).resolve()
        return self.root / ".calve"

    @cached_property
    def catalog(self) -> Catalog:
        from calve.catalog import embedded_catalog, open_catalog, postgresql_catalog
        from calve.state.backends import is_postgresql_url

        name = self._catalog_override or self.settings.catalog
        if name is None:
            return embedded_catalog(self.home, self.settings.warehouse)
        if is_postgresql_url(name):
            return postgresql_catalog(name, self.settings.warehouse or _warehouse_uri(self.home, "warehouse"))
        return open_catalog(name)

    @cached_property
    def state(self) -> StateStore:
        from calve.state import StateStore

        return StateStore(self.settings.state)

    def engine(self) -> Engine:
        """The project's engine (calve.yaml); a workflow with its own runs on `engine_spec`'s."""
        from calve.engines import get_engine

        return get_engine(self.settings.engine)

    def workflow_files(self) -> list[Path]:
        folder = self.settings.workflows
        if not folder.is_dir():
            return []
        return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])

    def workflows(self) -> dict[str, Workflow]:
        """Every workflow of the project, validated; all problems of all files are raised at once."""
        problems: list[str] = []
        loaded: dict[str, Workflow] = {}
        for path in self.workflow_files():
            try:
                workflow = load_workflow(path, self.root)
            except WorkflowError as exc:
                problems.extend(exc.problems)
                continue
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            if workflow.id in loaded:
                problems.append(
                    f"{path.relative_to(self.root)}: workflow id {workflow.id!r} is also used by "
                    f"{loaded[workflow.id].path.relative_to(self.root)}; workflow ids must be unique"
                )
                continue
            loaded[workflow.id] = workflow
            if self.engine_spec(workflow).runs_daft_sql:  # the engine that runs its SQL
                problems.extend(self._daft_problems(workflow))
        problems.extend(self._daft_runner_conflicts(loaded.values()))
        if problems:
            raise WorkflowError(problems)
        return loaded

    def engine_spec(self, workflow: Workflow) -> EngineSpec:
        """The engine that runs `workflow`'s steps: its own `engine:`, else calve.yaml's."""
        return workflow.engine or self.settings.engine

    def _daft_runner_conflicts(self, workflows: Iterable[Workflow]) -> list[str]:
        """One problem if the workflows need two Daft runners: Daft sets one per process, and the
        scheduler runs every workflow of the project in one process."""
        where: dict[str, list[str]] = {}  # Daft runner -> where the workflows that need it choose it
        for workflow in workflows:
            runner = self.engine_spec(workflow).daft_runner
            if runner is None:
                continue
            if workflow.engine is not None:
                at = f"{self._shown(workflow.path)}:{workflow.engine_line or 1}"
            else:
                line = f":{self.settings.engine_line}" if self.settings.engine_line else ""
                at = f"{self._shown(workflow.path)} (calve.yaml{line}, the project's engine)"
            where.setdefault(runner, []).append(at)
        if len(where) < 2:
            return []
        needs = "; ".join(f"{runner}: {', '.join(files)}" for runner, files in where.items())
        return [
            f"the workflows need {len(where)} Daft runners ({needs}); Daft sets one runner per process and "
            "the scheduler runs every workflow of a project in one process: choose one (the same engine:, "
            "with the same address or threads, in these workflow files), or put the workflows in separate "
            "projects, each run in its own process"
        ]

    def _shown(self, path: Path) -> Path:
        """A path as problems show it: relative to the project folder when inside it."""
        return path.relative_to(self.root) if path.is_relative_to(self.root) else path

    def _daft_problems(self, workflow: Workflow) -> list[str]:
        """What Daft's SQL cannot run in the workflow's SQL steps, each as `file:line: step ...: what`."""
        from calve.engines.daft_sql import incompatibilities
        from calve.workflows.model import StepKind

        found = []
        for step in workflow.steps:
            if step.kind is not StepKind.SQL or step.sql is None:
                continue
            path, first_line = step.sql_origin or (workflow.path, 1)
            shown = self._shown(path)
            inputs = frozenset(i.alias for i in step.inputs)
            for problem in incompatibilities(step.sql, inputs):
                line = first_line + problem.line - 1
                found.append(f"{shown}:{line}: step {step.id!r}: {problem.message}")
            for check in step.checks:  # run by the engine too, over the inputs and `output`
                for query in (check.sql,) if check.sql is not None else check.equal or ():
                    for problem in incompatibilities(query, inputs | {"output"}):
                        found.append(
                            f"{self._shown(workflow.path)}: step {step.id!r}, check {check.name!r}: "
                            f"{problem.message}"
                        )
        return found

    def workflow(self, workflow_id: str) -> Workflow:
        workflows = self.workflows()
        if workflow_id not in workflows:
            raise ConfigError(
                f"no workflow {workflow_id!r} in {self.settings.workflows}"
                f"{did_you_mean(workflow_id, workflows)}; "
                f"workflows: {', '.join(sorted(workflows)) or '(none: add a .yaml file)'}"
            )
        return workflows[workflow_id]


def _load_settings(root: Path) -> Settings:
    """calve.yaml's settings, defaults filled in; raises ProjectError listing every problem."""
    path = root / PROJECT_FILE
    raw: dict[str, Any] = {}
    engine = EngineSpec(DEFAULT_ENGINE)
    engine_line: int | None = None
    stale = DEFAULT_LOCK_STALE_AFTER_S
    maintenance: MaintenancePolicy | None = None
    lookback_days = DEFAULT_LOOKBACK_DAYS
    if path.is_file():
        try:
            doc = load_yaml(path, root)
        except ConfigError as exc:  # not YAML (or not plain values): one problem, with its line
            raise ProjectError([str(exc)]) from None
        checker = Checker(doc, root)
        raw = checker.mapping(doc.value if doc.value is not None else {}, (), SETTINGS_KEYS)
        raw = {name: value for name, value in raw.items() if value is not None}  # `key:` is the default
        if "engine" in raw:
            try:
                engine = EngineSpec.parse(raw["engine"])
                engine_line = doc.line(("engine",))
            except ValueError as exc:
                checker.problem(("engine",), str(exc))
        for name in ("catalog", "warehouse", "state", "workflows"):
            if name in raw and not isinstance(raw[name], str):
                checker.problem(
                    (name,), f"must be a string, not {type(raw[name]).__name__}; leave it out for the default"
                )
                del raw[name]
        for name in ("state", "catalog"):
            value = raw.get(name)
            known = ("postgresql:", "postgres:")
            if isinstance(value, str) and "://" in value and not value.startswith(known):
                checker.problem(
                    (name,),
                    f"{value.split('://')[0]}:// is not a database calve can use; write a path (SQLite) or "
                    "postgresql://USER@HOST:PORT/DATABASE",
                )
                del raw[name]
        if "lock_stale_after" in raw:
            try:
                stale = parse_duration(raw["lock_stale_after"])
            except ValueError as exc:
                checker.problem(("lock_stale_after",), str(exc))
            else:
                if stale < 1:
                    checker.problem(("lock_stale_after",), "must be at least 1s, as in 10m")
        if "maintenance" in raw:
            maintenance = _maintenance(checker, raw["maintenance"])
        if "observe" in raw:
            lookback_days = _observe(checker, raw["observe"])
        if checker.problems:
            raise ProjectError(checker.sorted_problems())
    catalog = raw.get("catalog", DEFAULT_CATALOG)
    return Settings(
        catalog=None if catalog == DEFAULT_CATALOG else catalog,
        engine=engine,
        state=_state_location(root, raw.get("state", DEFAULT_STATE)),
        workflows=(root / raw.get("workflows", DEFAULT_WORKFLOWS)).resolve(),
        lock_stale_after_s=stale,
        maintenance=maintenance,
        lookback_days=lookback_days,
        warehouse=_warehouse_uri(root, raw["warehouse"]) if "warehouse" in raw else None,
        engine_line=engine_line,
    )


def _state_location(root: Path, value: str) -> Path | str:
    """`state:` as the store opens it: a postgresql:// URL as written, a file's path resolved."""
    if "://" in value:
        return value  # a URL: checked (and its scheme named) when the store opens it
    return (root / value).resolve()


def _warehouse_uri(root: Path, value: str) -> str:
    """`warehouse:` as pyiceberg takes it: a URI (file:///mnt/shared/warehouse, s3://...) as written,
    a folder resolved against the project and created."""
    if "://" in value:
        return value
    folder = (root / value).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def _observe(checker: Checker, value: Any) -> int:
    """The `observe:` section: the lookback of the run metrics' estimate, in days."""
    spec = checker.mapping(value, ("observe",), OBSERVE_KEYS)
    days = spec.get("lookback_days")
    if days is None:
        return DEFAULT_LOOKBACK_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        checker.problem(
            ("observe", "lookback_days"), f"must be a whole number of days (0: off), not {days!r}"
        )
        return DEFAULT_LOOKBACK_DAYS
    return days


def _maintenance(checker: Checker, value: Any) -> MaintenancePolicy:
    """The `maintenance:` section; each problem is reported with its line."""
    key = ("maintenance",)
    spec = {k: v for k, v in checker.mapping(value, key, MAINTENANCE_KEYS).items() if v is not None}
    found: dict[str, Any] = {}

    def convert(name: str, parse: Any, minimum: int, example: str) -> None:
        if name not in spec:
            return
        try:
            number = parse(spec[name])
        except (TypeError, ValueError) as exc:
            checker.problem((*key, name), str(exc))
            return
        if isinstance(spec[name], bool) or number < minimum:
            checker.problem((*key, name), f"must be at least {minimum}, as in {example}")
            return
        found[name] = number

    convert("small_file_bytes", parse_size, 1, "32MiB")
    convert("min_files", int, 2, "4")
    convert("max_delete_files", int, 0, "0 (any delete file) or 8")
    convert("retain_last", int, 1, "1 (the current snapshot)")
    convert("idle", parse_duration, 1, "10m")
    convert("every", parse_duration, 60, "1d")
    convert("expire_older_than", parse_duration, 0, "7d")
    for name in ("compact", "expire"):
        if name in spec:
            if isinstance(spec[name], bool):
                found[name] = spec[name]
            else:
                checker.problem((*key, name), f"must be true or false, not {spec[name]!r}")
    for name in ("tables", "checkpoint_namespaces"):
        if name in spec:
            items = spec[name] if isinstance(spec[name], list) else [spec[name]]
            if not all(isinstance(item, str) and item for item in items):
                checker.problem((*key, name), "must be a list of names, as in [db.events]")
            elif name == "tables":
                found[name] = tuple(t for i, t in enumerate(items) if checker.table(t, (*key, name, i)))
            else:
                found[name] = tuple(items)
    if "window" in spec:
        try:
            found["window"] = parse_window(spec["window"])
        except ValueError as exc:
            checker.problem((*key, "window"), str(exc))
    return MaintenancePolicy(
        tables=found.get("tables", ()),
        window=found.get("window"),
        idle_s=found.get("idle"),
        every_s=found.get("every", DEFAULT_MAINTENANCE_EVERY_S),
        compact=found.get("compact", True),
        small_file_bytes=found.get("small_file_bytes", DEFAULT_SMALL_FILE_BYTES),
        min_files=found.get("min_files", DEFAULT_MIN_FILES),
        max_delete_files=found.get("max_delete_files", DEFAULT_MAX_DELETE_FILES),
        expire=found.get("expire", True),
        expire_older_than_s=found.get("expire_older_than", DEFAULT_EXPIRE_OLDER_THAN_S),
        retain_last=found.get("retain_last", DEFAULT_RETAIN_LAST),
        checkpoint_namespaces=found.get("checkpoint_namespaces"),
    )


def parse_window(value: Any) -> tuple[int, int]:
    """'02:00-04:00' (UTC) -> (120, 240) minutes after midnight; '22:00-02:00' wraps past midnight."""
    text = str(value).strip()
    parts = text.split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        bounds = []
        for part in parts:
            hours, minutes = part.strip().split(":")
            if not (0 <= int(hours) <= 24 and 0 <= int(minutes) < 60):
                raise ValueError
            bounds.append(min(int(hours) * 60 + int(minutes), 24 * 60))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time window: write HH:MM-HH:MM (UTC), as in 02:00-04:00"
        ) from None
    if bounds[0] == bounds[1]:
        raise ValueError(f"{value!r} is an empty window: start and end must differ")
    return bounds[0], bounds[1]


def find_project(start: Path | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: $CALVE_PROJECT or the cwd) with a calve.yaml."""
    if env := os.environ.get("CALVE_PROJECT"):
        return Path(env).resolve()
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    return None


def open_project(root: Path | None = None, catalog_override: str | None = None) -> Project:
    found = root.resolve() if root is not None else find_project()
    if found is None or not (found / PROJECT_FILE).is_file():
        where = found or Path.cwd()
        raise ConfigError(
            f"no {PROJECT_FILE} in {where} or its parents: create a project with `calve init`, "
            "or point to one with --project DIR"
        )
    return Project(found, catalog_override)


def init_project(root: Path, example: bool = True) -> list[Path]:
    """Create calve.yaml, workflows/ (with an example) and .calve/ under `root`; never overwrites."""
    from calve.catalog import embedded_catalog
    from calve.state import StateStore

    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    created = []
    settings = root / PROJECT_FILE
    if settings.exists():
        raise ConfigError(f"{settings} already exists: this folder is a calve project already")
    settings.write_text(DEFAULT_SETTINGS, encoding="utf-8")
    created.append(settings)
    workflows = root / "workflows"
    workflows.mkdir(exist_ok=True)
    created.append(workflows)
    if example and not any(workflows.iterdir()):
        sample = workflows / "hello.yaml"
        sample.write_text(EXAMPLE_WORKFLOW, encoding="utf-8")
        created.append(sample)
    home = root / ".calve"
    embedded_catalog(home)
    StateStore(home / "state.db")
    created.append(home)
    gitignore = root / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(".calve/\n", encoding="utf-8")
        created.append(gitignore)
    return created
