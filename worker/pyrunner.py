"""``python -m kubevine.worker.pyrunner PAYLOAD RESULT``: run one PythonTask in a fresh interpreter.

A PythonTask gets a process of its own, as a command does: isolation at the price of
interpreter start-up and imports. (A FunctionCall in a library avoids both.) The result,
or the exception with its traceback, is written to RESULT for the worker to send back,
prefixed by one byte: ``1`` for a value, ``0`` for an exception. A task whose value stays on
the worker (``enable_temp_output``) writes it to its temp output file in the sandbox instead.
"""

from __future__ import annotations

import os
import sys

import cloudpickle

from kubevine.results import encode_error, encode_ok, user_frames


def main(argv: list[str]) -> int:
    payload_path, result_path = argv
    try:
        with open(payload_path, "rb") as f:
            func, args, kwargs, value_file = cloudpickle.load(f)
        value_path = os.path.abspath(value_file) if value_file else None  # before the task can chdir
        value = func(*args, **kwargs)
        if value_path:  # kept on the worker as a temp output: the result says only "done"
            with open(value_path + ".tmp", "wb") as f:
                cloudpickle.dump(value, f)
            os.replace(value_path + ".tmp", value_path)
            value = None
        out = b"1" + encode_ok(value)
    except BaseException as e:  # the user's exception, reported, not raised
        out = b"0" + encode_error(user_frames(e))
    tmp = result_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
