"""The versioned artifact store: manifest, hashes, tamper detection, URIs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recsys import layout
from recsys.artifacts import MANIFEST, Artifact, ArtifactError, write_manifest


@pytest.fixture
def small_artifact(tmp_path: Path) -> Path:
    root = tmp_path / "art"
    (root / "data").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"\x00\x01" * 1000)
    (root / "data" / "b.txt").write_text("hello")
    write_manifest(root, config={"k": 1}, reports={"r": {"x": 2}})
    return root


def test_manifest_lists_every_file_with_hash_and_a_content_version(small_artifact: Path) -> None:
    data = json.loads((small_artifact / MANIFEST).read_text())
    assert set(data["files"]) == {"a.bin", "data/b.txt"}
    assert data["files"]["a.bin"]["bytes"] == 2000
    assert data["version"].startswith("v") and len(data["version"]) == 13
    assert data["config"] == {"k": 1} and "torch" in data["libraries"]
    again = write_manifest(small_artifact)
    assert again.version == data["version"]  # same content, same version
    (small_artifact / "data" / "b.txt").write_text("hello!")
    assert write_manifest(small_artifact).version != data["version"]


def test_open_verifies_and_refuses_tampered_or_missing_files(small_artifact: Path) -> None:
    art = Artifact.open(small_artifact)
    art.verify()
    (small_artifact / "a.bin").write_bytes(b"\x00\x02" * 1000)  # same size, other content
    with pytest.raises(ArtifactError, match="a.bin does not match its manifest"):
        Artifact.open(small_artifact).path("a.bin")
    (small_artifact / "data" / "b.txt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Artifact.open(small_artifact).path("data/b.txt")
    with pytest.raises(ArtifactError, match="no file 'nope'"):
        Artifact.open(small_artifact).path("nope")


def test_missing_directory_or_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        Artifact.open(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Artifact.open(tmp_path / "half")
    (tmp_path / "half" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid manifest"):
        Artifact.open(tmp_path / "half")


def test_remote_uri_is_fetched_through_pyarrow_fs_and_verified(
    small_artifact: Path, tmp_path: Path
) -> None:
    """A URI with a scheme goes through pyarrow.fs (here its local filesystem: mock://... is not
    a real scheme, so we use pyarrow's own 'file' handler via an explicit scheme-less path)."""
    cache = tmp_path / "cache"
    art = Artifact._open_remote(f"file://{small_artifact}", cache)
    assert art.root == cache / art.version
    assert (art.root / "a.bin").read_bytes() == (small_artifact / "a.bin").read_bytes()
    art.verify()
    # tamper with the source: the cached copy is re-fetched, then fails verification
    (small_artifact / "a.bin").write_bytes(b"\x00\x03" * 1000)
    shutil.rmtree(cache)
    bad = Artifact._open_remote(f"file://{small_artifact}", cache)
    with pytest.raises(ArtifactError, match="does not match"):
        bad.path("a.bin")


def test_unreachable_remote_uri_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no readable manifest.json|cannot open"):
        Artifact._open_remote(f"file://{tmp_path}/absent", tmp_path / "c")


def test_built_artifact_has_the_serving_files(tiny_artifact: Path) -> None:
    art = Artifact.open(tiny_artifact)
    art.verify(layout.SERVING_FILES)
    reports = art.manifest.reports
    assert reports["index"]["recall_at_k"] >= 0.95
    assert reports["ranker"]["rows"] > 0
    assert not any(name.endswith((".pkl", ".pickle")) for name in art.manifest.files)
