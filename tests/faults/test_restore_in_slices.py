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
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
import zmq

from kubevine import Manager, Task, keys
from kubevine.ids import TaskId
from kubevine.protocol import PROTOCOL_VERSION, ErrorMsg, Hello, Submit, TaskSpec, decode, encode
from kubevine.testing import wait_for

from .procs import TOKEN, Procs, count_runs, kubevine_env

N = 200


@pytest.fixture
def store_user(redis_url: str) -> Iterator[tuple[str, Callable[..., None]]]:
    """A Redis ACL user of the test's own, allowed everything at first: its URL, and a way to
    allow or forbid commands (``allow("-hscan")``); removed afterwards."""
    admin = redis.Redis.from_url(redis_url)
    user, password = f"kv-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    u = urlparse(redis_url)
    url = f"redis://{user}:{password}@{u.hostname}:{u.port}{u.path or '/0'}"
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])

    def allow(*commands: str) -> None:
        admin.acl_setuser(user, enabled=True, commands=list(commands))

    yield url, allow
    admin.acl_deluser(user)


def test_a_manager_that_cannot_read_its_tasks_yet_serves_says_so_and_loses_none(
    tmp_path: Path,
    store_user: tuple[str, Callable[..., None]],
    workflow_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, allow = store_user
    procs = Procs(tmp_path)
    try:
        # an earlier manager holds N tasks for its client, with no worker to run them
        address = procs.manager(url, workflow_name)
        port = int(address.rsplit(":", 1)[1])
        with Manager(address, token=TOKEN, client="analyst") as m:
            ids = [m.submit(Task(f"echo {i}")) for i in range(N)]
            wait_for(
                lambda: redis.Redis.from_url(url).hlen(keys.records(workflow_name)) == N,
                timeout=30,
                what="tasks stored",
            )
        procs.kill_manager()

        # the next one may read everything but scan the stored tasks: its load cannot go on
        allow("-hscan")
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

        # a client that sends work before its welcome (the stock client never does) is told why
        # it is not taken, with the ids it sent: they would meet a half-loaded table
        raw = zmq.Context.instance().socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(f"tcp://{address}")
        raw.send_multipart(encode(Hello(protocol=PROTOCOL_VERSION, token=TOKEN, role="client", client="raw")))
        raw.send_multipart(encode(Submit(tasks=[TaskSpec(id=TaskId(ids[0]), command="echo again")])))
        refused = None
        while refused is None:
            assert raw.poll(30_000)
            msg, _ = decode(raw.recv_multipart())
            if isinstance(msg, ErrorMsg) and msg.task_ids:
                refused = msg
        raw.close(0)
        assert refused.code == "loading" and refused.task_ids == [ids[0]], refused

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

        allow("+hscan")  # the store lets it read them now
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


def test_a_worker_whose_tasks_cannot_be_read_yet_waits_and_its_running_task_is_not_run_again(
    tmp_path: Path, store_user: tuple[str, Callable[..., None]], workflow_name: str
) -> None:
    """A restarted manager that may read neither the task scan nor the tasks a worker names
    leaves that worker's hello unanswered (it says it again later) instead of telling it to
    kill what it runs as unknown; once the store may be read, the task it ran all along is
    adopted and ends once."""
    url, allow = store_user
    procs = Procs(tmp_path)
    runs = tmp_path / "runs"
    try:
        address = procs.manager(url, workflow_name)
        port = int(address.rsplit(":", 1)[1])
        procs.worker(address, 0)
        with Manager(address, token=TOKEN, client="analyst") as m:
            tid = m.submit(Task(f"echo run >> {runs}; sleep 6; echo finished"))
            wait_for(lambda: count_runs(runs) == {"run": 1}, timeout=60, what="the task running")
            procs.kill_manager()
            allow("-hscan", "-hmget")
            procs.manager(url, workflow_name, "--restore-at-once", "0", port=port)
            log, wlog = tmp_path / "manager-1.log", tmp_path / "worker-0.log"

            def answered() -> bool:  # its hello waits, or (the fault this guards) was taken
                return (
                    "its hello waits until the store can be read" in log.read_text()
                    or wlog.read_text().count("registered with manager") > 1
                )

            wait_for(answered, 60, what="the worker's hello to the new manager")
            allow("+hscan", "+hmget")
            t = m.wait(120)
        assert t is not None and t.id == tid and t.successful(), (
            t.result if t else None,
            t.error if t else None,
        )
        assert t.output == "finished\n" and t.attempts == 1
        assert count_runs(runs) == {"run": 1}  # not killed and run again
    finally:
        procs.stop()
