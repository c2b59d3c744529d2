"""KubeRay manifests: rendering, CRD validation, secrets, staleness, diffs and rollout states.

Manifests are validated against the real KubeRay CRDs in ``../shared/kuberay/`` (relative to
the repository root); those tests skip when the CRDs are not there.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from recsys.k8s.crd import apply_schema_defaults, openapi_schema, to_json_schema
from recsys.k8s.diff import diff_manifests, merge_patch
from recsys.k8s.render import (
    PART_OF_LABEL,
    RenderError,
    check_capacity,
    prepare_serve_config,
    render_network_policy,
    render_rayservice,
)
from recsys.k8s.rollout import RolloutWatcher, rollout_state, rollout_status
from recsys.k8s.spec import BASE_IMAGE, RAY_VERSION, ClusterSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
CRD_DIR = REPO_ROOT.parent / "shared" / "kuberay"
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
GPU_SERVE_CONFIG = REPO_ROOT / "deployments" / "configs" / "gpu.yaml"

YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _deployment(name: str, cpus: float, gpus: float, max_replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "max_ongoing_requests": 128,
        "max_queued_requests": 256,
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": max_replicas,
            "target_ongoing_requests": 64.0,
            "upscale_delay_s": 5.0,
            "downscale_delay_s": 60.0,
        },
        "ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
    }


def _ranker(name: str) -> dict[str, Any]:
    ranker = _deployment(name, 4.0, 1.0, 4)
    ranker["placement_group_bundles"] = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    ranker["placement_group_strategy"] = "STRICT_PACK"
    return ranker


SAMPLE_SERVE_CONFIG: dict[str, Any] = {
    "proxy_location": "HeadOnly",
    "http_options": {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 10.0},
    "logging_config": {"encoding": "JSON", "log_level": "INFO"},
    "applications": [
        {
            "name": "recsys",
            "route_prefix": "/",
            "import_path": "deployments.app:build_app",
            "runtime_env": {},
            "args": {
                "artifacts": "artifacts/demo",
                "topology": {"tp": 2},
                "routing": {
                    "variants": [
                        {"name": "control", "weight": 0.9},
                        {"name": "wide", "weight": 0.1},
                    ]
                },
            },
            "deployments": [
                _deployment("Ingress", 1.0, 0.0, 4),
                _deployment("QueryEncoder", 2.0, 0.5, 8),
                _deployment("Retriever", 2.0, 0.5, 8),
                _ranker("Ranker"),
                _ranker("Ranker_wide"),
            ],
        }
    ],
}
"""A GPU serve config in the shape ``serve build`` writes for ``deployments.app:build_app``."""


def _load_script(name: str) -> ModuleType:
    path = REPO_ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_k8s_test_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return ClusterSpec.model_validate(yaml.safe_load((K8S_DIR / "cluster.yaml").read_text()))


@pytest.fixture(scope="module")
def manifest(spec: ClusterSpec) -> dict[str, Any]:
    return render_rayservice(SAMPLE_SERVE_CONFIG, spec)


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR} (expected ../shared/kuberay/)")
    return {
        kind: yaml.load((CRD_DIR / name).read_text(), Loader=YamlLoader)
        for kind, name in CRD_FILES.items()
    }


@pytest.fixture(scope="module")
def validators(crds: dict[str, dict[str, Any]]) -> dict[str, jsonschema.protocols.Validator]:
    out = {}
    for kind, crd in crds.items():
        schema = to_json_schema(openapi_schema(crd, "v1"))
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema)
    return out


def _errors(validator: jsonschema.protocols.Validator, doc: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def _yaml_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.rglob("*") if p.suffix in (".yaml", ".yml"))


def _ray_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in _yaml_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/"):
                yield path, doc


def _cluster(manifest: dict[str, Any]) -> dict[str, Any]:
    cluster: dict[str, Any] = manifest["spec"]["rayClusterConfig"]
    return cluster


# --------------------------------------------------------------------------------------------
# Rendering: one source of truth
# --------------------------------------------------------------------------------------------


def test_sample_serve_config_is_valid_for_ray() -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(SAMPLE_SERVE_CONFIG)


def test_serve_config_v2_is_the_serve_config_with_kubernetes_settings(
    manifest: dict[str, Any], spec: ClusterSpec
) -> None:
    from ray.serve.schema import ServeDeploySchema

    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    assert serve["http_options"] == {"host": "0.0.0.0", "port": 8000, "request_timeout_s": 10.0}
    assert serve["proxy_location"] == "EveryNode"
    app = serve["applications"][0]
    assert app["args"]["artifacts"] == spec.artifacts_uri
    # Everything else is the committed serve config, untouched.
    original = SAMPLE_SERVE_CONFIG["applications"][0]
    assert app["deployments"] == original["deployments"]
    assert {k: v for k, v in app["args"].items() if k != "artifacts"} == {
        k: v for k, v in original["args"].items() if k != "artifacts"
    }
    assert serve["logging_config"] == SAMPLE_SERVE_CONFIG["logging_config"]
    assert SAMPLE_SERVE_CONFIG["http_options"]["host"] == "127.0.0.1", "input was mutated"


def test_artifact_uri_is_kept_when_the_spec_has_none(spec: ClusterSpec) -> None:
    serve = prepare_serve_config(
        SAMPLE_SERVE_CONFIG, spec.model_copy(update={"artifacts_uri": None})
    )
    assert serve["applications"][0]["args"]["artifacts"] == "artifacts/demo"


def test_artifact_uri_needs_an_application_to_go_to(spec: ClusterSpec) -> None:
    config = copy.deepcopy(SAMPLE_SERVE_CONFIG)
    config["applications"][0]["import_path"] = "other.app:build"
    with pytest.raises(RenderError, match="no application has import_path"):
        prepare_serve_config(config, spec)


def test_rendering_is_deterministic(spec: ClusterSpec) -> None:
    first = render_rayservice(SAMPLE_SERVE_CONFIG, spec)
    assert render_rayservice(copy.deepcopy(SAMPLE_SERVE_CONFIG), spec) == first


def test_head_runs_no_replicas_and_exposes_dashboard_and_metrics(manifest: dict[str, Any]) -> None:
    head = _cluster(manifest)["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports["metrics"] == 8080 and ports["dashboard"] == 8265 and ports["serve"] == 8000
    assert manifest["spec"]["excludeHeadPodFromServeSvc"] is True


def test_worker_groups_request_gpus_on_gpu_nodes(manifest: dict[str, Any]) -> None:
    groups = {g["groupName"]: g for g in _cluster(manifest)["workerGroupSpecs"]}
    assert set(groups) == {"gpu-small", "gpu-multi"}
    for name, want in (("gpu-small", "1"), ("gpu-multi", "2")):
        pod = groups[name]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == want
        assert resources["requests"]["nvidia.com/gpu"] == want
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert pod["nodeSelector"], f"{name} has no nodeSelector"
        ports = {p["name"] for p in pod["containers"][0]["ports"]}
        assert {"metrics", "serve"} <= ports
        assert (
            groups[name]["minReplicas"] <= groups[name]["replicas"] <= groups[name]["maxReplicas"]
        )


def test_pod_readiness_is_left_to_kuberay_and_serve(manifest: dict[str, Any]) -> None:
    """No container brings a probe of its own: KubeRay then injects its worker probe (the
    node's Serve proxy, healthy only once an ingress replica is RUNNING, i.e. warmed up), and
    no probe on the app-wide /readyz can take every pod out of the Service at once."""
    cluster = _cluster(manifest)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(container)


def test_autoscaling_gcs_fault_tolerance_and_upgrades(manifest: dict[str, Any]) -> None:
    cluster = _cluster(manifest)
    assert cluster["enableInTreeAutoscaling"] is True
    options = cluster["autoscalerOptions"]
    assert options["upscalingMode"] in {"Default", "Aggressive", "Conservative"}
    assert options["idleTimeoutSeconds"] > 0 and options["resources"]["limits"]
    ft = cluster["gcsFaultToleranceOptions"]
    assert re.fullmatch(r"[\w.-]+:\d+", ft["redisAddress"])
    assert set(ft["redisPassword"]) == {"valueFrom"}, "password must come from a Secret"
    assert set(ft["redisPassword"]["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    assert manifest["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_ray_version_is_pinned_everywhere(manifest: dict[str, Any], spec: ClusterSpec) -> None:
    import ray

    assert ray.__version__ == RAY_VERSION
    assert _cluster(manifest)["rayVersion"] == ray.__version__
    assert f"rayproject/ray:{ray.__version__}-py311-gpu" == BASE_IMAGE
    dockerfile = (K8S_DIR / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", dockerfile, re.M) == [BASE_IMAGE]
    assert f"ray{ray.__version__}" in spec.image.tag


def test_dockerfile_installs_gpu_builds_offline() -> None:
    text = (K8S_DIR / "Dockerfile").read_text()
    assert "ENV HF_HUB_OFFLINE=1" in text
    assert re.search(r"pip install --index-url \S+download\.pytorch\.org\S+ torch==2\.13\.0", text)
    install, uninstall, reinstall = (
        text.index('pip install ".[gpu]"'),
        text.index("pip uninstall -y faiss-cpu"),
        text.index("pip install --no-deps faiss-gpu-cu12==1.14.1.post1"),
    )
    assert install < uninstall < reinstall, "the GPU FAISS build must be installed last"
    assert "StandardGpuResources" in text[reinstall:], "the build must prove GPU FAISS wins"


def test_a_gang_that_fits_no_worker_group_is_refused(spec: ClusterSpec) -> None:
    config = copy.deepcopy(SAMPLE_SERVE_CONFIG)
    ranker = config["applications"][0]["deployments"][3]
    ranker["placement_group_bundles"] = [{"CPU": 4, "GPU": 1}] * 4  # 4 GPUs on one node
    problems = check_capacity(config, spec)
    assert len(problems) == 1 and "recsys/Ranker needs CPU 16 GPU 4 on one node" in problems[0]
    with pytest.raises(RenderError, match="Ranker needs"):
        render_rayservice(config, spec)
    # Spread bundles only need to fit one at a time.
    ranker["placement_group_strategy"] = "SPREAD"
    assert check_capacity(config, spec) == []


def test_replicas_default_to_one_cpu(spec: ClusterSpec) -> None:
    config = copy.deepcopy(SAMPLE_SERVE_CONFIG)
    del config["applications"][0]["deployments"][0]["ray_actor_options"]
    small = spec.model_copy(deep=True)
    for group in small.worker_groups:
        group.cpu = "500m"
    assert any("Ingress needs CPU 1 GPU 0" in p for p in check_capacity(config, small))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"name": "Recsys"}, "String should match pattern"),
        ({"name": "r" * 48}, "at most 47 characters"),
        ({"initializing_timeout": "soon"}, "String should match pattern"),
        ({"artifacts_uri": "artifacts/demo"}, "String should match pattern"),
        (
            {
                "gcs_fault_tolerance": {
                    "redis_address": "redis://:hunter2@redis:6379",
                    "password_secret": {"name": "r", "key": "p"},
                }
            },
            "must not embed credentials",
        ),
        ({"upgrade": {"strategy": "NewClusterWithIncrementalUpgrade"}}, "needs `incremental`"),
        ({"upgrade": {"strategy": "Rolling"}}, "Input should be"),
    ],
)
def test_cluster_spec_refuses_mistakes(
    spec: ClusterSpec, change: dict[str, Any], match: str
) -> None:
    data = spec.model_dump(mode="json")
    data.update(change)
    with pytest.raises(ValidationError, match=match):
        ClusterSpec.model_validate(data)


def test_worker_group_bounds_are_checked(spec: ClusterSpec) -> None:
    data = spec.model_dump(mode="json")
    data["worker_groups"][0].update(replicas=9, max_replicas=8)
    with pytest.raises(ValidationError, match="replicas"):
        ClusterSpec.model_validate(data)


# --------------------------------------------------------------------------------------------
# The real CRD schema
# --------------------------------------------------------------------------------------------


def test_rendered_manifest_matches_the_crd(
    manifest: dict[str, Any], validators: dict[str, jsonschema.protocols.Validator]
) -> None:
    assert _errors(validators["RayService"], manifest) == []


def test_incremental_upgrade_renders_what_the_crd_accepts(
    spec: ClusterSpec, validators: dict[str, jsonschema.protocols.Validator]
) -> None:
    data = spec.model_dump(mode="json")
    data["upgrade"] = {
        "strategy": "NewClusterWithIncrementalUpgrade",
        "incremental": {
            "gateway_class_name": "istio",
            "step_size_percent": 20,
            "interval_seconds": 30,
        },
    }
    rendered = render_rayservice(SAMPLE_SERVE_CONFIG, ClusterSpec.model_validate(data))
    assert rendered["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["stepSizePercent"] == 20
    assert _errors(validators["RayService"], rendered) == []


def test_every_ray_manifest_under_k8s_matches_its_crd(
    validators: dict[str, jsonschema.protocols.Validator],
) -> None:
    documents = list(_ray_documents())
    assert documents, "no ray.io manifests found under k8s/"
    for path, doc in documents:
        assert doc["kind"] in validators, f"{path}: no CRD for kind {doc['kind']}"
        errors = _errors(validators[doc["kind"]], doc)
        assert errors == [], f"{path.relative_to(REPO_ROOT)}: {errors}"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set("spec.rayClusterConfig.rayVersion", 2.6), "is not of type 'string'"),
        (_set("spec.rayClusterConfig.autoscalerOptions.upscalingMode", "Turbo"), "is not one of"),
        (
            _set("spec.rayClusterConfig.headGroupSpec.rayStartParams.num-cpus", 0),
            "is not of type 'string'",
        ),
        (
            _set("spec.rayClusterConfig.workerGroupSpecs.0.maxReplicas", "eight"),
            "is not of type 'integer'",
        ),
        (_set("spec.rayClusterConfig.gcsFaultToleranceOptions.backend", "etcd"), "is not one of"),
        (
            _set("spec.rayClusterConfig.workerGroupSpecs.0.rayStartParam", {}),
            "Additional properties are not allowed",
        ),
        (_set("spec.rayClusterDeletionDelaySeconds", -1), "less than the minimum"),
        (
            lambda doc: doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"),
            "'groupName' is a required property",
        ),
        (lambda doc: doc["spec"].pop("rayClusterConfig"), "'rayClusterConfig' is a required"),
    ],
)
def test_the_crd_validation_rejects_broken_manifests(
    manifest: dict[str, Any],
    validators: dict[str, jsonschema.protocols.Validator],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    broken = copy.deepcopy(manifest)
    mutate(broken)
    errors = _errors(validators["RayService"], broken)
    assert any(expected in e for e in errors), errors


def test_int_or_string_fields_accept_both(
    manifest: dict[str, Any], validators: dict[str, jsonschema.protocols.Validator]
) -> None:
    doc = copy.deepcopy(manifest)
    container = _cluster(doc)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["cpu"] = 6  # integer quantity
    container["ports"][0]["containerPort"] = 8000
    assert _errors(validators["RayService"], doc) == []
    container["resources"]["limits"]["cpu"] = ["6"]
    assert _errors(validators["RayService"], doc)


def test_server_defaults_from_the_crd(
    manifest: dict[str, Any], crds: dict[str, dict[str, Any]]
) -> None:
    schema = openapi_schema(crds["RayService"])
    defaulted = apply_schema_defaults(manifest, schema)
    worker = _cluster(defaulted)["workerGroupSpecs"][0]
    assert worker["numOfHosts"] == 1 and worker["priority"] == 0
    assert worker["template"]["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"
    assert _cluster(manifest)["workerGroupSpecs"][0].get("numOfHosts") is None, "input mutated"


# --------------------------------------------------------------------------------------------
# Secrets, monitoring, staleness
# --------------------------------------------------------------------------------------------

SECRET_KEY = re.compile(r"(password|passwd|token|api[_-]?key|secret[_-]?key)$", re.I)
SECRET_TEXT = [
    re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I),  # credentials in a URL
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"--from-literal=\S*(password|token)", re.I),
]


def _secret_values(doc: Any, where: str) -> Iterator[str]:
    """Places in a parsed document that hold a secret value instead of a reference."""
    if isinstance(doc, dict):
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            yield f"{where}: Secret manifest with data"
        name = str(doc.get("name", ""))
        if "value" in doc and SECRET_KEY.search(name.replace("_", "")):
            yield f"{where}: env {name} has a literal value"
        for key, value in doc.items():
            if SECRET_KEY.search(str(key)) and isinstance(value, str | int) and value != "":
                yield f"{where}.{key}: literal value"
            if key == "serveConfigV2" and isinstance(value, str):
                yield from _secret_values(yaml.safe_load(value), f"{where}.serveConfigV2")
            else:
                yield from _secret_values(value, f"{where}.{key}")
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from _secret_values(item, f"{where}[{i}]")


def _scan_for_secrets(root: Path) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text()
        found += [
            f"{path.name}: {pattern.pattern}" for pattern in SECRET_TEXT if pattern.search(text)
        ]
        if path.suffix in (".yaml", ".yml"):
            for i, doc in enumerate(yaml.safe_load_all(text)):
                found += list(_secret_values(doc, f"{path.name}#{i}"))
        elif path.suffix == ".json":
            found += list(_secret_values(json.loads(text), path.name))
    return found


def test_no_secret_values_anywhere_under_k8s() -> None:
    assert _scan_for_secrets(K8S_DIR) == []


def test_the_secret_scan_finds_planted_secrets(tmp_path: Path) -> None:
    (tmp_path / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: r}\ndata: {password: aHVudGVyMg==}\n"
    )
    (tmp_path / "env.yaml").write_text("env: [{name: REDIS_PASSWORD, value: hunter2}]\n")
    (tmp_path / "ft.yaml").write_text("redisPassword: hunter2\n")
    (tmp_path / "serve.yaml").write_text("serveConfigV2: |\n  token: abc\n")
    (tmp_path / "url.txt").write_text("redis://admin:hunter2@redis:6379\n")
    found = _scan_for_secrets(tmp_path)
    for name in ("secret.yaml", "env.yaml", "ft.yaml", "serve.yaml", "url.txt"):
        assert any(f.startswith(name) for f in found), (name, found)


def test_podmonitors_select_the_rendered_pods(manifest: dict[str, Any]) -> None:
    monitors = list(yaml.safe_load_all((K8S_DIR / "monitoring" / "podmonitor.yaml").read_text()))
    assert [m["kind"] for m in monitors] == ["PodMonitor", "PodMonitor"]
    cluster = _cluster(manifest)
    pods = {"head": [cluster["headGroupSpec"]["template"]]}
    pods["worker"] = [g["template"] for g in cluster["workerGroupSpecs"]]
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == manifest["metadata"]["namespace"]
        selector = dict(monitor["spec"]["selector"]["matchLabels"])
        node_type = selector.pop("ray.io/node-type")  # added by KubeRay to every pod
        assert selector == dict([PART_OF_LABEL])
        for template in pods[node_type]:
            assert selector.items() <= template["metadata"]["labels"].items()
            port_names = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in port_names


def test_grafana_dashboard_covers_the_service() -> None:
    dashboard = json.loads((K8S_DIR / "monitoring" / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in [
        "ray_serve_num_http_requests_total",
        "ray_serve_num_http_error_requests_total",
        "ray_serve_http_request_latency_ms_bucket",
        "ray_serve_deployment_replica_healthy",
        "ray_recsys_stage_latency_ms_bucket",
        "ray_recsys_batch_size_bucket",
        "ray_recsys_cache_hits_total",
        "ray_recsys_cache_lookups_total",
        "ray_recsys_degraded_total",
        "ray_recsys_rejected_total",
        "ray_recsys_requests_total",
        "ray_node_gpus_utilization",
        "autoscaler_active_nodes",
    ]:
        assert metric in exprs, f"no panel uses {metric}"
    assert "histogram_quantile(0.99" in exprs and "histogram_quantile(0.5" in exprs
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["expr"].count("(") == t["expr"].count(")") for t in panel["targets"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "rayservice", "stage"} <= variables


def test_render_cli_checks_and_writes(tmp_path: Path) -> None:
    render_k8s = _load_script("render_k8s")
    serve_config = tmp_path / "gpu.yaml"
    serve_config.write_text(yaml.safe_dump(SAMPLE_SERVE_CONFIG, sort_keys=False))
    output = tmp_path / "rayservice.yaml"
    args = ["--serve-config", str(serve_config), "--output", str(output)]
    assert render_k8s.main([*args, "--check"]) == 1  # missing
    assert render_k8s.main(args) == 0
    text = output.read_text()
    assert text.startswith("# GENERATED by `python scripts/render_k8s.py --serve-config ")
    assert render_k8s.main([*args, "--check"]) == 0
    output.write_text(text.replace("maxReplicas: 8", "maxReplicas: 9"))
    assert render_k8s.main([*args, "--check"]) == 1
    manifest = yaml.safe_load(text)
    assert manifest["kind"] == "RayService" and manifest["apiVersion"] == "ray.io/v1"


def test_render_cli_refuses_an_invalid_serve_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render_k8s = _load_script("render_k8s")
    broken = copy.deepcopy(SAMPLE_SERVE_CONFIG)
    broken["applications"][0]["deployments"][0]["max_ongoing_requests"] = "lots"
    serve_config = tmp_path / "gpu.yaml"
    serve_config.write_text(yaml.safe_dump(broken))
    assert render_k8s.main(["--serve-config", str(serve_config), "--stdout"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a valid Serve config" in err and "max_ongoing_requests" in err
    assert len(err.splitlines()) == 1


def test_committed_manifest_is_current() -> None:
    if not GPU_SERVE_CONFIG.is_file():
        pytest.skip(f"{GPU_SERVE_CONFIG.relative_to(REPO_ROOT)} not committed yet")
    render_k8s = _load_script("render_k8s")
    _, text = render_k8s.render(
        render_k8s.DEFAULT_SERVE_CONFIG, render_k8s.DEFAULT_CLUSTER, render_k8s.DEFAULT_OUTPUT
    )
    problem = render_k8s.check(render_k8s.DEFAULT_OUTPUT, text)
    assert problem is None, f"{problem}\nregenerate with: python scripts/render_k8s.py"
    policy = render_k8s.render_network_policy_text(
        render_k8s.DEFAULT_CLUSTER, render_k8s.DEFAULT_SERVE_CONFIG, render_k8s.DEFAULT_OUTPUT
    )
    problem = render_k8s.check(render_k8s.network_policy_path(render_k8s.DEFAULT_OUTPUT), policy)
    assert problem is None, f"{problem}\nregenerate with: python scripts/render_k8s.py"


def test_importing_recsys_k8s_leaves_ray_out() -> None:
    code = (
        "import sys, recsys.k8s, recsys.k8s.deploy\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# diff_manifests and merge_patch
# --------------------------------------------------------------------------------------------


def _as_live(manifest: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    live = copy.deepcopy(manifest)
    live["metadata"].update(
        uid="0d9c",
        resourceVersion="4711",
        generation=generation,
        creationTimestamp="2026-11-23T10:00:00Z",
        finalizers=["ray.io/rayservice-finalizer"],
        managedFields=[{"manager": "recsys-deploy"}],
    )
    live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    live["metadata"]["labels"]["team"] = "search"  # added by someone else: not ours to judge
    live["status"] = {"serviceStatus": "Running", "observedGeneration": generation}
    return live


def test_diff_ignores_what_the_server_owns(manifest: dict[str, Any]) -> None:
    assert diff_manifests(_as_live(manifest), manifest) == []


def test_diff_names_changed_fields(manifest: dict[str, Any], spec: ClusterSpec) -> None:
    live = _as_live(manifest)
    data = spec.model_dump(mode="json")
    data["worker_groups"][0]["max_replicas"] = 12
    data["artifacts_uri"] = "s3://recsys-artifacts/releases/0.2.0"
    data["image"]["tag"] = "0.2.0-ray2.60.0-py311-gpu"
    desired = render_rayservice(SAMPLE_SERVE_CONFIG, ClusterSpec.model_validate(data))
    changes = diff_manifests(live, desired)
    workers = "spec.rayClusterConfig.workerGroupSpecs"
    assert f"{workers}[gpu-small].maxReplicas: 8 -> 12" in changes
    assert (
        "spec.serveConfigV2.applications[recsys].args.artifacts: "
        '"s3://recsys-artifacts/releases/0.1.0" -> "s3://recsys-artifacts/releases/0.2.0"'
    ) in changes
    image_changes = [c for c in changes if c.endswith(".image: " + _quoted_images(spec, data))]
    assert len(image_changes) == 3  # head + two worker groups
    assert len(changes) == 5


def _quoted_images(spec: ClusterSpec, data: dict[str, Any]) -> str:
    return f'"{spec.image.ref}" -> "{spec.image.repository}:{data["image"]["tag"]}"'


def test_diff_reports_added_and_removed_fields(manifest: dict[str, Any]) -> None:
    live = _as_live(manifest)
    desired = copy.deepcopy(manifest)
    del desired["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    desired["spec"]["rayClusterConfig"]["workerGroupSpecs"].pop()
    desired["metadata"]["labels"]["tier"] = "prod"
    changes = diff_manifests(live, desired)
    assert any(
        c.startswith("spec.rayClusterConfig.gcsFaultToleranceOptions: removed") for c in changes
    )
    assert any(
        c.startswith("spec.rayClusterConfig.workerGroupSpecs[gpu-multi]: removed") for c in changes
    )
    assert 'metadata.labels[tier]: added "prod"' in changes


def test_diff_with_server_defaults_is_empty(
    manifest: dict[str, Any], crds: dict[str, dict[str, Any]]
) -> None:
    schema = openapi_schema(crds["RayService"])
    live = _as_live(apply_schema_defaults(manifest, schema))
    assert diff_manifests(live, manifest) != []  # the defaults look like removals...
    assert diff_manifests(live, apply_schema_defaults(manifest, schema)) == []  # ...until applied


def _apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, written independently of recsys.k8s.diff."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _apply_merge_patch(result.get(key), value)
    return result


def test_merge_patch_turns_live_into_desired(manifest: dict[str, Any]) -> None:
    live = _as_live(manifest)["spec"]
    live["rayClusterConfig"]["suspend"] = False  # a field the desired manifest dropped
    desired = copy.deepcopy(manifest["spec"])
    desired["rayClusterConfig"]["workerGroupSpecs"][1]["maxReplicas"] = 2
    desired["rayClusterConfig"]["autoscalerOptions"]["upscalingMode"] = "Conservative"
    patch = merge_patch(live, desired)
    assert patch["rayClusterConfig"]["suspend"] is None
    assert set(patch["rayClusterConfig"]) == {"suspend", "workerGroupSpecs", "autoscalerOptions"}
    assert _apply_merge_patch(live, patch) == desired
    assert merge_patch(desired, desired) == {}


# --------------------------------------------------------------------------------------------
# Rollout states
# --------------------------------------------------------------------------------------------

T0 = "2026-11-23T10:00:00Z"


def _cond(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T0,
    }


def _apps(status: str, message: str = "", **deployments: str) -> dict[str, Any]:
    return {
        "recsys": {
            "status": status,
            "message": message,
            "serveDeploymentStatuses": {
                name: {"status": s, "message": f"{name} is {s}"} for name, s in deployments.items()
            },
        }
    }


def _svc(generation: int, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "recsys", "generation": generation},
        "status": status,
    }


RUNNING_ACTIVE = {"rayClusterName": "recsys-a", "applicationStatuses": _apps("RUNNING")}

ROLLOUT_CASES = [
    ("new object, no status yet", _svc(1), "pending", "waiting for the operator"),
    (
        "operator has not seen the patch",
        _svc(
            2,
            observedGeneration=1,
            serviceStatus="Running",
            numServeEndpoints=3,
            conditions=[_cond("Ready", "True", "NonZeroServeEndpoints")],
            activeServiceStatus=RUNNING_ACTIVE,
        ),
        "pending",
        "observedGeneration 1",
    ),
    (
        "initializing",
        _svc(
            1,
            observedGeneration=1,
            conditions=[
                _cond("Ready", "False", "Initializing", "RayService is initializing"),
                _cond("UpgradeInProgress", "False", "Initializing"),
            ],
            pendingServiceStatus={
                "rayClusterName": "recsys-a",
                "rayClusterStatus": {"desiredWorkerReplicas": 2, "readyWorkerReplicas": 1},
                "applicationStatuses": _apps("DEPLOYING"),
            },
        ),
        "pending",
        "Initializing: RayService is initializing (workers 1/2 ready, recsys DEPLOYING)",
    ),
    (
        "blue/green upgrade",
        _svc(
            3,
            observedGeneration=3,
            numServeEndpoints=2,
            conditions=[
                _cond("Ready", "True", "NonZeroServeEndpoints"),
                _cond("UpgradeInProgress", "True", "BothActivePendingClustersExist"),
            ],
            activeServiceStatus=RUNNING_ACTIVE,
            pendingServiceStatus={
                "rayClusterName": "recsys-b",
                "applicationStatuses": _apps("DEPLOYING"),
            },
        ),
        "upgrading",
        "new RayCluster recsys-b coming up; traffic stays on recsys-a",
    ),
    (
        "in-place Serve update",
        _svc(
            4,
            observedGeneration=4,
            numServeEndpoints=2,
            conditions=[
                _cond("Ready", "True", "NonZeroServeEndpoints"),
                _cond("UpgradeInProgress", "False", "NoPendingCluster"),
            ],
            activeServiceStatus={
                "rayClusterName": "recsys-a",
                "applicationStatuses": _apps("DEPLOYING", Ranker="UPDATING"),
            },
        ),
        "upgrading",
        "updating in place: recsys DEPLOYING: Ranker: Ranker is UPDATING",
    ),
    (
        "running",
        _svc(
            4,
            observedGeneration=4,
            numServeEndpoints=2,
            serviceStatus="Running",
            conditions=[
                _cond("Ready", "True", "NonZeroServeEndpoints"),
                _cond("UpgradeInProgress", "False", "NoPendingCluster"),
            ],
            activeServiceStatus=RUNNING_ACTIVE,
        ),
        "running",
        "2 Serve endpoints; RUNNING: recsys",
    ),
    (
        "an application turned unhealthy",
        _svc(
            4,
            observedGeneration=4,
            numServeEndpoints=1,
            conditions=[_cond("Ready", "True", "NonZeroServeEndpoints")],
            activeServiceStatus={
                "rayClusterName": "recsys-a",
                "applicationStatuses": _apps("UNHEALTHY", Retriever="UNHEALTHY"),
            },
        ),
        "upgrading",
        "Serve applications not RUNNING: recsys UNHEALTHY: Retriever: Retriever is UNHEALTHY",
    ),
    (
        "endpoints dropped to zero",
        _svc(
            4,
            observedGeneration=4,
            conditions=[
                _cond(
                    "Ready", "False", "ZeroServeEndpoints", "Number of serve endpoints dropped to 0"
                )
            ],
            activeServiceStatus=RUNNING_ACTIVE,
        ),
        "pending",
        "ZeroServeEndpoints",
    ),
    (
        "validation failed (observedGeneration is not advanced)",
        _svc(
            2,
            observedGeneration=1,
            conditions=[
                _cond(
                    "Ready",
                    "False",
                    "ValidationFailed",
                    "The RayService spec is invalid: worker group gpu-small has negative "
                    "minReplicas -1",
                )
            ],
        ),
        "failed",
        "ValidationFailed: The RayService spec is invalid",
    ),
    (
        "validation failed earlier, the fixed spec was accepted",
        _svc(
            3,
            observedGeneration=3,
            conditions=[_cond("Ready", "False", "ValidationFailed", "negative minReplicas")],
            pendingServiceStatus={
                "rayClusterName": "recsys-a",
                "applicationStatuses": _apps("DEPLOYING"),
            },
        ),
        "pending",
        "spec accepted; waiting for Serve endpoints (recsys DEPLOYING)",
    ),
    (
        "initializing timeout",
        _svc(
            1,
            observedGeneration=1,
            conditions=[_cond("Ready", "False", "InitializingTimeout", "not ready within 30m0s")],
        ),
        "failed",
        "InitializingTimeout: not ready within 30m0s",
    ),
    (
        "new cluster's application failed",
        _svc(
            3,
            observedGeneration=3,
            conditions=[
                _cond("Ready", "True", "NonZeroServeEndpoints"),
                _cond("UpgradeInProgress", "True", "BothActivePendingClustersExist"),
            ],
            activeServiceStatus=RUNNING_ACTIVE,
            pendingServiceStatus={
                "rayClusterName": "recsys-b",
                "applicationStatuses": _apps(
                    "DEPLOY_FAILED", "replica constructor raised", Ranker="UNHEALTHY"
                ),
            },
        ),
        "failed",
        "recsys DEPLOY_FAILED: replica constructor raised | Ranker: Ranker is UNHEALTHY",
    ),
    (
        "rollback",
        _svc(
            5,
            observedGeneration=5,
            conditions=[
                _cond("Ready", "True", "NonZeroServeEndpoints"),
                _cond("UpgradeInProgress", "True", "BothActivePendingClustersExist"),
                _cond("RollbackInProgress", "True", "TargetClusterChanged", "spec reverted"),
            ],
            activeServiceStatus=RUNNING_ACTIVE,
        ),
        "upgrading",
        "rolling back: spec reverted",
    ),
    (
        "legacy: waiting",
        _svc(
            2,
            observedGeneration=2,
            serviceStatus="WaitForServeDeploymentReady",
            activeServiceStatus={
                "rayClusterName": "recsys-a",
                "applicationStatuses": _apps("DEPLOYING"),
            },
        ),
        "pending",
        "WaitForServeDeploymentReady (recsys DEPLOYING)",
    ),
    (
        "legacy: preparing a new cluster",
        _svc(
            2,
            observedGeneration=2,
            serviceStatus="Running",
            activeServiceStatus=RUNNING_ACTIVE,
            pendingServiceStatus={"rayClusterName": "recsys-b"},
        ),
        "upgrading",
        "recsys-b",
    ),
    (
        "legacy: running",
        _svc(2, observedGeneration=2, serviceStatus="Running", activeServiceStatus=RUNNING_ACTIVE),
        "running",
        "RUNNING: recsys",
    ),
    (
        "legacy: retrying an error",
        _svc(2, observedGeneration=2, serviceStatus="FailedToGetOrCreateRayCluster"),
        "pending",
        "FailedToGetOrCreateRayCluster",
    ),
]


def _case(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = next(case[1] for case in ROLLOUT_CASES if case[0] == name)
    return obj


@pytest.mark.parametrize(
    ("obj", "state", "reason"),
    [case[1:] for case in ROLLOUT_CASES],
    ids=[case[0] for case in ROLLOUT_CASES],
)
def test_rollout_state(obj: dict[str, Any], state: str, reason: str) -> None:
    generation = obj["metadata"]["generation"]
    assert rollout_state(obj, generation) == state
    status = rollout_status(obj, generation)
    assert reason in status.reason, status.reason


def test_a_status_for_an_older_generation_is_not_running() -> None:
    running = _case("running")
    assert rollout_state(running, 4) == "running"
    assert rollout_state(running, 5) == "pending"


def test_watcher_waits_for_stable_outcomes() -> None:
    running, failed = _case("running"), _case("initializing timeout")
    watcher = RolloutWatcher(generation=4, confirmations=2, failure_confirmations=3)
    assert watcher.observe(running)[1] is False
    assert watcher.observe(running)[1] is True
    watcher = RolloutWatcher(generation=1, confirmations=2, failure_confirmations=3)
    outcomes = [watcher.observe(failed)[1] for _ in range(3)]
    assert outcomes == [False, False, True]
    # A failure that clears (a stale status from before the patch) starts over.
    watcher = RolloutWatcher(generation=1, confirmations=1, failure_confirmations=2)
    watcher.observe(failed)
    status, done = watcher.observe(_case("initializing"))
    assert (status.state, done) == ("pending", False)


# --------------------------------------------------------------------------------------------
# Access: Ray token auth, secrets by reference, the request-id guard, the NetworkPolicy
# --------------------------------------------------------------------------------------------


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = _cluster(manifest)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_ray_token_auth_and_secrets_reach_every_container(
    manifest: dict[str, Any], spec: ClusterSpec
) -> None:
    assert _cluster(manifest)["authOptions"] == {"mode": "token"}
    assert spec.api_keys_secret is not None
    for container in _containers(manifest):
        env = _env_of(container)
        ref = env["RECSYS_API_KEYS"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (spec.api_keys_secret.name, spec.api_keys_secret.key)
        assert ref["optional"] is False  # a missing Secret stops the pod, never serves open
    off = spec.model_copy(update={"ray_token_auth": False, "api_keys_secret": None})
    rendered = render_rayservice(SAMPLE_SERVE_CONFIG, off)
    assert _cluster(rendered)["authOptions"] == {"mode": "disabled"}
    assert all("RECSYS_API_KEYS" not in _env_of(c) for c in _containers(rendered))
    data = spec.model_dump(mode="json")
    data["artifact_key_secret"] = {"name": "recsys-artifact-key", "key": "key"}
    signed = ClusterSpec.model_validate(data)
    for container in _containers(render_rayservice(SAMPLE_SERVE_CONFIG, signed)):
        assert _env_of(container)["RECSYS_ARTIFACT_KEY"]["secretKeyRef"]["name"] == (
            "recsys-artifact-key"
        )


def test_the_ray_client_port_is_not_published(manifest: dict[str, Any]) -> None:
    for container in _containers(manifest):
        assert 10001 not in {p["containerPort"] for p in container["ports"]}


def test_every_node_runs_the_local_http_middlewares(manifest: dict[str, Any]) -> None:
    """Serve's proxies on every pod load the same callback as a local instance, and it puts
    the request-id guard around Serve's own request-id handling."""
    from deployments.serve_main import LOCAL_SERVE_ENV
    from recsys.request_ids import RequestIdGuard

    name = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
    values = {_env_of(c)[name] for c in _containers(manifest)}
    assert values == {LOCAL_SERVE_ENV[name]}
    module, _, function = values.pop().partition(":")
    middlewares = getattr(importlib.import_module(module), function)()
    assert RequestIdGuard in [m.cls for m in middlewares]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def _allowed(
    policy: dict[str, Any],
    port: int,
    namespace: str,
    pod_labels: dict[str, str],
) -> bool:
    """Whether a pod with ``pod_labels`` in ``namespace`` may open ``port`` on a selected pod
    (NetworkPolicy semantics: any rule whose peers and ports both match allows)."""
    policy_ns = policy["metadata"]["namespace"]
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        if ports is not None and port not in {p["port"] for p in ports}:
            continue
        for peer in rule.get("from", []):
            ns_ok = (
                _selects(peer["namespaceSelector"], ns_labels)
                if "namespaceSelector" in peer
                else namespace == policy_ns
            )
            pod_ok = _selects(peer["podSelector"], pod_labels) if "podSelector" in peer else True
            if ns_ok and pod_ok:
                return True
    return False


def test_network_policy_lets_each_caller_reach_only_its_ports(
    manifest: dict[str, Any], spec: ClusterSpec
) -> None:
    policy = render_network_policy(spec)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    pods = [t["metadata"]["labels"] for t in _pod_templates(manifest)]
    assert all(_selects(policy["spec"]["podSelector"], labels) for labels in pods)
    own, ns = pods[0], spec.namespace
    stranger = {"app": "web"}
    for port in (6379, 8265, 10001, 8080, 52365, 8000):
        assert _allowed(policy, port, ns, own), port  # Ray between its own nodes
    for port in (6379, 8265, 10001, 52365, 8080):
        assert not _allowed(policy, port, ns, stranger), port  # another app, same namespace
        assert not _allowed(policy, port, "shop", stranger), port
    assert _allowed(policy, 8000, "shop", stranger)
    assert _allowed(policy, 8265, spec.network.operator_namespace, {"app": "kuberay"})
    assert not _allowed(policy, 6379, spec.network.operator_namespace, {"app": "kuberay"})
    for port in (8080, 44217, 44227):
        assert _allowed(policy, port, spec.network.monitoring_namespace, {"app": "prometheus"})
    assert not _allowed(policy, 8265, spec.network.monitoring_namespace, {"app": "prometheus"})
    only_shop = spec.model_copy(deep=True)
    only_shop.network.serve_from_namespaces = {"kubernetes.io/metadata.name": "shop"}
    narrowed = render_network_policy(only_shop)
    assert _allowed(narrowed, 8000, "shop", stranger)
    assert not _allowed(narrowed, 8000, "other", stranger)


def _pod_templates(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = _cluster(manifest)
    return [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
