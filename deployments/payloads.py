"""What travels between the stages per call: one ingress group of requests, compactly.

Each stage call carries a whole group (``recsys.coalesce``), so answers are per group: the
encoder's rows as one array, per-request lists from the retriever and the ranker.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Any, TypeVar

import numpy as np

from recsys.types import Candidates

T = TypeVar("T", list[Any], np.ndarray)

EncodedGroup = tuple[np.ndarray, float]
"""The encoder's answer to one call: the group's query vectors, float32 (m, d), rows in call
order, and the encode time in ms."""

Retrieved = tuple[Candidates, dict[str, float]]
"""One request's retrieval answer: its candidates and the stage times so far (ms)."""

Ranked = tuple[Candidates, np.ndarray, dict[str, float]]
"""One request's ranked answer: the candidates, their scores and the stage times (ms)."""


def split_by_sizes(flat: T, groups: Sequence[Sized]) -> list[T]:
    """``flat`` (a batch answer, in call order) cut back into one slice per call's group."""
    bounds = np.cumsum([0, *(len(group) for group in groups)])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
