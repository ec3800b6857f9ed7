"""The sources stage without Kafka: the sources file, extraction of RSS/Atom/EDGAR/JSON,
and the poller against a local HTTP server (conditional GET, no re-sends, every failure
mode isolated). Items go to an in-memory sink here; tests/test_sources_kafka.py runs the
same path on the real broker, worker and index."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from finsentry.messages import NewsItem
from finsentry.settings import Settings
from finsentry.sources.config import (
    SourceConfig,
    SourcesFileError,
    load_sources,
    parse_sources,
    resolve,
)
from finsentry.sources.edgar import enrich_record, load_directory
from finsentry.sources.extract import (
    ExtractError,
    extract_feed,
    extract_json,
    html_to_text,
    stable_id,
)
from finsentry.sources.fetch import make_client, retry_after_seconds
from finsentry.sources.runner import SourcePoller, next_delay, run_sources, truncate
from finsentry.sources.state import load_state, source_health_rows
from tests.support.feed_server import FIXTURES, FeedServer, Route, fixture

README = Path(__file__).resolve().parent.parent / "README.md"
SECRETS = {"NEWS_API_KEY": SecretStr("k-123")}


class ListSink:
    """Collects what the runner sends (the Kafka path is in test_sources_kafka.py)."""

    def __init__(self) -> None:
        self.items: list[NewsItem] = []

    def send(self, items: list[NewsItem]) -> None:
        self.items.extend(items)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    srv = FeedServer()
    yield srv
    srv.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:  # no services: overrides conftest's `settings`
    return Settings().model_copy(
        update={
            "state_dir": tmp_path / "state",
            "sources_timeout": 3.0,
            "sources_max_bytes": 1_000_000,
            "source_secrets": SECRETS,
        }
    )


def sources_from(template: str, server: FeedServer):  # type: ignore[no-untyped-def]
    text = (FIXTURES / template).read_text().replace("__BASE__", server.url(""))
    return parse_sources(text, origin=template)


def serve_good(server: FeedServer) -> None:
    server.set("/wire.rss", Route(fixture("rss_v1.xml")))
    server.set("/research.atom", Route(fixture("atom.xml"), "application/atom+xml"))
    server.set("/edgar.atom", Route(fixture("edgar_8k.xml"), "application/atom+xml"))
    server.set("/api/news", Route(fixture("news_api.json"), "application/json", validators=False))


def source(kind: str, **kw: object) -> SourceConfig:
    return SourceConfig(name=f"t-{kind}", kind=kind, url="http://127.0.0.1/x", **kw)  # type: ignore[arg-type]


# --- the sources file ---------------------------------------------------------------------


def test_readme_sample_sources_file_is_valid() -> None:
    blocks = re.findall(r"```yaml\n(sources:.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 1, "README carries one sample sources file"
    sample = parse_sources(blocks[0], origin="README")
    assert len(sample.sources) >= 4
    assert {s.kind for s in sample.sources} >= {"rss", "edgar"}
    packaged = load_sources(Path(__file__).resolve().parent.parent / "sources" / "sample.yaml")
    assert packaged == sample


def test_bad_entries_are_named_with_their_field() -> None:
    with pytest.raises(SourcesFileError) as err:
        load_sources(FIXTURES / "bad_sources.yaml")
    message = str(err.value)
    assert "source #2 ('no-url-scheme'), field 'url': must start with http://" in message
    assert "source #3 ('bad-json-path'), field 'fields.items': not a JMESPath" in message
    assert "good-one" not in message


def test_sources_file_rejects_duplicates_unknown_keys_and_missing_secrets() -> None:
    dup = (
        "sources:\n- {name: a, kind: rss, url: http://x/1}\n- {name: a, kind: rss, url: http://x/2}"
    )
    with pytest.raises(SourcesFileError, match="two sources are named 'a'"):
        parse_sources(dup)
    with pytest.raises(SourcesFileError, match=r"source #1 \('a'\), field 'intervall'"):
        parse_sources("sources:\n- {name: a, kind: rss, url: http://x/1, intervall: 5}")
    with pytest.raises(SourcesFileError, match="not valid YAML"):
        parse_sources("sources: [unclosed")
    config = source("json", headers={"Authorization": "Bearer ${TOKEN}"})
    with pytest.raises(SourcesFileError, match=r"\$\{TOKEN\} is not set"):
        resolve(config, {})
    resolved = resolve(config, {"token": SecretStr("s3cret")})
    assert resolved.headers["Authorization"].get_secret_value() == "Bearer s3cret"
    assert "s3cret" not in repr(resolved)


# --- extraction (pure) ----------------------------------------------------------------------


def test_rss_items_have_stable_ids_clean_text_and_default_tickers() -> None:
    config = source("rss", tickers=["$spy"])
    body = fixture("rss_v1.xml")
    first = extract_feed(config, body, "application/rss+xml", "http://x/")
    again = extract_feed(config, body, "text/xml", "http://x/")
    assert [i.id for i in first.items] == [i.id for i in again.items]
    assert len({i.id for i in first.items}) == 3
    titles = [i.title for i in first.items]  # oldest first
    assert titles == [
        "Fed minutes show patience on rate cuts",
        "Oil slips as inventories build",
        "Nvidia beats estimates as data-center sales jump",
    ]
    nvda = first.items[2]
    assert nvda.text == (
        "Nvidia reported quarterly revenue above expectations.\n\n"
        "Data-center sales rose 90% & guidance was raised."
    )
    assert "tracking" not in nvda.text and "<" not in first.items[1].text
    assert nvda.extra["tickers"] == ["SPY"] and nvda.lang == "en-us"
    assert nvda.published_at is not None and nvda.published_at.isoformat() == (
        "2025-03-03T13:00:00+00:00"
    )
    # guid, else link: the Fed item has no guid, so its id comes from its link
    fed_link = "http://example.invalid/markets/fed-minutes"
    assert first.items[0].id == stable_id("t-rss", None, fed_link, "ignored", "ignored")
    assert nvda.id == stable_id("t-rss", "lmw-0001", None, "", "")
    assert stable_id("a", None, None, "T", "P") != stable_id("a", None, None, "T", "Q")


def test_atom_and_declared_latin1_feeds() -> None:
    atom = extract_feed(source("atom"), fixture("atom.xml"), "application/atom+xml", "")
    assert [(i.title, i.author) for i in atom.items] == [
        ("Microsoft cloud growth steady", None),
        ("Analyst downgrades Tesla on margin pressure", "Jane Analyst"),
    ]
    assert atom.items[0].published_at.isoformat() == "2025-03-03T08:30:00+00:00"  # type: ignore[union-attr]
    latin = extract_feed(source("rss"), fixture("latin1_declared.xml"), "text/xml", "")
    assert latin.items[0].title == "Société Générale relève ses prévisions"
    assert "bénéfice" in latin.items[0].text


@pytest.mark.parametrize(
    ("name", "content_type", "kind"),
    [
        ("malformed.xml", "application/rss+xml", "malformed"),
        ("not_a_feed.html", "text/html; charset=utf-8", "content_type"),
        ("not_a_feed.html", None, "malformed"),
        ("latin1_undeclared.xml", "application/xml", "encoding"),
        ("news_api.json", "application/json", "content_type"),
    ],
)
def test_unreadable_feeds_raise_a_kind(name: str, content_type: str | None, kind: str) -> None:
    with pytest.raises(ExtractError) as err:
        extract_feed(source("rss"), fixture(name), content_type, "")
    assert err.value.kind == kind


def test_edgar_filings_carry_form_company_cik_and_ticker() -> None:
    directory = load_directory(Settings().company_files)
    out = extract_feed(
        source("edgar"),
        fixture("edgar_8k.xml"),
        "application/atom+xml",
        "",
        lambda record: enrich_record(record, directory),
    )
    by_cik = {i.extra["cik"]: i for i in out.items}
    assert set(by_cik) == {"320193", "2488", "9999999"}
    apple = by_cik["320193"]
    assert apple.title == "8-K filing: Apple Inc."
    assert apple.text == (
        "Item 2.02: Results of Operations and Financial Condition\n"
        "Item 9.01: Financial Statements and Exhibits"
    )
    assert apple.extra["form_type"] == "8-K"
    assert apple.extra["accession"] == "0000320193-25-000010"
    assert apple.extra["tickers"] == ["AAPL"]  # by CIK (S&P 500 list)
    assert by_cik["2488"].extra["tickers"] == ["AMD"]  # by name (Nasdaq list)
    unknown = by_cik["9999999"]
    assert "tickers" not in unknown.extra
    assert unknown.extra["company"] == "Café Holdings Privée Corp"  # ISO-8859-1 decoded


def test_json_mapping_extracts_fields_and_reports_bad_items() -> None:
    sources = parse_sources(
        (FIXTURES / "local_sources.yaml").read_text().replace("__BASE__", "http://x")
    )
    config = next(s for s in sources.sources if s.kind == "json")
    out = extract_json(config, fixture("news_api.json"), "application/json")
    assert [i.title for i in out.items] == [
        "Intel wins foundry customer",
        "Ford recalls 100,000 trucks",
    ]
    intel = out.items[0]
    assert intel.text == "Intel signed a large foundry deal.\n\nShares rose 4% in early trading."
    assert intel.extra["tickers"] == ["INTC"] and intel.author == "Wire Desk"
    assert intel.published_at.isoformat() == "2025-03-03T14:00:00+00:00"  # type: ignore[union-attr]
    assert out.rejected == ["item 3: text: String should have at least 1 character"]
    with pytest.raises(ExtractError, match="not JSON"):
        extract_json(config, b"{nope", "application/json")


def test_html_to_text_drops_scripts_and_keeps_paragraphs() -> None:
    page = fixture("article.html").decode()
    text = html_to_text(page)
    assert "trackPageView" not in text and "font-family" not in text
    assert text.startswith("Regional lender posts record quarter")
    assert "\n\n" in text and "&amp;" not in text and "R&D" in text


def test_small_pure_helpers() -> None:
    rng = random.Random(1)
    assert next_delay(10, 0.0, 0, None, 900, rng) == 10
    assert next_delay(10, 0.0, 3, None, 900, rng) == 40
    assert next_delay(10, 0.0, 30, None, 900, rng) == 900
    assert next_delay(10, 0.0, 1, 120.0, 900, rng) == 120
    assert 9 <= next_delay(10, 0.1, 0, None, 900, rng) <= 11
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("soon") is None
    item = NewsItem(id="x", text="First sentence here. " * 100)
    cut = truncate(item, 500)
    assert len(cut.text) <= 500 and cut.text.endswith("here.")
    assert cut.extra["truncated_from_chars"] == len(item.text)


# --- polling over HTTP ----------------------------------------------------------------------


async def test_conditional_get_new_entries_once_and_restart_resends_nothing(
    server: FeedServer, settings: Settings
) -> None:
    serve_good(server)
    sources = sources_from("local_sources.yaml", server)
    rss = resolve(sources.sources[0], SECRETS)
    sink = ListSink()
    client = make_client(5)
    try:
        poller = SourcePoller(rss, settings, client, sink, _executor())
        assert (await poller.poll_once()).sent == 3
        second = await poller.poll_once()
        assert second.status == "not_modified" and second.sent == 0
        seen = server.requests("/wire.rss")
        assert [s.status for s in seen] == [200, 304]
        assert "if-none-match" not in seen[0].headers
        assert seen[1].headers["if-none-match"] == f'"{_sha(fixture("rss_v1.xml"))}"'
        assert seen[1].headers["if-modified-since"] == "Mon, 03 Mar 2025 17:00:00 GMT"
        assert seen[0].headers["user-agent"] == settings.sources_user_agent

        server.set("/wire.rss", Route(fixture("rss_v2.xml")))  # 2 new, 1 gone, 2 again
        assert (await poller.poll_once()).sent == 2
        assert [i.title for i in sink.items[3:]] == [
            "Apple supplier warns on iPhone demand",
            "Boeing shares tumble after delivery halt",
        ]

        # A restarted runner against a server with no validators: full feed, nothing resent.
        server.set("/wire.rss", Route(fixture("rss_v2.xml"), validators=False))
        restarted = SourcePoller(rss, settings, client, sink, _executor())
        assert restarted.state.health.items_total == 5
        assert (await restarted.poll_once()).sent == 0
        assert server.requests("/wire.rss")[-1].status == 200
        assert len(sink.items) == len({i.id for i in sink.items}) == 5
        assert load_state(settings.state_dir, "wire-rss").health.polls == 4
    finally:
        await client.aclose()


async def test_secret_header_gzip_and_redirect(server: FeedServer, settings: Settings) -> None:
    server.set("/moved", Route(redirect_to="/api/news"))
    server.set("/api/news", Route(fixture("news_api.json"), "application/json", gzip=True))
    sources = sources_from("local_sources.yaml", server)
    config = sources.sources[3].model_copy(update={"url": server.url("/moved")})
    sink = ListSink()
    client = make_client(5)
    try:
        poller = SourcePoller(resolve(config, SECRETS), settings, client, sink, _executor())
        assert (await poller.poll_once()).sent == 2
    finally:
        await client.aclose()
    final = server.requests("/api/news")[0]
    assert final.headers["x-api-key"] == "k-123"
    assert "gzip" in final.headers["accept-encoding"]


async def test_every_failure_is_counted_while_the_other_sources_keep_flowing(
    server: FeedServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    serve_good(server)
    server.set("/malformed.rss", Route(fixture("malformed.xml")))
    server.set("/page.html", Route(fixture("not_a_feed.html"), "text/html"))
    server.set("/huge.rss", Route(b"<rss>" + b" " * 10_000_000 + b"</rss>"))
    server.set("/hang.rss", Route(hang=True))
    server.set("/500.rss", Route(status=500))
    server.set("/429.atom", Route(status=429, headers={"Retry-After": "2"}))
    server.set("/loop.rss", Route(redirect_to="/loop.rss"))
    server.set("/latin1.rss", Route(fixture("latin1_undeclared.xml"), "application/rss+xml"))
    good = sources_from("local_sources.yaml", server)
    broken = sources_from("broken_sources.yaml", server)
    everything = good.model_copy(update={"sources": [*broken.sources, *good.sources]})
    sink = ListSink()
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="finsentry.sources.runner")

    async def scenario() -> None:
        await _until(lambda: len(sink.items) == 10, 30)  # 3 rss + 2 atom + 3 edgar + 2 json
        server.set("/wire.rss", Route(fixture("rss_v2.xml")))
        await _until(lambda: len(sink.items) == 12, 30)
        await _until(lambda: len(server.requests("/429.atom")) >= 2, 30)
        await asyncio.sleep(0.7)  # a few more polls of the good ones: nothing new
        stop.set()

    await asyncio.gather(run_sources(settings, everything, sink=sink, stop=stop), scenario())

    assert len(sink.items) == len({i.id for i in sink.items}) == 12
    assert {i.source for i in sink.items} == {s.name for s in good.sources}
    expected = {
        "bad-xml": "malformed",
        "html-page": "content_type",
        "huge-feed": "too_large",
        "never-answers": "timeout",
        "server-error": "http_status",
        "rate-limited": "rate_limited",
        "redirect-loop": "redirects",
        "not-utf8": "encoding",
    }
    health = {row.source: row for row in source_health_rows(settings.state_dir)}
    for name, kind in expected.items():
        # (a later poll of a loaded machine may time out: the kind is checked by its count)
        assert health[name].last_status.startswith("error:"), health[name]
        assert health[name].errors_total >= 1 and health[name].items_total == 0
        counted = REGISTRY.get_sample_value(
            "finsentry_source_errors_total", {"source": name, "error": kind}
        )
        assert counted is not None and counted >= 1
        assert f"source {name}: poll failed ({kind})" in caplog.text
    for name in ("wire-rss", "research-atom", "sec-8k", "news-api"):
        assert health[name].last_status in {"ok", "not_modified"}
    assert health["wire-rss"].items_total == 5
    times = [s.at for s in server.requests("/429.atom")]
    assert times[1] - times[0] >= 1.9, "Retry-After: 2 was not honoured"
    assert "k-123" not in caplog.text


def _sha(body: bytes) -> str:
    import hashlib

    return hashlib.sha1(body).hexdigest()[:16]


def _executor():  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=2)


async def _until(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.05)


def test_check_command_names_the_bad_entry_and_accepts_the_sample() -> None:
    from typer.testing import CliRunner

    from finsentry.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["sources", "check", str(FIXTURES / "bad_sources.yaml")])
    assert bad.exit_code == 2
    assert "source #2 ('no-url-scheme'), field 'url'" in bad.output
    sample = Path(__file__).resolve().parent.parent / "sources" / "sample.yaml"
    good = runner.invoke(app, ["sources", "check", str(sample)])
    assert good.exit_code == 0, good.output
    assert good.output.strip().endswith("7 sources OK")
