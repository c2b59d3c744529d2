"""``recsys build``: catalog -> embeddings -> dense + lexical indexes -> ranker -> artifact.

The artifact is written into a temporary sibling directory and renamed into place only when
complete, so a crashed build never leaves something that looks like an artifact.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys import layout
from recsys.artifacts import Manifest, write_manifest
from recsys.config import BuildConfig, RankerConfig, RetrievalConfig
from recsys.data import loaders
from recsys.data.generate import generate_world
from recsys.encoder import QueryEncoder, item_text
from recsys.features import FeatureStats, ItemFeatureTable, ShopperState
from recsys.index.build import build_index
from recsys.index.lexical import LexicalIndex, item_documents
from recsys.index.vector_index import VectorIndex
from recsys.matching import QueryCategorizer, QueryMatcher, category_paths
from recsys.ranker.listwise import build_lists
from recsys.ranker.train import SearchContext, train_ranker
from recsys.ranker.weights import save_ranker
from recsys.retrieval import ItemAttributes, Retriever
from recsys.types import RetrievalRequest


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
    config: BuildConfig,
    out: Path,
    progress: bool = True,
    force: bool = False,
    data: tuple[str, Path] | None = None,
) -> BuildResult:
    """Build a complete artifact directory at ``out``.

    ``data`` is ``(format, path)`` of a catalog to load (``recsys.data.formats``); None
    generates the synthetic world of ``config.data``.
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists (use --force to replace it)")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        manifest, seconds = _build_into(work, config, progress, data)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return BuildResult(out, manifest, seconds)


def _build_into(
    work: Path, config: BuildConfig, progress: bool, data: tuple[str, Path] | None
) -> tuple[Manifest, dict[str, float]]:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    data_dir = work / layout.DATA_DIR
    if data is None:
        summary: object = generate_world(config.data, data_dir, progress=progress)
        source = {"format": "synthetic", "seed": config.data.seed}
    else:
        from recsys.data.formats import load_data

        fmt, path = data
        summary = load_data(fmt, Path(path), data_dir, progress=progress)  # type: ignore[arg-type]
        source = {"format": fmt, "path": Path(path).name}
    lap("load_data" if data is not None else "generate_data")

    encoder = QueryEncoder(config.encoder)
    item_emb = embed_items(encoder, work / layout.ITEMS, work / layout.ITEM_EMBEDDINGS, progress)
    queries = loaders.read_queries(data_dir)
    query_emb = (
        encoder.encode_all(queries["query"].tolist(), progress=progress, desc="queries")
        if len(queries)
        else np.zeros((0, encoder.dim), np.float32)
    )
    np.save(work / layout.QUERY_EMBEDDINGS, query_emb)
    lap("embed")

    index, index_report = build_index(
        item_emb,
        config.index,
        tune_queries=query_emb if len(query_emb) else None,
        progress=progress,
    )
    index.save(work / layout.INDEX)
    lap("index")

    items = loaders.read_items(data_dir)
    lexical = LexicalIndex.build(
        item_documents(
            items["title"].tolist(),
            items["brand"].tolist(),
            items["attributes"].tolist(),
            category_paths(items),
        ),
        k1=config.lexical.k1,
        b=config.lexical.b,
        progress=progress,
    )
    lexical.save(work / layout.LEXICAL)
    lap("lexical_index")

    ranker_report = _train_stage(
        work, config, items, np.asarray(item_emb), query_emb, queries, index, lexical, progress
    )
    lap("ranker")

    del item_emb
    manifest = write_manifest(
        work,
        config=config.model_dump(mode="json"),
        reports={
            "data": {**_jsonable(summary), "source": source},
            "index": index_report.to_dict(),
            "ranker": ranker_report,
            "build_seconds": seconds,
        },
    )
    return manifest, seconds


def _train_stage(
    work: Path,
    config: BuildConfig,
    items: pd.DataFrame,
    item_emb: np.ndarray,
    query_emb: np.ndarray,
    queries: pd.DataFrame,
    index: VectorIndex,
    lexical: LexicalIndex,
    progress: bool,
) -> dict[str, object]:
    """Query split, query categoriser, hard negatives, ranker (or none), shopper state."""
    data_dir = work / layout.DATA_DIR
    split = split_queries(queries["query_id"].to_numpy(), config.ranker)
    split.to_parquet(work / layout.QUERY_SPLIT, index=False)
    qrels = loaders.read_qrels(data_dir)
    train_log = loaders.read_interactions(data_dir, "train")
    n_users = len(loaders.read_shoppers(data_dir))
    test_ids = split.loc[split["split"] == "test", "query_id"].to_numpy()
    train_log = train_log[~np.isin(train_log["query_id"].to_numpy(), test_ids)]

    categorizer = fit_categorizer(items, queries, qrels, train_log, split, lexical)
    categorizer.save(work / layout.QUERY_CATEGORIES)
    matcher = QueryMatcher.from_items(items, categorizer)
    search = SearchContext(queries["query"].astype(str).tolist(), matcher, lexical)

    stats = FeatureStats.fit(items)
    table = ItemFeatureTable.from_items(items, stats)
    lists = {}
    for part in ("train", "validation"):
        ids = split.loc[split["split"] == part, "query_id"].to_numpy()
        pool = hard_negative_pool(ids, query_emb, queries, index, item_emb, lexical, items, config)
        lists[part] = build_lists(
            qrels, ids, pool, items["leaf_idx"].to_numpy(), config.ranker.hard_negatives
        )
    has_behaviour = len(train_log) > 0 and train_log["label"].nunique() > 1
    if not has_behaviour and lists["train"].n_lists == 0:
        shoppers = ShopperState.from_log(train_log, item_emb, table, n_users)
        np.save(work / layout.USER_HISTORY, shoppers.history.astype(np.float16))
        shoppers.profiles.save(work / layout.SHOPPER_PROFILES)
        return {"trained_on": [], "note": "no labels and no interactions: retrieval order"}
    trained = train_ranker(
        items,
        train_log,
        item_emb,
        query_emb,
        search,
        n_users,
        config.ranker,
        relevance=lists["train"],
        validation=lists["validation"],
        progress=progress,
    )
    # serving knows shoppers from the whole train split (training rows saw only earlier days)
    shoppers = ShopperState.from_log(train_log, item_emb, table, n_users)
    np.save(work / layout.USER_HISTORY, shoppers.history.astype(np.float16))
    shoppers.profiles.save(work / layout.SHOPPER_PROFILES)
    save_ranker(trained.model, trained.stats, work, extra={"config": config.ranker.model_dump()})
    return vars(trained.report)


