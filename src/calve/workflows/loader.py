"""Loading workflow files: YAML into a validated `Workflow`, every problem reported at once.

Everything is checked before anything runs, and every problem is reported at once, each naming the
file, the line, the key, what is wrong and how to fix it (unknown keys get a "did you mean").
The format is documented in docs/workflows.md; this module is its executable definition.
"""

from __future__ import annotations

import graphlib
import hashlib
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from calve.engines import EngineSpec, engine_names
from calve.errors import ConfigError, WorkflowError, did_you_mean
from calve.workflows.checker import Checker
from calve.workflows.confinement import inside, module_outside
from calve.workflows.injection import RUN_NAMES, input_names, step_names
from calve.workflows.model import (
    FILTER_OPS,
    Check,
    Compaction,
    Foreach,
    InputColumnRef,
    InputSpec,
    OutputSpec,
    ParamRef,
    ParamSpec,
    Predicate,
    ReadKind,
    StepKind,
    StepSpec,
    Strategy,
    TriggerKind,
    TriggerSpec,
    Workflow,
    WriteMode,
)
from calve.workflows.values import (
    DEFAULT_MIN_FILES,
    DEFAULT_SMALL_FILE_BYTES,
    GRAINS,
    PARAM_TYPE_NAMES,
    RELATIVE_DATE,
    parse_duration,
    parse_size,
)
from calve.workflows.yamlfile import load_yaml

# the keys of a workflow file (docs/workflows.md); unknown ones are reported with a "did you mean"
TOP_KEYS = ("id", "description", "engine", "params", "triggers", "steps")


def load_workflow(path: Path, root: Path | None = None) -> Workflow:
    """Load and validate one workflow file; raises WorkflowError listing every problem."""
    root = root or path.parent
    try:
        doc = load_yaml(path, root)
    except ConfigError as exc:  # not YAML (or not plain values): one problem, with its line
        raise WorkflowError([str(exc)]) from None
    checker = Checker(doc, root)
    workflow = _build(checker, path)
    if checker.problems or workflow is None:
        raise WorkflowError(checker.sorted_problems() or [f"{path}: the file is empty"])
    return workflow


def _build(c: Checker, path: Path) -> Workflow | None:
    top = c.mapping(c.doc.value, (), TOP_KEYS, ("steps",))
    if not top:
        return None
    workflow_id = c.identifier(top.get("id", path.stem), ("id",), "workflow id") or path.stem
    params = _params(c, top.get("params") or {})
    param_names = {p.name for p in params}
    for name in param_names & set(RUN_NAMES):
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
                    f"{did_you_mean(source, sorted(read))}",
                )
    ordered = _order(c, steps)
    engine = _engine(c, top["engine"]) if top.get("engine") is not None else None
    return Workflow(
        id=workflow_id,
        path=path,
        version=hashlib.sha256(b"\0".join(versions)).hexdigest()[:12],
        description=str(top.get("description") or ""),
        params=tuple(params),
        triggers=tuple(t for _, t in triggers),
        steps=tuple(ordered),
        engine=engine,
        engine_line=c.doc.line(("engine",)) if engine is not None else None,
    )


def _engine(c: Checker, raw: Any) -> EngineSpec | None:
    """`engine:` the engine of this workflow's steps, written as calve.yaml's (docs/engines.md)."""
    try:
        spec = EngineSpec.parse(raw)
    except ValueError as exc:
        c.problem(("engine",), f"{exc} (or leave engine: out: the workflow then runs on calve.yaml's engine)")
        return None
    names = engine_names()
    if spec.name not in names:
        key = ("engine", "name") if isinstance(raw, dict) else ("engine",)
        c.problem(
            key,
            f"no engine named {spec.name!r}{did_you_mean(spec.name, names)}; available: {', '.join(names)} "
            "(a plugin registers more under the calve.engines entry point group)",
        )
        return None
    return spec


def _params(c: Checker, raw: Any) -> list[ParamSpec]:
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


def _triggers(c: Checker, raw: Any) -> list[tuple[int, TriggerSpec]]:
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
    c: Checker, raw: Any, key: tuple[Hashable, ...], names: set[str], aliases: set[str]
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


def _value_ref(c: Checker, value: Any, key: tuple[Hashable, ...], names: set[str], aliases: set[str]) -> Any:
    if not (isinstance(value, str) and value.startswith("$")):
        return value
    ref = value[1:]
    if "." in ref:
        alias, _, column = ref.partition(".")
        if alias not in aliases:
            c.problem(key, f"{value!r} names no input of this step{did_you_mean(alias, sorted(aliases))}")
        return InputColumnRef(alias, column)
    if ref not in names:
        c.problem(key, f"{value!r} is not a param of this step{did_you_mean(ref, sorted(names))}")
    return ParamRef(ref)


