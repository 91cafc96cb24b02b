"""A manager started before its Redis waits for it, as a manager pod and its Redis pod start
together in a cluster: it serves once Redis answers, instead of exiting and being restarted by
the kubelet until Redis is up (a CrashLoopBackOff on every new workflow). Past
``--redis-outage-grace`` it gives up and says why; a wrong password is not waited for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kubevine import Manager, Task, keys
from kubevine.testing import wait_for

from .procs import TOKEN, Procs, RedisServer, kubevine_env


def manager_args(url: str, workdir: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "kubevine", "manager", "--host", "127.0.0.1", "--port", "0"]
    return [*args, "--name", "early", "--redis", url, "--workdir", str(workdir), *extra]


def test_a_manager_started_before_its_redis_waits_for_it_and_then_serves(tmp_path: Path) -> None:
    rs = RedisServer(tmp_path / "redis")  # its port is chosen; nothing listens there yet
    workdir = tmp_path / "m"
    log = tmp_path / "manager.log"
    procs = Procs(tmp_path / "procs")
    with open(log, "wb") as out:
        args = manager_args(rs.url, workdir)
        p = subprocess.Popen(args, env=kubevine_env(), stdout=out, stderr=subprocess.STDOUT)
    procs.managers.append(p)
    try:
        wait_for(lambda: "waiting up to 60s for it to come up" in log.read_text() or p.poll() is not None,
                 timeout=60, what="the manager to say it waits for Redis")  # fmt: skip
        assert p.poll() is None, log.read_text()
        assert not (workdir / "address").exists()  # not serving without its state
        rs.start()
        wait_for(lambda: (workdir / "address").exists() or p.poll() is not None, timeout=30, what="serving")
        assert p.poll() is None, log.read_text()
        address = (workdir / "address").read_text().strip()
        procs.worker(address, 0)
        with Manager(address, token=TOKEN) as m:
            t = Task("echo served")
            m.submit(t)
            assert m.wait(30) is t and t.successful() and t.output.strip() == "served"
        assert rs.client().get(keys.epoch("early")) is not None  # its state is in that Redis
    finally:
        procs.stop()
        rs.stop()


def test_a_redis_that_never_comes_stops_the_manager_after_the_grace_with_the_reason(tmp_path: Path) -> None:
    rs = RedisServer(tmp_path / "redis")  # never started
    out = subprocess.run(
        manager_args(rs.url, tmp_path / "m", "--redis-outage-grace", "1"),
        env=kubevine_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3, out.stderr[-2000:]
    assert "manager cannot run" in out.stderr and "unreachable" in out.stderr
    assert "waiting up to 1s" in out.stderr
