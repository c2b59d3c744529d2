"""From the rows of a public dataset to a data directory: the parts every format loader shares.

A loader (:mod:`recsys.data.native`, :mod:`recsys.data.wands`) reads its files as text
(:func:`read_source`: every value a stripped string, "" where missing), turns columns into
typed arrays with :class:`SourceTable`'s parsers, and hands plain per-row arrays to the
builders here, which apply the rules common to all formats:

* items: ``item_idx`` dense in input order; a category path of any depth maps to
  ``category_l1`` = first element, ``category_l2`` = second (the first when the path has one),
  ``category_l3`` = last; ``leaf_idx`` is the dense index of distinct (l1, l2, l3) in
  first-appearance order and no category is "unknown" at all three levels. ``brand_idx`` is
  dense over distinct brands, a missing brand is "unknown". ``attributes`` is
  ``key:value|key:value`` (lower-case keys, distinct pairs, null when none); ``colour``,
  ``material`` and ``size`` repeat the first attribute whose key is one of
  :data:`COLOUR_KEYS`, :data:`MATERIAL_KEYS`, :data:`SIZE_KEYS` (compared without case, spaces,
  ``-`` or ``_``), else null. Unknown ``price``/``rating``/``review_count`` are 0 (meaning
  unknown, as in the ESCI loader).
* weights (item ``popularity``, query ``frequency``) are normalised by :func:`normalised`:
  shares of the given counts plus a 1% floor spread evenly, so they sum to 1 and every one
  is > 0; no counts at all gives a uniform weight.
* labels: one row per distinct (query, item), the first judgement kept (as ESCI).
* the log (:func:`build_log`): events become impression rows of sessions, a time split, and
  shoppers; see its docstring for the session and split rules.

Errors in the input raise :class:`DataFormatError`, naming the file, the column and the row
(the 1-based data row, header not counted: the first row under the header is row 1).

Output is written through :func:`staged_directory`: into a temporary sibling of ``out_dir``,
renamed into place only once complete, so a failed load leaves nothing at ``out_dir``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.data import schema as S
from recsys.data.loaders import PUBLIC_FILES, WorldSummary, write_table

UNKNOWN = "unknown"
"""Category levels and brand where the source has no value; also the query ``kind``."""
COLOUR_KEYS = ("colour", "color", "primarycolour", "primarycolor", "maincolour", "maincolor")
"""Attribute keys (in order of preference, compared compacted) that fill ``colour``."""
MATERIAL_KEYS = ("material", "primarymaterial", "mainmaterial")
"""Attribute keys that fill ``material``."""
SIZE_KEYS = ("size", "overallsize", "productsize", "itemsize")
"""Attribute keys that fill ``size``."""
WEIGHT_FLOOR = 0.01
"""Share of popularity/frequency mass spread evenly, so no item or query has weight 0."""
SESSION_GAP_S = 30 * 60
"""Events of one shopper and query further apart than this start a new session."""
SECONDS_PER_DAY = 86_400
GAIN_LETTERS = {gain: letter for letter, gain in S.ESCI_GAIN.items()}
"""Integer gain -> ESCI letter (3 E, 2 S, 1 C, 0 I)."""

_LABEL_NAMES = {
    **{letter.lower(): letter for letter in S.ESCI_LABELS},
    "exact": "E",
    "substitute": "S",
    "partial": "S",
    "complement": "C",
    "irrelevant": "I",
    **{str(gain): letter for gain, letter in GAIN_LETTERS.items()},
}
_INT16_MAX = int(np.iinfo(np.int16).max)


class DataFormatError(ValueError):
    """A source file that cannot be converted into a data directory.

    ``file`` is the file's path; ``column`` and ``row`` say where, when known (``row`` is the
    1-based data row, the header not counted); ``problem`` says what was expected.
    """

    def __init__(
        self, file: str | Path, problem: str, column: str | None = None, row: int | None = None
    ) -> None:
        self.file = str(file)
        self.problem = problem
        self.column = column
        self.row = row
        where = self.file
        if column is not None:
            where += f", column {column!r}"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[type[DataFormatError], tuple[str, str, str | None, int | None]]:
        return (DataFormatError, (self.file, self.problem, self.column, self.row))


# ---- reading source files as text ----------------------------------------------------------


@dataclass(frozen=True)
class SourceTable:
    """One input file as text: every value a stripped string, "" where missing.

    Column names are stripped, lower-cased, with spaces as ``_`` ("category hierarchy" reads
    as ``category_hierarchy``); row ``i`` of ``frame`` is data row ``i + 1``.
    """

    path: Path
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    def has(self, column: str) -> bool:
        """Whether the file has ``column`` (its values may still all be empty)."""
        return column in self.frame.columns

    def require(self, *columns: str) -> None:
        """Raise naming the first of ``columns`` the file lacks (and listing all of them)."""
        missing = [c for c in columns if not self.has(c)]
        if missing:
            raise DataFormatError(
                self.path,
                f"missing required column(s) {missing}; found {list(self.frame.columns)}",
                column=missing[0],
            )

    def error(self, column: str, index: int, problem: str) -> DataFormatError:
        """An error at 0-based frame row ``index`` (reported as data row ``index + 1``)."""
        return DataFormatError(self.path, problem, column=column, row=int(index) + 1)

    def text(self, column: str) -> np.ndarray:
        """The column's values as an object array of str ("" where missing or absent)."""
        if not self.has(column):
            return np.full(len(self), "", dtype=object)
        return np.asarray(self.frame[column].to_numpy(dtype=object), dtype=object)

    def ids(self, column: str) -> np.ndarray:
        """A required identifier column: every value non-empty."""
        values = self.text(column)
        empty = values == ""
        if empty.any():
            raise self.error(column, int(np.argmax(empty)), "expected an id, got an empty value")
        return values

    def unique_ids(self, column: str) -> dict[str, int]:
        """A key column: id -> 0-based row, refusing empty and duplicate ids."""
        values = self.ids(column)
        codes, uniques = pd.factorize(pd.Series(values, dtype=object))
        if len(uniques) < len(values):
            first_seen = np.full(len(uniques), -1)
            for row, code in enumerate(codes):
                if first_seen[code] >= 0:
                    raise self.error(
                        column,
                        row,
                        f"duplicate id {values[row]!r} (first at row {first_seen[code] + 1})",
                    )
                first_seen[code] = row
        return {str(v): i for i, v in enumerate(values)}

    def lookup(
        self, column: str, index: Mapping[str, int], what: str, allow_empty: bool = False
    ) -> np.ndarray:
        """Ids of ``column`` as rows of ``index`` (int64; -1 for empty when ``allow_empty``)."""
        values = self.text(column) if allow_empty else self.ids(column)
        found = np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))
        unknown = (found < 0) & (values != "")
        if unknown.any():
            row = int(np.argmax(unknown))
            raise self.error(column, row, f"unknown {what} {values[row]!r}")
        return found

    def numbers(
        self, column: str, integer: bool = False, minimum: float | None = None
    ) -> np.ndarray:
        """The column as float64, 0 where empty or absent; raises at the first bad value."""
        values = self.text(column)
        out = np.zeros(len(values), dtype=np.float64)
        present = values != ""
        if not present.any():
            return out
        parsed = pd.to_numeric(pd.Series(values[present], dtype=object), errors="coerce")
        numbers = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(numbers)
        bad = ~finite
        if integer:
            bad |= finite & (numbers != np.floor(np.where(finite, numbers, 0)))
        if minimum is not None:
            bad |= finite & (numbers < minimum)
        if bad.any():
            row = int(np.flatnonzero(present)[np.argmax(bad)])
            expected = "a whole number" if integer else "a number"
            if minimum is not None:
                expected += f" >= {minimum:g}"
            raise self.error(column, row, f"expected {expected}, got {values[row]!r}")
        out[present] = numbers
        return out

    def labels(self, column: str) -> np.ndarray:
        """ESCI letters from letters, names (Partial = Substitute) or gains 0..3, any case."""
        values = self.text(column)
        letters = np.array([_LABEL_NAMES.get(v.lower(), "") for v in values], dtype=object)
        bad = letters == ""
        if bad.any():
            row = int(np.argmax(bad))
            raise self.error(
                column,
                row,
                f"unknown label {values[row]!r}; expected E/S/C/I, Exact/Substitute (or "
                "Partial)/Complement/Irrelevant, or a gain 0..3",
            )
        return letters


