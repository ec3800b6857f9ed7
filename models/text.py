"""Text normalisation applied identically in training and serving (named in the manifest)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Literal

Preprocess = Literal["none", "tweet-v1"]

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def tweet_v1(text: str) -> str:
    """Decode HTML entities (`&amp;`), replace each URL by the word `http`, squeeze spaces.

    Shortens tweets by ~15 tokens of URL noise without changing their meaning."""
    return _SPACE.sub(" ", _URL.sub("http", html.unescape(text))).strip()


def _identity(text: str) -> str:
    return text


PREPROCESSORS: dict[str, Callable[[str], str]] = {"none": _identity, "tweet-v1": tweet_v1}


def preprocessor(name: str) -> Callable[[str], str]:
    if name not in PREPROCESSORS:
        raise ValueError(f"unknown preprocessing {name!r}; known: {sorted(PREPROCESSORS)}")
    return PREPROCESSORS[name]
