"""Reading and writing a data directory (the files of :mod:`recsys.data.schema`).

Readers return pandas DataFrames typed exactly as the schema says. They fail early and clearly:
a missing file raises ``FileNotFoundError`` telling how to create the data, a file lacking
expected columns raises ``ValueError`` naming them.

Parquet stores timestamps in milliseconds at the finest-but-one unit it has, so
``interactions_*.parquet`` hold ``ts`` as ``timestamp[ms]`` on disk; the readers here cast it
back to the schema's ``timestamp[s]``. Writers use fixed options (:data:`PARQUET_OPTIONS`) so
the same table always produces the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data import schema as S

PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
}
"""Options of every parquet file written (fixed, for byte-identical output)."""

PUBLIC_FILES: dict[str, pa.Schema] = {
    S.ITEMS_FILE: S.ITEMS_SCHEMA,
    S.CATEGORIES_FILE: S.CATEGORIES_SCHEMA,
    S.SHOPPERS_FILE: S.SHOPPERS_SCHEMA,
    S.TRAIN_FILE: S.INTERACTIONS_SCHEMA,
    S.TEST_FILE: S.INTERACTIONS_SCHEMA,
    S.QUERIES_FILE: S.QUERIES_SCHEMA,
    S.QRELS_FILE: S.QRELS_SCHEMA,
}
"""Files a model may read, with their schemas."""

HIDDEN_FILES: dict[str, pa.Schema] = {
    S.SHOPPER_PREFS_FILE: S.SHOPPER_PREFS_SCHEMA,
    S.ITEM_LATENT_FILE: S.ITEM_LATENT_SCHEMA,
    S.TEST_UTILITY_FILE: S.TEST_UTILITY_SCHEMA,
    S.QUERY_SPECS_FILE: S.QUERY_SPECS_SCHEMA,
}
"""Files of ``ground_truth/`` (evaluation only), with their schemas."""

GroundTruthName = Literal["shopper_preferences", "item_latent", "test_utility", "query_specs"]
_GROUND_TRUTH_FILES: dict[str, str] = {
    "shopper_preferences": S.SHOPPER_PREFS_FILE,
    "item_latent": S.ITEM_LATENT_FILE,
    "test_utility": S.TEST_UTILITY_FILE,
    "query_specs": S.QUERY_SPECS_FILE,
}


@dataclass(frozen=True)
class WorldSummary:
    """What a generator or loader wrote: counts and the paths of the files."""

    out_dir: Path
    n_items: int
    n_shoppers: int
    n_queries: int
    n_labels: int
    n_train_rows: int
    n_test_rows: int
    n_train_sessions: int
    n_test_sessions: int
    files: Mapping[str, Path] = field(default_factory=dict)
    """File name (relative to ``out_dir``) -> path, for every file written."""
    source_format: str = "synthetic"
    """Where the data came from: "synthetic" (the generator) or a format of
    :data:`recsys.data.formats.FORMATS` ("native", "esci", "wands")."""

    @property
    def has_labels(self) -> bool:
        """Whether ``query_labels.parquet`` holds any judged (query, item) pair."""
        return self.n_labels > 0

    @property
    def has_interactions(self) -> bool:
        """Whether the interaction log has any row (train or test)."""
        return self.n_train_rows + self.n_test_rows > 0


# ---- writing --------------------------------------------------------------------------------


def open_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A ParquetWriter with the fixed options; the parent folder is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return pq.ParquetWriter(path, schema, **PARQUET_OPTIONS)


def write_table(path: Path, table: pa.Table, schema: pa.Schema) -> None:
    """Write ``table`` (cast to ``schema``) as one parquet file with the fixed options."""
    with open_writer(path, schema) as writer:
        writer.write_table(table.cast(schema))


# ---- reading --------------------------------------------------------------------------------


def read_items(data_dir: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The catalog (``items.parquet``), optionally only some ``columns``; row = item_idx."""
    return _read(Path(data_dir), S.ITEMS_FILE, S.ITEMS_SCHEMA, columns)


def read_categories(data_dir: str | Path) -> pd.DataFrame:
    """The leaf categories (``categories.parquet``); row = leaf_idx."""
    return _read(Path(data_dir), S.CATEGORIES_FILE, S.CATEGORIES_SCHEMA)


def read_interactions(
    data_dir: str | Path,
    split: Literal["train", "test"],
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Logged impressions of one split, sorted by (day, ts, session_id, position)."""
    files = {"train": S.TRAIN_FILE, "test": S.TEST_FILE}
    if split not in files:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _read(Path(data_dir), files[split], S.INTERACTIONS_SCHEMA, columns)


def read_queries(data_dir: str | Path) -> pd.DataFrame:
    """Search queries (``queries.parquet``); row = query_id."""
    return _read(Path(data_dir), S.QUERIES_FILE, S.QUERIES_SCHEMA)


def read_qrels(data_dir: str | Path) -> pd.DataFrame:
    """Judged (query, item) pairs with ESCI label and gain (``query_labels.parquet``)."""
    return _read(Path(data_dir), S.QRELS_FILE, S.QRELS_SCHEMA)


def read_shoppers(data_dir: str | Path) -> pd.DataFrame:
    """Shoppers (``shoppers.parquet``); row = user_idx."""
    return _read(Path(data_dir), S.SHOPPERS_FILE, S.SHOPPERS_SCHEMA)


def read_ground_truth(data_dir: str | Path, name: GroundTruthName) -> pd.DataFrame:
    """A hidden file of ``ground_truth/`` by short name (evaluation code only)."""
    if name not in _GROUND_TRUTH_FILES:
        raise ValueError(
            f"unknown ground truth {name!r}; expected one of {list(_GROUND_TRUTH_FILES)}"
        )
    file = _GROUND_TRUTH_FILES[name]
    return _read(Path(data_dir) / S.GROUND_TRUTH_DIR, file, HIDDEN_FILES[file])


def read_arrow(data_dir: str | Path, file: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Any file of a data directory as an arrow table typed by its schema.

    ``file`` is a name from :data:`PUBLIC_FILES`, or one from :data:`HIDDEN_FILES` (looked up in
    ``ground_truth/``).
    """
    directory = Path(data_dir)
    if file in PUBLIC_FILES:
        return _read_arrow(directory, file, PUBLIC_FILES[file], columns)
    if file in HIDDEN_FILES:
        return _read_arrow(directory / S.GROUND_TRUTH_DIR, file, HIDDEN_FILES[file], columns)
    raise ValueError(
        f"unknown data file {file!r}; expected one of {[*PUBLIC_FILES, *HIDDEN_FILES]}"
    )


def _read(
    directory: Path, file: str, schema: pa.Schema, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    return _read_arrow(directory, file, schema, columns).to_pandas()


def _read_arrow(
    directory: Path, file: str, schema: pa.Schema, columns: Sequence[str] | None
) -> pa.Table:
    path = directory / file
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a complete data directory. Create it first "
            "with `recsys build` (or recsys.data.generate_world / recsys.data.load_data)."
        )
    present = set(pq.read_schema(path).names)
    missing = [name for name in schema.names if name not in present]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; expected {schema.names}")
    if columns is not None:
        unknown = [name for name in columns if name not in schema.names]
        if unknown:
            raise ValueError(f"unknown columns {unknown} for {file}; expected {schema.names}")
    table = pq.read_table(path, schema=schema, columns=list(columns) if columns else None)
    return table
