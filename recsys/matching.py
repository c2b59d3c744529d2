"""Query-item match features: what the query says against what the item is.

A ranker trained on behaviour alone learns what shoppers click, not whether an item is what
the query asked for; these features make relevance impossible to ignore. All come from the
catalog's own fields, so they mean the same on the synthetic world and on a shop's catalog:

* ``title_coverage`` / ``category_coverage``: share of the query's words (analysed and
  typo-corrected as the lexical index does) found in the item's title / category path.
* ``stated_match`` / ``stated_conflict``: the query is parsed against a lexicon of the
  catalog's brands and attribute values (``colour:grey``, ``material:velvet``, any key of the
  ``attributes`` column); of the fields it states, the share the item matches, and the share
  where the item has a *different* value (a grey query against a blue sofa).
* ``leaf_probability``: P(item's leaf category | query words), from a naive-Bayes query
  categoriser fitted on the labelled training queries and logged search engagement
  (:class:`QueryCategorizer`): it learns that "couch" means Sofas although no title says so.
* ``lexical``: the item's BM25 score over the query's ceiling (from the retriever).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.index.lexical import analyze

MATCH_FEATURES = (
    "lexical",
    "title_coverage",
    "category_coverage",
    "stated_match",
    "stated_conflict",
    "leaf_probability",
)
MAX_PHRASE = 3


@dataclass(frozen=True)
class WordSets:
    """The distinct analysed words of one text per item (CSR layout)."""

    vocab: dict[str, int]
    indptr: np.ndarray  # int64 (n + 1,)
    words: np.ndarray  # int32
    names: tuple[str, ...]  # word id -> word

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> WordSets:
        vocab: dict[str, int] = {}
        ids: list[int] = []
        indptr = np.zeros(len(texts) + 1, np.int64)
        cache: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            row = cache.get(text)
            if row is None:
                row = sorted({vocab.setdefault(w, len(vocab)) for w in analyze(text)})
                cache[text] = row
            ids.extend(row)
            indptr[i + 1] = len(ids)
        return cls(vocab, indptr, np.asarray(ids, np.int32), tuple(vocab))

    def words_of(self, item: int) -> list[str]:
        """The analysed words of one item's text."""
        return [self.names[w] for w in self.words[self.indptr[item] : self.indptr[item + 1]]]

    def coverage(self, words: Sequence[str], items: np.ndarray) -> np.ndarray:
        """Share of ``words`` (distinct) that each item's text contains (float32)."""
        n_words = len(set(words))
        if n_words == 0 or len(items) == 0:
            return np.zeros(len(items), np.float32)
        known = np.array([self.vocab[w] for w in set(words) if w in self.vocab], np.int32)
        starts, stops = self.indptr[items], self.indptr[items + 1]
        lengths = stops - starts
        if lengths.sum() == 0:
            return np.zeros(len(items), np.float32)
        owner = np.repeat(np.arange(len(items)), lengths)
        # positions of every item's words in ``self.words``, gathered without a Python loop
        first = np.cumsum(lengths) - lengths
        flat = self.words[np.arange(int(lengths.sum())) + np.repeat(starts - first, lengths)]
        hits = np.bincount(owner[np.isin(flat, known)], minlength=len(items))
        return (hits / n_words).astype(np.float32)


