"""What every stage replica does at the end of its start, and says about itself afterwards.

Warm-up itself (which requests, in which batch sizes) is plain code in ``recsys.warmup``;
this module only adds the Serve side: the replica's id, the metric and the log line.
"""

from __future__ import annotations

import logging

from ray import serve

from deployments.metrics import stage_metrics
from recsys.warmup import ColdStart

logger = logging.getLogger("ray.serve")


def replica_id() -> str | None:
    """This replica's unique id (None outside a Serve replica)."""
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # not in a replica (a test calling the class directly)
        return None


def deployment_name(default: str) -> str:
    """The deployment this replica belongs to (``Ranker_wide``...), ``default`` outside one."""
    try:
        return str(serve.get_replica_context().deployment)
    except Exception:
        return default


def finish_cold_start(cold: ColdStart) -> None:
    """Export the replica's cold-start phases as ``recsys_cold_start_s`` and log them."""
    stage_metrics().record_cold_start(cold)
    logger.info(cold.log_line())
