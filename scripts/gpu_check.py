"""GPU paths of the serving stages, measured on one machine: encoder, exact retrieval, ranker.

For each stage the script times the project's own code (``QueryEncoder``, the ranker's
``load_model`` and ``local_gang``) on the GPU in fp32, fp16 and bf16 and on the same machine's
CPU cores, and checks what the lower precisions change: embedding cosine to fp32, overlap of
the retrieved top-k with fp32's, overlap of the ranked top-10 with fp32's.

Retrieval is exact inner-product search (one matrix product and a top-k, what FAISS's flat
GPU index does) over the catalog's embeddings and over synthetic 1M / 5M-item corpora.

Inputs (``--assets``): ``minilm/`` (the MiniLM weights, tokenizer and config), ``ranker/``
(``ranker.safetensors`` + ``ranker.json`` of a built artifact) and ``texts.parquet`` (columns
``kind`` = query | item and ``text``). Writes ``gpu_check.parquet`` (one row per timing or
check), ``summary.json`` and ``report.md`` to ``--out``.

    python scripts/gpu_check.py --assets .gpu --out results/gpu --commit $(git rev-parse HEAD)
    python scripts/gpu_check.py --assets .gpu --out /tmp/gc --quick   # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.config import EncoderConfig  # noqa: E402
from recsys.encoder import QueryEncoder  # noqa: E402
from recsys.ranker.model import RankerSpec  # noqa: E402
from recsys.ranker.weights import load_model  # noqa: E402

Graph = Literal["eager", "traced"]
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Run:
    """What one invocation measures, and the rows it collects."""

    device: str
    precisions: list[str]
    quick: bool
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
        print("  ", shown, flush=True)

    def iters(self, n: int) -> int:
        return max(5, n // 10) if self.quick else n

    def settings(self) -> list[tuple[str, str]]:
        """(device, precision) pairs: every precision on the run's device, then the same
        machine's CPU in fp32 when the run's device is a GPU."""
        pairs = [(self.device, p) for p in self.precisions]
        return pairs + ([("cpu", "fp32")] if self.device != "cpu" else [])


def label(device: str, precision: str) -> str:
    """A setting's name in the rows and the report: ``gpu-fp16``, ``cpu-fp32``..."""
    return f"{'gpu' if device != 'cpu' else 'cpu'}-{precision}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timings(fn: Callable[[], Any], device: str, iters: int, warmup: int = 5) -> np.ndarray:
    """Wall-clock ms of ``fn`` per call, synchronised with the device before and after."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def latency_row(ms: np.ndarray, per_call: int) -> dict[str, float]:
    p50 = float(np.median(ms))
    return {
        "p50_ms": p50,
        "p99_ms": float(np.percentile(ms, 99)),
        "per_s": per_call * 1e3 / p50,
        "n_calls": int(len(ms)),
    }


def topk(queries: torch.Tensor, corpus: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(queries @ corpus.T, k, dim=1).indices


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean share of each row of ``a`` found in the same row of ``b`` (index lists)."""
    a_np, b_np = a.cpu().numpy(), b.cpu().numpy()
    k = a_np.shape[1]
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(a_np, b_np, strict=True)]))


# -- encoder ----------------------------------------------------------------------------------


