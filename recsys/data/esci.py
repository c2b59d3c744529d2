"""Load the Shopping Queries (ESCI) dataset into the data-directory schema.

The input is one parquet file of judged (query, product) pairs joined with product text, as
published with the Shopping Queries dataset: columns ``query``, ``product_id``, ``esci_label``,
``product_title``, ``product_description``, ``product_brand``, ``product_color`` and
``product_locale`` (extra columns such as ``query_id`` or ``split`` are ignored).

Mapping onto :mod:`recsys.data.schema`:

* ``items.parquet``: one row per distinct ``product_id`` in first-appearance order
  (``item_id`` = product_id). ESCI has no category tree, so every item is in the single leaf 0
  named "unknown" at all three levels (``categories.parquet`` has that one row). Brand and colour
  come from the product columns (missing brand -> "unknown", missing colour -> null); material
  and size are null. ESCI has no prices or ratings: ``price`` and ``rating`` are 0.0 and
  ``review_count`` 0, meaning *unknown* (not free / badly rated). ``popularity`` is the item's
  share of judged rows.
* ``queries.parquet``: one row per distinct query string, kind "exact", ``leaf_idx`` -1,
  ``frequency`` = share of judged rows.
* ``query_labels.parquet``: one row per distinct (query, product) with the ESCI letter and
  its gain; labels may be letters (E/S/C/I) or long names (Exact/Substitute/Complement/
  Irrelevant), any case.
* ``shoppers.parquet`` and both interaction files are empty (ESCI has no behaviour log) and
  there is no ``ground_truth/``.

Product text is streamed in record batches, so memory holds the key columns, not every
description at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys.data import schema as S
from recsys.data.conversion import DataFormatError
from recsys.data.loaders import PUBLIC_FILES, WorldSummary, open_writer, write_table

REQUIRED_COLUMNS = (
    "query",
    "product_id",
    "esci_label",
    "product_title",
    "product_description",
    "product_brand",
    "product_color",
    "product_locale",
)
"""Columns an ESCI parquet file must have."""
UNKNOWN = "unknown"
"""Category names (and the brand) used where ESCI has no value."""

_LABEL_NAMES = {
    "e": "E",
    "s": "S",
    "c": "C",
    "i": "I",
    "exact": "E",
    "substitute": "S",
    "complement": "C",
    "irrelevant": "I",
}
_BATCH_ROWS = 65_536


def load_esci(
    path: str | Path, out_dir: Path, locale: str | None = "us", progress: bool = True
) -> WorldSummary:
    """Convert an ESCI parquet file into a data directory at ``out_dir``.

    ``locale`` keeps only rows whose ``product_locale`` equals it (None keeps every locale);
    rows without a query or product_id are skipped.
    Raises :class:`~recsys.data.conversion.DataFormatError` (a ``ValueError``) naming the file
    when required columns are missing, when labels are not ESCI labels, or when no row has the
    requested locale.
    """
    path = Path(path)
    source = pq.ParquetFile(path)
    _check_columns(path, source.schema_arrow.names)
    keys = source.read(columns=["query", "product_id", "esci_label", "product_locale"])
    keep = _locale_mask(path, keys.column("product_locale"), locale)
    keep &= pc.is_valid(keys.column("query")).to_numpy(zero_copy_only=False)
    keep &= pc.is_valid(keys.column("product_id")).to_numpy(zero_copy_only=False)
    keys = keys.filter(pa.array(keep))
    try:
        letters = esci_letters(keys.column("esci_label"))
    except ValueError as exc:
        raise DataFormatError(path, str(exc), column="esci_label") from exc
    item_codes, item_ids = _encode(keys.column("product_id"))
    query_codes, query_texts = _encode(keys.column("query"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_per_item = np.bincount(item_codes, minlength=len(item_ids))
    first_rows = np.zeros(len(keep), dtype=bool)
    first_rows[np.flatnonzero(keep)[np.unique(item_codes, return_index=True)[1]]] = True
    _write_items(source, first_rows, rows_per_item / rows_per_item.sum(), out_dir, progress)
    _write_queries(query_codes, query_texts, out_dir)
    n_labels = _write_labels(query_codes, item_codes, letters, len(item_ids), out_dir)
    _write_empty_behaviour(out_dir)
    return WorldSummary(
        out_dir=out_dir,
        n_items=len(item_ids),
        n_shoppers=0,
        n_queries=len(query_texts),
        n_labels=n_labels,
        n_train_rows=0,
        n_test_rows=0,
        n_train_sessions=0,
        n_test_sessions=0,
        files={name: out_dir / name for name in PUBLIC_FILES},
        source_format="esci",
    )


def esci_letters(labels: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """ESCI labels (letters or long names, any case) as an array of letters E/S/C/I.

    Raises ``ValueError`` naming the values that are not ESCI labels (nulls included).
    """
    chunked = pa.chunked_array([labels]) if isinstance(labels, pa.Array) else labels
    names = list(_LABEL_NAMES)
    normalised = pc.utf8_lower(pc.utf8_trim_whitespace(chunked))
    index = pc.index_in(normalised, value_set=pa.array(names, pa.string()))
    bad = pc.is_null(index)
    if pc.any(bad).as_py():
        unknown = sorted(repr(v) for v in pc.unique(pc.filter(chunked, bad)).to_pylist())
        raise ValueError(
            f"unknown ESCI labels {unknown[:10]}{' ...' if len(unknown) > 10 else ''}; "
            "expected E/S/C/I or Exact/Substitute/Complement/Irrelevant"
        )
    letters = np.array([_LABEL_NAMES[n] for n in names])
    return letters[pc.fill_null(index, 0).to_numpy()]


def _check_columns(path: Path, names: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataFormatError(
            path,
            f"ESCI file lacks columns {missing}; expected columns {list(REQUIRED_COLUMNS)} "
            f"(found {names})",
            column=missing[0],
        )


def _locale_mask(path: Path, locales: pa.ChunkedArray, locale: str | None) -> np.ndarray:
    if locale is None:
        return np.ones(len(locales), dtype=bool)
    keep = pc.fill_null(pc.equal(locales, locale), False).to_numpy()
    if not keep.any():
        found = sorted(str(v) for v in pc.unique(locales).to_pylist())
        raise DataFormatError(
            path,
            f"no ESCI rows with product_locale {locale!r}; found locales {found}",
            column="product_locale",
        )
    return np.asarray(keep, dtype=bool)


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Dense codes in first-appearance order, and the distinct values."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def _write_items(
    source: pq.ParquetFile,
    first_rows: np.ndarray,
    popularity: np.ndarray,
    out_dir: Path,
    progress: bool,
) -> None:
    """Stream product text, writing each product's first row (in first-appearance order)."""
    columns = [
        "product_id",
        "product_title",
        "product_description",
        "product_brand",
        "product_color",
    ]
    brands: dict[str, int] = {}
    offset = 0
    written = 0
    bar = tqdm(total=source.metadata.num_rows, desc="esci items", unit="row", disable=not progress)
    with open_writer(out_dir / S.ITEMS_FILE, S.ITEMS_SCHEMA) as writer:
        for batch in source.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
            mask = first_rows[offset : offset + batch.num_rows]
            offset += batch.num_rows
            bar.update(batch.num_rows)
            if mask.any():
                rows = pa.Table.from_batches([batch]).filter(pa.array(mask))
                writer.write_table(_items_table(rows, written, popularity, brands))
                written += rows.num_rows
    bar.close()
    write_table(out_dir / S.CATEGORIES_FILE, _categories_table(), S.CATEGORIES_SCHEMA)


