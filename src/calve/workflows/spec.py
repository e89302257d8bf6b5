"""Workflow files: loading and validating `workflows/*.yaml` into plain, frozen specs.

Everything is checked before anything runs, and every problem is reported at once, each naming the
file, the line, the key, what is wrong and how to fix it (unknown keys get a "did you mean").
The format is documented in docs/workflows.md; this module is its executable definition.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from calve.errors import ConfigError
from calve.workflows.yamlfile import YamlDocument, load_yaml

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

RUN_PARAMS = ("run_id", "workflow", "step", "trigger", "logical_date")
# words from other tools that mean one of ours
SYNONYMS = {"upsert": "merge", "insert": "append", "replace": "overwrite", "changes": "icdc", "full": "table"}


class WorkflowError(ConfigError):
    """One or more workflow files are invalid; the message lists every problem with file:line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem(s)" if len(problems) > 1 else "1 problem"
        super().__init__(f"invalid workflow ({count}):\n  " + "\n  ".join(problems))


class ReadKind(StrEnum):
    """How a step reads one input table."""

    ICDC = "icdc"  # the pending appended rows, through the published zero-copy ICDC table
    INSERTED = "inserted"  # the rows inserted since the checkpoint (any kind of snapshot)
    CHANGELOG = "changelog"  # inserted and deleted rows, with a _change_type column
    KEYS = "keys"  # the distinct values of `keys` over inserted and deleted rows
    RANGES = "ranges"  # no rows: only the change ranges of `ranges` columns (and the checkpoint)
    TABLE = "table"  # the whole table (optionally filtered), pinned at one snapshot for the run

    @property
    def incremental(self) -> bool:
        return self is not ReadKind.TABLE


class WriteMode(StrEnum):
    APPEND = "append"
    MERGE = "merge"
    OVERWRITE = "overwrite"


class StepKind(StrEnum):
    SQL = "sql"
    PYTHON = "python"
    ICDC = "icdc"
    COMPACT = "compact"


class TriggerKind(StrEnum):
    CRON = "cron"
    INTERVAL = "interval"
    INCREMENTAL = "incremental"


PARAM_TYPES: dict[str, Callable[[Any], Any]] = {}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip())


def _to_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    return dt.datetime.fromisoformat(str(value).strip())


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


PARAM_TYPES.update(
    {
        "string": lambda v: v if isinstance(v, str) else str(v),
        "int": _to_int,
        "float": float,
        "bool": _to_bool,
        "date": _to_date,
        "timestamp": _to_timestamp,
    }
)
PARAM_TYPE_NAMES = [*PARAM_TYPES, *(f"list[{t}]" for t in PARAM_TYPES)]


RELATIVE_DATE = re.compile(r"^\s*logical_date\s*(?:([+-])\s*(\w+)\s*(?:days?)?)?\s*$")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any = None
    required: bool = False
    description: str = ""

    @property
    def relative_default(self) -> tuple[int, str] | None:
        """A date default written `logical_date - N days` (N a number or an int param): (sign, N)."""
        if self.type != "date" or not isinstance(self.default, str):
            return None
        match = RELATIVE_DATE.match(self.default)
        if not match:
            return None
        sign, amount = match.groups()
        return (-1 if sign == "-" else 1, amount or "0")

    def parse(self, value: Any) -> Any:
        """Convert a value from YAML or from `--param k=v` to this param's type."""
        if self.type.startswith("list["):
            item = PARAM_TYPES[self.type[5:-1]]
            if isinstance(value, str):
                value = [v for v in (p.strip() for p in value.split(",")) if v]
            if not isinstance(value, list):
                raise ValueError(f"{value!r} is not a list (give a YAML list, or comma-separated values)")
            return [item(v) for v in value]
        return PARAM_TYPES[self.type](value)


# Filters: {column: {op: value}}; a value is a literal, `$param`, or `$input.column` (its distinct values).
FILTER_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "is_null", "not_null")


@dataclass(frozen=True)
class ParamRef:
    name: str


@dataclass(frozen=True)
class InputColumnRef:
    alias: str
    column: str


FilterValue = Any  # a literal, ParamRef or InputColumnRef (or a list of them for `between`)


@dataclass(frozen=True)
class Predicate:
    column: str
    op: str
    value: FilterValue = None


