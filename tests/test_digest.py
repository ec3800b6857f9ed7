"""The watchlist digest: numbers (pure), the PNG chart, the file written by
`finsentry digest`, and the scheduled e-mail sent once to a local SMTP server."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers
from typer.testing import CliRunner

from finsentry.alerts.digest import build_digest, digest_text, render_png, send_due_digests
from finsentry.alerts.email import SmtpConfig
from finsentry.alerts.watchlists import ChannelSpec, WatchedCompany, Watchlist, put_watchlist
from finsentry.cli import app
from finsentry.es_client import make_async_es_client
from finsentry.index.template import apply_items_template
from finsentry.messages import ScoredItem
from finsentry.settings import Settings
from tests.support.alerts import Mailbox, free_port, scored, verdict

UNTIL = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=1)
DESK = Watchlist(
    name="desk",
    entries=["AAPL", "TSLA"],
    companies=[WatchedCompany(ticker="AAPL", name="Apple"), WatchedCompany(ticker="TSLA")],
    channels=[ChannelSpec(kind="email", to=["desk@example.com"])],
)


def at(item: ScoredItem, when: datetime) -> ScoredItem:
    return item.model_copy(update={"scored_at": when, "ingested_at": when})


def day_items() -> tuple[list[ScoredItem], list[ScoredItem]]:
    bad = verdict("AAPL", "bearish", 0.9, "Apple")
    good = verdict("AAPL", "bullish", 0.9, "Apple")
    meh = verdict("AAPL", "bearish", 0.7, "Apple")
    hours = [3, 2.9, 1, 10, 2]
    specs = [
        ("p1", "Apple under SEC probe over accounting", "bearish", [bad]),
        ("p2", "Apple under SEC probe over accounting - Reuters", "bearish", [bad]),
        ("p3", "Apple recalls chargers after fires", "bearish", [meh]),
        ("p4", "Apple wins contract", "bullish", [good]),
        ("x1", "Exxon spill", "bearish", [verdict("XOM", "bearish", 0.99, "Exxon")]),
    ]
    items = [
        at(scored(*spec), UNTIL - timedelta(hours=h)) for spec, h in zip(specs, hours, strict=True)
    ]
    baseline = [
        at(scored(f"b{n}", f"Apple item {n}", "bullish", [good]), SINCE - timedelta(hours=n + 1))
        for n in range(4)
    ]
    return items, baseline


def test_digest_numbers_and_chart() -> None:
    items, baseline = day_items()
    digest = build_digest(DESK, items, baseline, SINCE, UNTIL)
    apple, tesla = digest.companies
    assert (apple.ticker, apple.items, apple.bearish) == ("AAPL", 4, 3)
    assert apple.baseline_score == pytest.approx(0.85)
    assert apple.mean_score == pytest.approx((-0.85 * 2 + -0.55 + 0.85) / 4)
    assert (tesla.items, tesla.mean_score, tesla.baseline_score) == (0, None, None)
    # The re-posted story is one story (two copies); the most negative first; XOM unwatched.
    assert [(s.title, s.copies) for s in digest.stories] == [
        ("Apple under SEC probe over accounting", 2),
        ("Apple recalls chargers after fires", 1),
    ]
    text = digest_text(digest)
    assert "AAPL (Apple): -0.35 vs +0.85; 4 items, 3 bearish" in text
    assert "Exxon" not in text

    png = render_png(digest)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from matplotlib import image

    pixels = image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 700


@pytest.fixture
def loaded(settings: Settings, es: Elasticsearch) -> Iterator[Settings]:
    ours = settings.model_copy(update={"watchlists_index": f"{settings.app_id}-watchlists"})
    apply_items_template(es, ours.items_index)
    items, baseline = day_items()
    now = datetime.now(UTC)
    shift = now - UNTIL  # the crafted day, ending now
    docs = [at(i, i.scored_at + shift) for i in items + baseline]
    helpers.bulk(
        es,
        (
            {"_index": ours.items_index, "_id": d.id, "_source": d.model_dump(mode="json")}
            for d in docs
        ),
        refresh="wait_for",
    )
    put_watchlist(es, ours.watchlists_index, DESK)
    yield ours
    for index in (ours.watchlists_index, f"{ours.watchlists_index}-digests"):
        es.options(ignore_status=404).indices.delete(index=index)


@pytest.mark.integration
def test_digest_command_writes_a_file(loaded: Settings, tmp_path: Path) -> None:
    env = {
        "FINSENTRY_ITEMS_INDEX": loaded.items_index,
        "FINSENTRY_WATCHLISTS_INDEX": loaded.watchlists_index,
        "FINSENTRY_MANAGE_SERVICES": "false",
    }
    out = tmp_path / "desk.html"
    result = CliRunner().invoke(
        app, ["digest", "--watchlist", "desk", "--since", "24h", "--output", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "data:image/png;base64," in page
    assert "Apple under SEC probe over accounting</a>" in page
    text_out = tmp_path / "desk.txt"
    result = CliRunner().invoke(
        app, ["digest", "--watchlist", "desk", "--output", str(text_out)], env=env
    )
    assert "AAPL (Apple): -0.35 vs +0.85; 4 items, 3 bearish" in text_out.read_text()
    missing = CliRunner().invoke(app, ["digest", "--watchlist", "nope"], env=env)
    assert missing.exit_code == 1 and "no watchlist 'nope'" in missing.output


@pytest.mark.integration
def test_scheduled_digest_is_mailed_once(loaded: Settings) -> None:
    mailbox = Mailbox(free_port())
    mailbox.start()
    smtp = SmtpConfig(host="127.0.0.1", port=mailbox.port, sender="finsentry@example.com")
    now = datetime.now(UTC)
    settings = loaded.model_copy(update={"digest_at": f"{now:%H:%M}"})

    async def rounds() -> list[int]:
        es = make_async_es_client(settings)
        try:
            early = now - timedelta(minutes=1)
            return [
                await send_due_digests(settings, es, [DESK], smtp, early),
                await send_due_digests(settings, es, [DESK], smtp, now),
                await send_due_digests(settings, es, [DESK], smtp, now + timedelta(minutes=1)),
            ]
        finally:
            await es.close()

    try:
        assert asyncio.run(rounds()) == [0, 1, 0]
    finally:
        mailbox.stop()
    (raw,) = mailbox.messages
    mail = message_from_bytes(raw)
    assert mail["To"] == "desk@example.com" and "digest desk" in mail["Subject"]
    parts = {part.get_content_type(): part for part in mail.walk()}
    assert parts["image/png"].get_payload(decode=True).startswith(b"\x89PNG")
    assert (
        "Apple under SEC probe over accounting"
        in parts["text/plain"].get_payload(decode=True).decode()
    )


def test_the_child_alerter_gets_the_digest_time_not_its_parents_environment(
    tmp_path: Path,
) -> None:
    """Digests off in the settings stay off in the alerter child, whatever the parent's
    environment says (the child used to keep the inherited or default 20:30)."""
    from finsentry.alerts.alerter_process import alerter_env

    env = alerter_env(
        Settings(digest_at=""), tmp_path / "rules.json", {"FINSENTRY_DIGEST_AT": "20:30"}
    )
    assert env["FINSENTRY_DIGEST_AT"] == ""
    env = alerter_env(Settings(digest_at=None), tmp_path / "rules.json", {})
    assert env["FINSENTRY_DIGEST_AT"] == ""
    env = alerter_env(Settings(digest_at="07:15"), tmp_path / "rules.json", {})
    assert env["FINSENTRY_DIGEST_AT"] == "07:15"
