"""Drift watch: the population stability index by hand; on the real Elasticsearch, a crafted
stream whose class mix shifts trips the generated Grafana drift rule (and the Prometheus
gauges, and `finsentry drift` says so), a stable one does not; the live model's reference."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from finsentry.cli import app
from finsentry.dashboards.config import GrafanaConfig
from finsentry.dashboards.esquery import search_body
from finsentry.dashboards.provisioning import render_tree
from finsentry.drift.measure import (
    Binned,
    Observation,
    Reference,
    build_reference,
    psi,
    shares,
    unknown_share,
)
from finsentry.drift.reference import live_reference, reference_file, save_reference
from finsentry.drift.watch import floor_hour, update
from finsentry.index.template import apply_items_template
from finsentry.models.registry import promote
from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.crafted import crafted_item
from tests.test_dashboards_es import run_expressions, series_by_label

TEXTS = [
    "Apple shares rise after strong iPhone sales",
    "Tesla stock falls on weak delivery numbers today",
    "Fed holds rates steady",
    "Oil prices slip as inventories build up again this week",
    "Microsoft earnings beat estimates",
    "Bank stocks drift lower ahead of the stress test results",
]
SENTIMENTS = ("bearish", "neutral", "bullish")


def observations(n: int, bearish_share: float | None = None) -> list[Observation]:
    """`n` items over TEXTS in turn; sentiments in equal thirds, or `bearish_share` bearish."""
    out = []
    for i in range(n):
        if bearish_share is None:
            sentiment = SENTIMENTS[i % 3]
        else:
            sentiment = "bearish" if i < bearish_share * n else SENTIMENTS[1 + i % 2]
        out.append(
            Observation(
                text=TEXTS[i % len(TEXTS)],
                sentiment=sentiment,
                sentiment_confidence=0.8,
                topic="Markets",
            )
        )
    return out


def test_psi_by_hand() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)
    assert psi([1.0, 0.0], [0.0, 1.0]) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4))
    with pytest.raises(ValueError, match="2 reference bins but 3 observed"):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])
    assert shares([1.0, 2.0], [0.5, 1.0, 1.5, 2.0, 3.0]) == [0.2, 0.4, 0.4]
    deciles = Binned.from_values(list(range(100)))
    assert len(deciles.edges) == 9 and deciles.shares == [0.1] * 10
    assert unknown_share("Apple zorblax glimmer shares", {"apple", "shares"}) == 0.5


@pytest.fixture(scope="module")
def reference() -> Reference:
    return build_reference("ref-v1", "crafted", TEXTS, observations(90))


@pytest.fixture
def stream(services: Settings, es: Elasticsearch) -> Iterator[Settings]:
    settings = unique_settings(services, drift_min_items=30)
    apply_items_template(es, settings.items_index)
    yield settings
    for index in (settings.items_index, settings.drift_index):
        es.options(ignore_status=404).indices.delete(index=index)
    es.options(ignore_status=404).indices.delete_index_template(name=settings.items_index)


def index_hour(
    es: Elasticsearch, index: str, at: datetime, batch: list[Observation], tag: str
) -> None:
    items = [
        crafted_item(f"{tag}-{n}", at, o.sentiment, [], text=o.text, topic=o.topic)
        for n, o in enumerate(batch)
    ]
    actions = ({"_index": index, "_id": i.id, "_source": i.model_dump(mode="json")} for i in items)
    helpers.bulk(es, actions, refresh="wait_for")


def fired(es: Elasticsearch, settings: Settings, now: datetime) -> set[str]:
    """The generated Grafana drift rule, its query run on the drift index as Grafana would."""
    (group,) = render_tree_rules()
    (rule,) = [r for r in group["rules"] if r["uid"] == "finsentry-drift"]
    results: dict = {}
    for query in rule["data"]:
        if query["datasourceUid"] == "__expr__":
            continue
        now_ms = int(now.timestamp() * 1000)
        body = search_body(
            query["model"],
            time_field="hour",
            time_from_ms=now_ms - query["relativeTimeRange"]["from"] * 1000,
            time_to_ms=now_ms,
        )
        response = es.search(index=settings.drift_index, **body).body
        results[query["refId"]] = series_by_label(query["model"], response)
    run_expressions([q["model"] for q in rule["data"] if q["datasourceUid"] == "__expr__"], results)
    return {label for label, value in results[rule["condition"]].items() if value}


def render_tree_rules() -> list[dict]:
    import yaml

    rules = yaml.safe_load(render_tree(GrafanaConfig())["alerting/rules.yaml"])
    return rules["groups"]


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_shifted_class_mix_trips_the_rule(
    es: Elasticsearch, stream: Settings, reference: Reference, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    hour = floor_hour(now)
    index_hour(es, stream.items_index, hour - timedelta(minutes=30), observations(60), "calm")
    shifted = observations(60, bearish_share=0.8)
    index_hour(es, stream.items_index, hour + (now - hour) / 2, shifted, "burst")
    rows = update(es, stream, reference, now)
    assert [(r.hour, r.items, r.drifted) for r in rows] == [
        (hour - timedelta(hours=1), 60, False),
        (hour, 60, True),
    ]
    calm, burst = rows
    assert calm.max_psi == 0.0
    by_hand = (0.8 - 1 / 3) * math.log(0.8 / (1 / 3)) + 2 * (0.1 - 1 / 3) * math.log(0.1 / (1 / 3))
    assert burst.psi_sentiment == pytest.approx(by_hand, abs=1e-5)
    assert burst.worst == "sentiment" and burst.sentiment_mix["bearish"] == pytest.approx(0.8)
    assert fired(es, stream, now) == {"sentiment"}
    assert gauge("finsentry_drift_psi", measure="sentiment") == pytest.approx(burst.psi_sentiment)
    assert gauge("finsentry_drift_drifted") == 1.0
    assert gauge("finsentry_drift_class_share", task="sentiment", label="bearish") == 0.8

    pinned = tmp_path / "reference.json"
    save_reference(reference, pinned)
    env = {
        "FINSENTRY_DRIFT_REFERENCE": str(pinned),
        "FINSENTRY_ITEMS_INDEX": stream.items_index,
        "FINSENTRY_DRIFT_INDEX": stream.drift_index,
        "FINSENTRY_DRIFT_MIN_ITEMS": "30",
        "FINSENTRY_ES_URL": stream.es_url,
    }
    png = tmp_path / "drift.png"
    result = CliRunner().invoke(app, ["drift", "--since", "2h", "--plot", str(png)], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    calm_line = next(line for line in lines if line.startswith(f"{calm.hour:%Y-%m-%d %H}:00"))
    burst_line = next(line for line in lines if line.startswith(f"{hour:%Y-%m-%d %H}:00"))
    assert calm_line.endswith("ok") and " 33/33/33 " in calm_line
    assert burst_line.endswith("DRIFT sentiment") and " 80/10/10 " in burst_line
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_stable_stream_does_not(
    es: Elasticsearch, stream: Settings, reference: Reference
) -> None:
    now = datetime.now(UTC)
    hour = floor_hour(now)
    index_hour(es, stream.items_index, hour - timedelta(minutes=30), observations(60), "a")
    index_hour(es, stream.items_index, hour + (now - hour) / 2, observations(90), "b")
    rows = update(es, stream, reference, now)
    assert [(r.items, r.enough, r.drifted, r.max_psi) for r in rows] == [
        (60, True, False, 0.0),
        (90, True, False, 0.0),
    ]
    assert fired(es, stream, now) == set()
    assert gauge("finsentry_drift_drifted") == 0.0


def test_the_live_models_reference(tiny_artifact: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    promote(models, str(tiny_artifact), data_dir=Settings().data_dir)
    settings = Settings(
        models_dir=models, state_dir=tmp_path / "state", drift_sample=40, device="cpu"
    )
    reference = live_reference(settings)
    assert reference.n == 40 and reference.model_version in tiny_artifact.name
    assert abs(sum(reference.sentiment.values()) - 1) < 1e-9
    assert {"stock", "shares"} <= set(reference.vocabulary)
    assert reference_file(settings, reference.model_version).is_file()
    assert live_reference(settings) == reference  # the cached one