def split_queries(query_ids: np.ndarray, config: RankerConfig) -> pd.DataFrame:
    """Labelled queries into train / validation / test, by query (seeded, stable)."""
    rng = np.random.default_rng(config.seed + 7919)
    order = rng.permutation(len(query_ids))
    n_test = int(round(config.test_share * len(query_ids)))
    n_val = int(round(config.validation_share * len(query_ids)))
    parts = np.full(len(query_ids), "train", dtype=object)
    parts[order[:n_test]] = "test"
    parts[order[n_test : n_test + n_val]] = "validation"
    return pd.DataFrame({"query_id": query_ids.astype(np.int32), "split": parts.astype(str)})


def fit_categorizer(
    items: pd.DataFrame,
    queries: pd.DataFrame,
    qrels: pd.DataFrame,
    train_log: pd.DataFrame,
    split: pd.DataFrame,
    lexical: LexicalIndex,
) -> QueryCategorizer:
    """Word -> leaf evidence from the catalog itself (each item's title and category path,
    weighted low), training queries' relevant labels and search engagement."""
    train_ids = split.loc[split["split"] == "train", "query_id"].to_numpy()
    texts = queries["query"].astype(str).to_numpy()
    leaf = items["leaf_idx"].to_numpy()
    judged = qrels[np.isin(qrels["query_id"].to_numpy(), train_ids) & (qrels["gain"] >= 2)]
    engaged = train_log[(train_log["query_id"] >= 0) & (train_log["label"] > 0)]
    q = np.concatenate([judged["query_id"].to_numpy(), engaged["query_id"].to_numpy()])
    i = np.concatenate([judged["item_idx"].to_numpy(), engaged["item_idx"].to_numpy()])
    w = np.concatenate(
        [
            np.where(judged["gain"].to_numpy() >= 3, 1.0, 0.3),
            0.2 * engaged["label"].to_numpy(np.float64),
        ]
    )
    sizes = np.bincount(leaf, minlength=int(leaf.max()) + 1).astype(np.float64)
    titles = items["title"].astype(str).tolist()
    catalog = [f"{t} {p}" for t, p in zip(titles, category_paths(items, (2, 3)), strict=True)]
    return QueryCategorizer.fit(
        [*texts[q].tolist(), *catalog],
        np.concatenate([leaf[i], leaf]),
        np.concatenate([w, np.full(len(leaf), CATALOG_EVIDENCE)]),
        sizes,
        correct=lexical.corrector.correct,
    )


CATALOG_EVIDENCE = 0.1
"""Weight of one item's own words as evidence for its leaf (a labelled exact item weighs 1)."""


def hard_negative_pool(
    query_ids: np.ndarray,
    query_emb: np.ndarray,
    queries: pd.DataFrame,
    index: VectorIndex,
    item_emb: np.ndarray,
    lexical: LexicalIndex,
    items: pd.DataFrame,
    config: BuildConfig,
) -> dict[int, np.ndarray]:
    """The retriever's own candidates (the artifact's mode, anonymous) for each query."""
    retriever = Retriever(
        index,
        item_emb,
        np.zeros((1, item_emb.shape[1]), np.float32),
        ItemAttributes.from_frame(items),
        RetrievalConfig(mode=config.retrieval_mode),
        lexical,
        config.retrieval_mode,
    )
    texts = queries["query"].astype(str).tolist()
    out: dict[int, np.ndarray] = {}
    n = max(config.ranker.hard_negatives * 2, 100)
    for s in range(0, len(query_ids), 256):
        chunk = [int(q) for q in query_ids[s : s + 256]]
        found = retriever.retrieve(
            [RetrievalRequest(n=n, query_vec=query_emb[q], query=texts[q]) for q in chunk]
        )
        out.update({q: c.item_idx for q, c in zip(chunk, found, strict=True)})
    return out


def _jsonable(summary: object) -> dict[str, object]:
    raw = vars(summary) if hasattr(summary, "__dict__") else dict(summary)  # type: ignore[call-overload]
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in raw.items()}