def check_encoder(
    run: Run, assets: Path, queries: list[str], items: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Online query batches and bulk catalog embedding; returns the embeddings per setting."""
    settings: list[tuple[str, str, Graph]] = [(run.device, p, "eager") for p in run.precisions]
    # the TorchScript graph (EncoderConfig.graph): fewer Python steps per operator
    settings.append((run.device, "fp32", "traced"))
    if run.device != "cpu":
        settings += [(run.device, "fp16", "traced"), ("cpu", "fp32", "eager")]
    n_bulk_gpu = 5_000 if run.quick else len(items)
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    for device, precision, graph in settings:
        name = label(device, precision) + ("-traced" if graph == "traced" else "")
        print(f"encoder {name}", flush=True)
        enc = QueryEncoder(
            EncoderConfig(
                device=device, precision=precision, graph=graph, cache_size=0, batch_size=256
            ),
            model_path=assets / "minilm",
        )
        for batch in (1, 8, 32, 128):
            chunks = [queries[i : i + batch] for i in range(0, len(queries) - batch, batch)]
            pos = iter(range(10**9))

            def call(chunks: list[list[str]] = chunks, pos: Any = pos, enc: Any = enc) -> None:
                enc.encode(chunks[next(pos) % len(chunks)])

            iters = run.iters(300 if batch <= 8 else 60 if device != "cpu" else 20)
            ms = timings(call, device, iters)
            run.add(
                stage="encoder",
                test="query_batch",
                setting=name,
                batch=batch,
                **latency_row(ms, batch),
            )
        n_bulk = n_bulk_gpu if device != "cpu" else min(2_000, n_bulk_gpu)
        t0 = time.perf_counter()
        item_emb = enc.encode_all(items[:n_bulk], desc=f"catalog {name}")
        sync(device)
        seconds = time.perf_counter() - t0
        run.add(
            stage="encoder",
            test="catalog_bulk",
            setting=name,
            batch=256,
            n=n_bulk,
            seconds=seconds,
            per_s=n_bulk / seconds,
        )
        query_emb = np.concatenate(
            [enc.encode(queries[i : i + 256]) for i in range(0, len(queries), 256)]
        )
        embeddings[name] = {"queries": query_emb, "items": item_emb}
        del enc
        if device != "cpu":
            torch.cuda.empty_cache()
    return embeddings


def check_encoder_agreement(run: Run, embeddings: dict[str, dict[str, np.ndarray]], k: int) -> None:
    """Lower precisions against fp32 on the same device: cosine, and the retrieved top-k."""
    ref_label = label(run.device, "fp32")
    ref = embeddings[ref_label]
    n = len(ref["items"])
    ref_top = topk(torch.from_numpy(ref["queries"]), torch.from_numpy(ref["items"]), k)
    for name, emb in embeddings.items():
        if name == ref_label:
            continue
        m = min(n, len(emb["items"]))
        q_cos = (emb["queries"] * ref["queries"]).sum(1)
        i_cos = (emb["items"][:m] * ref["items"][:m]).sum(1)
        top = topk(torch.from_numpy(emb["queries"]), torch.from_numpy(emb["items"][:m]), k)
        base = (
            ref_top
            if m == n
            else topk(torch.from_numpy(ref["queries"]), torch.from_numpy(ref["items"][:m]), k)
        )
        run.add(
            stage="encoder",
            test="agreement_vs_fp32",
            setting=name,
            n=m,
            k=k,
            query_cos_mean=float(q_cos.mean()),
            query_cos_min=float(q_cos.min()),
            item_cos_mean=float(i_cos.mean()),
            item_cos_min=float(i_cos.min()),
            topk_overlap=overlap(top, base),
            top10_overlap=overlap(top[:, :10], base[:, :10]),
        )


# -- retrieval --------------------------------------------------------------------------------


def check_retrieval(run: Run, catalog: np.ndarray, queries: np.ndarray, k: int) -> None:
    """Exact inner-product top-k: matrix product + top-k, host -> device -> host per call."""
    rng = np.random.default_rng(0)
    sizes = [("catalog", len(catalog))] + (
        [("synthetic", 1_000_000)] + ([("synthetic", 5_000_000)] if run.device != "cpu" else [])
        if not run.quick
        else []
    )
    settings = run.settings()
    for source, n in sizes:
        if source == "catalog":
            corpus_np = catalog
        else:
            corpus_np = rng.standard_normal((n, catalog.shape[1]), dtype=np.float32)
            corpus_np /= np.linalg.norm(corpus_np, axis=1, keepdims=True)
        reference: torch.Tensor | None = None
        for device, precision in settings:
            if device == "cpu" and n > 1_000_000:
                continue
            name = label(device, precision)
            dtype = TORCH_DTYPES[precision]
            corpus = torch.from_numpy(corpus_np).to(device, dtype)
            for batch in (1, 32, 256):

                def call(
                    batch: int = batch,
                    device: str = device,
                    dtype: torch.dtype = dtype,
                    corpus: torch.Tensor = corpus,
                ) -> torch.Tensor:
                    start = rng.integers(0, len(queries) - batch)
                    q = torch.from_numpy(queries[start : start + batch]).to(device, dtype)
                    return topk(q, corpus, k).cpu()

                iters = run.iters(200 if device != "cpu" else 20)
                ms = timings(call, device, iters)
                run.add(
                    stage="retrieval",
                    test="exact_topk",
                    setting=name,
                    source=source,
                    n=n,
                    k=k,
                    batch=batch,
                    **latency_row(ms, batch),
                )
            q_all = torch.from_numpy(queries).to(device, dtype)
            top = torch.cat(
                [topk(q_all[i : i + 256], corpus, k) for i in range(0, len(q_all), 256)]
            )
            if precision == "fp32" and device == run.device:
                reference = top
            elif reference is not None:
                run.add(
                    stage="retrieval",
                    test="agreement_vs_fp32",
                    setting=name,
                    source=source,
                    n=n,
                    k=k,
                    topk_overlap=overlap(top, reference),
                    top10_overlap=overlap(top[:, :10], reference[:, :10]),
                )
            del corpus
            if device != "cpu":
                torch.cuda.empty_cache()


# -- ranker -----------------------------------------------------------------------------------


def ranker_inputs(spec: RankerSpec, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [spec.n_users, spec.n_items, spec.n_leaves, spec.n_brands]
    sparse = np.stack([rng.integers(0, s, rows) for s in sizes], axis=1).astype(np.int64)
    dense = np.clip(rng.standard_normal((rows, spec.n_dense)), -3, 3).astype(np.float32)
    return sparse, dense


def check_ranker(run: Run, assets: Path, list_len: int) -> None:
    """Forward passes over candidate lists; agreement of each precision's top-10 with fp32."""
    weights = assets / "ranker" / "ranker.safetensors"
    spec = RankerSpec(**json.loads((assets / "ranker" / "ranker.json").read_text())["spec"])
    lists = 64
    check_sparse, check_dense = ranker_inputs(spec, lists * list_len, seed=1)
    settings = run.settings()
    reference: np.ndarray | None = None
    for device, precision in settings:
        name = label(device, precision)
        print(f"ranker {name}", flush=True)
        model = load_model(weights, spec, device=device).to(TORCH_DTYPES[precision]).eval()

        def forward(
            sparse: np.ndarray, dense: np.ndarray, model: Any = model, device: str = device
        ) -> np.ndarray:
            with torch.inference_mode():
                s = torch.from_numpy(sparse).to(device)
                d = torch.from_numpy(dense).to(device, next(model.parameters()).dtype)
                return model(s, d).float().cpu().numpy()

        for rows in (list_len, 5 * list_len, 20 * list_len, 80 * list_len):
            sparse, dense = ranker_inputs(spec, rows, seed=rows)
            iters = run.iters(300 if device != "cpu" else 30)
            ms = timings(lambda s=sparse, d=dense: forward(s, d), device, iters)
            run.add(
                stage="ranker", test="forward", setting=name, batch=rows, **latency_row(ms, rows)
            )
        scores = forward(check_sparse, check_dense).reshape(lists, list_len)
        if precision == "fp32" and device == run.device:
            reference = scores
        elif reference is not None:
            add_ranker_agreement(run, name, scores, reference)
        del model
    if run.device != "cpu":
        check_gang(run, weights, spec, check_sparse, check_dense, reference, list_len)


def add_ranker_agreement(
    run: Run, name: str, scores: np.ndarray, reference: np.ndarray, test: str = "agreement_vs_fp32"
) -> None:
    top = torch.from_numpy(np.argsort(-scores, axis=1)[:, :10].copy())
    ref = torch.from_numpy(np.argsort(-reference, axis=1)[:, :10].copy())
    rel = float(np.linalg.norm(scores - reference) / np.linalg.norm(reference))
    run.add(
        stage="ranker",
        test=test,
        setting=name,
        batch=scores.size,
        top10_overlap=overlap(top, ref),
        rel_l2_error=rel,
    )


def check_gang(
    run: Run,
    weights: Path,
    spec: RankerSpec,
    check_sparse: np.ndarray,
    check_dense: np.ndarray,
    reference: np.ndarray | None,
    list_len: int,
) -> None:
    """The model-parallel path (NCCL collectives, gloo control group) with one rank: on one
    GPU it is all a gang can be (NCCL refuses two ranks on one device)."""
    from recsys.ranker.launch import local_gang
    from recsys.ranker.sharding import plan_sharding

    for precision in ("fp32", "bf16"):
        name = f"gpu-{precision}-gang-tp1"
        print(f"ranker {name}", flush=True)
        try:
            gang = local_gang(weights, plan_sharding(spec, 1, precision), device="cuda:0")
        except Exception as exc:  # report, do not hide: the row says what failed
            run.add(
                stage="ranker",
                test="gang_start",
                setting=name,
                error=f"{type(exc).__name__}: {exc}",
            )
            continue
        try:
            for rows in (list_len, 20 * list_len):
                sparse, dense = ranker_inputs(spec, rows, seed=rows)
                ms = timings(
                    lambda s=sparse, d=dense, g=gang: g.forward(s, d), "cuda", run.iters(300)
                )
                run.add(
                    stage="ranker",
                    test="forward",
                    setting=name,
                    batch=rows,
                    **latency_row(ms, rows),
                )
            if reference is not None:
                scores = gang.forward(check_sparse, check_dense).reshape(reference.shape)
                add_ranker_agreement(run, name, scores, reference)
        finally:
            gang.close()


# -- report -----------------------------------------------------------------------------------


def environment(device: str, commit: str) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_cores": os.cpu_count(),
        "torch_cpu_threads": torch.get_num_threads(),
    }
    if device != "cpu":
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            nccl=".".join(map(str, torch.cuda.nccl.version())),
        )
    return env


