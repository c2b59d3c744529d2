"""The hidden ground truth of the synthetic world: relevance rule and shopper utility.

The generator draws every click, add-to-cart and purchase from :func:`true_utility`, and labels
every judged (query, item) pair with :func:`relevance_gain`; evaluation code can call the same
functions on the files in ``ground_truth/`` (see :meth:`ItemTruth.from_tables`,
:meth:`ShopperTruth.from_table`, :meth:`QuerySpecs.from_table`) to score any slate, not only
the logged one.

Utility of showing item ``i`` to shopper ``s`` (with query ``q`` in a search session)::

    u = w.leaf      * affinity of s for the leaf of i         (0 outside the preferred leaves)
      + w.brand     * loyalty of s     if brand(i) is the loyal brand of s
      + w.price     * price fit        (1 inside s's price band, decaying outside)
      + w.latent    * <taste(s), latent(i)>
      + w.quality   * quality(i)
      + w.relevance * (gain(q, i) - RELEVANCE_CENTRE)          (search sessions only)

Prices enter relative to the leaf's typical price (``price / leaf price_centre``) so that one
price band describes a shopper across categories (a budget shopper buys cheap sofas *and*
cheap headphones). Sampling noise is added by the generator, never here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data import vocabulary as vocab

LATENT_DIM = 16
"""Dimension of the hidden taste / item latent vectors."""
MAX_PREFERRED_LEAVES = 5
"""Upper bound on a shopper's preferred leaves (rows of ShopperTruth are padded to it)."""
RELEVANCE_CENTRE = 1.5
"""Gain subtracted before weighting: exact/substitute items gain utility, complement and
irrelevant items lose it, so search and recommendation utilities sit on one scale."""
PRICE_DECAY = 0.5
"""Log-price distance outside the band at which the price fit falls to 1/e."""
NO_QUERY = -1
"""``query_gain`` value of an impression without a query (a recommendation session)."""

IntArray = np.ndarray
FloatArray = np.ndarray


@dataclass(frozen=True)
class UtilityWeights:
    """Weights of the terms of :func:`true_utility`."""

    leaf: float = 3.0
    brand: float = 1.2
    price: float = 0.8
    latent: float = 2.5
    quality: float = 0.4
    relevance: float = 0.9


DEFAULT_WEIGHTS = UtilityWeights()


@dataclass(frozen=True)
class LeafTable:
    """Relations between leaf categories, as arrays indexed by ``leaf_idx``."""

    category: IntArray
    """Level-2 category id of each leaf (leaves sharing it are siblings)."""
    department: IntArray
    """Department index of each leaf."""
    price_centre: FloatArray
    """Typical price of each leaf."""
    complement: np.ndarray
    """``complement[a, b]``: leaf b is bought together with leaf a."""

    @classmethod
    def from_vocabulary(cls) -> LeafTable:
        """Build the table from :mod:`recsys.data.vocabulary`."""
        n = len(vocab.LEAVES)
        categories = {name: i for i, name in enumerate(vocab.CATEGORY_NAMES)}
        departments = {name: i for i, name in enumerate(vocab.DEPARTMENT_NAMES)}
        complement = np.zeros((n, n), dtype=bool)
        for i, leaf in enumerate(vocab.LEAVES):
            for other in leaf.complements:
                complement[i, vocab.LEAF_BY_NAME[other]] = True
        return cls(
            category=np.array(
                [categories[f"{x.department} > {x.category}"] for x in vocab.LEAVES], np.int32
            ),
            department=np.array([departments[x.department] for x in vocab.LEAVES], np.int32),
            price_centre=np.array([x.price_centre for x in vocab.LEAVES], np.float32),
            complement=complement,
        )


LEAF_TABLE = LeafTable.from_vocabulary()


