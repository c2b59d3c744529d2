"""Open-loop synthetic traffic for the HTTP API (no Ray).

* :mod:`recsys.traffic.config`: typed run config (load shape, route mix, sampling, target).
* :mod:`recsys.traffic.shapes`: arrival rate over time; Poisson arrivals by thinning.
* :mod:`recsys.traffic.schedule`: the whole run drawn in advance (times, routes, bodies).
* :mod:`recsys.traffic.runner`: the asyncio sender and its per-request records (parquet).

Command line: ``python -m recsys.traffic --help``.
"""

from recsys.traffic.config import (
    ConstantShape,
    DiurnalShape,
    FlashSaleShape,
    LoadShape,
    RampShape,
    RouteMix,
    SamplingConfig,
    StepShape,
    TrafficConfig,
)

__all__ = [
    "ConstantShape",
    "DiurnalShape",
    "FlashSaleShape",
    "LoadShape",
    "RampShape",
    "RouteMix",
    "SamplingConfig",
    "StepShape",
    "TrafficConfig",
]
