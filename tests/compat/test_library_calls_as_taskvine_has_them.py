"""TaskVine's meanings for libraries and the calls they serve: a call's inputs are in its
working directory (open("name") works, in fork mode and in one-slot direct mode), a function
that calls sys.exit is a failed call and the library lives on, the library's functions see
each other by name, the library's own inputs are in its working directory, and the files a
call writes as its outputs come back as a task's do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kubevine as vine


def read_data(suffix: str) -> str:
    with open("data.txt") as f:  # the call's own input, in its working directory
        return f.read() + suffix


def leave(code: int) -> int:
    import sys

    sys.exit(code)


def still_here(x: int) -> int:
    return x + 1


def read_table() -> str:
    with open("table.txt") as f:  # the library's input, in the library's working directory
        return f.read()


def _composed() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Two functions made as a script's exec would: quad finds double only as a library global."""
    ns: dict[str, Any] = {}
    exec("def double(x):\n    return 2 * x\n", ns)
    exec(
        "def quad(x):\n    return double(double(x))\n",
        {"__name__": "composed"} | {"__builtins__": __builtins__},
        ns,
    )
    return ns["double"], ns["quad"]


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_a_calls_inputs_are_in_its_working_directory(manager: Callable[..., vine.Manager], mode: str) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions(f"files-{mode}", read_data, exec_mode=mode))
    calls = []
    for i in range(3):
        c = vine.FunctionCall(f"files-{mode}", "read_data", f"/{i}")
        c.add_input(m.declare_buffer(f"content {i}".encode()), "data.txt")
        m.submit(c)
        calls.append(c)
    for _ in calls:
        assert m.wait(60) is not None
    assert sorted(c.output for c in calls) == [f"content {i}/{i}" for i in range(3)], [
        (c.result, c.output) for c in calls
    ]


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_sys_exit_in_a_function_is_a_failed_call_and_the_library_lives_on(
    manager: Callable[..., vine.Manager], mode: str
) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions(f"exit-{mode}", leave, still_here, exec_mode=mode))
    bad = vine.FunctionCall(f"exit-{mode}", "leave", 3)
    m.submit(bad)
    assert m.wait(60) is bad
    assert not bad.successful()
    good = vine.FunctionCall(f"exit-{mode}", "still_here", 41)
    m.submit(good)
    assert m.wait(60) is good and good.output == 42, (good.result, good.output)


def test_the_functions_of_a_library_see_each_other_by_name(manager: Callable[..., vine.Manager]) -> None:
    m = manager(workers=1)
    double, quad = _composed()
    m.install_library(m.create_library_from_functions("composed", double, quad, exec_mode="direct"))
    c = vine.FunctionCall("composed", "quad", 5)
    m.submit(c)
    assert m.wait(60) is c and c.output == 20, (c.result, c.output)


def test_a_librarys_inputs_are_in_its_working_directory(manager: Callable[..., vine.Manager]) -> None:
    m = manager(workers=1)
    lib = m.create_library_from_functions("tables", read_table, exec_mode="direct")
    lib.add_input(m.declare_buffer(b"a table"), "table.txt")
    m.install_library(lib)
    c = vine.FunctionCall("tables", "read_table")
    m.submit(c)
    assert m.wait(60) is c and c.output == "a table", (c.result, c.output)


def copy_upper(src: str, dst: str) -> int:
    with open(src) as f:  # its input, and its output, by name in its working directory
        text = f.read()
    with open(dst, "w") as f:
        f.write(text.upper())
    return len(text)


@pytest.mark.parametrize("mode", ["fork", "direct"])
def test_the_files_a_call_writes_as_its_outputs_come_back(
    manager: Callable[..., vine.Manager], mode: str, tmp_path: Path
) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions(f"io-{mode}", copy_upper, exec_mode=mode))
    (tmp_path / "in.txt").write_text("hello calls\n")
    c = vine.FunctionCall(f"io-{mode}", "copy_upper", "in.txt", "out.txt")
    c.add_input(m.declare_file(str(tmp_path / "in.txt")), "in.txt")
    c.add_output(m.declare_file(str(tmp_path / "out.txt")), "out.txt")
    temp = m.declare_temp()  # a file output that stays on the worker, read by a later task
    c.add_output(temp, "out.txt")
    m.submit(c)
    assert m.wait(60) is c and c.successful(), (c.result, c.output)
    assert c.output == len("hello calls\n")
    assert (tmp_path / "out.txt").read_text() == "HELLO CALLS\n"
    reader = vine.Task("cat again.txt")
    reader.add_input(temp, "again.txt")
    m.submit(reader)
    assert m.wait(60) is reader and reader.std_output == "HELLO CALLS\n"


def test_a_call_that_does_not_write_its_output_is_output_missing(
    manager: Callable[..., vine.Manager],
) -> None:
    m = manager(workers=1)
    m.install_library(m.create_library_from_functions("io-missing", still_here, exec_mode="fork"))
    c = vine.FunctionCall("io-missing", "still_here", 1)
    c.add_output(m.declare_buffer(), "never.txt")
    m.submit(c)
    assert m.wait(60) is c
    assert c.result == "output missing" and not c.successful()
