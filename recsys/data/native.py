"""Load a catalog in the native format: our own documented schema, as parquet or CSV.

Native schema
-------------

A directory holding up to four tables. Each is ``NAME.parquet``, ``NAME.csv`` (comma
separated, a header row, UTF-8) or ``NAME.tsv`` (tab separated); exactly one file per table.
Column names are matched without case; unknown columns are ignored; empty cells are missing.

``items`` (required, at least one row)
    ``item_id`` (required, distinct), ``title`` (required column); optional ``description``,
    ``brand``, ``category`` (a path "Furniture > Living Room > Sofas"; "/" also separates
    when there is no ">"; any depth: level 1 = first, level 2 = second, leaf = last),
    ``price``, ``rating``, ``review_count`` (missing = 0, meaning unknown), ``popularity``
    (any non-negative weight), ``colour`` (or ``color``), ``material``, ``size``,
    ``attributes`` ("key:value|key:value", keys any case).
``queries`` (optional)
    ``query_id`` (distinct, any text), ``query`` (the search text).
``labels`` (optional, needs ``queries``)
    ``query_id``, ``item_id``, ``label``: E/S/C/I, Exact/Substitute/Complement/Irrelevant
    (Partial = Substitute), any case, or a gain 0..3 (3 = E). The first label of a
    (query, item) pair wins.
``interactions`` (optional)
    ``user_id``, ``item_id``, ``timestamp`` (ISO-8601, UTC unless it has an offset, or epoch
    seconds), ``event`` (impression/click/cart/purchase; add_to_cart also means cart) or
    ``label`` (0 impression, 1 click, 2 cart, 3 purchase); optional ``session_id``, and
    ``query_id`` (from ``queries``) or ``query`` (text; a text not in ``queries`` becomes a
    new query without labels); neither means a recommendation (no query) event.

How the data directory is derived
---------------------------------

* Items keep the input order (``item_idx`` = row). The colour/material/size columns win over
  attributes of the same meaning and are added to ``attributes``.
* Interactions: a session is one slate, the events of one user for one query (or none)
  within one ``session_id``, or, for rows without one, within a run of events no more than
  30 minutes apart. Each item appears once per session with its furthest event; ``position``
  is the order of the items' first events. ``day`` counts UTC calendar days from the first
  event; the last 15% of days (at least one, unless the log covers a single day) are the test
  split (``test_fraction``). ``shoppers`` lists users in order of appearance, with
  ``signup_day`` = the first day seen.
* ``popularity``: the ``popularity`` column if given, else clicks-or-better per item in the
  train split, else ``review_count``, else uniform; normalised to sum to 1 with a 1% floor
  spread evenly, so every item is > 0. Query ``frequency``: train sessions per query, else
  uniform, normalised the same way. Query ``kind`` is "unknown", ``leaf_idx`` -1.
* Missing tables are written empty (with the schema's columns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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

TABLES = ("items", "queries", "labels", "interactions")
"""The native tables, each a file ``NAME.parquet``, ``NAME.csv`` or ``NAME.tsv``."""
SUFFIXES = (".parquet", ".csv", ".tsv")
TEST_FRACTION = 0.15
"""Share of the log's days (the last ones) held out as the test split."""
EVENT_LABELS = {
    "impression": 0,
    "click": 1,
    "cart": 2,
    "add_to_cart": 2,
    "add-to-cart": 2,
    "addtocart": 2,
    "purchase": 3,
    **{str(label): label for label in range(4)},
}
"""Event names (and labels 0..3) -> interaction label."""
_MAX_EPOCH_SECONDS = 1e11  # year 5138: larger numbers are milliseconds or worse


def load_native(
    source: Path, out_dir: Path, progress: bool = True, test_fraction: float = TEST_FRACTION
) -> WorldSummary:
    """Convert the native-format directory ``source`` into a data directory at ``out_dir``.

    Everything is read and checked before anything is written. Writes in place (existing
    files are overwritten); :func:`recsys.data.formats.load_data` wraps this so a failure
    leaves nothing at ``out_dir``. Raises :class:`DataFormatError` for a bad input file.
    """
    files = find_tables(Path(source))
    if files["items"] is None:
        raise DataFormatError(
            Path(source) / "items.parquet", "missing required file (items.parquet/.csv/.tsv)"
        )
    items = read_source(files["items"])
    rows, given_popularity = _catalog(items, progress)
    item_index = {str(item_id): i for i, item_id in enumerate(rows.item_id)}
    query_index: dict[str, int] = {}
    texts: list[str] = []
    if files["queries"] is not None:
        queries = read_source(files["queries"])
        queries.require("query_id", "query")
        query_index = queries.unique_ids("query_id")
        texts = queries.ids("query").tolist()
    labels = _labels(files, query_index, item_index)
    events = EventRows.empty()
    if files["interactions"] is not None:
        events, texts = _events(read_source(files["interactions"]), item_index, query_index, texts)
    log = build_log(events, test_fraction, files["interactions"] or Path(source))
    popularity = _first_nonzero(
        given_popularity, log.item_engagement(len(rows)), rows.review_count.astype(np.float64)
    )
    items_table, categories = items_tables(rows, popularity)
    return write_world(
        Path(out_dir),
        "native",
        items_table,
        categories,
        queries_table(texts, log.query_sessions(len(texts))),
        labels,
        log,
    )


