"""Outcome rows of the reliability tests, and the pytest plugin that keeps RELIABILITY.md.

Tests call `record(area, case, expected, observed, ok)` for every fault or bad input they try.
The plugin (loaded by tests/conftest.py) collects the rows, with each reliability test's
result and duration, and, at the end of a run that ran every reliability test (`make test`,
i.e. `.venv/bin/pytest`, or `make reliability`, only those tests), writes RELIABILITY.md.
A run of some files only writes nothing.

`tests/test_reliability_table.py` runs last in such a run and fails when the committed
table (`git show HEAD:RELIABILITY.md`, else the file as it was when the run started)
differs from what the run measured in its rows and outcomes: area, case and expectation
(numbers in them normalised, since counts and seconds vary from run to run), ok, test. The
`observed` column is measured, so it is not compared. Regenerating the file therefore never
fails the check by itself; a changed, added, removed or failing row does until the
regenerated file is committed.

The soak (`benchmarks/soak.py --report benchmarks/results/soak.md`, 20 minutes: a command,
not a test) is printed into its own file; the report includes that file as it is, below the
rows, so RELIABILITY.md carries the soak's figures with the command that printed them.

Options: `--reliability-report FILE` writes the report even from a partial run;
`--reliability-rows FILE` also writes the rows as JSON. `python -m tests.support.outcomes
--selection` prints the test paths `make reliability` runs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPORT = "RELIABILITY.md"
# Every test in these files is a reliability test (they record rows) ...
RELIABILITY_FILES = ("tests/test_reliability_*.py", "tests/test_worker_*.py")
# ... and so is the check of the committed table.
TABLE_CHECK = "tests/test_reliability_table.py"
# Printed by `benchmarks/soak.py --report`; included in the report when present.
SOAK_REPORT = "benchmarks/results/soak.md"


@dataclass
class Row:
    area: str
    case: str
    expected: str
    observed: str
    ok: bool
    test: str


@dataclass
class RunResult:
    nodeid: str
    outcome: str
    seconds: float


ROWS: list[Row] = []
RESULTS: dict[str, RunResult] = {}

# Tests of other files that cover part of the reliability issue: their result becomes a row.
REFERENCED: dict[str, tuple[str, str, str]] = {
    "tests/test_queries_es.py::test_api_token_required_when_configured": (
        "security",
        "HTTP API without / with a wrong bearer token",
        "401 with WWW-Authenticate: Bearer; right token 200",
    ),
    "tests/test_queries_es.py::test_api_rate_limit": (
        "security",
        "HTTP API over its per-client rate limit",
        "429 with Retry-After",
    ),
    "tests/test_reliability_poison.py::"
    "test_the_parser_never_raises_and_what_it_accepts_can_be_written": (
        "bad input",
        "property test: 400 generated odd JSON messages (huge numbers, deep nesting, lone "
        "surrogates, NaN, multi-byte ids) through the parser",
        "a ParseError, or an item writable as JSON with an _id of at most 512 bytes",
    ),
    "tests/test_batch_processor.py::test_a_failing_item_is_isolated_and_the_rest_scored": (
        "model failure",
        "scorer raises on a batch holding one bad item (unit)",
        "bisection isolates the item; the rest scored",
    ),
}


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]


def record(area: str, case: str, expected: str, observed: str, ok: bool) -> None:
    """Note one fault or input tried, what should happen, what happened, and whether they agree."""
    ROWS.append(Row(area, case, expected, _cell(observed), ok, _current_test()))


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- which tests make the table ---------------------------------------------------------


def is_reliability_test(nodeid: str) -> bool:
    path = nodeid.split("::", 1)[0]
    return (
        any(fnmatch.fnmatch(path, pattern) for pattern in RELIABILITY_FILES)
        or path == TABLE_CHECK
        or nodeid in REFERENCED
    )


def reliability_files(root: Path) -> list[str]:
    found = {
        p.relative_to(root).as_posix() for pattern in RELIABILITY_FILES for p in root.glob(pattern)
    }
    return sorted(found | {TABLE_CHECK})


def selection(root: Path) -> list[str]:
    """The pytest arguments that run every reliability test and nothing else."""
    files = reliability_files(root)
    return [*files, *(n for n in REFERENCED if n.split("::", 1)[0] not in files)]


# --- the table: rendering, parsing, comparing ---------------------------------------------------


def measured_rows() -> list[Row]:
    """The recorded rows, and a row for each referenced test that ran."""
    rows = list(ROWS)
    for nodeid, (area, case, expected) in REFERENCED.items():
        result = RESULTS.get(nodeid)
        if result is not None:
            observed = f"test {result.outcome} ({result.seconds:.0f}s)"
            rows.append(Row(area, case, expected, observed, result.outcome == "passed", nodeid))
    return rows


def soak_section(root: Path) -> list[str]:
    """The soak's own report (`SOAK_REPORT`) under a heading of its own, if it was printed."""
    path = root / SOAK_REPORT
    if not path.exists():
        return []
    return [
        "## Soak: the real worker under steady load for 20 minutes (`benchmarks/soak.py`)",
        "",
        f"Not part of this test run: included from `{SOAK_REPORT}` as the command printed it.",
        "",
        path.read_text().rstrip(),
        "",
    ]