def _steps(c: Checker, raw: Any, params: list[ParamSpec], versions: list[bytes]) -> list[StepSpec]:
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
        "strategy",
        "checks",
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
                        f"{did_you_mean(str(f['param']), [p.name for p in params])}",
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
        names = step_names(params, inputs, foreach)
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
            if not inside(sql_path, c.root):  # refused before it is read: nothing of it is shown
                c.problem(
                    (*key, "sql_file"),
                    f"sql_file {str(spec['sql_file'])!r} is outside the project folder (symbolic links "
                    "followed); put the SQL file in the project, beside the workflow file",
                )
            elif not sql_path.is_file():
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
            else:
                outside = module_outside(python.partition(":")[0], c.root)
                if outside:
                    c.problem((*key, "python"), outside)
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
        if sql and kind is StepKind.SQL and origin is not None:
            _check_sql(c, (*key, "sql" if "sql" in spec else "sql_file"), sql, names, origin)
        strategy = _strategy(c, spec, key, kind, inputs, output) if "strategy" in spec else None
        checks = _checks(c, spec.get("checks"), (*key, "checks"), names | {"output"}, output)
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
                strategy=strategy,
                checks=checks,
            )
        )
    ids = [s.id for s in steps]
    for index, step in enumerate(steps):
        for dep in step.depends_on:
            if dep not in ids:
                c.problem(("steps", index, "depends_on"), f"no step {dep!r}{did_you_mean(dep, ids)}")
        if step.icdc_for is not None:
            target = next((s for s in steps if s.id == step.icdc_for), None)
            if target is None or not any(i.read is ReadKind.ICDC for i in target.inputs):
                c.problem(
                    ("steps", index, "icdc"),
                    f"icdc: {step.icdc_for!r} must name a step with a "
                    f"read: icdc input{did_you_mean(step.icdc_for, ids)}",
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


def _strategy(
    c: Checker,
    spec: dict[str, Any],
    key: tuple[Hashable, ...],
    kind: StepKind,
    inputs: tuple[InputSpec, ...],
    output: OutputSpec | None,
) -> Strategy | None:
    """`strategy:` makes an aggregate over one whole table incremental; check what it needs."""
    chosen = c.choice(spec["strategy"], (*key, "strategy"), tuple(Strategy))
    if chosen is None:
        return None
    fix = "; a strategy step is SQL over one input read whole (read: table), merged on its group keys"
    if kind is not StepKind.SQL:
        c.problem((*key, "strategy"), "strategy applies to sql steps" + fix)
    elif len(inputs) != 1 or inputs[0].read is not ReadKind.TABLE or inputs[0].match is not None:
        c.problem(
            (*key, "inputs"), "a strategy step has exactly one input, with read: table and no match" + fix
        )
    elif output is None or output.mode is not WriteMode.MERGE or not output.keys:
        c.problem((*key, "output"), "a strategy step writes with mode: merge on keys (its group keys)" + fix)
    return Strategy(chosen)


def _compaction(c: Checker, raw: Any, key: tuple[Hashable, ...]) -> Compaction | None:
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
    c: Checker, raw: Any, key: tuple[Hashable, ...], params: list[ParamSpec], extra: set[str]
) -> tuple[InputSpec, ...]:
    if not isinstance(raw, dict):
        c.problem(
            key, "inputs is a mapping of name to {table, read}, as in events: {table: db.events, read: icdc}"
        )
        return ()
    reads = [k.value for k in ReadKind]
    specs = []
    aliases = {str(a) for a in raw}
    names = {p.name for p in params} | set(RUN_NAMES) | extra
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
        ranges, grains = _ranges(c, spec["ranges"], (*ikey, "ranges")) if "ranges" in spec else ((), ())
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
                    f"{did_you_mean(match, sorted(aliases - {str(alias)}))}",
                )
                match = None
            elif kind.incremental:
                c.problem((*ikey, "match"), "match applies to read: table inputs")
                match = None
        specs.append(
            InputSpec(
                str(alias),
                table,
                kind,
                tuple(keys),
                tuple(ranges),
                predicates,
                tuple(columns),
                match,
                range_grains=grains,
            )
        )
    # the keys an input matches on are the `keys` of the input it names
    return tuple(specs)


