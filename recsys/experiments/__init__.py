"""Autoscaling experiments on a simulated multi-node cluster (pure parts, no Ray).

* :mod:`recsys.experiments.cluster_spec`: the typed spec of a local cluster driven by Ray's
  autoscaler with its fake multi-node provider, rendered into an autoscaler config; parsers of
  cluster status.
* :mod:`recsys.experiments.local_cluster`: start, wait for and stop that cluster as local
  processes (through the ``ray`` command line, never by importing Ray).
* :mod:`recsys.experiments.policies`: named Serve autoscaling policies applied to an app config.
* :mod:`recsys.experiments.sampler`: periodic snapshots of replicas and nodes to a frame.
* :mod:`recsys.experiments.spec`: the typed description of one experiment run.
* :mod:`recsys.experiments.report`: summary, plots and ``report.md`` from the parquet files.
* :mod:`recsys.experiments.compare`: one comparison report across experiments.

The Ray-facing half (connecting, deploying, probing Serve) is ``deployments.cluster_probe``;
the command lines are ``scripts/cluster.py``, ``scripts/experiment.py`` and
``scripts/compare_policies.py``.
"""
