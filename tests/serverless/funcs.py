"""Functions the serverless tests send to workers (pickled by value: workers cannot import
this file)."""

from __future__ import annotations

import os
import time
from typing import Any

import kubevine

SLOW_IMPORT = 0.6  # seconds the test module `slowmod` takes to import
COUNTER = {"n": 0}


def add(x: int, y: int = 1) -> int:
    return x + y


def fail(x: int) -> int:
    if x == 3:
        raise KeyError(f"no such key {x}")
    return x


def bump() -> int:
    COUNTER["n"] += 1
    return COUNTER["n"]


def die(code: int) -> None:
    os._exit(code)


def stamp(seconds: float) -> tuple[float, float, int]:
    t0 = time.time()
    time.sleep(seconds)
    return t0, time.time(), os.getpid()


def slow_value() -> int:
    import slowmod  # type: ignore[import-not-found]  # on the workers' PYTHONPATH

    return int(slowmod.value()) + 1


def from_context() -> Any:
    return kubevine.library_context()["greeting"]


def setup_context(name: str) -> dict[str, str]:
    return {"greeting": f"hello {name}"}


def pid() -> int:
    return os.getpid()


def cache_dir() -> str | None:
    return os.environ.get("KUBEVINE_CACHE_DIR")


def echo_reversed(data: bytes) -> bytes:
    return data[::-1]