def _ranges(
    c: Checker, raw: Any, key: tuple[Hashable, ...]
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """`ranges: [col, ...]`, or `ranges: {col: grain}` to widen a column's range to whole months..."""
    if not isinstance(raw, dict):
        return c.names(raw, key, "columns"), ()
    if not raw:
        c.problem(key, "must be a non-empty list of columns, or a mapping of column to grain")
    columns: list[str] = []
    grains: list[tuple[str, str]] = []
    for column, grain in raw.items():
        if c.identifier(column, (*key, column), "column") is None:
            continue
        columns.append(column)
        if c.choice(grain, (*key, column), GRAINS) is not None:
            grains.append((column, str(grain)))
    return tuple(columns), tuple(grains)


def _range_names(raw: Any) -> set[str]:
    """The range `$name`s that the step's inputs inject, for the filters of its other inputs.

    Derived from injection.input_names, the one definition of the names: what an input injects with
    its `ranges`, less what it injects without them.
    """
    names: set[str] = set()
    if not isinstance(raw, dict):
        return names
    for alias, value in raw.items():
        ranges = value.get("ranges") if isinstance(value, dict) else None
        if isinstance(ranges, str):
            ranges = [ranges]
        if not isinstance(ranges, list | dict):
            continue
        columns = tuple(str(column) for column in ranges)
        plain = InputSpec(str(alias), "", ReadKind.RANGES)
        names |= input_names(InputSpec(str(alias), "", ReadKind.RANGES, ranges=columns)) - input_names(plain)
    return names


def _output(
    c: Checker, raw: Any, key: tuple[Hashable, ...], names: set[str], aliases: set[str]
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
        from calve.write.tables import parse_partition_field

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


def _origin(c: Checker, key: tuple[Hashable, ...]) -> tuple[Path, int]:
    """Where a value of the workflow file starts: the file and its line."""
    return (c.doc.path, c.doc.text_lines.get(key, 1))


def _checks(
    c: Checker, raw: Any, key: tuple[Hashable, ...], names: set[str], output: OutputSpec | None
) -> tuple[Check, ...]:
    """`checks:` a list of {name, sql} (must return no rows) or {name, equal: [SQL, SQL]} (equal values)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.problem(key, "checks must be a list of {name: ..., sql: ...} or {name: ..., equal: [SQL, SQL]}")
        return ()
    if output is None:
        c.problem(key, "checks test a step's output rows: this step has no output")
    checks: list[Check] = []
    for index, item in enumerate(raw):
        at = (*key, index)
        spec = c.mapping(item, at, ("name", "sql", "equal"), ("name",))
        if not spec:
            continue
        name = str(spec["name"])
        if ("sql" in spec) == ("equal" in spec):
            c.problem(
                at, f"check {name!r} needs exactly one of sql (must return no rows) or equal: [SQL, SQL]"
            )
            continue
        if "sql" in spec:
            if not isinstance(spec["sql"], str) or not spec["sql"].strip():
                c.problem((*at, "sql"), "sql must be a non-empty string")
                continue
            _check_sql(c, (*at, "sql"), spec["sql"], names, _origin(c, (*at, "sql")))
            checks.append(Check(name, sql=spec["sql"]))
            continue
        pair = spec["equal"]
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(q, str) and q.strip() for q in pair)
        ):
            c.problem((*at, "equal"), "equal must be a list of two SQL queries, each returning one value")
            continue
        for query in pair:
            _check_sql(c, (*at, "equal"), query, names, _origin(c, (*at, "equal")))
        checks.append(Check(name, equal=(pair[0], pair[1])))
    return tuple(checks)


def _check_sql(
    c: Checker, key: tuple[Hashable, ...], sql: str, names: set[str], origin: tuple[Path, int]
) -> None:
    from calve.engines.duckdb import sql_parameters
    from calve.engines.reach import reaches

    try:
        used = sql_parameters(sql)
    except ValueError as exc:
        c.problem(key, f"SQL does not parse: {str(exc).splitlines()[0]}")
        return
    path, first_line = origin
    for reach in reaches(sql):  # what the engine would refuse at run time, named here first
        c.problem_at(path, first_line + reach.line - 1, key, reach.message)
    for name in sorted(used - names):
        c.problem(
            key,
            f"SQL uses ${name}, which this step does not define{did_you_mean(name, sorted(names))}; "
            f"it can use: {', '.join('$' + n for n in sorted(names))}",
        )


def _order(c: Checker, steps: list[StepSpec]) -> list[StepSpec]:
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
    position = {s.id: index for index, s in reversed(list(enumerate(steps)))}
    sorter = graphlib.TopologicalSorter(deps)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1][::-1]  # [a, b, ..., a]: each step depends on the next one
        first = min(range(len(cycle) - 1), key=lambda i: position[cycle[i]])
        cycle = [*cycle[first:-1], *cycle[:first], cycle[first]]  # from the first step in the file
        c.problem(
            ("steps", position[cycle[0]], "depends_on"),
            f"the steps depend on each other in a cycle: {' -> '.join(cycle)} (each depends on the "
            "next); remove one of these dependencies (a depends_on, or a step that reads a table "
            "that another step of the cycle writes)",
        )
        return steps
    ordered: list[StepSpec] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)  # file order among ready steps
        ordered.extend(by_id[sid] for sid in ready)
        sorter.done(*ready)
    return ordered
