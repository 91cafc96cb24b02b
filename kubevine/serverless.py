"""Python functions as tasks: ``PythonTask``, ``Library`` and ``FunctionCall``.

A :class:`PythonTask` runs a function in a fresh interpreter on a worker: simple, isolated,
and it pays interpreter start-up and imports every time. A :class:`Library` is a
long-lived process on a worker that has imported its modules and run its context setup
once; a :class:`FunctionCall` runs one of its functions there — no process starts, no
import happens, so a call costs microseconds of overhead instead of hundreds of
milliseconds.

Functions and arguments travel cloudpickled. A function's result, or the exception it
raised with its remote traceback, comes back as ``t.output``; reading ``t.output`` of a
call that raised re-raises the original exception type, like a future.
"""

from __future__ import annotations

import sys
import sysconfig
import types
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from kubevine.digest import sha256_bytes
from kubevine.protocol import (
    VALUE_FILE,
    FileKind,
    LibrarySpec,
    TaskKind,
    TaskSpec,
    check_remote_name,
    value_output,
)
from kubevine.resources import Resources
from kubevine.results import RemoteError, decode_result
from kubevine.results import encode_error as encode_error
from kubevine.results import encode_ok as encode_ok
from kubevine.results import library_context as library_context
from kubevine.states import ClientState
from kubevine.task import File, Task, declare_temp, env_name

_STD_PATHS = tuple(
    p for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")} if p
)


def _by_value(fn: Any) -> None:
    """Pickle a function's module by value unless workers can import it (stdlib, site-packages).

    Functions from notebooks, scripts and test files are not importable on a worker; their
    code must travel with them.
    """
    mod_name = getattr(fn, "__module__", None)
    mod = sys.modules.get(mod_name or "")
    if mod is None or mod_name == "__main__":
        return  # cloudpickle already pickles __main__ by value
    path = getattr(mod, "__file__", None) or ""
    if path and not path.startswith(_STD_PATHS) and mod_name.split(".")[0] != "kubevine":  # type: ignore[union-attr]
        try:
            cloudpickle.register_pickle_by_value(mod)
        except ValueError:
            pass


def dumps(obj: Any, *functions: Any) -> bytes:
    for fn in functions:
        _by_value(fn)
    data: bytes = cloudpickle.dumps(obj)
    return data


# -- tasks -----------------------------------------------------------------------------


class NoResult(Exception):
    """A task's output when it has none: why is in ``exception`` (and ``remote_traceback``)."""

    def __init__(self, exception: BaseException) -> None:
        super().__init__(f"{type(exception).__name__}: {exception}")
        self.exception = exception
        self.remote_traceback: str = getattr(exception, "remote_traceback", "")


class PythonTaskNoResult(NoResult):
    """TaskVine's output of a PythonTask that did not succeed."""


class FunctionCallNoResult(NoResult):
    """TaskVine's output of a FunctionCall that did not succeed."""


