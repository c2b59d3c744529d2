"""Deterministic synthetic e-commerce world: catalog, queries with ESCI labels, shoppers, logs.

:func:`generate_world` writes every public file of :mod:`recsys.data.schema` into ``out_dir``
and the hidden ones into ``out_dir/ground_truth/``.

Determinism. Every random draw comes from ``np.random.default_rng([seed..., stream, block])``
where ``block`` is a fixed-size block of items (:data:`ITEM_BLOCK`) or shoppers
(:data:`SHOPPER_BLOCK`), never from hash() or dict order, and parquet files are written with
fixed options. The same config gives byte-identical files; since blocks do not depend on
``chunk_items``, a different ``chunk_items`` gives the same *content* (only parquet row groups
differ).

Memory. Per item the generator keeps compact numpy arrays (codes, price, quality, a 16-d latent
and popularity: about 100 bytes), never Python objects; titles and descriptions are built and
written one chunk of ``chunk_items`` at a time. Shoppers are simulated one chunk at a time and
their impressions spooled to temporary parquet files with one row group per day; the final
``interactions_{train,test}.parquet`` are then merged one day at a time, so peak memory holds
one chunk of impressions or one day of the log, whichever is larger. The output files are
globally sorted by (day, ts, session_id, position); no row group spans two days.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys.config import DataConfig
from recsys.data import schema as S
from recsys.data import vocabulary as vocab
from recsys.data.ground_truth import (
    LATENT_DIM,
    LEAF_TABLE,
    MAX_PREFERRED_LEAVES,
    NO_QUERY,
    ItemTruth,
    QuerySpecs,
    ShopperTruth,
    relevance_gain,
    true_utility,
)
from recsys.data.loaders import (
    HIDDEN_FILES,
    PUBLIC_FILES,
    WorldSummary,
    open_writer,
    write_table,
)

ITEM_BLOCK = 1_000
"""Items per random-number block (fixed: content does not depend on ``chunk_items``)."""
SHOPPER_BLOCK = 1_000
"""Shoppers per random-number block."""
ROWS_PER_ITEM_ROW = 10
"""A shopper chunk holds about ``chunk_items * ROWS_PER_ITEM_ROW`` impressions (they are far
smaller than catalog rows with text)."""
POPULARITY_EXPONENT = 1.05
"""Zipf exponent of item popularity over the popularity rank."""
QUERY_EXPONENT = 1.0
"""Zipf exponent of query frequency."""
QUERY_KIND_SHARES = {"exact": 0.5, "misspelling": 0.15, "synonym": 0.2, "attribute": 0.15}
"""Share of each kind among the distinct queries."""
QUERY_KIND_VOLUME = {"exact": 1.0, "misspelling": 0.25, "synonym": 0.6, "attribute": 0.5}
"""Relative search volume per kind (misspellings are rarer than the words they misspell)."""
LABEL_MIX = (0.35, 0.30, 0.15, 0.20)
"""Target share of E, S, C, I labels per query (where enough such items exist)."""
BASE_TS = int(np.datetime64("2026-01-01T00:00:00", "s").astype(np.int64))
"""Start of the log: day 0 is 2026-01-01 (UTC)."""
SECONDS_PER_DAY = 86_400

_LABEL_CANDIDATE_CAP = 20_000
_ATTRIBUTE_CANDIDATES = 50_000
_QUERY_TRIES = 200


class Stream(IntEnum):
    """Random stream ids: one per purpose, fixed forever so worlds stay reproducible."""

    WORLD = 1
    ITEMS = 2
    ITEM_TEXT = 3
    POPULARITY = 4
    QUERIES = 5
    SHOPPERS = 6
    SESSIONS = 7


@dataclass(frozen=True)
class Funnel:
    """How hidden utility turns into clicks, carts and purchases."""

    noise_sd: float = 1.0
    """Normal noise added to the utility of each impression (sampling time only)."""
    click_offset: float = 4.3
    position_decay: float = 0.6
    """Click logit falls by ``position_decay * log1p(position)``."""
    cart_scale: float = 0.7
    cart_offset: float = 4.3
    purchase_scale: float = 0.5
    purchase_offset: float = 3.0


FUNNEL = Funnel()


def _rng(seed: int, stream: Stream, *keys: int) -> np.random.Generator:
    """The generator of one (seed, stream, block...) triple; negative seeds are fine."""
    return np.random.default_rng([int(seed < 0), abs(seed), int(stream), *keys])


def _blocks(n: int, size: int) -> Iterator[tuple[int, int, int]]:
    """(block number, start, stop) of consecutive blocks covering range(n)."""
    for block, start in enumerate(range(0, n, size)):
        yield block, start, min(start + size, n)


# ---- sampling helpers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Segmented:
    """Weighted discrete distributions over the values of many segments, sampled vectorised.

    Segment ``s`` holds ``values[offsets[s]:offsets[s+1]]``. ``sample(segments, u)`` draws one
    value from each requested segment by inverse CDF with uniforms ``u``; empty segments give
    ``empty``.
    """

    offsets: np.ndarray
    values: np.ndarray
    keys: np.ndarray
    """``segment + cumulative probability within segment``: globally increasing."""

    @classmethod
    def build(
        cls, segment: np.ndarray, values: np.ndarray, weights: np.ndarray, n_segments: int
    ) -> Segmented:
        """From parallel arrays (segment id, value, weight) in any order."""
        order = np.argsort(segment, kind="stable")
        segment, values, weights = segment[order], values[order], weights[order]
        offsets = np.searchsorted(segment, np.arange(n_segments + 1)).astype(np.int64)
        cum = np.cumsum(weights, dtype=np.float64)
        before = np.concatenate([[0.0], cum])[offsets[:-1]]
        totals = np.concatenate([[0.0], cum])[offsets[1:]] - before
        seg_before = np.repeat(before, np.diff(offsets))
        seg_total = np.repeat(np.maximum(totals, 1e-300), np.diff(offsets))
        keys = segment + (cum - seg_before) / seg_total
        return cls(offsets=offsets, values=values, keys=keys)

    @classmethod
    def from_lists(
        cls, lists: Sequence[Sequence[int]], weights: Sequence[Sequence[float]]
    ) -> Segmented:
        """One segment per list of values, with matching weights."""
        lengths = [len(x) for x in lists]
        segment = np.repeat(np.arange(len(lists)), lengths)
        values = np.array([v for x in lists for v in x], dtype=np.int64)
        w = np.array([v for x in weights for v in x], dtype=np.float64)
        return cls.build(segment, values, w, len(lists))

    def segment_values(self, segment: int) -> np.ndarray:
        """The values of one segment."""
        return self.values[self.offsets[segment] : self.offsets[segment + 1]]

    def sample(self, segments: np.ndarray, u: np.ndarray, empty: int = -1) -> np.ndarray:
        """One value per entry of ``segments`` (uniforms ``u`` in [0, 1))."""
        start = self.offsets[segments]
        stop = self.offsets[segments + 1]
        pos = np.searchsorted(self.keys, segments + u, side="right")
        pos = np.clip(pos, start, np.maximum(stop - 1, start))
        found = self.values[np.minimum(pos, len(self.values) - 1)] if len(self.values) else pos
        return np.where(stop > start, found, empty)


def _first_unique(candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``k`` distinct values of ``candidates`` (n, m) in column order.

    Returns (rows of k values, number of distinct values per row); rows with fewer than k
    distinct values are padded with repeats and must be repaired by the caller.
    """
    n, m = candidates.shape
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    dup_ordered = np.zeros((n, m), dtype=bool)
    dup_ordered[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    duplicate = np.empty_like(dup_ordered)
    np.put_along_axis(duplicate, order, dup_ordered, axis=1)
    rank = np.argsort(duplicate * m + np.arange(m), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, rank, axis=1), (~duplicate).sum(axis=1)


def _zipf_weights(ranks: np.ndarray, n: int, exponent: float) -> np.ndarray:
    """Power-law weights of 0-based ``ranks`` among n, normalised to sum 1 over all n ranks."""
    norm = 0.0
    for start in range(0, n, 1 << 20):  # bounded memory for huge n
        r = np.arange(start + 1, min(start + (1 << 20), n) + 1, dtype=np.float64)
        norm += float(np.sum(r**-exponent))
    return (ranks.astype(np.float64) + 1.0) ** -exponent / norm


# ---- world parameters -----------------------------------------------------------------------


@dataclass(frozen=True)
class WorldParams:
    """Seed-level parameters shared by every block."""

    leaf_weights: np.ndarray
    """Share of the catalog in each leaf (log-normal: some leaves big, some small)."""
    leaf_centroids: np.ndarray
    """(n_leaves, LATENT_DIM) taste centroid of each leaf."""
    brand_premium: np.ndarray
    """log price multiplier of each brand."""
    brand_quality: np.ndarray
    """mean hidden quality of each brand."""
    brands_by_department: Segmented
    """Brands of each department weighted by brand size."""
    leaf_attributes: dict[str, Segmented]
    """Per-leaf samplers of colour / material / size / adjective codes and noun positions."""


def world_params(seed: int) -> WorldParams:
    """Draw the seed-level parameters."""
    rng = _rng(seed, Stream.WORLD)
    n_leaves, n_brands = len(vocab.LEAVES), len(vocab.BRANDS)
    leaf_weights = rng.lognormal(0.0, 0.9, n_leaves)
    centroids = rng.normal(0.0, 1.0 / np.sqrt(LATENT_DIM), (n_leaves, LATENT_DIM))
    brand_size = rng.pareto(1.5, n_brands) + 1.0
    brands = Segmented.build(
        np.array(vocab.BRAND_DEPARTMENT), np.arange(n_brands), brand_size, len(vocab.DEPARTMENTS)
    )
    return WorldParams(
        leaf_weights=leaf_weights / leaf_weights.sum(),
        leaf_centroids=centroids.astype(np.float32),
        brand_premium=rng.normal(0.0, 0.25, n_brands),
        brand_quality=rng.normal(0.0, 0.4, n_brands),
        brands_by_department=brands,
        leaf_attributes=_leaf_attribute_samplers(),
    )


def _leaf_attribute_samplers() -> dict[str, Segmented]:
    """Samplers of attribute codes per leaf; earlier palette entries are more common."""

    def codes(values: tuple[str, ...], table: tuple[str, ...]) -> list[int]:
        return [table.index(v) for v in values]

    def falling(n: int) -> list[float]:
        return [1.0 / (1.0 + 0.25 * k) for k in range(n)]

    samplers: dict[str, Segmented] = {}
    for name, table in (
        ("colour", vocab.COLOURS),
        ("material", vocab.MATERIALS),
        ("size", vocab.SIZES),
        ("adjective", vocab.ADJECTIVES),
    ):
        lists = [codes(getattr(leaf, f"{name}s"), table) for leaf in vocab.LEAVES]
        samplers[name] = Segmented.from_lists(lists, [falling(len(x)) for x in lists])
    nouns = [list(range(len(leaf.nouns))) for leaf in vocab.LEAVES]
    samplers["noun"] = Segmented.from_lists(nouns, [[2.0] + [1.0] * (len(x) - 1) for x in nouns])
    return samplers


# ---- catalog --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """The whole catalog as compact arrays (row = item_idx)."""

    truth: ItemTruth
    adjective: np.ndarray
    """Feature adjective code (into vocabulary.ADJECTIVES) used in the title."""
    noun: np.ndarray
    """Position of the item's noun in its leaf's ``nouns``."""
    popularity: np.ndarray
    """Zipf-like weights summing to 1 (float64)."""

    @property
    def n(self) -> int:
        """Number of items."""
        return len(self.popularity)


_ITEM_ARRAYS: dict[str, tuple[type[np.generic], tuple[int, ...]]] = {
    "leaf": (np.int32, ()),
    "brand": (np.int32, ()),
    "colour": (np.int16, ()),
    "material": (np.int16, ()),
    "size": (np.int16, ()),
    "adjective": (np.int16, ()),
    "noun": (np.int8, ()),
    "price": (np.float32, ()),
    "quality": (np.float32, ()),
    "latent": (np.float32, (LATENT_DIM,)),
}
"""The per-item arrays of the catalog: dtype and trailing shape."""


def build_catalog(config: DataConfig, params: WorldParams, progress: bool) -> Catalog:
    """Draw every item's attributes, price, quality, latent and popularity (no text yet)."""
    n = config.n_items
    arrays = {name: np.empty((n, *shape), dtype) for name, (dtype, shape) in _ITEM_ARRAYS.items()}
    bar = tqdm(total=n, desc="catalog", unit="item", disable=not progress)
    for block, start, stop in _blocks(n, ITEM_BLOCK):
        drawn = _item_block(_rng(config.seed, Stream.ITEMS, block), params, stop - start)
        for name, values in drawn.items():
            arrays[name][start:stop] = values
        bar.update(stop - start)
    bar.close()
    truth = ItemTruth(
        leaf_idx=arrays["leaf"],
        brand_idx=arrays["brand"],
        colour=arrays["colour"],
        material=arrays["material"],
        size=arrays["size"],
        price=arrays["price"],
        quality=arrays["quality"],
        latent=arrays["latent"],
    )
    return Catalog(
        truth=truth,
        adjective=arrays["adjective"],
        noun=arrays["noun"],
        popularity=_popularity(config.seed, arrays["quality"]),
    )


def _item_block(rng: np.random.Generator, params: WorldParams, m: int) -> dict[str, np.ndarray]:
    """The arrays of ``_ITEM_ARRAYS`` for ``m`` new items."""
    leaf = rng.choice(len(params.leaf_weights), size=m, p=params.leaf_weights)
    brand = params.brands_by_department.sample(LEAF_TABLE.department[leaf], rng.random(m))
    drawn = {"leaf": leaf, "brand": brand}
    for name in ("colour", "material", "size", "adjective", "noun"):
        drawn[name] = params.leaf_attributes[name].sample(leaf, rng.random(m))
    log_price = _LEAF_SPREAD[leaf] * rng.standard_normal(m) + params.brand_premium[brand]
    drawn["price"] = _shelf_price(LEAF_TABLE.price_centre[leaf] * np.exp(log_price))
    drawn["quality"] = params.brand_quality[brand] + 0.8 * rng.standard_normal(m)
    noise = rng.normal(0.0, 1.0 / np.sqrt(LATENT_DIM), (m, LATENT_DIM))
    drawn["latent"] = 0.6 * params.leaf_centroids[leaf] + 0.8 * noise
    return drawn


_LEAF_SPREAD = np.array([leaf.price_spread for leaf in vocab.LEAVES])


def _shelf_price(raw: np.ndarray) -> np.ndarray:
    """Round to shelf prices: x.99 from 10 up, two decimals below."""
    raw = np.maximum(raw, 0.5)
    return np.where(raw >= 10, np.floor(raw) + 0.99, np.round(raw, 2)).astype(np.float32)


def _popularity(seed: int, quality: np.ndarray) -> np.ndarray:
    """Zipf over a random ranking that favours quality; sums to 1."""
    rng = _rng(seed, Stream.POPULARITY)
    score = 0.7 * quality + rng.standard_normal(len(quality))
    order = np.argsort(-score, kind="stable")
    ranks = np.empty(len(quality), np.int64)
    ranks[order] = np.arange(len(quality))
    return _zipf_weights(ranks, len(quality), POPULARITY_EXPONENT)


@dataclass(frozen=True)
class CatalogIndex:
    """Lookups over the catalog for query labelling and slate sampling."""

    by_leaf: Segmented
    """Items of each leaf weighted by popularity."""
    popular_cum: np.ndarray
    """Cumulative popularity (float64) for drawing popular items."""

    @classmethod
    def build(cls, catalog: Catalog) -> CatalogIndex:
        """Index a catalog."""
        leaf = catalog.truth.leaf_idx
        items = np.arange(catalog.n, dtype=np.int64)
        by_leaf = Segmented.build(leaf, items, catalog.popularity, len(vocab.LEAVES))
        return cls(by_leaf=by_leaf, popular_cum=np.cumsum(catalog.popularity))

    def popular(self, u: np.ndarray) -> np.ndarray:
        """Items drawn by popularity with uniforms ``u``."""
        pos = np.searchsorted(self.popular_cum, u * self.popular_cum[-1], side="right")
        return np.minimum(pos, len(self.popular_cum) - 1)


# ---- catalog text ---------------------------------------------------------------------------

_SPECIAL_WORDS = {
    "4k": "4K", "5g": "5G", "hdr": "HDR", "ips": "IPS", "mips": "MIPS", "upf": "UPF",
    "9h": "9H", "144hz": "144Hz", "4wd": "4WD", "bpa": "BPA", "wifi": "Wi-Fi", "usb": "USB",
    "oled": "OLED", "rfid": "RFID", "led": "LED", "tv": "TV", "rc": "RC", "spf": "SPF",
    "bbq": "BBQ", "3d": "3D", "in": "in", "with": "with", "and": "and", "stem": "STEM",
}  # fmt: skip


def display(text: str) -> str:
    """Title-case a lower-case phrase for a product title ("usb-c charger" -> "USB-C Charger")."""
    words = []
    for word in text.split(" "):
        parts = [_SPECIAL_WORDS.get(p, p[:1].upper() + p[1:]) for p in word.split("-")]
        words.append("-".join(parts))
    return " ".join(words)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.replace("-", " ").split())