def fmt(column: str, v: Any) -> str:
    if isinstance(v, float) and np.isnan(v):
        return ""
    if isinstance(v, str) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    if any(word in column for word in ("cos", "overlap", "error")):
        return f"{v:.5f}"
    if float(v).is_integer() and column not in ("p50_ms", "p99_ms", "seconds"):
        return f"{int(v):,}"
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"


def table(df: pd.DataFrame, columns: list[str]) -> str:
    df = df[[c for c in columns if c in df.columns]]
    if df.empty:
        return "(not measured in this run)"
    lines = ["| " + " | ".join(df.columns) + " |", "|" + " --- |" * len(df.columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt(c, v) for c, v in r.items()) + " |")
    return "\n".join(lines)


def write_report(out: Path, df: pd.DataFrame, env: dict[str, Any], command: str) -> None:
    def part(stage: str, test: str) -> pd.DataFrame:
        return df[(df.stage == stage) & (df.test == test)].dropna(axis=1, how="all")

    timing = ["setting", "source", "n", "k", "batch", "p50_ms", "p99_ms", "per_s"]
    sections = [
        "# GPU paths of the serving stages",
        "",
        f"Command: `{command}` at commit `{env['commit']}`.",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "commit") + ".",
        "",
        "Wall-clock per call, synchronised with the GPU, host -> device -> host included "
        "(what a stage pays). `per_s` is texts, queries or candidate rows per second at the "
        "median. cpu rows ran on the same machine's cores.",
        "",
        "![retrieval and encoder latency](gpu_check.png)",
        "",
        "## Encoder (MiniLM-L6, the project's QueryEncoder, tokenisation included)",
        "",
        "Query batches (real queries of the demo catalog, max 32 tokens):",
        "",
        table(part("encoder", "query_batch"), timing),
        "",
        "Catalog embedding (item titles, batches of 256, length-sorted):",
        "",
        table(part("encoder", "catalog_bulk"), ["setting", "n", "seconds", "per_s"]),
        "",
        "Lower precision against fp32 on the same device (cosine of the embeddings; overlap of "
        "each query's exact top-k over the catalog):",
        "",
        table(
            part("encoder", "agreement_vs_fp32"),
            [
                "setting",
                "n",
                "k",
                "query_cos_mean",
                "query_cos_min",
                "item_cos_mean",
                "item_cos_min",
                "topk_overlap",
                "top10_overlap",
            ],
        ),
        "",
        "## Retrieval (exact inner product: one matrix product + top-k)",
        "",
        table(part("retrieval", "exact_topk"), timing),
        "",
        table(
            part("retrieval", "agreement_vs_fp32"),
            ["setting", "source", "n", "k", "topk_overlap", "top10_overlap"],
        ),
        "",
        "## Ranker (DCN-v2, the demo artifact's trained weights; random valid inputs)",
        "",
        "`batch` is candidate rows per forward pass (a search ranks 200).",
        "",
        table(part("ranker", "forward"), ["setting", "batch", "p50_ms", "p99_ms", "per_s"]),
        "",
        table(
            part("ranker", "agreement_vs_fp32"),
            ["setting", "batch", "top10_overlap", "rel_l2_error"],
        ),
        "",
    ]
    failed = part("ranker", "gang_start")
    if len(failed):
        sections += ["Gang start failures:", "", table(failed, ["setting", "error"]), ""]
    (out / "report.md").write_text("\n".join(sections))