@dataclass(frozen=True)
class FieldLexicon:
    """Brands and attribute values of the catalog, as phrases of analysed words.

    ``fields`` names each field ("brand", "colour", ...); ``values[f]`` is the (n_items,) int32
    value id of field f per item (-1: the item has no value); ``phrases`` maps a word tuple to
    the (field, value id) pairs it names.
    """

    fields: tuple[str, ...]
    values: dict[str, np.ndarray]
    phrases: dict[tuple[str, ...], tuple[tuple[int, int], ...]]

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> FieldLexicon:
        columns: dict[str, list[str | None]] = {}
        brands = items["brand"].tolist() if "brand" in items else []
        if brands:
            columns["brand"] = [
                b if isinstance(b, str) and b.lower() != "unknown" else None for b in brands
            ]
        n = len(items)
        for row, text in enumerate(items.get("attributes", pd.Series([None] * n)).tolist()):
            for part in (text if isinstance(text, str) else "").split("|"):
                key, sep, value = part.partition(":")
                if not sep or not value.strip():
                    continue
                key = key.strip().lower()
                columns.setdefault(key, [None] * n)[row] = value.strip()
        fields = tuple(columns)
        values: dict[str, np.ndarray] = {}
        phrases: dict[tuple[str, ...], set[tuple[int, int]]] = {}
        for f, name in enumerate(fields):
            ids: dict[str, int] = {}
            column = np.full(n, -1, np.int32)
            for row, cell in enumerate(columns[name]):
                if cell is None:
                    continue
                value, key = cell, cell.lower()
                if key not in ids:
                    ids[key] = len(ids)
                    words = tuple(analyze(value))
                    if 0 < len(words) <= MAX_PHRASE:
                        phrases.setdefault(words, set()).add((f, ids[key]))
                column[row] = ids[key]
            values[name] = column
        return cls(fields, values, {k: tuple(sorted(v)) for k, v in phrases.items()})

    def parse(self, words: Sequence[str]) -> dict[int, set[int]]:
        """Fields the query states: field -> value ids (longest phrases first, no overlap)."""
        stated: dict[int, set[int]] = {}
        used = [False] * len(words)
        for size in range(min(MAX_PHRASE, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                if any(used[start : start + size]):
                    continue
                hits = self.phrases.get(tuple(words[start : start + size]))
                if hits:
                    for field, value in hits:
                        stated.setdefault(field, set()).add(value)
                    used[start : start + size] = [True] * size
        return stated

    def match(self, words: Sequence[str], items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(share of stated fields the item matches, share it contradicts) per item."""
        stated = self.parse(words)
        matched = np.zeros(len(items), np.float32)
        conflict = np.zeros(len(items), np.float32)
        if not stated:
            return matched, conflict
        for field, wanted in stated.items():
            have = self.values[self.fields[field]][items]
            ok = np.isin(have, np.fromiter(wanted, np.int32))
            matched += ok
            conflict += (have >= 0) & ~ok
        return matched / len(stated), conflict / len(stated)


class QueryCategorizer:
    """P(leaf | query words) by naive Bayes over word -> leaf evidence.

    Evidence is weighted (query words, leaf) pairs: the leaves of items judged relevant to a
    training query, and of items shoppers engaged with after a search. A query's words that
    were never seen carry no evidence; with none known the answer is the leaf prior.
    """

    def __init__(self, words: list[str], counts: np.ndarray, prior: np.ndarray, alpha: float = 0.1):
        self.word_index = {w: i for i, w in enumerate(words)}
        self.words = words
        self.counts = counts.astype(np.float32)  # (n_words, n_leaves)
        self.prior = prior.astype(np.float64)
        self.alpha = alpha

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        leaves: Iterable[int],
        weights: Iterable[float],
        leaf_sizes: np.ndarray,
        correct: object = None,
    ) -> QueryCategorizer:
        """``texts[k]`` led to an item of leaf ``leaves[k]`` with evidence ``weights[k]``.

        ``correct`` (optional ``word -> word | None``) maps words the way serving will.
        """
        n_leaves = len(leaf_sizes)
        rows: dict[str, np.ndarray] = {}
        words_of: dict[str, list[str]] = {}
        for text, leaf, weight in zip(texts, leaves, weights, strict=True):
            if text not in words_of:
                words_of[text] = _words(text, correct)
            for w in words_of[text]:
                row = rows.get(w)
                if row is None:
                    row = rows[w] = np.zeros(n_leaves, np.float64)
                row[int(leaf)] += float(weight)
        words = sorted(rows)
        counts = np.stack([rows[w] for w in words]) if words else np.zeros((0, n_leaves))
        prior = (leaf_sizes + 1.0) / (leaf_sizes + 1.0).sum()
        return cls(words, counts, prior)

    def probabilities(self, words: Sequence[str]) -> np.ndarray | None:
        """P(leaf | words) over all leaves, or None when no word has evidence."""
        known = [self.word_index[w] for w in dict.fromkeys(words) if w in self.word_index]
        if not known:
            return None
        counts = self.counts[known].astype(np.float64)
        smoothed = (counts + self.alpha * self.prior) / (
            counts.sum(axis=1, keepdims=True) + self.alpha
        )
        log_p = np.log(smoothed).sum(axis=0) - (len(known) - 1) * np.log(self.prior)
        log_p -= log_p.max()
        p = np.exp(log_p)
        return p / p.sum()

    def save(self, path: Path) -> None:
        np.savez(
            path,
            words=np.array(self.words, dtype=np.str_),
            counts=self.counts,
            prior=self.prior,
            alpha=np.array([self.alpha]),
        )

    @classmethod
    def load(cls, path: Path) -> QueryCategorizer:
        with np.load(path, allow_pickle=False) as z:
            return cls([str(w) for w in z["words"]], z["counts"], z["prior"], float(z["alpha"][0]))


def _words(text: str, correct: object) -> list[str]:
    words = analyze(text)
    if correct is None:
        return words
    fixed = [correct(w) for w in words]  # type: ignore[operator]
    return [f if f is not None else w for f, w in zip(fixed, words, strict=True)]


def category_paths(items: pd.DataFrame, levels: Sequence[int] = (1, 2, 3)) -> list[str]:
    """Each item's category path as words ("unknown" levels left out)."""
    text = items[f"category_l{levels[0]}"].astype(str)
    for level in levels[1:]:
        text = text + " " + items[f"category_l{level}"].astype(str)
    return text.str.replace("unknown", "", regex=False).tolist()


@dataclass
class QueryMatcher:
    """Computes :data:`MATCH_FEATURES` for (query, candidate items)."""

    titles: WordSets
    categories: WordSets
    lexicon: FieldLexicon
    categorizer: QueryCategorizer | None
    leaf_idx: np.ndarray  # int64 (n_items,)

    @classmethod
    def from_items(cls, items: pd.DataFrame, categorizer: QueryCategorizer | None) -> QueryMatcher:
        return cls(
            titles=WordSets.from_texts(items["title"].astype(str).tolist()),
            categories=WordSets.from_texts(category_paths(items)),
            lexicon=FieldLexicon.from_items(items),
            categorizer=categorizer,
            leaf_idx=items["leaf_idx"].to_numpy(np.int64),
        )

    def features(
        self, words: Sequence[str], items: np.ndarray, lexical: np.ndarray | None
    ) -> np.ndarray:
        """(len(items), len(MATCH_FEATURES)) float32 for the query's analysed ``words``."""
        out = np.zeros((len(items), len(MATCH_FEATURES)), np.float32)
        if len(items) == 0 or not words:
            return out
        if lexical is not None:
            out[:, 0] = lexical
        out[:, 1] = self.titles.coverage(words, items)
        out[:, 2] = self.categories.coverage(words, items)
        out[:, 3], out[:, 4] = self.lexicon.match(words, items)
        if self.categorizer is not None:
            p = self.categorizer.probabilities(words)
            if p is not None:
                out[:, 5] = p[self.leaf_idx[items]]
        return out
