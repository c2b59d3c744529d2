"""The on-disk schema of the e-commerce world (parquet through pyarrow).

A data directory written by :func:`recsys.data.generate.generate_world` (or by the ESCI loader)
holds the public files below; ``ground_truth/`` holds what the generator knows and a model must
not see (evaluation only). Every file is keyed by dense integer indexes (``item_idx``,
``user_idx``, ``query_id``) with string ids beside them for the API.
"""

from __future__ import annotations

import pyarrow as pa

# ---- public files ---------------------------------------------------------------------------

ITEMS_FILE = "items.parquet"
SHOPPERS_FILE = "shoppers.parquet"
TRAIN_FILE = "interactions_train.parquet"
TEST_FILE = "interactions_test.parquet"
QUERIES_FILE = "queries.parquet"
QRELS_FILE = "query_labels.parquet"
CATEGORIES_FILE = "categories.parquet"

# ---- hidden ground truth (ground_truth/ subfolder) ------------------------------------------

GROUND_TRUTH_DIR = "ground_truth"
SHOPPER_PREFS_FILE = "shopper_preferences.parquet"
ITEM_LATENT_FILE = "item_latent.parquet"
TEST_UTILITY_FILE = "test_utility.parquet"
QUERY_SPECS_FILE = "query_specs.parquet"

ITEMS_SCHEMA = pa.schema(
    [
        ("item_idx", pa.int32()),  # dense 0..n-1, equals the row number
        ("item_id", pa.string()),  # public id, e.g. "I0000042"
        ("title", pa.string()),
        ("description", pa.string()),
        ("category_l1", pa.string()),  # department, e.g. "Home & Kitchen"
        ("category_l2", pa.string()),  # e.g. "Furniture"
        ("category_l3", pa.string()),  # leaf, e.g. "Sofas"
        ("leaf_idx", pa.int32()),  # dense index of the leaf category
        ("brand", pa.string()),
        ("brand_idx", pa.int32()),  # dense index of the brand
        ("colour", pa.string()),  # nullable
        ("material", pa.string()),  # nullable
        ("size", pa.string()),  # nullable
        ("price", pa.float32()),
        ("rating", pa.float32()),  # 1.0 .. 5.0
        ("review_count", pa.int32()),
        ("popularity", pa.float32()),  # Zipf-like weight, sums to 1 over the catalog
        # every attribute as "key:value|key:value" (lower-case keys; colour/material/size above
        # repeat three of them as columns); nullable. Lexical search and the ranker's
        # attribute-match features read it, so catalogs with other attributes work the same.
        ("attributes", pa.string()),
    ]
)

CATEGORIES_SCHEMA = pa.schema(
    [
        ("leaf_idx", pa.int32()),
        ("category_l1", pa.string()),
        ("category_l2", pa.string()),
        ("category_l3", pa.string()),
    ]
)

SHOPPERS_SCHEMA = pa.schema(
    [
        ("user_idx", pa.int32()),  # dense 0..m-1, equals the row number
        ("user_id", pa.string()),  # public id, e.g. "U0000042"
        ("signup_day", pa.int16()),
    ]
)

# One row per impression: an item shown to a shopper in a session, with the furthest funnel
# step it reached. Sessions are whole slates: every impression of a session shares session_id,
# user_idx, ts and query_id.
INTERACTIONS_SCHEMA = pa.schema(
    [
        ("session_id", pa.int64()),
        ("user_idx", pa.int32()),
        ("ts", pa.timestamp("s")),
        ("day", pa.int16()),  # days since the start of the log
        ("query_id", pa.int32()),  # -1 for a recommendation (no query) session
        ("item_idx", pa.int32()),
        ("position", pa.int16()),  # slot in the slate, 0-based
        ("label", pa.int8()),  # 0 impression, 1 click, 2 add-to-cart, 3 purchase
    ]
)

QUERY_KINDS = ("exact", "misspelling", "synonym", "attribute")

QUERIES_SCHEMA = pa.schema(
    [
        ("query_id", pa.int32()),
        ("query", pa.string()),
        ("kind", pa.string()),  # one of QUERY_KINDS
        ("leaf_idx", pa.int32()),  # the leaf category the query is about (-1: unknown)
        ("frequency", pa.float32()),  # how often shoppers issue it (long tail), sums to 1
    ]
)

# Graded relevance in the Shopping Queries (ESCI) scheme.
ESCI_LABELS = ("E", "S", "C", "I")  # exact, substitute, complement, irrelevant
ESCI_GAIN = {"E": 3, "S": 2, "C": 1, "I": 0}

QRELS_SCHEMA = pa.schema(
    [
        ("query_id", pa.int32()),
        ("item_idx", pa.int32()),
        ("label", pa.string()),  # one of ESCI_LABELS
        ("gain", pa.int8()),  # ESCI_GAIN[label]
    ]
)

SHOPPER_PREFS_SCHEMA = pa.schema(
    [
        ("user_idx", pa.int32()),
        ("leaf_idx", pa.list_(pa.int32())),  # preferred leaves
        ("leaf_affinity", pa.list_(pa.float32())),  # their weights, sum to 1
        ("brand_idx", pa.int32()),  # the brand the shopper is loyal to
        ("brand_loyalty", pa.float32()),  # 0..1
        ("price_low", pa.float32()),  # comfortable price band
        ("price_high", pa.float32()),
        ("latent", pa.list_(pa.float32())),  # taste vector, dot with item latent
    ]
)

ITEM_LATENT_SCHEMA = pa.schema(
    [
        ("item_idx", pa.int32()),
        ("quality", pa.float32()),  # hidden quality, drives rating and utility
        ("latent", pa.list_(pa.float32())),
    ]
)

# Hidden utility of every test impression (same row order as interactions_test.parquet).
TEST_UTILITY_SCHEMA = pa.schema(
    [
        ("session_id", pa.int64()),
        ("item_idx", pa.int32()),
        ("utility", pa.float32()),
    ]
)

# The hidden intent of each query (row order = query_id): what an exact match must be, so the
# relevance of *any* item can be recomputed (recsys.data.ground_truth.relevance_gain), not only
# of the judged ones. leaf_idx -1: attribute-only query; brand_idx -1 / null: not stated.
QUERY_SPECS_SCHEMA = pa.schema(
    [
        ("query_id", pa.int32()),
        ("leaf_idx", pa.int32()),
        ("brand_idx", pa.int32()),
        ("colour", pa.string()),
        ("material", pa.string()),
        ("size", pa.string()),
    ]
)
