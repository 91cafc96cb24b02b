"""Logging set-up shared by every command: plain text for people, JSON lines for clusters.

Every line carries the ids of the process that wrote it (workflow, manager or worker),
bound once with :func:`bind`, so lines from many pods can be merged and still be told
apart; messages name the task or worker they are about. ``--log-format json`` (or
``KUBEVINE_LOG_FORMAT=json``) turns each line into one JSON object with those ids as
fields, which is what a cluster's log collector wants.
"""

from __future__ import annotations

import json
import logging
import sys
import time

#: ids of this process, added to every record (see bind)
_CONTEXT: dict[str, str] = {}
#: ``extra=`` keys copied into JSON lines when a call passes them
_EXTRA_KEYS = ("task", "worker", "client", "library", "file", "attempt")


def bind(**ids: object) -> None:
    """Add ids (``workflow=…``, ``manager=…``, ``worker=…``) to every later log line."""
    for k, v in ids.items():
        if v is None:
            _CONTEXT.pop(k, None)
        else:
            _CONTEXT[k] = str(v)


def context() -> dict[str, str]:
    return dict(_CONTEXT)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_CONTEXT)
        for k in _EXTRA_KEYS:
            v = record.__dict__.get(k)
            if v is not None:
                out[k] = v
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [ids]: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.ids = (" [" + " ".join(f"{k}={v}" for k, v in _CONTEXT.items()) + "]") if _CONTEXT else ""
        return super().format(record)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
