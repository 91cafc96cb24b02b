"""PythonTasks behave like a new interpreter in their sandbox, whether the worker forks them
from its clean starter (the default) or execs a new interpreter (``--python-tasks exec``);
the starter's own failures never cost a task."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubevine import Manager, PythonTask
from kubevine.protocol import Outcome

MODES = {"fork": [], "exec": ["--python-tasks", "exec"]}


def look_around() -> dict[str, Any]:
    import helper  # type: ignore[import-not-found]  # an input file in the sandbox

    cwd = os.getcwd()
    return {
        "files": sorted(os.listdir(cwd)),
        "helper": helper.VALUE,
        "env": os.environ.get("KV_GREETING"),
        "path0": sys.path[0] == cwd,
        "own_session": os.getsid(0) == os.getpid(),
        "stdin": sys.stdin.read(),
        "argv_ok": len(sys.argv) == 3,
        "slowmod": "slowmod" in sys.modules,
    }


def meddle() -> str:
    import json

    json.MEDDLED = True  # type: ignore[attr-defined]
    os.environ["KV_LEAK"] = "1"
    sys.modules["kv_planted"] = json
    return "meddled"


def untouched() -> dict[str, bool]:
    import json

    return {
        "module attr": hasattr(json, "MEDDLED"),
        "environ": "KV_LEAK" in os.environ,
        "sys.modules": "kv_planted" in sys.modules,
    }


def late_writers() -> str:
    import atexit
    import threading

    def later() -> None:
        time.sleep(0.3)
        with open("from_thread", "w") as f:
            f.write("thread finished")

    threading.Thread(target=later).start()  # not a daemon: the interpreter waits for it
    atexit.register(lambda: Path("from_atexit").write_text("atexit ran"))
    return "returned first"


def die_loudly(how: str) -> None:
    print("last words before", how, flush=True)
    if how == "exit":
        os._exit(7)
    os.kill(os.getpid(), signal.SIGSEGV)


def parent_pid() -> int:
    return os.getppid()


def nap(seconds: float, started: str) -> int:
    Path(started).write_text(str(os.getpid()))  # the test waits for this: the task is running
    time.sleep(seconds)
    return os.getppid()


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def start_flags() -> tuple[int, int]:
    return sys.flags.dont_write_bytecode, os.getppid()


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def wait_all(m: Manager, n: int, timeout: float = 60) -> None:
    for _ in range(n):
        assert m.wait(timeout) is not None


@pytest.mark.parametrize("mode", MODES)
def test_a_python_task_runs_in_its_sandbox_as_in_a_new_interpreter(
    manager: Callable[..., Manager], mode: str
) -> None:
    m = manager(workers=1, worker_args=MODES[mode])
    t = PythonTask(look_around)
    t.add_input(m.declare_buffer("VALUE = 7\n"), "helper.py")
    t.set_env_var("KV_GREETING", "hello")
    m.submit(t)
    assert m.wait(60) is t and t.successful(), t.error
    assert t.output == {
        "files": ["helper.py"],
        "helper": 7,
        "env": "hello",
        "path0": True,
        "own_session": True,
        "stdin": "",
        "argv_ok": True,
        "slowmod": False,
    }


@pytest.mark.parametrize("mode", MODES)
def test_a_python_task_never_sees_what_an_earlier_one_changed(
    manager: Callable[..., Manager], mode: str
) -> None:
    m = manager(workers=1, worker_args=MODES[mode])
    first = PythonTask(meddle)
    m.submit(first)
    assert m.wait(60) is first and first.output == "meddled"
    second = PythonTask(untouched)
    m.submit(second)
    assert m.wait(60) is second
    assert second.output == {"module attr": False, "environ": False, "sys.modules": False}


@pytest.mark.parametrize("mode", MODES)
def test_a_python_task_ends_as_an_interpreter_does_threads_joined_atexit_run(
    manager: Callable[..., Manager], mode: str, tmp_path: Path
) -> None:
    m = manager(workers=1, worker_args=MODES[mode])
    t = PythonTask(late_writers)
    t.add_output(m.declare_file(tmp_path / "thread.txt"), "from_thread")
    t.add_output(m.declare_file(tmp_path / "atexit.txt"), "from_atexit")
    m.submit(t)
    assert m.wait(60) is t and t.successful(), (t.outcome, t.error)
    assert t.output == "returned first"
    assert (tmp_path / "thread.txt").read_text() == "thread finished"
    assert (tmp_path / "atexit.txt").read_text() == "atexit ran"


@pytest.mark.parametrize("mode", MODES)
def test_a_python_task_that_dies_reports_its_exit_code_and_output(
    manager: Callable[..., Manager], mode: str
) -> None:
    m = manager(workers=1, worker_args=MODES[mode])
    exits, crashes = PythonTask(die_loudly, "exit"), PythonTask(die_loudly, "segfault")
    m.submit(exits)
    m.submit(crashes)
    wait_all(m, 2)
    assert exits.outcome == Outcome.SANDBOX_ERROR and crashes.outcome == Outcome.SANDBOX_ERROR
    assert "ended with code 7" in (exits.error or "") and "last words before exit" in (exits.error or "")
    assert f"ended with code {-signal.SIGSEGV}" in (crashes.error or "")
    assert "last words before segfault" in (crashes.error or "")
    after = PythonTask(parent_pid)
    m.submit(after)
    assert m.wait(60) is after and after.successful()


def test_tasks_are_forked_from_the_starter_and_survive_its_death(
    manager: Callable[..., Manager], tmp_path: Path
) -> None:
    m = manager(workers=1)
    first = PythonTask(parent_pid)
    m.submit(first)
    assert m.wait(60) is first and first.successful(), first.error
    starter = first.output
    assert "kubevine.worker.pystarter" in cmdline(starter)
    running = PythonTask(nap, 1.5, str(tmp_path / "started"))
    m.submit(running)
    wait_for_file(tmp_path / "started")
    os.kill(starter, signal.SIGKILL)
    assert m.wait(60) is running
    assert running.successful() and running.output != starter, (running.outcome, running.error)  # reparented
    after = PythonTask(parent_pid)
    m.submit(after)
    assert m.wait(60) is after and after.successful()
    assert after.output != starter and "kubevine.worker.pystarter" in cmdline(after.output)


def test_time_limit_and_cancel_stop_a_forked_task(manager: Callable[..., Manager], tmp_path: Path) -> None:
    m = manager(workers=1)
    limited = PythonTask(nap, 60, str(tmp_path / "limited"))
    limited.set_time_max(1)
    m.submit(limited)
    assert m.wait(60) is limited and limited.outcome == Outcome.MAX_WALL_TIME
    cancelled = PythonTask(nap, 60, str(tmp_path / "cancelled"))
    m.submit(cancelled)
    wait_for_file(tmp_path / "cancelled")
    pid = int((tmp_path / "cancelled").read_text())
    assert m.cancel_by_task_id(cancelled.id or 0)
    quick = PythonTask(parent_pid)
    m.submit(quick)
    t0 = time.monotonic()
    done = {m.wait(60), m.wait(60)}
    assert done == {cancelled, quick} and quick.successful()
    assert time.monotonic() - t0 < 30, "the cancelled task kept its core"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and b"Z" not in _state(pid):
        assert time.monotonic() < deadline, "the cancelled task's process still runs"
        time.sleep(0.02)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b"Z"


def test_a_task_setting_a_start_up_variable_gets_a_new_interpreter(manager: Callable[..., Manager]) -> None:
    m = manager(workers=1)
    plain, flagged = PythonTask(start_flags), PythonTask(start_flags)
    flagged.set_env_var("PYTHONDONTWRITEBYTECODE", "1")
    m.submit(plain)
    m.submit(flagged)
    wait_all(m, 2)
    assert plain.successful() and flagged.successful(), (plain.error, flagged.error)
    assert flagged.output[0] == 1  # the interpreter read it as it started
    assert "kubevine.worker.pystarter" in cmdline(plain.output[1])
    assert "kubevine.worker.pystarter" not in cmdline(flagged.output[1])


def zone() -> tuple[str, str]:
    return time.tzname[0], time.tzname[1]


@pytest.mark.parametrize("mode", MODES)
def test_a_python_task_keeps_the_time_zone_it_was_given(manager: Callable[..., Manager], mode: str) -> None:
    m = manager(workers=1, worker_args=MODES[mode])
    t = PythonTask(zone)
    t.set_env_var("TZ", "EST5EDT")
    m.submit(t)
    assert m.wait(60) is t and t.output == ("EST", "EDT"), t.error
