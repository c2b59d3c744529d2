"""Query streams: which search queries a benchmark schedule carries.

The artifact's query table is small (a few thousand queries) and its frequencies are steep,
so the schedule that samples it (``recsys.traffic.schedule``) repeats itself: in the
``cached`` stream about 84% of searches repeat an earlier query, and the query-embedding
caches answer most searches without the encoder. A real shop's log has a long tail of
queries seen once: brand and category combinations, attribute words, misspellings, the same
words in another order. The ``longtail`` stream keeps a share of head queries (the artifact's
own, by frequency) and replaces the rest with variants generated from the catalog:

* ``brand leaf``, ``colour leaf``, ``material leaf``, ``brand colour leaf``, ``leaf size``
  from an item (``leaf`` is its third category level), half the time with one more word of
  its title, or two to four consecutive words of its title; half the items drawn by
  popularity, half uniformly (the catalog's own tail);
* the words of such a combination, or of a head query, in another order;
* a typo (a dropped, doubled or swapped letter) in any of them.

Variants do meet again as a run goes on (an attribute and a leaf alone are a few thousand
combinations; the extra title word multiplies them), so the share of searches repeating an
earlier one grows with the run's length. With the defaults it stays under half over a full
benchmark run: 42% over 84,000 searches of the demo catalog, against 52% before the extra
word. :func:`repeat_share` measures it, the report prints it, and a test checks it at the
size of a full run.

A stream only rewrites the ``query`` of search bodies: arrival times, routes, shoppers and
items stay those of the schedule, so both streams load a system with the same mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recsys.cache import normalise_query

StreamName = Literal["longtail", "cached"]
STREAMS: tuple[StreamName, ...] = ("longtail", "cached")

STREAM_DESCRIPTIONS: dict[str, str] = {
    "longtail": "head queries of the artifact for a share of searches, the rest variants "
    "generated from the catalog (brand / attribute / category combinations, word order, "
    "typos): at most half of the searches repeat an earlier query",
    "cached": "the artifact's queries by frequency (today's stream): most searches repeat "
    "an earlier query, so the query caches answer most of them",
}

COMBINATIONS = (
    "brand_leaf",
    "colour_leaf",
    "material_leaf",
    "brand_colour_leaf",
    "leaf_size",
    "title_words",
    "title_words",
)
"""Kinds of catalog variant (title words twice: the largest space, as in real logs)."""


def repeat_share(queries: Iterable[str]) -> float:
    """Share of queries whose normalised text occurred earlier in the sequence."""
    seen: set[str] = set()
    repeats = n = 0
    for q in queries:
        key = normalise_query(q)
        n += 1
        if key in seen:
            repeats += 1
        else:
            seen.add(key)
    return repeats / n if n else 0.0


def typo(text: str, rng: np.random.Generator) -> str:
    """``text`` with one letter dropped, doubled or swapped with its neighbour (in a word of
    at least three letters; unchanged when there is none)."""
    words = text.split()
    candidates = [i for i, w in enumerate(words) if len(w) >= 3 and w.isalpha()]
    if not candidates:
        return text
    wi = int(rng.choice(candidates))
    word = words[wi]
    pos = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 2 and word[pos - 1] == word[pos]:  # swapping equal letters changes nothing
        kind = 0
    if kind == 0:
        word = word[:pos] + word[pos + 1 :]
    elif kind == 1:
        word = word[:pos] + word[pos] + word[pos:]
    else:
        word = word[: pos - 1] + word[pos] + word[pos - 1] + word[pos + 1 :]
    words[wi] = word
    return " ".join(words)


def reorder(text: str, rng: np.random.Generator) -> str:
    """The words of ``text`` in another order (unchanged when it has one word)."""
    words = text.split()
    if len(words) < 2:
        return text
    for _ in range(4):
        order = rng.permutation(len(words))
        if list(order) != list(range(len(words))):
            return " ".join(words[i] for i in order)
    return " ".join(reversed(words))


def _title_words(title: object) -> list[str]:
    return [w for w in str(title).replace(",", " ").split() if w != "-"]


@dataclass(frozen=True)
class CatalogTerms:
    """What variants are made of: per item its leaf category, brand, colour, material, size,
    title (lower case, empty when missing), and an item draw probability (popularity)."""

    leaf: np.ndarray
    brand: np.ndarray
    colour: np.ndarray
    material: np.ndarray
    size: np.ndarray
    title: np.ndarray
    item_p: np.ndarray

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> CatalogTerms:
        def column(name: str) -> np.ndarray:
            if name not in items.columns:
                return np.full(len(items), "", dtype=object)
            return items[name].fillna("").astype(str).str.lower().str.strip().to_numpy(object)

        popularity = (
            items["popularity"].to_numpy(np.float64)
            if "popularity" in items.columns
            else np.ones(len(items))
        )
        popularity = np.where(np.isfinite(popularity) & (popularity > 0), popularity, 0.0)
        if popularity.sum() <= 0:
            popularity = np.ones(len(items))
        return cls(
            leaf=column("category_l3"),
            brand=column("brand"),
            colour=column("colour"),
            material=column("material"),
            size=column("size"),
            title=column("title"),
            item_p=popularity / popularity.sum(),
        )

    @classmethod
    def from_artifact(cls, artifact_dir: str | Path) -> CatalogTerms:
        from recsys import layout
        from recsys.data.loaders import read_items

        data = Path(artifact_dir) / layout.DATA_DIR
        columns = ["category_l3", "brand", "colour", "material", "size", "title", "popularity"]
        return cls.from_items(read_items(data, columns=columns))

    def combination(self, i: int, kind: str, rng: np.random.Generator) -> str:
        """Item ``i``'s words for one combination kind (falls back to brand + leaf)."""
        leaf, brand = self.leaf[i], self.brand[i]
        if kind == "title_words":
            words = _title_words(self.title[i])
            if len(words) >= 2:
                size = int(rng.integers(2, min(4, len(words)) + 1))
                first = int(rng.integers(0, len(words) - size + 1))
                return " ".join(words[first : first + size])
        parts = {
            "brand_leaf": [brand, leaf],
            "colour_leaf": [self.colour[i], leaf],
            "material_leaf": [self.material[i], leaf],
            "brand_colour_leaf": [brand, self.colour[i], leaf],
            "leaf_size": [leaf, self.size[i]],
        }[kind]
        if not all(parts):
            parts = [brand, leaf]
        # half the time one descriptive word of the title too, before the leaf ("northbound
        # wool hats"): shoppers narrow a search, and an attribute and a leaf alone are a few
        # thousand combinations that a long run would repeat
        words = [w for w in _title_words(self.title[i]) if w not in " ".join(parts).split()]
        if words and rng.uniform() < 0.5:
            parts = [*parts[:-1], str(words[int(rng.integers(len(words)))]), parts[-1]]
        return " ".join(p for p in parts if p)