_ADJECTIVE_TITLES = tuple(display(a) for a in vocab.ADJECTIVES)
_ADJECTIVE_WORDS = tuple(_words(a) for a in vocab.ADJECTIVES)
_NOUN_WORDS = tuple(tuple(_words(n) for n in leaf.nouns) for leaf in vocab.LEAVES)
_NOUN_TITLES = tuple(tuple(display(n) for n in leaf.nouns) for leaf in vocab.LEAVES)
_GENERIC_TITLES = tuple(display(a) for a in vocab.GENERIC_ADJECTIVES)


def _attribute(table: tuple[str, ...], code: int) -> str | None:
    return table[code] if code >= 0 else None


def _title(
    brand: str,
    generic: str | None,
    adjective: str | None,
    material: str | None,
    noun: str,
    colour: str | None,
    size: str | None,
) -> str:
    words = [brand, generic, adjective, material, noun]
    title = " ".join(w for w in words if w)
    tail = ", ".join(x for x in (colour, size) if x)
    return f"{title} - {tail}" if tail else title


def _description(
    leaf: vocab.Leaf,
    brand: str,
    adjective: str | None,
    noun: str,
    colour: str | None,
    material: str | None,
    draws: np.ndarray,
) -> str:
    """1-3 listing sentences; ``draws`` holds 6 uniforms in [0, 1)."""
    described = f"{adjective} {noun}" if adjective else noun
    use = leaf.uses[int(draws[0] * len(leaf.uses))]
    feature_at = int(draws[1] * len(leaf.features))
    feature = leaf.features[feature_at]
    opener = int(draws[2] * 3)
    if opener == 0 and material:
        first = (
            f"This {described} from {brand} is made from {material.lower()} and is ideal for {use}."
        )
    elif opener == 1 and colour:
        first = f"The {brand} {noun} comes in {colour.lower()} and is designed for {use}."
    else:
        first = f"Designed for {use}, this {described} features {feature}."
        feature = leaf.features[(feature_at + 1) % len(leaf.features)]
    sentences = [first]
    if draws[3] < 0.7:
        lead = ("It features", "Highlights include", "Comes with")[int(draws[4] * 3)]
        sentences.append(f"{lead} {feature}.")
    if draws[5] < 0.4:
        sentences.append(vocab.CLOSERS[int(draws[5] / 0.4 * len(vocab.CLOSERS))])
    return " ".join(sentences)


