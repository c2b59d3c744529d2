"""The simulated cluster's pure parts: spec from the production worker groups, the rendered
autoscaler config (checked against Ray's own schema), placement checks, status parsing, and
the process bookkeeping of ``down`` (exercised on plain processes, no Ray)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recsys.experiments.cluster_spec import (
    HEAD_NODE_TYPE,
    NODE_TYPE_LABEL,
    FakeClusterSpec,
    NodeTypeSpec,
    ReplicaCounts,
    check_fits,
    format_status,
    node_status_from_report,
    node_types_for,
    parse_ray_status,
    render_autoscaler_config,
    replicas_from_serve_details,
    spec_from_k8s,
)
from recsys.experiments.local_cluster import (
    ClusterError,
    ClusterState,
    LocalCluster,
    alive,
    session_members,
)
from recsys.k8s.spec import ClusterSpec

ROOT = Path(__file__).resolve().parents[2]


def k8s_cluster() -> ClusterSpec:
    return ClusterSpec.model_validate(yaml.safe_load((ROOT / "k8s" / "cluster.yaml").read_text()))


def local_spec() -> FakeClusterSpec:
    return spec_from_k8s(
        k8s_cluster(), max_workers={"gpu-small": 3, "gpu-multi": 2}, idle_timeout_s=20
    )


def test_node_types_mirror_the_production_worker_groups() -> None:
    spec = local_spec()
    small, multi = spec.worker_type("gpu-small"), spec.worker_type("gpu-multi")
    assert (small.cpus, small.gpus, small.min_workers, small.max_workers) == (6, 1, 1, 3)
    assert (multi.cpus, multi.gpus, multi.min_workers, multi.max_workers) == (16, 2, 1, 2)
    assert spec.head_cpus == 0 and spec.max_workers == 5
    assert spec.min_nodes() == {"gpu-small": 1, "gpu-multi": 1}
    uncapped = spec_from_k8s(k8s_cluster())
    assert uncapped.worker_type("gpu-small").max_workers == 8
    with pytest.raises(ValueError, match="unknown worker groups"):
        spec_from_k8s(k8s_cluster(), max_workers={"gpu-huge": 1})


def test_rendered_autoscaler_config() -> None:
    config = render_autoscaler_config(local_spec(), "10.0.0.5:6390")
    assert config["provider"]["type"] == "fake_multinode"
    assert config["provider"]["gcs_address"] == "10.0.0.5:6390"
    assert config["head_node_type"] == HEAD_NODE_TYPE
    head = config["available_node_types"][HEAD_NODE_TYPE]
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0
    small = config["available_node_types"]["gpu-small"]
    assert small["resources"]["CPU"] == 6 and small["resources"]["GPU"] == 1
    assert small["labels"] == {NODE_TYPE_LABEL: "gpu-small"}
    assert (small["min_workers"], small["max_workers"]) == (1, 3)
    assert config["idle_timeout_minutes"] == pytest.approx(20 / 60)
    assert config["max_workers"] == 5


def test_rendered_config_is_valid_for_rays_autoscaler() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    origin = importlib.util.find_spec("ray").origin  # locates the package without importing it
    schema_path = Path(origin).parent / "autoscaler" / "ray-schema.json"
    if not schema_path.is_file():
        pytest.skip("Ray's autoscaler schema is not installed")
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(render_autoscaler_config(local_spec(), "127.0.0.1:6390"), schema)


def test_the_gpu_serve_config_fits_the_node_types() -> None:
    serve_config = yaml.safe_load((ROOT / "deployments" / "configs" / "gpu.yaml").read_text())
    assert serve_config["proxy_location"] == "HeadOnly"
    assert check_fits(serve_config, local_spec()) == []
    only_small = FakeClusterSpec(
        worker_types=[
            NodeTypeSpec(
                name="gpu-small",
                cpus=6,
                gpus=1,
                resources={"pool_gpu_small": 1},
                max_workers=2,
            )
        ]
    )
    problems = check_fits(serve_config, only_small)
    assert len(problems) == 1 and "Ranker" in problems[0] and "GPU 2" in problems[0]


def test_pools_keep_their_replicas_apart() -> None:
    """Fractional-GPU stages and the ingress land only on gpu-small, ranker gangs only on
    gpu-multi: the pools' custom resources, the same in the simulation and the RayService."""
    serve_config = yaml.safe_load((ROOT / "deployments" / "configs" / "gpu.yaml").read_text())
    spec = local_spec()
    placed = {
        d["name"]: node_types_for(d, spec) for d in serve_config["applications"][0]["deployments"]
    }
    assert placed == {
        "QueryEncoder": ["gpu-small"],
        "Retriever": ["gpu-small"],
        "Ranker": ["gpu-multi"],
        "Ingress": ["gpu-small"],
    }
    autoscaler = render_autoscaler_config(spec, "127.0.0.1:6390")["available_node_types"]
    manifest = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    groups = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for group in groups:
        for name, amount in group["resources"].items():
            assert autoscaler[group["groupName"]]["resources"][name] == float(amount)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="min_workers"):
        NodeTypeSpec(name="gpu-small", cpus=1, gpus=1, min_workers=3, max_workers=2)
    with pytest.raises(ValueError, match="unique"):
        FakeClusterSpec(
            worker_types=[
                NodeTypeSpec(name="a", cpus=1, gpus=0, max_workers=1),
                NodeTypeSpec(name="a", cpus=1, gpus=0, max_workers=1),
            ]
        )


