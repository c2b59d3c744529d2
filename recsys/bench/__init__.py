"""Side-by-side serving benchmark: in-process bound, naive HTTP, monolithic and composed Serve.

One run puts every system through the same seeded open-loop schedules (``recsys.traffic``) on
the same artifact and models, and reports ratios, not absolute times.

* :mod:`recsys.bench.config`: typed benchmark config, the systems and their variants.
* :mod:`recsys.bench.requests`: schedule rows -> library calls (shared by the in-process
  batcher and the naive server).
* :mod:`recsys.bench.batcher`: the in-process dynamic batcher driven by the schedule.
* :mod:`recsys.bench.naive_server`: the naive FastAPI/uvicorn baseline (``python -m``).
* :mod:`recsys.bench.loadgen`: the HTTP load (a thin wrapper of ``recsys.traffic.runner``).
* :mod:`recsys.bench.processes`: ``/proc`` parsing: CPU seconds, memory and roles of the
  serving processes, machine-wide CPU.
* :mod:`recsys.bench.servers`: start / stop server subprocesses through their own pids.
* :mod:`recsys.bench.targets`: the systems as sweep targets (in-process, HTTP), and the
  guard that repeats a rate someone else's work overlapped.
* :mod:`recsys.bench.analysis`: pure summaries: per-point latency, sustained rate, ratios,
  per-stage breakdown.
* :mod:`recsys.bench.sweep`: the rate sweep (coarse grid, early stop, refinement).
* :mod:`recsys.bench.quality`: offline experiments (int8 vs fp32, cache, nprobe, N).
* :mod:`recsys.bench.summary`: the run as plain data (``summary.json``): ratios, verdict,
  before/after of every variant.
* :mod:`recsys.bench.report`: ``report.md``, plots, raw parquet.
* :mod:`recsys.bench.harness`: the orchestration of one benchmark run.
* :mod:`recsys.bench.synthetic`: a made-up result with known answers (tests, notebook).

Nothing here imports Ray: the Serve systems run in a host subprocess whose command line the
caller supplies (``scripts/bench.py host``).
"""
