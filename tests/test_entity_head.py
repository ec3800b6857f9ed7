"""The per-company head: it reads the mentions (a crafted mixed-label set is learnt to
100 %, which one verdict per text cannot beat 50 % on), it is served in the same encoder
pass by PyTorch and ONNX, and `finsentry evaluate --task entity` handles bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from finsentry.cli import app
from finsentry.models.artifact import read_manifest
from finsentry.models.runtime import ArtifactScorer
from finsentry.settings import Settings
from finsentry.streams.entity_linking import find_mentions, load_company_index
from finsentry.training.config import TrainConfig, default_data
from finsentry.training.entity_data import read_finentity, sentences
from finsentry.training.train import run_training

SETTINGS = Settings()
MIXED = Path(__file__).parent / "fixtures" / "entities" / "mixed.jsonl"
runner = CliRunner()


def entity_config(base: Path, out: Path, **overrides: object) -> TrainConfig:
    """The tiny multitask recipe with the per-company head, on the crafted news set."""
    return TrainConfig.model_validate(
        {
            "task": "multitask",
            "data": default_data(SETTINGS.data_dir, "multitask"),
            "entity_data": str(MIXED),
            "entity_val_frac": 0.1,
            "entity_test_frac": 0.1,
            "news_repeat": 6,
            "derived_entity_weight": 0.0,
            "base_model": str(base),
            "output_dir": out,
            "max_train_samples": 60,
            "epochs": 12,
            "batch_size": 16,
            "lr": 2e-3,
            "eval_every": 1000,
            "baselines": False,
            "progress": False,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def entity_artifact(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny multitask model with a per-company head, trained on the crafted set."""
    return run_training(entity_config(tiny_base, tmp_path_factory.mktemp("models")))


def _companies_index():  # type: ignore[no-untyped-def]
    return load_company_index(SETTINGS.company_files)


def test_the_head_learns_opposite_verdicts_about_two_companies_of_one_text(
    entity_artifact: Path,
) -> None:
    metrics = json.loads((entity_artifact / "metrics.json").read_text())
    assert metrics["tasks"]["entity"]["test"]["accuracy"] == 1.0
    # Copying one verdict per text onto both companies can get at most half right.
    copied = metrics["tasks"]["entity"]["baselines"]["the text's sentiment copied to each company"]
    assert copied["accuracy"] <= 0.5
    manifest = read_manifest(entity_artifact)
    assert (
        manifest.entity is not None and manifest.entity.labels == manifest.tasks["sentiment"].labels
    )

    # Served through the linker and the scorer: every company of the crafted set (both
    # orders, unseen pairs in the test split) gets its own verdict from the head.
    scorer = ArtifactScorer(entity_artifact, device="cpu")
    rows = [json.loads(line) for line in MIXED.read_text().splitlines()]
    index = _companies_index()
    texts = [row["text"] for row in rows]
    mentions = [find_mentions(t, index) for t in texts]
    got, want = [], []
    for row, scores in zip(rows, scorer.score(texts, mentions), strict=True):
        names = {e["value"]: e["label"] for e in row["entities"]}
        for company in scores.companies:
            assert company.source == "entity_head"
            got.append(company.sentiment)
            want.append({"positive": "bullish", "negative": "bearish"}[names[company.name]])
    assert len(got) == 80
    # The held-out paragraphs are all right (above); on the whole set a tiny random
    # encoder may miss a training example or two. One verdict per text gets 40 of 80.
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 76


def test_companies_cost_no_second_pass_and_leave_the_text_scores_alone(
    entity_artifact: Path,
) -> None:
    scorer = ArtifactScorer(entity_artifact, device="cpu")
    texts = ["Intel jumped 7% after strong results, while $SBUX tumbled", "no company here"]
    index = _companies_index()
    with_companies = scorer.predict_proba(
        texts,
        [[[(m.start, m.end) for m in c.mentions] for c in find_mentions(t, index)] for t in texts],
    )
    without = scorer.predict_proba(texts)
    for task in ("sentiment", "topic"):
        np.testing.assert_allclose(with_companies[task], without[task], atol=1e-5)
    assert with_companies["entity"].shape == (2, 3)
    assert with_companies["entity_covered"].tolist() == [True, True]


def test_a_company_cut_off_by_truncation_gets_the_texts_verdict(entity_artifact: Path) -> None:
    scorer = ArtifactScorer(entity_artifact, device="cpu")
    text = "markets were calm today. " * 60 + "Intel jumped 7% after strong results."
    (scores,) = scorer.score([text], [find_mentions(text, _companies_index())])
    (intel,) = scores.companies
    assert intel.ticker == "INTC"
    assert intel.source == "text"
    assert intel.sentiment == scores.sentiment.label


