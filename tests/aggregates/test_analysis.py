"""What an incremental aggregate accepts, and the reason it gives for each construct it refuses."""

from __future__ import annotations

import pytest

from calve.aggregates import NotIncrementalError, analyze

# (SQL, a part of the reason that must name the construct)
REFUSED = [
    ("SELECT a, count(*) AS n FROM events JOIN other USING (a) GROUP BY a", "a join (two relations)"),
    ("SELECT e.a, count(*) AS n FROM events e, other o GROUP BY e.a", "a join"),
    ("SELECT a, sum(x) OVER (PARTITION BY a) AS s FROM events GROUP BY a, x", "window function"),
    ("SELECT a, string_agg(s, ',' ORDER BY s) AS s FROM events GROUP BY a", "ordered aggregate"),
    ("SELECT a, list(s) AS s FROM events GROUP BY a", "aggregate ARRAY_AGG(s) cannot be maintained"),
    ("SELECT a, arg_max(s, x) AS s FROM events GROUP BY a", "cannot be maintained"),
    ("SELECT a, median(x) AS m FROM events GROUP BY a", "cannot be maintained"),
    ("SELECT a, product(x) AS p FROM events GROUP BY a", "cannot be maintained"),
    ("SELECT a, sum(DISTINCT x) AS s FROM events GROUP BY a", "DISTINCT is supported in count(DISTINCT x)"),
    ("SELECT a, count(DISTINCT x, s) AS n FROM events GROUP BY a", "over one column"),
    (
        "SELECT a, count(*) AS n FROM events WHERE x < random() GROUP BY a",
        "non-deterministic function RANDOM()",
    ),
    ("SELECT a, max(ts) > now() AS late FROM events GROUP BY a", "non-deterministic function"),
    ("SELECT a, count(*) FILTER (WHERE d = current_date) AS n FROM events GROUP BY a", "non-deterministic"),
    ("SELECT a, count(*) AS n FROM events WHERE u = uuid() GROUP BY a", "non-deterministic"),
    ("SELECT a, count(*) AS n FROM events WHERE x > $min GROUP BY a", "parameter $min"),
    ("SELECT DISTINCT a, count(*) AS n FROM events GROUP BY a", "SELECT DISTINCT"),
    ("SELECT a, count(*) AS n FROM events WHERE x IN (SELECT x FROM other) GROUP BY a", "a subquery"),
    ("SELECT a, count(*) AS n FROM (SELECT * FROM events) GROUP BY a", "a subquery in FROM"),
    ("SELECT a, (SELECT 1) AS one, count(*) AS n FROM events GROUP BY a", "a subquery"),
    ("SELECT a, count(*) AS n FROM events GROUP BY a ORDER BY n", "ORDER BY"),
    ("SELECT a, count(*) AS n FROM events GROUP BY a LIMIT 10", "LIMIT"),
    ("SELECT a, count(*) AS n FROM events GROUP BY a QUALIFY n > 1", "QUALIFY"),
    ("SELECT a, count(*) AS n FROM events GROUP BY a; SELECT 1", "2 statements"),
    ("WITH e AS (SELECT * FROM events) SELECT a, count(*) AS n FROM e GROUP BY a", "WITH"),
    ("SELECT a, count(*) AS n FROM events GROUP BY a UNION ALL SELECT a, 1 FROM events", "UNION"),
    ("SELECT count(*) AS n FROM events", "no GROUP BY"),
    ("SELECT a, count(*) AS n FROM other GROUP BY a", "must read its input 'events'"),
    ("SELECT a, b, count(*) AS n FROM events GROUP BY ROLLUP (a, b)", "ROLLUP"),
    ("SELECT a, count(*) FROM events GROUP BY a", "has no name: write COUNT(*) AS name"),
    ("SELECT count(*) AS n FROM events GROUP BY a", "group key a is not an output column"),
    ("SELECT a, x, count(*) AS n FROM events GROUP BY a", "column x is neither a group key nor inside"),
    ("SELECT * FROM events GROUP BY a", "SELECT *"),
    ("SELECT a, count(*) AS n, sum(x) AS n FROM events GROUP BY a", "appear more than once"),
    ("SELECT a AS _rows, count(*) AS n FROM events GROUP BY 1", "group key '_rows': the state uses"),
    ("SELECT a, count(*) AS _calve_deleted FROM events GROUP BY a", "kept for deleted groups"),
    ("SELECT o.a, count(*) AS n FROM events AS e GROUP BY o.a", "names a relation other than 'e'"),
    ("SELECT a, count(*) AS n FROM events WHERE count(*) > 1 GROUP BY a", "an aggregate in WHERE"),
    ("SELECT a, min(x, 3) AS m FROM events GROUP BY a", "cannot be maintained"),
    ("SELECT a, count(*) AS n FROM events GROUP BY 3", "GROUP BY 3"),
    ("SELECT a, count(*) AS n FROM events GROUP BY", "GROUP BY with no key"),
    ("SELECT a, count(* AS n FROM events GROUP BY a", "does not parse"),
    ("DELETE FROM events", "not a SELECT"),
]


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_refused_with_the_construct_named(sql: str, reason: str) -> None:
    with pytest.raises(NotIncrementalError) as caught:
        analyze(sql, "events")
    assert reason.lower() in caught.value.reason.lower(), caught.value.reason
    assert str(caught.value).startswith("not an incremental aggregate: ")


ACCEPTED = [
    # (SQL, group keys, output columns)
    ("SELECT a, count(*) AS n FROM events GROUP BY a", ("a",), ("a", "n")),
    ("SELECT e.a, count(x) AS n FROM events AS e GROUP BY e.a", ("a",), ("a", "n")),
    ("SELECT date_trunc('day', ts) AS day, sum(x) AS s FROM events GROUP BY day", ("day",), ("day", "s")),
    ("SELECT date_trunc('day', ts) AS day, sum(x) AS s FROM events GROUP BY 1", ("day",), ("day", "s")),
    ("SELECT a, b, min(x) AS lo, max(x) AS hi FROM events GROUP BY ALL", ("a", "b"), ("a", "b", "lo", "hi")),
    ("SELECT a, count(*) AS _rows FROM events GROUP BY a", ("a",), ("a", "_rows")),
    (
        "SELECT upper(a) AS ua, a, sum(x) / count(*) AS mean FROM events WHERE x > 0 GROUP BY a "
        "HAVING count(*) > 1",
        ("a",),
        ("ua", "a", "mean"),
    ),
    (
        "SELECT a, count(DISTINCT s) FILTER (WHERE b) AS n, bool_and(b) AS every, bool_or(b) AS some "
        "FROM events GROUP BY a",
        ("a",),
        ("a", "n", "every", "some"),
    ),
]


@pytest.mark.parametrize(("sql", "keys", "columns"), ACCEPTED)
def test_accepted(sql: str, keys: tuple[str, ...], columns: tuple[str, ...]) -> None:
    plan = analyze(sql, "events")
    assert plan.group_keys == keys
    assert plan.output_columns == columns
    assert plan.explain().startswith("incremental aggregate over events, grouped by")
