"""recsys: the library half of the e-commerce search and recommendation service.

Importable and testable without Ray: data generation, the MiniLM encoder, FAISS retrieval,
the (model-parallel) ranker, routing policy, metrics and the versioned artifact store. The Ray
Serve adapters live in the ``deployments`` package.
"""

__version__ = "0.1.0"
