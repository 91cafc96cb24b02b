"""Progress bars while waiting for tasks: in a terminal, in Jupyter, silent elsewhere.

An analyst waiting on a few thousand tasks wants to see them finish; a batch job's log
wants none of that. So a bar is shown only when asked for (``progress=True``) *and*
there is someone to see it: a terminal on stderr, or a Jupyter kernel (a widget). Piped
to a file or running under CI, asking for a bar writes nothing at all.

:func:`bar` is the building block; :func:`track` wraps a ``wait`` function into an
iterator that advances a bar (``Manager.results(progress=True)``), and
:func:`wait_futures` waits for futures with a bar (``Manager.map(..., progress=True)``,
and what a dask ``get`` should use).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a widget bar can be shown)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def where(progress: bool | None, stream: TextIO | None = None) -> str | None:
    """Where a bar would go: ``"notebook"``, ``"terminal"``, or None (stay silent)."""
    if not progress:
        return None
    if in_notebook():
        return "notebook"
    out = stream if stream is not None else sys.stderr
    try:
        return "terminal" if out is not None and out.isatty() else None
    except (AttributeError, ValueError):  # closed or not a real stream
        return None


def _terminal_columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class Bar:
    """A progress bar, or nothing: the same calls either way."""

    def __init__(
        self,
        total: int | None,
        *,
        progress: bool | None = False,
        desc: str = "tasks",
        unit: str = "task",
        file: TextIO | None = None,
    ) -> None:
        self.n = 0
        self.total = total
        self._bar: Any = None
        kind = where(progress, file)
        if kind == "notebook":
            from tqdm.notebook import tqdm as notebook_tqdm  # type: ignore[import-untyped]

            self._bar = notebook_tqdm(total=total, desc=desc, unit=unit)
        elif kind == "terminal":
            from tqdm import tqdm  # type: ignore[import-untyped]

            out = file or sys.stderr
            sized = _terminal_columns(out) > 0  # a fresh pty may say 0 columns: then use $COLUMNS or 80
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=out,
                dynamic_ncols=sized,
                ncols=None if sized else shutil.get_terminal_size().columns,
                nrows=None if sized else shutil.get_terminal_size().lines,
                smoothing=0.1,
            )

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            if self.total is not None and self.n > self.total:  # more was submitted meanwhile
                self.set_total(self.n)
            self._bar.update(n)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def set_postfix(self, **fields: object) -> None:
        if self._bar is not None:
            self._bar.set_postfix(fields, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def bar(
    total: int | None, *, progress: bool | None = False, desc: str = "tasks", file: TextIO | None = None
) -> Bar:
    """A bar for ``total`` items, shown only if ``progress`` and someone can see it."""
    return Bar(total, progress=progress, desc=desc, file=file)


def track(
    wait: Callable[[float | None], T | None],
    total: int,
    *,
    progress: bool | None = False,
    timeout: float | None = None,
    desc: str = "tasks",
    file: TextIO | None = None,
    failed: Callable[[T], bool] | None = None,
) -> Iterator[T]:
    """Yield what ``wait(timeout)`` returns until it returns None, advancing a bar for each.

    ``failed(item)`` (if given) counts failures, shown next to the bar.
    """
    n_failed = 0
    with bar(total, progress=progress, desc=desc, file=file) as b:
        while (item := wait(timeout)) is not None:
            if failed is not None and failed(item):
                n_failed += 1
                b.set_postfix(failed=n_failed)
            b.update(1)
            yield item


def wait_futures(
    futures: Sequence[concurrent.futures.Future[Any]],
    *,
    progress: bool | None = False,
    desc: str = "tasks",
    file: TextIO | None = None,
) -> None:
    """Wait for every future (``concurrent.futures.wait``), advancing a bar as each finishes."""
    if where(progress, file) is None:
        concurrent.futures.wait(futures)
        return
    with bar(len(futures), progress=progress, desc=desc, file=file) as b:
        failed = 0
        for f in concurrent.futures.as_completed(futures):
            if f.exception() is not None or not _ok(f.result()):
                failed += 1
                b.set_postfix(failed=failed)
            b.update(1)


def _ok(result: object) -> bool:
    successful = getattr(result, "successful", None)
    return bool(successful()) if callable(successful) else True
