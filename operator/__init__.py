"""kubevine.operator — the kopf operator: VineWorkflow handlers, autoscaler, manifests.

Pure modules (spec parsing, manifest builders, the scaling decision, status) import neither
``kopf`` nor ``kubernetes``; the thin handlers in :mod:`kubevine.operator.handlers` and the
API calls in :mod:`kubevine.operator.kube` are the only places that do (checked by the
import contracts in ``.importlinter``).

This folder is only ever imported as ``kubevine.operator`` (pyproject's package-dir maps it).
When a checkout's root is on ``sys.path`` (``PYTHONPATH=.``), Python would find it as a
top-level ``operator`` package before its own standard module of that name and fail to start;
imported under that name, this file therefore becomes the standard library's ``operator``.
"""

if __name__ == "operator":  # pragma: no cover - only when the checkout's root is on sys.path
    import os as _os  # already loaded at start-up; nothing here may import collections

    _std = _os.path.join(_os.path.dirname(_os.__file__), "operator.py")
    with open(_std, "rb") as _f:
        exec(compile(_f.read(), _std, "exec"))  # the standard module's code, in its own name
