"""Lexical retrieval: BM25 over each item's title, brand, attributes and category path.

Why: dense vectors blur exact words (a brand, a size, "24 inch") and an inverted index misses
synonyms ("couch" for a sofa); shops run both and fuse them (``recsys.retrieval``). This is
the inverted-index half, on ``bm25s`` (sparse-matrix BM25: 50K items index in about a second
and a query scores the whole catalog in well under a millisecond on one core).

How: text is analysed the same way at build and query time (:func:`analyze`: lower-case
words, English stopwords out, a light plural stemmer so "sofas" matches "sofa"). Queries are
typo tolerant: a query word the index has never seen is replaced by the most frequent indexed
word within one edit (insert, delete, substitute, or swap two adjacent letters), found through
SymSpell-style delete keys, so "sofsa" and "headphnes" still match. Words with no such
neighbour are dropped (they cannot match anything anyway).

Scores are also given normalised to [0, 1] by the query's own ceiling (the sum over its words
of the highest score that word reaches in any item), so a ranker feature built on them means
the same for a one-word and a five-word query, whatever the candidate set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "into",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "without",
    ]
)
META_FILE = "lexical.json"
"""Analysis settings written beside bm25s's own files (the contract with :meth:`load`)."""


def stem(word: str) -> str:
    """Plural to singular for English product words ("boxes" -> "box", "sofas" -> "sofa")."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def analyze(text: str) -> list[str]:
    """The index's words of ``text``: lower-case, stopwords out, plurals stemmed."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def within_one_edit(a: str, b: str) -> bool:
    """Optimal-string-alignment distance <= 1 (adjacent swaps count as one edit)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if la < lb else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


class SpellingCorrector:
    """Maps an unknown word to the most frequent known word within one edit (or None)."""

    def __init__(self, words: Sequence[str], frequency: Sequence[int], min_length: int = 4):
        self.frequency = {w: int(f) for w, f in zip(words, frequency, strict=True) if w}
        self.min_length = min_length
        self._by_key: dict[str, list[str]] = {}
        for word in self.frequency:
            if len(word) >= min_length - 1:
                for key in _deletes(word) | {word}:
                    self._by_key.setdefault(key, []).append(word)

    def correct(self, word: str) -> str | None:
        if word in self.frequency:
            return word
        if len(word) < self.min_length or not word.isalpha():
            return None
        found = {c for key in _deletes(word) | {word} for c in self._by_key.get(key, ())}
        close = [c for c in found if within_one_edit(word, c)]
        if not close:
            return None
        return max(close, key=lambda c: (self.frequency[c], c))


@dataclass
class LexicalIndex:
    """BM25 over item documents (row = item_idx) with typo-tolerant queries."""

    bm25: object  # bm25s.BM25
    corrector: SpellingCorrector
    word_ceiling: dict[str, float]
    """Highest score each indexed word contributes to any item (the normalisation)."""

    @classmethod
    def build(
        cls, documents: Sequence[str], k1: float = 1.2, b: float = 0.75, progress: bool = False
    ) -> LexicalIndex:
        import bm25s

        bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        bm25.index([analyze(d) for d in documents], show_progress=progress)
        return cls._wrap(bm25)

    @classmethod
    def _wrap(cls, bm25: object) -> LexicalIndex:
        vocab: dict[str, int] = bm25.vocab_dict  # type: ignore[attr-defined]
        matrix = bm25.scores  # type: ignore[attr-defined]
        indptr = np.asarray(matrix["indptr"])
        data = np.asarray(matrix["data"])
        doc_freq = np.diff(indptr)
        ceiling = np.zeros(len(doc_freq), np.float32)
        nonempty = doc_freq > 0
        if nonempty.any():
            ceiling[nonempty] = np.maximum.reduceat(data, indptr[:-1][nonempty])
        words = [""] * len(doc_freq)  # the vocabulary's empty token has no column
        for word, at in vocab.items():
            if at < len(words):
                words[at] = word
        return cls(
            bm25=bm25,
            corrector=SpellingCorrector(words, doc_freq.tolist()),
            word_ceiling={w: float(ceiling[i]) for i, w in enumerate(words) if w},
        )

    @property
    def n_items(self) -> int:
        return int(self.bm25.scores["num_docs"])  # type: ignore[attr-defined]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(directory), show_progress=False)  # type: ignore[attr-defined]
        (directory / META_FILE).write_text(
            json.dumps({"analyzer": "words-stopwords-plural-stem", "typo_edits": 1})
        )

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        import bm25s

        if not (directory / META_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no lexical index ({META_FILE} missing)")
        return cls._wrap(bm25s.BM25.load(str(directory), show_progress=False))

    def analyze_query(self, text: str) -> list[str]:
        """The query's words, misspellings corrected; words the index lacks are kept as they
        are (they match nothing here, but a query categoriser may know them: "couch")."""
        out: list[str] = []
        for word in analyze(text):
            fixed = self.corrector.correct(word) or word
            if fixed not in out:
                out.append(fixed)
        return out

    def query_words(self, text: str) -> list[str]:
        """The query's indexed words, misspellings corrected, unknown words dropped."""
        return self.indexed(self.analyze_query(text))

    def indexed(self, words: list[str]) -> list[str]:
        """The words the index knows (the others match nothing)."""
        return [w for w in words if w in self.corrector.frequency]

    def scores(self, words: list[str], mask: np.ndarray | None = None) -> np.ndarray:
        """BM25 score of every item for the analysed query ``words`` (float32, n_items)."""
        words = [w for w in words if w in self.corrector.frequency]
        if not words:
            return np.zeros(self.n_items, np.float32)
        weights = None if mask is None else mask.astype(np.float32)
        raw = self.bm25.get_scores(words, weight_mask=weights)  # type: ignore[attr-defined]
        return np.asarray(raw, np.float32)

    def ceiling(self, words: Iterable[str]) -> float:
        return float(sum(self.word_ceiling.get(w, 0.0) for w in words))

    def search(
        self, text: str, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` items with a positive score: ``(item_idx, score, all_scores)``.

        ``all_scores`` is the whole-catalog score vector (for features of other candidates).
        """
        words = self.query_words(text)
        scores = self.scores(words, mask)
        return (*top_positive(scores, k), scores)


def top_positive(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indexes and values of the ``k`` highest positive scores, best first (ties by index)."""
    positive = np.flatnonzero(scores > 0)
    if len(positive) > k:
        part = np.argpartition(-scores[positive], k - 1)[:k]
        positive = positive[part]
    order = np.lexsort((positive, -scores[positive]))
    ids = positive[order].astype(np.int64)
    return ids, scores[ids].astype(np.float32)


def item_documents(
    titles: Sequence[str],
    brands: Sequence[str | None],
    attributes: Sequence[str | None],
    categories: Sequence[str],
) -> list[str]:
    """The text indexed per item: title, brand, attribute values, category path."""
    out = []
    for title, brand, attrs, category in zip(titles, brands, attributes, categories, strict=True):
        text = attrs if isinstance(attrs, str) else ""  # null reads back as None or NaN
        values = " ".join(p.split(":", 1)[-1] for p in text.split("|") if p)
        named = brand if isinstance(brand, str) and brand.lower() != "unknown" else ""
        path = category if category.lower() != "unknown" else ""
        out.append(" ".join(x for x in (title, named, values, path) if x))
    return out