def longtail_queries(
    n: int,
    head: Sequence[str],
    head_p: np.ndarray,
    terms: CatalogTerms,
    rng: np.random.Generator,
    head_share: float = 0.25,
    typo_share: float = 0.5,
    reorder_share: float = 0.3,
) -> list[str]:
    """``n`` search queries: ``head_share`` of them head queries drawn by ``head_p``, the rest
    catalog variants (a combination or a head query, then maybe reordered, maybe a typo)."""
    if not 0.0 <= head_share <= 1.0:
        raise ValueError("head_share must be in [0, 1]")
    is_head = rng.uniform(size=n) < head_share
    head_idx = rng.choice(len(head), size=n, p=head_p)
    item_idx = np.where(
        rng.uniform(size=n) < 0.5,
        rng.choice(len(terms.leaf), size=n, p=terms.item_p),
        rng.integers(0, len(terms.leaf), size=n),
    )
    kinds = rng.integers(len(COMBINATIONS) + 1, size=n)
    roll = rng.uniform(size=(n, 2))
    out: list[str] = []
    for i in range(n):
        if is_head[i]:
            out.append(str(head[head_idx[i]]))
            continue
        k = int(kinds[i])
        if k == len(COMBINATIONS):  # a head query, changed below
            text = str(head[head_idx[i]]).lower()
        else:
            text = terms.combination(int(item_idx[i]), COMBINATIONS[k], rng)
        source = text
        if roll[i, 0] < reorder_share:
            text = reorder(text, rng)
        # a head query always changes (else it would be a head query, not a variant)
        if roll[i, 1] < typo_share or (k == len(COMBINATIONS) and text == source):
            text = typo(text, rng)
        out.append(text)
    return out


def search_queries(schedule: pd.DataFrame) -> list[str]:
    """The queries of the schedule's searches, in schedule order."""
    bodies = schedule.loc[schedule["route"] == "search", "body"].dropna()
    return [str(json.loads(str(b))["query"]) for b in bodies]


def with_queries(schedule: pd.DataFrame, queries: Sequence[str]) -> pd.DataFrame:
    """A copy of ``schedule`` whose searches carry ``queries`` (in order), all else equal."""
    mask = (schedule["route"] == "search").to_numpy(dtype=bool)
    if int(mask.sum()) != len(queries):
        raise ValueError(f"{int(mask.sum())} searches in the schedule, {len(queries)} queries")
    out = schedule.copy()
    bodies = out["body"].to_numpy(dtype=object).copy()
    for position, query in zip(np.flatnonzero(mask), queries, strict=True):
        body = json.loads(str(bodies[position]))
        body["query"] = query
        bodies[position] = json.dumps(body)
    out["body"] = pd.array(bodies, dtype="string")
    return out


class StreamMaker:
    """Turns a schedule of the ``cached`` stream (the traffic module's) into ``stream``'s.

    The long-tail variants of a schedule depend on its own seed (``key``), so two rates of one
    sweep carry different generated queries, while one rate is the same for every system."""

    def __init__(self, head: Sequence[str], head_p: np.ndarray, terms: CatalogTerms, seed: int):
        self.head = list(head)
        self.head_p = np.asarray(head_p, np.float64)
        self.terms = terms
        self.seed = seed

    @classmethod
    def from_artifact(cls, artifact_dir: str | Path, seed: int) -> StreamMaker:
        from recsys import layout
        from recsys.data.loaders import read_queries

        queries = read_queries(Path(artifact_dir) / layout.DATA_DIR)
        freq = queries["frequency"].to_numpy(np.float64)
        freq = np.where(np.isfinite(freq) & (freq > 0), freq, 0.0)
        return cls(
            queries["query"].astype(str).tolist(),
            freq / freq.sum(),
            CatalogTerms.from_artifact(artifact_dir),
            seed,
        )

    def apply(self, stream: StreamName, schedule: pd.DataFrame, key: int) -> pd.DataFrame:
        if stream == "cached":
            return schedule
        n = int((schedule["route"] == "search").sum())
        rng = np.random.default_rng([self.seed, 0x7A11, key])
        return with_queries(schedule, longtail_queries(n, self.head, self.head_p, self.terms, rng))
