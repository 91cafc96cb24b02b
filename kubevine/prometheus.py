"""TaskVine's ``prometheus`` module: what ``Manager(prometheus=PORT)`` needs here.

A manager started by the program serves ``/metrics`` (TaskVine's ``vine_*`` names beside
kubevine's) with ``prometheus_client``, in this Python environment. Asking for metrics without
it is said at once, as TaskVine says it — an ``ImportError`` naming the package from
``Manager(...)`` — rather than by a manager process that fails to start.
"""

from __future__ import annotations


def require() -> None:
    """Raise ImportError when prometheus_client cannot be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "Manager(prometheus=...) needs prometheus_client (pip install prometheus-client)"
        ) from e
