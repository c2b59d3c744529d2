"""Routing policy: which path, which ranker variant, and when to degrade. Pure code, no Ray.

* Path: ``search`` (query, optionally a shopper), ``recommend`` (shopper, no query),
  ``similar`` (seed item).
* Known vs anonymous: only a known shopper gets personal features.
* Variant: a stable hash of the shopper id picks an A/B arm with the configured weights, so a
  shopper always sees the same arm; anonymous requests get the first (control) arm.
* Deadline: every request has an end-to-end budget. The ranked answer must arrive before the
  part of it kept back for the fallback; when the ranker misses that, is overloaded or fails,
  the request is answered from the retrieved candidates in retrieval order (``degraded``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from recsys.config import RoutingConfig
from recsys.types import Route

_HASH_SPACE = 1 << 32


def stable_bucket(user_id: str, salt: str) -> float:
    """A shopper's position in [0, 1), stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest[:4], "big") % _HASH_SPACE) / _HASH_SPACE


@dataclass(frozen=True)
class RouteDecision:
    route: Route
    personalised: bool
    variant: str


@dataclass
class Deadline:
    """A request's end-to-end budget on the monotonic clock."""

    start: float
    budget_s: float

    @classmethod
    def starting_now(cls, budget_ms: float) -> Deadline:
        return cls(time.monotonic(), budget_ms / 1000.0)

    def remaining_s(self) -> float:
        return self.start + self.budget_s - time.monotonic()

    def expired(self) -> bool:
        return self.remaining_s() <= 0

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.start) * 1000.0


class RoutingPolicy:
    """Decisions of the ingress, from the routing config."""

    def __init__(self, config: RoutingConfig):
        self.config = config
        total = sum(v.weight for v in config.variants)
        self._cumulative: list[tuple[float, str]] = []
        acc = 0.0
        for v in config.variants:
            acc += v.weight / total
            self._cumulative.append((acc, v.name))

    @property
    def variants(self) -> list[str]:
        return [v.name for v in self.config.variants]

    @property
    def control(self) -> str:
        return self.config.variants[0].name

    def variant_for(self, user_id: str | None) -> str:
        if user_id is None:
            return self.control
        bucket = stable_bucket(user_id, self.config.salt)
        for bound, name in self._cumulative:
            if bucket < bound:
                return name
        return self._cumulative[-1][1]

    def decide(self, route: Route, user_id: str | None, user_known: bool) -> RouteDecision:
        """Decision for a validated request; ``user_known``: the id exists in the catalog."""
        personalised = user_id is not None and user_known
        return RouteDecision(
            route=route,
            personalised=personalised,
            variant=self.variant_for(user_id if personalised else None),
        )

    def ranker_budget_s(self, deadline: Deadline) -> float | None:
        """How long to wait now for the ranked answer, or None to degrade at once.

        What is left of the deadline minus the reserve kept for the fallback (answering in
        retrieval order).
        """
        budget = deadline.remaining_s() - deadline.budget_s * self.config.fallback_reserve_share
        if budget * 1000.0 < self.config.min_ranker_budget_ms:
            return None
        return budget

    def new_deadline(self) -> Deadline:
        return Deadline.starting_now(self.config.deadline_ms)
