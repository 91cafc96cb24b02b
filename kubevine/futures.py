"""TaskVine's futures: ``FuturesExecutor``, ``future_task``, ``future_funcall``, ``wait``,
``as_completed``, and futures as arguments of other tasks.

``executor.submit(fn, *args)`` or ``executor.submit(executor.future_task(fn, *args))`` returns
a :class:`VineFuture` (a ``concurrent.futures.Future``): ``result()`` is the function's value or
raises its exception, ``cancel()`` cancels the task on the manager. A future may be the
argument of another task or call: that task is sent once every future it takes is done, with
their values in their place (if one failed, so does the task that needed it, with the same
exception). Submissions that wait for other futures are made by the executor's own thread,
never by the client's I/O thread.

``kubevine.futures.wait`` and ``as_completed`` are ``concurrent.futures``'s, which work on these
futures as on any other; ``executor.map``, ``reduce`` and ``allpairs`` return futures of the
whole result.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed
from concurrent.futures import wait as _wait
from typing import Any

from kubevine.client import Manager
from kubevine.serverless import FunctionCall, Library, PythonTask
from kubevine.task import Task

log = logging.getLogger(__name__)

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "FutureFunctionCall",
    "FuturePythonTask",
    "FuturesExecutor",
    "VineFuture",
    "as_completed",
    "wait",
]


def wait(
    fs: Iterable[concurrent.futures.Future[Any]],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
) -> concurrent.futures._base.DoneAndNotDoneFutures[Any]:
    """``.done`` and ``.not_done`` once ``return_when`` holds or ``timeout`` passes."""
    return _wait(list(fs), timeout=timeout, return_when=return_when)


class VineFuture(concurrent.futures.Future[Any]):
    """The value of a task to come. ``result()`` raises the function's own exception."""

    def __init__(self, task: Task, executor: FuturesExecutor) -> None:
        super().__init__()
        self.task = task
        self._executor = executor

    def result(self, timeout: float | str | None = None) -> Any:
        return super().result(None if timeout in (None, "wait_forever") else float(timeout))

    def cancel(self) -> bool:
        """Cancel the task (on the manager if it was sent); True unless it already ended."""
        if self.done():
            return False
        if self.task.id is not None:
            self._executor.manager.cancel_by_task_id(self.task.id)
        return super().cancel()


class _FutureTask:
    """What a future-making task adds: its future, and the futures among its arguments."""

    _vine_future: VineFuture | None = None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def output(self, timeout: float | str | None = None) -> Any:
        """Wait for the task and return its value; if the function raised, the exception object
        (TaskVine's ``output()`` of a future task)."""
        assert self._vine_future is not None, "submit it first"
        try:
            return self._vine_future.result(timeout)
        except concurrent.futures.CancelledError:
            raise
        except Exception as e:
            return e


class FuturePythonTask(_FutureTask, PythonTask):
    """A PythonTask whose value is a future (``executor.future_task(fn, *args)``)."""


class FutureFunctionCall(_FutureTask, FunctionCall):
    """A FunctionCall whose value is a future (``executor.future_funcall(lib, fn, *args)``)."""


