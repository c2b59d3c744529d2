"""Thin Ray Serve adapters over ``recsys`` objects, the app builder and serve configs.

The serving app (what ``pip install .`` runs, no extras): ``app``, ``ingress``, ``encoder``,
``retriever``, ``ranker``, ``gang``, ``handles``, ``metrics``, ``readiness``, ``profiles``,
``serve_config``, ``serve_main``. None of them imports the tooling (``recsys.bench``,
``recsys.experiments``, ``recsys.traffic``, ``recsys.k8s``, kubernetes, matplotlib, httpx).

The tooling's own adapters, which only the tooling imports (``tests/unit/test_import_boundary``
lists them and checks the rest):

* ``monolith``: the benchmark's one-deployment app (``scripts/bench.py``);
* ``cluster_probe``, ``cluster_provider``, ``predictive_policy``: the autoscaling experiments'
  deploy-and-sample helper, delayed fake node provider and predictive policy
  (``scripts/experiment.py``).
"""
