"""Ray's fake multi-node provider with nodes that take as long to arrive as real GPU nodes.

The stock ``FakeMultiNodeProvider`` starts a raylet the moment the autoscaler asks for a node;
a real GPU node takes minutes (provisioning, image pull, driver). This provider records the
node at once, tagged ``setting-up`` (the autoscaler counts it as pending, so it does not ask
twice, and its liveness check leaves it alone), and starts the raylet only after the node
type's arrival delay (``provider.arrival_delay_s: {node type: seconds}``). A node terminated
while it is still arriving never starts.

Loaded by Ray's autoscaler as an external provider (``provider.type: external``,
``provider.module: deployments.cluster_provider.DelayedFakeMultiNodeProvider``); the cluster's
processes have this repository's code on their ``PYTHONPATH``
(``recsys.experiments.local_cluster``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    STATUS_SETTING_UP,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

logger = logging.getLogger(__name__)


class DelayedFakeMultiNodeProvider(FakeMultiNodeProvider):
    """Fake nodes that arrive after a per-type delay."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str):
        super().__init__(provider_config, cluster_name)
        self._delays = {
            str(k): float(v) for k, v in provider_config.get("arrival_delay_s", {}).items()
        }
        self._timers: dict[str, threading.Timer] = {}

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        node_type = tags[TAG_RAY_USER_NODE_TYPE]
        delay = self._delays.get(node_type, 0.0)
        if delay <= 0:
            return super()._create_node_with_resources_and_labels(
                node_config, tags, count, resources, labels
            )
        with self.lock:
            # reserve an id now: the node exists (pending) from the autoscaler's point of view
            placeholder = self._next_hex_node_id()
            self._nodes[placeholder] = {
                "tags": {**tags, TAG_RAY_NODE_STATUS: STATUS_SETTING_UP},
                "node": None,
            }
        logger.info("node %s (%s) arrives in %.0f s", placeholder, node_type, delay)
        timer = threading.Timer(
            delay, self._arrive, args=(placeholder, node_config, tags, count, resources, labels)
        )
        timer.daemon = True
        self._timers[placeholder] = timer
        timer.start()

    def _arrive(self, placeholder, node_config, tags, count, resources, labels) -> None:
        with self.lock:
            if placeholder not in self._nodes:
                return  # terminated while arriving
            self._timers.pop(placeholder, None)
            del self._nodes[placeholder]
            saved = self._next_node_id  # type: ignore[has-type]  # set by Ray's parent class
            self._next_node_id = int(placeholder[-5:]) - 1  # the parent takes the next id
            try:
                super()._create_node_with_resources_and_labels(
                    node_config, tags, count, resources, labels
                )
            finally:
                self._next_node_id = saved
        logger.info("node %s arrived", placeholder)

    def terminate_node(self, node_id):
        with self.lock:
            entry = self._nodes.get(node_id)
            if entry is not None and entry.get("node") is None:
                timer = self._timers.pop(node_id, None)
                if timer is not None:
                    timer.cancel()
                self._nodes.pop(node_id)
                return
        super().terminate_node(node_id)
