"""What `calve explain` says about a step: what it reads, how it writes, and which strategy it takes."""

from __future__ import annotations

from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from calve.workflows.model import ReadKind, StepKind, StepSpec
from calve.workflows.strategies import choose

_READS = {
    ReadKind.ICDC: "the appended files since the checkpoint, as its ICDC table",
    ReadKind.INSERTED: "the rows inserted since the checkpoint",
    ReadKind.CHANGELOG: "the rows inserted and deleted since the checkpoint (_change_type)",
    ReadKind.KEYS: "the distinct keys of the rows changed since the checkpoint",
    ReadKind.RANGES: "no rows: the change ranges since the checkpoint",
    ReadKind.TABLE: "the table at the run's pinned snapshot",
}


def explain_step(catalog: Catalog, step: StepSpec) -> dict[str, Any]:
    """A step in words and as data: `summary`, `details` (lines) and, for a strategy step, `strategy`."""
    details = []
    for spec in step.inputs:
        read = _READS[spec.read]
        if spec.match is not None:
            read += f", only the rows whose keys are in {spec.match!r}"
        if spec.filter:
            read += ", filtered"
        details.append(f"input {spec.alias}: {spec.table}: {read}")
    if step.output is not None:
        keys = f" on {', '.join(step.output.keys)}" if step.output.keys else ""
        details.append(
            f"output: {step.output.table}, {step.output.mode.value}{keys}, with the step's checkpoints"
        )
    result: dict[str, Any] = {"step": step.id, "kind": step.kind.value, "details": details}
    if step.strategy is None:
        incremental = bool(step.incremental_inputs)
        result["summary"] = (
            "processes the changes of its incremental inputs"
            if incremental
            else "reads whole tables every run"
        )
        if step.kind is StepKind.ICDC:
            result["summary"] = f"publishes the ICDC tables of step {step.icdc_for!r}"
        return result
    spec = step.inputs[0]
    try:
        columns: list[str] | None = catalog.load_table(spec.table).schema().column_names
    except NoSuchTableError:
        columns = None
        details.append(f"{spec.table} does not exist yet: assuming the output keys are its columns")
    choice = choose(step, columns)
    result["summary"] = f"strategy {choice.strategy.value}: {choice.reason}"
    result["strategy"] = choice.to_dict()
    for option in choice.options:
        mark = "applies" if option.applies else "does not apply"
        details.append(f"{option.strategy.value}: {mark}: {option.reason}")
    if choice.plan_explained:
        details.extend(choice.plan_explained.splitlines())
    return result
