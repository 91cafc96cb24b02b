"""A restarted manager that loads its tasks in slices while it serves (a large store; here
``--restore-at-once 0`` makes any store large), and whose store will not let it read them
yet: it serves anyway, says it is loading to a client and in ``kubevine status``, loads the
tasks a worker names, and once the store lets it, loads the rest and welcomes the client with
every task it left."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from kubevine import Manager, Task, keys
from kubevine.testing import wait_for

from .procs import TOKEN, Procs, kubevine_env

N = 200


def test_a_manager_that_cannot_read_its_tasks_yet_serves_says_so_and_loses_none(
    tmp_path: Path, redis_url: str, workflow_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(redis_url)
    user, password = f"kv-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    u = urlparse(redis_url)
    url = f"redis://{user}:{password}@{u.hostname}:{u.port}{u.path or '/0'}"
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    procs = Procs(tmp_path)
    try:
        # an earlier manager holds N tasks for its client, with no worker to run them
        address = procs.manager(url, workflow_name)
        port = int(address.rsplit(":", 1)[1])
        with Manager(address, token=TOKEN, client="analyst") as m:
            ids = [m.submit(Task(f"echo {i}")) for i in range(N)]
            wait_for(lambda: admin.hlen(keys.records(workflow_name)) == N, timeout=30, what="tasks stored")
        procs.kill_manager()

        # the next one may read everything but scan the stored tasks: its load cannot go on
        admin.acl_setuser(user, enabled=True, commands=["-hscan"])
        address = procs.manager(url, workflow_name, "--restore-at-once", "0", port=port)
        log = tmp_path / "manager-1.log"
        wait_for(lambda: "loading tasks from the store paused" in log.read_text(), timeout=30, what="paused")

        status = subprocess.run(
            [sys.executable, "-m", "kubevine", "status", address],
            capture_output=True,
            text=True,
            timeout=60,
            env=kubevine_env(KUBEVINE_TOKEN=TOKEN),
        )
        assert status.returncode == 0, status.stderr
        assert f"LOADING  about {N} task(s) still to read" in status.stdout, status.stdout

        # the client that left comes back: told the manager is loading, it waits for its welcome
        back: dict[str, object] = {}

        def attach() -> None:
            try:
                back["m"] = Manager(address, token=TOKEN, client="analyst", attach=True, connect_timeout=60)
            except Exception as e:  # reported by the assertion below
                back["error"] = e

        caplog.set_level(logging.WARNING, logger="kubevine.clientio")
        t = threading.Thread(target=attach, daemon=True)
        t.start()
        wait_for(lambda: "is loading its workflow's tasks" in caplog.text, timeout=30, what="told it loads")
        assert not back  # no welcome yet: it would not list the tasks it left

        admin.acl_setuser(user, enabled=True, commands=["+hscan"])  # the store lets it read them now
        t.join(60)
        assert "error" not in back, back
        m2 = back["m"]
        assert isinstance(m2, Manager)
        with m2:
            assert sorted(x.id for x in m2.attached) == sorted(ids)  # every task it left
            procs.worker(address, 0)
            got = {x.id: x.output for x in m2}
        assert got == {tid: f"{i}\n" for i, tid in enumerate(ids)}
        said = log.read_text()
        assert f"all {N} task(s) loaded" in said and "loading tasks from the store again" in said
    finally:
        procs.stop()
        admin.acl_deluser(user)
