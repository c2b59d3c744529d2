"""Warm-up before traffic, cold-start timing, and readiness reports.

Why: a process that has just loaded a model or an index is not yet fast. The first torch
forward at a new batch shape allocates and picks kernels, thread pools start on first use,
index pages fault in on the first searches. A replica that takes traffic in that state
answers its first requests late, exactly when the cluster is short of capacity (a new
replica added by autoscaling) or when a user has just been told the service is up.

How: every stage runs representative requests through its own object during its
initialisation, before Serve routes to it: the encoder at each served batch size, the
retriever's search paths (query, personalised, recommendation, similar items, filtered),
the ranker's forward (every rank of a model-parallel gang takes part in each forward), and
the ingress one request per route and variant through the whole chain. Each phase of
the cold start (artifact open, load, warm-up) is timed with :class:`ColdStart` and reported
per stage: in the log, as a metric and in ``/readyz``.

The trade-off: a replica becomes ready a few hundred milliseconds to seconds later (the
warm-up's own cost, measured and reported as the ``warmup`` phase), in exchange for no
request ever paying for lazy initialisation.

Everything here is plain code over the library's public types; ``deployments/`` calls it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from recsys.types import Candidates, ItemFilter, RankQuery, RankRequest, RetrievalRequest, Route

T = TypeVar("T")

# Phases of a stage's cold start, in the order they happen (a stage has a subset).
ARTIFACT_OPEN = "artifact_open"
"""Find the artifact, read its manifest (and download it when remote)."""
LOAD = "load"
"""Read models, indexes and tables into memory (hashes verified)."""
GANG_START = "gang_start"
"""Start ranks 1..tp-1 of a model-parallel ranker and form the process group."""
STAGES_WAIT = "stages_wait"
"""Ingress only: until every downstream stage has a replica answering."""
WARMUP = "warmup"
"""Representative requests through the stage (the ingress: through the whole chain)."""


@dataclass
class ColdStart:
    """Wall time of each phase of one replica's start, in seconds.

    >>> cold = ColdStart("Retriever")
    >>> with cold.phase(LOAD):
    ...     pass
    >>> list(cold.phases)
    ['load']
    """

    stage: str
    phases: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (added up when a phase runs more than once)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    @property
    def total_s(self) -> float:
        return sum(self.phases.values())

    def seconds(self) -> dict[str, float]:
        """Phases in order, rounded to milliseconds (what reports and ``/readyz`` show)."""
        return {name: round(s, 3) for name, s in self.phases.items()}

    def log_line(self) -> str:
        """``cold start Retriever: artifact_open 0.010s, load 0.412s, ... (total 0.7s)``."""
        return cold_start_line(self.stage, self.phases)


def cold_start_line(stage: str, phases: Mapping[str, float]) -> str:
    parts = ", ".join(f"{name} {s:.3f}s" for name, s in phases.items())
    return f"cold start {stage}: {parts} (total {sum(phases.values()):.3f}s)"


# ---- representative requests -----------------------------------------------------------------


@dataclass(frozen=True)
class WarmupCatalog:
    """What warm-up requests are made of: some real item titles and the catalog's sizes."""

    titles: tuple[str, ...]
    n_items: int
    n_users: int

    def __post_init__(self) -> None:
        if not self.titles or self.n_items < 1:
            raise ValueError("warm-up needs a catalog with at least one titled item")

    @classmethod
    def from_artifact(cls, artifact: Any, sample: int = 64) -> WarmupCatalog:
        """Titles of the first ``sample`` items; sizes from the parquet metadata (cheap)."""
        import pyarrow.parquet as pq

        from recsys import layout

        items = pq.ParquetFile(artifact.path(layout.ITEMS))
        shoppers = pq.ParquetFile(artifact.path(layout.SHOPPERS))
        first = items.read_row_group(0, columns=["title"]).column("title").to_pylist()
        return cls(
            titles=tuple(str(t) for t in first[:sample]),
            n_items=items.metadata.num_rows,
            n_users=shoppers.metadata.num_rows,
        )


