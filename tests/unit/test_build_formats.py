"""Bring your own catalog: artifacts built from WANDS and native files, end to end in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys.artifacts import Artifact
from recsys.build import build_artifacts
from recsys.config import AppConfig, BuildConfig, IndexConfig, RankerConfig
from recsys.pipeline import Pipeline
from tests.samples import write_wands_sample

pytestmark = pytest.mark.slow  # each builds a small artifact with the real encoder

SMALL = BuildConfig(
    index=IndexConfig(kind="flat", tune_queries=10),
    ranker=RankerConfig(emb_dim=8, hidden=32, hidden2=16, epochs=3, batch_size=64),
)


@pytest.fixture(scope="module")
def wands(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, ...]]]:
    root = tmp_path_factory.mktemp("wands")
    sample = write_wands_sample(root / "wands")
    out = root / "artifact"
    build_artifacts(SMALL, out, progress=False, data=("wands", sample.directory))
    return out, sample.exact


def test_wands_artifact_says_what_it_learned_from(wands: tuple[Path, dict]) -> None:
    quality = Artifact.open(str(wands[0])).quality()
    assert quality["retrieval_mode"] == "hybrid"
    assert quality["ranker_trained_on"] == ["relevance"]
    assert "labelled queries only" in quality["ranker"]
    assert quality["data_source"]["format"] == "wands"


@pytest.mark.parametrize("typo", [False, True])
def test_wands_search_puts_exact_products_first(wands: tuple[Path, dict], typo: bool) -> None:
    artifact, exact = wands
    pipe = Pipeline.load(AppConfig(artifacts=str(artifact)))
    hits = 0
    for query, wanted in exact.items():
        text = query.replace("velvet", "velvte").replace("walnut", "walunt") if typo else query
        got = pipe.search(text, k=len(wanted)).items
        hits += sum(item.item_id in wanted for item in got)
    total = sum(len(w) for w in exact.values())
    assert hits / total >= 0.8, (hits, total)


def test_recsys_query_json_is_the_search_body(wands: tuple[Path, dict]) -> None:
    artifact, exact = wands
    query = next(iter(exact))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "query",
            query,
            "--artifacts",
            str(artifact),
            "--k",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    body = json.loads(done.stdout)
    assert set(body) >= {
        "request_id",
        "route",
        "variant",
        "degraded",
        "items",
        "timings_ms",
        "artifact_version",
    }
    pipe = Pipeline.load(AppConfig(artifacts=str(artifact)))
    assert [i["item_id"] for i in body["items"]] == [
        i.item_id for i in pipe.search(query, k=3).items
    ]


def test_items_only_catalog_serves_in_retrieval_order(tmp_path: Path) -> None:
    src = tmp_path / "native"
    src.mkdir()
    pd.DataFrame(
        {
            "item_id": [f"P{i}" for i in range(12)],
            "title": [
                f"{c} {m} lamp"
                for c in ("red", "blue", "green")
                for m in ("brass", "glass", "paper", "steel")
            ],
            "category": ["Lighting > Lamps"] * 12,
            "price": [20.0 + i for i in range(12)],
        }
    ).to_csv(src / "items.csv", index=False)
    out = tmp_path / "artifact"
    build_artifacts(SMALL, out, progress=False, data=("native", src))
    quality = Artifact.open(str(out)).quality()
    assert quality["ranker_trained_on"] == [] and "retrieval order" in quality["ranker"]
    pipe = Pipeline.load(AppConfig(artifacts=str(out)))
    items = pipe.search("blue glass lamp", k=5).items
    assert items[0].title == "blue glass lamp"
    scores = [i.score for i in items]
    assert scores == sorted(scores, reverse=True)


def test_bad_catalog_file_names_file_column_row_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "native"
    src.mkdir()
    (src / "items.csv").write_text("item_id,title,price\nA,lamp,10\nB,sofa,cheap\n")
    out = tmp_path / "artifact"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.cli",
            "build",
            "--data",
            str(src),
            "--format",
            "native",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "items.csv" in done.stderr and "price" in done.stderr and "row 2" in done.stderr
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
