"""Python steps: `python: module:function` called with a `StepContext`, returning Arrow rows.

The module must be a file of the project (`python_path`, symbolic links followed): it is located
before it is imported, and a module of that name already imported from elsewhere is refused. What
the function then does is up to it: a Python step runs arbitrary Python, with the rights of the
calve process (docs/workflows.md, "What a step can reach"); the SQL-only guarantee is for SQL steps.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog

from calve.capture.changes import ChangeSet
from calve.capture.ranges import ColumnRange
from calve.engines import Engine
from calve.errors import CalveError
from calve.workflows.confinement import module_file, module_outside
from calve.workflows.inputs import StepInputs, as_arrow


@dataclass
class StepContext:
    """What a Python step receives: its inputs as Arrow tables, the injected params, and helpers."""

    run_id: str
    workflow: str
    step: str
    trigger: str
    logical_date: dt.date
    params: dict[str, Any]
    inputs: dict[str, pa.Table]
    ranges: dict[str, dict[str, ColumnRange]]
    icdc_tables: dict[str, str]
    changes: dict[str, ChangeSet]
    catalog: Catalog
    engine: Engine

    def sql(self, query: str, **params: Any) -> pa.Table | None:
        """Run SQL over this step's inputs with the workflow's engine (values bound as $name)."""
        return self.engine.run(query, dict(self.inputs), {**self.params, **params})


def call_python(
    target: str, inputs: StepInputs, catalog: Catalog, engine: Engine, python_path: Sequence[str]
) -> pa.Table | None:
    """Import `module:function` (from `python_path` first) and call it with the step's context."""
    module_name, _, function_name = target.partition(":")
    params = inputs.params
    step = str(params["step"])
    module = _project_module(step, module_name, python_path)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise CalveError(f"step {step!r}: {module_name} has no function {function_name!r}")
    context = StepContext(
        run_id=str(params["run_id"]),
        workflow=str(params["workflow"]),
        step=step,
        trigger=str(params["trigger"]),
        logical_date=params["logical_date"],
        params=dict(params),
        inputs={alias: as_arrow(rows) for alias, rows in inputs.tables.items()},
        ranges={alias: dict(r) for alias, r in inputs.ranges.items()},
        icdc_tables={alias: t.identifier for alias, t in inputs.icdc.items()},
        changes=dict(inputs.changes),
        catalog=catalog,
        engine=engine,
    )
    output = function(context)
    if output is None or isinstance(output, pa.Table):
        return output
    if isinstance(output, pa.RecordBatchReader):
        return output.read_all()
    raise CalveError(
        f"step {step!r}: {target} returned {type(output).__name__}; return a pyarrow.Table (or None)"
    )


def _project_module(step: str, module_name: str, python_path: Sequence[str]) -> ModuleType:
    """The module `module_name`, imported from its file in the project (`python_path`) only."""
    if not python_path:
        raise CalveError(
            f"step {step!r}: no project folder to import {module_name!r} from; run it with "
            "Runner.for_project(project) (or pass python_path=[project folder])"
        )
    roots = [Path(p) for p in python_path]
    found = module_file(module_name, roots)
    if found is None:
        raise CalveError(f"step {step!r}: {module_outside(module_name, roots[0])}")
    loaded = sys.modules.get(module_name)
    if loaded is not None and _file_of(loaded) != found:
        raise CalveError(
            f"step {step!r}: a module {module_name!r} is already imported from {_file_of(loaded)}, not "
            f"from the project's {found}; rename the project's module"
        )
    for path in reversed(python_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CalveError(f"step {step!r}: cannot import {module_name!r} from {found} ({exc})") from None
    if _file_of(module) != found:  # a package of that name elsewhere on sys.path came first
        raise CalveError(
            f"step {step!r}: {module_name!r} was imported from {_file_of(module)}, not from the "
            f"project's {found}; rename the project's module"
        )
    return module


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None