def find_tables(source: Path) -> dict[str, Path | None]:
    """The file of each native table in ``source`` (None where absent)."""
    if not source.is_dir():
        raise DataFormatError(source, "expected a directory holding items.parquet or items.csv")
    found: dict[str, Path | None] = {}
    for table in TABLES:
        paths = [source / f"{table}{s}" for s in SUFFIXES if (source / f"{table}{s}").is_file()]
        if len(paths) > 1:
            names = [p.name for p in paths]
            raise DataFormatError(paths[0], f"ambiguous: {names} all exist; keep one of them")
        found[table] = paths[0] if paths else None
    return found


def _catalog(items: SourceTable, progress: bool) -> tuple[CatalogRows, np.ndarray]:
    items.require("item_id", "title")
    if len(items) == 0:
        raise DataFormatError(items.path, "no items: the file has a header but no rows")
    items.unique_ids("item_id")
    colour_column = "colour" if items.has("colour") else "color"
    explicit = {
        "colour": items.text(colour_column),
        "material": items.text("material"),
        "size": items.text("size"),
    }
    raw = items.text("attributes")
    attributes = []
    for row in tqdm(range(len(items)), desc="native items", unit="item", disable=not progress):
        given = [(key, values[row]) for key, values in explicit.items()]
        attributes.append(attribute_pairs(given + _parse_attributes(items, raw[row], row)))
    rows = CatalogRows(
        item_id=items.ids("item_id"),
        title=items.text("title"),
        description=items.text("description"),
        category=[category_path(text) for text in items.text("category").tolist()],
        brand=items.text("brand"),
        attributes=attributes,
        price=items.numbers("price", minimum=0),
        rating=items.numbers("rating", minimum=0),
        review_count=items.numbers("review_count", integer=True, minimum=0),
    )
    return rows, items.numbers("popularity", minimum=0)


def _parse_attributes(items: SourceTable, text: str, row: int) -> list[tuple[str, str]]:
    pairs = []
    for entry in text.split("|"):
        if not entry.strip():
            continue
        key, colon, value = entry.partition(":")
        if not colon or not key.strip():
            raise items.error(
                "attributes", row, f"expected key:value pairs separated by '|', got {entry!r}"
            )
        pairs.append((key, value))
    return pairs


def _labels(
    files: dict[str, Path | None], query_index: dict[str, int], item_index: dict[str, int]
) -> pa.Table:
    path = files["labels"]
    if path is None:
        return S.QRELS_SCHEMA.empty_table()
    if files["queries"] is None:
        raise DataFormatError(path, "labels need a queries file (queries.parquet/.csv/.tsv)")
    labels = read_source(path)
    labels.require("query_id", "item_id", "label")
    return labels_table(
        labels.lookup("query_id", query_index, "query_id"),
        labels.lookup("item_id", item_index, "item_id"),
        labels.labels("label"),
    )


def _events(
    log: SourceTable, item_index: dict[str, int], query_index: dict[str, int], texts: list[str]
) -> tuple[EventRows, list[str]]:
    """Parse interactions; returns them and every query text (``texts`` first, then texts
    seen only in the log, in order of appearance)."""
    log.require("user_id", "item_id", "timestamp")
    if not (log.has("event") or log.has("label")):
        raise DataFormatError(
            log.path,
            f"missing required column 'event' (or 'label'); found {list(log.frame.columns)}",
            column="event",
        )
    label_column = "event" if log.has("event") else "label"
    values = log.text(label_column)
    label = np.fromiter((EVENT_LABELS.get(v.lower(), -1) for v in values), np.int64, len(values))
    if (label < 0).any():
        row = int(np.argmax(label < 0))
        raise log.error(
            label_column,
            row,
            f"unknown event {values[row]!r}; expected impression/click/cart/purchase or 0..3",
        )
    query = log.lookup("query_id", query_index, "query_id", allow_empty=True)
    all_texts = list(texts)
    by_text = {text: i for i, text in reversed(list(enumerate(texts)))}
    query_text = log.text("query")
    for i in np.flatnonzero((query < 0) & (query_text != "")).tolist():
        if query_text[i] not in by_text:
            by_text[query_text[i]] = len(all_texts)
            all_texts.append(query_text[i])
        query[i] = by_text[query_text[i]]
    events = EventRows(
        user_id=log.ids("user_id"),
        item_idx=log.lookup("item_id", item_index, "item_id"),
        ts=_timestamps(log, "timestamp"),
        label=label,
        session=log.text("session_id"),
        query_idx=query,
    )
    return events, all_texts


def _timestamps(log: SourceTable, column: str) -> np.ndarray:
    """ISO-8601 (UTC unless an offset is given) or epoch seconds, as int64 epoch seconds."""
    values = log.ids(column)
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    numeric = np.isfinite(numbers)
    too_big = numeric & (np.abs(numbers) >= _MAX_EPOCH_SECONDS)
    if too_big.any():
        row = int(np.argmax(too_big))
        raise log.error(column, row, f"expected epoch seconds, got {values[row]!r} (milliseconds?)")
    seconds = np.zeros(len(values), dtype=np.int64)
    seconds[numeric] = np.floor(numbers[numeric]).astype(np.int64)
    text = ~numeric
    if text.any():
        parsed = pd.to_datetime(
            pd.Series(values[text], dtype=object), utc=True, format="ISO8601", errors="coerce"
        )
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(text)[np.argmax(bad)])
            raise log.error(
                column, row, f"expected an ISO-8601 time or epoch seconds, got {values[row]!r}"
            )
        epoch = pd.Timestamp(0, tz="UTC")
        seconds[text] = ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    return seconds


def _first_nonzero(*weights: np.ndarray) -> np.ndarray:
    """The first weights with a positive total, else all ones (uniform)."""
    for w in weights:
        if w.sum() > 0:
            return w
    return np.ones_like(weights[0])
