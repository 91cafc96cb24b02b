"""Library processes belong to their worker: they know its cache, and they die with it."""

from __future__ import annotations

import signal
from pathlib import Path

import funcs
import psutil

from kubevine import FunctionCall, LocalCluster, Manager
from kubevine.testing import wait_for


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped
    except psutil.NoSuchProcess:
        return True


def test_library_processes_and_their_forked_calls_die_when_their_worker_is_sigkilled(tmp_path: Path) -> None:
    with (
        LocalCluster(workers=1, cores=2, workdir=tmp_path, heartbeat_timeout=60) as c,
        Manager(c.address, token=c.token) as m,
    ):
        d = m.create_library_from_functions("d", funcs.pid, funcs.cache_dir, exec_mode="direct")
        m.install_library(d)
        m.install_library(m.create_library_from_functions("f", funcs.stamp, exec_mode="fork"))
        direct = [FunctionCall("d", "pid"), FunctionCall("d", "cache_dir")]
        for call in direct:
            m.submit(call)
        m.submit(FunctionCall("f", "stamp", 120))  # still running in a forked child when the worker dies
        for call in direct:
            assert call.future.result(60).successful()
        worker = psutil.Process(c.workers[0].pid)
        assert Path(direct[1].output) == (tmp_path / "worker-0" / "cache").resolve()  # KUBEVINE_CACHE_DIR

        def library_processes() -> list[psutil.Process]:
            return [p for p in worker.children() if "kubevine.worker.libproc" in " ".join(p.cmdline())]

        libs = wait_for(lambda: len(library_processes()) == 2 and library_processes(), what="both libraries")
        fork_lib = next(p for p in libs if p.pid != direct[0].output)
        call_child = wait_for(lambda: fork_lib.children(), what="the forked call")[0]
        victims = [p.pid for p in libs] + [call_child.pid]
        assert direct[0].output in victims
        worker.send_signal(signal.SIGKILL)
        wait_for(lambda: all(gone(pid) for pid in victims), timeout=10, what="library processes to die")
