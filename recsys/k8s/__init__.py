"""Kubernetes deployment of the Serve application as a KubeRay ``RayService``.

- ``spec``: ``ClusterSpec``, the typed cluster description committed as ``k8s/cluster.yaml``;
- ``render``: serve config + ``ClusterSpec`` -> RayService manifest (pure);
- ``diff``: live object vs desired manifest, and the merge patch between them (pure);
- ``rollout``: rollout state from the RayService status (pure);
- ``crd``: CRD OpenAPI schema helpers (validation, server-side defaults);
- ``deploy``: the Kubernetes API calls (imported on its own: it loads the ``kubernetes``
  client).

Ray-free: nothing here imports ``ray``.
"""

from recsys.k8s.diff import diff_manifests, merge_patch
from recsys.k8s.render import RenderError, manifest_text, prepare_serve_config, render_rayservice
from recsys.k8s.rollout import RolloutState, RolloutStatus, rollout_state, rollout_status
from recsys.k8s.spec import RAY_VERSION, ClusterSpec

__all__ = [
    "RAY_VERSION",
    "ClusterSpec",
    "RenderError",
    "RolloutState",
    "RolloutStatus",
    "diff_manifests",
    "manifest_text",
    "merge_patch",
    "prepare_serve_config",
    "render_rayservice",
    "rollout_state",
    "rollout_status",
]
