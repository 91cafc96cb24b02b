"""TaskVine's tasks cache: a task that already succeeded with the same definition is not run
again; its stored result comes back at once (``m.enable_tasks_cache()``).

A task's definition is what it runs (command, or the pickled function and arguments), its
resources and environment, and the content of its inputs (their cache names say what they
hold); a task reading a temp is not cached (its input does not exist yet when it is
submitted). Each success is kept in ``cache_dir`` as ``<key>.output`` (the result and the
content of the files it returned) and named in ``log_file``, one JSON line each, so the cache
outlives the client and the manager. A hit is handed back by ``wait`` before anything else,
with ``t.hostname == "CACHED"``; ``submit`` returns its id as a string, as TaskVine does.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kubevine.digest import sha256_bytes
from kubevine.protocol import FileKind, Outcome, TaskSpec

if TYPE_CHECKING:
    from kubevine.task import Task

log = logging.getLogger(__name__)


@dataclass
class Stored:
    """One task's success, as kept on disk."""

    outcome: Outcome
    exit_code: int | None
    output: bytes | None
    files: dict[str, bytes] = field(default_factory=dict)  # remote name -> content (local outputs)


class TasksCache:
    def __init__(self, cache_dir: str | os.PathLike[str], log_file: str | os.PathLike[str]) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file = Path(log_file)
        self.keys: set[str] = set()
        if self.log_file.exists():
            for line in self.log_file.read_text().splitlines():
                try:
                    self.keys.add(json.loads(line)["key"])
                except (ValueError, KeyError):
                    continue  # a torn last line: that entry is simply not cached

    @staticmethod
    def key(spec: TaskSpec, payload: bytes | None) -> str | None:
        """The task's fingerprint, or None when it cannot be cached (it reads a temp)."""
        if any(b.kind == FileKind.TEMP for b in spec.inputs) or any(
            b.kind == FileKind.TEMP for b in spec.outputs
        ):
            return None
        what = spec.model_dump_json(exclude={"id", "payload", "tag", "priority", "retries"})
        return sha256_bytes(what.encode() + b"\0" + (payload or b""))

    def lookup(self, key: str) -> Stored | None:
        if key not in self.keys:
            return None
        try:
            stored = pickle.loads((self.dir / f"{key}.output").read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError):
            return None
        return stored if isinstance(stored, Stored) else None

    def store(self, key: str, task: Task) -> None:
        """Keep a successful task's result (called when it comes back)."""
        if key in self.keys or not task.successful():
            return
        files = {}
        for f, remote in task.outputs:
            if f.kind == FileKind.LOCAL and f.path is not None and f.path.is_file():
                files[remote] = f.path.read_bytes()
        stored = Stored(task.outcome or Outcome.SUCCESS, task._exit_code, task._output, files)
        tmp = self.dir / f".{key}.{uuid.uuid4().hex[:8]}"
        tmp.write_bytes(pickle.dumps(stored))
        os.replace(tmp, self.dir / f"{key}.output")
        with self.log_file.open("a") as logf:
            logf.write(json.dumps({"key": key, "time": time.time()}) + "\n")
        self.keys.add(key)

    @staticmethod
    def restore(task: Task, stored: Stored) -> None:
        """Fill ``task`` as if it had just run (its local outputs written back)."""
        task.outcome, task._exit_code, task._output = stored.outcome, stored.exit_code, stored.output
        task.hostname, task.addrport, task.attempts, task.error = "CACHED", "CACHED", 0, None
        for f, remote in task.outputs:
            if remote in stored.files and f.path is not None:
                f.path.parent.mkdir(parents=True, exist_ok=True)
                f.path.write_bytes(stored.files[remote])
