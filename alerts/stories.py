"""One story, one count: near-duplicate detection on normalised text with MinHash LSH.

The same headline arrives from several wires, as re-posts ("RT @desk: ..."), with a source
suffix ("... - Reuters") or a link appended. Texts are normalised (lower case, no URLs,
cashtags, handles or punctuation), cut into character shingles and hashed with MinHash; an LSH
index (datasketch) finds an earlier text whose estimated Jaccard similarity is above the
threshold. The story of an item is the id of the first item of its cluster. Stories are
forgotten after `window_s` (event time) so memory stays bounded.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence

from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel, ConfigDict, Field

_URL = re.compile(r"https?://\S+|www\.\S+")
_HANDLE = re.compile(r"(^|\s)(rt\s+)?@\w+:?")
_NON_WORD = re.compile(r"[^a-z0-9$]+")
# Trailing "- Reuters" / "| Bloomberg" style source tags of wire headlines.
_SOURCE_SUFFIX = re.compile(r"\s[-|–—]\s[^-|–—]{1,40}$")


class StoryPolicy(BaseModel):
    """How near-duplicates are found."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.7, gt=0.0, lt=1.0, description="Estimated Jaccard to match.")
    num_perm: int = Field(128, ge=16, le=512)
    shingle_chars: int = Field(5, ge=2, le=12)
    window_s: float = Field(6 * 3600.0, gt=0, description="How long a story is remembered.")
    max_stories: int = Field(200_000, ge=100)
    count_once: bool = Field(
        True, description="A story's near-duplicates do not count again in the counting rules."
    )


def normalise(text: str) -> str:
    """Lower case, without URLs, handles, source suffixes, cashtag signs and punctuation."""
    text = _URL.sub(" ", text.strip())
    text = _SOURCE_SUFFIX.sub("", text)
    text = _HANDLE.sub(" ", text.lower())
    text = text.replace("$", " ")
    return " ".join(_NON_WORD.sub(" ", text).split())


def shingles(text: str, size: int) -> set[str]:
    """Character `size`-grams of the normalised text: robust to a changed word or two in a
    short headline, where word shingles are too few to estimate similarity well."""
    norm = normalise(text)
    if len(norm) <= size:
        return {norm} if norm else set()
    return {norm[i : i + size] for i in range(len(norm) - size + 1)}


def story_text(title: str | None, text: str) -> str:
    """What identifies a story: the headline when there is one, else the text."""
    return title if title and len(normalise(title).split()) >= 4 else text


class StoryTracker:
    """Assigns each item a story id; items about the same story get the first one's id."""

    def __init__(self, policy: StoryPolicy | None = None) -> None:
        self.policy = policy or StoryPolicy()
        self._lsh = MinHashLSH(threshold=self.policy.threshold, num_perm=self.policy.num_perm)
        # Made once: drawing the permutations is most of a fresh MinHash's cost.
        self._empty = MinHash(num_perm=self.policy.num_perm)
        self._scratch = self._empty.copy()
        self._story: dict[str, str] = {}
        self._order: deque[tuple[float, str]] = deque()
        self._seq: dict[str, int] = {}
        self._tickers: dict[str, frozenset[str]] = {}
        self._counter = 0

    def _minhash(self, text: str) -> MinHash:
        """The text's MinHash, in one scratch object: the LSH index keeps only the band
        hashes of what it is given, so a fresh object per text is not needed."""
        minhash = self._scratch
        minhash.hashvalues = self._empty.hashvalues.copy()
        minhash.update_batch([s.encode("utf-8") for s in shingles(text, self.policy.shingle_chars)])
        return minhash

    def _forget_before(self, ts: float) -> None:
        while self._order and (
            self._order[0][0] < ts or len(self._order) > self.policy.max_stories
        ):
            _, key = self._order.popleft()
            if key in self._story:
                self._lsh.remove(key)
                del self._story[key]
                self._seq.pop(key, None)
                self._tickers.pop(key, None)

    def observe(self, item_id: str, text: str, ts: float, tickers: Sequence[str] = ()) -> str:
        """The story id of this item (its own id when the story is new). With `tickers`,
        only an earlier item about one of them (or about none) can be the same story."""
        return self.remember(item_id, text, ts, tickers=tickers)

    def remember(
        self,
        item_id: str,
        text: str,
        ts: float,
        story: str | None = None,
        tickers: Sequence[str] = (),
    ) -> str:
        """`observe`, or, with `story`, file the text under that known story (restoring the
        stories of stored alerts after a restart)."""
        if item_id in self._story:
            return self._story[item_id]
        self._forget_before(ts - self.policy.window_s)
        if not normalise(text):
            return story or item_id
        minhash = self._minhash(text)
        if story is None:
            mine = frozenset(tickers)
            matches = {
                self._story[key]
                for key in self._lsh.query(minhash)
                if key in self._story and self._same_companies(mine, self._tickers.get(key))
            }
            # Several clusters may match: the earliest seen story wins.
            story = min(matches, key=lambda s: self._seq.get(s, 0)) if matches else item_id
        self._lsh.insert(item_id, minhash)
        self._story[item_id] = story
        if tickers:
            self._tickers[item_id] = frozenset(tickers)
        self._counter += 1
        self._seq[item_id] = self._counter
        self._order.append((ts, item_id))
        return story

    @staticmethod
    def _same_companies(mine: frozenset[str], theirs: frozenset[str] | None) -> bool:
        return not mine or not theirs or bool(mine & theirs)

    def __len__(self) -> int:
        return len(self._story)
