"""The versioned artifact store: manifest, hashes, tamper detection, URIs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recsys import layout
from recsys.artifacts import (
    MANIFEST,
    Artifact,
    ArtifactError,
    FileEntry,
    content_version,
    write_manifest,
)


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
    art = Artifact._open_remote(f"file://{small_artifact}", cache, fetch=lambda name: True)
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


# --------------------------------------------------------------------------------------------
# Manifest checks: names, version, signature; remote fetch of the serving files only
# --------------------------------------------------------------------------------------------


def _edit_manifest(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    (root / MANIFEST).write_text(json.dumps(data))


def _rename(old: str, new: str, fix_version: bool = True) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["files"][new] = data["files"].pop(old)
        if fix_version:  # an attacker can recompute the version; names are checked apart
            files = {k: FileEntry(**v) for k, v in data["files"].items()}
            data["version"] = content_version(files)

    return edit


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "data/../../x", "a\\b", "C:/x", "./a.bin", "a//b", "", "x\n"]
)
def test_unsafe_file_names_are_refused(small_artifact: Path, name: str) -> None:
    _edit_manifest(small_artifact, _rename("a.bin", name))
    with pytest.raises(ArtifactError, match="unsafe file path"):
        Artifact.open(small_artifact)


def test_a_remote_manifest_naming_a_parent_path_writes_nothing_outside_the_cache(
    small_artifact: Path, tmp_path: Path
) -> None:
    (small_artifact / "evil.bin").write_bytes(b"payload")
    write_manifest(small_artifact)
    _edit_manifest(small_artifact, _rename("evil.bin", "../../evil.bin"))
    cache = tmp_path / "deep" / "cache"
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(ArtifactError, match="unsafe file path"):
        Artifact._open_remote(f"file://{small_artifact}", cache, fetch=lambda name: True)
    assert not [p for p in tmp_path.rglob("*") if p not in before and "evil" in p.name]


def test_version_must_match_the_hashes(small_artifact: Path) -> None:
    _edit_manifest(small_artifact, lambda d: d.update(version="v000000000000"))
    with pytest.raises(ArtifactError, match="hashes give"):
        Artifact.open(small_artifact)
    write_manifest(small_artifact)
    _edit_manifest(small_artifact, _rename("a.bin", "b.bin", fix_version=False))
    with pytest.raises(ArtifactError, match="hashes give"):
        Artifact.open(small_artifact)


def test_signed_manifests_verify_and_anything_else_is_refused_with_a_key(
    small_artifact: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Artifact.open(small_artifact)  # unsigned, no key: served as before
    monkeypatch.setenv("RECSYS_ARTIFACT_KEY", "build-secret")
    with pytest.raises(ArtifactError, match="not signed"):
        Artifact.open(small_artifact)
    signed = write_manifest(small_artifact, config={"k": 1})  # signs with the configured key
    assert signed.signature is not None and signed.signature["alg"] == "hmac-sha256"
    assert "build-secret" not in (small_artifact / MANIFEST).read_text()
    assert Artifact.open(small_artifact).version == signed.version
    monkeypatch.setenv("RECSYS_ARTIFACT_KEY", "another-key")
    with pytest.raises(ArtifactError, match="does not verify"):
        Artifact.open(small_artifact)
    key_file = tmp_path / "key"
    key_file.write_text("build-secret\n")
    monkeypatch.delenv("RECSYS_ARTIFACT_KEY")
    monkeypatch.setenv("RECSYS_ARTIFACT_KEY_FILE", str(key_file))
    Artifact.open(small_artifact)
    # any change to what was signed breaks it, even with a consistent version
    _edit_manifest(small_artifact, lambda d: d["config"].update(k=2))
    with pytest.raises(ArtifactError, match="does not verify"):
        Artifact.open(small_artifact)
    (small_artifact / "data" / "c.txt").write_text("new file")
    manifest = write_manifest(small_artifact, key=b"build-secret")
    _edit_manifest(small_artifact, _rename("data/c.txt", "data/d.txt"))
    with pytest.raises(ArtifactError, match="does not verify"):
        Artifact.open(small_artifact)
    assert manifest.signature is not None


def test_remote_artifacts_fetch_only_the_serving_files_up_front(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    art = Artifact._open_remote(f"file://{tiny_artifact}", cache)
    fetched = {p.relative_to(art.root).as_posix() for p in art.root.rglob("*") if p.is_file()}
    fetched.discard(MANIFEST)
    listed = set(art.manifest.files)
    assert fetched == {n for n in listed if layout.is_serving_file(n)}
    assert set(layout.SERVING_FILES) <= fetched
    assert any(n.startswith("lexical/") for n in fetched)
    for name in (layout.QUERY_EMBEDDINGS, layout.QUERY_SPLIT):
        assert name in listed and name not in fetched
    assert not any(n.startswith(("data/interactions", "ground_truth")) for n in fetched)
    # a file serving does not need comes on first use, verified
    assert art.path(layout.QUERY_EMBEDDINGS).is_file()
    art.verify()