def read_source(path: Path, sep: str | None = None) -> SourceTable:
    """Read a .parquet, .csv (comma; ``sep`` overrides) or .tsv file as text.

    Raises :class:`DataFormatError` when the file is missing or cannot be parsed.
    """
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = _parquet_as_text(path)
        elif suffix in (".csv", ".tsv"):
            frame = pd.read_csv(
                path,
                sep=sep or ("\t" if suffix == ".tsv" else ","),
                dtype=str,
                keep_default_na=False,
                na_filter=False,
            )
        else:
            raise DataFormatError(path, "unsupported file type; expected .parquet, .csv or .tsv")
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(path, "file is empty (no header row)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise DataFormatError(path, f"cannot be parsed: {exc}") from exc
    frame.columns = [re.sub(r"\s+", "_", str(c).strip().lower()) for c in frame.columns]
    for column in frame.columns:
        frame[column] = frame[column].astype(object).fillna("").astype(str).str.strip()
    return SourceTable(path, frame.reset_index(drop=True))


def _parquet_as_text(path: Path) -> pd.DataFrame:
    table = pq.read_table(path)
    columns: dict[str, np.ndarray] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
        except pa.ArrowNotImplementedError as exc:
            raise DataFormatError(
                path, f"unsupported column type {column.type}; expected text or numbers", name
            ) from exc
        columns[name] = pc.fill_null(text, "").to_numpy(zero_copy_only=False)
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


# ---- parsing values ------------------------------------------------------------------------


def category_path(text: str) -> list[str]:
    """Split a category path: on ">" if present, else on " / " if present, else on "/".

    ("Rugs / Indoor/Outdoor Rugs" keeps "Indoor/Outdoor Rugs" as one name.) Empty parts drop.
    """
    if ">" in text:
        parts = text.split(">")
    elif re.search(r"\s/|/\s", text):
        parts = re.split(r"\s+/\s*|\s*/\s+", text)
    else:
        parts = text.split("/")
    return [p.strip() for p in parts if p.strip()]


def compact_key(key: str) -> str:
    """An attribute key compared loosely: lower case, no spaces, ``-`` or ``_``."""
    return re.sub(r"[\s_\-]+", "", key.lower())


def attribute_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Clean (key, value) pairs: lower-case stripped keys, no ``|``/``:`` in keys, no ``|`` in
    values, empty keys or values dropped, duplicates dropped (first kept)."""
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for key, value in pairs:
        k = key.strip().lower().replace("|", " ").replace(":", " ")
        v = value.strip().replace("|", "/")
        if k and v and (k, v) not in seen:
            seen.add((k, v))
            out.append((k, v))
    return out


# ---- items ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogRows:
    """Per-item values in input order, as a loader read them (arrays of equal length)."""

    item_id: np.ndarray
    """str, distinct and non-empty."""
    title: np.ndarray
    description: np.ndarray
    category: list[list[str]]
    """The category path of each item ([] when unknown)."""
    brand: np.ndarray
    """str, "" when unknown."""
    attributes: list[list[tuple[str, str]]]
    """Cleaned (key, value) pairs of each item (see :func:`attribute_pairs`)."""
    price: np.ndarray
    rating: np.ndarray
    review_count: np.ndarray

    def __len__(self) -> int:
        return len(self.item_id)


def items_tables(rows: CatalogRows, popularity: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """``items.parquet`` and ``categories.parquet`` tables (see the module docstring)."""
    n = len(rows)
    levels = [_levels(path) for path in rows.category]
    leaves: dict[tuple[str, str, str], int] = {}
    leaf_idx = np.fromiter(
        (leaves.setdefault(lv, len(leaves)) for lv in levels), dtype=np.int32, count=n
    )
    brands: dict[str, int] = {}
    brand = [b or UNKNOWN for b in rows.brand.tolist()]
    brand_idx = np.fromiter((brands.setdefault(b, len(brands)) for b in brand), np.int32, n)
    items = pa.table(
        {
            "item_idx": pa.array(np.arange(n, dtype=np.int32)),
            "item_id": pa.array(rows.item_id.tolist(), pa.string()),
            "title": pa.array(rows.title.tolist(), pa.string()),
            "description": pa.array(rows.description.tolist(), pa.string()),
            "category_l1": pa.array([lv[0] for lv in levels], pa.string()),
            "category_l2": pa.array([lv[1] for lv in levels], pa.string()),
            "category_l3": pa.array([lv[2] for lv in levels], pa.string()),
            "leaf_idx": pa.array(leaf_idx),
            "brand": pa.array(brand, pa.string()),
            "brand_idx": pa.array(brand_idx),
            "colour": _keyed_value(rows.attributes, COLOUR_KEYS),
            "material": _keyed_value(rows.attributes, MATERIAL_KEYS),
            "size": _keyed_value(rows.attributes, SIZE_KEYS),
            "price": pa.array(rows.price.astype(np.float32)),
            "rating": pa.array(rows.rating.astype(np.float32)),
            "review_count": pa.array(rows.review_count.astype(np.int32)),
            "popularity": pa.array(normalised(popularity)),
            "attributes": pa.array(
                ["|".join(f"{k}:{v}" for k, v in pairs) or None for pairs in rows.attributes],
                pa.string(),
            ),
        },
        schema=S.ITEMS_SCHEMA,
    )
    categories = pa.table(
        {
            "leaf_idx": pa.array(np.arange(len(leaves), dtype=np.int32)),
            "category_l1": [lv[0] for lv in leaves],
            "category_l2": [lv[1] for lv in leaves],
            "category_l3": [lv[2] for lv in leaves],
        },
        schema=S.CATEGORIES_SCHEMA,
    )
    return items, categories


def _levels(path: list[str]) -> tuple[str, str, str]:
    if not path:
        return (UNKNOWN, UNKNOWN, UNKNOWN)
    return (path[0], path[1] if len(path) > 1 else path[0], path[-1])


def _keyed_value(attributes: list[list[tuple[str, str]]], keys: tuple[str, ...]) -> pa.Array:
    rank = {key: i for i, key in enumerate(keys)}
    out: list[str | None] = []
    for pairs in attributes:
        ranked = [(rank[c], v) for k, v in pairs if (c := compact_key(k)) in rank]
        out.append(min(ranked, key=lambda r: r[0])[1] if ranked else None)
    return pa.array(out, pa.string())


def normalised(weights: np.ndarray) -> np.ndarray:
    """Non-negative weights as float32 shares summing to 1, each > 0 (see WEIGHT_FLOOR)."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    if n == 0:
        return np.zeros(0, np.float32)
    total = w.sum()
    share = w / total if total > 0 else np.full(n, 1.0 / n)
    return ((share + WEIGHT_FLOOR / n) / (1.0 + WEIGHT_FLOOR)).astype(np.float32)


# ---- queries and labels --------------------------------------------------------------------


def queries_table(texts: Sequence[str], frequency: np.ndarray) -> pa.Table:
    """``queries.parquet``: query_id = row, kind "unknown", leaf_idx -1."""
    n = len(texts)
    return pa.table(
        {
            "query_id": pa.array(np.arange(n, dtype=np.int32)),
            "query": pa.array(list(texts), pa.string()),
            "kind": pa.array([UNKNOWN] * n, pa.string()),
            "leaf_idx": pa.array(np.full(n, -1, np.int32)),
            "frequency": pa.array(normalised(frequency)),
        },
        schema=S.QUERIES_SCHEMA,
    )


def labels_table(query_idx: np.ndarray, item_idx: np.ndarray, letters: np.ndarray) -> pa.Table:
    """``query_labels.parquet``: one row per distinct (query, item), first judgement kept,
    sorted by (query_id, item_idx)."""
    n_items = int(item_idx.max()) + 1 if len(item_idx) else 1
    pair = query_idx.astype(np.int64) * n_items + item_idx.astype(np.int64)
    _, first = np.unique(pair, return_index=True)
    chosen = letters[first]
    gain = np.array([S.ESCI_GAIN[letter] for letter in chosen.tolist()], dtype=np.int8)
    return pa.table(
        {
            "query_id": pa.array(query_idx[first].astype(np.int32)),
            "item_idx": pa.array(item_idx[first].astype(np.int32)),
            "label": pa.array(chosen.tolist(), pa.string()),
            "gain": pa.array(gain),
        },
        schema=S.QRELS_SCHEMA,
    )


# ---- the behaviour log ---------------------------------------------------------------------


@dataclass(frozen=True)
class EventRows:
    """Logged events in input order (arrays of equal length)."""

    user_id: np.ndarray
    """str, non-empty."""
    item_idx: np.ndarray
    ts: np.ndarray
    """int64 seconds since the epoch (UTC)."""
    label: np.ndarray
    """int: 0 impression, 1 click, 2 add-to-cart, 3 purchase."""
    session: np.ndarray
    """str: the source's session id, "" where it has none (sessions then come from gaps)."""
    query_idx: np.ndarray
    """int: query_id, -1 for a recommendation (no query) event."""

    @staticmethod
    def empty() -> EventRows:
        none = np.zeros(0, np.int64)
        text = np.zeros(0, dtype=object)
        return EventRows(text, none, none, none, text, none)


@dataclass(frozen=True)
class Log:
    """The log as the schema's tables, plus counts the catalog and queries are weighted by."""

    shoppers: pa.Table
    train: pa.Table
    test: pa.Table
    n_train_sessions: int
    n_test_sessions: int

    def item_engagement(self, n_items: int) -> np.ndarray:
        """Train rows with a click or more, per item (test rows never leak into weights)."""
        label = self.train.column("label").to_numpy()
        items = self.train.column("item_idx").to_numpy()[label >= 1]
        return np.bincount(items, minlength=n_items).astype(np.float64)

    def query_sessions(self, n_queries: int) -> np.ndarray:
        """Train sessions per query."""
        frame = self.train.select(["session_id", "query_id"]).to_pandas().drop_duplicates()
        queries = frame.query_id.to_numpy()
        return np.bincount(queries[queries >= 0], minlength=n_queries).astype(np.float64)


def build_log(events: EventRows, test_fraction: float, path: Path) -> Log:
    """Sessions, the time split and shoppers from raw events (``path`` names errors).

    * A session is one slate: the events of one shopper for one query (or none) within the
      source's session id when the row has one, else within a run of events no more than
      :data:`SESSION_GAP_S` apart. Its ``ts`` is its first event's time; ``session_id`` is
      dense in order of (ts, shopper).
    * Each item appears once per session, with the furthest funnel step (the maximum label) of
      its events; ``position`` is the order of the items' first events (0-based).
    * ``day`` = UTC calendar days since the first event's day. The last
      ``round(test_fraction * n_days)`` days (at least 1, but never every day: a log of a
      single day is all train) form the test split.
    * Shoppers: ``user_idx`` dense in first-appearance order, ``signup_day`` = first day seen.
    """
    if len(events.ts) == 0:
        empty = S.INTERACTIONS_SCHEMA.empty_table()
        return Log(S.SHOPPERS_SCHEMA.empty_table(), empty, empty, 0, 0)
    users, user_ids = pd.factorize(pd.Series(events.user_id, dtype=object))
    frame = pd.DataFrame(
        {
            "user": users,
            "query": events.query_idx.astype(np.int64),
            "item": events.item_idx.astype(np.int64),
            "ts": events.ts.astype(np.int64),
            "label": events.label.astype(np.int64),
            "order": np.arange(len(users)),
            "derived": events.session == "",
            "key": pd.factorize(pd.Series(events.session, dtype=object))[0],
        }
    )
    gap = frame[frame.derived].sort_values(["user", "query", "ts", "order"])
    if len(gap):
        u, q, t = (gap[c].to_numpy() for c in ("user", "query", "ts"))
        new = np.ones(len(gap), dtype=bool)
        new[1:] = (u[1:] != u[:-1]) | (q[1:] != q[:-1]) | (t[1:] - t[:-1] > SESSION_GAP_S)
        frame.loc[gap.index, "key"] = np.cumsum(new)
    frame["raw"] = frame.groupby(["user", "query", "derived", "key"], sort=False).ngroup()
    sessions = frame.groupby("raw").agg(
        start=("ts", "min"), user=("user", "first"), query=("query", "first")
    )
    sessions = sessions.sort_values(["start", "user"], kind="stable")
    sessions["session_id"] = np.arange(len(sessions), dtype=np.int64)
    t0_day = int(frame.ts.min()) // SECONDS_PER_DAY
    sessions["day"] = sessions.start.to_numpy() // SECONDS_PER_DAY - t0_day
    if int(sessions.day.max()) > _INT16_MAX:
        raise DataFormatError(path, f"the log spans more than {_INT16_MAX} days", "timestamp")
    shown = (
        frame.groupby(["raw", "item"], sort=False)
        .agg(label=("label", "max"), ts=("ts", "min"), order=("order", "min"))
        .reset_index()
        .sort_values(["raw", "ts", "order"])
    )
    shown["position"] = shown.groupby("raw").cumcount()
    if int(shown.position.max()) > _INT16_MAX:
        raise DataFormatError(path, f"a session shows more than {_INT16_MAX + 1} items")
    rows = shown.join(sessions, on="raw").sort_values(["session_id", "position"])
    n_days = int(sessions.day.max()) + 1
    test_days = min(max(1, round(test_fraction * n_days)), n_days - 1)
    is_test = rows.day.to_numpy() >= n_days - test_days
    table = pa.table(
        {
            "session_id": pa.array(rows.session_id.to_numpy(np.int64)),
            "user_idx": pa.array(rows.user.to_numpy(np.int32)),
            "ts": pa.array(rows.start.to_numpy(np.int64), pa.timestamp("s")),
            "day": pa.array(rows.day.to_numpy(np.int16)),
            "query_id": pa.array(rows["query"].to_numpy(np.int32)),
            "item_idx": pa.array(rows.item.to_numpy(np.int32)),
            "position": pa.array(rows.position.to_numpy(np.int16)),
            "label": pa.array(rows.label.to_numpy(np.int8)),
        },
        schema=S.INTERACTIONS_SCHEMA,
    )
    signup = sessions.groupby("user").day.min().sort_index().to_numpy()
    shoppers = pa.table(
        {
            "user_idx": pa.array(np.arange(len(user_ids), dtype=np.int32)),
            "user_id": pa.array([str(u) for u in user_ids], pa.string()),
            "signup_day": pa.array(signup.astype(np.int16)),
        },
        schema=S.SHOPPERS_SCHEMA,
    )
    train, test = table.filter(pa.array(~is_test)), table.filter(pa.array(is_test))
    return Log(
        shoppers,
        train,
        test,
        len(pc.unique(train.column("session_id"))),
        len(pc.unique(test.column("session_id"))),
    )


# ---- writing -------------------------------------------------------------------------------


def write_world(
    directory: Path,
    source_format: str,
    items: pa.Table,
    categories: pa.Table,
    queries: pa.Table,
    labels: pa.Table,
    log: Log,
) -> WorldSummary:
    """Write every public file into ``directory`` (created) and summarise it."""
    directory.mkdir(parents=True, exist_ok=True)
    tables = {
        S.ITEMS_FILE: items,
        S.CATEGORIES_FILE: categories,
        S.SHOPPERS_FILE: log.shoppers,
        S.TRAIN_FILE: log.train,
        S.TEST_FILE: log.test,
        S.QUERIES_FILE: queries,
        S.QRELS_FILE: labels,
    }
    for name, table in tables.items():
        write_table(directory / name, table, PUBLIC_FILES[name])
    return WorldSummary(
        out_dir=directory,
        n_items=items.num_rows,
        n_shoppers=log.shoppers.num_rows,
        n_queries=queries.num_rows,
        n_labels=labels.num_rows,
        n_train_rows=log.train.num_rows,
        n_test_rows=log.test.num_rows,
        n_train_sessions=log.n_train_sessions,
        n_test_sessions=log.n_test_sessions,
        files={name: directory / name for name in tables},
        source_format=source_format,
    )


@contextmanager
def staged_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir`` to write into; rename it to ``out_dir`` when
    the block completes, remove it when the block raises (``out_dir`` is then untouched).

    ``out_dir`` may be absent, an empty directory, or an earlier data directory (it holds
    ``items.parquet``), which is replaced whole; anything else raises ``FileExistsError``
    before the block runs.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not _replaceable(out_dir):
        raise FileExistsError(
            f"{out_dir} exists and is not a data directory (no {S.ITEMS_FILE}); refusing to "
            "replace it: choose a new or empty directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        out_dir.rename(old / out_dir.name)
        stage.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(out_dir)


def _replaceable(path: Path) -> bool:
    return path.is_dir() and (not any(path.iterdir()) or (path / S.ITEMS_FILE).is_file())