def _text_block(
    catalog: Catalog, seed: int, block: int, start: int, stop: int
) -> dict[str, list[str]]:
    """Titles and descriptions of items [start, stop)."""
    rng = _rng(seed, Stream.ITEM_TEXT, block)
    m = stop - start
    generic = rng.random(m)
    draws = rng.random((m, 6))
    t = catalog.truth
    titles, descriptions = [], []
    for k, i in enumerate(range(start, stop)):
        leaf = vocab.LEAVES[t.leaf_idx[i]]
        brand = vocab.BRANDS[t.brand_idx[i]]
        colour = _attribute(vocab.COLOURS, t.colour[i])
        material = _attribute(vocab.MATERIALS, t.material[i])
        size = _attribute(vocab.SIZES, t.size[i])
        adjective = int(catalog.adjective[i])
        noun = int(catalog.noun[i])
        clash = bool(_ADJECTIVE_WORDS[adjective] & _NOUN_WORDS[t.leaf_idx[i]][noun])
        premium = _GENERIC_TITLES[int(generic[k] * 4 * len(_GENERIC_TITLES)) % len(_GENERIC_TITLES)]
        titles.append(
            _title(
                brand,
                premium if generic[k] < 0.25 else None,
                None if clash else _ADJECTIVE_TITLES[adjective],
                material,
                _NOUN_TITLES[t.leaf_idx[i]][noun],
                colour,
                size,
            )
        )
        descriptions.append(
            _description(
                leaf,
                brand,
                None if clash else vocab.ADJECTIVES[adjective],
                leaf.nouns[noun],
                colour,
                material,
                draws[k],
            )
        )
    return {"title": titles, "description": descriptions}


