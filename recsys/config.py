"""Typed configuration for every part of the system.

Every config is a pydantic model with a docstring per field, ``Literal`` for fixed choices and
unknown keys forbidden, so a typo in a YAML file fails loudly at load time instead of being
silently ignored. Nothing here imports Ray: the Serve app builder (``deployments.app``) turns
``AppConfig`` into deployment options.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Base for all configs: unknown keys are an error, values are validated on assignment."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )

    def config_hash(self) -> str:
        """Stable short hash of the config's content (key order independent)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Offline: data, models, index, artifact build
# --------------------------------------------------------------------------------------------


class DataConfig(StrictModel):
    """Size and shape of the synthetic e-commerce world."""

    n_items: int = Field(50_000, ge=100)
    """Number of catalog items."""
    n_shoppers: int = Field(20_000, ge=10)
    """Number of shoppers."""
    seed: int = 0
    """Seed for every random draw: the same seed gives byte-identical parquet files."""
    days: int = Field(60, ge=2)
    """Span of the interaction log in days; the last ``test_days`` are held out for testing."""
    test_days: int = Field(10, ge=1)
    """Days at the end of the log that form the test split."""
    sessions_per_shopper: float = Field(6.0, gt=0)
    """Mean number of sessions per shopper over the whole span (Poisson)."""
    impressions_per_session: int = Field(20, ge=2, le=200)
    """Items shown in one session (one ranked slate)."""
    search_session_share: float = Field(0.5, ge=0.0, le=1.0)
    """Share of sessions that start from a search query (the rest are recommendations)."""
    n_queries: int = Field(2_000, ge=10)
    """Number of distinct search queries with graded relevance labels."""
    labels_per_query: int = Field(40, ge=4)
    """Judged (query, item) pairs per query."""
    chunk_items: int = Field(100_000, ge=1_000)
    """Items generated and written per chunk (bounds memory for million-item catalogs)."""

    @model_validator(mode="after")
    def _check_split(self) -> Self:
        if self.test_days >= self.days:
            raise ValueError(f"test_days ({self.test_days}) must be < days ({self.days})")
        return self


class EncoderConfig(StrictModel):
    """The MiniLM query/item encoder."""

    max_length: int = Field(32, ge=4, le=512)
    """Token limit for queries (longer text is truncated)."""
    item_max_length: int = Field(32, ge=4, le=512)
    """Token limit for item text when embedding the catalog."""
    item_text: Literal["title", "title_description"] = "title"
    """What an item is embedded from: its title (brand, attributes, product noun: fast and
    what queries match) or title plus description (about 2x the tokens, 2-3x slower)."""
    batch_size: int = Field(256, ge=1)
    """Texts per forward pass when embedding in bulk."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the model runs; ``auto`` picks CUDA when torch sees a GPU."""
    precision: Literal["auto", "fp32", "int8", "fp16", "bf16"] = "auto"
    """Weights/activations: ``int8`` (dynamic quantisation) only on CPU, ``fp16``/``bf16`` only on
    GPU; ``auto`` means fp32 (on an H200 fp16 was no faster in one of two runs, about 1.5x at
    8-128 queries in the other, and changed 1.4% of a query's top 10, bf16 3%: results/gpu)."""
    num_threads: int | None = Field(None, ge=1)
    """torch intra-op threads (None: leave torch's default)."""
    graph: Literal["eager", "traced"] = "eager"
    """How the model runs: ``eager`` (its Python modules: one Python call per operator, each
    taking Python's GIL back) or ``traced`` (a TorchScript graph traced once at load: the
    same operators and results, one call into C++ per batch). Traced matters where the
    encoder shares a process with other busy threads (the fused topology's event loop):
    eager, every operator waits for the GIL behind them."""
    cache_size: int = Field(10_000, ge=0)
    """Entries in the query-embedding LRU cache (0 disables it)."""


IndexKind = Literal["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"]


class IndexConfig(StrictModel):
    """The FAISS candidate index."""

    kind: IndexKind = "auto"
    """Index type; ``auto`` chooses from catalog size (flat < 20K, IVF-Flat < 2M, else IVF-PQ)."""
    nlist: int | None = Field(None, ge=1)
    """IVF cells (None: about 4*sqrt(n), capped so every cell trains on >= 39 points)."""
    pq_m: int = Field(48, ge=1)
    """IVF-PQ sub-quantisers (must divide the dimension)."""
    pq_bits: int = Field(8, ge=4, le=12)
    """Bits per PQ code."""
    hnsw_m: int = Field(32, ge=4)
    """HNSW graph degree."""
    hnsw_ef_construction: int = Field(80, ge=8)
    """HNSW build-time beam width."""
    recall_target: float = Field(0.95, gt=0.0, le=1.0)
    """Recall@k against exact search that build-time tuning of nprobe / efSearch must reach."""
    tune_k: int = Field(100, ge=1)
    """k at which recall is measured while tuning."""
    tune_queries: int = Field(500, ge=10)
    """Held-out query vectors used for tuning."""
    use_gpu: Literal["auto", "never"] = "auto"
    """Move the index to GPU when FAISS sees one (``never`` keeps it on CPU)."""