class FuturesExecutor(concurrent.futures.Executor):
    """TaskVine's ``FuturesExecutor``: a manager (``.manager``, ``.port``) and futures on it."""

    def __init__(
        self,
        port: int | Sequence[int] = 9123,
        batch_type: str = "local",
        manager: Manager | None = None,
        manager_host_port: str | None = None,
        manager_name: str | None = None,
        factory_binary: str | None = None,
        worker_binary: str | None = None,
        log_file: str = os.devnull,
        factory: bool = True,
        opts: dict[str, Any] | None = None,
    ) -> None:
        self.manager = manager or Manager(port=port, address=manager_host_port, name=manager_name)
        self.port = self.manager.port
        self.factory = None
        if factory:
            from kubevine.factory import Factory

            self.factory = Factory(batch_type, manager=self.manager, log_file=log_file)
            self.factory.min_workers = 5
            for k, v in (opts or {}).items():
                setattr(self.factory, k.replace("-", "_"), v)
            self.factory.start()
        self._pending: queue.SimpleQueue[FuturePythonTask | FutureFunctionCall | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_ready, name="kubevine-futures", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------ making futures

    def future_task(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FuturePythonTask:
        return FuturePythonTask(fn, *args, **kwargs)

    def future_funcall(self, library_name: str, fn: str, *args: Any, **kwargs: Any) -> FutureFunctionCall:
        return FutureFunctionCall(library_name, fn, *args, **kwargs)

    def create_library_from_functions(self, name: str, *functions: Callable[..., Any], **kw: Any) -> Library:
        return self.manager.create_library_from_functions(name, *functions, **kw)

    def install_library(self, lib: Library) -> None:
        self.manager.install_library(lib)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> VineFuture:
        """Run a future task (or ``fn(*args, **kwargs)`` as one) and return its future."""
        task = (
            fn
            if isinstance(fn, FuturePythonTask | FutureFunctionCall)
            else self.future_task(fn, *args, **kwargs)
        )
        fut = VineFuture(task, self)
        task._vine_future = fut
        deps = [a for a in (*task.args, *task.kwargs.values()) if isinstance(a, concurrent.futures.Future)]
        if not deps:
            self._send(task)
        else:
            left = [len(deps)]
            lock = threading.Lock()

            def one_done(_: concurrent.futures.Future[Any]) -> None:
                with lock:
                    left[0] -= 1
                    ready = left[0] == 0
                if ready:
                    self._pending.put(task)  # sent by our own thread, never the I/O thread

            for d in deps:
                d.add_done_callback(one_done)
        return fut

    def _send_ready(self) -> None:
        while (task := self._pending.get()) is not None:
            fut = task._vine_future
            assert fut is not None
            try:
                task.args = tuple(_value(a) for a in task.args)
                task.kwargs = {k: _value(v) for k, v in task.kwargs.items()}
            except BaseException as e:  # an argument's task failed: so does this one
                fut.set_exception(e)
                continue
            if not fut.cancelled():
                self._send(task)

    def _send(self, task: FuturePythonTask | FutureFunctionCall) -> None:
        fut = task._vine_future
        assert fut is not None

        def settle(done: concurrent.futures.Future[Task]) -> None:
            if fut.done():
                return  # cancelled here already
            t = done.result()
            assert isinstance(t, PythonTask)
            if t.successful():
                fut.set_result(t.value)
            else:
                fut.set_exception(t.exception or RuntimeError(f"{t.result}: {t.error}"))

        task.future.add_done_callback(settle)
        self.manager.submit(task)

    # ------------------------------------------------------------------ whole computations

    def map(  # type: ignore[override]  # TaskVine's map returns one future of the whole list
        self, fn: Callable[..., Any], seq: Iterable[Any], library_name: str | None = None, chunk_size: int = 1
    ) -> VineFuture:
        """A future of ``[fn(x) for x in seq]``."""
        items = list(seq)
        return self._whole(lambda: self.manager.map(fn, items, chunk_size))

    def reduce(
        self,
        fn: Callable[[list[Any]], Any],
        seq: Iterable[Any],
        library_name: str | None = None,
        chunk_size: int = 2,
        fn_arity: int = 2,
    ) -> VineFuture:
        """A future of ``seq`` reduced by ``fn``, which receives lists of up to ``fn_arity`` values."""
        items = list(seq)
        return self._whole(lambda: self.manager.tree_reduce(fn, items, max(2, fn_arity)))

    def allpairs(
        self,
        fn: Callable[[Any, Any], Any],
        rows: Sequence[Any],
        cols: Sequence[Any],
        library_name: str | None = None,
        chunk_size: int = 1,
    ) -> VineFuture:
        """A future of ``result[i][j] = fn(rows[i], cols[j])``."""
        r, c = list(rows), list(cols)

        def run() -> list[list[Any]]:
            flat = self.manager.pair(_star(fn), r, c, chunk_size)
            return [flat[i * len(c) : (i + 1) * len(c)] for i in range(len(r))]

        return self._whole(run)

    def _whole(self, compute: Callable[[], Any]) -> VineFuture:
        fut = VineFuture(Task(None), self)

        def run() -> None:
            try:
                fut.set_result(compute())
            except BaseException as e:
                fut.set_exception(e)

        threading.Thread(target=run, name="kubevine-futures-whole", daemon=True).start()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pending.put(None)
        if self.factory is not None:
            self.factory.stop()
        self.manager.close()

    def __del__(self) -> None:
        try:
            self._pending.put(None)
        except Exception:
            pass


def _value(a: Any) -> Any:
    return a.result() if isinstance(a, concurrent.futures.Future) else a


class _star:
    """``fn(*pair)`` as a picklable callable (pair gives one tuple)."""

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def __call__(self, pair: tuple[Any, Any]) -> Any:
        return self.fn(*pair)
