"""``kubevine.Executor``: the ``concurrent.futures.Executor`` front of a manager.

``ex.submit(fn, *args)`` returns a future of ``fn``'s value, computed as a function call
in a warm library on a worker (one library per distinct function, made on first use);
``ex.map(fn, xs)`` yields values in order. Code written for a ThreadPoolExecutor or a
dask/Ray executor runs on kubevine by swapping the executor.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

from kubevine.client import Manager
from kubevine.serverless import FunctionCall, Library, auto_library_name
from kubevine.task import Task

P = ParamSpec("P")
T = TypeVar("T")


class Executor(concurrent.futures.Executor):
    def __init__(self, manager: Manager, *, exec_mode: str = "direct", retries: int = 0) -> None:
        self.manager = manager
        self.exec_mode = exec_mode
        self.retries = retries
        self._libs: dict[Callable[..., Any], str] = {}

    def _library_for(self, fn: Callable[..., Any]) -> str:
        name = self._libs.get(fn)
        if name is None:
            name = auto_library_name(fn)
            self.manager.install_library(Library(name, [fn], exec_mode=self.exec_mode))
            self._libs[fn] = name
        return name

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        call = FunctionCall(self._library_for(fn), fn.__name__, *args, **kwargs)
        call.set_retries(self.retries)
        value: concurrent.futures.Future[T] = concurrent.futures.Future()

        def settle(f: concurrent.futures.Future[Task]) -> None:
            try:
                value.set_result(f.result().value)  # type: ignore[attr-defined]
            except BaseException as e:  # the call's own exception, as the future's
                value.set_exception(e)

        call.future.add_done_callback(settle)
        self.manager.submit(call)
        return value

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        futures = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]

        def results() -> Iterator[T]:
            for f in futures:
                yield f.result(timeout=timeout)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """The manager outlives the executor; closing it is the manager's business."""