def _ratings(
    catalog: Catalog, seed: int, block: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Public rating (1..5, one decimal) and review count, both driven by hidden quality."""
    rng = _rng(seed, Stream.ITEM_TEXT, block, 1)
    m = stop - start
    quality = catalog.truth.quality[start:stop]
    rating = np.clip(np.round(3.9 + 0.45 * quality + rng.normal(0.0, 0.3, m), 1), 1.0, 5.0)
    expected = catalog.popularity[start:stop] * catalog.n * 25.0
    reviews = np.floor(expected * rng.lognormal(0.0, 0.5, m))
    return rating.astype(np.float32), np.minimum(reviews, 2**31 - 1).astype(np.int32)


def write_catalog(config: DataConfig, catalog: Catalog, out_dir: Path, progress: bool) -> None:
    """Write items.parquet, categories.parquet and ground_truth/item_latent.parquet."""
    write_table(out_dir / S.CATEGORIES_FILE, _categories_table(), S.CATEGORIES_SCHEMA)
    chunk = max(1, config.chunk_items // ITEM_BLOCK) * ITEM_BLOCK
    gt = out_dir / S.GROUND_TRUTH_DIR
    bar = tqdm(total=catalog.n, desc="items", unit="item", disable=not progress)
    with (
        open_writer(out_dir / S.ITEMS_FILE, S.ITEMS_SCHEMA) as items,
        open_writer(gt / S.ITEM_LATENT_FILE, S.ITEM_LATENT_SCHEMA) as latents,
    ):
        for _, start, stop in _blocks(catalog.n, chunk):
            items.write_table(_items_table(config.seed, catalog, start, stop))
            latents.write_table(_latent_table(catalog, start, stop))
            bar.update(stop - start)
    bar.close()


def _categories_table() -> pa.Table:
    leaves = vocab.LEAVES
    return pa.table(
        {
            "leaf_idx": pa.array(np.arange(len(leaves), dtype=np.int32)),
            "category_l1": [x.department for x in leaves],
            "category_l2": [x.category for x in leaves],
            "category_l3": [x.name for x in leaves],
        },
        schema=S.CATEGORIES_SCHEMA,
    )


def _items_table(seed: int, catalog: Catalog, start: int, stop: int) -> pa.Table:
    texts: dict[str, list[str]] = {"title": [], "description": []}
    ratings, reviews = [], []
    first_block = start // ITEM_BLOCK
    for offset, (b_start, b_stop) in enumerate(_sub_blocks(start, stop)):
        block_texts = _text_block(catalog, seed, first_block + offset, b_start, b_stop)
        texts["title"] += block_texts["title"]
        texts["description"] += block_texts["description"]
        rating, review = _ratings(catalog, seed, first_block + offset, b_start, b_stop)
        ratings.append(rating)
        reviews.append(review)
    t = catalog.truth
    rows = slice(start, stop)
    leaf = t.leaf_idx[rows]
    return pa.table(
        {
            "item_idx": pa.array(np.arange(start, stop, dtype=np.int32)),
            "item_id": [f"I{i:07d}" for i in range(start, stop)],
            "title": texts["title"],
            "description": texts["description"],
            "category_l1": _lookup([x.department for x in vocab.LEAVES], leaf),
            "category_l2": _lookup([x.category for x in vocab.LEAVES], leaf),
            "category_l3": _lookup([x.name for x in vocab.LEAVES], leaf),
            "leaf_idx": pa.array(leaf),
            "brand": _lookup(vocab.BRANDS, t.brand_idx[rows]),
            "brand_idx": pa.array(t.brand_idx[rows]),
            "colour": _lookup(vocab.COLOURS, t.colour[rows]),
            "material": _lookup(vocab.MATERIALS, t.material[rows]),
            "size": _lookup(vocab.SIZES, t.size[rows]),
            "price": pa.array(t.price[rows]),
            "rating": pa.array(np.concatenate(ratings)),
            "review_count": pa.array(np.concatenate(reviews)),
            "popularity": pa.array(catalog.popularity[rows].astype(np.float32)),
            "attributes": _attributes_column(t.colour[rows], t.material[rows], t.size[rows]),
        },
        schema=S.ITEMS_SCHEMA,
    )


def _attributes_column(colour: np.ndarray, material: np.ndarray, size: np.ndarray) -> pa.Array:
    """``key:value|...`` of the attributes an item has (null when it has none)."""
    out: list[str | None] = []
    for c, m, z in zip(colour.tolist(), material.tolist(), size.tolist(), strict=True):
        parts = [
            f"{key}:{table[code]}"
            for key, table, code in (
                ("colour", vocab.COLOURS, c),
                ("material", vocab.MATERIALS, m),
                ("size", vocab.SIZES, z),
            )
            if code >= 0
        ]
        out.append("|".join(parts) or None)
    return pa.array(out, pa.string())


def _sub_blocks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    for b_start in range(start, stop, ITEM_BLOCK):
        yield b_start, min(b_start + ITEM_BLOCK, stop)


def _lookup(values: Sequence[str], codes: np.ndarray) -> pa.Array:
    """Strings of ``codes`` (null where the code is -1), dictionary-decoded in arrow."""
    dictionary = pa.array(list(values), pa.string())
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def _latent_table(catalog: Catalog, start: int, stop: int) -> pa.Table:
    return pa.table(
        {
            "item_idx": pa.array(np.arange(start, stop, dtype=np.int32)),
            "quality": pa.array(catalog.truth.quality[start:stop]),
            "latent": _list_array(catalog.truth.latent[start:stop]),
        },
        schema=S.ITEM_LATENT_SCHEMA,
    )


def _list_array(matrix: np.ndarray, lengths: np.ndarray | None = None) -> pa.Array:
    """Rows of ``matrix`` as a list array (the first ``lengths[i]`` values of row i if given)."""
    if lengths is None:
        lengths = np.full(len(matrix), matrix.shape[1])
        values = matrix.reshape(-1)
    else:
        values = matrix[np.arange(matrix.shape[1]) < lengths[:, None]]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


# ---- queries and relevance labels -----------------------------------------------------------


@dataclass(frozen=True)
class QuerySet:
    """Distinct queries, their hidden intent and their judged items."""

    text: list[str]
    kind: list[str]
    specs: QuerySpecs
    frequency: np.ndarray
    label_query: np.ndarray
    label_item: np.ndarray
    label_gain: np.ndarray

    @property
    def n(self) -> int:
        """Number of queries."""
        return len(self.text)


@dataclass(frozen=True)
class _Intent:
    leaf: int
    brand: int = -1
    colour: int = -1
    material: int = -1
    size: int = -1


_NOUN_TEMPLATES: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.15),
    (("colour",), 0.2),
    (("material",), 0.12),
    (("colour", "material"), 0.12),
    (("brand",), 0.15),
    (("brand", "colour"), 0.06),
    (("size",), 0.1),
    (("colour", "size"), 0.1),
)
_ATTRIBUTE_PAIRS = (
    ("colour", "material"),
    ("colour", "size"),
    ("material", "size"),
    ("brand", "colour"),
)
_WORD_ORDER = ("brand", "colour", "material", "noun", "size")


def build_queries(
    config: DataConfig, catalog: Catalog, index: CatalogIndex, progress: bool
) -> QuerySet:
    """Draw ``n_queries`` distinct queries and label ``labels_per_query`` items for each."""
    rng = _rng(config.seed, Stream.QUERIES)
    kinds = list(QUERY_KIND_SHARES)
    drawn = rng.choice(len(kinds), size=config.n_queries, p=list(QUERY_KIND_SHARES.values()))
    texts: list[str] = []
    seen: set[str] = set()
    intents: list[_Intent] = []
    anchors: list[int] = []
    for kind_at in tqdm(drawn, desc="queries", unit="query", disable=not progress):
        text, intent, anchor = _distinct_query(rng, kinds[kind_at], catalog, index, seen)
        seen.add(text)
        texts.append(text)
        intents.append(intent)
        anchors.append(anchor)
    specs = _specs(intents)
    label_rng = _rng(config.seed, Stream.QUERIES, 1)
    label_q, label_i, label_g = _label_all(
        label_rng, specs, anchors, catalog, index, config, progress
    )
    kind_names = [kinds[k] for k in drawn]
    volume = np.array([QUERY_KIND_VOLUME[k] for k in kind_names])
    ranks = _rng(config.seed, Stream.QUERIES, 2).permutation(config.n_queries)
    frequency = _zipf_weights(ranks, config.n_queries, QUERY_EXPONENT) * volume
    return QuerySet(
        text=texts,
        kind=kind_names,
        specs=specs,
        frequency=frequency / frequency.sum(),
        label_query=label_q,
        label_item=label_i,
        label_gain=label_g,
    )


def _distinct_query(
    rng: np.random.Generator, kind: str, catalog: Catalog, index: CatalogIndex, seen: set[str]
) -> tuple[str, _Intent, int]:
    for _ in range(_QUERY_TRIES):
        anchor = _anchor_item(rng, catalog, index)
        made = _query_for(rng, kind, catalog, anchor)
        if made is not None and made[0] not in seen:
            return made[0], made[1], anchor
    raise RuntimeError(
        f"could not draw a new distinct {kind!r} query after {_QUERY_TRIES} tries; "
        "n_queries is too large for this catalog"
    )


def _anchor_item(rng: np.random.Generator, catalog: Catalog, index: CatalogIndex) -> int:
    """The item a query is written about: half by popularity, half uniformly."""
    if rng.random() < 0.5:
        return int(index.popular(rng.random(1))[0])
    return int(rng.integers(catalog.n))


def _item_attributes(catalog: Catalog, item: int) -> dict[str, int]:
    t = catalog.truth
    found = {
        "brand": int(t.brand_idx[item]),
        "colour": int(t.colour[item]),
        "material": int(t.material[item]),
        "size": int(t.size[item]),
    }
    return {name: code for name, code in found.items() if code >= 0}


def _query_word(name: str, code: int) -> str:
    table = {
        "brand": vocab.BRANDS,
        "colour": vocab.COLOURS,
        "material": vocab.MATERIALS,
        "size": vocab.SIZES,
    }[name]
    return table[code].lower()


def _query_for(
    rng: np.random.Generator, kind: str, catalog: Catalog, item: int
) -> tuple[str, _Intent] | None:
    """A query of ``kind`` describing ``item`` (None when the item cannot support it)."""
    available = _item_attributes(catalog, item)
    leaf_at = int(catalog.truth.leaf_idx[item])
    leaf = vocab.LEAVES[leaf_at]
    if kind == "attribute":
        pairs = [p for p in _ATTRIBUTE_PAIRS if all(a in available for a in p)]
        if not pairs:
            return None
        stated = {a: available[a] for a in pairs[int(rng.integers(len(pairs)))]}
        text = " ".join(_query_word(a, stated[a]) for a in _WORD_ORDER if a in stated)
        return text, _Intent(leaf=-1, **stated)
    templates = [(t, w) for t, w in _NOUN_TEMPLATES if all(a in available for a in t)]
    weights = np.array([w for _, w in templates])
    template = templates[int(rng.choice(len(templates), p=weights / weights.sum()))][0]
    stated = {a: available[a] for a in template}
    if kind == "synonym":
        noun = leaf.synonyms[int(rng.integers(len(leaf.synonyms)))]
    elif rng.random() < 0.7:
        noun = leaf.nouns[0]
    else:
        noun = leaf.nouns[int(catalog.noun[item])]
    words = [
        noun if a == "noun" else _query_word(a, stated[a])
        for a in _WORD_ORDER
        if a == "noun" or a in stated
    ]
    text = " ".join(words)
    if kind == "misspelling":
        misspelt = _typo(rng, text)
        if misspelt is None:
            return None
        text = misspelt
    return text, _Intent(leaf=leaf_at, **stated)


def _typo(rng: np.random.Generator, text: str) -> str | None:
    """Swap, drop or double one letter of a word of at least 4 letters."""
    words = text.split(" ")
    eligible = [k for k, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not eligible:
        return None
    k = eligible[int(rng.integers(len(eligible)))]
    word = words[k]
    pos = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(3))
    if op == 0:
        new = word[:pos] + word[pos + 1] + word[pos] + word[pos + 2 :]
    elif op == 1:
        new = word[:pos] + word[pos + 1 :]
    else:
        new = word[:pos] + word[pos] + word[pos:]
    if new == word:
        return None
    words[k] = new
    return " ".join(words)


def _specs(intents: list[_Intent]) -> QuerySpecs:
    def column(name: str, dtype: type[np.generic]) -> np.ndarray:
        return np.array([getattr(x, name) for x in intents], dtype=dtype)

    return QuerySpecs(
        leaf_idx=column("leaf", np.int32),
        brand_idx=column("brand", np.int32),
        colour=column("colour", np.int16),
        material=column("material", np.int16),
        size=column("size", np.int16),
    )


def _label_all(
    rng: np.random.Generator,
    specs: QuerySpecs,
    anchors: list[int],
    catalog: Catalog,
    index: CatalogIndex,
    config: DataConfig,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query_id, item_idx, gain) of every judged pair, sorted by query then item."""
    per_query = min(config.labels_per_query, catalog.n)
    queries, items, gains = [], [], []
    bar = tqdm(anchors, desc="labels", unit="query", disable=not progress)
    for q, anchor in enumerate(bar):
        candidates = _label_candidates(
            rng, int(specs.leaf_idx[q]), anchor, catalog, index, per_query
        )
        gain = relevance_gain(specs, np.full(len(candidates), q), catalog.truth, candidates)
        chosen = _pick_labels(rng, candidates, gain, per_query)
        order = np.argsort(candidates[chosen])
        queries.append(np.full(len(chosen), q, np.int32))
        items.append(candidates[chosen][order].astype(np.int32))
        gains.append(gain[chosen][order])
    return np.concatenate(queries), np.concatenate(items), np.concatenate(gains)


def _label_candidates(
    rng: np.random.Generator,
    leaf: int,
    anchor: int,
    catalog: Catalog,
    index: CatalogIndex,
    per_query: int,
) -> np.ndarray:
    """Items worth judging: the query's leaf, its siblings and complements, plus random ones."""
    random_items = rng.integers(0, catalog.n, size=4 * per_query)
    if leaf < 0:
        extra = rng.integers(0, catalog.n, size=min(catalog.n, _ATTRIBUTE_CANDIDATES))
        return np.unique(np.concatenate([[anchor], random_items, extra]))
    siblings = np.flatnonzero(LEAF_TABLE.category == LEAF_TABLE.category[leaf])
    complements = np.flatnonzero(LEAF_TABLE.complement[leaf])
    parts = [np.array([anchor]), random_items]
    for group in ([leaf], siblings, complements):
        pool = np.concatenate([index.by_leaf.segment_values(int(x)) for x in group])
        if len(pool) > _LABEL_CANDIDATE_CAP:
            pool = rng.choice(pool, size=_LABEL_CANDIDATE_CAP, replace=False)
        parts.append(pool)
    return np.unique(np.concatenate(parts))


def _pick_labels(
    rng: np.random.Generator, candidates: np.ndarray, gain: np.ndarray, per_query: int
) -> np.ndarray:
    """Positions into ``candidates``: about LABEL_MIX of E/S/C/I, shortfalls passed on."""
    targets = np.floor(np.array(LABEL_MIX) * per_query).astype(int)
    targets[-1] += per_query - targets.sum()
    chosen: list[np.ndarray] = []
    carry = 0
    for grade, target in zip((3, 2, 1, 0), targets, strict=True):
        pool = np.flatnonzero(gain == grade)
        take = min(len(pool), int(target) + carry)
        carry = int(target) + carry - take
        chosen.append(rng.choice(pool, size=take, replace=False))
    picked = np.concatenate(chosen)
    if carry > 0:
        rest = np.setdiff1d(np.arange(len(candidates)), picked)
        picked = np.concatenate(
            [picked, rng.choice(rest, size=min(carry, len(rest)), replace=False)]
        )
    return picked


def write_queries(queries: QuerySet, out_dir: Path) -> None:
    """Write queries.parquet, query_labels.parquet and ground_truth/query_specs.parquet."""
    ids = pa.array(np.arange(queries.n, dtype=np.int32))
    table = pa.table(
        {
            "query_id": ids,
            "query": queries.text,
            "kind": queries.kind,
            "leaf_idx": pa.array(queries.specs.leaf_idx),
            "frequency": pa.array(queries.frequency.astype(np.float32)),
        },
        schema=S.QUERIES_SCHEMA,
    )
    write_table(out_dir / S.QUERIES_FILE, table, S.QUERIES_SCHEMA)
    letters = np.array(S.ESCI_LABELS)[3 - queries.label_gain.astype(np.int64)]
    labels = pa.table(
        {
            "query_id": pa.array(queries.label_query),
            "item_idx": pa.array(queries.label_item),
            "label": pa.array(letters.tolist(), pa.string()),
            "gain": pa.array(queries.label_gain.astype(np.int8)),
        },
        schema=S.QRELS_SCHEMA,
    )
    write_table(out_dir / S.QRELS_FILE, labels, S.QRELS_SCHEMA)
    spec = queries.specs
    specs = pa.table(
        {
            "query_id": ids,
            "leaf_idx": pa.array(spec.leaf_idx),
            "brand_idx": pa.array(spec.brand_idx),
            "colour": _lookup(vocab.COLOURS, spec.colour),
            "material": _lookup(vocab.MATERIALS, spec.material),
            "size": _lookup(vocab.SIZES, spec.size),
        },
        schema=S.QUERY_SPECS_SCHEMA,
    )
    write_table(out_dir / S.GROUND_TRUTH_DIR / S.QUERY_SPECS_FILE, specs, S.QUERY_SPECS_SCHEMA)


# ---- shoppers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShopperBlock:
    """A block of shoppers: public signup day and hidden preferences (local rows)."""

    start: int
    signup_day: np.ndarray
    n_preferred: np.ndarray
    truth: ShopperTruth

    @property
    def n(self) -> int:
        """Number of shoppers in the block."""
        return len(self.signup_day)


def shopper_block(
    config: DataConfig, params: WorldParams, block: int, start: int, stop: int
) -> ShopperBlock:
    """Draw shoppers [start, stop): preferred leaves, loyal brand, price band, taste."""
    rng = _rng(config.seed, Stream.SHOPPERS, block)
    m = stop - start
    existing = rng.random(m) < 0.75
    signup = np.where(
        existing, rng.integers(-720, 0, m), rng.integers(0, config.days - 1, m, endpoint=True)
    ).astype(np.int16)
    n_pref = rng.integers(2, MAX_PREFERRED_LEAVES, m, endpoint=True)
    leaves = _preferred_leaves(rng, params, m)
    slots = np.arange(MAX_PREFERRED_LEAVES) < n_pref[:, None]
    raw = np.where(slots, rng.gamma(1.0, 1.0, (m, MAX_PREFERRED_LEAVES)), 0.0)
    affinity = raw / raw.sum(axis=1, keepdims=True)
    order = np.argsort(-affinity, axis=1, kind="stable")
    affinity = np.take_along_axis(affinity, order, axis=1)
    leaves = np.where(slots, np.take_along_axis(leaves, order, axis=1), -1)
    home = leaves[np.arange(m), _pick_slot(affinity, rng.random(m))]
    brand = params.brands_by_department.sample(LEAF_TABLE.department[home], rng.random(m))
    centre = np.exp(rng.normal(-0.1, 0.35, m))
    half = rng.uniform(0.3, 0.8, m)
    mix = np.einsum("mk,mkd->md", affinity, params.leaf_centroids[np.maximum(leaves, 0)])
    own = rng.normal(0.0, 1.0 / np.sqrt(LATENT_DIM), (m, LATENT_DIM))
    truth = ShopperTruth(
        leaf_idx=leaves.astype(np.int32),
        leaf_affinity=affinity.astype(np.float32),
        brand_idx=brand.astype(np.int32),
        brand_loyalty=rng.beta(2.0, 3.0, m).astype(np.float32),
        price_low=(centre * np.exp(-half)).astype(np.float32),
        price_high=(centre * np.exp(half)).astype(np.float32),
        latent=(0.7 * mix + 0.7 * own).astype(np.float32),
    )
    return ShopperBlock(start=start, signup_day=signup, n_preferred=n_pref, truth=truth)


def _preferred_leaves(rng: np.random.Generator, params: WorldParams, m: int) -> np.ndarray:
    """(m, MAX_PREFERRED_LEAVES) distinct leaves: popular leaves and one home department."""
    n_leaves = len(params.leaf_weights)
    log_w = np.log(params.leaf_weights)
    first = np.argmax(log_w + rng.gumbel(size=(m, n_leaves)), axis=1)
    same_dept = LEAF_TABLE.department[None, :] == LEAF_TABLE.department[first][:, None]
    keys = log_w + 1.5 * same_dept + rng.gumbel(size=(m, n_leaves))
    keys[np.arange(m), first] = np.inf
    top = np.argsort(-keys, axis=1, kind="stable")[:, :MAX_PREFERRED_LEAVES]
    return top.astype(np.int32)


def _pick_slot(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row, a column drawn with probabilities ``weights`` (rows sum to 1)."""
    cum = np.cumsum(weights, axis=1)
    return np.minimum((u[:, None] >= cum).sum(axis=1), weights.shape[1] - 1)


def _shoppers_table(block: ShopperBlock) -> pa.Table:
    idx = np.arange(block.start, block.start + block.n)
    return pa.table(
        {
            "user_idx": pa.array(idx.astype(np.int32)),
            "user_id": [f"U{i:07d}" for i in idx],
            "signup_day": pa.array(block.signup_day),
        },
        schema=S.SHOPPERS_SCHEMA,
    )


def _preferences_table(block: ShopperBlock) -> pa.Table:
    t = block.truth
    return pa.table(
        {
            "user_idx": pa.array(np.arange(block.start, block.start + block.n, dtype=np.int32)),
            "leaf_idx": _list_array(t.leaf_idx, block.n_preferred),
            "leaf_affinity": _list_array(t.leaf_affinity, block.n_preferred),
            "brand_idx": pa.array(t.brand_idx),
            "brand_loyalty": pa.array(t.brand_loyalty),
            "price_low": pa.array(t.price_low),
            "price_high": pa.array(t.price_high),
            "latent": _list_array(t.latent),
        },
        schema=S.SHOPPER_PREFS_SCHEMA,
    )


# ---- sessions and the funnel ----------------------------------------------------------------


@dataclass(frozen=True)
class QueryIndex:
    """Lookups over the queries for drawing search sessions and their slates."""

    frequency_cum: np.ndarray
    by_leaf: Segmented
    """Queries about each leaf, weighted by frequency."""
    relevant: Segmented
    """E and S judged items of each query."""
    specs: QuerySpecs

    @classmethod
    def build(cls, queries: QuerySet) -> QueryIndex:
        """Index a query set."""
        leaf = queries.specs.leaf_idx
        has_leaf = np.flatnonzero(leaf >= 0)
        good = queries.label_gain >= 2
        return cls(
            frequency_cum=np.cumsum(queries.frequency),
            by_leaf=Segmented.build(
                leaf[has_leaf], has_leaf, queries.frequency[has_leaf], len(vocab.LEAVES)
            ),
            relevant=Segmented.build(
                queries.label_query[good],
                queries.label_item[good].astype(np.int64),
                np.ones(int(good.sum())),
                queries.n,
            ),
            specs=queries.specs,
        )

    def any_query(self, u: np.ndarray) -> np.ndarray:
        """Queries drawn by global frequency."""
        pos = np.searchsorted(self.frequency_cum, u * self.frequency_cum[-1], side="right")
        return np.minimum(pos, len(self.frequency_cum) - 1)


def session_block(
    config: DataConfig,
    shoppers: ShopperBlock,
    block: int,
    catalog: Catalog,
    index: CatalogIndex,
    queries: QueryIndex,
) -> dict[str, np.ndarray]:
    """Simulate every session of a block of shoppers: slates, utilities and funnel labels.

    Returns flat impression columns (session_id is local, numbered from 0 in shopper order).
    """
    rng = _rng(config.seed, Stream.SESSIONS, block)
    k = config.impressions_per_session
    n_sessions = rng.poisson(config.sessions_per_shopper, shoppers.n)
    owner = np.repeat(np.arange(shoppers.n), n_sessions)
    s = len(owner)
    first_day = np.clip(shoppers.signup_day.astype(np.int64), 0, config.days - 1)[owner]
    day = first_day + np.floor(rng.random(s) * (config.days - first_day)).astype(np.int64)
    ts = BASE_TS + day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, s)
    query = _session_queries(rng, shoppers, owner, queries, config.search_session_share)
    slate = _slates(rng, shoppers, owner, query, k, catalog, index, queries)
    user_rows = np.repeat(owner, k)
    items = slate.reshape(-1)
    q_rows = np.repeat(query, k)
    gain = np.full(len(items), NO_QUERY, np.int8)
    searched = q_rows >= 0
    gain[searched] = relevance_gain(queries.specs, q_rows[searched], catalog.truth, items[searched])
    utility = true_utility(shoppers.truth, catalog.truth, user_rows, items, gain)
    position = np.tile(np.arange(k, dtype=np.int16), s)
    label = _funnel(rng, utility, position)
    return {
        "session_id": np.repeat(np.arange(s, dtype=np.int64), k),
        "user_idx": (shoppers.start + user_rows).astype(np.int32),
        "ts": np.repeat(ts, k),
        "day": np.repeat(day, k).astype(np.int16),
        "query_id": q_rows.astype(np.int32),
        "item_idx": items.astype(np.int32),
        "position": position,
        "label": label,
        "utility": utility,
    }


def _session_queries(
    rng: np.random.Generator,
    shoppers: ShopperBlock,
    owner: np.ndarray,
    queries: QueryIndex,
    share: float,
) -> np.ndarray:
    """Query of each session (-1: recommendation); 60% from a preferred leaf's queries."""
    s = len(owner)
    search = rng.random(s) < share
    global_pick = queries.any_query(rng.random(s))
    aff = shoppers.truth.leaf_affinity[owner]
    leaf = shoppers.truth.leaf_idx[owner][np.arange(s), _pick_slot(aff, rng.random(s))]
    leaf_pick = queries.by_leaf.sample(leaf, rng.random(s))
    biased = (rng.random(s) < 0.6) & (leaf_pick >= 0)
    return np.where(search, np.where(biased, leaf_pick, global_pick), -1)


def _slates(
    rng: np.random.Generator,
    shoppers: ShopperBlock,
    owner: np.ndarray,
    query: np.ndarray,
    k: int,
    catalog: Catalog,
    index: CatalogIndex,
    queries: QueryIndex,
) -> np.ndarray:
    """(sessions, k) distinct items per session, in random order.

    Search: 60% judged E/S items of the query, 25% popular items of its leaf, 15% popular items.
    Recommendation: 75% popular items of the shopper's preferred leaves, 25% popular items.
    """
    s, m = len(owner), 2 * k + 4
    source = rng.random((s, m))
    popular = index.popular(rng.random((s, m)))
    rows_q = np.repeat(query, m).reshape(s, m)
    q_safe = np.maximum(rows_q, 0)
    judged = queries.relevant.sample(q_safe, rng.random((s, m)))
    q_leaf = queries.specs.leaf_idx[q_safe]
    aff = shoppers.truth.leaf_affinity[owner]
    slot = _pick_slot(np.repeat(aff, m, axis=0), rng.random(s * m)).reshape(s, m)
    pref_leaf = np.take_along_axis(shoppers.truth.leaf_idx[owner], slot, axis=1)
    leaf = np.where(rows_q >= 0, q_leaf, pref_leaf)
    in_leaf = index.by_leaf.sample(np.maximum(leaf, 0), rng.random((s, m)))
    in_leaf = np.where((leaf >= 0) & (in_leaf >= 0), in_leaf, popular)
    judged = np.where(judged >= 0, judged, in_leaf)
    search = np.where(source < 0.60, judged, np.where(source < 0.85, in_leaf, popular))
    recommend = np.where(source < 0.75, in_leaf, popular)
    candidates = np.where(rows_q >= 0, search, recommend)
    slate, n_unique = _first_unique(candidates, k)
    for row in np.flatnonzero(n_unique < k):
        slate[row] = _repair_slate(rng, slate[row], k, catalog.n)
    shuffle = np.argsort(rng.random((s, k)), axis=1)
    return np.take_along_axis(slate, shuffle, axis=1)


def _repair_slate(rng: np.random.Generator, row: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """Fill a slate that drew too few distinct items with random other items."""
    have = list(dict.fromkeys(row.tolist()))
    while len(have) < k:
        extra = rng.integers(0, n_items, size=2 * k).tolist()
        have = list(dict.fromkeys(have + extra))
    return np.array(have[:k], dtype=row.dtype)


def _funnel(rng: np.random.Generator, utility: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Furthest funnel step (0..3) of each impression, from noisy utility and position."""
    f = FUNNEL
    noisy = utility + rng.normal(0.0, f.noise_sd, len(utility))
    click_logit = noisy - f.position_decay * np.log1p(position) - f.click_offset
    click = rng.random(len(utility)) < _sigmoid(click_logit)
    cart = click & (rng.random(len(utility)) < _sigmoid(f.cart_scale * noisy - f.cart_offset))
    buy = cart & (rng.random(len(utility)) < _sigmoid(f.purchase_scale * noisy - f.purchase_offset))
    return (click.astype(np.int8) + cart + buy).astype(np.int8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ---- spooling and the time split ------------------------------------------------------------

_SPOOL_SCHEMA = pa.schema(
    [
        ("session_id", pa.int64()),
        ("user_idx", pa.int32()),
        ("ts", pa.int64()),
        ("day", pa.int16()),
        ("query_id", pa.int32()),
        ("item_idx", pa.int32()),
        ("position", pa.int16()),
        ("label", pa.int8()),
        ("utility", pa.float32()),
    ]
)


class DaySpool:
    """Impression chunks on temporary disk with one row group per day, merged day by day."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._files: list[tuple[pq.ParquetFile, dict[int, int]]] = []

    def add(self, columns: dict[str, np.ndarray]) -> None:
        """Spool one chunk of impressions."""
        order = np.lexsort(
            (columns["position"], columns["session_id"], columns["ts"], columns["day"])
        )
        table = pa.table({k: columns[k][order] for k in _SPOOL_SCHEMA.names}, schema=_SPOOL_SCHEMA)
        days = columns["day"][order]
        bounds = np.flatnonzero(np.diff(days)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(days)]])
        path = self._directory / f"chunk-{len(self._files):05d}.parquet"
        groups: dict[int, int] = {}
        with pq.ParquetWriter(path, _SPOOL_SCHEMA, compression="lz4") as writer:
            for start, stop in zip(starts, stops, strict=True):
                if stop > start:
                    writer.write_table(
                        table.slice(start, stop - start), row_group_size=stop - start
                    )
                    groups[int(days[start])] = len(groups)
        self._files.append((pq.ParquetFile(path), groups))

    def day(self, day: int) -> pa.Table:
        """Every spooled impression of ``day``, sorted by (ts, session_id, position)."""
        parts = [f.read_row_group(groups[day]) for f, groups in self._files if day in groups]
        if not parts:
            return _SPOOL_SCHEMA.empty_table()
        table = pa.concat_tables(parts)
        order = np.lexsort(
            (
                table.column("position").to_numpy(),
                table.column("session_id").to_numpy(),
                table.column("ts").to_numpy(),
            )
        )
        return table.take(pa.array(order))

    def close(self) -> None:
        """Release the open files."""
        for f, _ in self._files:
            f.close()
        self._files.clear()


@dataclass(frozen=True)
class _LogCounts:
    train_rows: int = 0
    test_rows: int = 0
    train_sessions: int = 0
    test_sessions: int = 0


def simulate_shoppers(
    config: DataConfig,
    params: WorldParams,
    catalog: Catalog,
    index: CatalogIndex,
    queries: QuerySet,
    out_dir: Path,
    progress: bool,
) -> _LogCounts:
    """Write shoppers, their hidden preferences and the train/test interaction logs."""
    query_index = QueryIndex.build(queries)
    gt = out_dir / S.GROUND_TRUTH_DIR
    bar = tqdm(total=config.n_shoppers, desc="sessions", unit="shopper", disable=not progress)
    with tempfile.TemporaryDirectory(prefix=".spool-", dir=out_dir) as tmp:
        spool = DaySpool(Path(tmp))
        try:
            with (
                open_writer(out_dir / S.SHOPPERS_FILE, S.SHOPPERS_SCHEMA) as shopper_writer,
                open_writer(gt / S.SHOPPER_PREFS_FILE, S.SHOPPER_PREFS_SCHEMA) as prefs_writer,
            ):
                next_session = 0
                for blocks in _shopper_chunks(config):
                    shoppers, prefs, impressions = [], [], []
                    for block, start, stop in blocks:
                        people = shopper_block(config, params, block, start, stop)
                        shoppers.append(_shoppers_table(people))
                        prefs.append(_preferences_table(people))
                        columns = session_block(config, people, block, catalog, index, query_index)
                        columns["session_id"] += next_session
                        next_session += int(
                            columns["session_id"].size // config.impressions_per_session
                        )
                        impressions.append(columns)
                        bar.update(stop - start)
                    shopper_writer.write_table(pa.concat_tables(shoppers))
                    prefs_writer.write_table(pa.concat_tables(prefs))
                    spool.add(
                        {
                            k: np.concatenate([c[k] for c in impressions])
                            for k in _SPOOL_SCHEMA.names
                        }
                    )
            bar.close()
            return _write_log(config, spool, out_dir, progress)
        finally:
            spool.close()


def _shopper_chunks(config: DataConfig) -> Iterator[list[tuple[int, int, int]]]:
    """Shopper blocks grouped into chunks of about ``chunk_items * ROWS_PER_ITEM_ROW`` rows."""
    per_shopper = max(1.0, config.sessions_per_shopper * config.impressions_per_session)
    shoppers = config.chunk_items * ROWS_PER_ITEM_ROW / per_shopper
    per_chunk = max(1, int(shoppers) // SHOPPER_BLOCK)
    blocks = list(_blocks(config.n_shoppers, SHOPPER_BLOCK))
    for first in range(0, len(blocks), per_chunk):
        yield blocks[first : first + per_chunk]


def _write_log(config: DataConfig, spool: DaySpool, out_dir: Path, progress: bool) -> _LogCounts:
    """Merge the spool day by day into the train and test files (+ hidden test utility)."""
    split = config.days - config.test_days
    rows = {"train": 0, "test": 0}
    sessions = {"train": 0, "test": 0}
    gt = out_dir / S.GROUND_TRUTH_DIR
    with (
        open_writer(out_dir / S.TRAIN_FILE, S.INTERACTIONS_SCHEMA) as train,
        open_writer(out_dir / S.TEST_FILE, S.INTERACTIONS_SCHEMA) as test,
        open_writer(gt / S.TEST_UTILITY_FILE, S.TEST_UTILITY_SCHEMA) as utility,
    ):
        for day in tqdm(range(config.days), desc="log", unit="day", disable=not progress):
            table = spool.day(day)
            if table.num_rows == 0:
                continue
            name = "train" if day < split else "test"
            (train if name == "train" else test).write_table(_public_log(table))
            if name == "test":
                utility.write_table(table.select(S.TEST_UTILITY_SCHEMA.names))
            rows[name] += table.num_rows
            sessions[name] += len(np.unique(table.column("session_id").to_numpy()))
    return _LogCounts(rows["train"], rows["test"], sessions["train"], sessions["test"])


def _public_log(table: pa.Table) -> pa.Table:
    ts = table.column("ts").cast(pa.timestamp("s"))
    public = table.select([n for n in S.INTERACTIONS_SCHEMA.names if n != "ts"])
    return public.add_column(2, "ts", ts).select(S.INTERACTIONS_SCHEMA.names)


# ---- entry point ----------------------------------------------------------------------------


def generate_world(config: DataConfig, out_dir: Path, progress: bool = True) -> WorldSummary:
    """Generate the synthetic world described by ``config`` into ``out_dir``.

    Writes every public file of :mod:`recsys.data.schema` into ``out_dir`` and the hidden
    ground truth into ``out_dir/ground_truth/``; existing files are overwritten. The same
    config (including ``seed``) always produces byte-identical files.
    """
    if config.impressions_per_session > config.n_items:
        raise ValueError(
            f"impressions_per_session ({config.impressions_per_session}) exceeds n_items "
            f"({config.n_items}): sessions show distinct items"
        )
    out_dir = Path(out_dir)
    (out_dir / S.GROUND_TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    params = world_params(config.seed)
    catalog = build_catalog(config, params, progress)
    write_catalog(config, catalog, out_dir, progress)
    index = CatalogIndex.build(catalog)
    queries = build_queries(config, catalog, index, progress)
    write_queries(queries, out_dir)
    counts = simulate_shoppers(config, params, catalog, index, queries, out_dir, progress)
    files = [*PUBLIC_FILES, *(f"{S.GROUND_TRUTH_DIR}/{name}" for name in HIDDEN_FILES)]
    return WorldSummary(
        out_dir=out_dir,
        n_items=catalog.n,
        n_shoppers=config.n_shoppers,
        n_queries=queries.n,
        n_labels=len(queries.label_item),
        n_train_rows=counts.train_rows,
        n_test_rows=counts.test_rows,
        n_train_sessions=counts.train_sessions,
        n_test_sessions=counts.test_sessions,
        files={name: out_dir / name for name in files},
    )
