"""Use a CustomResourceDefinition's OpenAPI v3 schema outside the API server.

Two uses: validating manifests with a plain JSON Schema validator (tests, CI), and applying
the schema's ``default`` values the way the API server does, so that a desired manifest can
be compared with the live object field for field (``recsys.k8s.diff``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

Schema = dict[str, Any]


def openapi_schema(crd: Mapping[str, Any], version: str = "v1") -> Schema:
    """``spec.versions[?name==version].schema.openAPIV3Schema`` of a CRD document."""
    for entry in crd.get("spec", {}).get("versions", []):
        if entry.get("name") == version:
            return dict(entry["schema"]["openAPIV3Schema"])
    name = crd.get("metadata", {}).get("name")
    raise KeyError(f"CRD {name} has no version {version!r}")


def to_json_schema(schema: Mapping[str, Any], *, strict: bool = True) -> Schema:
    """Translate a Kubernetes structural schema to standard JSON Schema.

    - ``x-kubernetes-int-or-string: true`` accepts integers and strings;
    - ``nullable: true`` also accepts null;
    - ``strict``: objects that list ``properties`` (and neither ``additionalProperties`` nor
      ``x-kubernetes-preserve-unknown-fields``) reject unknown keys, as the API server does
      with strict field validation (``kubectl``'s default): a typo is an error, not a field
      silently pruned.

    Other ``x-kubernetes-*`` keys (list types, CEL validations) have no JSON Schema
    equivalent and are left for JSON Schema validators to ignore.
    """
    out: Schema = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub, strict=strict) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = to_json_schema(value, strict=strict)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub, strict=strict) for sub in value]
        else:
            out[key] = copy.deepcopy(value)
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    open_object = "additionalProperties" in out or preserve
    if strict and "properties" in out and not open_object:
        out["additionalProperties"] = False
    return out


def apply_schema_defaults(obj: Any, schema: Mapping[str, Any]) -> Any:
    """A copy of ``obj`` with the schema's ``default`` values filled in where fields are
    absent, at every depth (list items and map values included) -- what the API server does
    to every object it stores."""
    if isinstance(obj, dict):
        result = {}
        properties = schema.get("properties", {})
        for key, value in obj.items():
            sub = properties.get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), Mapping):
                sub = schema["additionalProperties"]
            result[key] = apply_schema_defaults(value, sub) if sub is not None else value
        for key, sub in properties.items():
            if key not in result and "default" in sub:
                result[key] = apply_schema_defaults(copy.deepcopy(sub["default"]), sub)
        return result
    if isinstance(obj, list) and isinstance(schema.get("items"), Mapping):
        return [apply_schema_defaults(item, schema["items"]) for item in obj]
    return obj
