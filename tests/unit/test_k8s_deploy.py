"""scripts/deploy.py against a loopback HTTP server that imitates the Kubernetes API.

The fake serves API discovery for ray.io/v1, the RayService CRD (read from ../shared/kuberay
when present, so stored objects get the same server-side defaults as in a real cluster), and
GET / POST / PATCH of rayservices, with a scripted status that the "operator" advances on
every read. The client is a real ``kubernetes.client.ApiClient`` pointed at the server.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from kubernetes import client

from recsys.k8s.crd import apply_schema_defaults, openapi_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"
OBJECT_PATH = "/apis/ray.io/v1/namespaces/recsys/rayservices/recsys"
FAST = ["--poll-interval", "0.005", "--timeout", "10"]
YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

StatusFn = Callable[[int], dict[str, Any]]
"""A status the fake operator reports, given the object's current generation."""


def _deployment(name: str, cpus: float, gpus: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
        "ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
        **extra,
    }


SERVE_CONFIG: dict[str, Any] = {
    "proxy_location": "HeadOnly",
    "http_options": {"host": "0.0.0.0", "port": 8000},
    "applications": [
        {
            "name": "recsys",
            "route_prefix": "/",
            "import_path": "deployments.app:build_app",
            "args": {"artifacts": "s3://recsys-artifacts/demo", "topology": {"tp": 2}},
            "deployments": [
                _deployment("Ingress", 1, 0),
                _deployment("QueryEncoder", 2, 0.5),
                _deployment(
                    "Ranker",
                    4,
                    1,
                    placement_group_bundles=[{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}],
                    placement_group_strategy="STRICT_PACK",
                ),
            ],
        }
    ],
}


# --------------------------------------------------------------------------------------------
# Status scripts (what the KubeRay operator would write)
# --------------------------------------------------------------------------------------------


def _cond(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-23T10:00:00Z",
    }


def _apps(status: str, message: str = "") -> dict[str, Any]:
    return {"recsys": {"status": status, "message": message}}


def no_status(generation: int) -> dict[str, Any]:
    return {}


def initializing(generation: int) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": [_cond("Ready", "False", "Initializing", "RayService is initializing")],
        "pendingServiceStatus": {
            "rayClusterName": "recsys-a",
            "applicationStatuses": _apps("DEPLOYING"),
        },
    }


def running(generation: int) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "serviceStatus": "Running",
        "numServeEndpoints": 2,
        "conditions": [
            _cond("Ready", "True", "NonZeroServeEndpoints"),
            _cond("UpgradeInProgress", "False", "NoPendingCluster"),
        ],
        "activeServiceStatus": {
            "rayClusterName": "recsys-a",
            "applicationStatuses": _apps("RUNNING"),
        },
    }


def stale(status: StatusFn) -> StatusFn:
    """``status`` as it was for the previous generation (the operator has not caught up)."""
    return lambda generation: status(generation - 1)


def updating_in_place(generation: int) -> dict[str, Any]:
    status = running(generation)
    status["activeServiceStatus"]["applicationStatuses"] = _apps("DEPLOYING")
    return status


def deploy_failed(generation: int) -> dict[str, Any]:
    status = initializing(generation)
    status["pendingServiceStatus"]["applicationStatuses"] = _apps(
        "DEPLOY_FAILED", "Failed to import deployments.app: No module named 'faiss'"
    )
    return status


# --------------------------------------------------------------------------------------------
# The fake API server
# --------------------------------------------------------------------------------------------


@functools.cache
def _crd() -> dict[str, Any] | None:
    return yaml.load(CRD_PATH.read_text(), Loader=YamlLoader) if CRD_PATH.is_file() else None


