"""RELIABILITY.md says what the suite measures: a run that holds every reliability test
(`make test`, `make reliability`) compares the committed table with its own rows.

The plugin in tests/support/outcomes.py runs this test after all others and rewrites the
file at the end of the run; here only rows and outcomes are compared (area, case and
expectation with numbers normalised, ok, test), never the measured `observed` column.
"""

from __future__ import annotations

import pytest

from tests.support.outcomes import (
    REPORT,
    Row,
    describe_differences,
    keys_of_rows,
    keys_of_table,
    measured_rows,
    render,
    session_of,
)


def test_the_committed_reliability_table_matches_this_run(request: pytest.FixtureRequest) -> None:
    state = session_of(request.config)
    if not state.complete():
        pytest.skip("not every reliability test is in this run (`make reliability` runs them)")
    if state.committed is None:
        pytest.fail(f"no committed {REPORT}: commit the one this run writes")
    differences = describe_differences(
        keys_of_table(state.committed), keys_of_rows(measured_rows())
    )
    assert not differences, (
        f"{REPORT} (committed) and this run differ in rows or outcomes; commit the file this "
        "run writes once they are right:\n" + "\n".join(differences)
    )


def test_the_comparison_ignores_measured_numbers_and_catches_changed_rows() -> None:
    """Unit check of the comparison itself: a re-run with other counts and seconds matches;
    a changed outcome, a dropped row and a renamed test do not."""
    rows = [
        Row(
            "area",
            "node stopped 60s (outage 77s), 2400 items",
            "all 2400 once",
            "x 1",
            True,
            "t::a",
        ),
        Row("area", "bad | input (34 bytes)", "invalid_utf8", "dead letter", True, "t::b"),
    ]
    soak = ["## Soak", "", "| criterion | limit | measured | ok |", "|---|---|---|---|",
            "| RSS | <= +10% | +2.0% | yes |", "", "| t s | sent | indexed | lag | RSS MiB |",
            "|---|---|---|---|---|", "| 60 | 6000 | 5990 | 10 | 412 |"]  # fmt: skip
    table = render(rows, [], "pytest", "now", soak)
    assert "| 60 | 6000 | 5990 | 10 | 412 |" in table
    assert keys_of_table(table) == keys_of_table(render(rows, [], "pytest", "now", []))
    rerun = [
        Row(
            "area",
            "node stopped 60s (outage 81s), 2400 items",
            "all 2400 once",
            "y 2",
            True,
            "t::a",
        ),
        Row("area", "bad | input (34 bytes)", "invalid_utf8", "other", True, "t::b"),
    ]
    assert not describe_differences(keys_of_table(table), keys_of_rows(rerun))
    failed = [rerun[0], Row(**{**rerun[1].__dict__, "ok": False})]
    assert len(describe_differences(keys_of_table(table), keys_of_rows(failed))) == 2
    assert len(describe_differences(keys_of_table(table), keys_of_rows(rerun[:1]))) == 1
    renamed = [rerun[0], Row(**{**rerun[1].__dict__, "test": "t::c"})]
    assert len(describe_differences(keys_of_table(table), keys_of_rows(renamed))) == 2