def render(
    rows: list[Row], results: list[RunResult], command: str, when: str, soak: list[str]
) -> str:
    ok = sum(r.ok for r in rows)
    lines = [
        "# Reliability and security: faults and bad input tried, and what happened",
        "",
        "**Generated by the test suite; do not edit by hand.** Each row below was recorded by a",
        "test while it ran (see `tests/support/outcomes.py`). `make test` (`.venv/bin/pytest`)",
        "rewrites this file, and so does `make reliability` (only the tests that record rows);",
        "`tests/test_reliability_table.py` fails when the rows or outcomes a run measured differ",
        "from the committed ones (the `observed` column and numbers are not compared). This run:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"run at {when}: {len(rows)} cases, {ok} as expected, {len(rows) - ok} not.",
        "`expected` is what the product promises (README, *Delivery guarantees*); `observed` is",
        "what the run saw; `ok` says whether they agree. *STALLED* means the worker retried one",
        "batch forever (a poison pill that blocks its partition); the test then skipped that",
        "message as an operator would, so that the cases after it still got an outcome.",
        "Faults are counted, not just listed: *re-processed* is how many items Elasticsearch",
        "indexed more than once (a document's `_version`), *delivered twice* how many items the",
        "scored topic carries more than once, and both must stay within what was *in flight*",
        "at the fault (indexed but not yet committed).",
        "Private Kafka / Elasticsearch instances (other ports and state dirs) take the faults;",
        "the shared ones are never stopped. Seconds are from a shared 2-core machine.",
        "",
    ]
    areas: dict[str, list[Row]] = {}
    for row in rows:
        areas.setdefault(row.area, []).append(row)
    for area, area_rows in areas.items():
        lines += [
            f"## {area}",
            "",
            "| # | fault / input | expected | observed | ok | test |",
            "|---|---|---|---|---|---|",
        ]
        for i, row in enumerate(area_rows, 1):
            test = row.test.rsplit("::", 1)[-1]
            mark = "yes" if row.ok else "**NO**"
            lines.append(
                f"| {i} | {_cell(row.case)} | {_cell(row.expected)} | {row.observed} "
                f"| {mark} | `{test}` |"
            )
        lines.append("")
    lines += soak
    if results:
        lines += ["## Tests in this run", "", "| test | result | seconds |", "|---|---|---|"]
        for result in results:
            lines.append(f"| `{result.nodeid}` | {result.outcome} | {result.seconds:.1f} |")
        lines.append("")
    return "\n".join(lines)


RowKey = tuple[str, str, str, bool, str]
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SPLIT = re.compile(r"(?<!\\)\|")


def _normal(text: str, keep: int = 160) -> str:
    """Numbers as `#`; only the start, since a long cell is cut where its digits end it."""
    return _NUMBER.sub("#", " ".join(text.split())).removesuffix("…")[:keep]


def row_key(area: str, case: str, expected: str, ok: bool, test: str) -> RowKey:
    """What the check compares of a row: numbers normalised, `observed` left out."""
    return (area, _normal(case), _normal(expected), ok, test.rsplit("::", 1)[-1])


def keys_of_rows(rows: list[Row]) -> Counter[RowKey]:
    return Counter(row_key(r.area, _cell(r.case), _cell(r.expected), r.ok, r.test) for r in rows)