class FakeKube:
    """A tiny Kubernetes API for one namespace's RayServices."""

    def __init__(self, *, crd_installed: bool = True, crd_readable: bool = True) -> None:
        self.crd_installed = crd_installed
        self.crd = _crd()
        self.crd_readable = crd_readable and self.crd is not None
        self.objects: dict[str, dict[str, Any]] = {}
        self.script: list[StatusFn] = []
        self.requests: list[tuple[str, str, str | None, Any]] = []
        self.forbid_reads = False
        self.unavailable_reads = 0  # status reads answered 503 once the client has written
        self._written = False  # the operator's script starts once the client has written
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def api_client(self) -> client.ApiClient:
        return client.ApiClient(client.Configuration(host=self.host))

    def start(self) -> FakeKube:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def store(self, manifest: dict[str, Any], generation: int, status: StatusFn) -> None:
        """An existing RayService, as the API server would hold it."""
        obj = self._defaulted(copy.deepcopy(manifest))
        obj["metadata"].update(
            generation=generation,
            uid="u-1",
            resourceVersion="100",
            finalizers=["ray.io/rayservice-finalizer"],
        )
        obj["status"] = status(generation)
        self.objects[obj["metadata"]["name"]] = obj

    def methods(self) -> list[str]:
        return [f"{method} {path.split('?')[0]}" for method, path, _, _ in self.requests]

    # -- request handling --------------------------------------------------------------------

    def _defaulted(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.crd is None:
            return obj
        result: dict[str, Any] = apply_schema_defaults(obj, openapi_schema(self.crd))
        return result

    def _handle(
        self, method: str, path: str, content_type: str | None, body: Any
    ) -> tuple[int, Any]:
        self.requests.append((method, path, content_type, body))
        path = path.split("?")[0]
        if path == "/apis/ray.io/v1":
            if not self.crd_installed:
                return 404, _status_body(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "ray.io/v1",
                "resources": [
                    {
                        "name": "rayservices",
                        "singularName": "rayservice",
                        "namespaced": True,
                        "kind": "RayService",
                        "verbs": ["create", "get", "list", "patch"],
                    }
                ],
            }
        if path == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rayservices.ray.io":
            if not self.crd_readable:
                return 403, _status_body(403, "Forbidden", "customresourcedefinitions is forbidden")
            return 200, self.crd
        if path.startswith("/apis/ray.io/v1/namespaces/recsys/rayservices"):
            return self._rayservices(method, path, content_type, body)
        return 404, _status_body(
            404, "NotFound", "the server could not find the requested resource"
        )

    def _rayservices(
        self, method: str, path: str, content_type: str | None, body: Any
    ) -> tuple[int, Any]:
        name = path.rsplit("/", 1)[-1] if path.count("/") == 7 else None
        if self.forbid_reads:
            return 403, _status_body(403, "Forbidden", 'rayservices.ray.io "recsys" is forbidden')
        if method == "POST":
            obj = self._defaulted(copy.deepcopy(body))
            obj["metadata"].update(generation=1, uid="u-1", resourceVersion="1")
            obj["status"] = {}
            self.objects[obj["metadata"]["name"]] = obj
            self._written = True
            return 201, obj
        if method == "GET" and self._written and self.unavailable_reads > 0:
            self.unavailable_reads -= 1
            return 503, _status_body(503, "ServiceUnavailable", "etcdserver: leader changed")
        if name not in self.objects:
            return 404, _status_body(404, "NotFound", f'rayservices.ray.io "{name}" not found')
        obj = self.objects[name]
        if method == "PATCH":
            if content_type != "application/merge-patch+json":
                return 415, _status_body(415, "UnsupportedMediaType", str(content_type))
            before = copy.deepcopy(obj["spec"])
            patched = self._defaulted(_merge(obj, body))
            if patched["spec"] != before:
                patched["metadata"]["generation"] += 1
            patched["metadata"]["resourceVersion"] = str(
                int(obj["metadata"]["resourceVersion"]) + 1
            )
            self.objects[name] = patched
            self._written = True
            return 200, patched
        if self.script and self._written:
            # The operator moves on between reads; the last status stays.
            step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            obj["status"] = step(obj["metadata"]["generation"])
        return 200, obj

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake._lock:
                    code, payload = fake._handle(
                        self.command, self.path, self.headers.get("Content-Type"), body
                    )
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

        return Handler


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deploy_script() -> ModuleType:
    path = REPO_ROOT / "scripts" / "deploy.py"
    spec = importlib.util.spec_from_file_location("_k8s_test_deploy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def serve_config(tmp_path: Path) -> Path:
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(SERVE_CONFIG, sort_keys=False))
    return path


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    server = FakeKube().start()
    yield server
    server.stop()


class Run:
    """One ``deploy.py`` invocation: exit code, stdout, stderr."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def run(deploy_script: ModuleType, serve_config: Path) -> Callable[..., Run]:
    def invoke(*args: str, api_client: client.ApiClient | None = None) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = deploy_script.main(
            ["--serve-config", str(serve_config), *args], api_client=api_client, out=out, err=err
        )
        return Run(code, out.getvalue(), err.getvalue())

    return invoke


@pytest.fixture
def desired(deploy_script: ModuleType, serve_config: Path) -> dict[str, Any]:
    manifest, _ = deploy_script.render(serve_config, deploy_script.DEFAULT_CLUSTER)
    result: dict[str, Any] = manifest
    return result


def _one_line_error(run: Run, code: int, *fragments: str) -> None:
    assert run.code == code, (run.code, run.out, run.err)
    errors = [line for line in run.err.splitlines() if line.startswith("deploy.py: error:")]
    assert len(errors) == 1, run.err
    assert "Traceback" not in run.err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_creates_the_rayservice_and_waits_until_running(
    fake: FakeKube, run: Callable[..., Run], desired: dict[str, Any]
) -> None:
    fake.script = [no_status, initializing, initializing, running]
    result = run(*FAST, api_client=fake.api_client())
    assert result.code == 0, result.err
    assert fake.methods()[:4] == [
        "GET /apis/ray.io/v1",
        f"GET {OBJECT_PATH}",
        "POST /apis/ray.io/v1/namespaces/recsys/rayservices",
        f"GET {OBJECT_PATH}",
    ]
    posted = fake.requests[2][3]
    assert posted == desired
    assert "fieldManager=recsys-deploy" in fake.requests[2][1]
    assert "does not exist: creating it" in result.out
    assert "Serve endpoint (in cluster): http://recsys-serve-svc.recsys.svc:8000" in result.out
    assert "port-forward svc/recsys-head-svc 8265" in result.out
    progress = result.err.splitlines()
    assert any("rollout: pending - waiting for the operator" in line for line in progress)
    assert any(
        "rollout: pending - Initializing: RayService is initializing" in line for line in progress
    )
    assert "rollout: running - 2 Serve endpoints" in progress[-1]


def test_patches_only_what_changed_and_follows_the_upgrade(
    fake: FakeKube, run: Callable[..., Run], desired: dict[str, Any]
) -> None:
    old = copy.deepcopy(desired)
    serve = yaml.safe_load(old["spec"]["serveConfigV2"])
    serve["applications"][0]["args"]["artifacts"] = "s3://recsys-artifacts/releases/0.0.9"
    old["spec"]["serveConfigV2"] = yaml.safe_dump(serve, sort_keys=False)
    old["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = 3
    fake.store(old, generation=7, status=running)
    fake.script = [stale(running), updating_in_place, running]

    result = run(*FAST, api_client=fake.api_client())

    assert result.code == 0, result.err
    assert "POST" not in " ".join(fake.methods())
    patches = [r for r in fake.requests if r[0] == "PATCH"]
    assert len(patches) == 1 and patches[0][2] == "application/merge-patch+json"
    patch = patches[0][3]
    assert set(patch["spec"]) == {"serveConfigV2", "rayClusterConfig"}
    assert set(patch["spec"]["rayClusterConfig"]) == {"workerGroupSpecs"}
    stored = fake.objects["recsys"]
    assert stored["metadata"]["generation"] == 8
    assert stored["spec"] == fake._defaulted(copy.deepcopy(desired))["spec"]
    assert "RayService recsys/recsys: 2 change(s)" in result.out
    assert "spec.rayClusterConfig.workerGroupSpecs[gpu-small].maxReplicas: 3 -> 8" in result.out
    assert (
        "spec.serveConfigV2.applications[recsys].args.artifacts: "
        '"s3://recsys-artifacts/releases/0.0.9" -> "s3://recsys-artifacts/releases/0.1.0"'
    ) in result.out
    assert "generation 8 is running" in result.out
    assert "observedGeneration 7" in result.err  # the stale status was recognised
    assert "updating in place: recsys DEPLOYING" in result.err


def test_nothing_to_apply_when_the_live_object_matches(
    fake: FakeKube, run: Callable[..., Run], desired: dict[str, Any]
) -> None:
    if fake.crd is None:
        pytest.skip(f"KubeRay CRD not found at {CRD_PATH}: server-side defaults unknown")
    fake.store(desired, generation=2, status=running)
    result = run(*FAST, api_client=fake.api_client())
    assert result.code == 0, result.err
    assert "is up to date: nothing to apply" in result.out
    assert not [m for m in fake.methods() if m.startswith(("POST", "PATCH"))]


def test_diff_only_applies_nothing(
    fake: FakeKube, run: Callable[..., Run], desired: dict[str, Any]
) -> None:
    old = copy.deepcopy(desired)
    old["spec"]["rayClusterConfig"]["autoscalerOptions"]["upscalingMode"] = "Aggressive"
    fake.store(old, generation=2, status=running)
    fake.crd_readable = False  # also: an RBAC-limited user cannot read CRDs
    result = run("--diff-only", api_client=fake.api_client())
    assert result.code == 0, result.err
    assert (
        'spec.rayClusterConfig.autoscalerOptions.upscalingMode: "Aggressive" -> "Default"'
        in result.out
    )
    assert "CRD schema not readable" in result.out
    assert not [m for m in fake.methods() if m.startswith(("POST", "PATCH"))]


def test_failed_rollout_exits_with_the_reason(fake: FakeKube, run: Callable[..., Run]) -> None:
    fake.script = [initializing, deploy_failed]
    result = run(*FAST, api_client=fake.api_client())
    _one_line_error(
        result,
        5,
        "rollout failed: Serve application recsys DEPLOY_FAILED",
        "No module named 'faiss'",
    )


def test_a_brief_api_outage_during_the_rollout_is_ridden_out(
    fake: FakeKube, run: Callable[..., Run]
) -> None:
    fake.script = [initializing, running]
    fake.unavailable_reads = 3
    result = run(*FAST, api_client=fake.api_client())
    assert result.code == 0, result.err
    assert "status read failed: Kubernetes API error 503: etcdserver: leader changed" in result.err


def test_a_lasting_api_outage_ends_the_wait(fake: FakeKube, run: Callable[..., Run]) -> None:
    fake.script = [running]
    fake.unavailable_reads = 100
    result = run(*FAST, api_client=fake.api_client())
    _one_line_error(result, 1, "Kubernetes API error 503")


def test_rollout_timeout_names_the_last_state(fake: FakeKube, run: Callable[..., Run]) -> None:
    fake.script = [initializing]
    result = run("--poll-interval", "0.01", "--timeout", "0.1", api_client=fake.api_client())
    _one_line_error(result, 6, "rollout not finished after 0.1s: pending (Initializing")


def test_missing_kuberay_crd(run: Callable[..., Run]) -> None:
    server = FakeKube(crd_installed=False).start()
    try:
        result = run(*FAST, api_client=server.api_client())
    finally:
        server.stop()
    _one_line_error(result, 4, "KubeRay CRD not installed", "ray.io/v1 rayservices")
    assert server.methods() == ["GET /apis/ray.io/v1"]


def test_connection_refused_means_no_cluster(run: Callable[..., Run]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api_client = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    result = run(*FAST, api_client=api_client)
    _one_line_error(result, 3, f"no cluster reachable at http://127.0.0.1:{port}", "refused")


def test_no_kubeconfig_means_no_cluster(
    run: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = run(*FAST, "--kubeconfig", str(tmp_path / "missing-kubeconfig"))
    _one_line_error(result, 3, "no cluster configured", "missing-kubeconfig")


def test_forbidden_is_reported_with_a_hint(fake: FakeKube, run: Callable[..., Run]) -> None:
    fake.forbid_reads = True
    result = run(*FAST, api_client=fake.api_client())
    _one_line_error(result, 1, "Kubernetes API error 403", "is forbidden", "RBAC")


def test_dry_run_prints_the_manifest_and_contacts_nothing(
    run: Callable[..., Run], deploy_script: ModuleType, serve_config: Path
) -> None:
    nowhere = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    result = run("--dry-run", api_client=nowhere)
    assert result.code == 0 and result.err == ""
    _, text = deploy_script.render(serve_config, deploy_script.DEFAULT_CLUSTER)
    assert result.out == text
    assert result.out.startswith("# GENERATED by `python scripts/render_k8s.py")


def test_invalid_input_is_one_line(run: Callable[..., Run], tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("name: recsys\nnamespace: recsys\nworker_groups: []\n")
    result = run("--cluster", str(cluster), "--dry-run")
    _one_line_error(result, 2, "not a valid ClusterSpec", "worker_groups")


def test_help_explains_the_command(deploy_script: ModuleType) -> None:
    text = deploy_script.build_parser().format_help()
    for fragment in ("--dry-run", "--timeout", "--kubeconfig", "exit status", "serve-svc"):
        assert fragment in text