def served_batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes a stage will see, to warm each shape once: powers of two up to
    ``max_batch_size``, and ``max_batch_size`` itself (``12 -> [1, 2, 4, 8, 12]``)."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


def sample_queries(titles: Sequence[str], n: int) -> list[str]:
    """``n`` shopper-like queries from item titles: the product noun (last two words), the
    brand and first attributes (first three words), and whole titles, in turn."""
    forms: list[Callable[[list[str]], list[str]]] = [
        lambda w: w[-2:],
        lambda w: w[:3],
        lambda w: w,
    ]
    out: list[str] = []
    i = 0
    while len(out) < n:
        words = str(titles[i % len(titles)]).split() or ["item"]
        out.append(" ".join(forms[i % len(forms)](words)))
        i += 1
    return out


GENERIC_TITLES = (
    "Trailmaster waterproof leather hiking boots for men, wide fit",
    "Lumina adjustable LED desk lamp with USB charging port",
    "Merino wool crew socks, 3 pack",
    "Stainless steel electric kettle 1.7 l",
    "Kids' insulated winter jacket with hood",
    "Organic cotton bath towel set",
)
"""Product-like titles for a stage that does not open the artifact (the encoder): what it
embeds costs the same whatever the words."""


def encoder_warmup_batches(
    batch_sizes: Sequence[int], titles: Sequence[str] = GENERIC_TITLES
) -> list[list[str]]:
    """One batch of distinct queries per served batch size; the last query of each batch is
    long enough to reach the encoder's token limit (the widest shape it will see)."""
    queries = sample_queries(titles, sum(batch_sizes))
    long_query = " ".join(titles)
    bounds = np.cumsum([0, *batch_sizes])
    return [[*queries[a : b - 1], long_query] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def retrieval_batches(
    catalog: WarmupCatalog, dim: int, n_candidates: int, batch_sizes: Sequence[int], seed: int = 0
) -> list[list[RetrievalRequest]]:
    """One batch per served batch size, cycling through every retrieval path: an anonymous
    query, a personalised query, a recommendation from history, similar items, and a
    filtered query (the exact or over-fetching search)."""
    rng = np.random.default_rng(seed)
    batches = []
    for size in batch_sizes:
        vectors = _unit_vectors(rng, size, dim)
        batch = []
        for j in range(size):
            user = int(rng.integers(catalog.n_users)) if catalog.n_users else None
            item = int(rng.integers(catalog.n_items))
            kinds = [
                RetrievalRequest(n=n_candidates, query_vec=vectors[j]),
                RetrievalRequest(n=n_candidates, query_vec=vectors[j], user_idx=user),
                RetrievalRequest(n=n_candidates, user_idx=user),
                RetrievalRequest(n=n_candidates, seed_item=item),
                RetrievalRequest(
                    n=n_candidates, query_vec=vectors[j], item_filter=ItemFilter(price_min=0.0)
                ),
            ]
            request = kinds[j % len(kinds)]
            if request.query_vec is None and request.user_idx is None and request.seed_item is None:
                request = kinds[0]  # no shoppers in this catalog: nothing to recommend from
            batch.append(request)
        batches.append(batch)
    return batches


def rank_batches(
    catalog: WarmupCatalog, n_candidates: int, batch_sizes: Sequence[int], seed: int = 0
) -> list[list[RankRequest]]:
    """One batch per served batch size, each request with ``n_candidates`` real item ids
    (fewer in a smaller catalog): anonymous and known shoppers, with and without a query,
    and similar-items requests."""
    rng = np.random.default_rng(seed)
    queries = sample_queries(catalog.titles, max(batch_sizes))
    m = min(n_candidates, catalog.n_items)
    batches = []
    for size in batch_sizes:
        batch = []
        for j in range(size):
            user = int(rng.integers(catalog.n_users)) if catalog.n_users and j % 2 else None
            seed_item = int(rng.integers(catalog.n_items)) if j % 3 == 2 else None
            query = queries[j] if seed_item is None and j % 4 != 3 else None
            candidates = Candidates(
                item_idx=rng.choice(catalog.n_items, size=m, replace=False).astype(np.int64),
                score=np.sort(rng.uniform(-1, 1, m).astype(np.float32))[::-1].copy(),
                query_cos=rng.uniform(-1, 1, m).astype(np.float32),
                history_cos=rng.uniform(-1, 1, m).astype(np.float32),
                has_query=query is not None,
                has_history=user is not None,
            )
            batch.append(RankRequest.of(RankQuery(user, query, seed_item), candidates))
        batches.append(batch)
    return batches


def run_batches(call: Callable[[T], object], batches: Sequence[T]) -> list[float]:
    """Call ``call`` on each batch in turn; the seconds each took."""
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        call(batch)
        seconds.append(time.perf_counter() - started)
    return seconds


@dataclass(frozen=True)
class WarmupCall:
    """One request the ingress sends through the chain before it takes traffic."""

    route: Route
    ids: dict[str, Any]
    """Keyword arguments of ``recsys.pipeline.prepare`` (query, user_id, item_id, filters)."""


def chain_calls(
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    titles: Sequence[str],
    variant_for: Callable[[str], str],
    variants: Sequence[str],
    scan: int = 5000,
) -> list[WarmupCall]:
    """Requests that take every route through every ranker variant: an anonymous search,
    similar items, and for each variant a shopper routed to it (among the first ``scan``)
    with a personalised search and a recommendation. A variant no scanned shopper reaches
    (weight 0) gets none: no request can reach it either."""
    queries = sample_queries(titles, 2 + len(variants))
    calls = [
        WarmupCall("search", {"query": queries[0]}),
        WarmupCall("similar", {"item_id": item_ids[0]}),
    ]
    wanted = dict.fromkeys(variants)
    for user_id in user_ids[:scan]:
        variant = variant_for(user_id)
        if variant in wanted and wanted[variant] is None:
            wanted[variant] = user_id
            if all(wanted.values()):
                break
    for i, user_id in enumerate(u for u in wanted.values() if u is not None):
        calls.append(WarmupCall("search", {"query": queries[2 + i], "user_id": user_id}))
        calls.append(WarmupCall("recommend", {"user_id": user_id}))
    return calls


# ---- readiness -------------------------------------------------------------------------------


def stage_report(
    stage: str,
    cold: ColdStart,
    *,
    warm: bool,
    version: str | None,
    served: int,
    replica: str | None = None,
    gang: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a replica says about itself in ``readiness()``: ready when warm and (for a
    model-parallel ranker) its gang is complete."""
    ready = warm and (gang is None or bool(gang.get("complete")))
    report: dict[str, Any] = {
        "stage": stage,
        "ready": ready,
        "warm": warm,
        "version": version,
        "replica": replica,
        "served": served,
        "cold_start_s": cold.seconds(),
        "cold_start_total_s": round(cold.total_s, 3),
    }
    if gang is not None:
        report["gang"] = dict(gang)
    return report


def readiness(
    reports: Mapping[str, Mapping[str, Any] | str], expected_versions: Mapping[str, str | None]
) -> tuple[bool, dict[str, Any]]:
    """The app's readiness from each stage's report (or, for a stage that did not answer,
    the reason as a string): ``(ready, body)``. Ready when every stage answered ready and
    serves the artifact version expected of it (``expected_versions[stage]``; None or absent:
    any version). ``body["problems"]`` says what is not ready, one line per problem."""
    problems: list[str] = []
    stages: dict[str, Any] = {}
    for name, report in reports.items():
        if isinstance(report, str):
            problems.append(f"{name}: {report}")
            stages[name] = {"stage": name, "ready": False, "detail": report}
            continue
        stage = dict(report)
        expected = expected_versions.get(name)
        if expected is not None and stage.get("version") != expected:
            problems.append(f"{name}: serves version {stage.get('version')}, expected {expected}")
            stage["ready"] = False
        elif not stage.get("warm", False):
            problems.append(f"{name}: not warmed up")
        elif not stage.get("ready", False):
            problems.append(f"{name}: model-parallel gang incomplete ({stage.get('gang')})")
        stages[name] = stage
    ready = not problems
    return ready, {"ready": ready, "problems": problems, "stages": stages}
