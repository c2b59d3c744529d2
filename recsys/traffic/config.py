"""Typed configuration of the open-loop traffic generator.

A load shape gives the arrival rate over time; a route mix splits arrivals between search,
recommend and similar-items; sampling options say how queries, shoppers and items are drawn
(long-tailed, like real traffic). Every request's send time is drawn in advance from the rate
(a Poisson process with time-varying rate), so slow answers never slow the arrivals down.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from recsys.config import StrictModel

MAX_DURATION_S = 6 * 3600.0
"""Upper bound on one run's duration (a run is always bounded)."""


class ConstantShape(StrictModel):
    """The same rate for the whole run."""

    kind: Literal["constant"] = "constant"
    rate: float = Field(gt=0)
    """Requests per second."""


class StepShape(StrictModel):
    """``low`` until ``t_up``, ``high`` from ``t_up`` until ``t_down``, ``low`` again after."""

    kind: Literal["step"] = "step"
    low: float = Field(ge=0)
    """Requests per second before the step and after it."""
    high: float = Field(gt=0)
    """Requests per second during the step."""
    t_up: float = Field(ge=0)
    """Seconds from the start when the rate steps up."""
    t_down: float = Field(gt=0)
    """Seconds from the start when the rate falls back to ``low``."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.t_down <= self.t_up:
            raise ValueError(f"step: t_down ({self.t_down}) must be > t_up ({self.t_up})")
        return self


class RampShape(StrictModel):
    """``start`` until ``t_start``, linear to ``end`` at ``t_end``, ``end`` after."""

    kind: Literal["ramp"] = "ramp"
    start: float = Field(ge=0)
    """Requests per second at and before ``t_start``."""
    end: float = Field(ge=0)
    """Requests per second at and after ``t_end``."""
    t_start: float = Field(0.0, ge=0)
    """Seconds from the start when the ramp begins."""
    t_end: float = Field(gt=0)
    """Seconds from the start when the ramp ends."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.t_end <= self.t_start:
            raise ValueError(f"ramp: t_end ({self.t_end}) must be > t_start ({self.t_start})")
        if max(self.start, self.end) <= 0:
            raise ValueError("ramp: start or end must be > 0")
        return self


class DiurnalShape(StrictModel):
    """A day compressed into ``period_s``: ``mean + amplitude * sin(2 pi (t / period + phase))``
    (never below zero)."""

    kind: Literal["diurnal"] = "diurnal"
    mean: float = Field(gt=0)
    """Mean requests per second."""
    amplitude: float = Field(ge=0)
    """Swing around the mean (requests per second)."""
    period_s: float = Field(gt=0)
    """Length of one simulated day in seconds."""
    phase: float = Field(-0.25, ge=-1.0, le=1.0)
    """Phase as a fraction of the period (-0.25: start at the trough)."""


class FlashSaleShape(StrictModel):
    """A baseline with one sale: a fast linear rise to ``peak``, a hold, an exponential decay."""

    kind: Literal["flash_sale"] = "flash_sale"
    base: float = Field(gt=0)
    """Requests per second outside the sale."""
    peak: float = Field(gt=0)
    """Requests per second at the height of the sale."""
    t_start: float = Field(ge=0)
    """Seconds from the start when the sale opens."""
    rise_s: float = Field(2.0, ge=0)
    """Seconds from ``base`` to ``peak``."""
    hold_s: float = Field(30.0, ge=0)
    """Seconds at ``peak``."""
    decay_s: float = Field(20.0, gt=0)
    """Time constant of the decay back to ``base`` after the hold."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.peak < self.base:
            raise ValueError("flash_sale: peak must be >= base")
        return self


LoadShape = Annotated[
    ConstantShape | StepShape | RampShape | DiurnalShape | FlashSaleShape,
    Field(discriminator="kind"),
]
"""Any load shape, chosen by its ``kind``."""

SHAPE_KINDS = ("constant", "step", "ramp", "diurnal", "flash_sale")


class RouteMix(StrictModel):
    """Relative weights of the three endpoints (normalised; zero drops a route)."""

    search: float = Field(0.7, ge=0)
    """``POST /v1/search``."""
    recommend: float = Field(0.2, ge=0)
    """``POST /v1/recommend``."""
    similar: float = Field(0.1, ge=0)
    """``GET /v1/items/{item_id}/similar``."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.search + self.recommend + self.similar <= 0:
            raise ValueError("route mix: at least one weight must be > 0")
        return self

    def probabilities(self) -> dict[str, float]:
        total = self.search + self.recommend + self.similar
        return {
            "search": self.search / total,
            "recommend": self.recommend / total,
            "similar": self.similar / total,
        }


