"""How a ranker forward pass is executed: one small interface, several backends.

``LocalExecutor`` runs the whole model in this process. The sharded backend
(``recsys.ranker.sharded``) runs rank 0 here and the other ranks elsewhere, joined by a
``torch.distributed`` process group. Callers only see ``forward`` / ``check_health`` / ``close``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from recsys.ranker.model import RankerModel


class RankerExecutor(Protocol):
    """Runs the ranker on assembled features and returns one logit per row."""

    def forward(self, sparse: np.ndarray, dense: np.ndarray) -> np.ndarray: ...

    def check_health(self) -> None:
        """Raise if the executor can no longer serve (a rank died, the group broke)."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Single-process, single-device execution."""

    def __init__(self, model: RankerModel, device: str = "cpu", dtype: torch.dtype | None = None):
        self.device = device
        self.model = model.to(device)
        self.dtype = dtype
        if dtype is not None:
            self.model = self.model.to(dtype)

    def forward(self, sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            s = torch.from_numpy(sparse).to(self.device)
            d = torch.from_numpy(dense).to(self.device)
            if self.dtype is not None:
                d = d.to(self.dtype)
            return self.model(s, d).float().cpu().numpy()

    def check_health(self) -> None:
        return None

    def close(self) -> None:
        return None
