"""Which topology a Serve system of the benchmark runs: the one small place that knows how.

``AppConfig.topology.layout`` (``split``: one deployment per stage; ``fused``: the stages
inside the ingress replicas) says which stages share a deployment; ``build_app`` reads it, so
the benchmark passes a topology to its Ray host inside the app config, set by the config's
own ``with_layout`` where it has one (it moves the stages' CPUs to the ingress). Before that field
existed the composed app was always ``split``: then a request for ``split`` is the app as it
is, and ``fused`` cannot be run (:class:`TopologyUnavailableError`, recorded as the system's
error, the run goes on).
"""

from __future__ import annotations

from typing import Literal

from recsys.config import AppConfig, TopologyConfig

Layout = Literal["split", "fused"]
PRE_LAYOUT_TOPOLOGY: Layout = "split"
"""What the composed app was before ``topology.layout`` existed."""


class TopologyUnavailableError(ValueError):
    """The installed ``recsys.config`` cannot express the asked topology."""


def supports_layout() -> bool:
    """Whether ``TopologyConfig`` has a ``layout`` field."""
    return "layout" in TopologyConfig.model_fields


def layout_of(app: AppConfig) -> Layout:
    """The topology ``app`` runs."""
    if supports_layout():
        layout: Layout = getattr(app.topology, "layout")  # noqa: B009 (not in older configs)
        return layout
    return PRE_LAYOUT_TOPOLOGY


def with_layout(app: AppConfig, layout: Layout | None) -> AppConfig:
    """``app`` running ``layout`` (None: as configured)."""
    if layout is None or layout == layout_of(app):
        return app
    if not supports_layout():
        raise TopologyUnavailableError(
            f"topology {layout!r} needs AppConfig.topology.layout, which this recsys.config "
            f"does not have yet (the composed app is {PRE_LAYOUT_TOPOLOGY!r})"
        )
    import recsys.config

    library = getattr(recsys.config, "with_layout", None)
    if library is not None:  # the config's own rule (resources, stages kept apart)
        moved: AppConfig = library(app, layout)
        return moved
    data = app.model_dump(mode="json")
    data["topology"] = {**data["topology"], "layout": layout}
    return AppConfig.model_validate(data)


def encoder_in_ingress(app: AppConfig) -> bool:
    """Whether the query encoder runs inside the ingress replicas."""
    in_ingress = getattr(app.topology, "in_ingress", None)
    if in_ingress is not None:
        return bool(in_ingress("encoder"))
    return layout_of(app) == "fused"