@dataclass(frozen=True)
class InputSpec:
    alias: str
    table: str
    read: ReadKind
    keys: tuple[str, ...] = ()
    ranges: tuple[str, ...] = ()
    filter: tuple[Predicate, ...] = ()
    columns: tuple[str, ...] = ()  # projection (all columns when empty)
    match: str | None = None  # another input whose key tuples this one's rows must have


@dataclass(frozen=True)
class OutputSpec:
    table: str
    mode: WriteMode
    keys: tuple[str, ...] = ()
    delete_column: str | None = None
    filter: tuple[Predicate, ...] = ()
    partition_by: tuple[str, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()  # table properties set when the table is created
    sort_by: tuple[str, ...] = ()  # rows are written in this order (narrow file and row-group bounds)


@dataclass(frozen=True)
class Foreach:
    param: str
    alias: str


@dataclass(frozen=True)
class Compaction:
    table: str
    small_file_bytes: int
    min_files: int


@dataclass(frozen=True)
class StepSpec:
    id: str
    kind: StepKind
    inputs: tuple[InputSpec, ...] = ()
    output: OutputSpec | None = None
    depends_on: tuple[str, ...] = ()
    sql: str | None = None
    sql_origin: tuple[Path, int] | None = None  # the file and line where the SQL text starts
    python: str | None = None
    icdc_for: str | None = None
    compact: Compaction | None = None
    foreach: Foreach | None = None
    description: str = ""

    @property
    def incremental_inputs(self) -> tuple[InputSpec, ...]:
        return tuple(i for i in self.inputs if i.read.incremental)


@dataclass(frozen=True)
class TriggerSpec:
    kind: TriggerKind
    cron: str | None = None
    interval_s: int | None = None
    sources: tuple[str, ...] = ()
    when: str = "any"
    min_interval_s: int = 0

    @property
    def key(self) -> str:
        """Stable name of this trigger, used for its scheduling state."""
        if self.kind is TriggerKind.CRON:
            return f"cron:{self.cron}"
        if self.kind is TriggerKind.INTERVAL:
            return f"interval:{self.interval_s}s"
        return f"incremental:{self.when}:{','.join(self.sources)}"


@dataclass(frozen=True)
class Workflow:
    id: str
    path: Path
    version: str
    description: str
    params: tuple[ParamSpec, ...]
    triggers: tuple[TriggerSpec, ...]
    steps: tuple[StepSpec, ...]  # in a valid run order (dependencies first)

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise ConfigError(
            f"workflow {self.id!r} has no step {step_id!r}{_suggest(step_id, [s.id for s in self.steps])}"
        )

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def consumer_name(self, step: StepSpec) -> str:
        """The consumer whose checkpoints a step commits into its output table."""
        return f"{self.id}-{step.id}"

    def resolve_params(self, given: dict[str, Any], logical_date: dt.date | None = None) -> dict[str, Any]:
        """Typed values of every param: the given ones (strings from the CLI are parsed) or defaults.

        A date default written `logical_date - N days` is computed from the run's logical date.
        """
        unknown = [k for k in given if self.param(k) is None]
        if unknown:
            names = [p.name for p in self.params]
            raise ConfigError(
                f"workflow {self.id!r} has no param {unknown[0]!r}{_suggest(unknown[0], names)}; "
                f"its params are: {', '.join(names) or '(none)'}"
            )
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in given:
                try:
                    values[param.name] = param.parse(given[param.name])
                except (TypeError, ValueError) as exc:
                    raise ConfigError(
                        f"param {param.name!r} of workflow {self.id!r} must be a {param.type}: {exc}"
                    ) from None
            elif param.required:
                raise ConfigError(
                    f"workflow {self.id!r} needs param {param.name!r} ({param.type}): "
                    f"pass --param {param.name}=VALUE"
                )
            else:
                values[param.name] = param.default
        for param in self.params:
            relative = param.relative_default
            if relative is not None and param.name not in given:
                sign, amount = relative
                days = int(amount) if amount.isdigit() else int(values.get(amount) or 0)
                base = logical_date or dt.datetime.now(dt.UTC).date()
                values[param.name] = base + dt.timedelta(days=sign * days)
        return values

    @property
    def source_tables(self) -> set[str]:
        """Tables read by some step and written by none: pinned once at the start of a run."""
        written = {s.output.table for s in self.steps if s.output}
        return {i.table for s in self.steps for i in s.inputs} - written

    @property
    def output_tables(self) -> set[str]:
        return {s.output.table for s in self.steps if s.output}


SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 10**6,
    "MiB": 1 << 20,
    "GB": 10**9,
    "GiB": 1 << 30,
}


