"""Query-item match features, the query categoriser, and listwise relevance training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.matching import MATCH_FEATURES, FieldLexicon, QueryCategorizer, QueryMatcher, WordSets
from recsys.ranker.listwise import QueryLists, build_lists, list_ndcg, listwise_loss

ITEMS = pd.DataFrame(
    {
        "title": [
            "Nordby Velvet Sofa - Grey",
            "Nordby Velvet Sofa - Navy",
            "Eiken Oak Coffee Table",
            "Space Grey Laptop",
            "Softa Cotton Towel",
        ],
        "brand": ["Nordby", "Nordby", "Eiken", "unknown", "Softa"],
        "attributes": [
            "colour:Grey|material:Velvet",
            "colour:Navy|material:Velvet",
            "material:Oak",
            "colour:Space Grey",
            None,
        ],
        "category_l1": ["Home", "Home", "Home", "Tech", "Home"],
        "category_l2": ["Furniture", "Furniture", "Furniture", "Computers", "Bath"],
        "category_l3": ["Sofas", "Sofas", "Tables", "Laptops", "Towels"],
        "leaf_idx": [0, 0, 1, 2, 3],
    }
)


def test_lexicon_parses_brands_and_attribute_phrases() -> None:
    lexicon = FieldLexicon.from_items(ITEMS)
    assert set(lexicon.fields) == {"brand", "colour", "material"}
    stated = lexicon.parse(["nordby", "grey", "sofa"])
    named = {lexicon.fields[f] for f in stated}
    assert named == {"brand", "colour"}
    # the longest phrase wins: "space grey" is one colour, not "grey"
    longest = lexicon.parse(["space", "grey", "laptop"])
    colour = lexicon.fields.index("colour")
    assert len(longest[colour]) == 1


def test_stated_fields_match_or_conflict_per_item() -> None:
    lexicon = FieldLexicon.from_items(ITEMS)
    items = np.arange(len(ITEMS))
    matched, conflict = lexicon.match(["grey", "velvet", "sofa"], items)
    assert matched[0] == 1.0 and conflict[0] == 0.0  # grey velvet sofa
    assert matched[1] == 0.5 and conflict[1] == 0.5  # navy: colour contradicts
    assert conflict[4] == 0.0 and matched[4] == 0.0  # no colour, no material: unknown
    none_stated = lexicon.match(["sofa"], items)
    assert not none_stated[0].any() and not none_stated[1].any()


def test_word_sets_coverage() -> None:
    titles = WordSets.from_texts(ITEMS["title"].tolist())
    cover = titles.coverage(["velvet", "sofa", "cheap"], np.array([0, 2, 4]))
    assert cover.tolist() == pytest.approx([2 / 3, 0.0, 0.0])
    assert titles.coverage([], np.array([0])).tolist() == [0.0]


def test_categoriser_learns_words_no_title_contains(tmp_path: Path) -> None:
    sizes = np.array([2.0, 1.0, 1.0, 1.0])
    cat = QueryCategorizer.fit(
        ["couch", "grey couch", "coffee table", "laptop"], [0, 0, 1, 2], [1.0, 1.0, 1.0, 1.0], sizes
    )
    p = cat.probabilities(["couch"])
    assert p is not None and int(np.argmax(p)) == 0 and p[0] > 0.8
    assert cat.probabilities(["never", "seen"]) is None
    cat.save(tmp_path / "c.npz")
    loaded = QueryCategorizer.load(tmp_path / "c.npz")
    assert np.allclose(
        loaded.probabilities(["grey", "couch"]), cat.probabilities(["grey", "couch"])
    )


def test_matcher_features_have_one_column_each_and_zero_without_a_query() -> None:
    cat = QueryCategorizer.fit(["sofa"], [0], [1.0], np.ones(4))
    matcher = QueryMatcher.from_items(ITEMS, cat)
    items = np.arange(len(ITEMS))
    f = matcher.features(["grey", "sofa"], items, np.linspace(0, 1, len(ITEMS)))
    assert f.shape == (len(ITEMS), len(MATCH_FEATURES))
    col = {name: i for i, name in enumerate(MATCH_FEATURES)}
    assert f[0, col["category_coverage"]] == 0.5  # "sofa" in the path, "grey" not
    assert f[0, col["leaf_probability"]] > f[2, col["leaf_probability"]]
    assert f[0, col["stated_match"]] == 1.0 and f[1, col["stated_conflict"]] == 1.0
    assert not matcher.features([], items, None).any()
    assert set(matcher.titles.words_of(2)) == {"eiken", "oak", "coffee", "table"}


def test_hard_negatives_come_only_from_categories_without_relevant_judgments() -> None:
    qrels = pd.DataFrame(
        {"query_id": [7, 7, 7], "item_idx": [0, 1, 2], "gain": np.array([3, 2, 0], np.int8)}
    )
    leaf = np.array([0, 0, 1, 2, 3, 0])
    lists = build_lists(qrels, np.array([7, 8]), {7: np.array([5, 3, 0, 4, 2])}, leaf)
    assert lists.n_lists == 1  # query 8 has no judgments
    items = lists.item_idx.tolist()
    assert items[:3] == [0, 1, 2]
    # 5 shares leaf 0 with a relevant item: unknown, left out; 3 and 4 are negatives
    assert items[3:] == [3, 4] and lists.gain[3:].tolist() == [0.0, 0.0]


def test_listwise_loss_prefers_the_order_of_the_gains() -> None:
    gains = torch.tensor([3.0, 0.0, 2.0, 0.0, 1.0])
    lengths = torch.tensor([2, 3])
    good = listwise_loss(torch.tensor([2.0, -2.0, 1.0, -1.0, 0.5]), gains, lengths)
    bad = listwise_loss(torch.tensor([-2.0, 2.0, -1.0, 1.0, 0.5]), gains, lengths)
    assert float(good) < float(bad)
    no_gain = listwise_loss(torch.tensor([1.0, 2.0]), torch.zeros(2), torch.tensor([2]))
    assert float(no_gain) == 0.0


def test_list_ndcg_is_one_for_the_ideal_order() -> None:
    lists = QueryLists(
        np.zeros(4, np.int64),
        np.arange(4),
        np.array([0.0, 3.0, 1.0, 0.0], np.float32),
        np.array([0, 4]),
    )
    assert list_ndcg(np.array([0.0, 9.0, 5.0, 1.0]), lists) == pytest.approx(1.0)
    assert list_ndcg(np.array([9.0, 0.0, 1.0, 5.0]), lists) < 0.7