@dataclass(frozen=True)
class ItemTruth:
    """What the utility and the relevance rule need per item (row = ``item_idx``).

    Attribute codes index :data:`vocabulary.COLOURS` / ``MATERIALS`` / ``SIZES``; -1 means the
    item has no such attribute.
    """

    leaf_idx: IntArray
    brand_idx: IntArray
    colour: IntArray
    material: IntArray
    size: IntArray
    price: FloatArray
    quality: FloatArray
    latent: FloatArray
    """(n_items, LATENT_DIM) float32."""

    @classmethod
    def from_tables(cls, items: pa.Table, latent: pa.Table) -> ItemTruth:
        """Build from ``items.parquet`` and ``ground_truth/item_latent.parquet`` tables."""
        if items.num_rows != latent.num_rows:
            raise ValueError(f"items has {items.num_rows} rows but latent {latent.num_rows}")
        return cls(
            leaf_idx=_int_column(items, "leaf_idx"),
            brand_idx=_int_column(items, "brand_idx"),
            colour=_codes(items.column("colour"), vocab.COLOURS),
            material=_codes(items.column("material"), vocab.MATERIALS),
            size=_codes(items.column("size"), vocab.SIZES),
            price=items.column("price").to_numpy().astype(np.float32),
            quality=latent.column("quality").to_numpy().astype(np.float32),
            latent=_fixed_lists(latent.column("latent"), LATENT_DIM),
        )


@dataclass(frozen=True)
class ShopperTruth:
    """Hidden preferences per shopper (row = position in the arrays, usually ``user_idx``)."""

    leaf_idx: IntArray
    """(n, MAX_PREFERRED_LEAVES) int32, padded with -1."""
    leaf_affinity: FloatArray
    """(n, MAX_PREFERRED_LEAVES) float32, 0 on padding; each row sums to 1."""
    brand_idx: IntArray
    brand_loyalty: FloatArray
    price_low: FloatArray
    """Lower edge of the comfortable band, relative to the leaf's typical price."""
    price_high: FloatArray
    latent: FloatArray
    """(n, LATENT_DIM) float32 taste vectors."""

    @classmethod
    def from_table(cls, prefs: pa.Table) -> ShopperTruth:
        """Build from a ``ground_truth/shopper_preferences.parquet`` table."""
        return cls(
            leaf_idx=_padded_lists(prefs.column("leaf_idx"), -1, np.int32),
            leaf_affinity=_padded_lists(prefs.column("leaf_affinity"), 0.0, np.float32),
            brand_idx=_int_column(prefs, "brand_idx"),
            brand_loyalty=prefs.column("brand_loyalty").to_numpy().astype(np.float32),
            price_low=prefs.column("price_low").to_numpy().astype(np.float32),
            price_high=prefs.column("price_high").to_numpy().astype(np.float32),
            latent=_fixed_lists(prefs.column("latent"), LATENT_DIM),
        )


@dataclass(frozen=True)
class QuerySpecs:
    """The hidden intent of each query (row = ``query_id``): what an exact match must be.

    ``leaf_idx`` -1 marks an attribute-only query (no product noun); ``brand_idx`` and the
    attribute codes are -1 where the query states nothing about them.
    """

    leaf_idx: IntArray
    brand_idx: IntArray
    colour: IntArray
    material: IntArray
    size: IntArray

    @classmethod
    def from_table(cls, specs: pa.Table) -> QuerySpecs:
        """Build from a ``ground_truth/query_specs.parquet`` table (rows in query_id order)."""
        return cls(
            leaf_idx=_int_column(specs, "leaf_idx"),
            brand_idx=_int_column(specs, "brand_idx"),
            colour=_codes(specs.column("colour"), vocab.COLOURS),
            material=_codes(specs.column("material"), vocab.MATERIALS),
            size=_codes(specs.column("size"), vocab.SIZES),
        )


def relevance_gain(
    queries: QuerySpecs, query_rows: IntArray, items: ItemTruth, item_rows: IntArray
) -> np.ndarray:
    """ESCI gain (3 E, 2 S, 1 C, 0 I) of each (query, item) pair, vectorised.

    For a query naming a product (``leaf_idx >= 0``): E = same leaf and every stated
    attribute/brand matches; S = same leaf with a differing attribute, or a sibling leaf (same
    level-2 category) that is not a complement; C = a complementary leaf (a phone case for
    "smartphone", though both sit under Phones & Accessories); I = anything else. For an
    attribute-only query: E = every stated attribute matches (any leaf), S = at least one
    matches, I = else.
    """
    q_leaf = queries.leaf_idx[query_rows]
    i_leaf = items.leaf_idx[item_rows]
    stated = 0
    matched = 0
    for q_attr, i_attr in (
        (queries.brand_idx, items.brand_idx),
        (queries.colour, items.colour),
        (queries.material, items.material),
        (queries.size, items.size),
    ):
        q_value = q_attr[query_rows]
        is_stated = q_value >= 0
        stated = stated + is_stated
        matched = matched + (is_stated & (i_attr[item_rows] == q_value))
    all_match = matched == stated
    has_noun = q_leaf >= 0
    leaf_q = np.where(has_noun, q_leaf, 0)
    same_leaf = has_noun & (i_leaf == q_leaf)
    sibling = has_noun & (LEAF_TABLE.category[i_leaf] == LEAF_TABLE.category[leaf_q])
    complement = has_noun & LEAF_TABLE.complement[leaf_q, i_leaf]
    exact = np.where(has_noun, same_leaf & all_match, all_match)
    substitute = ~exact & np.where(has_noun, same_leaf | (sibling & ~complement), matched > 0)
    comp = ~exact & ~same_leaf & complement
    gain = 3 * exact + 2 * substitute + 1 * comp
    return gain.astype(np.int8)