class PythonTask(Task):
    """``PythonTask(fn, *args, **kwargs)``: run a function in a fresh interpreter on a worker."""

    _kind = TaskKind.PYTHON

    _output_file: File | None = None

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(None)
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def payload(self) -> bytes:
        value_file = VALUE_FILE if self._output_file is not None else None
        return dumps((self.func, self.args, self.kwargs, value_file), self.func)

    def enable_temp_output(self) -> None:
        """Keep the return value on the worker that computed it, as a temp file (TaskVine's
        call): it does not travel back; ``t.output_file`` is that file, an input for other
        tasks (it holds ``cloudpickle.dumps(value)``), and ``t.output`` fetches it when read.
        An exception still comes back as usual."""
        if self._output_file is None:
            # unique to this task, even if another computes the same call: a function need
            # not be deterministic (what temps named after their producer assume)
            self._output_file = declare_temp()
            self._output_file.nonce = uuid.uuid4().hex
            self.outputs.append((self._output_file, VALUE_FILE))  # a reserved name, ours

    @property
    def output_file(self) -> File | None:
        """The temp file holding the return value (``enable_temp_output``), else None."""
        return self._output_file

    @property
    def value(self) -> Any:
        """The function's return value; raises the function's own exception (type, message,
        remote traceback) if it raised. (kubevine's name; ``output`` is TaskVine's.)

        With ``enable_temp_output``, the value is fetched from the worker holding it the
        first time it is read (through the manager; ``FileNotFoundError`` if it is lost).
        """
        if self._output_file is not None and self.successful():
            if self._value is None:
                if self._manager is None:
                    raise RuntimeError(f"{self!r} was not submitted here: there is no value to fetch")
                self._value = self._manager.fetch_bytes(self._output_file)
            return cloudpickle.loads(self._value)
        if self._output is None:
            if self.error:
                raise RemoteError(self.error)
            return None
        return decode_result(self._output)

    @property
    def output(self) -> Any:
        """The function's return value (TaskVine's ``output``). When the task did not succeed
        (the function raised, or it could not run) this is a :class:`PythonTaskNoResult`
        holding why (``.exception``, with its ``remote_traceback``) — returned, not raised, as
        in TaskVine; ``t.value`` raises the function's own exception instead."""
        if self.outcome is not None and not self.successful():
            return self._no_result()
        return self.value

    @property
    def exception(self) -> BaseException | None:
        """The exception the function raised (or why it could not run); None if it succeeded."""
        if self.outcome is None or self.successful():
            return None
        return self._no_result().exception

    def _no_result(self) -> NoResult:
        why: BaseException
        try:
            _ = self.value
            why = RemoteError(f"{self.outcome}: {self.error or 'no result'}")
        except Exception as e:  # the function's own exception, with its remote traceback
            why = e
        return self._no_result_type(why)

    _no_result_type: type[NoResult] = PythonTaskNoResult

    def disable_temp_output(self) -> None:
        """Undo ``enable_temp_output`` (before submit): the value comes back to the client."""
        if self._output_file is not None:
            self.outputs = [(f, r) for f, r in self.outputs if f is not self._output_file]
            self._output_file = None

    def set_output_cache(self, cache: Any = False) -> None:
        """How long workers keep a kept value (``enable_temp_output``)."""
        from kubevine.task import cache_level

        if self._output_file is not None:
            self._output_file.cache = cache_level(cache)

    def disable_output_serialization(self) -> None:
        """TaskVine's switch for functions that return bytes to be used as they are: accepted;
        the value comes back as the bytes the function returned either way."""

    def __repr__(self) -> str:
        name = getattr(self.func, "__name__", "function")
        return f"<{type(self).__name__} {self.id} {self.state} {name}>"