def test_onnx_export_serves_the_head_with_parity(entity_artifact: Path, tmp_path: Path) -> None:
    from finsentry.training.export import export_onnx

    path, report = export_onnx(entity_artifact, output=tmp_path, quantize="none")
    assert report["tasks"]["entity"]["label_agreement"] == 1.0
    assert report["tasks"]["entity"]["max_prob_diff"] < 1e-3
    onnx = ArtifactScorer(path, device="cpu")
    torch = ArtifactScorer(entity_artifact, device="cpu")
    texts = ["Intel jumped 7% after strong results, while Starbucks tumbled 10% on weak guidance."]
    mentions = [find_mentions(texts[0], _companies_index())]
    got = [(c.ticker, c.sentiment, c.source) for c in onnx.score(texts, mentions)[0].companies]
    want = [(c.ticker, c.sentiment, c.source) for c in torch.score(texts, mentions)[0].companies]
    assert got == want and len(got) == 2
    # A batch without companies still runs through the graph (one dummy row inside).
    assert onnx.score(["no company here"], [[]])[0].companies == []


def test_finentity_reading_groups_mentions_and_keeps_offsets_through_cleaning() -> None:
    from finsentry.models.text import tweet_v1

    labels = ["bearish", "bullish", "neutral"]
    (news,) = read_finentity(MIXED, labels, tweet_v1)[:1]
    for entity in news.entities:
        for start, end in entity.spans:
            assert news.text[start:end].lower() == entity.name
    assert sorted(labels[e.label] for e in news.entities) == ["bearish", "bullish"]
    # Mixed paragraphs give no single-label sentences spanning both companies.
    for sentence in sentences(news):
        assert len({e.label for e in sentence.entities}) == 1


def _evaluate(model: Path, data: Path, *extra: str) -> object:
    return runner.invoke(
        app,
        ["evaluate", "--model", str(model), "--data", str(data), "--task", "entity", *extra],
    )


