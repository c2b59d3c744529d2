"""Ranker weights on disk: safetensors for tensors, JSON for the spec and feature constants.

Loading can take the whole model or, for a sharded rank, only the rows and columns that rank
owns: ``safe_open(...).get_slice(name)[a:b]`` reads just that slice from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from recsys.features import FeatureStats
from recsys.ranker.model import RankerModel, RankerSpec

WEIGHTS_FILE = "ranker.safetensors"
SPEC_FILE = "ranker.json"


@dataclass(frozen=True)
class RankerMeta:
    """Everything about a saved ranker except its tensors."""

    spec: RankerSpec
    stats: FeatureStats
    extra: dict[str, Any]


def save_ranker(
    model: RankerModel, stats: FeatureStats, out_dir: Path, extra: dict[str, Any] | None = None
) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "recsys-ranker-v1"})
    meta = {"spec": model.spec.to_dict(), "stats": stats.to_dict(), **(extra or {})}
    (out_dir / SPEC_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(path: Path) -> RankerMeta:
    data = json.loads(path.read_text())
    extra = {k: v for k, v in data.items() if k not in ("spec", "stats")}
    return RankerMeta(RankerSpec(**data["spec"]), FeatureStats(**data["stats"]), extra)


def load_model(weights: Path, spec: RankerSpec, device: str = "cpu") -> RankerModel:
    """The whole single-device model."""
    model = RankerModel(spec)
    state = {}
    with safe_open(str(weights), framework="pt", device="cpu") as fh:
        for name in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
            state[name] = fh.get_tensor(name)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_slice(weights: Path, name: str, dim: int, start: int, stop: int) -> torch.Tensor:
    """Rows (dim 0) or columns (dim 1) ``[start, stop)`` of one tensor, read lazily."""
    with safe_open(str(weights), framework="pt", device="cpu") as fh:
        sl = fh.get_slice(name)
        return sl[start:stop] if dim == 0 else sl[:, start:stop]


def load_tensor(weights: Path, name: str) -> torch.Tensor:
    with safe_open(str(weights), framework="pt", device="cpu") as fh:
        return fh.get_tensor(name)
