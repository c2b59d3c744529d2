"""File names inside an artifact directory (the contract between build and serving)."""

from recsys.data import schema

DATA_DIR = "data"
ITEMS = f"{DATA_DIR}/{schema.ITEMS_FILE}"
SHOPPERS = f"{DATA_DIR}/{schema.SHOPPERS_FILE}"
CATEGORIES = f"{DATA_DIR}/{schema.CATEGORIES_FILE}"
ITEM_EMBEDDINGS = "item_embeddings.npy"  # float32 (n_items, 384), unit rows
QUERY_EMBEDDINGS = "query_embeddings.npy"  # float32 (n_queries, 384), the labelled queries
USER_HISTORY = "user_history.npy"  # float16 (n_users, 384), zero rows: no history
SHOPPER_PROFILES = "shopper_profiles.npz"  # per-shopper leaf/brand shares and price level
INDEX = "index.faiss"
LEXICAL = "lexical"  # bm25s index directory (recsys.index.lexical)
LEXICAL_META = f"{LEXICAL}/lexical.json"
QUERY_CATEGORIES = "query_categories.npz"  # query word -> leaf evidence (recsys.matching)
QUERY_SPLIT = "query_split.parquet"  # labelled queries' train/validation/test assignment
RANKER_WEIGHTS = "ranker.safetensors"
RANKER_META = "ranker.json"

SERVING_FILES = (
    ITEMS,
    SHOPPERS,
    ITEM_EMBEDDINGS,
    USER_HISTORY,
    SHOPPER_PROFILES,
    INDEX,
    RANKER_WEIGHTS,
    RANKER_META,
)

SERVING_EXTRA = (QUERY_CATEGORIES,)
"""Files the serving stages open when the artifact has them (query categoriser)."""
SERVING_DIRS = (LEXICAL,)
"""Directories the serving stages open whole when the artifact has them (lexical index)."""


def is_serving_file(name: str) -> bool:
    """Whether a replica needs ``name`` to serve (remote artifacts fetch only these up front;
    build-time and evaluation files -- interactions, ground truth, labelled query vectors,
    the query split -- stay remote until something asks for them)."""
    if name in SERVING_FILES or name in SERVING_EXTRA:
        return True
    return any(name.startswith(f"{d}/") for d in SERVING_DIRS)
