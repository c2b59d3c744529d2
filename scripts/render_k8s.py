#!/usr/bin/env python
"""Render the KubeRay RayService manifest (k8s/rayservice.yaml) from its two sources.

  Serve config   deployments/configs/gpu.yaml   what `serve deploy` takes (validated with
                                                Ray's ServeDeploySchema)
  ClusterSpec    k8s/cluster.yaml               image, GPU worker groups, autoscaler, GCS fault
                                                tolerance, upgrade strategy, artifact URI

The serve config goes into spec.serveConfigV2 unchanged except for HTTP bind address/port,
proxy placement and the artifact URI. Rendering fails if a deployment's replica (or GPU gang)
fits no worker group. The NetworkPolicy around the Ray pods (ClusterSpec `network`) is written
beside the manifest, as networkpolicy.yaml.

examples:
  python scripts/render_k8s.py            # rewrite k8s/rayservice.yaml
  python scripts/render_k8s.py --check    # CI: exit 1 if k8s/rayservice.yaml is stale
  python scripts/render_k8s.py --stdout   # print instead of writing

exit status: 0 ok, 1 stale (--check), 2 invalid or missing input.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from recsys.k8s.render import (  # noqa: E402
    RenderError,
    manifest_text,
    render_network_policy,
    render_rayservice,
)
from recsys.k8s.spec import ClusterSpec  # noqa: E402

DEFAULT_SERVE_CONFIG = REPO_ROOT / "deployments" / "configs" / "gpu.yaml"
DEFAULT_CLUSTER = REPO_ROOT / "k8s" / "cluster.yaml"
DEFAULT_OUTPUT = REPO_ROOT / "k8s" / "rayservice.yaml"
SCRIPT = "python scripts/render_k8s.py"


class InputError(Exception):
    """A source file is missing or invalid (one-line message)."""


def load_serve_config(path: Path) -> dict[str, Any]:
    """The serve config at ``path``, validated with Ray Serve's own ``ServeDeploySchema``."""
    from ray.serve.schema import ServeDeploySchema

    data = _load_yaml(path, "serve config")
    try:
        ServeDeploySchema.model_validate(data)
    except ValidationError as error:
        raise InputError(f"{_display(path)} is not a valid Serve config: {_first(error)}") from None
    return data


def load_cluster_spec(path: Path) -> ClusterSpec:
    """The ``ClusterSpec`` at ``path``."""
    try:
        return ClusterSpec.model_validate(_load_yaml(path, "cluster spec"))
    except ValidationError as error:
        raise InputError(f"{_display(path)} is not a valid ClusterSpec: {_first(error)}") from None


def render(
    serve_config_path: Path, cluster_path: Path, output: Path = DEFAULT_OUTPUT
) -> tuple[dict[str, Any], str]:
    """The RayService manifest and the text of ``output`` (with the generated-file header)."""
    serve_config = load_serve_config(serve_config_path)
    spec = load_cluster_spec(cluster_path)
    try:
        manifest = render_rayservice(serve_config, spec)
    except RenderError as error:
        raise InputError(f"cannot render: {error}") from None
    text = manifest_text(
        manifest,
        command=command_line(serve_config_path, cluster_path, output),
        sources=[
            f"{_display(serve_config_path)} (Serve config)",
            f"{_display(cluster_path)} (ClusterSpec)",
        ],
    )
    return manifest, text


def network_policy_path(output: Path) -> Path:
    """Where the NetworkPolicy goes: beside the RayService manifest."""
    return output.parent / "networkpolicy.yaml"


def render_network_policy_text(
    cluster_path: Path, serve_config_path: Path, output: Path = DEFAULT_OUTPUT
) -> str:
    """The text of the NetworkPolicy file (with the generated-file header)."""
    spec = load_cluster_spec(cluster_path)
    return manifest_text(
        render_network_policy(spec),
        command=command_line(serve_config_path, cluster_path, output),
        sources=[f"{_display(cluster_path)} (ClusterSpec)"],
    )


def command_line(serve_config_path: Path, cluster_path: Path, output: Path) -> str:
    """The command that regenerates ``output``, naming only non-default paths."""
    parts = [SCRIPT]
    if serve_config_path.resolve() != DEFAULT_SERVE_CONFIG:
        parts += ["--serve-config", _display(serve_config_path)]
    if cluster_path.resolve() != DEFAULT_CLUSTER:
        parts += ["--cluster", _display(cluster_path)]
    if output.resolve() != DEFAULT_OUTPUT:
        parts += ["--output", _display(output)]
    return " ".join(parts)


def check(output: Path, text: str) -> str | None:
    """None when ``output`` holds exactly ``text``; else why it is stale (with a diff)."""
    if not output.is_file():
        return f"{_display(output)} does not exist"
    current = output.read_text()
    if current == text:
        return None
    diff = difflib.unified_diff(
        current.splitlines(), text.splitlines(), "committed", "rendered", lineterm="", n=1
    )
    lines = list(diff)
    shown = "\n".join(lines[:40]) + ("\n..." if len(lines) > 40 else "")
    return f"{_display(output)} is stale:\n{shown}"


def _load_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{what} {_display(path)} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{what} {_display(path)} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {_display(path)} must be a YAML mapping")
    return data


def _first(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "<root>"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{location}: {first['msg']}{more}"


def _display(path: Path) -> str:
    resolved = path.resolve()
    if resolved.is_relative_to(REPO_ROOT):
        return resolved.relative_to(REPO_ROOT).as_posix()
    return str(path)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="render_k8s.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--serve-config",
        type=Path,
        default=DEFAULT_SERVE_CONFIG,
        metavar="PATH",
        help="Serve config (ServeDeploySchema YAML); default: %(default)s",
    )
    parser.add_argument(
        "--cluster",
        type=Path,
        default=DEFAULT_CLUSTER,
        metavar="PATH",
        help="ClusterSpec YAML; default: %(default)s",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        metavar="PATH",
        help="manifest to write or check; default: %(default)s",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if --output is stale"
    )
    mode.add_argument("--stdout", action="store_true", help="print the manifest, write nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Render, write, print or check; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _, text = render(args.serve_config, args.cluster, args.output)
        policy = render_network_policy_text(args.cluster, args.serve_config, args.output)
    except InputError as error:
        print(f"render_k8s.py: error: {error}", file=sys.stderr)
        return 2
    if args.stdout:
        sys.stdout.write(text)
        return 0
    files = {args.output: text, network_policy_path(args.output): policy}
    if args.check:
        problems = [p for p in (check(path, t) for path, t in files.items()) if p is not None]
        if not problems:
            print(f"{', '.join(_display(p) for p in files)} up to date")
            return 0
        for problem in problems:
            print(f"render_k8s.py: {problem}", file=sys.stderr)
        command = command_line(args.serve_config, args.cluster, args.output)
        print(f"regenerate with: {command}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        path.write_text(content)
        print(f"wrote {_display(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
