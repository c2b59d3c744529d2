"""The synthetic world generator: schema, determinism, realism and hidden-signal checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import DataConfig
from recsys.data import generate_world, loaders, vocabulary
from recsys.data import schema as S
from recsys.data.ground_truth import (
    ItemTruth,
    QuerySpecs,
    ShopperTruth,
    relevance_gain,
    true_utility,
)
from recsys.data.loaders import HIDDEN_FILES, PUBLIC_FILES, WorldSummary

TINY = DataConfig(n_items=1_000, n_shoppers=300, n_queries=100, chunk_items=1_000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldSummary:
    return generate_world(TINY, tmp_path_factory.mktemp("world"), progress=False)


@pytest.fixture(scope="module")
def log(world: WorldSummary) -> pd.DataFrame:
    train = loaders.read_interactions(world.out_dir, "train")
    test = loaders.read_interactions(world.out_dir, "test")
    return pd.concat([train, test], ignore_index=True)


def _all_files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.parquet"))
    }


# ---- vocabulary -----------------------------------------------------------------------------


def test_vocabulary_is_consistent_and_large_enough() -> None:
    assert vocabulary.vocabulary_problems() == []
    assert len(vocabulary.LEAVES) >= 60
    assert 7 <= len(vocabulary.DEPARTMENTS) <= 10
    assert all(15 <= len(d.brands) <= 40 for d in vocabulary.DEPARTMENTS)
    assert {leaf.department for leaf in vocabulary.LEAVES} == set(vocabulary.DEPARTMENT_NAMES)


# ---- files and schema -----------------------------------------------------------------------


def test_every_file_is_written_with_the_exact_schema(world: WorldSummary) -> None:
    expected = {**PUBLIC_FILES, **{f"{S.GROUND_TRUTH_DIR}/{k}": v for k, v in HIDDEN_FILES.items()}}
    assert set(world.files) == set(expected)
    for name, schema in expected.items():
        path = world.out_dir / name
        on_disk = pq.read_schema(path)
        assert on_disk.names == schema.names, name
        for field in schema:
            stored = on_disk.field(field.name).type
            if field.type == pa.timestamp("s"):  # parquet has no seconds unit
                assert stored in (pa.timestamp("s"), pa.timestamp("ms")), name
            else:
                assert stored == field.type, (name, field.name)
        table = loaders.read_arrow(world.out_dir, Path(name).name)
        assert table.schema.equals(schema), name


def test_hidden_truth_is_only_in_ground_truth(world: WorldSummary) -> None:
    hidden_words = ("latent", "utility", "quality", "affinity", "loyalty", "price_low")
    for name in PUBLIC_FILES:
        columns = pq.read_schema(world.out_dir / name).names
        assert not [c for c in columns if any(w in c for w in hidden_words)], name
        assert (world.out_dir / name).is_file()
    for name in HIDDEN_FILES:
        assert (world.out_dir / S.GROUND_TRUTH_DIR / name).is_file()
        assert not (world.out_dir / name).exists()


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    world: WorldSummary, tmp_path: Path
) -> None:
    again = generate_world(TINY, tmp_path / "again", progress=False)
    assert _all_files(again.out_dir) == _all_files(world.out_dir)
    other = generate_world(TINY.model_copy(update={"seed": 1}), tmp_path / "other", progress=False)
    for name in (S.ITEMS_FILE, S.TRAIN_FILE, S.QUERIES_FILE):
        assert (other.out_dir / name).read_bytes() != (world.out_dir / name).read_bytes()


# ---- catalog --------------------------------------------------------------------------------


def test_catalog_rows_ids_and_attributes(world: WorldSummary) -> None:
    items = loaders.read_items(world.out_dir)
    assert len(items) == TINY.n_items == world.n_items
    assert (items.item_idx.to_numpy() == np.arange(len(items))).all()
    assert items.item_id.iloc[42] == "I0000042"
    assert items.leaf_idx.nunique() >= 50
    assert (items.price > 0).all()
    assert items.rating.between(1.0, 5.0).all()
    assert (items.review_count >= 0).all()
    assert all(b in t for b, t in zip(items.brand, items.title, strict=True))
    assert items.description.str.len().min() > 20
    categories = loaders.read_categories(world.out_dir)
    assert len(categories) == len(vocabulary.LEAVES)
    for row in items.head(200).itertuples():
        leaf = vocabulary.LEAVES[row.leaf_idx]
        assert row.category_l3 == leaf.name and row.category_l1 == leaf.department
        assert (row.colour in leaf.colours) if leaf.colours else pd.isna(row.colour)
        assert (row.material in leaf.materials) if leaf.materials else pd.isna(row.material)
        assert (row.size in leaf.sizes) if leaf.sizes else pd.isna(row.size)


def test_popularity_is_long_tailed_and_sums_to_one(world: WorldSummary) -> None:
    popularity = loaders.read_items(world.out_dir, columns=["popularity"]).popularity.to_numpy()
    assert popularity.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-4)
    top = np.sort(popularity)[::-1][: len(popularity) // 10]
    assert top.sum() > 0.4


def test_leaves_have_varied_sizes(world: WorldSummary) -> None:
    counts = loaders.read_items(world.out_dir, columns=["leaf_idx"]).leaf_idx.value_counts()
    assert counts.max() >= 5 * max(counts.min(), 1)


# ---- queries and labels ---------------------------------------------------------------------


def test_queries_are_distinct_of_every_kind_with_zipf_frequency(world: WorldSummary) -> None:
    queries = loaders.read_queries(world.out_dir)
    assert len(queries) == TINY.n_queries
    assert queries["query"].is_unique
    assert (queries.query_id.to_numpy() == np.arange(len(queries))).all()
    assert set(queries.kind) == set(S.QUERY_KINDS)
    assert queries.frequency.sum() == pytest.approx(1.0, abs=1e-4)
    assert queries.frequency.max() > 10 * queries.frequency.median()
    assert (queries.loc[queries.kind == "attribute", "leaf_idx"] == -1).all()
    assert (queries.loc[queries.kind != "attribute", "leaf_idx"] >= 0).all()


def test_every_query_has_graded_labels(world: WorldSummary) -> None:
    qrels = loaders.read_qrels(world.out_dir)
    assert set(qrels.label) <= set(S.ESCI_LABELS)
    assert (qrels.gain == qrels.label.map(S.ESCI_GAIN)).all()
    per_query = qrels.groupby("query_id")
    assert (per_query.size() == TINY.labels_per_query).all()
    assert (per_query.gain.nunique() >= 2).all()
    assert not qrels.duplicated(["query_id", "item_idx"]).any()
    mix = qrels.label.value_counts(normalize=True)
    assert mix["E"] > 0.1 and mix["S"] > 0.1 and mix["I"] > 0.1 and mix["C"] > 0.02


def test_labels_follow_the_hidden_relevance_rule(world: WorldSummary) -> None:
    qrels = loaders.read_qrels(world.out_dir)
    items = loaders.read_arrow(world.out_dir, S.ITEMS_FILE)
    latent = loaders.read_arrow(world.out_dir, S.ITEM_LATENT_FILE)
    specs = QuerySpecs.from_table(loaders.read_arrow(world.out_dir, S.QUERY_SPECS_FILE))
    gain = relevance_gain(
        specs, qrels.query_id.to_numpy(), ItemTruth.from_tables(items, latent), qrels.item_idx
    )
    assert (gain == qrels.gain.to_numpy()).all()


# ---- shoppers and the log -------------------------------------------------------------------


def test_shoppers_and_preferences(world: WorldSummary) -> None:
    shoppers = loaders.read_shoppers(world.out_dir)
    assert len(shoppers) == TINY.n_shoppers
    assert shoppers.user_id.iloc[7] == "U0000007"
    prefs = loaders.read_ground_truth(world.out_dir, "shopper_preferences")
    lengths = prefs.leaf_idx.map(len)
    assert lengths.between(2, 5).all()
    assert np.allclose(prefs.leaf_affinity.map(sum), 1.0, atol=1e-5)
    assert (prefs.price_low < prefs.price_high).all()
    assert prefs.brand_loyalty.between(0, 1).all()


def test_log_is_split_by_time_and_sorted(world: WorldSummary) -> None:
    train = loaders.read_interactions(world.out_dir, "train")
    test = loaders.read_interactions(world.out_dir, "test")
    assert len(train) == world.n_train_rows and len(test) == world.n_test_rows > 0
    assert train.day.max() < test.day.min()
    assert test.day.min() >= TINY.days - TINY.test_days
    assert not set(train.session_id) & set(test.session_id)
    for frame in (train, test):
        keys = frame[["day", "ts", "session_id", "position"]]
        assert keys.equals(keys.sort_values(list(keys.columns), ignore_index=True))
        assert (frame.ts.dt.normalize() - pd.Timestamp("2026-01-01")).dt.days.equals(
            frame.day.astype("int64")
        )


def test_sessions_are_whole_slates_of_distinct_items(log: pd.DataFrame) -> None:
    sessions = log.groupby("session_id")
    assert (sessions.size() == TINY.impressions_per_session).all()
    assert (sessions.item_idx.nunique() == TINY.impressions_per_session).all()
    for column in ("user_idx", "ts", "query_id"):
        assert (sessions[column].nunique() == 1).all()
    assert (sessions.position.max() == TINY.impressions_per_session - 1).all()
    search = (sessions.query_id.first() >= 0).mean()
    assert 0.35 < search < 0.65


def test_funnel_rates_are_plausible(log: pd.DataFrame) -> None:
    label = log.label.to_numpy()
    clicks, carts, buys = (label >= 1).sum(), (label >= 2).sum(), (label >= 3).sum()
    assert 0.05 < clicks / len(label) < 0.2
    assert 0.15 < carts / clicks < 0.5
    assert 0.2 < buys / carts < 0.65
    ctr_by_position = log.groupby("position").label.apply(lambda x: (x >= 1).mean())
    assert ctr_by_position.iloc[:3].mean() > ctr_by_position.iloc[-3:].mean()


def test_shoppers_click_their_preferred_leaves_more(world: WorldSummary, log: pd.DataFrame) -> None:
    prefs = loaders.read_ground_truth(world.out_dir, "shopper_preferences")
    leaf = loaders.read_items(world.out_dir, columns=["leaf_idx"]).leaf_idx.to_numpy()
    preferred = {
        (u, int(x)) for u, xs in zip(prefs.user_idx, prefs.leaf_idx, strict=True) for x in xs
    }
    pairs = zip(log.user_idx.to_numpy(), leaf[log.item_idx.to_numpy()], strict=True)
    is_preferred = np.array([(int(u), int(x)) in preferred for u, x in pairs])
    clicked = log.label.to_numpy() >= 1
    assert clicked[is_preferred].mean() > 2 * clicked[~is_preferred].mean()


def test_test_utility_matches_the_public_utility_function(world: WorldSummary) -> None:
    test = loaders.read_interactions(world.out_dir, "test")
    stored = loaders.read_ground_truth(world.out_dir, "test_utility")
    assert stored.session_id.equals(test.session_id)
    assert stored.item_idx.equals(test.item_idx)
    read = loaders.read_arrow
    items = ItemTruth.from_tables(
        read(world.out_dir, S.ITEMS_FILE), read(world.out_dir, S.ITEM_LATENT_FILE)
    )
    shoppers = ShopperTruth.from_table(read(world.out_dir, S.SHOPPER_PREFS_FILE))
    specs = QuerySpecs.from_table(read(world.out_dir, S.QUERY_SPECS_FILE))
    query = test.query_id.to_numpy()
    gain = np.full(len(test), -1, np.int8)
    searched = query >= 0
    gain[searched] = relevance_gain(
        specs, query[searched], items, test.item_idx.to_numpy()[searched]
    )
    utility = true_utility(
        shoppers, items, test.user_idx.to_numpy(), test.item_idx.to_numpy(), gain
    )
    np.testing.assert_allclose(utility, stored.utility.to_numpy(), rtol=1e-5, atol=1e-5)


# ---- readers --------------------------------------------------------------------------------


def test_readers_explain_missing_files_and_columns(world: WorldSummary, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"items\.parquet.*recsys build"):
        loaders.read_items(tmp_path)
    with pytest.raises(ValueError, match="split"):
        loaders.read_interactions(world.out_dir, "valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown columns"):
        loaders.read_items(world.out_dir, columns=["title", "nope"])
    pq.write_table(pa.table({"query_id": [1]}), tmp_path / S.QUERIES_FILE)
    with pytest.raises(ValueError, match="lacks columns.*'query'"):
        loaders.read_queries(tmp_path)
    assert list(loaders.read_items(world.out_dir, columns=["title"]).columns) == ["title"]


def test_impossible_slates_are_refused(tmp_path: Path) -> None:
    config = DataConfig(n_items=100, n_shoppers=10, n_queries=10, impressions_per_session=150)
    with pytest.raises(ValueError, match="impressions_per_session"):
        generate_world(config, tmp_path, progress=False)


# ---- chunking -------------------------------------------------------------------------------


@pytest.mark.slow
def test_content_does_not_depend_on_chunk_size(tmp_path: Path) -> None:
    base = DataConfig(n_items=20_000, n_shoppers=3_000, n_queries=300)
    small = generate_world(
        base.model_copy(update={"chunk_items": 5_000}), tmp_path / "small", progress=False
    )
    large = generate_world(
        base.model_copy(update={"chunk_items": 20_000}), tmp_path / "large", progress=False
    )
    assert pq.ParquetFile(small.out_dir / S.ITEMS_FILE).num_row_groups == 4
    assert pq.ParquetFile(large.out_dir / S.ITEMS_FILE).num_row_groups == 1
    assert pq.ParquetFile(small.out_dir / S.SHOPPERS_FILE).num_row_groups > 1
    for name in [*PUBLIC_FILES, *(f"{S.GROUND_TRUTH_DIR}/{k}" for k in HIDDEN_FILES)]:
        assert pq.read_table(small.out_dir / name).equals(pq.read_table(large.out_dir / name)), name
