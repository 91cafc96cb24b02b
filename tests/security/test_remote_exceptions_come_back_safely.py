"""A function's exception comes back as itself when it can, as a RemoteError when it cannot,
and never ends the program that reads it.

Before: an exception whose class pickles but cannot be rebuilt (its __init__ wants other
arguments) reached the client as a bare TypeError from unpickling, without the remote
traceback the docs promise; a library function calling sys.exit(127) made reading its
output raise SystemExit in the client, which ended the client program.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubevine.results import RemoteError, decode_result, encode_error

PICKY = """
class Picky(Exception):
    def __init__(self, code, where):  # unpickling calls Picky("where: code") and fails
        super().__init__(f"{where}: {code}")
"""


def _raise_and_encode(exc: BaseException) -> bytes:
    try:
        raise exc
    except BaseException as e:
        return encode_error(e)


def _remote_picky(tmp_path: Path) -> bytes:
    """A Picky raised in another process (a worker's), encoded there."""
    (tmp_path / "picky_mod.py").write_text(PICKY)
    code = (
        "import sys, picky_mod\n"
        "from kubevine.results import encode_error\n"
        "try:\n    raise picky_mod.Picky(3, 'stage')\nexcept Exception as e:\n"
        "    sys.stdout.buffer.write(encode_error(e))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=60, check=True
    )
    return done.stdout


@pytest.mark.parametrize("importable", [True, False])
def test_an_exception_that_cannot_be_rebuilt_is_a_remote_error_with_type_message_and_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, importable: bool
) -> None:
    """Its class is importable here but will not take its own args back, or is not importable
    here at all (it lives in a module only the worker has)."""
    data = _remote_picky(tmp_path)
    if importable:
        monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RemoteError, match=r"Picky: stage: 3") as e:
        decode_result(data)
    assert "picky_mod.Picky: stage: 3" in e.value.remote_traceback  # the worker's own traceback


def test_an_ordinary_exception_comes_back_as_itself() -> None:
    with pytest.raises(ZeroDivisionError) as e:
        decode_result(_raise_and_encode(ZeroDivisionError("division by zero")))
    assert "ZeroDivisionError" in e.value.remote_traceback  # type: ignore[attr-defined]


@pytest.mark.parametrize("exc", [SystemExit(127), KeyboardInterrupt()])
def test_an_exception_that_would_end_the_reader_is_a_remote_error(exc: BaseException) -> None:
    with pytest.raises(RemoteError, match=type(exc).__name__):
        decode_result(_raise_and_encode(exc))


def test_a_program_reading_a_remote_sys_exit_goes_on() -> None:
    code = (
        "from kubevine.results import encode_error, decode_result, RemoteError\n"
        "try:\n    raise SystemExit(127)\nexcept BaseException as e:\n    data = encode_error(e)\n"
        "try:\n    decode_result(data)\nexcept RemoteError as e:\n    print('went on:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "went on: SystemExit: 127" in done.stdout, done.stderr
