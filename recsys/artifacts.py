"""Versioned artifact directories with content hashes.

An artifact is a directory with a ``manifest.json`` listing every file with its SHA-256 and
size, the config that made it, library versions and build reports. The version is derived
from the content hashes, so two builds of the same content share a version and any change to
any file changes it.

Artifacts are opened by URI: a local path, ``file://``, ``s3://`` or ``gs://`` (the last two
through ``pyarrow.fs``; remote files are copied to a local cache first). Every file is
verified against the manifest before it is used: a missing or tampered file raises
:class:`ArtifactError` naming the file. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour an artifact depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("recsys-serve", "torch", "faiss-cpu", "transformers", "numpy", "pyarrow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


@dataclass
class FileEntry:
    sha256: str
    bytes: int


@dataclass
class Manifest:
    version: str
    created_at: str
    files: dict[str, FileEntry]
    config: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = {
            "format_version": self.format_version,
            "version": self.version,
            "created_at": self.created_at,
            "libraries": self.libraries,
            "config": self.config,
            "reports": self.reports,
            "files": {k: vars(v) for k, v in sorted(self.files.items())},
        }
        return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Manifest:
        try:
            data = json.loads(text)
            files = {k: FileEntry(**v) for k, v in data["files"].items()}
            return cls(
                version=data["version"],
                created_at=data["created_at"],
                files=files,
                config=data.get("config", {}),
                reports=data.get("reports", {}),
                libraries=data.get("libraries", {}),
                format_version=data.get("format_version", 0),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{source}: manifest.json is not a valid manifest ({exc})") from exc


def content_version(files: dict[str, FileEntry]) -> str:
    digest = hashlib.sha256()
    for name, entry in sorted(files.items()):
        digest.update(f"{name}\0{entry.sha256}\0".encode())
    return "v" + digest.hexdigest()[:12]


def write_manifest(
    root: Path,
    config: dict[str, Any] | None = None,
    reports: dict[str, Any] | None = None,
) -> Manifest:
    """Hash every file under ``root`` (except the manifest) and write ``manifest.json``."""
    files: dict[str, FileEntry] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(root).as_posix()
        files[rel] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    manifest = Manifest(
        version=content_version(files),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        files=files,
        config=config or {},
        reports=reports or {},
        libraries=library_versions(),
    )
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(root / MANIFEST)
    return manifest


class Artifact:
    """A verified, local view of an artifact version."""

    def __init__(self, root: Path, manifest: Manifest, uri: str):
        self.root = root
        self.manifest = manifest
        self.uri = uri
        self._verified: set[str] = set()

    @property
    def version(self) -> str:
        return self.manifest.version

    def quality(self) -> dict[str, Any]:
        """What serving this artifact gives: retrieval mode and what the ranker learned from
        (shown by ``recsys build`` and ``/v1/version``, so a degraded artifact says so)."""
        learned = list(self.manifest.reports.get("ranker", {}).get("trained_on") or [])
        ranker = {
            (): "none: no labels and no interactions, answers in retrieval order",
            ("relevance",): "trained on labelled queries only (no interactions: no "
            "personalisation)",
            ("behaviour",): "trained on interactions only (no labelled queries)",
        }.get(tuple(learned), "trained on labelled queries and interactions")
        return {
            "retrieval_mode": self.manifest.config.get("retrieval_mode", "dense"),
            "ranker": ranker,
            "ranker_trained_on": learned,
            "data_source": self.manifest.reports.get("data", {}).get("source", {}),
        }

    @classmethod
    def open(
        cls, uri: str | os.PathLike[str], cache_dir: str | Path = ".cache/artifacts"
    ) -> Artifact:
        """Open an artifact by URI; remote ones are fetched (and re-verified) into the cache."""
        text = str(uri)
        if "://" in text and not text.startswith("file://"):
            return cls._open_remote(text, Path(cache_dir))
        root = Path(text.removeprefix("file://")).expanduser()
        manifest_path = root / MANIFEST
        if not root.is_dir():
            raise ArtifactError(
                f"artifact directory {root} does not exist; build one with "
                f"`recsys build --out {root}`"
            )
        if not manifest_path.is_file():
            raise ArtifactError(
                f"{root} has no {MANIFEST}: not an artifact, or its build did not finish"
            )
        return cls(root, Manifest.from_json(manifest_path.read_text(), str(root)), text)

    @classmethod
    def _open_remote(cls, uri: str, cache_dir: Path) -> Artifact:
        from pyarrow import fs as pafs

        try:
            filesystem, base = pafs.FileSystem.from_uri(uri)
        except Exception as exc:  # pyarrow raises several types for bad URIs / no credentials
            raise ArtifactError(f"cannot open artifact URI {uri}: {exc}") from exc
        base = base.rstrip("/")
        try:
            with filesystem.open_input_stream(f"{base}/{MANIFEST}") as fh:
                manifest = Manifest.from_json(fh.read().decode(), uri)
        except OSError as exc:
            raise ArtifactError(f"{uri} has no readable {MANIFEST}: {exc}") from exc
        root = cache_dir / manifest.version
        root.mkdir(parents=True, exist_ok=True)
        for name, entry in manifest.files.items():
            local = root / name
            cached = local.is_file() and local.stat().st_size == entry.bytes
            if cached and sha256_file(local) == entry.sha256:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=local.parent, prefix=".part-")
            try:
                with (
                    os.fdopen(fd, "wb") as out,
                    filesystem.open_input_stream(f"{base}/{name}") as src,
                ):
                    shutil.copyfileobj(src, out, _CHUNK)
                os.replace(tmp_name, local)
            except OSError as exc:
                Path(tmp_name).unlink(missing_ok=True)
                raise ArtifactError(f"{uri}: cannot fetch {name}: {exc}") from exc
        (root / MANIFEST).write_text(manifest.to_json())
        return cls(root, manifest, uri)

    def path(self, name: str, verify: bool = True) -> Path:
        """Local path of a file of the artifact, verified against the manifest once."""
        entry = self.manifest.files.get(name)
        if entry is None:
            raise ArtifactError(
                f"artifact {self.uri} ({self.version}) has no file {name!r} in its manifest"
            )
        path = self.root / name
        if verify and name not in self._verified:
            if not path.is_file():
                raise ArtifactError(f"artifact {self.uri}: {name} is missing (incomplete artifact)")
            size = path.stat().st_size
            if size != entry.bytes or sha256_file(path) != entry.sha256:
                raise ArtifactError(
                    f"artifact {self.uri}: {name} does not match its manifest hash "
                    "(tampered or corrupted); rebuild or re-upload the artifact"
                )
            self._verified.add(name)
        return path

    def verify(self, names: Iterable[str] | None = None) -> None:
        """Verify the named files (default: all of them)."""
        for name in names if names is not None else self.manifest.files:
            self.path(name)

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text())
