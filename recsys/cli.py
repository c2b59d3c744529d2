"""The ``recsys`` command line: build artifacts, evaluate them, plan sharding, serve.

Run ``recsys <command> --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_ARTIFACTS = "artifacts/demo"

DESCRIPTION = """\
E-commerce search and recommendation: build a versioned artifact (synthetic catalog, MiniLM
embeddings, FAISS index, trained ranker), evaluate it offline, and serve it behind a Ray Serve
HTTP ingress (ingress -> query encoder -> retriever -> ranker).

typical use:
  recsys build --out artifacts/demo          # ~5 min on 2 CPU cores for the 50K-item demo
  recsys eval --artifacts artifacts/demo     # recall, nDCG@10, coverage (+ markdown report)
  recsys serve --artifacts artifacts/demo    # HTTP on :8000; Ctrl-C stops it
  recsys query "waterproof hiking boots"     # one request through the in-process pipeline
"""


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build a versioned artifact from the synthetic world or your own catalog",
        description="Load a catalog (--data DIR --format native|esci|wands) or generate the "
        "synthetic one (catalog, shoppers, interaction log, labelled queries); embed items "
        "with MiniLM; build and tune the FAISS index and the BM25 lexical index; train the "
        "ranker on labelled queries and/or the interaction log (retrieval order when the "
        "catalog has neither); write everything with a hashed manifest.json into --out. "
        "The directory appears only when complete.",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="your catalog: a directory (or an ESCI parquet file); omit for the synthetic world",
    )
    p.add_argument(
        "--format",
        dest="data_format",
        choices=["native", "esci", "wands"],
        default="native",
        help="format of --data (native: items + optional queries/labels/interactions as "
        "parquet or CSV, see README; esci: Shopping Queries parquet; wands: Wayfair WANDS)",
    )
    p.add_argument("--items", type=int, default=None, help="catalog size (default 50000)")
    p.add_argument("--shoppers", type=int, default=None, help="number of shoppers (default 20000)")
    p.add_argument("--queries", type=int, default=None, help="labelled queries (default 2000)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument(
        "--index",
        default=None,
        choices=["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"],
        help="FAISS index kind (default auto: chosen from catalog size)",
    )
    p.add_argument("--epochs", type=int, default=None, help="ranker training epochs")
    p.add_argument(
        "--config", type=Path, default=None, help="YAML/JSON BuildConfig; flags above override it"
    )
    p.add_argument("--out", type=Path, default=Path(DEFAULT_ARTIFACTS), help="artifact directory")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="offline quality of an artifact (JSON + markdown report)",
        description="ANN recall vs exact search, retrieval recall@100 against relevance labels, "
        "nDCG@10 of the ranker vs retrieval order, popularity and the hidden-utility oracle on "
        "held-out sessions, and catalog coverage.",
    )
    p.add_argument("--artifacts", default=DEFAULT_ARTIFACTS, help="artifact URI")
    p.add_argument("--json", action="store_true", help="print only one JSON object")
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="markdown report path (default: <artifacts>/eval_report.md)",
    )


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="start a local Ray instance and the Serve app in the foreground",
        description="Start a local Ray instance and the composed Serve application (ingress, "
        "query encoder, retriever, ranker) on --port. Builds the demo artifact first if "
        "--artifacts does not exist. Every replica warms up before it takes traffic; the "
        "URLs are printed once GET /readyz answers 200, after one cold-start line per stage "
        "(seconds per phase). Ctrl-C / SIGTERM stops the app and Ray cleanly.",
    )
    p.add_argument("--artifacts", default=None, help=f"artifact URI (default {DEFAULT_ARTIFACTS})")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="AppConfig YAML (typed app args); default: the local profile "
        "(deployments/profiles.py: two fused ingress replicas, what the benchmark measures)",
    )
    p.add_argument("--tp", type=int, default=None, help="ranks per ranker replica (model parallel)")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs for the local Ray instance")
    p.add_argument(
        "--topology",
        choices=["split", "fused"],
        default=None,
        help="which stages share a deployment: split (one deployment per stage) or fused (the "
        "stages inside the ingress replicas; a model-parallel ranker stays apart); default: "
        "the config's (without --config, the local profile's: fused)",
    )


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="print the ranker sharding plan and per-rank memory",
        description="Shard the ranker's embedding tables by rows and its dense layers "
        "Megatron-style over --tp ranks; print which rows/columns each rank holds and its "
        "parameter memory; refuse plans that do not fit --device-gb.",
    )
    p.add_argument("--tp", type=int, required=True, help="ranks per replica")
    p.add_argument("--shoppers", type=int, default=None, help="user table rows")
    p.add_argument("--items", type=int, default=None, help="item table rows")
    p.add_argument("--dim", type=int, default=None, help="embedding width")
    p.add_argument("--artifacts", default=None, help="take table sizes from this artifact")
    p.add_argument("--device-gb", type=float, default=None, help="memory per rank (GiB)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument(
        "--measure",
        action="store_true",
        help="load each rank's shard from --artifacts and report the bytes it holds",
    )


def _add_query(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="answer one search in-process (no Ray), for a quick look")
    p.add_argument("text", help="the search query")
    p.add_argument("--user", default=None, help="shopper id, e.g. U0000001")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--artifacts", default=DEFAULT_ARTIFACTS)
    p.add_argument("--json", action="store_true", help="one line: the /v1/search JSON body")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_build, _add_eval, _add_serve, _add_plan, _add_query):
        add(sub)
    return parser


def cmd_build(args: argparse.Namespace) -> int:
    from recsys.build import build_artifacts
    from recsys.config import BuildConfig

    data: dict = {}
    if args.config is not None:
        import yaml

        data = yaml.safe_load(args.config.read_text()) or {}
    config = BuildConfig.model_validate(data)
    overrides = {
        ("data", "n_items"): args.items,
        ("data", "n_shoppers"): args.shoppers,
        ("data", "n_queries"): args.queries,
        ("data", "seed"): args.seed,
        ("index", "kind"): args.index,
        ("ranker", "epochs"): args.epochs,
    }
    for (section, field), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), field, value)
    started = time.perf_counter()
    source = (args.data_format, args.data) if args.data is not None else None
    result = build_artifacts(
        config, args.out, progress=not args.quiet, force=args.force, data=source
    )
    index = result.manifest.reports["index"]
    print(
        f"built {result.path} version {result.manifest.version} in "
        f"{time.perf_counter() - started:.0f}s; index {index['factory']} "
        f"{index['param_name']}={index['param_value']} recall@{index['k']}="
        f"{index['recall_at_k']:.3f}; stages {result.seconds}"
    )
    from recsys.artifacts import Artifact

    quality = Artifact.open(str(result.path)).quality()
    print(f"retrieval: {quality['retrieval_mode']}; ranker: {quality['ranker']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from recsys.evaluate import evaluate, markdown_report

    metrics = evaluate(args.artifacts)
    report = args.report or Path(str(args.artifacts).removeprefix("file://")) / "eval_report.md"
    if "://" not in str(report):
        Path(report).write_text(
            markdown_report(metrics, f"recsys eval --artifacts {args.artifacts}")
        )
    if args.json:
        print(json.dumps(metrics))
    else:
        print(json.dumps(metrics, indent=2))
        print(f"report: {report}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.serve_main import serve_foreground

    return serve_foreground(
        artifacts=args.artifacts,
        port=args.port,
        host=args.host,
        config_path=args.config,
        tp=args.tp,
        num_cpus=args.num_cpus,
        topology=args.topology,
    )


def cmd_plan(args: argparse.Namespace) -> int:
    from recsys.ranker.plan_cli import run_plan

    return run_plan(args)


def cmd_query(args: argparse.Namespace) -> int:
    from recsys.config import AppConfig
    from recsys.pipeline import Pipeline

    pipe = Pipeline.load(AppConfig(artifacts=args.artifacts))
    resp = pipe.search(args.text, user_id=args.user, k=args.k)
    print(resp.model_dump_json() if args.json else resp.model_dump_json(indent=2))
    return 0


COMMANDS = {
    "build": cmd_build,
    "eval": cmd_eval,
    "serve": cmd_serve,
    "plan": cmd_plan,
    "query": cmd_query,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from recsys.artifacts import ArtifactError

    try:
        return COMMANDS[args.command](args)
    except (ArtifactError, FileExistsError, ValueError) as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
