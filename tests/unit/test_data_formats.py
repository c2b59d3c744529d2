"""Bring-your-own-catalog loaders: native (CSV/parquet), WANDS and ESCI through load_data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data import FORMATS, DataFormatError, load_data, loaders
from recsys.data import schema as S
from tests.samples import KINDS, write_wands_sample

Table = dict[str, list[str]]

# ---- a small native catalog ----------------------------------------------------------------


def native_tables() -> dict[str, Table]:
    """Twelve items, three queries with labels, and a ten-day log (all as text)."""
    items: Table = {
        "item_id": [f"A{i:02d}" for i in range(1, 13)],
        "title": [
            "Grey velvet sofa",
            "Blue linen sofa",
            "Oak armchair",
            "Brass floor lamp",
            "Wool rug",
            "Mystery box",
            "Grey corner sofa",
            "Walnut desk",
            "Table lamp",
            "Jute rug",
            "Leather armchair",
            "Oak bookcase",
        ],
        "description": ["Soft.", "", "Sturdy.", "", "", "", "", "", "", "", "", ""],
        "brand": ["Acme", "", "Birch", "Lumo", "", "", "Acme", "Birch", "Lumo", "", "", "Birch"],
        "category": [
            "Home > Furniture > Sofas",
            "Home > Furniture > Sofas",
            "Home > Furniture > Living Room > Armchairs",
            "Home/Lighting",
            "Rugs",
            "",
            "Home > Furniture > Sofas",
            "Home > Office > Desks",
            "Home/Lighting",
            "Rugs",
            "Home > Furniture > Living Room > Armchairs",
            "Home > Office > Bookcases",
        ],
        "price": ["499", "459.5", "", "89.99", "120", "", "799", "350", "25", "60", "640", "210"],
        "rating": ["4.5", "", "4", "3.5", "5", "", "4", "4.5", "3", "4", "5", "4"],
        "review_count": ["12", "", "3", "40", "2", "", "8", "1", "0", "6", "9", "4"],
        "colour": ["grey", "", "", "", "", "", "", "", "", "", "", ""],
        "attributes": [
            "Color:Red|Material:Velvet",
            "colour:blue|material:linen",
            "Material:Oak|Style:Mid-Century",
            "",
            "material:wool|size:5x8",
            "",
            "colour:grey|Seats:3",
            "material:walnut",
            "",
            "material:jute|Overall Size:6x9",
            "material:leather",
            "material:oak",
        ],
    }
    queries: Table = {"query_id": ["q-sofa", "q-lamp", "q-rug"], "query": ["sofa", "lamp", "rug"]}
    labels: Table = {
        "query_id": ["q-sofa", "q-sofa", "q-sofa", "q-lamp", "q-lamp", "q-rug", "q-rug", "q-sofa"],
        "item_id": ["A01", "A02", "A03", "A04", "A05", "A05", "A10", "A01"],
        "label": ["E", "Substitute", "partial", "3", "irrelevant", "Exact", "0", "I"],
    }
    day = "2026-03-{:02d}T{}"
    interactions: Table = {
        "user_id": ["u1"] * 5 + ["u2"] * 4 + ["u3"] * 3 + ["u1"] * 2,
        "item_id": ["A01", "A02", "A07", "A02", "A02"]
        + ["A04", "A09", "A04", "A05"]
        + ["A12", "A08", "A12"]
        + ["A01", "A07"],
        "timestamp": [day.format(1, "09:00:00")] * 3
        + [day.format(1, "09:05:00"), day.format(1, "09:20:00")]
        + [day.format(2, "10:00:00"), day.format(2, "10:01:00"), day.format(2, "10:10:00")]
        + [day.format(2, "11:00:00")]
        + [day.format(10, "08:00:00"), day.format(10, "08:00:30"), day.format(10, "08:02:00")]
        + [day.format(9, "20:00:00"), day.format(9, "20:00:00")],
        "event": ["impression", "impression", "impression", "click", "purchase"]
        + ["impression", "impression", "click", "impression"]
        + ["impression", "impression", "cart"]
        + ["impression", "click"],
        "session_id": ["s1"] * 5 + [""] * 4 + [""] * 3 + ["s9"] * 2,
        "query": ["grey sofa"] * 5 + [""] * 4 + [""] * 3 + ["sofa"] * 2,
        "query_id": [""] * 5 + ["q-lamp"] * 3 + ["q-rug"] + [""] * 3 + [""] * 2,
    }
    return {"items": items, "queries": queries, "labels": labels, "interactions": interactions}


def write_native(directory: Path, tables: dict[str, Table], suffix: str = ".csv") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, columns in tables.items():
        frame = pd.DataFrame(columns, dtype=str)
        if suffix == ".csv":
            frame.to_csv(directory / f"{name}.csv", index=False)
        else:
            pq.write_table(_typed(name, frame), directory / f"{name}.parquet")
    return directory


def _typed(name: str, frame: pd.DataFrame) -> pa.Table:
    """The text columns as a parquet user would type them: numbers, times, nulls."""
    table: dict[str, pa.Array] = {}
    for column in frame.columns:
        values = [v if v != "" else None for v in frame[column].tolist()]
        if column in ("price", "rating"):
            table[column] = pa.array([float(v) if v else None for v in values], pa.float64())
        elif column == "review_count":
            table[column] = pa.array([int(v) if v else None for v in values], pa.int64())
        elif column == "timestamp":
            times = pd.to_datetime(pd.Series(values)).to_numpy(dtype="datetime64[s]")
            table[column] = pa.array(times, pa.timestamp("s"))
        else:
            table[column] = pa.array(values, pa.string())
    return pa.table(table)


@pytest.fixture()
def native_dir(tmp_path: Path) -> Path:
    return write_native(tmp_path / "native", native_tables())


@pytest.fixture()
def native_out(native_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    summary = load_data("native", native_dir, out, progress=False)
    assert summary.out_dir == out and summary.source_format == "native"
    assert summary.has_labels and summary.has_interactions
    assert all(path.parent == out and path.is_file() for path in summary.files.values())
    return out


# ---- native: catalog -----------------------------------------------------------------------


def test_native_items_keep_input_order_with_schema_types(native_out: Path) -> None:
    items = loaders.read_items(native_out)
    given = native_tables()["items"]
    assert items.item_id.tolist() == given["item_id"]
    assert items.item_idx.tolist() == list(range(len(given["item_id"])))
    assert items.title.tolist() == given["title"]
    assert items.description.tolist() == given["description"]
    arrow = loaders.read_arrow(native_out, S.ITEMS_FILE)
    assert arrow.schema.equals(S.ITEMS_SCHEMA)
    # empty numbers mean unknown: 0
    expected_price = [float(v) if v else 0.0 for v in given["price"]]
    assert items.price.tolist() == pytest.approx(expected_price)
    assert items.review_count.tolist() == [int(v) if v else 0 for v in given["review_count"]]


def test_native_categories_map_any_depth_onto_three_levels(native_out: Path) -> None:
    items = loaders.read_items(native_out)
    levels = list(zip(items.category_l1, items.category_l2, items.category_l3, strict=True))
    assert levels[0] == ("Home", "Furniture", "Sofas")
    assert levels[2] == ("Home", "Furniture", "Armchairs")  # depth 4: the leaf is the last
    assert levels[3] == ("Home", "Lighting", "Lighting")  # "/" separates; depth 2
    assert levels[4] == ("Rugs", "Rugs", "Rugs")  # depth 1
    assert levels[5] == ("unknown", "unknown", "unknown")
    categories = loaders.read_categories(native_out)
    assert categories.leaf_idx.tolist() == list(range(len(categories)))
    table = list(
        zip(categories.category_l1, categories.category_l2, categories.category_l3, strict=True)
    )
    assert len(set(table)) == len(table) == len(set(levels))
    assert [table[leaf] for leaf in items.leaf_idx] == levels


def test_native_brands_attributes_and_their_columns(native_out: Path) -> None:
    items = loaders.read_items(native_out)
    assert items.brand.tolist()[:3] == ["Acme", "unknown", "Birch"]
    brand_of = dict(zip(items.brand, items.brand_idx, strict=True))
    assert sorted(brand_of.values()) == list(range(len(brand_of)))
    assert all(brand_of[b] == i for b, i in zip(items.brand, items.brand_idx, strict=True))
    pairs = [_pairs(a) for a in items.attributes]
    assert all(k == k.lower() for row in pairs for k, _ in row)
    # the colour column wins over an attribute of the same meaning, and joins the attributes
    assert items.colour[0] == "grey" and ("colour", "grey") in pairs[0]
    assert ("color", "Red") in pairs[0] and items.material[0] == "Velvet"
    assert (items.colour[1], items.material[1]) == ("blue", "linen")
    assert ("style", "Mid-Century") in pairs[2] and pd.isna(items.colour[2])
    assert items["size"][4] == "5x8" and items["size"][9] == "6x9"  # "Overall Size" counts
    assert pd.isna(items.attributes[3]) and pd.isna(items.material[3])


def test_native_popularity_follows_engagement_in_the_train_split(native_out: Path) -> None:
    items = loaders.read_items(native_out)
    pop = items.popularity.to_numpy()
    assert pop.dtype == np.float32 and (pop > 0).all() and pop.sum() == pytest.approx(1.0)
    train = loaders.read_interactions(native_out, "train")
    engaged = set(train.item_idx[train.label >= 1])
    others = set(range(len(items))) - engaged
    assert engaged and min(pop[list(engaged)]) > max(pop[list(others)])


def test_native_popularity_column_wins(tmp_path: Path) -> None:
    tables = native_tables()
    tables["items"]["popularity"] = ["0"] * 11 + ["5"]
    out = tmp_path / "out"
    load_data("native", write_native(tmp_path / "src", tables), out, progress=False)
    pop = loaders.read_items(out).popularity.to_numpy()
    assert pop.argmax() == 11 and (pop > 0).all() and pop.sum() == pytest.approx(1.0)


def test_native_without_log_or_labels_writes_empty_tables(tmp_path: Path) -> None:
    tables = {"items": native_tables()["items"]}
    out = tmp_path / "out"
    summary = load_data("native", write_native(tmp_path / "src", tables), out, progress=False)
    assert not summary.has_labels and not summary.has_interactions
    assert summary.n_queries == 0 and loaders.read_qrels(out).empty
    assert loaders.read_shoppers(out).empty
    for split in ("train", "test"):
        assert loaders.read_interactions(out, split).empty  # type: ignore[arg-type]
    pop = loaders.read_items(out).popularity.to_numpy()
    reviews = loaders.read_items(out).review_count.to_numpy()
    assert pop.argmax() == reviews.argmax() and (pop > 0).all()  # from review_count


# ---- native: queries, labels and the log ---------------------------------------------------


def test_native_labels_accept_letters_names_and_gains(native_out: Path) -> None:
    queries = loaders.read_queries(native_out)
    qrels = loaders.read_qrels(native_out)
    items = loaders.read_items(native_out)
    got = {
        (queries["query"][q], items.item_id[i]): (label, gain)
        for q, i, label, gain in zip(
            qrels.query_id, qrels.item_idx, qrels.label, qrels.gain, strict=True
        )
    }
    assert got == {
        ("sofa", "A01"): ("E", S.ESCI_GAIN["E"]),  # judged twice: the first label wins
        ("sofa", "A02"): ("S", S.ESCI_GAIN["S"]),
        ("sofa", "A03"): ("S", S.ESCI_GAIN["S"]),  # Partial counts as Substitute
        ("lamp", "A04"): ("E", 3),  # a gain
        ("lamp", "A05"): ("I", 0),
        ("rug", "A05"): ("E", 3),
        ("rug", "A10"): ("I", 0),
    }


def test_native_queries_seen_only_in_the_log_are_added(native_out: Path) -> None:
    queries = loaders.read_queries(native_out)
    assert queries["query"].tolist() == ["sofa", "lamp", "rug", "grey sofa"]
    assert queries.query_id.tolist() == [0, 1, 2, 3]
    assert (queries.kind == "unknown").all() and (queries.leaf_idx == -1).all()
    assert queries.frequency.sum() == pytest.approx(1.0) and (queries.frequency > 0).all()
    assert 3 not in set(loaders.read_qrels(native_out).query_id)


def test_native_log_sessions_are_slates(native_out: Path) -> None:
    log = pd.concat(
        [
            loaders.read_interactions(native_out, "train"),
            loaders.read_interactions(native_out, "test"),
        ]
    )
    for _, session in log.groupby("session_id"):
        assert session[["user_idx", "ts", "day", "query_id"]].nunique().max() == 1
        assert sorted(session.position) == list(range(len(session)))
        assert session.item_idx.is_unique
    items = loaders.read_items(native_out).item_id.tolist()
    queries = loaders.read_queries(native_out)["query"].tolist()
    shoppers = loaders.read_shoppers(native_out).user_id.tolist()

    def session_of(user: str, query: str | None) -> list[pd.DataFrame]:
        q = queries.index(query) if query else -1
        rows = log[(log.user_idx == shoppers.index(user)) & (log.query_id == q)]
        return [s.sort_values("position") for _, s in rows.groupby("session_id")]

    # u1's session s1: impressions of A01, A02, A07, then a click and a purchase of A02
    (s1,) = session_of("u1", "grey sofa")
    assert [items[i] for i in s1.item_idx] == ["A01", "A02", "A07"]
    assert s1.label.tolist() == [0, 3, 0]
    assert s1.ts.iloc[0] == pd.Timestamp("2026-03-01 09:00:00")
    # u2 without session ids: 10:00 and 10:10 are one session (gap <= 30 min)
    (lamp,) = session_of("u2", "lamp")
    assert [items[i] for i in lamp.item_idx] == ["A04", "A09"] and lamp.label.tolist() == [1, 0]
    (rug,) = session_of("u2", "rug")  # another query: another session
    assert [items[i] for i in rug.item_idx] == ["A05"]
    (recommendation,) = session_of("u3", None)
    assert [items[i] for i in recommendation.item_idx] == ["A12", "A08"]
    assert recommendation.label.tolist() == [2, 0]
    starts = log.groupby("session_id").ts.first()
    assert starts.is_monotonic_increasing  # session ids follow time


def test_native_gap_splits_sessions(tmp_path: Path) -> None:
    tables = native_tables()
    log = tables["interactions"]
    log["timestamp"][7] = "2026-03-02T10:45:00"  # u2's click comes 45 minutes later
    out = tmp_path / "out"
    load_data("native", write_native(tmp_path / "src", tables), out, progress=False)
    frame = loaders.read_interactions(out, "train")
    lamp = frame[frame.query_id == 1]
    assert lamp.session_id.nunique() == 2


def test_native_time_split_holds_out_the_last_days(native_out: Path) -> None:
    train = loaders.read_interactions(native_out, "train")
    test = loaders.read_interactions(native_out, "test")
    assert len(train) and len(test)
    assert train.day.max() < test.day.min()
    n_days = int(test.day.max()) + 1
    assert n_days == 10 and train.day.min() == 0  # 2026-03-01 .. 2026-03-10
    held_out = n_days - int(test.day.min())
    assert 1 <= held_out <= max(1, round(0.15 * n_days))
    assert train.ts.min() == pd.Timestamp("2026-03-01 09:00:00")
    for frame in (train, test):
        keys = list(zip(frame.day, frame.ts, frame.session_id, frame.position, strict=True))
        assert keys == sorted(keys)
    assert loaders.read_arrow(native_out, S.TRAIN_FILE).schema.equals(S.INTERACTIONS_SCHEMA)


def test_native_shoppers_are_dense_with_their_first_day(native_out: Path) -> None:
    shoppers = loaders.read_shoppers(native_out)
    assert shoppers.user_id.tolist() == ["u1", "u2", "u3"]
    assert shoppers.user_idx.tolist() == [0, 1, 2]
    log = pd.concat(
        [
            loaders.read_interactions(native_out, "train"),
            loaders.read_interactions(native_out, "test"),
        ]
    )
    first_day = log.groupby("user_idx").day.min()
    assert shoppers.signup_day.tolist() == first_day.tolist()


def test_native_epoch_seconds_equal_iso_times(native_dir: Path, tmp_path: Path) -> None:
    tables = native_tables()
    iso = tables["interactions"]["timestamp"]
    tables["interactions"]["timestamp"] = [
        str(int(pd.Timestamp(t, tz="UTC").timestamp())) for t in iso
    ]
    epoch_out = tmp_path / "epoch"
    load_data("native", write_native(tmp_path / "epoch_src", tables), epoch_out, progress=False)
    iso_out = tmp_path / "iso"
    load_data("native", native_dir, iso_out, progress=False)
    for split in ("train", "test"):
        pd.testing.assert_frame_equal(
            loaders.read_interactions(epoch_out, split),  # type: ignore[arg-type]
            loaders.read_interactions(iso_out, split),  # type: ignore[arg-type]
        )


def test_native_parquet_reads_like_csv(native_out: Path, tmp_path: Path) -> None:
    source = write_native(tmp_path / "parquet_src", native_tables(), suffix=".parquet")
    out = tmp_path / "from_parquet"
    load_data("native", source, out, progress=False)
    for file in loaders.PUBLIC_FILES:
        assert loaders.read_arrow(out, file).equals(loaders.read_arrow(native_out, file)), file


# ---- native: bad files ---------------------------------------------------------------------


def _set(table: str, column: str, row: int, value: str) -> Callable[[dict[str, Table]], None]:
    def change(tables: dict[str, Table]) -> None:
        tables[table][column][row - 1] = value

    return change


BAD_NATIVE = {
    "duplicate item_id": (_set("items", "item_id", 5, "A02"), "items.csv", "item_id", 5, "A02"),
    "unparseable price": (_set("items", "price", 3, "12,50"), "items.csv", "price", 3, "12,50"),
    "fractional review count": (
        _set("items", "review_count", 4, "2.5"),
        "items.csv",
        "review_count",
        4,
        "2.5",
    ),
    "malformed attributes": (
        _set("items", "attributes", 6, "colour=red"),
        "items.csv",
        "attributes",
        6,
        "colour=red",
    ),
    "unknown label": (_set("labels", "label", 2, "maybe"), "labels.csv", "label", 2, "maybe"),
    "label on unknown item": (
        _set("labels", "item_id", 3, "Z99"),
        "labels.csv",
        "item_id",
        3,
        "Z99",
    ),
    "label on unknown query": (
        _set("labels", "query_id", 1, "q-chair"),
        "labels.csv",
        "query_id",
        1,
        "q-chair",
    ),
    "interaction on unknown item": (
        _set("interactions", "item_id", 4, "Z99"),
        "interactions.csv",
        "item_id",
        4,
        "Z99",
    ),
    "interaction on unknown query": (
        _set("interactions", "query_id", 6, "q-bed"),
        "interactions.csv",
        "query_id",
        6,
        "q-bed",
    ),
    "bad timestamp": (
        _set("interactions", "timestamp", 2, "yesterday"),
        "interactions.csv",
        "timestamp",
        2,
        "yesterday",
    ),
    "millisecond timestamp": (
        _set("interactions", "timestamp", 7, "1772355600000"),
        "interactions.csv",
        "timestamp",
        7,
        "1772355600000",
    ),
    "unknown event": (
        _set("interactions", "event", 9, "wishlist"),
        "interactions.csv",
        "event",
        9,
        "wishlist",
    ),
    "missing user": (_set("interactions", "user_id", 1, ""), "interactions.csv", "user_id", 1, ""),
}


@pytest.mark.parametrize("case", list(BAD_NATIVE))
def test_native_bad_values_name_file_column_and_row(tmp_path: Path, case: str) -> None:
    change, file, column, row, value = BAD_NATIVE[case]
    tables = native_tables()
    change(tables)
    source = write_native(tmp_path / "src", tables)
    with pytest.raises(DataFormatError) as err:
        load_data("native", source, tmp_path / "out", progress=False)
    assert Path(err.value.file).name == file
    assert (err.value.column, err.value.row) == (column, row)
    assert file in str(err.value) and f"column {column!r}" in str(err.value)
    assert f"row {row}" in str(err.value)
    assert (repr(value) if value else "empty value") in str(err.value)
    _assert_nothing_written(tmp_path)


def _drop(table: str, column: str) -> Callable[[dict[str, Table]], None]:
    def change(tables: dict[str, Table]) -> None:
        del tables[table][column]

    return change


@pytest.mark.parametrize(
    ("change", "file", "column"),
    [
        (_drop("items", "title"), "items.csv", "title"),
        (_drop("labels", "label"), "labels.csv", "label"),
        (_drop("interactions", "timestamp"), "interactions.csv", "timestamp"),
        (lambda t: [_drop("interactions", c)(t) for c in ("event",)], "interactions.csv", "event"),
    ],
)
def test_native_missing_columns_are_named(
    tmp_path: Path, change: Callable[[dict[str, Table]], None], file: str, column: str
) -> None:
    tables = native_tables()
    change(tables)
    with pytest.raises(DataFormatError, match="missing required column") as err:
        load_data("native", write_native(tmp_path / "src", tables), tmp_path / "out")
    assert (Path(err.value.file).name, err.value.column) == (file, column)
    _assert_nothing_written(tmp_path)


def test_native_missing_or_empty_items_file(tmp_path: Path) -> None:
    tables = native_tables()
    del tables["items"]
    with pytest.raises(DataFormatError, match="missing required file") as err:
        load_data("native", write_native(tmp_path / "src", tables), tmp_path / "out")
    assert "items" in err.value.file
    empty = write_native(tmp_path / "empty", {"items": {"item_id": [], "title": []}})
    with pytest.raises(DataFormatError, match="no items") as err:
        load_data("native", empty, tmp_path / "out")
    assert Path(err.value.file).name == "items.csv"
    _assert_nothing_written(tmp_path)


def test_native_two_files_for_one_table_are_refused(native_dir: Path, tmp_path: Path) -> None:
    write_native(native_dir, {"items": native_tables()["items"]}, suffix=".parquet")
    with pytest.raises(DataFormatError, match="ambiguous"):
        load_data("native", native_dir, tmp_path / "out", progress=False)


def _assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


# ---- the output directory ------------------------------------------------------------------


def test_an_earlier_data_directory_is_replaced_whole(native_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    load_data("native", native_dir, out, progress=False)
    (out / S.GROUND_TRUTH_DIR).mkdir()  # e.g. left by a synthetic world
    summary = load_data("wands", write_wands_sample(tmp_path / "wands").directory, out, False)
    assert summary.source_format == "wands" and not (out / S.GROUND_TRUTH_DIR).exists()
    assert len(loaders.read_items(out)) == summary.n_items
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_load_keeps_the_earlier_data_directory(native_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    load_data("native", native_dir, out, progress=False)
    before = loaders.read_items(out)
    (native_dir / "labels.csv").write_text("query_id,item_id,label\nq-sofa,A01,maybe\n")
    with pytest.raises(DataFormatError):
        load_data("native", native_dir, out, progress=False)
    pd.testing.assert_frame_equal(loaders.read_items(out), before)


def test_other_directories_are_never_replaced(native_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        load_data("native", native_dir, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="inside out_dir"):
        load_data("native", native_dir, native_dir, progress=False)


def test_unknown_format_and_missing_source(tmp_path: Path) -> None:
    assert set(FORMATS) == {"native", "esci", "wands"}
    with pytest.raises(ValueError, match="unknown data format"):
        load_data("csv", tmp_path, tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match="not found"):
        load_data("wands", tmp_path / "nowhere", tmp_path / "out")


# ---- WANDS ---------------------------------------------------------------------------------


@pytest.fixture()
def wands_out(tmp_path: Path) -> Path:
    sample = write_wands_sample(tmp_path / "wands")
    out = tmp_path / "out"
    summary = load_data("wands", sample.directory, out, progress=False)
    assert (summary.n_items, summary.n_queries) == (len(sample.products), 8)
    assert summary.has_labels and not summary.has_interactions
    return out


def _wands_file(tmp_path: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(
        tmp_path / "wands" / name, sep="\t", dtype=str, keep_default_na=False, quoting=3
    )


def test_wands_products_become_items(wands_out: Path, tmp_path: Path) -> None:
    products = _wands_file(tmp_path, "product.csv")
    items = loaders.read_items(wands_out)
    assert loaders.read_arrow(wands_out, S.ITEMS_FILE).schema.equals(S.ITEMS_SCHEMA)
    assert items.item_id.tolist() == products.product_id.tolist()
    assert items.title.tolist() == products.product_name.tolist()  # '' and " survive
    assert items.description.tolist() == products.product_description.tolist()
    assert (items.brand == "unknown").all() and (items.brand_idx == 0).all()
    assert (items.price == 0).all()
    unrated = products.average_rating == ""
    assert (items.rating[unrated] == 0).all() and (items.review_count[unrated] == 0).all()
    rated = ~unrated
    assert items.rating[rated].tolist() == pytest.approx(
        products.average_rating[rated].astype(float).tolist()
    )
    pop = items.popularity.to_numpy()
    assert (pop > 0).all() and pop.sum() == pytest.approx(1.0)
    counts = pd.to_numeric(products.rating_count).fillna(0).to_numpy()
    assert pop[counts.argmax()] == pop.max() and pop[counts.argmin()] == pop.min()


def test_wands_categories_come_from_the_hierarchy(wands_out: Path, tmp_path: Path) -> None:
    products = _wands_file(tmp_path, "product.csv")
    items = loaders.read_items(wands_out)
    for row, item in zip(products.itertuples(), items.itertuples(), strict=True):
        path = [p.strip() for p in row._4.split("/")] if row._4 else [row.product_class]
        assert (item.category_l1, item.category_l2, item.category_l3) == (
            path[0],
            path[1] if len(path) > 1 else path[0],
            path[-1],
        )
    categories = loaders.read_categories(wands_out)
    leaves = list(zip(items.category_l1, items.category_l2, items.category_l3, strict=True))
    assert len(categories) == len(set(leaves))
    for leaf, levels in zip(items.leaf_idx, leaves, strict=True):
        assert tuple(categories.iloc[leaf][["category_l1", "category_l2", "category_l3"]]) == levels


def test_wands_features_become_attributes(wands_out: Path) -> None:
    items = loaders.read_items(wands_out)
    by_noun = {kind.product_class: kind for kind in KINDS}
    for item in items.itertuples():
        pairs = _pairs(item.attributes)
        assert pairs and all(k == k.lower() and k for k, _ in pairs)
        assert all(0 < len(v) <= 40 and v != "no" for _, v in pairs)
        assert item.colour in item.title and item.material in item.title
        kind = next(k for k in KINDS if k.noun in item.title)
        assert (kind.colour_key, item.colour) in pairs
        assert (("upholstered", "yes") in pairs) == by_noun[kind.product_class].upholstered
        assert ("warrantylength", "1 year") in pairs
        assert pd.isna(item.size)


def test_wands_queries_and_labels(wands_out: Path, tmp_path: Path) -> None:
    queries = loaders.read_queries(wands_out)
    given = _wands_file(tmp_path, "query.csv")
    assert queries["query"].tolist() == given["query"].tolist()
    assert (queries.kind == "unknown").all() and (queries.leaf_idx == -1).all()
    assert queries.frequency.tolist() == pytest.approx([1 / len(given)] * len(given))
    labels = _wands_file(tmp_path, "label.csv")
    letter = {"Exact": "E", "Partial": "S", "Irrelevant": "I"}
    expected = {
        (int(q), pid): (letter[lab], S.ESCI_GAIN[letter[lab]])
        for q, pid, lab in zip(labels.query_id, labels.product_id, labels.label, strict=True)
    }
    qrels = loaders.read_qrels(wands_out)
    item_ids = loaders.read_items(wands_out).item_id
    got = {
        (int(q), item_ids[i]): (lab, g)
        for q, i, lab, g in zip(
            qrels.query_id, qrels.item_idx, qrels.label, qrels.gain, strict=True
        )
    }
    assert got == expected
    assert {g for _, g in got.values()} == {3, 2, 0}


def test_wands_exact_labels_are_coherent(wands_out: Path, tmp_path: Path) -> None:
    """Exact products carry every word of their query in the title; other judged ones do not."""
    items = loaders.read_items(wands_out)
    queries = loaders.read_queries(wands_out)["query"]
    qrels = loaders.read_qrels(wands_out)
    for q, i, label in zip(qrels.query_id, qrels.item_idx, qrels.label, strict=True):
        words = set(queries[q].split())
        assert (words <= set(items.title[i].split())) == (label == "E"), (queries[q], label)
    assert set(qrels.query_id) == set(range(len(queries)))
    assert qrels.groupby("query_id").label.apply(lambda s: (s == "E").any()).all()


def test_wands_has_no_log(wands_out: Path) -> None:
    assert loaders.read_shoppers(wands_out).empty
    assert loaders.read_interactions(wands_out, "train").empty
    assert loaders.read_interactions(wands_out, "test").empty
    assert not (wands_out / S.GROUND_TRUTH_DIR).exists()


def _edit_wands(directory: Path, name: str, row: int, column: str, value: str) -> None:
    frame = pd.read_csv(directory / name, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    frame.loc[row - 1, column] = value
    with (directory / name).open("w", encoding="utf-8") as f:
        f.write("\t".join(frame.columns) + "\n")
        f.writelines("\t".join(r) + "\n" for r in frame.itertuples(index=False))


@pytest.mark.parametrize(
    ("file", "column", "row", "value"),
    [
        ("label.csv", "label", 7, "Maybe"),
        ("label.csv", "product_id", 3, "999999"),
        ("label.csv", "query_id", 2, "4242"),
        ("product.csv", "average_rating", 5, "four"),
        ("product.csv", "product_id", 9, "10001"),
        ("query.csv", "query_id", 4, "0"),
    ],
)
def test_wands_bad_values_name_file_column_and_row(
    tmp_path: Path, file: str, column: str, row: int, value: str
) -> None:
    sample = write_wands_sample(tmp_path / "wands")
    _edit_wands(sample.directory, file, row, column, value)
    with pytest.raises(DataFormatError) as err:
        load_data("wands", sample.directory, tmp_path / "out", progress=False)
    assert (Path(err.value.file).name, err.value.column, err.value.row) == (file, column, row)
    assert repr(value) in str(err.value)
    _assert_nothing_written(tmp_path)


def test_wands_missing_file_or_column(tmp_path: Path) -> None:
    sample = write_wands_sample(tmp_path / "wands", n_products=12)
    (sample.directory / "query.csv").unlink()
    with pytest.raises(DataFormatError, match="labels need query.csv"):
        load_data("wands", sample.directory, tmp_path / "out", progress=False)
    (sample.directory / "product.csv").write_text("product_id\tproduct_class\n1\tSofas\n")
    with pytest.raises(DataFormatError, match="missing required column") as err:
        load_data("wands", sample.directory, tmp_path / "out", progress=False)
    assert err.value.column == "product_name"
    (sample.directory / "product.csv").unlink()
    with pytest.raises(DataFormatError, match="file not found") as err:
        load_data("wands", sample.directory, tmp_path / "out", progress=False)
    assert Path(err.value.file).name == "product.csv"
    _assert_nothing_written(tmp_path)


# ---- ESCI ----------------------------------------------------------------------------------


def _esci_rows() -> dict[str, list[str]]:
    return {
        "query": ["red shoes", "red shoes", "usb cable"],
        "product_id": ["B1", "B2", "B3"],
        "esci_label": ["E", "S", "C"],
        "product_title": ["Red Shoe", "Blue Shoe", "USB-C Cable"],
        "product_description": ["", "", ""],
        "product_brand": ["Acme", "", "Cablo"],
        "product_color": ["red", "blue", ""],
        "product_locale": ["us", "us", "us"],
    }


def test_esci_from_a_file_or_a_directory(tmp_path: Path) -> None:
    (tmp_path / "esci").mkdir()
    pq.write_table(pa.table(_esci_rows()), tmp_path / "esci" / "shopping_queries.parquet")
    for source, out in (
        (tmp_path / "esci", "a"),
        (tmp_path / "esci" / "shopping_queries.parquet", "b"),
    ):
        summary = load_data("esci", source, tmp_path / out, progress=False)
        assert (summary.n_items, summary.n_queries, summary.n_labels) == (3, 2, 3)
        assert summary.source_format == "esci" and summary.out_dir == tmp_path / out
        assert loaders.read_items(tmp_path / out).item_id.tolist() == ["B1", "B2", "B3"]


def test_esci_bad_sources(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(DataFormatError, match="exactly one .parquet"):
        load_data("esci", tmp_path / "none", tmp_path / "out", progress=False)
    rows = {k: v for k, v in _esci_rows().items() if k != "esci_label"}
    pq.write_table(pa.table(rows), tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match="lacks columns") as err:
        load_data("esci", tmp_path / "bad.parquet", tmp_path / "out", progress=False)
    assert err.value.column == "esci_label" and "bad.parquet" in str(err.value)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataFormatError, match="junk.parquet"):
        load_data("esci", tmp_path / "junk.parquet", tmp_path / "out", progress=False)
    _assert_nothing_written(tmp_path)


def _pairs(attributes: object) -> list[tuple[str, str]]:
    if not isinstance(attributes, str):
        return []
    return [tuple(entry.split(":", 1)) for entry in attributes.split("|")]  # type: ignore[misc]
