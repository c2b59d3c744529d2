"""``recsys build``: synthetic world -> embeddings -> index -> ranker -> versioned artifact.

The artifact is written into a temporary sibling directory and renamed into place only when
complete, so a crashed build never leaves something that looks like an artifact.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys import layout
from recsys.artifacts import Manifest, write_manifest
from recsys.config import BuildConfig
from recsys.data import loaders
from recsys.data.generate import generate_world
from recsys.encoder import QueryEncoder, item_text
from recsys.features import ItemFeatureTable, ShopperState
from recsys.index.build import build_index
from recsys.ranker.train import train_ranker
from recsys.ranker.weights import save_ranker


@dataclass
class BuildResult:
    path: Path
    manifest: Manifest
    seconds: dict[str, float]


def embed_items(
    encoder: QueryEncoder, items_path: Path, out_path: Path, progress: bool
) -> np.ndarray:
    """Embed every item (``EncoderConfig.item_text``) into a float32 .npy, by row group."""
    meta = pq.ParquetFile(items_path)
    n = meta.metadata.num_rows
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(n, encoder.dim))
    from tqdm.auto import tqdm

    start = 0
    with tqdm(total=n, desc="embedding items", unit="item", disable=not progress) as bar:
        for group in range(meta.num_row_groups):
            frame = meta.read_row_group(group, columns=["title", "description"]).to_pandas()
            descriptions = (
                frame["description"]
                if encoder.config.item_text == "title_description"
                else [None] * len(frame)
            )
            texts = [item_text(t, d) for t, d in zip(frame["title"], descriptions, strict=True)]
            for s in range(0, len(texts), 4096):
                chunk = texts[s : s + 4096]
                out[start : start + len(chunk)] = encoder.encode_all(
                    chunk, max_length=encoder.config.item_max_length, progress=False
                )
                start += len(chunk)
                bar.update(len(chunk))
    out.flush()
    return np.load(out_path, mmap_mode="r")


def build_artifacts(
    config: BuildConfig, out: Path, progress: bool = True, force: bool = False
) -> BuildResult:
    """Build a complete artifact directory at ``out``."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists (use --force to replace it)")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    data_dir = work / layout.DATA_DIR
    summary = generate_world(config.data, data_dir, progress=progress)
    lap("generate_data")

    encoder = QueryEncoder(config.encoder)
    item_emb = embed_items(encoder, work / layout.ITEMS, work / layout.ITEM_EMBEDDINGS, progress)
    queries = loaders.read_queries(data_dir)
    query_emb = encoder.encode_all(queries["query"].tolist(), progress=progress, desc="queries")
    np.save(work / layout.QUERY_EMBEDDINGS, query_emb)
    lap("embed")

    index, index_report = build_index(
        item_emb, config.index, tune_queries=query_emb, progress=progress
    )
    index.save(work / layout.INDEX)
    lap("index")

    items = loaders.read_items(data_dir)
    train = loaders.read_interactions(data_dir, "train")
    n_users = len(loaders.read_shoppers(data_dir))
    trained = train_ranker(
        items,
        train,
        np.asarray(item_emb),
        query_emb,
        queries["query"].tolist(),
        n_users,
        config.ranker,
        progress=progress,
    )
    # serving knows shoppers from the whole train split (training rows saw only earlier days)
    table = ItemFeatureTable.from_items(items, trained.stats)
    shoppers = ShopperState.from_log(train, np.asarray(item_emb), table, n_users)
    np.save(work / layout.USER_HISTORY, shoppers.history.astype(np.float16))
    shoppers.profiles.save(work / layout.SHOPPER_PROFILES)
    save_ranker(trained.model, trained.stats, work, extra={"config": config.ranker.model_dump()})
    lap("ranker")

    del item_emb
    manifest = write_manifest(
        work,
        config=config.model_dump(mode="json"),
        reports={
            "data": _jsonable(summary),
            "index": index_report.to_dict(),
            "ranker": vars(trained.report),
            "build_seconds": seconds,
        },
    )
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return BuildResult(out, manifest, seconds)


def _jsonable(summary: object) -> dict[str, object]:
    raw = vars(summary) if hasattr(summary, "__dict__") else dict(summary)  # type: ignore[call-overload]
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in raw.items()}