def _items_table(
    rows: pa.Table, start: int, popularity: np.ndarray, brands: dict[str, int]
) -> pa.Table:
    n = rows.num_rows
    brand = [b if b else UNKNOWN for b in rows.column("product_brand").to_pylist()]
    brand_idx = np.array([brands.setdefault(b, len(brands)) for b in brand], dtype=np.int32)
    colour = [c if c else None for c in rows.column("product_color").to_pylist()]
    unknown = pa.array([UNKNOWN] * n, pa.string())
    nothing = pa.nulls(n, pa.string())
    return pa.table(
        {
            "item_idx": pa.array(np.arange(start, start + n, dtype=np.int32)),
            "item_id": rows.column("product_id").cast(pa.string()),
            "title": pc.fill_null(rows.column("product_title").cast(pa.string()), ""),
            "description": pc.fill_null(rows.column("product_description").cast(pa.string()), ""),
            "category_l1": unknown,
            "category_l2": unknown,
            "category_l3": unknown,
            "leaf_idx": pa.array(np.zeros(n, np.int32)),
            "brand": pa.array(brand, pa.string()),
            "brand_idx": pa.array(brand_idx),
            "colour": pa.array(colour, pa.string()),
            "material": nothing,
            "size": nothing,
            "price": pa.array(np.zeros(n, np.float32)),
            "rating": pa.array(np.zeros(n, np.float32)),
            "review_count": pa.array(np.zeros(n, np.int32)),
            "popularity": pa.array(popularity[start : start + n].astype(np.float32)),
            "attributes": pa.array([f"colour:{c}" if c else None for c in colour], pa.string()),
        },
        schema=S.ITEMS_SCHEMA,
    )