def parse_size(value: Any) -> int:
    """'8MiB', '500KB', 1048576 -> bytes."""
    match = SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size: use a number of bytes or a unit, as in 8MiB or 500KB")
    return int(match.group(1)) * _SIZE_BYTES[match.group(2)]


def parse_duration(value: Any) -> int:
    """'90s', '15m', '2h', '1d' (or a number of seconds) -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: use a number and a unit, as in 90s, 15m, 2h, 1d")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _key_path(key: tuple[Hashable, ...]) -> str:
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class _Checker:
    """Collects problems with file:line and key; builds the specs from what is valid."""

    def __init__(self, doc: YamlDocument, root: Path) -> None:
        self.doc = doc
        self.root = root
        self.problems: list[str] = []
        self._lines: list[int] = []

    def problem(self, key: tuple[Hashable, ...], message: str) -> None:
        line = self.doc.line(key)
        try:
            shown = self.doc.path.relative_to(self.root)
        except ValueError:
            shown = self.doc.path
        where = f"{shown}:{line}" if line else str(shown)
        self._lines.append(line or 0)
        self.problems.append(f"{where}: {_key_path(key)}: {message}")

    def sorted_problems(self) -> list[str]:
        """Problems in file order (they are found in check order)."""
        order = sorted(range(len(self.problems)), key=lambda i: self._lines[i])
        return [self.problems[i] for i in order]

    def mapping(
        self,
        value: Any,
        key: tuple[Hashable, ...],
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(key, f"must be a mapping (key: value), not {type(value).__name__}")
            return {}
        allowed = list(allowed)
        for name in value:
            if name not in allowed:
                self.problem(
                    (*key, name),
                    f"unknown key {name!r}{_suggest(str(name), allowed)}; allowed here: {', '.join(allowed)}",
                )
        for name in required:
            if name not in value:
                self.problem(key, f"missing required key {name!r}")
        return {k: v for k, v in value.items() if k in allowed}

    def identifier(self, value: Any, key: tuple[Hashable, ...], what: str) -> str | None:
        if not isinstance(value, str) or not IDENTIFIER.match(value):
            self.problem(
                key,
                f"{what} {value!r} is not valid: use a letter or '_', then letters, digits or '_' "
                "(at most 63 characters)",
            )
            return None
        return value

    def table(self, value: Any, key: tuple[Hashable, ...]) -> str | None:
        if not isinstance(value, str) or not TABLE_NAME.match(value):
            self.problem(key, f"table {value!r} is not valid: write NAMESPACE.TABLE, as in db.events")
            return None
        return value

    def names(self, value: Any, key: tuple[Hashable, ...], what: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            self.problem(key, f"must be a non-empty list of {what}")
            return ()
        return tuple(n for i, v in enumerate(value) if (n := self.identifier(v, (*key, i), what)))

    def choice(self, value: Any, key: tuple[Hashable, ...], choices: Iterable[str]) -> str | None:
        choices = list(choices)
        if value not in choices:
            hint = _suggest(str(value), choices)
            if not hint and SYNONYMS.get(str(value)) in choices:
                hint = f" (did you mean {SYNONYMS[str(value)]!r}?)"
            self.problem(key, f"{value!r} is not one of {', '.join(choices)}{hint}")
            return None
        return str(value)


def load_workflow(path: Path, root: Path | None = None) -> Workflow:
    """Load and validate one workflow file; raises WorkflowError listing every problem."""
    root = root or path.parent
    doc = load_yaml(path)
    checker = _Checker(doc, root)
    workflow = _build(checker, path)
    if checker.problems or workflow is None:
        raise WorkflowError(checker.sorted_problems() or [f"{path}: the file is empty"])
    return workflow


def _build(c: _Checker, path: Path) -> Workflow | None:
    top = c.mapping(c.doc.value, (), ("id", "description", "params", "triggers", "steps"), ("steps",))
    if not top:
        return None
    workflow_id = c.identifier(top.get("id", path.stem), ("id",), "workflow id") or path.stem
    params = _params(c, top.get("params") or {})
    param_names = {p.name for p in params}
    for name in param_names & set(RUN_PARAMS):
        c.problem(("params", name), f"param name {name!r} is reserved for run metadata; rename it")
    triggers = _triggers(c, top.get("triggers") or [])
    versions = [c.doc.path.read_bytes()]
    steps = _steps(c, top.get("steps"), params, versions)
    read = {i.table for s in steps for i in s.inputs}
    for index, trigger in triggers:
        for source in trigger.sources:
            if source not in read:
                c.problem(
                    ("triggers", index, "incremental", "sources"),
                    f"incremental trigger source {source!r} is not an input of any step"
                    f"{_suggest(source, sorted(read))}",
                )
    ordered = _order(c, steps)
    return Workflow(
        id=workflow_id,
        path=path,
        version=hashlib.sha256(b"\0".join(versions)).hexdigest()[:12],
        description=str(top.get("description") or ""),
        params=tuple(params),
        triggers=tuple(t for _, t in triggers),
        steps=tuple(ordered),
    )


def _params(c: _Checker, raw: Any) -> list[ParamSpec]:
    if not isinstance(raw, dict):
        c.problem(("params",), "must be a mapping of param name to {type, default, description}")
        return []
    params = []
    for name, spec in raw.items():
        key = ("params", name)
        if c.identifier(name, key, "param name") is None:
            continue
        if not isinstance(spec, dict):
            spec = {"type": "string", "default": spec}  # shorthand: `name: default-value`
        spec = c.mapping(spec, key, ("type", "default", "required", "description"))
        type_name = c.choice(spec.get("type", "string"), (*key, "type"), PARAM_TYPE_NAMES)
        if type_name is None:
            continue
        param = ParamSpec(
            str(name), type_name, None, bool(spec.get("required", False)), str(spec.get("description") or "")
        )
        default = spec.get("default")
        relative = isinstance(default, str) and type_name == "date" and RELATIVE_DATE.match(default)
        if relative:
            amount = relative.group(2)
            if amount and not amount.isdigit() and amount not in raw:
                c.problem((*key, "default"), f"{amount!r} in {default!r} is neither a number nor a param")
        elif default is not None:
            try:
                default = param.parse(default)
            except (TypeError, ValueError) as exc:
                c.problem((*key, "default"), f"default is not a {type_name}: {exc}")
                default = None  # keep the param, so that its uses are not reported too
        elif type_name.startswith("list["):
            default = []
        params.append(ParamSpec(param.name, type_name, default, param.required, param.description))
    return params


def _triggers(c: _Checker, raw: Any) -> list[tuple[int, TriggerSpec]]:
    from calve.workflows.triggers import CronExpression

    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        c.problem(
            ("triggers",), "must be a list, as in: [{incremental: {sources: [db.events]}}, {interval: 15m}]"
        )
        return []
    triggers: list[tuple[int, TriggerSpec]] = []
    kinds = [k.value for k in TriggerKind]
    for index, item in enumerate(raw):
        key: tuple[Hashable, ...] = ("triggers", index)
        if not isinstance(item, dict) or len(item) != 1:
            c.problem(key, f"each trigger is a mapping with one key: {', '.join(kinds)}")
            continue
        ((kind, value),) = item.items()
        if c.choice(kind, (*key, kind), kinds) is None:
            continue
        key = (*key, kind)
        try:
            if kind == "cron":
                CronExpression.parse(str(value))
                triggers.append((index, TriggerSpec(TriggerKind.CRON, cron=str(value))))
            elif kind == "interval":
                seconds = parse_duration(value)
                if seconds < 1:
                    raise ValueError("an interval must be at least 1s")
                triggers.append((index, TriggerSpec(TriggerKind.INTERVAL, interval_s=seconds)))
            else:
                spec = c.mapping(value, key, ("sources", "when", "min_interval"), ("sources",))
                if not spec:
                    continue
                sources = spec["sources"] if isinstance(spec["sources"], list) else [spec["sources"]]
                tables = [t for i, s in enumerate(sources) if (t := c.table(s, (*key, "sources", i)))]
                when = c.choice(spec.get("when", "any"), (*key, "when"), ("any", "all")) or "any"
                min_interval = parse_duration(spec.get("min_interval", 0))
                incremental = TriggerSpec(
                    TriggerKind.INCREMENTAL, sources=tuple(tables), when=when, min_interval_s=min_interval
                )
                triggers.append((index, incremental))
        except ValueError as exc:
            c.problem(key, str(exc))
    return triggers


def _predicates(
    c: _Checker, raw: Any, key: tuple[Hashable, ...], names: set[str], aliases: set[str]
) -> tuple[Predicate, ...]:
    if not isinstance(raw, dict):
        c.problem(key, "a filter is a mapping {column: {op: value}}, as in {day: {gte: $start_day}}")
        return ()
    predicates = []
    for column, ops in raw.items():
        if c.identifier(column, (*key, column), "column") is None:
            continue
        if not isinstance(ops, dict):
            ops = {"eq": ops}
        for op, value in ops.items():
            okey = (*key, column, op)
            if c.choice(op, okey, FILTER_OPS) is None:
                continue
            if op == "between":
                if not isinstance(value, list) or len(value) != 2:
                    c.problem(okey, "between takes a list of two values: [low, high]")
                    continue
                value = [_value_ref(c, v, okey, names, aliases) for v in value]
            elif op in ("is_null", "not_null"):
                value = None
            elif op == "in" and isinstance(value, list):
                value = [_value_ref(c, v, okey, names, aliases) for v in value]
            else:
                value = _value_ref(c, value, okey, names, aliases)
            predicates.append(Predicate(str(column), str(op), value))
    return tuple(predicates)


def _value_ref(c: _Checker, value: Any, key: tuple[Hashable, ...], names: set[str], aliases: set[str]) -> Any:
    if not (isinstance(value, str) and value.startswith("$")):
        return value
    ref = value[1:]
    if "." in ref:
        alias, _, column = ref.partition(".")
        if alias not in aliases:
            c.problem(key, f"{value!r} names no input of this step{_suggest(alias, sorted(aliases))}")
        return InputColumnRef(alias, column)
    if ref not in names:
        c.problem(key, f"{value!r} is not a param of this step{_suggest(ref, sorted(names))}")
    return ParamRef(ref)


def _steps(c: _Checker, raw: Any, params: list[ParamSpec], versions: list[bytes]) -> list[StepSpec]:
    if not isinstance(raw, list) or not raw:
        c.problem(("steps",), "must be a non-empty list of steps")
        return []
    allowed = (
        "id",
        "description",
        "depends_on",
        "inputs",
        "sql",
        "sql_file",
        "python",
        "icdc",
        "compact",
        "output",
        "foreach",
    )
    steps: list[StepSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        key: tuple[Hashable, ...] = ("steps", index)
        spec = c.mapping(item, key, allowed, ("id",))
        if not spec:
            continue
        step_id = c.identifier(spec.get("id"), (*key, "id"), "step id")
        if step_id is None:
            continue
        if step_id in seen:
            c.problem((*key, "id"), f"step id {step_id!r} is used twice; step ids must be unique")
        seen.add(step_id)
        bodies = [k for k in ("sql", "sql_file", "python", "icdc", "compact") if k in spec]
        if len(bodies) != 1:
            c.problem(
                key,
                f"step {step_id!r} needs exactly one of sql, sql_file, python, icdc, compact (has: "
                f"{', '.join(bodies) or 'none'})",
            )
            continue
        foreach = None
        if "foreach" in spec:
            f = c.mapping(spec["foreach"], (*key, "foreach"), ("param", "as"), ("param", "as"))
            if f:
                param = next((p for p in params if p.name == f["param"]), None)
                if param is None or not param.type.startswith("list["):
                    c.problem(
                        (*key, "foreach", "param"),
                        f"foreach needs a list param; {f['param']!r} is not one"
                        f"{_suggest(str(f['param']), [p.name for p in params])}",
                    )
                alias = c.identifier(f["as"], (*key, "foreach", "as"), "foreach variable")
                if param is not None and alias:
                    foreach = Foreach(param.name, alias)
        extra = {foreach.alias} if foreach else set()
        inputs = _inputs(c, spec.get("inputs") or {}, (*key, "inputs"), params, extra)
        aliases = {i.alias for i in inputs}
        if foreach is not None and any(i.read.incremental for i in inputs):
            c.problem(
                (*key, "foreach"),
                "a foreach step cannot read changes (its iterations would share one checkpoint); "
                "read the tables with read: table",
            )
        names = _injected_names(params, inputs, foreach)
        output = None
        if "output" in spec:
            output = _output(c, spec["output"], (*key, "output"), names, aliases)
        kind = StepKind(bodies[0].replace("sql_file", "sql"))
        sql = origin = None
        if "sql" in spec:
            sql = spec["sql"] if isinstance(spec["sql"], str) else None
            if not sql or not sql.strip():
                c.problem((*key, "sql"), "sql must be a non-empty string (use `sql: |` for several lines)")
            origin = (c.doc.path, c.doc.text_lines.get((*key, "sql"), 1))
        elif "sql_file" in spec:
            sql_path = c.doc.path.parent / str(spec["sql_file"])
            if not sql_path.is_file():
                c.problem(
                    (*key, "sql_file"), f"no file {sql_path} (sql_file is relative to the workflow file)"
                )
            else:
                sql = sql_path.read_text(encoding="utf-8")
                versions.append(sql.encode())
                origin = (sql_path, 1)
        python = None
        if "python" in spec:
            python = str(spec["python"])
            if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", python):
                c.problem(
                    (*key, "python"), f"{python!r} is not MODULE:FUNCTION, as in my_pipeline.steps:clean"
                )
        icdc_for = None
        if "icdc" in spec:
            icdc_for = str(spec["icdc"])
            if output is not None:
                c.problem((*key, "output"), "an icdc step publishes ICDC tables and writes no output")
        compaction = None
        if "compact" in spec:
            compaction = _compaction(c, spec["compact"], (*key, "compact"))
            if output is not None or inputs:
                c.problem(key, "a compact step rewrites its table in place: it has no inputs and no output")
        if kind is not StepKind.ICDC and any(i.read.incremental for i in inputs) and "output" not in spec:
            c.problem(
                key,
                f"step {step_id!r} reads changes but has no output: a step's checkpoints are "
                "committed with its output table, so add output: {table: ..., mode: ...}",
            )
        if sql and kind is StepKind.SQL:
            _check_sql(c, (*key, "sql" if "sql" in spec else "sql_file"), sql, names)
        depends = spec.get("depends_on") or []
        depends = c.names(depends, (*key, "depends_on"), "step ids") if depends else ()
        steps.append(
            StepSpec(
                id=step_id,
                kind=kind,
                inputs=inputs,
                output=output,
                depends_on=tuple(depends),
                sql=sql,
                sql_origin=origin,
                python=python,
                icdc_for=icdc_for,
                compact=compaction,
                foreach=foreach,
                description=str(spec.get("description") or ""),
            )
        )
    ids = [s.id for s in steps]
    for index, step in enumerate(steps):
        for dep in step.depends_on:
            if dep not in ids:
                c.problem(("steps", index, "depends_on"), f"no step {dep!r}{_suggest(dep, ids)}")
        if step.icdc_for is not None:
            target = next((s for s in steps if s.id == step.icdc_for), None)
            if target is None or not any(i.read is ReadKind.ICDC for i in target.inputs):
                c.problem(
                    ("steps", index, "icdc"),
                    f"icdc: {step.icdc_for!r} must name a step with a "
                    f"read: icdc input{_suggest(step.icdc_for, ids)}",
                )
    outputs: dict[str, str] = {}
    for index, step in enumerate(steps):
        if step.output:
            if step.output.table in outputs:
                c.problem(
                    ("steps", index, "output", "table"),
                    f"{step.output.table} is already written by step {outputs[step.output.table]!r}; "
                    "one table, one writing step",
                )
            outputs[step.output.table] = step.id
    return steps


def _compaction(c: _Checker, raw: Any, key: tuple[Hashable, ...]) -> Compaction | None:
    from calve.compaction import DEFAULT_MIN_FILES, DEFAULT_SMALL_FILE_BYTES

    if isinstance(raw, str):
        raw = {"table": raw}
    spec = c.mapping(raw, key, ("table", "small_file_bytes", "min_files"), ("table",))
    table = c.table(spec.get("table"), (*key, "table")) if spec else None
    if table is None:
        return None
    try:
        small = parse_size(spec.get("small_file_bytes", DEFAULT_SMALL_FILE_BYTES))
        min_files = int(spec.get("min_files", DEFAULT_MIN_FILES))
    except ValueError as exc:
        c.problem(key, str(exc))
        return None
    return Compaction(table, small, min_files)


def _inputs(
    c: _Checker, raw: Any, key: tuple[Hashable, ...], params: list[ParamSpec], extra: set[str]
) -> tuple[InputSpec, ...]:
    if not isinstance(raw, dict):
        c.problem(
            key, "inputs is a mapping of name to {table, read}, as in events: {table: db.events, read: icdc}"
        )
        return ()
    reads = [k.value for k in ReadKind]
    specs = []
    aliases = {str(a) for a in raw}
    names = {p.name for p in params} | set(RUN_PARAMS) | extra
    for alias, value in raw.items():
        ikey = (*key, alias)
        if c.identifier(alias, ikey, "input name") is None:
            continue
        if isinstance(value, str):
            value = {"table": value}
        spec = c.mapping(
            value, ikey, ("table", "read", "keys", "ranges", "filter", "columns", "match"), ("table",)
        )
        table = c.table(spec.get("table"), (*ikey, "table")) if spec else None
        read = c.choice(spec.get("read", "table"), (*ikey, "read"), reads) if spec else None
        if table is None or read is None:
            continue
        kind = ReadKind(read)
        keys = c.names(spec["keys"], (*ikey, "keys"), "columns") if "keys" in spec else ()
        if kind is ReadKind.KEYS and not keys:
            c.problem(ikey, "read: keys needs keys: [column, ...]")
        ranges = c.names(spec["ranges"], (*ikey, "ranges"), "columns") if "ranges" in spec else ()
        if kind is ReadKind.RANGES and not ranges:
            c.problem(ikey, "read: ranges needs ranges: [column, ...]")
        if ranges and not kind.incremental:
            c.problem(
                (*ikey, "ranges"),
                "change ranges come from changes: use read: ranges, icdc, inserted, changelog or keys",
            )
        predicates: tuple[Predicate, ...] = ()
        if "filter" in spec:
            predicates = _predicates(
                c, spec["filter"], (*ikey, "filter"), names | _range_names(raw), aliases - {str(alias)}
            )
        columns = c.names(spec["columns"], (*ikey, "columns"), "columns") if "columns" in spec else ()
        if columns and kind not in (ReadKind.TABLE, ReadKind.ICDC):
            c.problem((*ikey, "columns"), "columns applies to read: table and read: icdc")
        match = None
        if "match" in spec:
            match = str(spec["match"])
            other = raw.get(match) if isinstance(raw, dict) else None
            if match == alias or not isinstance(other, dict) or other.get("read") != "keys":
                c.problem(
                    (*ikey, "match"),
                    f"match: {match!r} must name another input of this step with read: keys"
                    f"{_suggest(match, sorted(aliases - {str(alias)}))}",
                )
                match = None
            elif kind.incremental:
                c.problem((*ikey, "match"), "match applies to read: table inputs")
                match = None
        specs.append(
            InputSpec(str(alias), table, kind, tuple(keys), tuple(ranges), predicates, tuple(columns), match)
        )
    # the keys an input matches on are the `keys` of the input it names
    return tuple(specs)


def _range_names(raw: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(raw, dict):
        for alias, value in raw.items():
            if isinstance(value, dict) and isinstance(value.get("ranges"), list):
                for column in value["ranges"]:
                    names |= {
                        f"{alias}_{column}_min",
                        f"{alias}_{column}_max",
                        f"range_{column}_min",
                        f"range_{column}_max",
                    }
    return names


def _injected_names(
    params: list[ParamSpec], inputs: tuple[InputSpec, ...], foreach: Foreach | None
) -> set[str]:
    """Every `$name` a step's SQL and filters may use."""
    names = {p.name for p in params} | set(RUN_PARAMS)
    for i in inputs:
        names |= {f"{i.alias}_snapshot_id"}
        if i.read.incremental:
            names |= {f"{i.alias}_from_snapshot_id"}
        if i.read is ReadKind.ICDC:
            names.add(f"{i.alias}_icdc_table")
        for column in i.ranges:
            names |= {
                f"{i.alias}_{column}_min",
                f"{i.alias}_{column}_max",
                f"range_{column}_min",
                f"range_{column}_max",
            }
    if foreach:
        names.add(foreach.alias)
    return names


