"""``python -m kubevine.worker.libproc ENDPOINT WORKER_PID``: a library process, serving calls warm.

Started by a worker for each installed library. It imports the library's modules and runs
its context setup once, says ``ready``, then serves batches of calls over a ZeroMQ PAIR
socket to its worker until told to stop or its worker goes away. It dies with its worker,
even one killed by SIGKILL (PR_SET_PDEATHSIG), and so do the children it forked for calls.
``KUBEVINE_CACHE_DIR`` in its environment names the worker's file cache.

exec_mode ``direct`` runs calls in this process (one at a time with one slot, on ``slots``
threads otherwise): fastest, and calls share module state. ``fork`` forks a child per call:
a call that mutates globals, leaks or crashes affects only itself. A call that raises, or
calls ``sys.exit``, is a failed call (its exception travels back); the library lives on.

A call with inputs runs with its working directory a folder of its own holding links to them
(``open("name")`` works, as in TaskVine): a forked child changes directory itself; in direct
mode with one slot the library changes directory around each call; with several slots in
direct mode the calls' threads share one working directory, so each call finds its inputs
with ``kubevine.input_path(name)`` instead (the working directory is process-wide). The
library's own inputs (``LibrarySpec.inputs``) are in its working directory, which the worker
prepares. The library's functions see each other as globals, so one may call another by name.

Frames from the worker: ``init`` (spec JSON, pickled functions and context), ``calls``
(one msgpack frame: a list of [task id, attempt, function, pickled (args, kwargs), extra],
extra being nil or ``{"inputs": {name: path in the cache}, "value": keep the value, "box":
the folder to run it in, whose files the worker collects as the call's outputs}``),
``stop``. To the worker: ``ready`` or ``failed`` (traceback), then ``results`` (one msgpack
frame: a list of [task id, attempt, ok, wall seconds, encoded result]).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle
import msgpack
import zmq

from kubevine import gctune, results
from kubevine.protocol import LibrarySpec
from kubevine.worker.lifeline import die_with

Call = tuple[int, int, str, dict[str, Any] | None]  # task id, attempt, function, inputs/value
Result = tuple[int, int, bool, float, bytes]


def run_call(
    functions: dict[str, Callable[..., Any]], call: Call, payload: bytes, lib: str, *, chdir: bool = False
) -> tuple[bool, bytes]:
    """Run one call; (True, encoded value) or (False, encoded exception). A call whose value
    is kept on the worker gets back ``cloudpickle.dumps(value)`` itself (the temp's bytes).
    ``chdir``: run it in a folder of its own holding links to its inputs (not on a thread)."""
    name, extra = call[2], call[3] or {}
    fn = functions.get(name)
    if fn is None:
        err = LookupError(
            f"library {lib!r} has no function {name!r} (it has: {', '.join(sorted(functions))})"
        )
        return False, results.encode_error(err)
    inputs: dict[str, str] = extra.get("inputs") or {}
    given: str | None = extra.get("box")
    if chdir and (inputs or given):
        with call_dir(call, inputs, given):
            return _run(fn, extra, payload, inputs)
    return _run(fn, extra, payload, inputs)


@contextlib.contextmanager
def call_dir(call: Call, inputs: dict[str, str], given: str | None = None) -> Iterator[None]:
    """Change into a folder holding links to ``inputs`` for the call; back afterwards. The
    folder is the worker's (``given``: it collects the files the call wrote as its outputs,
    then removes it) or a new one, removed here."""
    box = given or os.path.abspath(f"call-{call[0]}-{call[1]}-{os.getpid()}")
    here = os.getcwd()
    os.makedirs(box, exist_ok=True)
    try:
        for rname, path in inputs.items():
            dest = os.path.join(box, rname)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.symlink(path, dest)
        os.chdir(box)
        yield
    finally:
        os.chdir(here)
        if given is None:
            shutil.rmtree(box, ignore_errors=True)


def _run(
    fn: Callable[..., Any], extra: dict[str, Any], payload: bytes, inputs: dict[str, str]
) -> tuple[bool, bytes]:
    results.set_inputs(inputs)
    try:
        args, kwargs = cloudpickle.loads(payload)
        value = fn(*args, **kwargs)
        if extra.get("value"):
            data: bytes = cloudpickle.dumps(value)
            return True, data
        return True, results.encode_ok(value)
    except BaseException as e:  # the user's exception travels back, the library stays up
        return False, results.encode_error(results.user_frames(e))
    finally:
        results.set_inputs(None)


def _as_globals(functions: dict[str, Callable[..., Any]]) -> None:
    """Each function sees the library's others by name, as in the script that defined them
    (a name its own module already binds is left alone)."""
    for fn in functions.values():
        g = getattr(fn, "__globals__", None)
        if isinstance(g, dict):
            for name, other in functions.items():
                g.setdefault(name, other)


class Forked:
    """One call running in a forked child; its result arrives on a pipe."""

    def __init__(self, call: Call, fd: int, pid: int) -> None:
        self.call, self.fd, self.pid = call, fd, pid
        self.chunks: list[bytes] = []
        self.t0 = time.perf_counter()


def main(argv: list[str]) -> int:
    endpoint, parent = argv
    die_with(int(parent))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    _init, spec_json, payload = sock.recv_multipart()
    spec = LibrarySpec.model_validate_json(spec_json)
    try:
        os.environ.update(spec.env)
        for m in spec.hoisting_modules:
            importlib.import_module(m)
        obj = cloudpickle.loads(payload)
        functions: dict[str, Callable[..., Any]] = obj["functions"]
        _as_globals(functions)
        if obj.get("context") is not None:
            setup, args, kwargs = obj["context"]
            results.set_context(setup(*args, **kwargs))
    except BaseException:
        sock.send_multipart([b"failed", traceback.format_exc().encode()])
        sock.close()
        return 1
    gctune.for_library()  # after the imports and the context: the collector never walks them
    sock.send_multipart([b"ready"])
    if spec.exec_mode == "fork":
        return serve_forked(sock, spec, functions)
    return serve_direct(sock, spec, functions)


def _send_results(sock: zmq.Socket[bytes], results: list[Result]) -> None:
    sock.send_multipart([b"results", msgpack.packb(results)])


def _recv_calls(parts: list[bytes]) -> list[tuple[Call, bytes]]:
    return [((t, a, fn, extra), p) for t, a, fn, p, extra in msgpack.unpackb(parts[1])]


def serve_direct(sock: zmq.Socket[bytes], spec: LibrarySpec, functions: dict[str, Callable[..., Any]]) -> int:
    pool = ThreadPoolExecutor(spec.slots) if spec.slots > 1 else None
    done: queue.SimpleQueue[Result] = queue.SimpleQueue()
    wake_r, wake_w = os.pipe()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(wake_r, zmq.POLLIN)

    def one(call: Call, payload: bytes) -> Result:
        t0 = time.perf_counter()
        ok, out = run_call(functions, call, payload, spec.name, chdir=pool is None)
        return (call[0], call[1], ok, time.perf_counter() - t0, out)

    def threaded(call: Call, payload: bytes) -> None:
        done.put(one(call, payload))
        os.write(wake_w, b"x")

    lock = threading.Lock()
    while True:
        events = dict(poller.poll())
        if sock in events:
            parts = sock.recv_multipart()
            if parts[0] == b"stop":
                return 0
            calls = _recv_calls(parts)
            if pool is None:
                _send_results(sock, [one(c, p) for c, p in calls])
            else:
                for c, p in calls:
                    pool.submit(threaded, c, p)
        if wake_r in events:
            os.read(wake_r, 65536)
            results = []
            while True:
                try:
                    results.append(done.get_nowait())
                except queue.Empty:
                    break
            if results:
                with lock:
                    _send_results(sock, results)


def serve_forked(sock: zmq.Socket[bytes], spec: LibrarySpec, functions: dict[str, Callable[..., Any]]) -> int:
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    library = os.getpid()
    running: dict[int, Forked] = {}
    waiting: list[tuple[Call, bytes]] = []
    while True:
        while waiting and len(running) < spec.slots:
            call, payload = waiting.pop(0)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: run the call, write its result, vanish
                die_with(library)
                os.close(r)
                ok, out = run_call(functions, call, payload, spec.name, chdir=True)
                data = (b"1" if ok else b"0") + out
                view = memoryview(data)
                while view:
                    n = os.write(w, view)
                    view = view[n:]
                os._exit(0)
            os.close(w)
            running[r] = Forked(call, r, pid)
            poller.register(r, zmq.POLLIN)
        events = dict(poller.poll())
        finished: list[Result] = []
        for fd in [fd for fd in events if isinstance(fd, int) and fd in running]:
            f = running[fd]
            chunk = os.read(fd, 1 << 20)
            if chunk:
                f.chunks.append(chunk)
                continue
            poller.unregister(fd)
            os.close(fd)
            del running[fd]
            _, status = os.waitpid(f.pid, 0)
            data = b"".join(f.chunks)
            wall = time.perf_counter() - f.t0
            if data:
                finished.append((f.call[0], f.call[1], data[:1] == b"1", wall, data[1:]))
            else:
                how = (
                    f"signal {os.WTERMSIG(status)}"
                    if os.WIFSIGNALED(status)
                    else f"exit {os.waitstatus_to_exitcode(status)}"
                )
                err = RuntimeError(f"the call to {f.call[2]!r} crashed its forked process ({how})")
                finished.append((f.call[0], f.call[1], False, wall, results.encode_error(err)))
        if finished:
            _send_results(sock, finished)
        if sock in events:
            parts = sock.recv_multipart()
            if parts[0] == b"stop":
                return 0
            waiting += _recv_calls(parts)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
