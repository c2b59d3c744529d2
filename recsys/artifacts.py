"""Versioned artifact directories with content hashes.

An artifact is a directory with a ``manifest.json`` listing every file with its SHA-256 and
size, the config that made it, library versions and build reports. The version is derived
from the content hashes, so two builds of the same content share a version and any change to
any file changes it.

Artifacts are opened by URI: a local path, ``file://``, ``s3://`` or ``gs://`` (the last two
through ``pyarrow.fs``; remote files are copied to a local cache first: the files serving
needs (``recsys.layout.is_serving_file``) at open, any other one when first asked for). Every
file is verified against the manifest before it is used: a missing or tampered file raises
:class:`ArtifactError` naming the file. Nothing is pickled.

A manifest is checked before anything is read through it: file names are relative POSIX
paths inside the artifact (no absolute path, ``..``, backslash or empty part), and its
version must be the one its hashes give. With a signing key configured
(``RECSYS_ARTIFACT_KEY``, or a file named by ``RECSYS_ARTIFACT_KEY_FILE``), ``write_manifest``
signs the manifest (HMAC-SHA256 over its canonical JSON) and ``Artifact.open`` refuses
manifests that are unsigned or signed with another key, so a writable bucket alone cannot
swap what replicas serve. HMAC keeps to the standard library; the trade-off is one shared
secret for builders and replicas (an asymmetric signature would let replicas verify without
being able to sign).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20
KEY_ENV = "RECSYS_ARTIFACT_KEY"
"""Environment variable holding the artifact signing key."""
KEY_FILE_ENV = "RECSYS_ARTIFACT_KEY_FILE"
"""Environment variable naming a file that holds the signing key."""
SIGNATURE_ALG = "hmac-sha256"


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete or does not match its manifest."""


def check_file_name(name: str) -> str:
    """``name`` when it is a relative POSIX path inside the artifact, else ArtifactError."""
    parts = name.split("/")
    bad = (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in parts[0]  # a drive letter or a URI scheme
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(c) < 32 for c in name)
        or name == MANIFEST
    )
    if bad:
        raise ArtifactError(f"manifest names an unsafe file path {name!r}")
    return name


