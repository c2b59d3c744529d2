"""Import boundaries, checked by importing in a fresh interpreter and reading ``sys.modules``.

* The library stands alone: importing recsys (all of it) never imports Ray.
* The serving core stays apart from the tooling: no serving module (everything a replica may
  import: ``recsys`` outside its tooling packages, ``deployments`` outside the tooling's own
  adapters) imports the benchmark, experiments, traffic or Kubernetes tooling, nor the
  libraries only the tooling extras install. ``pip install .`` (no extras) must serve.
* What the serving modules import comes with the core install (``pyproject.toml``'s
  ``dependencies``, no extras).
* The ingress reaches its request helpers without the model stack (torch, transformers, faiss).
"""

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]

MODULES = [
    "recsys",
    "recsys.config",
    "recsys.encoder",
    "recsys.index",
    "recsys.retrieval",
    "recsys.ranking",
    "recsys.pipeline",
    "recsys.routing",
    "recsys.artifacts",
    "recsys.build",
    "recsys.evaluate",
    "recsys.cli",
]

TOOLING_PACKAGES = ("recsys.bench", "recsys.experiments", "recsys.traffic", "recsys.k8s")
"""The tooling inside ``recsys`` (installed with the ``lab`` and ``k8s`` extras' libraries)."""
TOOLING_LIBRARIES = ("kubernetes", "matplotlib", "httpx")
"""Third-party libraries only the tooling extras install (``k8s``, ``lab``)."""
TOOLING_ADAPTERS = {
    "deployments.monolith": "benchmark: the one-deployment monolith",
    "deployments.cluster_probe": "experiments: deploys and samples the simulated cluster",
    "deployments.cluster_provider": "experiments: the delayed fake node provider",
    "deployments.predictive_policy": "experiments: the predictive autoscaling policy",
}
"""Modules of ``deployments/`` that the tooling owns (nothing serving imports them)."""
MODEL_STACK = ("torch", "transformers", "faiss")

# Imports each module in turn and reports, per module, the watched modules it brought in
# (sys.modules only grows, so whatever a module pulls in shows up right after its import).
PROBE = """
import importlib, json, sys
modules, watched = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
def owner(module):
    return next((w for w in watched if module == w or module.startswith(w + ".")), None)
def hits():
    return {m for m in sys.modules if owner(m)}
seen, report = hits(), {}
for name in modules:
    importlib.import_module(name)
    now = hits()
    if now - seen:
        report[name] = sorted({owner(m) for m in now - seen})
    seen = now
print(json.dumps(report))
"""


def imported(modules: list[str], watched: tuple[str, ...]) -> dict[str, list[str]]:
    """``{module: [watched packages its import brought in]}`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules), json.dumps(watched)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def serving_modules() -> list[str]:
    """Every module of ``recsys`` and ``deployments`` except the tooling's (from the files, so
    a new module is covered the day it is added)."""
    names = []
    for package in ("recsys", "deployments"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            tooling = name in TOOLING_PACKAGES or name.startswith(
                tuple(p + "." for p in TOOLING_PACKAGES)
            )
            if not tooling and name not in TOOLING_ADAPTERS:
                names.append(name)
    return names


def test_importing_recsys_leaves_ray_out() -> None:
    found = imported(MODULES, ("ray",))
    assert not found, f"recsys imported Ray: {found}"


def test_the_check_itself_detects_ray() -> None:
    assert imported(["recsys.config", "ray"], ("ray",)) == {"ray": ["ray"]}


def test_serving_modules_never_import_tooling() -> None:
    modules = serving_modules()
    assert {"deployments.app", "deployments.ingress", "recsys.pipeline"} <= set(modules)
    assert not set(TOOLING_ADAPTERS) & set(modules)
    found = imported(modules, TOOLING_PACKAGES + TOOLING_LIBRARIES)
    assert not found, (
        f"serving modules import tooling (module: tooling it brought in): {found}; move the "
        "code the serving path needs out of the tooling, or the module into it"
    )


def test_the_tooling_check_detects_tooling() -> None:
    watched = TOOLING_PACKAGES + TOOLING_LIBRARIES
    found = imported(["recsys.config", "recsys.k8s"], watched)
    assert list(found) == ["recsys.k8s"]  # attributed to the module that brought it in
    assert "recsys.k8s" in found["recsys.k8s"]


def test_tooling_adapters_exist() -> None:
    for name in TOOLING_ADAPTERS:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), f"{name} is gone: update"


def test_ingress_imports_no_model_stack() -> None:
    found = imported(["deployments.ingress"], MODEL_STACK)
    assert not found, (
        f"deployments.ingress imports the model stack: {found}; it needs only the light "
        "request helpers (recsys.request, recsys.catalog, recsys.routing)"
    )


DIRECT_IMPORTS = """
import builtins, importlib, json, sys
ours, direct, real = ("recsys", "deployments"), set(), builtins.__import__
def hook(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and str((globals or {}).get("__name__", "")).split(".")[0] in ours:
        direct.add(name.split(".")[0])
    return real(name, globals, locals, fromlist, level)
builtins.__import__ = hook
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(direct)))
"""
"""Top-level names the given modules import themselves (not their dependencies' optional
imports), while being imported."""


def distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(requirements: list[str]) -> set[str]:
    """Distributions that installing ``requirements`` brings (from the installed metadata)."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (distribution(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            deps = requires(req.name) or []
        except PackageNotFoundError:
            continue
        for dep in map(Requirement, deps):
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append(dep)
    return {name for name, _ in seen}


def test_serving_imports_come_with_the_core_install() -> None:
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    closure = installed_closure(core)
    out = subprocess.run(
        [sys.executable, "-c", DIRECT_IMPORTS, json.dumps(serving_modules())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    owners = packages_distributions()
    missing = {}
    for top in json.loads(out.stdout.strip().splitlines()[-1]):
        if top in sys.stdlib_module_names or top in ("recsys", "deployments"):
            continue
        dists = {distribution(d) for d in owners.get(top, [])}
        if dists and not dists & closure:
            missing[top] = sorted(dists)
    assert not missing, f"serving modules import what only extras install: {missing}"
    assert {"ray", "torch", "faiss-cpu", "transformers"} <= closure
    assert not {"kubernetes", "matplotlib"} & closure


def test_errors_a_ranker_raises_reach_the_ingress_without_the_model_stack() -> None:
    """A replica's exception reaches its caller pickled; unpickling imports the class's module.
    The ingress must not import torch for it (seconds of a stalled event loop)."""
    import base64
    import pickle

    from recsys.ranker.sharded import GangBrokenError

    payload = base64.b64encode(pickle.dumps(GangBrokenError("a rank died"))).decode()
    probe = (
        "import base64, json, pickle, sys\n"
        f"err = pickle.loads(base64.b64decode({payload!r}))\n"
        "print(json.dumps([type(err).__name__, "
        f"sorted(m for m in {list(MODEL_STACK)!r} if m in sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    name, stack = json.loads(out.stdout)
    assert name == "GangBrokenError"
    assert stack == [], f"unpickling the ranker's error imported {stack}"