def keys_of_table(markdown: str) -> Counter[RowKey]:
    """The compared part of every row of a rendered RELIABILITY.md."""
    keys: Counter[RowKey] = Counter()
    area = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            area = line[3:].strip()
            continue
        cells = [c.strip() for c in _SPLIT.split(line)]
        # | # | case | expected | observed | ok | test |  ->  8 pieces with the outer empties
        if area is None or len(cells) != 8 or not cells[1].isdigit():
            continue
        _, _, case, expected, _, ok, test, _ = cells
        keys[row_key(area, case, expected, ok == "yes", test.strip("`"))] += 1
    return keys


def describe_differences(committed: Counter[RowKey], measured: Counter[RowKey]) -> list[str]:
    def show(key: RowKey) -> str:
        area, case, expected, ok, test = key
        return f"[{area}] {case} | expected: {expected} | ok: {ok} | {test}"

    return [f"- committed, not measured: {show(k)}" for k in sorted(committed - measured)] + [
        f"+ measured, not committed: {show(k)}" for k in sorted(measured - committed)
    ]


def committed_table(root: Path) -> str | None:
    """RELIABILITY.md as committed (git HEAD), else as on disk; None where there is none."""
    try:
        done = subprocess.run(
            ["git", "show", f"HEAD:{REPORT}"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    path = root / REPORT
    return path.read_text() if path.exists() else None


# --- the plugin ------------------------------------------------------------------------------


@dataclass
class Session:
    """What this run is: the committed table as it started, and which tests it holds."""

    root: Path
    committed: str | None
    collected: set[str]
    deselected: set[str]

    def complete(self) -> bool:
        """Whether this run holds every reliability test, so its table is the whole one."""
        by_file = {n.split("::", 1)[0] for n in self.collected}
        return (
            all(f in by_file for f in reliability_files(self.root))
            and all(n in self.collected for n in REFERENCED)
            and not any(is_reliability_test(n) for n in self.deselected)
        )

    def reliability_tests(self) -> list[str]:
        return sorted(n for n in self.collected if is_reliability_test(n))


SESSION_KEY = pytest.StashKey[Session]()


def session_of(config: pytest.Config) -> Session:
    return config.stash[SESSION_KEY]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption("--reliability-report", default=None, help="Write RELIABILITY.md here.")
    group.addoption("--reliability-rows", default=None, help="Write the rows as JSON here.")


def pytest_configure(config: pytest.Config) -> None:
    root = Path(str(config.rootpath))
    config.stash[SESSION_KEY] = Session(root, committed_table(root), set(), set())


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        session_of(items[0].config).deselected.update(i.nodeid for i in items)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The table check runs after every other test."""
    items.sort(key=lambda item: item.nodeid.startswith(TABLE_CHECK))


def pytest_collection_finish(session: pytest.Session) -> None:
    session_of(session.config).collected.update(i.nodeid for i in session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    previous = RESULTS.get(item.nodeid)
    seconds = (previous.seconds if previous else 0.0) + report.duration
    if report.failed:
        outcome = "failed" if report.when == "call" else f"error ({report.when})"
    elif report.skipped:
        outcome = "skipped"
    else:
        outcome = previous.outcome if previous and previous.outcome != "passed" else "passed"
    RESULTS[item.nodeid] = RunResult(item.nodeid, outcome, seconds)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = session_of(config)
    ran_all = state.complete() and all(n in RESULTS for n in state.reliability_tests())
    report = config.getoption("--reliability-report", None) or (
        str(state.root / REPORT) if ran_all else None
    )
    rows_file = config.getoption("--reliability-rows", None)
    if not report and not rows_file:
        return
    rows = measured_rows()
    results = sorted(
        (r for r in RESULTS.values() if is_reliability_test(r.nodeid)), key=lambda r: r.nodeid
    )
    command = " ".join(["pytest", *config.invocation_params.args]).strip()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if rows_file:
        Path(rows_file).write_text(
            json.dumps(
                {
                    "command": command,
                    "when": when,
                    "rows": [asdict(r) for r in rows],
                    "results": [asdict(r) for r in results],
                },
                indent=1,
            )
        )
    if report:
        Path(report).write_text(render(rows, results, command, when, soak_section(state.root)))


def main(argv: list[str]) -> None:
    if argv == ["--selection"]:
        print(" ".join(selection(Path(__file__).resolve().parents[2])))
        return
    data = json.loads(Path(argv[0]).read_text())
    text = render(
        [Row(**r) for r in data["rows"]],
        [RunResult(**r) for r in data["results"]],
        data["command"],
        data["when"],
        soak_section(Path(__file__).resolve().parents[2]),
    )
    if len(argv) > 1:
        Path(argv[1]).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
