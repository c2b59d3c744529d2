"""Lexical index (typo tolerance, filters, normalisation), fusion and retrieval modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import IndexConfig, RetrievalConfig
from recsys.index.build import build_index
from recsys.index.lexical import (
    LexicalIndex,
    SpellingCorrector,
    analyze,
    item_documents,
    stem,
    top_positive,
    within_one_edit,
)
from recsys.retrieval import ItemAttributes, Retriever, reciprocal_rank_fusion
from recsys.types import ItemFilter, RetrievalRequest

TITLES = [
    "Velvet Sofa - Grey",
    "Leather Sofa - Brown",
    "Oak Dining Table",
    "Walnut Coffee Table",
    "Cotton Bath Towel - Grey",
    "Stainless Steel Kettle",
]
BRANDS = ["Nordby", "Nordby", "Eiken", "Eiken", "Softa", "Brewmax"]
ATTRS = ["colour:Grey|material:Velvet", "colour:Brown", None, None, "colour:Grey", None]
CATEGORIES = [
    "Home Furniture Sofas",
    "Home Furniture Sofas",
    "Home Furniture Tables",
    "Home Furniture Tables",
    "Home Bath Towels",
    "Home Kitchen Kettles",
]


@pytest.fixture(scope="module")
def lexical() -> LexicalIndex:
    return LexicalIndex.build(item_documents(TITLES, BRANDS, ATTRS, CATEGORIES))


def test_analysis_stems_plurals_and_drops_stopwords() -> None:
    assert analyze("Sofas and Tables with boxes") == ["sofa", "table", "box"]
    assert stem("accessories") == "accessory" and stem("glass") == "glass"


@pytest.mark.parametrize(
    ("a", "b", "close"),
    [
        ("sofa", "sfoa", True),  # adjacent swap
        ("sofa", "sofas", True),  # insertion
        ("table", "tble", True),  # deletion
        ("table", "tabme", True),  # substitution
        ("table", "tbale", True),
        ("table", "tlbae", False),
        ("kettle", "ketle", True),
        ("kettle", "kttlee", False),
    ],
)
def test_one_edit_distance(a: str, b: str, close: bool) -> None:
    assert within_one_edit(a, b) is close
    assert within_one_edit(b, a) is close


def test_corrector_prefers_the_more_frequent_neighbour() -> None:
    corrector = SpellingCorrector(["cart", "card", "chair"], [10, 3, 5])
    assert corrector.correct("carx") == "cart"
    assert corrector.correct("chiar") == "chair"
    assert corrector.correct("zzzz") is None
    assert corrector.correct("car") is None  # too short to guess


def test_misspelt_query_finds_what_the_right_spelling_finds(lexical: LexicalIndex) -> None:
    right, _, _ = lexical.search("velvet sofa", 3)
    wrong, _, _ = lexical.search("velvte sofsa", 3)
    assert right[0] == 0 and list(wrong) == list(right)
    assert lexical.query_words("velvte sofsa") == ["velvet", "sofa"]


def test_brand_attribute_and_category_fields_are_searchable(lexical: LexicalIndex) -> None:
    assert set(lexical.search("nordby", 5)[0]) == {0, 1}
    assert set(lexical.search("towels", 5)[0]) == {4}  # only in the category path
    assert set(lexical.search("grey", 5)[0]) == {0, 4}


def test_filter_mask_keeps_only_matching_items(lexical: LexicalIndex) -> None:
    mask = np.array([False, True, True, True, True, True])
    ids, _, _ = lexical.search("sofa", 5, mask)
    assert list(ids) == [1]


def test_scores_are_normalisable_by_the_query_ceiling(lexical: LexicalIndex) -> None:
    words = lexical.query_words("grey velvet sofa")
    scores = lexical.scores(words)
    ceiling = lexical.ceiling(words)
    assert 0 < scores.max() <= ceiling + 1e-5
    assert np.argmax(scores) == 0


def test_save_and_load_give_the_same_answers(lexical: LexicalIndex, tmp_path: Path) -> None:
    lexical.save(tmp_path / "lex")
    loaded = LexicalIndex.load(tmp_path / "lex")
    for query in ("oak table", "kettel", "grey"):
        a, sa, _ = lexical.search(query, 4)
        b, sb, _ = loaded.search(query, 4)
        assert list(a) == list(b) and np.allclose(sa, sb)
    with pytest.raises(FileNotFoundError, match="lexical"):
        LexicalIndex.load(tmp_path)


def test_top_positive_skips_zero_scores_and_breaks_ties_by_index() -> None:
    ids, scores = top_positive(np.array([0.0, 2.0, 1.0, 2.0, 0.0], np.float32), 10)
    assert list(ids) == [1, 3, 2] and list(scores) == [2.0, 2.0, 1.0]


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    ids, scores = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 4, 1])], 3)
    assert ids[0] == 1 and set(ids[1:]) == {3, 2}
    assert np.all(np.diff(scores) <= 0)
    lexical_only, _ = reciprocal_rank_fusion(
        [np.array([1, 2]), np.array([5, 6])], 2, weights=[0.0, 1.0]
    )
    assert list(lexical_only) == [5, 6]


def _retriever(lexical: LexicalIndex, mode: str) -> Retriever:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(TITLES), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index, _ = build_index(emb, IndexConfig(kind="flat"), progress=False)
    items = pd.DataFrame(
        {
            "leaf_idx": [0, 0, 1, 1, 2, 3],
            "brand_idx": [0, 0, 1, 1, 2, 3],
            "price": [500.0, 900.0, 300.0, 200.0, 10.0, 30.0],
            "popularity": [0.3, 0.2, 0.2, 0.1, 0.1, 0.1],
        }
    )
    return Retriever(
        index,
        emb,
        np.zeros((1, 8), np.float32),
        ItemAttributes.from_frame(items),
        RetrievalConfig(mode=mode),  # type: ignore[arg-type]
        lexical,
        "hybrid",
    )


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_every_mode_returns_features_of_both_sides(lexical: LexicalIndex, mode: str) -> None:
    retriever = _retriever(lexical, mode)
    vec = retriever.embeddings[2]
    request = RetrievalRequest(n=4, query_vec=vec, query="oak tabel")
    before = (request.n, request.query)
    found = retriever.retrieve([request])[0]
    assert (request.n, request.query) == before  # the request is not modified
    assert found.lexical is not None and len(found.lexical) == len(found.item_idx)
    assert found.query_words == ("oak", "table")
    assert np.all((found.lexical >= 0) & (found.lexical <= 1.0001))
    if mode != "dense":
        assert found.item_idx[0] == 2  # "oak table": both words match item 2 only
    assert found.source.startswith({"dense": "", "lexical": "lexical", "hybrid": "hybrid"}[mode])


def test_hybrid_filters_apply_to_both_sides(lexical: LexicalIndex) -> None:
    retriever = _retriever(lexical, "hybrid")
    only_sofas = ItemFilter(leaves=np.array([0]))
    found = retriever.retrieve(
        [
            RetrievalRequest(
                n=5, query_vec=retriever.embeddings[2], query="table", item_filter=only_sofas
            )
        ]
    )[0]
    assert set(found.item_idx) <= {0, 1}


def test_a_lexical_mode_without_an_index_is_refused(lexical: LexicalIndex) -> None:
    good = _retriever(lexical, "hybrid")
    with pytest.raises(ValueError, match="lexical index"):
        Retriever(
            good.index,
            good.embeddings,
            good.history,
            good.attributes,
            RetrievalConfig(mode="lexical"),
            None,
        )
