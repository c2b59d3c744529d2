"""The Serve application builder: typed ``AppConfig`` -> composed Application.

The topology is configuration (``AppConfig.topology``): ``split`` makes one deployment per
stage, ``fused`` none but the ingress, whose replicas run the stages in-process
(``recsys.fused``); ``topology.apart`` keeps chosen stages in deployments of their own.

``serve run deployments.app:build_app artifacts=...`` or a serve config whose application has
``import_path: deployments.app:build_app`` and ``args:`` (validated against ``AppConfig``).
Deployment options (resources, batching, autoscaling, back-pressure) all come from the typed
config; the committed serve configs are generated from it by ``scripts/serve_configs.py``. In a
serve config, the Serve options (``deployments.serve_config.SERVE_OPTIONS``) live in the
``deployments:`` list only, which Serve applies over what this builder sets; ``args`` carries
the rest, so every setting is written once.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application, Deployment
from ray.serve.config import BackpressureConfig

from deployments.encoder import QueryEncoderDeployment
from deployments.ingress import Ingress
from deployments.ranker import RankerDeployment
from deployments.retriever import RetrieverDeployment
from recsys.config import AppConfig, AutoscalingConfig, StageConfig

RANKER_PREFIX = "Ranker"
ROLLOUT_SURGE_PERCENT = 100
"""Extra replicas (percent of the target) a rolling update may start before stopping old ones."""


def configured(decorated: object, **options: Any) -> Deployment:
    """``decorated.options(**options)`` of a ``@serve.deployment`` class (type checkers see a
    decorated class as the class itself, without Serve's ``.options``)."""
    if not isinstance(decorated, Deployment):
        raise TypeError(f"{decorated!r} is not a @serve.deployment")
    return decorated.options(**options)


def autoscaling(config: AutoscalingConfig) -> dict[str, Any]:
    return config.model_dump(exclude_none=True)


def stage_options(stage: StageConfig, retry_after_s: int) -> dict[str, Any]:
    return {
        "ray_actor_options": {
            "num_cpus": stage.num_cpus,
            "num_gpus": stage.num_gpus,
            **({"resources": dict(stage.resources)} if stage.resources else {}),
        },
        "max_ongoing_requests": stage.ongoing,
        "max_queued_requests": stage.max_queued_requests,
        "health_check_period_s": stage.health_check_period_s,
        "autoscaling_config": autoscaling(stage.autoscaling),
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=retry_after_s),
        # a rollout starts each new replica before it stops the old one: with one replica a
        # stage never has none (a rollout without a failed request)
        "max_surge_percent": ROLLOUT_SURGE_PERCENT,
    }


def ranker_options(config: AppConfig) -> dict[str, Any]:
    """Ranker replicas: a gang of ``tp`` bundles kept together when model-parallel."""
    options = stage_options(config.ranker, config.routing.retry_after_s)
    tp = config.topology.tp
    if tp > 1:
        bundle = {"CPU": config.ranker.num_cpus}
        if config.ranker.num_gpus:
            bundle["GPU"] = config.ranker.num_gpus
        bundle.update(config.ranker.resources)
        options["placement_group_bundles"] = [dict(bundle) for _ in range(tp)]
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


def ranker_name(variant_index: int, variant: str) -> str:
    return RANKER_PREFIX if variant_index == 0 else f"{RANKER_PREFIX}_{variant}"


def build_app(args: AppConfig) -> Application:
    """Compose ingress -> encoder -> retriever -> ranker (one ranker deployment per variant),
    each stage a deployment of its own unless ``topology`` puts it inside the ingress
    replicas (``topology.layout: fused``; ``topology.apart`` keeps some apart)."""
    config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args)
    retry = config.routing.retry_after_s
    topology = config.topology
    encoder = None
    if not topology.in_ingress("encoder"):
        encoder = configured(
            QueryEncoderDeployment,
            name="QueryEncoder",
            **stage_options(config.query_encoder, retry),
        ).bind(config)
    retriever = None
    if not topology.in_ingress("retriever"):
        retriever = configured(
            RetrieverDeployment, name="Retriever", **stage_options(config.retriever, retry)
        ).bind(config)
    rankers = {}
    if not topology.in_ingress("ranker"):
        rankers = {
            v.name: configured(
                RankerDeployment, name=ranker_name(i, v.name), **ranker_options(config)
            ).bind(config, v.name, v.artifacts or config.artifacts)
            for i, v in enumerate(config.routing.variants)
        }
    ingress = config.ingress
    return configured(
        Ingress,
        name="Ingress",
        ray_actor_options={
            "num_cpus": ingress.num_cpus,
            **({"resources": dict(ingress.resources)} if ingress.resources else {}),
        },
        max_ongoing_requests=ingress.max_ongoing_requests,
        max_queued_requests=ingress.max_queued_requests,
        autoscaling_config=autoscaling(ingress.autoscaling),
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=retry),
        max_surge_percent=ROLLOUT_SURGE_PERCENT,
        # the ingress writes its own access line, with the stage timings (deployments.ingress)
        logging_config={"enable_access_log": False},
    ).bind(config, encoder, retriever, rankers)
