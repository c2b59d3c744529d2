"""A WANDS-format catalog built and served by ``recsys serve``: real Ray, real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from recsys.build import build_artifacts
from recsys.config import BuildConfig, IndexConfig, RankerConfig
from tests.integration.conftest import free_port
from tests.integration.test_readiness import ServeProcess
from tests.samples import write_wands_sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wands_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    root = tmp_path_factory.mktemp("wands-serve")
    sample = write_wands_sample(root / "wands")
    config = BuildConfig(
        index=IndexConfig(kind="flat", tune_queries=10),
        ranker=RankerConfig(emb_dim=8, hidden=32, hidden2=16, epochs=3, batch_size=64),
    )
    artifact = root / "artifact"
    build_artifacts(config, artifact, progress=False, data=("wands", sample.directory))
    port = free_port()
    proc = ServeProcess(["--artifacts", str(artifact), "--port", str(port)])
    try:
        proc.wait_banner(timeout_s=480)
        yield f"http://127.0.0.1:{port}", {"exact": sample.exact, "artifact": str(artifact)}
    finally:
        proc.stop()


def test_wands_catalog_answers_searches_with_its_exact_products(
    wands_server: tuple[str, dict],
) -> None:
    base, info = wands_server
    exact = info["exact"]
    with httpx.Client(base_url=base, timeout=30) as client:
        hits = total = 0
        for query, wanted in exact.items():
            for text in (query, query.replace("sofa", "sfoa").replace("table", "tabel")):
                r = client.post("/v1/search", json={"query": text, "k": len(wanted)})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["degraded"] is False
                hits += sum(item["item_id"] in wanted for item in body["items"])
                total += len(wanted)
        assert hits / total >= 0.8, (hits, total)
        filtered = client.post(
            "/v1/search", json={"query": "sofa", "k": 5, "filters": {"category": "Sofas"}}
        )
        assert filtered.status_code == 200 and filtered.json()["items"]
        assert all("sofa" in i["title"].lower() for i in filtered.json()["items"])


def test_wands_version_says_what_the_ranker_learned_from(wands_server: tuple[str, dict]) -> None:
    base, _ = wands_server
    with httpx.Client(base_url=base, timeout=30) as client:
        version = client.get("/v1/version").json()
        assert version["retrieval_mode"] == "hybrid"
        assert version["ranker_trained_on"] == ["relevance"]
        assert version["data_source"]["format"] == "wands"
        # a catalog without a behaviour log has no shoppers: a clear 404, not a 500
        r = client.post("/v1/recommend", json={"user_id": "U0000001"})
        assert r.status_code == 404 and r.json()["error"]


def test_recsys_query_json_gives_the_served_answer(wands_server: tuple[str, dict]) -> None:
    base, info = wands_server
    query = next(iter(info["exact"]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "query",
            query,
            "--artifacts",
            info["artifact"],
            "--k",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    local = json.loads(done.stdout)
    with httpx.Client(base_url=base, timeout=30) as client:
        served = client.post("/v1/search", json={"query": query, "k": 5}).json()
    assert set(local) == set(served)
    assert [i["item_id"] for i in local["items"]] == [i["item_id"] for i in served["items"]]
    assert local["artifact_version"] == served["artifact_version"]