RAY_STATUS = """\
======== Autoscaler status: 2026-11-23 21:22:43.542654 ========
Node status
---------------------------------------------------------------
Active:
 1 ray.head.default
 2 gpu-small
 1 gpu-multi
Pending:
 gpu-multi, 1 launching
 192.0.2.2: gpu-small, setting up
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 8.0/38.0 CPU
"""


def test_parse_ray_status() -> None:
    status = parse_ray_status(RAY_STATUS)
    assert status.active == {HEAD_NODE_TYPE: 1, "gpu-small": 2, "gpu-multi": 1}
    assert status.pending == {"gpu-multi": 1}
    assert status.workers() == {"gpu-small": 2, "gpu-multi": 1} and status.worker_count == 3
    empty = parse_ray_status(RAY_STATUS.replace(" 2 gpu-small\n 1 gpu-multi\n", ""))
    assert empty.workers() == {}


def test_node_status_from_the_autoscaler_report() -> None:
    report = {
        "active_nodes": {HEAD_NODE_TYPE: 1, "gpu-small": 1, "gpu-multi": 2},
        "pending_nodes": [["fff01", "gpu-small", "launching"]],
        "pending_launches": {"gpu-multi": 1},
        "failed_nodes": [["fff02", "gpu-multi"]],
    }
    status = node_status_from_report(report)
    assert status.workers() == {"gpu-small": 1, "gpu-multi": 2}
    assert status.pending == {"gpu-small": 1, "gpu-multi": 1}
    assert status.failures == ["fff02 gpu-multi"]
    assert node_status_from_report({}).active == {}


class FakeState:
    """Stands in for Serve's ReplicaState enum (the details carry enum members)."""

    def __init__(self, value: str):
        self.value = value


def test_replicas_from_serve_details() -> None:
    details = {
        "applications": {
            "recsys": {
                "deployments": {
                    "Ranker": {
                        "target_num_replicas": 2,
                        "replicas": [{"state": FakeState("RUNNING")}, {"state": "STARTING"}],
                    },
                    "Ingress": {"target_num_replicas": 1, "replicas": [{"state": "RUNNING"}]},
                    "Retriever": {"target_num_replicas": 1, "replicas": [{"state": "STOPPING"}]},
                }
            }
        }
    }
    counts = replicas_from_serve_details(details, "recsys")
    assert counts["Ranker"] == ReplicaCounts(running=1, target=2, starting=1)
    assert counts["Ingress"] == ReplicaCounts(running=1, target=1)
    assert counts["Retriever"].stopping == 1
    assert replicas_from_serve_details(details, "other") == {}
    text = format_status(parse_ray_status(RAY_STATUS), counts, "RUNNING")
    assert "gpu-multi" in text and "Ranker" in text and "RUNNING" in text


# ---- process bookkeeping (plain processes, no Ray) --------------------------------------------


def _fake_cluster(tmp_path: Path) -> tuple[LocalCluster, subprocess.Popen[bytes]]:
    """A 'head' in its own session with a child that outlives it, like a fake node's raylet."""
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "time.sleep(60)"
    )
    head = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    cluster = LocalCluster(tmp_path / "state")
    cluster.state_dir.mkdir(parents=True)
    state = ClusterState(
        pid=head.pid,
        session_id=head.pid,
        address="127.0.0.1:1",
        node_ip="127.0.0.1",
        temp_dir=str(tmp_path),
        state_dir=str(cluster.state_dir),
        token_path=str(tmp_path / "token"),
        config_path=str(tmp_path / "c.yaml"),
        log_path=str(tmp_path / "log"),
        started_unix=time.time(),
        spec={},
    )
    cluster.state_path.write_text(json.dumps(state.__dict__))
    deadline = time.monotonic() + 10
    while len(session_members(head.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return cluster, head


def test_down_stops_the_head_and_everything_left_in_its_session(tmp_path: Path) -> None:
    cluster, head = _fake_cluster(tmp_path)
    members = session_members(head.pid)
    assert len(members) == 2 and cluster.running() is not None
    with pytest.raises(ClusterError, match="already running"):
        cluster.up(local_spec())
    report = cluster.down(timeout_s=10, log=lambda _: None)
    head.wait(5)
    assert report.was_running and report.head_exited
    assert session_members(head.pid) == [] and not any(alive(p) for p in members)
    assert cluster.state() is None and cluster.running() is None
    assert cluster.down(log=lambda _: None).was_running is False  # idempotent


def test_client_env_names_the_token_and_address(tmp_path: Path) -> None:
    cluster, head = _fake_cluster(tmp_path)
    try:
        state = cluster.running()
        assert state is not None
        env = state.client_env()
        assert env == {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token"),
            "RAY_ADDRESS": "127.0.0.1:1",
        }
        assert str(cluster.temp_dir()).startswith("/tmp/recsys-ray-")
        assert len(str(cluster.temp_dir())) < 40
    finally:
        cluster.down(timeout_s=10, log=lambda _: None)
        head.wait(5)
    assert os.path.exists(tmp_path)
