"""The Shopping Queries (ESCI) loader."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data import load_esci, loaders
from recsys.data import schema as S
from recsys.data.esci import REQUIRED_COLUMNS, esci_letters

ROWS = {
    "query_id": [1, 1, 1, 1, 2, 2, 3],
    "query": [
        "red shoes",
        "red shoes",
        "red shoes",
        "red shoes",
        "usb cable",
        "usb cable",
        "zapatos",
    ],
    "product_id": ["B1", "B2", "B3", "B2", "B4", "B1", "B9"],
    "esci_label": ["E", "Substitute", "irrelevant", "E", "C", "Exact", "E"],
    "product_title": [
        "Red Shoe",
        "Blue Shoe",
        None,
        "Blue Shoe",
        "USB-C Cable",
        "Red Shoe",
        "Zapato",
    ],
    "product_description": ["Comfy.", None, "Plain.", None, "1 m long.", "Comfy.", "Rojo."],
    "product_brand": ["Acme", None, "Acme", None, "Cablo", "Acme", "Marca"],
    "product_color": ["red", "blue", None, "blue", "", "red", "rojo"],
    "product_locale": ["us", "us", "us", "us", "us", "us", "es"],
    "split": ["train"] * 7,
}


def _write(tmp_path: Path, rows: dict[str, list[object]]) -> Path:
    path = tmp_path / "esci.parquet"
    pq.write_table(pa.table(rows), path)
    return path


@pytest.fixture()
def loaded(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    summary = load_esci(_write(tmp_path, ROWS), out, progress=False)
    assert (summary.n_items, summary.n_queries, summary.n_labels) == (4, 2, 5)
    assert summary.n_shoppers == summary.n_train_rows == summary.n_test_rows == 0
    return out


def test_items_are_distinct_products_in_first_appearance_order(loaded: Path) -> None:
    items = loaders.read_items(loaded)
    assert items.item_id.tolist() == ["B1", "B2", "B3", "B4"]
    assert items.item_idx.tolist() == [0, 1, 2, 3]
    assert items.title.tolist() == ["Red Shoe", "Blue Shoe", "", "USB-C Cable"]
    assert items.description.tolist() == ["Comfy.", "", "Plain.", "1 m long."]
    assert items.brand.tolist() == ["Acme", "unknown", "Acme", "Cablo"]
    assert items.brand_idx.tolist() == [0, 1, 0, 2]
    assert items.colour.tolist()[:2] == ["red", "blue"]
    assert items.colour.isna().tolist() == [False, False, True, True]
    assert items.material.isna().all() and items["size"].isna().all()
    assert (items[["category_l1", "category_l2", "category_l3"]] == "unknown").all().all()
    assert (items.leaf_idx == 0).all()
    assert (
        (items.price == 0).all() and (items.rating == 0).all() and (items.review_count == 0).all()
    )
    assert items.popularity.tolist() == pytest.approx([2 / 6, 2 / 6, 1 / 6, 1 / 6])
    assert len(loaders.read_categories(loaded)) == 1


def test_queries_and_labels(loaded: Path) -> None:
    queries = loaders.read_queries(loaded)
    assert queries["query"].tolist() == ["red shoes", "usb cable"]
    assert (queries.kind == "exact").all() and (queries.leaf_idx == -1).all()
    assert queries.frequency.tolist() == pytest.approx([4 / 6, 2 / 6])
    qrels = loaders.read_qrels(loaded)
    got = list(zip(qrels.query_id, qrels.item_idx, qrels.label, qrels.gain, strict=True))
    # (red shoes, B2) is judged twice: the first judgement (Substitute) wins.
    assert got == [(0, 0, "E", 3), (0, 1, "S", 2), (0, 2, "I", 0), (1, 0, "E", 3), (1, 3, "C", 1)]


def test_behaviour_files_are_empty_with_the_right_schema(loaded: Path) -> None:
    assert loaders.read_shoppers(loaded).empty
    for split in ("train", "test"):
        frame = loaders.read_interactions(loaded, split)  # type: ignore[arg-type]
        assert frame.empty
        assert list(frame.columns) == S.INTERACTIONS_SCHEMA.names
    assert not (loaded / S.GROUND_TRUTH_DIR).exists()


def test_every_locale_when_locale_is_none(tmp_path: Path) -> None:
    summary = load_esci(_write(tmp_path, ROWS), tmp_path / "all", locale=None, progress=False)
    assert (summary.n_items, summary.n_queries) == (5, 3)
    assert loaders.read_items(tmp_path / "all").item_id.iloc[-1] == "B9"


def test_rows_without_query_or_product_are_skipped(tmp_path: Path) -> None:
    rows = {
        **ROWS,
        "query": [None, *ROWS["query"][1:]],
        "product_id": [*ROWS["product_id"][:6], None],
    }
    summary = load_esci(_write(tmp_path, rows), tmp_path / "out", locale=None, progress=False)
    assert (summary.n_items, summary.n_queries, summary.n_labels) == (4, 2, 4)
    assert loaders.read_items(tmp_path / "out").item_id.tolist() == ["B2", "B3", "B4", "B1"]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    rows = {k: v for k, v in ROWS.items() if k not in ("esci_label", "product_color")}
    with pytest.raises(ValueError, match=r"lacks columns \['esci_label', 'product_color'\]") as err:
        load_esci(_write(tmp_path, rows), tmp_path / "out", progress=False)
    assert all(c in str(err.value) for c in REQUIRED_COLUMNS)


def test_unknown_labels_are_named(tmp_path: Path) -> None:
    rows = {**ROWS, "esci_label": ["E", "maybe", "S", "E", "C", "I", "E"]}
    with pytest.raises(ValueError, match="unknown ESCI labels.*'maybe'"):
        load_esci(_write(tmp_path, rows), tmp_path / "out", progress=False)


def test_unknown_locale_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no ESCI rows with product_locale 'jp'.*'es', 'us'"):
        load_esci(_write(tmp_path, ROWS), tmp_path / "out", locale="jp", progress=False)


def test_label_names_are_normalised() -> None:
    labels = pa.array(["E", " exact ", "SUBSTITUTE", "c", "Irrelevant", "I"])
    assert esci_letters(labels).tolist() == ["E", "E", "S", "C", "I", "I"]
    with pytest.raises(ValueError, match="None"):
        esci_letters(pa.array(["E", None]))
