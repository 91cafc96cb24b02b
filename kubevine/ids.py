"""Typed identifiers shared by the client, manager, worker and operator.

Ids cross every boundary in kubevine (wire messages, Redis keys, logs), so they are
``NewType``s: mypy then refuses a worker id where a task id belongs.
"""

from __future__ import annotations

from typing import NewType

TaskId = NewType("TaskId", int)
WorkerId = NewType("WorkerId", str)
ClientId = NewType("ClientId", str)
CacheName = NewType("CacheName", str)
LibraryName = NewType("LibraryName", str)
