"""kubevine: TaskVine-style workflows for data-intensive Python, Kubernetes-native.

The public face: :class:`Manager` (the client), :class:`Task`, :class:`PythonTask`,
:class:`FunctionCall`, :class:`Library`, :class:`File` declarations, :class:`LocalCluster`,
:class:`Executor`, :func:`as_completed`, :func:`library_context`.

Names are imported on first use, so a process that needs one small part (a PythonTask's
interpreter on a worker, a library process) does not pay for importing the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "ConnectionRefused": "kubevine.client",
    "StoreUnavailable": "kubevine.client",
    "Manager": "kubevine.client",
    "as_completed": "kubevine.client",
    "DaskVine": "kubevine.compat",
    "DaskVineDag": "kubevine.compat",
    "Executor": "kubevine.executor",
    "Factory": "kubevine.factory",
    "FuturesExecutor": "kubevine.futures",
    "FuturePythonTask": "kubevine.futures",
    "FutureFunctionCall": "kubevine.futures",
    "VineFuture": "kubevine.futures",
    "LocalCluster": "kubevine.local",
    "Outcome": "kubevine.protocol",
    "FunctionCall": "kubevine.serverless",
    "FunctionCallNoResult": "kubevine.serverless",
    "PythonTaskNoResult": "kubevine.serverless",
    "Result": "kubevine.taskvine",
    "Library": "kubevine.serverless",
    "PythonTask": "kubevine.serverless",
    "RemoteError": "kubevine.results",
    "library_context": "kubevine.results",
    "input_path": "kubevine.results",
    "File": "kubevine.task",
    "Task": "kubevine.task",
}

__all__ = [
    "ConnectionRefused",
    "DaskVine",
    "DaskVineDag",
    "Executor",
    "Factory",
    "File",
    "FunctionCall",
    "FunctionCallNoResult",
    "FutureFunctionCall",
    "FuturePythonTask",
    "FuturesExecutor",
    "Library",
    "LocalCluster",
    "Manager",
    "Outcome",
    "PythonTask",
    "PythonTaskNoResult",
    "RemoteError",
    "Result",
    "StoreUnavailable",
    "Task",
    "VineFuture",
    "as_completed",
    "input_path",
    "keys",
    "library_context",
]


def __getattr__(name: str) -> Any:
    if name in ("keys", "cvine", "futures", "utils"):
        return importlib.import_module(f"kubevine.{name}")
    if name.startswith("VINE_"):  # TaskVine's constants, as older TaskVine programs name them
        from kubevine.taskvine import CONSTANTS

        if name in CONSTANTS:
            return CONSTANTS[name]
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'kubevine' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from kubevine import keys
    from kubevine.client import ConnectionRefused, Manager, StoreUnavailable, as_completed
    from kubevine.compat import DaskVine, DaskVineDag
    from kubevine.executor import Executor
    from kubevine.factory import Factory
    from kubevine.futures import FutureFunctionCall, FuturePythonTask, FuturesExecutor, VineFuture
    from kubevine.local import LocalCluster
    from kubevine.protocol import Outcome
    from kubevine.results import RemoteError, input_path, library_context
    from kubevine.serverless import (
        FunctionCall,
        FunctionCallNoResult,
        Library,
        PythonTask,
        PythonTaskNoResult,
    )
    from kubevine.task import File, Task
    from kubevine.taskvine import Result
