"""Warm-up requests, cold-start timing and readiness reports, without Ray.

The representative requests are run through the real stage objects of a tiny artifact: what
a replica does in its initialisation must be something the stage accepts and answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deployments.serve_main import cold_start_report, wait_ready
from recsys.artifacts import Artifact
from recsys.catalog import Catalog
from recsys.config import AppConfig, EncoderConfig, RoutingConfig, VariantConfig
from recsys.encoder import QueryEncoder
from recsys.pipeline import prepare
from recsys.ranking import CandidateRanker
from recsys.retrieval import Retriever
from recsys.routing import RoutingPolicy
from recsys.warmup import (
    LOAD,
    WARMUP,
    ColdStart,
    WarmupCatalog,
    chain_calls,
    encoder_warmup_batches,
    rank_batches,
    readiness,
    retrieval_batches,
    run_batches,
    sample_queries,
    served_batch_sizes,
    stage_report,
)


@pytest.fixture(scope="module")
def artifact(tiny_artifact: Path) -> Artifact:
    return Artifact.open(tiny_artifact)


@pytest.fixture(scope="module")
def warm_catalog(artifact: Artifact) -> WarmupCatalog:
    return WarmupCatalog.from_artifact(artifact)


# ---- cold-start timing -----------------------------------------------------------------------


def test_cold_start_times_each_phase_in_order_and_adds_repeats() -> None:
    cold = ColdStart("Retriever")
    with cold.phase(LOAD):
        pass
    with cold.phase(WARMUP):
        pass
    with cold.phase(LOAD):
        pass
    assert list(cold.seconds()) == [LOAD, WARMUP]
    assert all(s >= 0 for s in cold.phases.values())
    assert cold.total_s == pytest.approx(sum(cold.phases.values()))
    line = cold.log_line()
    assert line.startswith("cold start Retriever:") and LOAD in line and WARMUP in line


def test_a_phase_that_raises_is_still_timed() -> None:
    cold = ColdStart("Ranker")
    with pytest.raises(RuntimeError), cold.phase(LOAD):
        raise RuntimeError("weights missing")
    assert LOAD in cold.phases


# ---- representative requests -----------------------------------------------------------------


@pytest.mark.parametrize("max_batch_size", [1, 2, 3, 12, 16, 64, 100])
def test_served_batch_sizes_run_from_one_to_the_largest_batch(max_batch_size: int) -> None:
    sizes = served_batch_sizes(max_batch_size)
    assert sizes[0] == 1 and sizes[-1] == max_batch_size
    assert sizes == sorted(set(sizes))
    assert all(b <= 2 * a for a, b in zip(sizes, sizes[1:], strict=False))  # no shape far off


def test_served_batch_sizes_refuse_an_empty_batch() -> None:
    with pytest.raises(ValueError):
        served_batch_sizes(0)


def test_sample_queries_are_made_of_title_words(warm_catalog: WarmupCatalog) -> None:
    queries = sample_queries(warm_catalog.titles, 50)
    assert len(queries) == 50 and all(q.strip() for q in queries)
    vocabulary = {w for t in warm_catalog.titles for w in t.split()}
    assert all(set(q.split()) <= vocabulary for q in queries)


def test_warmup_catalog_reads_sizes_and_titles_from_the_artifact(
    artifact: Artifact, warm_catalog: WarmupCatalog, tiny_artifact: Path
) -> None:
    items = pd.read_parquet(tiny_artifact / "data" / "items.parquet", columns=["title"])
    shoppers = pd.read_parquet(tiny_artifact / "data" / "shoppers.parquet", columns=["user_id"])
    assert warm_catalog.n_items == len(items) and warm_catalog.n_users == len(shoppers)
    assert set(warm_catalog.titles) <= set(items["title"])


def test_encoder_warms_every_served_batch_size_with_a_real_forward() -> None:
    encoder = QueryEncoder(EncoderConfig(num_threads=1))
    sizes = served_batch_sizes(16)
    batches = encoder_warmup_batches(sizes)
    assert [len(b) for b in batches] == sizes
    shapes = []
    run_batches(lambda b: shapes.append(encoder.encode(b).shape), batches)
    assert shapes == [(n, encoder.dim) for n in sizes]


def test_retrieval_warmup_takes_every_path_and_gets_candidates(
    artifact: Artifact, warm_catalog: WarmupCatalog
) -> None:
    config = AppConfig(artifacts=str(artifact.root))
    retriever = Retriever.from_artifact(artifact, config.retrieval)
    sizes = served_batch_sizes(16)
    batches = retrieval_batches(warm_catalog, retriever.dim, 50, sizes)
    assert [len(b) for b in batches] == sizes
    flat = [r for b in batches for r in b]
    assert any(r.query_vec is not None and r.user_idx is None for r in flat)  # anonymous
    assert any(r.query_vec is not None and r.user_idx is not None for r in flat)  # personal
    assert any(r.query_vec is None and r.user_idx is not None for r in flat)  # recommend
    assert any(r.seed_item is not None for r in flat)  # similar
    assert any(r.item_filter is not None for r in flat)  # filtered
    answers: list[list] = []
    run_batches(lambda b: answers.append(retriever.retrieve(b)), batches)
    assert [len(a) for a in answers] == sizes
    assert all(len(c) > 0 for a in answers for c in a)


def test_rank_warmup_scores_every_candidate(
    artifact: Artifact, warm_catalog: WarmupCatalog
) -> None:
    ranker = CandidateRanker.from_artifact(artifact)
    sizes = served_batch_sizes(8)
    batches = rank_batches(warm_catalog, 200, sizes)
    flat = [r for b in batches for r in b]
    assert {r.user_idx is None for r in flat} == {True, False}
    assert {r.query is None for r in flat} == {True, False}
    assert any(r.seed_item is not None for r in flat)
    for batch in batches:
        scores = ranker.score(batch)
        assert [len(s) for s in scores] == [len(r.candidates) for r in batch]
        assert all(np.isfinite(s).all() for s in scores)


def test_chain_calls_reach_every_route_and_every_variant(artifact: Artifact) -> None:
    catalog = Catalog.from_artifact(artifact)
    routing = RoutingConfig(
        variants=[
            VariantConfig(name="control", weight=0.8),
            VariantConfig(name="wide", weight=0.2),
            VariantConfig(name="off", weight=0.0),
        ]
    )
    policy = RoutingPolicy(routing)
    calls = chain_calls(
        list(catalog.user_index),
        list(catalog.item_ids[:1]),
        list(catalog.titles[:32]),
        policy.variant_for,
        policy.variants,
    )
    prepared = [prepare(c.route, catalog, policy, 10, **c.ids) for c in calls]
    assert {p.route for p in prepared} == {"search", "recommend", "similar"}
    reached = {p.decision.variant for p in prepared}
    assert reached == {"control", "wide"}  # a variant of weight 0 can get no request
    assert any(p.route == "search" and not p.decision.personalised for p in prepared)


# ---- readiness -------------------------------------------------------------------------------


def report(stage: str, version: str | None = "v1", **kw: object) -> dict:
    cold = ColdStart(stage)
    with cold.phase(WARMUP):
        pass
    args: dict = {"warm": True, "version": version, "served": 0}
    args.update(kw)
    return stage_report(stage, cold, **args)


def test_ready_when_every_stage_is_warm_on_the_expected_version() -> None:
    ready, body = readiness(
        {
            "Ingress": report("Ingress"),
            "Retriever": report("Retriever"),
            "QueryEncoder": report("QueryEncoder", None),
        },
        {"Retriever": "v1"},
    )
    assert ready and body["ready"] is True and body["problems"] == []
    assert set(body["stages"]) == {"Ingress", "Retriever", "QueryEncoder"}
    assert all(WARMUP in s["cold_start_s"] for s in body["stages"].values())


@pytest.mark.parametrize(
    ("reports", "culprit"),
    [
        ({"Retriever": "no answer within 2 s"}, "Retriever"),
        ({"Retriever": report("Retriever", "v0")}, "Retriever"),
        ({"Ingress": report("Ingress", warm=False)}, "Ingress"),
        ({"Ranker": report("Ranker", gang={"tp": 2, "complete": False})}, "Ranker"),
    ],
    ids=["no-answer", "old-version", "cold", "broken-gang"],
)
def test_not_ready_names_the_stage_at_fault(reports: dict, culprit: str) -> None:
    stages = {"QueryEncoder": report("QueryEncoder", None), **reports}
    ready, body = readiness(stages, {"Retriever": "v1", "Ranker": "v1"})
    assert not ready and body["ready"] is False
    assert len(body["problems"]) == 1 and body["problems"][0].startswith(f"{culprit}:")
    assert body["stages"][culprit]["ready"] is False
    assert body["stages"]["QueryEncoder"]["ready"] is True


# ---- recsys serve waits for /readyz ----------------------------------------------------------


@pytest.fixture
def readyz_server() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server whose /readyz answers the status codes queued in the list (the
    last one repeats)."""
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            body = {
                "ready": status == 200,
                "version": "v1",
                "stages": {"Retriever": report("Retriever")},
            }
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", statuses
    server.shutdown()
    thread.join()


def test_wait_ready_returns_once_readyz_answers_200(readyz_server: tuple[str, list[int]]) -> None:
    base, statuses = readyz_server
    statuses.extend([503, 503, 200])
    body = wait_ready(base, timeout_s=30)
    assert body["ready"] is True
    lines = cold_start_report(body, {"ray_start": 1.0, "deploy": 2.0}).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "[recsys] cold start Retriever",
        "[recsys] cold start app",
    ]


def test_wait_ready_gives_up_with_the_last_answer(readyz_server: tuple[str, list[int]]) -> None:
    base, statuses = readyz_server
    statuses.append(503)
    with pytest.raises(TimeoutError, match="503"):
        wait_ready(base, timeout_s=1.5)
