"""Errors the ranker's replicas raise to their callers, in a module that imports nothing.

An exception crosses from a replica to its caller pickled, and unpickling it imports the
module that defines its class. Defined beside the torch code, a ranker error made every
ingress import torch (over a second on a loaded 2-core machine, its event loop stalled the
while) at the moment a gang broke.
"""

from __future__ import annotations


class GangBrokenError(RuntimeError):
    """A rank died or the process group failed; the gang must be replaced."""