class FunctionCall(PythonTask):
    """``FunctionCall(library, function, *args, **kwargs)``: call a function of a library."""

    _kind = TaskKind.CALL
    _no_result_type = FunctionCallNoResult

    def __init__(self, library: str | Library, function: str, *args: Any, **kwargs: Any) -> None:
        Task.__init__(self, None, cores=0)
        self.library = library.name if isinstance(library, Library) else library
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def set_fn_args(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> None:
        """Replace the call's arguments (before submit)."""
        self.args, self.kwargs = tuple(args), dict(kwargs or {})

    def set_exec_method(self, method: str) -> None:
        """TaskVine's per-call fork/direct choice: kubevine's is the library's exec_mode."""
        if method not in ("fork", "direct"):
            raise ValueError(f"exec method is 'fork' or 'direct', not {method!r}")

    def payload(self) -> bytes:  # whether the value stays on the worker is in the spec's outputs
        data: bytes = cloudpickle.dumps((self.args, self.kwargs))
        return data

    def __repr__(self) -> str:
        return f"<FunctionCall {self.id} {self.state} {self.library}.{self.function}>"


class Library:
    """Functions kept warm in a process on each worker that serves calls to them."""

    def __init__(
        self,
        name: str,
        functions: Sequence[Callable[..., Any]],
        *,
        hoisting_modules: Sequence[str | types.ModuleType] = (),
        env: dict[str, str] | None = None,
        exec_mode: str = "fork",
        library_context_info: tuple[Callable[..., Any], Sequence[Any], dict[str, Any]] | None = None,
    ) -> None:
        if exec_mode not in ("fork", "direct"):
            raise ValueError(f"exec_mode must be 'fork' or 'direct', not {exec_mode!r}")
        if not functions:
            raise ValueError("a library needs at least one function")
        self.name = name
        self.functions = {f.__name__: f for f in functions}
        self.hoisting_modules = [m if isinstance(m, str) else m.__name__ for m in hoisting_modules]
        self.env = dict(env or {})
        self.exec_mode = exec_mode
        self.context = library_context_info
        self.slots = 1
        self.cores: float = 1
        self.memory = 0
        self.disk = 0
        self.inputs: list[tuple[File, str]] = []
        self.environments: list[File] = []

    def add_input(self, file: File, remote_name: str) -> None:
        """A file in the library's working directory, before its functions are loaded."""
        check_remote_name(remote_name)
        self.inputs.append((file, remote_name))

    def set_env_var(self, name: str, value: str) -> None:
        self.env[name] = value

    def add_environment(self, env: File) -> None:
        """Run the library inside a packed environment (``m.declare_poncho``)."""
        self.environments.append(env)

    def set_cores(self, n: float) -> None:
        self.cores = n

    def set_memory(self, mb: int) -> None:
        self.memory = mb

    def set_disk(self, mb: int) -> None:
        self.disk = mb

    def set_function_slots(self, n: int) -> None:
        """How many calls the library runs at once (default 1)."""
        if n < 1:
            raise ValueError("a library needs at least one slot")
        self.slots = n

    def spec(self) -> LibrarySpec:
        return LibrarySpec(
            name=self.name,
            functions=sorted(self.functions),
            hoisting_modules=self.hoisting_modules,
            env=self.env,
            exec_mode="fork" if self.exec_mode == "fork" else "direct",
            slots=self.slots,
            resources=Resources(cores=self.cores, memory=self.memory, disk=self.disk),
            has_context=self.context is not None,
            inputs=[f.binding(remote) for f, remote in self.inputs]
            + [e.binding(env_name(i)) for i, e in enumerate(self.environments)],
            environments=[env_name(i) for i in range(len(self.environments))],
        )

    def payload(self) -> bytes:
        fns = list(self.functions.values())
        ctx = self.context
        if ctx is not None:
            fns.append(ctx[0])
        return dumps({"functions": self.functions, "context": ctx}, *fns)

    def __repr__(self) -> str:
        return f"<Library {self.name} {sorted(self.functions)} {self.exec_mode}>"


def auto_library_name(fn: Callable[..., Any]) -> str:
    """A stable library name for one function, from its pickled code."""
    digest = sha256_bytes(dumps(fn, fn))[:12]
    return f"{getattr(fn, '__name__', 'fn')}-{digest}"


def task_from_spec(spec: TaskSpec) -> Task:
    """A task submitted by an earlier client process, rebuilt from what the manager holds."""
    t: Task
    if spec.kind == TaskKind.CALL:
        t = FunctionCall(spec.library or "", spec.function or "")
    elif spec.kind == TaskKind.PYTHON:
        t = PythonTask.__new__(PythonTask)
        Task.__init__(t, None)
        t.func, t.args, t.kwargs = (lambda: None), (), {}
    else:
        t = Task(spec.command)
    t.tag, t.category, t.priority, t.retries = spec.tag, spec.category, spec.priority, spec.retries
    t.env, t.time_max = dict(spec.env), spec.time_max
    kept = value_output(spec.outputs)
    if isinstance(t, PythonTask) and kept is not None:  # its value stayed on a worker
        t._output_file = File(FileKind.TEMP, kept.cache, name=kept.cache_name)
    t.id = spec.id
    t.state = ClientState.SUBMITTED
    t._attached = True  # rebuilt without payload, inputs or outputs: not to be run again
    return t
