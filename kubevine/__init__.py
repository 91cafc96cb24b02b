"""kubevine: TaskVine-style workflows for data-intensive Python, Kubernetes-native.

The public face: :class:`Manager` (the client), :class:`Task`, :class:`File`
declarations, :class:`LocalCluster`, :func:`as_completed`.
"""

from kubevine import keys
from kubevine.client import ConnectionRefused, Manager, as_completed
from kubevine.executor import Executor
from kubevine.local import LocalCluster
from kubevine.protocol import Outcome
from kubevine.serverless import FunctionCall, Library, PythonTask, RemoteError, library_context
from kubevine.task import File, Task

__all__ = [
    "ConnectionRefused",
    "Executor",
    "FunctionCall",
    "Library",
    "PythonTask",
    "RemoteError",
    "library_context",
    "File",
    "LocalCluster",
    "Manager",
    "Outcome",
    "Task",
    "as_completed",
    "keys",
]
__version__ = "0.1.0"
