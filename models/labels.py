"""Label names the models stage serves, and how dataset label names map onto them."""

from __future__ import annotations

import json
from pathlib import Path

SENTIMENT = "sentiment"
TOPIC = "topic"
TASKS: tuple[str, ...] = (SENTIMENT, TOPIC)

SENTIMENT_LABELS: tuple[str, ...] = ("bearish", "neutral", "bullish")

_SENTIMENT_SYNONYMS: dict[str, str] = {
    "bearish": "bearish",
    "negative": "bearish",
    "neg": "bearish",
    "neutral": "neutral",
    "neu": "neutral",
    "bullish": "bullish",
    "positive": "bullish",
    "pos": "bullish",
}


def normalise_sentiment(name: str) -> str:
    """`Bearish`/`negative` -> `bearish`, and so on; anything else is an error."""
    key = name.strip().lower()
    if key not in _SENTIMENT_SYNONYMS:
        raise ValueError(
            f"unknown sentiment label {name!r}: expected one of {sorted(_SENTIMENT_SYNONYMS)}"
        )
    return _SENTIMENT_SYNONYMS[key]


def read_label_map(path: Path) -> dict[str, str]:
    """A JSON object mapping raw labels (ids or names, as strings) to label names."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read label map {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"label map {path} must be a JSON object of label -> name strings")
    return {str(k): v for k, v in data.items()}


def dataset_label_names(label_map: dict[str, str], task: str) -> dict[str, str]:
    """Raw label -> the name the model uses (sentiment names are normalised)."""
    if task == SENTIMENT:
        return {k: normalise_sentiment(v) for k, v in label_map.items()}
    return dict(label_map)


def topic_label_names(data_dir: Path) -> list[str]:
    """The 20 topic names in id order, from the topic data set's label_map.json."""
    mapping = read_label_map(Path(data_dir) / "tfn_topic" / "label_map.json")
    return [mapping[k] for k in sorted(mapping, key=int)]


def sentiment_label_names(data_dir: Path) -> list[str]:
    """Sentiment names in the data set's id order (0 bearish, 1 bullish, 2 neutral)."""
    mapping = read_label_map(Path(data_dir) / "tfns_sentiment" / "label_map.json")
    return [normalise_sentiment(mapping[k]) for k in sorted(mapping, key=int)]