def price_fit(relative_price: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    """1 inside [low, high], decaying with the log-distance to the band outside it."""
    log_p = np.log(np.maximum(relative_price, 1e-6))
    below = np.log(np.maximum(low, 1e-6)) - log_p
    above = log_p - np.log(np.maximum(high, 1e-6))
    distance = np.maximum(np.maximum(below, above), 0.0)
    return np.exp(-distance / PRICE_DECAY).astype(np.float32)


def true_utility(
    shoppers: ShopperTruth,
    items: ItemTruth,
    user_rows: IntArray,
    item_rows: IntArray,
    query_gain: IntArray | None = None,
    weights: UtilityWeights = DEFAULT_WEIGHTS,
) -> np.ndarray:
    """Noiseless utility of each impression (``user_rows[k]`` shown ``item_rows[k]``).

    ``user_rows`` index the rows of ``shoppers`` and ``item_rows`` those of ``items``.
    ``query_gain`` is the ESCI gain of the item for the session's query (see
    :func:`relevance_gain`), :data:`NO_QUERY` (-1) for impressions without a query; None means
    no impression has a query. Returns float32 of the same length.
    """
    user_rows = np.asarray(user_rows)
    item_rows = np.asarray(item_rows)
    leaf = items.leaf_idx[item_rows]
    preferred = shoppers.leaf_idx[user_rows] == leaf[:, None]
    affinity = (preferred * shoppers.leaf_affinity[user_rows]).sum(axis=1)
    loyal = items.brand_idx[item_rows] == shoppers.brand_idx[user_rows]
    relative_price = items.price[item_rows] / LEAF_TABLE.price_centre[leaf]
    fit = price_fit(relative_price, shoppers.price_low[user_rows], shoppers.price_high[user_rows])
    taste = np.einsum("ij,ij->i", shoppers.latent[user_rows], items.latent[item_rows])
    utility = (
        weights.leaf * affinity
        + weights.brand * loyal * shoppers.brand_loyalty[user_rows]
        + weights.price * fit
        + weights.latent * taste
        + weights.quality * items.quality[item_rows]
    )
    if query_gain is not None:
        gain = np.asarray(query_gain)
        relevance = np.where(gain == NO_QUERY, 0.0, gain - RELEVANCE_CENTRE)
        utility = utility + weights.relevance * relevance
    return utility.astype(np.float32)


# ---- arrow -> numpy helpers -----------------------------------------------------------------


def _int_column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.int32)


def _codes(column: pa.ChunkedArray, values: tuple[str, ...]) -> np.ndarray:
    """Position of each string in ``values``; -1 for nulls and unknown strings."""
    index = pc.index_in(column, value_set=pa.array(values, pa.string()))
    return pc.fill_null(index, -1).to_numpy().astype(np.int16)


def _fixed_lists(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A list<float> column whose lists all have ``width`` values, as an (n, width) array."""
    flat = pc.list_flatten(column).to_numpy().astype(np.float32)
    if flat.size != len(column) * width:
        raise ValueError(f"expected {width} values per row in {column.type} column")
    return flat.reshape(len(column), width)


def _padded_lists(column: pa.ChunkedArray, fill: float, dtype: type[np.generic]) -> np.ndarray:
    """A list column with at most MAX_PREFERRED_LEAVES values per row, padded with ``fill``."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if lengths.size and lengths.max() > MAX_PREFERRED_LEAVES:
        raise ValueError(f"rows hold more than {MAX_PREFERRED_LEAVES} preferred leaves")
    flat = pc.list_flatten(column).to_numpy().astype(dtype)
    out = np.full((len(column), MAX_PREFERRED_LEAVES), fill, dtype=dtype)
    rows = np.repeat(np.arange(len(column)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(flat.size) - np.repeat(starts, lengths)
    out[rows, cols] = flat
    return out