def _output(
    c: _Checker, raw: Any, key: tuple[Hashable, ...], names: set[str], aliases: set[str]
) -> OutputSpec | None:
    spec = c.mapping(
        raw,
        key,
        ("table", "mode", "keys", "delete_column", "filter", "partition_by", "properties", "sort_by"),
        ("table",),
    )
    if not spec:
        return None
    table = c.table(spec["table"], (*key, "table"))
    mode = c.choice(spec.get("mode", "append"), (*key, "mode"), [m.value for m in WriteMode])
    if table is None or mode is None:
        return None
    keys = c.names(spec["keys"], (*key, "keys"), "columns") if "keys" in spec else ()
    if mode == "merge" and not keys:
        c.problem(key, "mode: merge needs keys: [column, ...] (the columns that identify a row)")
    if mode != "merge" and ("keys" in spec or "delete_column" in spec):
        c.problem(key, "keys and delete_column apply to mode: merge only")
    predicates: tuple[Predicate, ...] = ()
    if "filter" in spec:
        if mode != "overwrite":
            c.problem((*key, "filter"), "filter applies to mode: overwrite only (what to replace)")
        predicates = _predicates(c, spec["filter"], (*key, "filter"), names, aliases)
    delete_column = spec.get("delete_column")
    if delete_column is not None:
        delete_column = c.identifier(delete_column, (*key, "delete_column"), "column")
    partition_by: tuple[str, ...] = ()
    if "partition_by" in spec:
        from calve.workflows.tables import parse_partition_field

        raw_parts = spec["partition_by"] if isinstance(spec["partition_by"], list) else [spec["partition_by"]]
        for index, part in enumerate(raw_parts):
            try:
                parse_partition_field(str(part))
            except ValueError as exc:
                c.problem((*key, "partition_by", index), str(exc))
        partition_by = tuple(str(p) for p in raw_parts)
    properties: tuple[tuple[str, str], ...] = ()
    if "properties" in spec:
        if not isinstance(spec["properties"], dict):
            c.problem((*key, "properties"), "properties is a mapping of Iceberg table property to value")
        else:
            properties = tuple((str(k), str(v)) for k, v in spec["properties"].items())
    sort_by = c.names(spec["sort_by"], (*key, "sort_by"), "columns") if "sort_by" in spec else ()
    return OutputSpec(
        table,
        WriteMode(mode),
        tuple(keys),
        delete_column,
        predicates,
        partition_by,
        properties,
        tuple(sort_by),
    )


