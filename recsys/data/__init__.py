"""The e-commerce world: on-disk schema, synthetic generator, dataset loaders, typed readers.

Nothing here imports Ray.
"""

from recsys.data.esci import load_esci
from recsys.data.formats import FORMATS, DataFormatError, load_data
from recsys.data.generate import generate_world
from recsys.data.ground_truth import (
    ItemTruth,
    QuerySpecs,
    ShopperTruth,
    UtilityWeights,
    relevance_gain,
    true_utility,
)
from recsys.data.loaders import (
    WorldSummary,
    read_categories,
    read_ground_truth,
    read_interactions,
    read_items,
    read_qrels,
    read_queries,
    read_shoppers,
)

__all__ = [
    "FORMATS",
    "DataFormatError",
    "ItemTruth",
    "QuerySpecs",
    "ShopperTruth",
    "UtilityWeights",
    "WorldSummary",
    "generate_world",
    "load_data",
    "load_esci",
    "read_categories",
    "read_ground_truth",
    "read_interactions",
    "read_items",
    "read_qrels",
    "read_queries",
    "read_shoppers",
    "relevance_gain",
    "true_utility",
]