def test_evaluate_entity_reports_accuracy_and_counts_bad_rows(
    entity_artifact: Path, tmp_path: Path
) -> None:
    crafted = [json.loads(line) for line in MIXED.read_text().splitlines()[:2]]
    rows = [
        {"text": r["text"], "entity": e["value"], "label": e["label"]}
        for r in crafted
        for e in r["entities"]
    ]
    rows.append({"text": "Ford Motor fell 6%.", "entity": "Boeing", "label": "negative"})
    data = tmp_path / "entities.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _evaluate(entity_artifact, data, "--entity-col", "entity", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    report = json.loads(result.output)  # type: ignore[attr-defined]
    assert report["n"] == 4
    assert report["errors"] == {"entity not in text": 1}
    # The same verdicts the served scorer gives, counted by hand.
    scorer = ArtifactScorer(entity_artifact, device="cpu")
    index = _companies_index()
    right = 0
    for r in crafted:
        gold = {e["value"]: e["label"] for e in r["entities"]}
        for company in scorer.score([r["text"]], [find_mentions(r["text"], index)])[0].companies:
            mapped = {"positive": "bullish", "negative": "bearish"}[gold[company.name]]
            right += company.sentiment == mapped
    assert report["accuracy"] == right / 4
    assert set(report) >= {"accuracy", "macro_f1", "per_class"}


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        ([{"text": "Intel up", "company": "Intel", "label": "positive"}], [], "entity"),
        ([{"text": "Intel up", "entity": "Intel", "label": "sideways"}], [], "sideways"),
        (
            [{"text": "Intel up", "entity": "Intel", "label": "positive", "start": 3, "end": 8}],
            ["--start-col", "start", "--end-col", "end"],
            "offsets do not match",
        ),
    ],
)
def test_evaluate_entity_bad_input_is_a_clear_error(
    entity_artifact: Path, tmp_path: Path, rows: list[dict], args: list[str], message: str
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _evaluate(entity_artifact, data, *args)
    assert result.exit_code != 0  # type: ignore[attr-defined]
    assert message in result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


@pytest.mark.integration
def test_the_worker_indexes_two_companies_of_one_text_with_opposite_verdicts(
    entity_artifact: Path,
    settings: Settings,
    es,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Real Kafka, worker and Elasticsearch: each company keeps its own verdict, and the
    per-ticker query counts it, not the text's."""
    from kafka import KafkaProducer

    from finsentry.queries.params import TickersParams
    from finsentry.queries.results import run_query
    from tests.support.worker_process import WorkerProcess, wait_until

    worker = WorkerProcess(settings, entity_artifact, tmp_path / "worker.log")
    try:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        text = "Nvidia rose 4% after strong results, while Ford Motor fell 6% on weak guidance."
        producer.send(settings.topic_raw, json.dumps({"id": "mixed-1", "text": text}).encode())
        producer.flush()
        producer.close()

        def indexed() -> bool:
            es.indices.refresh(index=settings.items_index, ignore_unavailable=True)
            return (
                es.options(ignore_status=404).count(index=settings.items_index).get("count", 0) == 1
            )

        wait_until(indexed, 180, "the mixed item indexed")
    finally:
        worker.terminate()
    doc = es.get(index=settings.items_index, id="mixed-1")["_source"]
    assert doc["tickers"] == ["NVDA", "F"]
    verdicts = {c["ticker"]: (c["sentiment"], c["source"]) for c in doc["companies"]}
    assert verdicts == {"NVDA": ("bullish", "entity_head"), "F": ("bearish", "entity_head")}
    assert doc["companies"][0]["mentions"] == [{"start": 0, "end": 6}]

    def nested_count(ticker: str, sentiment: str) -> int:
        query = {
            "nested": {
                "path": "companies",
                "query": {
                    "bool": {
                        "filter": [
                            {"term": {"companies.ticker": ticker}},
                            {"term": {"companies.sentiment": sentiment}},
                        ]
                    }
                },
            }
        }
        return es.count(index=settings.items_index, query=query)["count"]

    # The flat per-company documents Grafana reads: one per company, its own verdict,
    # written once.
    es.indices.refresh(index=settings.company_verdicts_index)
    hits = es.search(index=settings.company_verdicts_index, version=True, size=10)["hits"]["hits"]
    flat = {h["_id"]: (h["_source"]["sentiment"], h["_source"]["verdict_from"]) for h in hits}
    assert flat == {
        "mixed-1:NVDA": ("bullish", "entity_head"),
        "mixed-1:F": ("bearish", "entity_head"),
    }
    assert [h["_version"] for h in hits] == [1, 1]
    assert nested_count("F", "bearish") == 1
    assert nested_count("NVDA", "bearish") == 0
    result = run_query(es, settings.items_index, TickersParams.model_validate({"since": "1d"}))
    rows = {r.key: (r.volume, r.bullish, r.bearish) for r in result.rows}  # type: ignore[union-attr]
    assert rows == {"NVDA": (1, 1, 0), "F": (1, 0, 1)}


def test_distillation_labels_the_news_texts_too(
    entity_artifact: Path, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The student trains on tweets and news paragraphs (repeated) and sentences; the
    teacher's soft labels must cover every one of them, in order (it once labelled the
    tweets only and the first news row fell off the end), and every labelled company in
    them gets the teacher's per-company verdict, in the order the training loop reads."""
    from finsentry.training import distill, train
    from finsentry.training.train import load_all

    asked: list[int] = []
    real = distill.teacher_probs

    def counting(teachers, texts, labels, **kw):  # type: ignore[no-untyped-def]
        asked.append(len(texts))
        return real(teachers, texts, labels, **kw)

    trained_on = []
    real_fit = train.fit

    def keeping(module, tokenizer, examples, *args, **kw):  # type: ignore[no-untyped-def]
        trained_on.append(examples)
        return real_fit(module, tokenizer, examples, *args, **kw)

    config = entity_config(tiny_base, tmp_path, student_layers=1, distill_alpha=0.5, epochs=1)
    monkeypatch.setattr(distill, "teacher_probs", counting)
    monkeypatch.setattr(train, "fit", keeping)
    student, summary = distill.run_distillation([entity_artifact], config, compare=False)
    # Once, for the unique training texts: the tweets of both tasks and the news.
    tweets = sum(len(d.train) for d in load_all(config).values())
    assert len(asked) == 1 and asked[0] > tweets
    # A per-company target for each labelled company: the teacher's own verdict on that
    # company of that text (at the distillation temperature), texts in the loop's order.
    (examples,) = trained_on
    companies = [(i, e) for i in range(len(examples)) for e in examples.entities_of(i)]
    assert examples.entity_soft is not None and len(examples.entity_soft) == len(companies)
    teacher = ArtifactScorer(entity_artifact, device="cpu")
    picked = [0, len(companies) // 2, len(companies) - 1]
    for k in picked:
        i, company = companies[k]
        own = teacher.predict_proba(
            [examples.texts[i]], [[e.spans for e in examples.entities_of(i)]]
        )
        row = [e.spans for e in examples.entities_of(i)].index(company.spans)
        expected = distill.soften(own["entity"][row : row + 1], config.distill_temperature)
        order = [teacher.entity_labels.index(n) for n in load_all(config)["sentiment"].labels]
        np.testing.assert_allclose(examples.entity_soft[k], expected[0][order], atol=1e-5)
    assert summary["rows"]["distilled student"]["encoder_layers"] == 1
    assert read_manifest(student).entity is not None
    # Same data and splits as the teacher, news included (the check once compared the
    # tweets' fingerprints with a manifest that also holds the news', and always said no).
    assert "news" in read_manifest(student).data
    assert summary["accuracy_vs_teacher"]["same_split"]
    card = json.loads((student / "metrics.json").read_text())
    assert "other data or splits" not in card["notes"]
