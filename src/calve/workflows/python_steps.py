"""Python steps: `python: module:function` called with a `StepContext`, returning Arrow rows."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog

from calve.capture.changes import ChangeSet
from calve.capture.ranges import ColumnRange
from calve.engines import Engine
from calve.errors import CalveError
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
        """Run SQL over this step's inputs with the project's engine (values bound as $name)."""
        return self.engine.run(query, dict(self.inputs), {**self.params, **params})


def call_python(
    target: str, inputs: StepInputs, catalog: Catalog, engine: Engine, python_path: Sequence[str]
) -> pa.Table | None:
    """Import `module:function` (from `python_path` first) and call it with the step's context."""
    module_name, _, function_name = target.partition(":")
    params = inputs.params
    step = str(params["step"])
    for path in python_path:
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CalveError(
            f"step {step!r}: cannot import {module_name!r} ({exc}); put the module in the project folder "
            "or install it"
        ) from None
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