class RankerConfig(StrictModel):
    """The DCN-v2 style ranker over sparse ids and dense features."""

    emb_dim: int = Field(32, ge=2)
    """Embedding width of every sparse feature (shopper, item, category, brand)."""
    cross_layers: int = Field(2, ge=0, le=6)
    """DCN-v2 cross layers on the concatenated input."""
    hidden: int = Field(256, ge=2)
    """Width of the column-parallel hidden layer (split across ranks when sharded)."""
    hidden2: int = Field(64, ge=1)
    """Width of the row-parallel layer's output."""
    epochs: int = Field(3, ge=1)
    """Passes over the training impressions."""
    batch_size: int = Field(2048, ge=16)
    """Training mini-batch size."""
    lr: float = Field(3e-3, gt=0)
    """Adam learning rate."""
    weight_decay: float = Field(1e-4, ge=0)
    """Adam weight decay on all parameters (curbs memorising shopper/item ids)."""
    max_train_rows: int | None = Field(None, ge=1000)
    """Cap on training impressions (None: all)."""
    seed: int = 0
    """Seed for initialisation and shuffling."""
    train_window_days: int = Field(30, ge=1)
    """The last days of the train split whose impressions train the ranker; earlier days only
    form the shoppers' history vectors (so a training row never sees its own clicks)."""
    relevance_weight: float = Field(2.0, ge=0.0)
    """Weight of the listwise relevance loss (labelled queries) against the behaviour loss."""
    lists_per_batch: int = Field(32, ge=1)
    """Labelled-query lists per training step."""
    hard_negatives: int = Field(60, ge=0)
    """Retrieved, unjudged, wrong-category candidates added to each labelled query's list."""
    validation_share: float = Field(0.1, ge=0.0, lt=0.5)
    """Labelled queries held out to pick the best epoch."""
    test_share: float = Field(0.25, ge=0.0, lt=0.9)
    """Labelled queries held out for evaluation (never trained on, also not their sessions)."""
    anonymous_share: float | None = Field(None, ge=0.0, lt=1.0)
    """Share of behaviour sessions shown to the model as anonymous (no shopper features), so it
    also ranks for shoppers it does not know. None: 0 when labelled queries train the
    anonymous shopper already (their lists are anonymous searches), else 0.1."""


class LexicalConfig(StrictModel):
    """The BM25 index over title, brand, attributes and category path (``bm25s``)."""

    k1: float = Field(1.2, ge=0)
    """BM25 term-frequency saturation."""
    b: float = Field(0.75, ge=0, le=1)
    """BM25 length normalisation."""


class BuildConfig(StrictModel):
    """Everything ``recsys build`` needs: the world, and how to turn it into an artifact."""

    data: DataConfig = DataConfig()
    encoder: EncoderConfig = EncoderConfig()
    index: IndexConfig = IndexConfig()
    lexical: LexicalConfig = LexicalConfig()
    retrieval_mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    """The artifact's retrieval mode (what a serve config's ``retrieval.mode: auto`` uses, and
    what the ranker's hard negatives come from)."""
    ranker: RankerConfig = RankerConfig()


# --------------------------------------------------------------------------------------------
# Online: retrieval, routing, the Serve application
# --------------------------------------------------------------------------------------------


RetrievalMode = Literal["auto", "dense", "lexical", "hybrid"]