def _check_sql(c: _Checker, key: tuple[Hashable, ...], sql: str, names: set[str]) -> None:
    from calve.engines import sql_parameters

    try:
        used = sql_parameters(sql)
    except ValueError as exc:
        c.problem(key, f"SQL does not parse: {str(exc).splitlines()[0]}")
        return
    for name in sorted(used - names):
        c.problem(
            key,
            f"SQL uses ${name}, which this step does not define{_suggest(name, sorted(names))}; "
            f"it can use: {', '.join('$' + n for n in sorted(names))}",
        )


def _order(c: _Checker, steps: list[StepSpec]) -> list[StepSpec]:
    """Dependencies first; a step that reads another step's output table depends on it implicitly."""
    by_id = {s.id: s for s in steps}
    writer = {s.output.table: s.id for s in steps if s.output}
    deps: dict[str, set[str]] = {}
    for s in steps:
        implicit = {writer[i.table] for i in s.inputs if i.table in writer and writer[i.table] != s.id}
        deps[s.id] = {d for d in s.depends_on if d in by_id} | implicit
    for s in steps:  # the target of an icdc step runs after it
        if s.icdc_for in deps:
            deps[s.icdc_for].add(s.id)
    for s in steps:  # a compact step runs after its table's writer, and before its readers
        if s.compact is None:
            continue
        if s.compact.table in writer:
            deps[s.id].add(writer[s.compact.table])
        for other in steps:
            if other.id != s.id and any(i.table == s.compact.table for i in other.inputs):
                deps[other.id].add(s.id)
    ordered: list[StepSpec] = []
    done: set[str] = set()
    pending = [s.id for s in steps]
    while pending:
        ready = [sid for sid in pending if deps[sid] <= done]
        if not ready:
            c.problem(("steps",), f"the steps depend on each other in a cycle: {', '.join(pending)}")
            return steps
        for sid in ready:
            ordered.append(by_id[sid])
            done.add(sid)
            pending.remove(sid)
    return ordered