def plot(out: Path, df: pd.DataFrame) -> None:
    """Retrieval latency against corpus size per precision, and encoder latency per batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ret = df[(df.stage == "retrieval") & (df.test == "exact_topk")]
    for (setting, batch), part in ret.groupby(["setting", "batch"]):
        if batch not in (1, 256):
            continue
        part = part.sort_values("n")
        style = "-" if batch == 256 else "--"
        left.plot(part.n, part.p50_ms, style, marker="o", label=f"{setting}, batch {int(batch)}")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="items in the corpus",
        ylabel="p50 ms per call",
        title=f"Exact top-{int(ret.k.max()) if len(ret) else 0} retrieval",
    )
    left.legend(fontsize=7)
    enc = df[(df.stage == "encoder") & (df.test == "query_batch")]
    for setting, part in enc.groupby("setting"):
        right.plot(part.batch, part.p50_ms, marker="o", label=setting)
    right.set(
        xscale="log",
        yscale="log",
        xlabel="queries per batch",
        ylabel="p50 ms per call",
        title="MiniLM query encoding (tokeniser included)",
    )
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gpu_check.png", dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--assets",
        type=Path,
        required=True,
        help="folder with minilm/, ranker/ and texts.parquet (see above)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for parquet, json, report")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: the GPU when torch sees one (default)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tenth of the iterations, 5K catalog items, no synthetic corpora",
    )
    p.add_argument("--k", type=int, default=200, help="candidates retrieved per query (200)")
    p.add_argument("--commit", default="unknown", help="the commit measured (recorded)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite report.md and the plot from --out's gpu_check.parquet "
        "and summary.json (a run fetched back from a GPU machine)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        df = pd.read_parquet(args.out / "gpu_check.parquet")
        summary = json.loads((args.out / "summary.json").read_text())
        write_report(args.out, df, summary["environment"], summary["command"])
        plot(args.out, df)
        print((args.out / "report.md").read_text())
        return 0
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and cuda) else "cpu"
    precisions = ["fp32", "fp16", "bf16"] if device == "cuda" else ["fp32"]
    run = Run(device=device, precisions=precisions, quick=args.quick)
    texts = pd.read_parquet(args.assets / "texts.parquet")
    queries = texts.loc[texts.kind == "query", "text"].tolist()
    items = texts.loc[texts.kind == "item", "text"].tolist()
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(device, args.commit)
    print(env, flush=True)

    embeddings = check_encoder(run, args.assets, queries, items)
    check_encoder_agreement(run, embeddings, args.k)
    ref = embeddings[label(device, "fp32")]
    check_retrieval(run, ref["items"], ref["queries"], args.k)
    check_ranker(run, args.assets, list_len=200)

    df = pd.DataFrame(run.rows)
    df.to_parquet(args.out / "gpu_check.parquet")
    command = "python scripts/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_report(args.out, df, env, command)
    plot(args.out, df)
    summary = {"environment": env, "rows": len(df), "command": command}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