class SamplingConfig(StrictModel):
    """How request contents are drawn from the artifact's data."""

    personalised_search_share: float = Field(0.5, ge=0.0, le=1.0)
    """Share of searches that name a (known) shopper."""
    shopper_zipf: float = Field(1.1, gt=0.0)
    """Zipf exponent over shoppers: a few very active shoppers, a long tail. Ranks are a
    seeded random permutation of the shopper ids."""
    item_sampling: Literal["popularity", "zipf"] = "popularity"
    """Seed items of similar-items requests: by the catalog's ``popularity`` column, or Zipf
    over a seeded permutation of item ids."""
    item_zipf: float = Field(1.1, gt=0.0)
    """Zipf exponent over items when ``item_sampling`` is ``zipf``."""
    k: int = Field(10, ge=1, le=1000)
    """Items asked for per request."""


class TrafficConfig(StrictModel):
    """One bounded run of open-loop traffic against the HTTP API."""

    target: str | list[str] = "http://127.0.0.1:8000"
    """Base URL of the service, or several base URLs of one service (its replicas' own ports,
    as Serve's direct ingress gives them): each request then goes to the one with the fewest
    requests in flight, as a least-connections load balancer in front of them would send it."""
    allow_non_loopback: bool = False
    """Allow a target that is not a loopback address (off: a load generator pointed at a
    shared service by mistake is refused)."""
    shape: LoadShape
    """Arrival rate over time."""
    duration_s: float = Field(gt=0, le=MAX_DURATION_S)
    """Arrivals are drawn in ``[0, duration_s)``; the run stops by itself after the last
    answer or timeout."""
    max_requests: int = Field(1_000_000, ge=1)
    """Hard cap on the number of requests scheduled."""
    seed: int = 0
    """Seed of every random draw (arrivals, routes, contents): same seed, same schedule."""
    mix: RouteMix = RouteMix()
    """Endpoint mix."""
    sampling: SamplingConfig = SamplingConfig()
    """How queries, shoppers and items are drawn."""
    timeout_s: float = Field(5.0, gt=0, le=600)
    """Per-request client timeout (whole request). A timeout is an outcome, recorded."""
    max_connections: int = Field(1024, ge=1)
    """Connection pool size; large, so the pool never holds requests back (that would hide
    queueing as coordinated omission)."""

    @property
    def targets(self) -> list[str]:
        """The base URLs, without trailing slashes (one or more)."""
        urls = [self.target] if isinstance(self.target, str) else self.target
        return [url.rstrip("/") for url in urls]

    @model_validator(mode="after")
    def _check_target(self) -> Self:
        if not self.targets:
            raise ValueError("target must name at least one URL")
        for target in self.targets:
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"target must be an http(s) URL with a host, got {target!r}")
            if not self.allow_non_loopback and not is_loopback(parts.hostname):
                raise ValueError(
                    f"target host {parts.hostname!r} is not a loopback address; set "
                    "allow_non_loopback (--allow-non-loopback) to send load elsewhere"
                )
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP literal (no DNS lookups)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def shape_from_params(
    kind: str,
    duration_s: float,
    *,
    rate: float,
    peak: float | None = None,
    t_up: float | None = None,
    t_down: float | None = None,
    period_s: float | None = None,
) -> ConstantShape | StepShape | RampShape | DiurnalShape | FlashSaleShape:
    """A load shape from the few numbers a command line takes.

    ``rate`` is the base load (constant rate; step low; ramp start; diurnal trough; flash-sale
    base) and ``peak`` the high one (step high; ramp end; diurnal crest; flash-sale peak).
    ``t_up`` / ``t_down`` default to 15% and 55% of the duration: the step's edges, the ramp's
    start and end, the flash sale's opening and the end of its hold.
    """
    up = round(0.15 * duration_s, 6) if t_up is None else t_up
    down = round(0.55 * duration_s, 6) if t_down is None else t_down
    high = rate if peak is None else peak
    if kind == "constant":
        return ConstantShape(rate=rate)
    if kind == "step":
        return StepShape(low=rate, high=high, t_up=up, t_down=down)
    if kind == "ramp":
        return RampShape(start=rate, end=high, t_start=up, t_end=down)
    if kind == "diurnal":
        if high < rate:
            raise ValueError("diurnal: peak must be >= rate (the trough)")
        return DiurnalShape(
            mean=(rate + high) / 2.0,
            amplitude=(high - rate) / 2.0,
            period_s=duration_s if period_s is None else period_s,
        )
    if kind == "flash_sale":
        rise = min(2.0, max(down - up, 0.0) / 4.0)
        return FlashSaleShape(
            base=rate,
            peak=high,
            t_start=up,
            rise_s=rise,
            hold_s=max(down - up - rise, 0.0),
            decay_s=max(0.05 * duration_s, 1.0),
        )
    raise ValueError(f"unknown shape {kind!r}; choose from {SHAPE_KINDS}")