class RetrievalConfig(StrictModel):
    """Candidate generation."""

    mode: RetrievalMode = "auto"
    """Where search candidates come from: ``dense`` (FAISS over MiniLM vectors), ``lexical``
    (BM25 over title, brand, attributes, category path; typo tolerant), ``hybrid`` (both,
    fused by reciprocal rank), or ``auto``: the mode the artifact was built with."""
    n_candidates: int = Field(200, ge=1, le=5000)
    """Candidates handed to the ranker (N)."""
    rrf_k: float = Field(60.0, gt=0)
    """Reciprocal-rank fusion constant: an item at rank r on one side adds w / (rrf_k + r)."""
    dense_weight_covered: float = Field(0.3, ge=0.0, le=1.0)
    """Hybrid fusion weights follow how much of the query the lexical index knows: with a
    share c of the query's words in the index, the lexical list weighs c and the dense list
    ``1 - (1 - dense_weight_covered) * c`` (a query of unknown words, "couch", is answered by
    the dense side; a fully indexed one leans on the lexical side)."""
    query_weight: float = Field(1.0, ge=0.0)
    """Weight of the query vector when a search request also names a known shopper."""
    history_weight: float = Field(0.3, ge=0.0)
    """Weight of the shopper's history vector mixed into a personalised search."""
    filter_exact_max: int = Field(50_000, ge=0)
    """When a filter leaves at most this many items, search them exactly instead of ANN +
    post-filter (filtered results are then complete, not a subset of the ANN top-N)."""
    overfetch: int = Field(4, ge=1, le=64)
    """ANN over-fetch factor for filtered searches over large subsets."""


class VariantConfig(StrictModel):
    """One A/B arm of the ranker."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    """Variant name, reported in every response and metric."""
    weight: float = Field(ge=0.0)
    """Share of known shoppers routed here (weights are normalised)."""
    artifacts: str | None = None
    """Artifact URI for this arm's ranker (None: the app's artifacts)."""


class RoutingConfig(StrictModel):
    """How the ingress routes a request."""

    variants: list[VariantConfig] = Field(
        default_factory=lambda: [VariantConfig(name="control", weight=1.0)]
    )
    """Ranker A/B arms. Anonymous shoppers always get the first one."""
    salt: str = "ab-2026"
    """Salt of the stable shopper hash (change it to reshuffle the arms)."""
    deadline_ms: float = Field(1000.0, gt=0)
    """End-to-end budget per request; past it the request is answered 503 + Retry-After."""
    fallback_reserve_share: float = Field(0.25, ge=0.0, lt=1.0)
    """Share of the deadline kept back for the fallback: the ranked answer must arrive before
    ``deadline_ms * (1 - share)``, else the ingress answers from the retrieved candidates in
    retrieval order (``degraded: true``)."""
    min_ranker_budget_ms: float = Field(5.0, ge=0.0)
    """If less than this is left for the ranked answer, do not wait for it: degrade."""
    retry_after_s: int = Field(1, ge=1)
    """Value of the ``Retry-After`` header on 503 answers."""

    @model_validator(mode="after")
    def _check_variants(self) -> Self:
        names = [v.name for v in self.variants]
        if not names:
            raise ValueError("routing.variants must name at least one variant")
        if len(set(names)) != len(names):
            raise ValueError(f"routing.variants has duplicate names: {names}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("routing.variants weights must not all be zero")
        return self


class AutoscalingConfig(StrictModel):
    """Serve replica autoscaling (mirrors the fields of Serve's ``autoscaling_config`` we use)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)
    metrics_interval_s: float = Field(1.0, gt=0)
    look_back_period_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling min_replicas > max_replicas")
        return self


class StageConfig(StrictModel):
    """Resources, batching and scaling of one Serve deployment."""

    num_cpus: float = Field(0.25, ge=0)
    """Logical CPUs per replica (fractional on small machines)."""
    num_gpus: float = Field(0.0, ge=0)
    """Logical GPUs per replica (fractions let stages share a GPU)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Ray custom resources per replica (each rank's bundle of a gang): a node pool's nodes
    advertise one (``k8s/cluster.yaml`` ``resources``), so replicas asking for it land only
    there (the fractional-GPU stages stay off the ranker's multi-GPU nodes)."""
    max_batch_size: int = Field(16, ge=1)
    """``@serve.batch`` maximum batch size."""
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    """``@serve.batch`` wait for a batch to fill."""
    max_ongoing_requests: int | None = Field(None, ge=1)
    """Concurrent requests per replica (None: 2 x max_batch_size so batches can fill)."""
    max_queued_requests: int = Field(64, ge=-1)
    """Requests a caller may queue for this deployment before back-pressure (-1: unbounded)."""
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    """Replica autoscaling."""
    torch_threads: int = Field(1, ge=1)
    """torch intra-op threads in the replica."""
    health_check_period_s: float = Field(2.0, gt=0)
    """How often Serve calls the replica's ``check_health`` (a failing one is replaced). It is
    also when Serve's controller learns that a replica's actor died: until then the callers'
    routers may still pick it, so it is short (Serve's own default is 10 s)."""
    fault_delay_ms: float = Field(0.0, ge=0)
    """Fault injection for drills and tests: extra delay per batch (keep 0 in production)."""

    @property
    def ongoing(self) -> int:
        return self.max_ongoing_requests or 2 * self.max_batch_size

    @model_validator(mode="after")
    def _check_batch_fits(self) -> Self:
        if (
            self.max_ongoing_requests is not None
            and self.max_ongoing_requests < self.max_batch_size
        ):
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) < max_batch_size "
                f"({self.max_batch_size}): batches could never fill"
            )
        return self


