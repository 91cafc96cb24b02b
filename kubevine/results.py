"""How a Python function's outcome travels back: its value, or its exception and traceback.

Kept apart from the rest of the client so that the processes that produce results (a
PythonTask's fresh interpreter, a library process) import nothing but cloudpickle.
"""

from __future__ import annotations

import os
import threading
import traceback
from pathlib import Path
from typing import Any

import cloudpickle


class RemoteError(Exception):
    """Stands in for a remote exception that cannot come back as itself: it could not be
    pickled on the worker or unpickled here, or it would end this program (``SystemExit``,
    ``KeyboardInterrupt``). Its message names the original type; ``remote_traceback`` holds
    the traceback as text, as for every remote exception."""

    remote_traceback: str = ""


def user_frames(exc: BaseException) -> BaseException:
    """The exception with kubevine's own frame (the caller of the user's function) cut off
    its traceback, so the remote traceback starts in user code."""
    tb = exc.__traceback__
    return exc.with_traceback(tb.tb_next) if tb is not None and tb.tb_next is not None else exc


def encode_ok(value: Any) -> bytes:
    data: bytes = cloudpickle.dumps(("ok", value))
    return data


def encode_error(exc: BaseException) -> bytes:
    """The exception, pickled on its own so that the client can still report it (as a
    :class:`RemoteError`) when it cannot be pickled here or unpickled there."""
    tb = "".join(traceback.format_exception(exc))
    try:
        pickled: bytes | None = cloudpickle.dumps(exc)
    except Exception:
        pickled = None
    data: bytes = cloudpickle.dumps(("raised", pickled, tb, f"{type(exc).__name__}: {exc}"))
    return data


def decode_result(data: bytes) -> Any:
    """The value, or raise the remote exception (with the remote traceback attached)."""
    kind, *rest = cloudpickle.loads(data)
    if kind == "ok":
        return rest[0]
    pickled, tb, what = rest
    exc: BaseException | None = None
    if pickled is not None:
        try:
            exc = cloudpickle.loads(pickled)
        except Exception:  # its class is not importable here, or its __init__ wants other arguments
            exc = None
    if exc is None or not isinstance(exc, Exception):  # SystemExit & co. must not end this program
        exc = RemoteError(what)
    exc.remote_traceback = tb  # type: ignore[attr-defined]
    exc.add_note("remote traceback (on the worker):\n" + tb)
    raise exc


# -- inside a library process -----------------------------------------------------------

_context: Any = None


def library_context() -> Any:
    """Inside a library's function: what the library's context setup returned."""
    return _context


def set_context(value: Any) -> None:
    global _context
    _context = value


_call = threading.local()  # a library call's input files, per thread (direct mode runs calls on threads)
_in_library = False  # this process is a library: inputs are known only on a call's own thread


def set_inputs(inputs: dict[str, str] | None) -> None:
    global _in_library
    _in_library = True
    _call.inputs = inputs


def input_path(name: str) -> Path:
    """Where an input file of the running task is, by the name it was added with
    (``t.add_input(f, name)``). In a PythonTask or a command that is the sandbox, its working
    directory; in a FunctionCall it is the worker's file cache (read it, do not change it)."""
    inputs: dict[str, str] | None = getattr(_call, "inputs", None)
    if inputs is None:
        if _in_library:
            raise RuntimeError(
                "kubevine.input_path works on the thread that runs the call: look the path up "
                "there and hand it to the threads the call starts"
            )
        return Path(os.getcwd(), name)
    try:
        return Path(inputs[name])
    except KeyError:
        have = ", ".join(sorted(inputs)) or "none"
        raise FileNotFoundError(f"this call has no input named {name!r} (its inputs: {have})") from None
