"""`serve deploy` and `serve run` of the committed config against a `ray start --head` cluster.

This is how operators use the app outside `recsys serve`: the same YAML that `serve build`-style
generation committed, with only the artifact URI and port changed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# Token authentication on for the head and every CLI call alike (Ray 2.60 turns it on for a
# head when a token file exists, but a CLI only sends the token when told the mode).
ENV = {**os.environ, "RAY_AUTH_MODE": "token"}


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """`ray start --head --block` in the background, stopped through its own pid."""
    ports = {"gcs": free_port(), "dashboard": free_port(), "http": free_port()}
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--num-cpus",
                "2",
                "--port",
                str(ports["gcs"]),
                "--dashboard-port",
                str(ports["dashboard"]),
                "--include-dashboard",
                "true",
                "--disable-usage-stats",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=ENV,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # the dashboard's REST API (what serve deploy/status use) is up; the CLI finds the
            # cluster's auth token by itself where token authentication is on
            status = cli("serve", "status", "--address", f"http://127.0.0.1:{ports['dashboard']}")
            if status.returncode == 0:
                break
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(1)
        else:
            raise TimeoutError(f"ray head not ready: {log.read_text()[-2000:]}")
        yield ports
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def config_file(tmp_path: Path, artifacts: Path, port: int, name: str = "local") -> Path:
    data = yaml.safe_load((ROOT / "deployments" / "configs" / f"{name}.yaml").read_text())
    data["http_options"] = {"host": "127.0.0.1", "port": port}
    data["applications"][0]["args"]["artifacts"] = str(artifacts)
    path = tmp_path / f"serve-{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_healthy(address: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        out = cli("serve", "status", "--address", address)
        if out.returncode == 0:
            status = yaml.safe_load(out.stdout) or {}
            app = (status.get("applications") or {}).get("recsys") or {}
            deployments = app.get("deployments") or {}
            if (
                app.get("status") == "RUNNING"
                and deployments
                and all(d.get("status") == "HEALTHY" for d in deployments.values())
            ):
                return app
        time.sleep(3)
    raise TimeoutError(f"app not healthy: {status}")


def search(port: int) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/search", json={"query": "desk lamp", "k": 3}, timeout=60
    )


def test_serve_deploy_then_serve_run_the_committed_config(
    ray_head: dict[str, int], tiny_artifact: Path, tmp_path: Path
) -> None:
    dashboard = f"http://127.0.0.1:{ray_head['dashboard']}"
    cfg = config_file(tmp_path, tiny_artifact, ray_head["http"], "local-split")

    out = cli("serve", "deploy", str(cfg), "--address", dashboard)
    assert out.returncode == 0, out.stderr[-2000:]
    app = wait_healthy(dashboard)
    assert set(app["deployments"]) == {"Ingress", "QueryEncoder", "Retriever", "Ranker"}
    r = search(ray_head["http"])
    assert r.status_code == 200 and len(r.json()["items"]) == 3

    env_address = f"127.0.0.1:{ray_head['gcs']}"
    out = cli("serve", "run", str(cfg), "--address", env_address, "--non-blocking", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wait_healthy(dashboard)
    assert search(ray_head["http"]).status_code == 200

    out = cli("serve", "shutdown", "--address", dashboard, "--yes")
    assert out.returncode == 0, out.stderr[-2000:]


def test_serve_deploy_the_fused_config(
    ray_head: dict[str, int], tiny_artifact: Path, tmp_path: Path
) -> None:
    """The committed local config (``local.yaml``, fused): one deployment, the ingress, whose
    replicas run the stages; ready and answering like the split app."""
    dashboard = f"http://127.0.0.1:{ray_head['dashboard']}"
    fused = config_file(tmp_path, tiny_artifact, ray_head["http"], "local")
    out = cli("serve", "deploy", str(fused), "--address", dashboard)
    assert out.returncode == 0, out.stderr[-2000:]
    assert set(wait_healthy(dashboard)["deployments"]) == {"Ingress"}
    r = search(ray_head["http"])
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    ready = httpx.get(f"http://127.0.0.1:{ray_head['http']}/readyz", timeout=60)
    assert ready.status_code == 200 and ready.json()["topology"] == "fused"
    out = cli("serve", "shutdown", "--address", dashboard, "--yes")
    assert out.returncode == 0, out.stderr[-2000:]
