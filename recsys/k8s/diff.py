"""Compare a live Kubernetes object with the desired manifest, and patch one into the other.

``diff_manifests`` lists what would change in words a reviewer reads
(``spec.rayClusterConfig.workerGroupSpecs[gpu-small].maxReplicas: 4 -> 8``), including inside
the ``serveConfigV2`` YAML string. ``merge_patch`` is the RFC 7386 JSON merge patch that turns
the live ``spec`` into the desired one, removals included.

Fields the server owns (``status``, ``uid``, ``resourceVersion``, ``generation``,
``managedFields``, ...) are ignored. Labels and annotations are compared only for the keys
the manifest sets, because other controllers legitimately add their own. Pass the desired
manifest through ``recsys.k8s.crd.apply_schema_defaults`` first, so that defaults the API
server filled in do not show up as removals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

SERVER_METADATA = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
        "finalizers",
        "ownerReferences",
        "generateName",
    }
)
IGNORED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
EMBEDDED_YAML_FIELDS = frozenset({"spec.serveConfigV2"})
"""String fields holding YAML, compared structurally."""
LIST_KEYS = ("name", "groupName", "key")
"""Fields that identify list items (deployments, worker groups, containers, env, ports...)."""


def diff_manifests(live: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """Human-readable paths where ``live`` differs from ``desired`` (empty: nothing to do)."""
    changes: list[str] = []
    for key in _ordered_keys(live, desired):
        if key in ("status", "metadata"):
            continue
        _diff(live.get(key, _MISSING), desired.get(key, _MISSING), key, changes)
    _diff_metadata(live.get("metadata") or {}, desired.get("metadata") or {}, changes)
    return changes


def _diff_metadata(live: Mapping[str, Any], desired: Mapping[str, Any], changes: list[str]) -> None:
    for key, want in desired.items():
        if key in SERVER_METADATA:
            continue
        have = live.get(key, _MISSING)
        if key in ("labels", "annotations") and isinstance(want, Mapping):
            have_map = have if isinstance(have, Mapping) else {}
            for name, value in want.items():
                if name not in IGNORED_ANNOTATIONS:
                    path = f"metadata.{key}[{name}]"
                    _diff(have_map.get(name, _MISSING), value, path, changes)
        else:
            _diff(have, want, f"metadata.{key}", changes)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _diff(live: Any, desired: Any, path: str, changes: list[str]) -> None:
    if live == desired:
        return
    if live is _MISSING:
        changes.append(f"{path}: added {_show(desired)}")
    elif desired is _MISSING:
        changes.append(f"{path}: removed (was {_show(live)})")
    elif path in EMBEDDED_YAML_FIELDS and isinstance(live, str) and isinstance(desired, str):
        _diff(_parse_yaml(live), _parse_yaml(desired), path, changes)
    elif isinstance(live, Mapping) and isinstance(desired, Mapping):
        for key in _ordered_keys(live, desired):
            _diff(live.get(key, _MISSING), desired.get(key, _MISSING), f"{path}.{key}", changes)
    elif isinstance(live, list) and isinstance(desired, list):
        _diff_lists(live, desired, path, changes)
    else:
        changes.append(f"{path}: {_show(live)} -> {_show(desired)}")


def _diff_lists(live: list[Any], desired: list[Any], path: str, changes: list[str]) -> None:
    key = _identity_key(live, desired)
    if key is None:
        for i in range(max(len(live), len(desired))):
            have = live[i] if i < len(live) else _MISSING
            want = desired[i] if i < len(desired) else _MISSING
            _diff(have, want, f"{path}[{i}]", changes)
        return
    live_by_id = {item[key]: item for item in live}
    desired_by_id = {item[key]: item for item in desired}
    for ident in _ordered_keys(live_by_id, desired_by_id):
        have = live_by_id.get(ident, _MISSING)
        _diff(have, desired_by_id.get(ident, _MISSING), f"{path}[{ident}]", changes)
    common_live = [ident for ident in live_by_id if ident in desired_by_id]
    if common_live != [ident for ident in desired_by_id if ident in live_by_id]:
        changes.append(f"{path}: order changes")


def _identity_key(*lists: Sequence[Any]) -> str | None:
    items = [item for items in lists for item in items]
    if not items or not all(isinstance(item, Mapping) for item in items):
        return None
    for key in LIST_KEYS:
        for items_ in lists:
            idents = [item.get(key) for item in items_]
            if None in idents or len(set(map(str, idents))) != len(idents):
                break
        else:
            return key
    return None


def _ordered_keys(first: Mapping[Any, Any], second: Mapping[Any, Any]) -> list[Any]:
    """Keys of ``second`` in its order, then keys only in ``first``."""
    return list(second) + [key for key in first if key not in second]


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def merge_patch(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch that turns ``live`` into ``desired``: changed and added keys carry
    their new value, removed keys ``None`` (null), lists are replaced whole. Empty when equal."""
    patch: dict[str, Any] = {key: None for key in live if key not in desired}
    for key, want in desired.items():
        have = live.get(key, _MISSING)
        if isinstance(have, Mapping) and isinstance(want, Mapping):
            sub = merge_patch(have, want)
            if sub:
                patch[key] = sub
        elif have != want:
            patch[key] = want
    return patch
