"""Fixtures shared by the whole suite: the real Redis, local clusters, polling helpers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from kubevine import keys

REDIS_URL = "redis://127.0.0.1:6379/0"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the machine's Redis are marked ``redis``: ``-m "not redis"`` leaves them
    out on a machine without one (``make test`` always starts it)."""
    for item in items:
        if "redis_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The machine's Redis; a test that cannot reach it fails (Redis is part of the stack)."""
    r = redis.Redis.from_url(REDIS_URL)
    r.ping()
    yield REDIS_URL
    r.close()


@pytest.fixture
def workflow_name(redis_url: str) -> Iterator[str]:
    """A unique workflow name; its Redis keys are removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    r = redis.Redis.from_url(redis_url)
    r.delete(*keys.all_keys(name))
    r.close()
