"""Load the Wayfair ANnotation DataSet (WANDS) into the data-directory schema.

The input is WANDS's directory of tab-separated files (a header row each):

* ``product.csv``: ``product_id``, ``product_name`` (required); ``product_class``,
  ``category_hierarchy`` ("Furniture / Living Room Furniture / Sofas"), ``product_description``,
  ``product_features`` ("key : value|key:value|..."), ``rating_count``, ``average_rating``,
  ``review_count`` (may be empty).
* ``query.csv`` (optional): ``query_id``, ``query`` (``query_class`` is not used).
* ``label.csv`` (optional, needs ``query.csv``): ``query_id``, ``product_id``, ``label`` in
  Exact / Partial / Irrelevant (``id`` is not used).

Mapping onto :mod:`recsys.data.schema` (rules shared with the other loaders are in
:mod:`recsys.data.conversion`):

* items: ``item_id`` = product_id, ``title`` = product_name, ``description`` =
  product_description. The category path is ``category_hierarchy`` (split on " / "), or the
  one-level path ``product_class`` when the hierarchy is empty. WANDS has no brands (every
  brand is "unknown") and no prices (``price`` 0, meaning unknown); ``rating`` =
  average_rating, ``review_count`` = review_count (empty = 0).
* ``attributes`` from ``product_features``: keys lower-cased, pairs with an empty key or
  value dropped, and two kinds of noise left out: values longer than
  :data:`MAX_ATTRIBUTE_CHARS` characters (care instructions, compliance notes) and the
  value "no" (WANDS lists dozens of features a product *lacks*, "drawersincluded : no").
  ``colour`` / ``material`` / ``size`` come from keys such as ``color``, ``primarycolor``,
  ``maincolor`` / ``material``, ``primarymaterial``, ``mainmaterial`` / ``size``,
  ``overallsize`` (:data:`recsys.data.conversion.COLOUR_KEYS` and the like), else null.
* ``popularity`` from ``rating_count`` (else ``review_count``, else uniform), normalised with
  a 1% floor so every item is > 0.
* queries: ``query_id`` dense in file order, kind "unknown", ``leaf_idx`` -1, uniform
  ``frequency``. Labels: Exact -> E (gain 3), Partial -> S (2), Irrelevant -> I (0); the first
  label of a (query, product) pair wins.
* WANDS has no behaviour log: ``shoppers.parquet`` and both interaction files are empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from recsys.data import schema as S
from recsys.data.conversion import (
    CatalogRows,
    DataFormatError,
    EventRows,
    SourceTable,
    attribute_pairs,
    build_log,
    category_path,
    items_tables,
    labels_table,
    queries_table,
    read_source,
    write_world,
)
from recsys.data.loaders import WorldSummary

PRODUCT_FILE = "product.csv"
QUERY_FILE = "query.csv"
LABEL_FILE = "label.csv"
LABELS = {"exact": "E", "partial": "S", "irrelevant": "I"}
"""WANDS label (any case) -> ESCI letter."""
MAX_ATTRIBUTE_CHARS = 40
"""Feature values longer than this are left out of ``attributes``."""
ABSENT_VALUES = frozenset({"no"})
"""Feature values (lower case) saying a product lacks the feature: left out."""


def load_wands(source: Path, out_dir: Path, progress: bool = True) -> WorldSummary:
    """Convert the WANDS directory ``source`` into a data directory at ``out_dir``.

    Everything is read and checked before anything is written. Writes in place;
    :func:`recsys.data.formats.load_data` wraps this so a failure leaves nothing at
    ``out_dir``. Raises :class:`DataFormatError` for a bad input file.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataFormatError(source, f"expected a WANDS directory holding {PRODUCT_FILE}")
    products = read_source(source / PRODUCT_FILE, sep="\t")
    rows = _catalog(products, progress)
    item_index = {str(item_id): i for i, item_id in enumerate(rows.item_id)}
    texts: list[str] = []
    labels = S.QRELS_SCHEMA.empty_table()
    if (source / QUERY_FILE).is_file():
        queries = read_source(source / QUERY_FILE, sep="\t")
        queries.require("query_id", "query")
        query_index = queries.unique_ids("query_id")
        texts = queries.ids("query").tolist()
        if (source / LABEL_FILE).is_file():
            labels = _labels(read_source(source / LABEL_FILE, sep="\t"), query_index, item_index)
    elif (source / LABEL_FILE).is_file():
        raise DataFormatError(source / LABEL_FILE, f"labels need {QUERY_FILE} beside them")
    popularity = products.numbers("rating_count", minimum=0)
    if popularity.sum() <= 0:
        popularity = rows.review_count.astype(np.float64)
    items, categories = items_tables(rows, popularity)
    return write_world(
        Path(out_dir),
        "wands",
        items,
        categories,
        queries_table(texts, np.ones(len(texts))),
        labels,
        build_log(EventRows.empty(), 0.0, source),
    )


def feature_pairs(text: str) -> list[tuple[str, str]]:
    """``product_features`` as cleaned (key, value) pairs (see the module docstring)."""
    pairs = []
    for entry in text.split("|"):
        key, _, value = entry.partition(":")
        value = value.strip()
        if len(value) <= MAX_ATTRIBUTE_CHARS and value.lower() not in ABSENT_VALUES:
            pairs.append((key, value))
    return attribute_pairs(pairs)


def _catalog(products: SourceTable, progress: bool) -> CatalogRows:
    products.require("product_id", "product_name")
    if len(products) == 0:
        raise DataFormatError(products.path, "no products: the file has a header but no rows")
    products.unique_ids("product_id")
    features = products.text("product_features").tolist()
    hierarchy = products.text("category_hierarchy").tolist()
    product_class = products.text("product_class").tolist()
    bar = tqdm(features, desc="wands products", unit="product", disable=not progress)
    return CatalogRows(
        item_id=products.ids("product_id"),
        title=products.text("product_name"),
        description=products.text("product_description"),
        category=[
            category_path(path) or ([cls] if cls else [])
            for path, cls in zip(hierarchy, product_class, strict=True)
        ],
        brand=np.full(len(products), "", dtype=object),
        attributes=[feature_pairs(text) for text in bar],
        price=np.zeros(len(products)),
        rating=products.numbers("average_rating", minimum=0),
        review_count=products.numbers("review_count", integer=True, minimum=0),
    )


def _labels(
    labels: SourceTable, query_index: dict[str, int], item_index: dict[str, int]
) -> pa.Table:
    labels.require("query_id", "product_id", "label")
    values = labels.text("label")
    letters = np.array([LABELS.get(v.lower(), "") for v in values], dtype=object)
    if (letters == "").any():
        row = int(np.argmax(letters == ""))
        raise labels.error(
            "label", row, f"unknown label {values[row]!r}; expected Exact, Partial or Irrelevant"
        )
    return labels_table(
        labels.lookup("query_id", query_index, "query_id"),
        labels.lookup("product_id", item_index, "product_id"),
        letters,
    )
