"""Bring your own catalog: one entry point that turns a public dataset into a data directory.

:func:`load_data` converts ``source`` in one of :data:`FORMATS` into the files of
:mod:`recsys.data.schema` at ``out_dir``:

``native``
    Our own documented schema, parquet or CSV: a directory with ``items`` (required),
    ``queries``, ``labels`` and ``interactions`` (see :mod:`recsys.data.native` for the
    columns).
``esci``
    The Shopping Queries dataset: its parquet file, or a directory holding exactly one
    ``.parquet`` file (:mod:`recsys.data.esci`; US locale).
``wands``
    The Wayfair ANnotation DataSet: a directory with tab-separated ``product.csv``,
    ``query.csv`` and ``label.csv`` (:mod:`recsys.data.wands`).

Only the synthetic generator writes ``ground_truth/``; a loaded dataset has none.

The result appears whole or not at all: the loader writes into a temporary sibling of
``out_dir`` that is renamed into place once complete. A bad input file raises
:class:`DataFormatError` naming the file, the column and the (1-based data) row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

import pyarrow as pa

from recsys.data.conversion import DataFormatError, staged_directory
from recsys.data.esci import load_esci
from recsys.data.loaders import WorldSummary
from recsys.data.native import load_native
from recsys.data.wands import load_wands

Format = Literal["native", "esci", "wands"]
FORMATS: tuple[Format, ...] = get_args(Format)
"""The formats :func:`load_data` reads."""

__all__ = ["FORMATS", "DataFormatError", "Format", "load_data"]


def load_data(fmt: Format, source: Path, out_dir: Path, progress: bool = True) -> WorldSummary:
    """Convert ``source`` (in format ``fmt``) into a complete data directory at ``out_dir``.

    ``out_dir`` may be absent, empty, or an earlier data directory (replaced whole); on any
    error nothing is left at ``out_dir`` (an earlier data directory stays as it was).
    Raises :class:`DataFormatError` for a bad or missing input file, ``ValueError`` for an
    unknown format or a ``source`` inside ``out_dir``, ``FileExistsError`` when ``out_dir``
    holds something other than a data directory.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {list(FORMATS)}")
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise DataFormatError(source, f"not found (a {fmt} dataset was expected here)")
    resolved_out = out_dir.resolve()
    if source.resolve() == resolved_out or resolved_out in source.resolve().parents:
        raise ValueError(f"source {source} is inside out_dir {out_dir}, which is replaced")
    with staged_directory(out_dir) as stage:
        summary = _LOADERS[fmt](source, stage, progress)
    return dataclasses.replace(
        summary, out_dir=out_dir, files={name: out_dir / name for name in summary.files}
    )


def _load_esci(source: Path, out_dir: Path, progress: bool) -> WorldSummary:
    if source.is_dir():
        files = sorted(source.glob("*.parquet"))
        if len(files) != 1:
            names = [f.name for f in files]
            raise DataFormatError(
                source, f"expected a directory holding exactly one .parquet file, found {names}"
            )
        source = files[0]
    try:
        return load_esci(source, out_dir, progress=progress)
    except pa.ArrowInvalid as exc:
        raise DataFormatError(source, f"cannot be read as an ESCI parquet file: {exc}") from exc


_LOADERS: dict[str, Callable[[Path, Path, bool], WorldSummary]] = {
    "native": load_native,
    "esci": _load_esci,
    "wands": load_wands,
}
