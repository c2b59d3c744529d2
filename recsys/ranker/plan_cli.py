"""``recsys plan``: print the sharding plan, and optionally measure real shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recsys.config import DataConfig, RankerConfig
from recsys.ranker.model import RankerSpec
from recsys.ranker.sharding import InfeasiblePlanError, fmt_bytes, plan_sharding


def spec_from_args(args: argparse.Namespace) -> tuple[RankerSpec, Path | None]:
    """Table sizes from an artifact, overridden by --shoppers/--items/--dim."""
    weights = None
    if args.artifacts:
        from recsys import layout
        from recsys.artifacts import Artifact
        from recsys.ranker.weights import read_meta

        artifact = Artifact.open(args.artifacts)
        spec = read_meta(artifact.path(layout.RANKER_META)).spec
        weights = artifact.path(layout.RANKER_WEIGHTS)
    else:
        data, ranker = DataConfig(), RankerConfig()
        spec = RankerSpec(
            n_users=data.n_shoppers + 1,
            n_items=data.n_items,
            n_leaves=128,
            n_brands=512,
            emb_dim=ranker.emb_dim,
            cross_layers=ranker.cross_layers,
            hidden=ranker.hidden,
            hidden2=ranker.hidden2,
        )
    overrides = {}
    if args.shoppers is not None:
        overrides["n_users"] = args.shoppers + 1
    if args.items is not None:
        overrides["n_items"] = args.items
    if args.dim is not None:
        overrides["emb_dim"] = args.dim
    if overrides:
        weights = None  # the file no longer matches the spec
        spec = RankerSpec(**{**spec.to_dict(), **overrides})
    return spec, weights


def measure_shards(weights: Path, spec: RankerSpec, tp: int) -> list[dict[str, int]]:
    """Load every rank's shard from the safetensors file and count the bytes it really holds."""
    from recsys.ranker.sharded import ShardedRanker

    plan = plan_sharding(spec, tp)
    out = []
    for shard in plan.ranks:
        module = ShardedRanker.load(weights, spec, shard)
        tables = sum(p.numel() * p.element_size() for p in module.tables.parameters())
        total = sum(p.numel() * p.element_size() for p in module.parameters())
        out.append({"rank": shard.rank, "table_bytes": tables, "param_bytes": total})
    return out


def run_plan(args: argparse.Namespace) -> int:
    spec, weights = spec_from_args(args)
    try:
        plan = plan_sharding(spec, args.tp, args.dtype, args.device_gb)
    except InfeasiblePlanError as exc:
        print(f"recsys plan: {exc}")
        return 3
    measured = None
    if getattr(args, "measure", False):
        if weights is None:
            print("recsys plan: --measure needs --artifacts (and no size overrides)")
            return 2
        measured = measure_shards(weights, spec, args.tp)
    if args.json:
        print(json.dumps({"plan": plan.to_dict(), "measured": measured}))
        return 0
    print(plan.describe())
    if measured is not None:
        whole = plan.total_table_bytes
        print("  measured (tensors loaded from the safetensors file per rank):")
        for m in measured:
            print(
                f"    rank {m['rank']}: tables {fmt_bytes(m['table_bytes'])} = "
                f"{m['table_bytes'] / whole:.1%} of {fmt_bytes(whole)}; all params "
                f"{fmt_bytes(m['param_bytes'])}"
            )
    return 0