class AdmissionConfig(StrictModel):
    """Admission control and circuit breakers at the ingress (``recsys.admission``)."""

    enabled: bool = True
    """Refuse at once (503 ``overloaded``) what would queue past ``max_queue_ms``; off: only
    the queues' own bounds shed load."""
    max_queue_ms: float = Field(250.0, gt=0)
    """Longest a request may wait, from its arrival at the server until its group leaves
    for the stages (measured, and predicted from the groups ahead of it)."""
    retry_after_min_ms: int = Field(100, ge=0)
    """Smallest retry hint (``Retry-After-Ms``) of a refusal."""
    brownout_queue_ms: float | None = Field(125.0, gt=0)
    """A group whose longest-waiting request queued longer than this skips the ranker and is
    answered in retrieval order (degraded, ``ranker_shed``): under overload, cheaper answers
    rather than refusals, while the queue is past half its budget. None: never."""
    breaker_failures: int = Field(3, ge=1)
    """Failures in a row after which a stage is treated as down and skipped."""
    breaker_open_s: float = Field(2.0, gt=0)
    """How long a stage found down is skipped before one call tries it again."""


class IngressConfig(StrictModel):
    """The HTTP front door."""

    num_cpus: float = Field(0.25, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    """Ray custom resources per replica (the node pool it belongs on; see ``StageConfig``)."""
    max_ongoing_requests: int = Field(256, ge=1)
    """Requests one ingress replica works on at once (async, mostly waiting on stages)."""
    max_queued_requests: int = Field(256, ge=-1)
    """Requests queued at the proxy before it answers 503 + Retry-After."""
    max_body_bytes: int = Field(16_384, ge=256)
    """Larger request bodies are refused with 413."""
    max_query_chars: int = Field(1000, ge=1)
    """Longer queries are refused with 422."""
    group_max_size: int = Field(1, ge=1, le=256)
    """Concurrent requests sent down the stage chain together, as one call per stage
    (``recsys.coalesce``; 1: every request on its own)."""
    groups_in_flight: int = Field(256, ge=1)
    """Groups in the chain at once per ingress replica; requests arriving while all are busy
    queue and leave together as the next group, so groups grow with the load."""
    query_cache_size: int = Field(0, ge=0)
    """Query embeddings each ingress replica keeps (LRU, filled from the encoder's answers): a
    search whose query is cached skips the encoder call, one round trip fewer (0: off)."""
    group_queue_limit: int = Field(128, ge=0)
    """Requests one ingress replica lets wait for a free group slot; past it, new requests are
    answered 503 + Retry-After at once (load shedding instead of an unbounded queue)."""
    max_k: int = Field(100, ge=1, le=1000)
    """Largest ``k`` a request may ask for (larger: 422 naming ``k``). Retrieval fetches
    ``max(retrieval.n_candidates, k)`` candidates, so this bounds the work one request buys."""
    api_keys_env: str | None = Field("RECSYS_API_KEYS", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding comma-separated API keys (``recsys.access``); the keys
    themselves never appear in a config. None: read no variable."""
    api_keys_file: str | None = None
    """File with one API key per line (else the file ``RECSYS_API_KEYS_FILE`` names, if set);
    a named file that is missing or empty stops the ingress from starting. With no key from
    either source the API is open."""
    rate_limit_per_key_rps: float | None = Field(None, gt=0)
    """Requests a second each API key (each client address when keys are off) may make per
    ingress replica; more are answered 429 + ``Retry-After`` (None: no limit)."""
    rate_limit_burst: int = Field(20, ge=1)
    """Requests a caller may make at once above its rate (token bucket size)."""
    admission: AdmissionConfig = AdmissionConfig()
    """Admission control (load shedding by queue time) and per-stage circuit breakers."""
    autoscaling: AutoscalingConfig = AutoscalingConfig(target_ongoing_requests=32)


StageRole = Literal["encoder", "retriever", "ranker"]


class TopologyConfig(StrictModel):
    """Which stages share a deployment, and the model parallelism of the ranker."""

    layout: Literal["split", "fused"] = "split"
    """``split``: one deployment per stage (GPU node pools, independent autoscaling, the
    ranker's gang); ``fused``: the stages run inside the ingress replicas, batched across the
    ingress's request groups in-process (small CPU machines, no hop between processes)."""
    apart: list[StageRole] = []
    """With ``fused``: stages that keep a deployment of their own anyway (a partial mapping,
    say the ranker when ``tp > 1``)."""
    tp: int = Field(1, ge=1, le=64)
    """Ranks per ranker replica (1: single device)."""
    rank_device_memory_gb: float | None = Field(None, gt=0)
    """Memory each rank may use for parameters (None: not checked)."""
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    """Ranker weights precision; fp16/bf16 only on GPUs (CPU collectives run in fp32)."""
    timeout_s: float = Field(30.0, gt=0)
    """Collective timeout: a rank silent this long breaks the gang (and fails health checks)."""

    @model_validator(mode="after")
    def _layout_fits(self) -> Self:
        if self.apart and self.layout == "split":
            raise ValueError("topology.apart only applies to layout 'fused' (split: all apart)")
        if self.tp > 1 and self.in_ingress("ranker"):
            raise ValueError(
                "a model-parallel ranker (tp > 1) needs a deployment of its own (its gang's "
                "placement group): with layout 'fused', add 'ranker' to topology.apart"
            )
        return self

    def in_ingress(self, stage: StageRole) -> bool:
        """Whether ``stage`` runs inside the ingress replicas."""
        return self.layout == "fused" and stage not in self.apart


class AppConfig(StrictModel):
    """Typed arguments of the Serve application (``deployments.app.build_app``)."""

    artifacts: str = "artifacts/demo"
    """Artifact URI: a local path, ``file://``, ``s3://`` or ``gs://``."""
    cache_dir: str = ".cache/artifacts"
    """Where remote artifacts are copied before loading."""
    retrieval: RetrievalConfig = RetrievalConfig()
    routing: RoutingConfig = RoutingConfig()
    encoder: EncoderConfig = EncoderConfig(num_threads=1)
    topology: TopologyConfig = TopologyConfig()
    ingress: IngressConfig = IngressConfig()
    query_encoder: StageConfig = StageConfig()
    retriever: StageConfig = StageConfig()
    ranker: StageConfig = StageConfig()
    default_k: int = Field(10, ge=1, le=1000)
    """Items returned when a request does not say ``k`` (at most ``ingress.max_k``)."""

    @model_validator(mode="after")
    def _default_k_allowed(self) -> Self:
        if self.default_k > self.ingress.max_k:
            raise ValueError(
                f"default_k ({self.default_k}) must be <= ingress.max_k ({self.ingress.max_k})"
            )
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> AppConfig:
        """Load from a YAML or JSON file."""
        import yaml

        text = Path(path).read_text()
        data = yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text)
        return cls.model_validate(data or {})


STAGE_SECTIONS: dict[StageRole, str] = {
    "encoder": "query_encoder",
    "retriever": "retriever",
    "ranker": "ranker",
}
"""Each stage's ``AppConfig`` section (its deployment's settings when it has one)."""


def with_layout(config: AppConfig, layout: Literal["split", "fused"]) -> AppConfig:
    """``config`` with ``topology.layout`` set: for ``fused`` the ranker stays apart when it
    is model-parallel (``tp > 1``), and the ingress replica gets the logical CPUs of the
    stages that move into it (one replica of each at its ``num_cpus``); back to ``split``,
    it gives them back."""
    topology = config.topology
    if layout == topology.layout:
        return config
    if layout == "split":
        inside = [role for role in STAGE_SECTIONS if topology.in_ingress(role)]
        cpus = config.ingress.num_cpus - sum(
            getattr(config, STAGE_SECTIONS[role]).num_cpus for role in inside
        )
        new_topology = topology.model_copy(update={"layout": "split", "apart": []})
        ingress = config.ingress.model_copy(update={"num_cpus": round(max(cpus, 0.0), 3)})
        return config.model_copy(update={"topology": new_topology, "ingress": ingress})
    apart: list[StageRole] = ["ranker"] if topology.tp > 1 else []
    new_topology = TopologyConfig.model_validate(
        {**topology.model_dump(), "layout": "fused", "apart": apart}
    )
    moved = [role for role in STAGE_SECTIONS if role not in apart]
    cpus = config.ingress.num_cpus + sum(
        getattr(config, STAGE_SECTIONS[role]).num_cpus for role in moved
    )
    ingress = config.ingress.model_copy(update={"num_cpus": round(cpus, 3)})
    return config.model_copy(update={"topology": new_topology, "ingress": ingress})