def _categories_table() -> pa.Table:
    return pa.table(
        {
            "leaf_idx": pa.array([0], pa.int32()),
            "category_l1": [UNKNOWN],
            "category_l2": [UNKNOWN],
            "category_l3": [UNKNOWN],
        },
        schema=S.CATEGORIES_SCHEMA,
    )


def _write_queries(codes: np.ndarray, texts: list[str], out_dir: Path) -> None:
    rows = np.bincount(codes, minlength=len(texts))
    table = pa.table(
        {
            "query_id": pa.array(np.arange(len(texts), dtype=np.int32)),
            "query": pa.array(texts, pa.string()),
            "kind": pa.array(["exact"] * len(texts), pa.string()),
            "leaf_idx": pa.array(np.full(len(texts), -1, np.int32)),
            "frequency": pa.array((rows / rows.sum()).astype(np.float32)),
        },
        schema=S.QUERIES_SCHEMA,
    )
    write_table(out_dir / S.QUERIES_FILE, table, S.QUERIES_SCHEMA)


def _write_labels(
    query_codes: np.ndarray,
    item_codes: np.ndarray,
    letters: np.ndarray,
    n_items: int,
    out_dir: Path,
) -> int:
    """One row per distinct (query, item), the first judgement kept; sorted by query, item."""
    pair = query_codes * n_items + item_codes
    _, first = np.unique(pair, return_index=True)
    chosen = letters[first]
    gain = np.zeros(len(first), np.int8)
    for letter, value in S.ESCI_GAIN.items():
        gain[chosen == letter] = value
    table = pa.table(
        {
            "query_id": pa.array(query_codes[first].astype(np.int32)),
            "item_idx": pa.array(item_codes[first].astype(np.int32)),
            "label": pa.array(chosen.tolist(), pa.string()),
            "gain": pa.array(gain),
        },
        schema=S.QRELS_SCHEMA,
    )
    write_table(out_dir / S.QRELS_FILE, table, S.QRELS_SCHEMA)
    return table.num_rows


def _write_empty_behaviour(out_dir: Path) -> None:
    for name, schema in (
        (S.SHOPPERS_FILE, S.SHOPPERS_SCHEMA),
        (S.TRAIN_FILE, S.INTERACTIONS_SCHEMA),
        (S.TEST_FILE, S.INTERACTIONS_SCHEMA),
    ):
        write_table(out_dir / name, schema.empty_table(), schema)
