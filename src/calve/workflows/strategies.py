"""Strategy steps: an aggregate over one whole table, kept up to date by calve, the cheapest way.

A step with `strategy:` is written as if it re-aggregated its whole input every run:

    - id: agg
      inputs:
        daily: {table: playback.daily_calve}
      sql_file: stage2.sql          # SELECT ... FROM daily GROUP BY event_day, account_id
      strategy: auto
      output: {table: playback.agg_calve, mode: merge, keys: [event_day, account_id]}

and calve processes only the input's changes since the step's checkpoint, with one of:

- `aggregate`: the step's SQL is analysed (calve.aggregates) and its result kept as a mergeable state
  in an Iceberg table beside the output (`<output>__state`, `<output>__state_values`), updated from
  the input's changelog: the cost follows the changed rows.
- `filter_join`: the group keys that changed (from the changelog) select every row of those keys in
  the input, the SQL re-aggregates them, and groups that lost all their rows are deleted: the cost
  follows the rows of the changed keys.
- `recompute`: the whole input, every run (what a strategy falls back to when nothing else applies).

`auto` takes `aggregate` when its state is small against the rows it replaces (additive measures,
coarse keys), `filter_join` when the output's keys are input columns and the state would be about as
large as the data (distinct counts of values that rarely repeat), else `recompute`. `calve explain`
shows the choice and why, before anything runs. The decision and its reason are in `Choice`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from calve.workflows.model import InputSpec, ReadKind, StepSpec, Strategy

if TYPE_CHECKING:
    from calve.aggregates import AggregatePlan

FILTER_JOIN_KEYS = "__calve_changed_keys"  # the alias of the changed keys a filter-join reads


@dataclass(frozen=True)
class Option:
    """One strategy for a step: whether it applies, and why (or why not)."""

    strategy: Strategy
    applies: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.value, "applies": self.applies, "reason": self.reason}


@dataclass(frozen=True)
class Choice:
    """The strategy a step runs with, the options considered, and the reason, in words."""

    step: str
    requested: Strategy
    strategy: Strategy
    reason: str
    options: tuple[Option, ...]
    plan_explained: str | None = None  # the incremental aggregate's plan, when there is one
    plan: AggregatePlan | None = field(default=None, compare=False, repr=False)  # for the run

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "requested": self.requested.value,
            "strategy": self.strategy.value,
            "reason": self.reason,
            "options": [o.to_dict() for o in self.options],
            "aggregate_plan": self.plan_explained,
        }


def choose(step: StepSpec, input_columns: list[str] | None = None) -> Choice:
    """The strategy of a strategy step, from its SQL and (when known) its input's columns.

    Decided from what is known before running: which strategies apply (the SQL's shape, the keys),
    and for `auto` which one costs less by the kind of aggregates (additive ones keep one state row
    per group; distinct counts, min and max keep a row per distinct value, which a filter-join beats
    when values rarely repeat within a group).
    """
    from calve.aggregates import NotIncrementalError, analyze

    assert step.strategy is not None and step.sql is not None and step.output is not None
    spec = step.inputs[0]
    keys = step.output.keys
    plan = None
    try:
        plan = analyze(step.sql, spec.alias)
        aggregate = Option(Strategy.AGGREGATE, True, "the SQL is an aggregation calve can maintain")
    except NotIncrementalError as exc:
        aggregate = Option(Strategy.AGGREGATE, False, str(exc))
    missing = [k for k in keys if input_columns is not None and k not in input_columns]
    if missing:
        filter_join = Option(
            Strategy.FILTER_JOIN,
            False,
            f"the output key {missing[0]!r} is not a column of {spec.table}: the changed keys cannot "
            "select the input's rows",
        )
    else:
        filter_join = Option(
            Strategy.FILTER_JOIN,
            True,
            f"the output keys ({', '.join(keys)}) are columns of {spec.table}: the rows of the changed keys "
            "are re-aggregated",
        )
    recompute = Option(Strategy.RECOMPUTE, True, "always applies: the whole input, every run")
    options = (aggregate, filter_join, recompute)
    requested = step.strategy
    explained = plan.explain() if plan is not None else None
    if requested is not Strategy.AUTO:
        option = next(o for o in options if o.strategy is requested)
        if not option.applies:
            from calve.errors import ConfigError

            raise ConfigError(
                f"step {step.id!r}: strategy: {requested.value} does not apply: {option.reason}"
            )
        return Choice(
            step.id,
            requested,
            requested,
            "forced by the workflow (strategy: " + requested.value + ")",
            options,
            explained,
            plan,
        )
    additive = plan is not None and all(c.table == "groups" for c in plan.state_columns)
    if aggregate.applies and plan is not None and (not filter_join.applies or additive):
        reason = (
            "every aggregate is additive (counts and sums): one state row per group replaces re-reading "
            "every row of each changed group"
            if additive
            else "the output keys are not input columns, so a filter-join cannot select the rows"
        )
        return Choice(step.id, requested, Strategy.AGGREGATE, reason, options, explained, plan)
    if filter_join.applies:
        reason = (
            "distinct counts, min or max keep a values table (a row per distinct value and group): each "
            "run merges every touched value into it, a merge and commit more that cost more than "
            "re-aggregating the changed keys (benchmarks/rollup.py: about 1.8-2x)"
            if aggregate.applies
            else "the SQL cannot be maintained as a state (" + aggregate.reason + ")"
        )
        return Choice(step.id, requested, Strategy.FILTER_JOIN, reason, options, explained, plan)
    nothing = "no incremental strategy applies"
    return Choice(step.id, requested, Strategy.RECOMPUTE, nothing, options, explained, plan)


def filter_join_inputs(step: StepSpec) -> StepSpec:
    """The step as a filter-join: the changed keys (`read: keys`) and the input matched on them."""
    assert step.output is not None
    spec = step.inputs[0]
    changed = InputSpec(FILTER_JOIN_KEYS, spec.table, ReadKind.KEYS, keys=step.output.keys)
    matched = InputSpec(
        spec.alias,
        spec.table,
        ReadKind.TABLE,
        filter=spec.filter,
        columns=spec.columns,
        match=FILTER_JOIN_KEYS,
    )
    return _with_inputs(step, (changed, matched))


def _with_inputs(step: StepSpec, inputs: tuple[InputSpec, ...]) -> StepSpec:
    from dataclasses import replace

    return replace(step, inputs=inputs, strategy=None)