def artifact_key(env: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key from ``RECSYS_ARTIFACT_KEY`` or the file ``RECSYS_ARTIFACT_KEY_FILE``
    names (None: no key, artifacts are neither signed nor required to be)."""
    env = os.environ if env is None else env
    if env.get(KEY_ENV):
        return env[KEY_ENV].encode()
    path = env.get(KEY_FILE_ENV)
    if not path:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ArtifactError(f"cannot read the artifact key file {path}: {exc}") from None
    if not key:
        raise ArtifactError(f"artifact key file {path} is empty")
    return key


def key_id(key: bytes) -> str:
    """A non-secret name of a key (which one signed a manifest)."""
    return hashlib.sha256(b"recsys-artifact-key\0" + key).hexdigest()[:8]


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
    signature: dict[str, str] | None = None
    """``{"alg": "hmac-sha256", "key_id": ..., "value": hex}`` when signed."""

    def _data(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "version": self.version,
            "created_at": self.created_at,
            "libraries": self.libraries,
            "config": self.config,
            "reports": self.reports,
            "files": {k: vars(v) for k, v in sorted(self.files.items())},
        }

    def to_json(self) -> str:
        data = self._data()
        if self.signature is not None:
            data["signature"] = self.signature
        return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"

    def canonical(self) -> bytes:
        """The signed bytes: every field but the signature, as JSON with sorted keys and no
        spaces, after the same JSON round trip the file goes through."""
        data = json.loads(json.dumps(self._data(), default=str))
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def sign(self, key: bytes) -> None:
        value = hmac.new(key, self.canonical(), hashlib.sha256).hexdigest()
        self.signature = {"alg": SIGNATURE_ALG, "key_id": key_id(key), "value": value}

    def check_signature(self, key: bytes, source: str) -> None:
        """ArtifactError unless the manifest carries a valid signature made with ``key``."""
        if self.signature is None:
            raise ArtifactError(
                f"{source}: manifest is not signed, and a signing key is configured "
                f"({KEY_ENV}); rebuild with the key set, or unset it to serve unsigned artifacts"
            )
        expected = hmac.new(key, self.canonical(), hashlib.sha256).hexdigest()
        value = str(self.signature.get("value", ""))
        if self.signature.get("alg") != SIGNATURE_ALG or not hmac.compare_digest(
            value.encode(), expected.encode()
        ):
            raise ArtifactError(
                f"{source}: manifest signature does not verify with the configured key "
                f"(signed by key {self.signature.get('key_id')!r}, configured key "
                f"{key_id(key)!r}): tampered, or signed with another key"
            )

    @classmethod
    def from_json(cls, text: str, source: str) -> Manifest:
        try:
            data = json.loads(text)
            files = {k: FileEntry(**v) for k, v in data["files"].items()}
            manifest = cls(
                version=data["version"],
                created_at=data["created_at"],
                files=files,
                config=data.get("config", {}),
                reports=data.get("reports", {}),
                libraries=data.get("libraries", {}),
                format_version=data.get("format_version", 0),
                signature=data.get("signature"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{source}: manifest.json is not a valid manifest ({exc})") from exc
        for name in manifest.files:
            try:
                check_file_name(name)
            except ArtifactError as exc:
                raise ArtifactError(f"{source}: {exc}") from None
        computed = content_version(manifest.files)
        if manifest.version != computed:
            raise ArtifactError(
                f"{source}: manifest says version {manifest.version!r} but its file hashes give "
                f"{computed!r} (edited or corrupted manifest)"
            )
        return manifest

    def verify_signature(self, source: str, env: Mapping[str, str] | None = None) -> None:
        """With a signing key configured, ArtifactError unless signed with it."""
        key = artifact_key(env)
        if key is not None:
            self.check_signature(key, source)


def content_version(files: dict[str, FileEntry]) -> str:
    digest = hashlib.sha256()
    for name, entry in sorted(files.items()):
        digest.update(f"{name}\0{entry.sha256}\0".encode())
    return "v" + digest.hexdigest()[:12]


def write_manifest(
    root: Path,
    config: dict[str, Any] | None = None,
    reports: dict[str, Any] | None = None,
    key: bytes | None = None,
) -> Manifest:
    """Hash every file under ``root`` (except the manifest) and write ``manifest.json``,
    signed with ``key`` (default: the configured key, :func:`artifact_key`; none: unsigned)."""
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
    key = key if key is not None else artifact_key()
    if key is not None:
        manifest.sign(key)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(root / MANIFEST)
    return manifest


class Artifact:
    """A verified, local view of an artifact version."""

    def __init__(self, root: Path, manifest: Manifest, uri: str, remote: Any = None):
        self.root = root
        self.manifest = manifest
        self.uri = uri
        self._remote = remote  # (pyarrow filesystem, base path) of a remote artifact
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
        cls,
        uri: str | os.PathLike[str],
        cache_dir: str | Path = ".cache/artifacts",
        fetch: Callable[[str], bool] | None = None,
    ) -> Artifact:
        """Open an artifact by URI, its manifest checked (names, version, signature when a key
        is configured). Remote ones are fetched into the cache: the files ``fetch`` picks
        (default: the serving files) at once, the others when first asked for."""
        text = str(uri)
        if "://" in text and not text.startswith("file://"):
            return cls._open_remote(text, Path(cache_dir), fetch)
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
        manifest = Manifest.from_json(manifest_path.read_text(), str(root))
        manifest.verify_signature(str(root))
        return cls(root, manifest, text)

    @classmethod
    def _open_remote(
        cls, uri: str, cache_dir: Path, fetch: Callable[[str], bool] | None = None
    ) -> Artifact:
        from pyarrow import fs as pafs

        from recsys.layout import is_serving_file

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
        manifest.verify_signature(uri)
        root = cache_dir / manifest.version  # a recomputed version: v + 12 hex digits
        root.mkdir(parents=True, exist_ok=True)
        artifact = cls(root, manifest, uri, remote=(filesystem, base))
        wanted = fetch or is_serving_file
        for name in manifest.files:
            if wanted(name):
                artifact._fetch(name)
        (root / MANIFEST).write_text(manifest.to_json())
        return artifact

    def _fetch(self, name: str) -> None:
        """Copy one remote file into the cache unless an intact copy is there."""
        entry = self.manifest.files[name]
        local = self.root / check_file_name(name)
        if not local.resolve().is_relative_to(self.root.resolve()):
            raise ArtifactError(f"{self.uri}: {name} resolves outside the artifact cache")
        cached = local.is_file() and local.stat().st_size == entry.bytes
        if cached and sha256_file(local) == entry.sha256:
            return
        filesystem, base = self._remote
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
            raise ArtifactError(f"{self.uri}: cannot fetch {name}: {exc}") from exc

    def path(self, name: str, verify: bool = True) -> Path:
        """Local path of a file of the artifact, verified against the manifest once."""
        entry = self.manifest.files.get(name)
        if entry is None:
            raise ArtifactError(
                f"artifact {self.uri} ({self.version}) has no file {name!r} in its manifest"
            )
        path = self.root / name
        if self._remote is not None and name not in self._verified and not path.is_file():
            self._fetch(name)  # not needed for serving: fetched on first use
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
