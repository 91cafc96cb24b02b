"""Every command logs JSON lines when asked, and nothing in kubevine prints but the CLI.

A cluster's log collector reads each container's stderr line by line: one stray plain-text
line (a `print` to stderr, a command that ignores `--log-format`) breaks it. So each
subcommand is run for real, made to fail in the way a user would meet first, and every
line it writes to stderr must be a JSON object naming the problem; and the package's
source is scanned for `print` and for direct writes to stdout/stderr outside the places
whose job that is.
"""

from __future__ import annotations

import ast
import functools
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import kubevine_env

REPO = Path(__file__).resolve().parents[2]
KUBEVINE = [sys.executable, "-m", "kubevine"]
PACKAGES = ("kubevine", "manager", "worker", "operator")
#: modules allowed to name sys.stdout / sys.stderr, and why
STREAM_USERS = {
    "kubevine/cli/__init__.py": "the command's own output",
    "kubevine/cli/statusview.py": "`kubevine status --watch` output",
    "kubevine/progress.py": "the progress bar (only on a terminal)",
    "kubevine/logs.py": "the log handler",
    "manager/service.py": "the transactions log echoed to stdout when asked",
    "worker/pystarter.py": "flushing a forked PythonTask's stdout and stderr before it exits",
}


def failing_commands(tmp: Path) -> dict[str, list[str]]:
    return {
        "manager": [
            "manager",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--port",
            "0",
            "--workdir",
            str(tmp / "m"),
            "--redis-outage-grace",
            "0",  # an unreachable Redis is not waited for
        ],
        "worker": ["worker", "127.0.0.1:1", "--connect-timeout", "0.5", "--workdir", str(tmp / "w")],
        "status": ["status", "127.0.0.1:1", "--timeout", "0.5"],
        "report": ["report", str(tmp / "missing.log"), "-o", str(tmp / "run.png")],
        "drain-local": ["drain-local", "--workdir", str(tmp)],
        "operator": ["operator"],  # neither --namespace nor $POD_NAMESPACE
    }


EXPECTED = {
    "manager": "unreachable",
    "worker": "no manager at 127.0.0.1:1",
    "status": "no answer from the manager",
    "report": "cannot read",
    "drain-local": "no worker pid",
    "operator": "give --namespace",
}


@pytest.mark.parametrize("where", ["after", "before"])
@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_every_command_logs_json_lines_with_log_format_json(tmp_path: Path, command: str, where: str) -> None:
    args = failing_commands(tmp_path)[command]
    flag = ["--log-format", "json"]
    argv = [*args, *flag] if where == "after" else [*flag, *args]
    done = subprocess.run(
        [*KUBEVINE, *argv],
        env=kubevine_env(KUBEVINE_TOKEN="t0ken-long-enough-to-pass", PYTHONPATH=str(REPO)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert lines, f"kubevine {' '.join(argv)} said nothing"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"kubevine {' '.join(argv)}: a line that is not JSON: {line!r}")
    errors = [r for r in records if r["level"] == "error"]
    assert errors and EXPECTED[command] in errors[-1]["message"], records
    assert {"time", "logger", "message"} <= errors[-1].keys()


_PARSE = """
import ast, pathlib, pickle, sys
repo = pathlib.Path(sys.argv[1])
out = [(str(p.relative_to(repo)), ast.parse(p.read_text(), str(p)))
       for pkg in sys.argv[2:] for p in sorted((repo / pkg).rglob("*.py"))]
sys.stdout.buffer.write(pickle.dumps(out))
"""


@functools.cache
def _modules() -> list[tuple[str, ast.Module]]:
    """The package's syntax trees, parsed in a process of their own: CPython 3.11's parser keeps
    a process-wide depth counter, and threads left by earlier tests (kopf, asyncio) can trip
    it ("AST constructor recursion depth mismatch")."""
    args = [sys.executable, "-c", _PARSE, str(REPO), *PACKAGES]
    done = subprocess.run(args, capture_output=True, check=True)
    trees: list[tuple[str, ast.Module]] = pickle.loads(done.stdout)
    return trees


def test_nothing_prints_but_the_cli_and_the_cli_prints_only_its_output() -> None:
    stray = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
            ):
                continue
            if name != "kubevine/cli/__init__.py" or any(k.arg == "file" for k in node.keywords):
                stray.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert stray == [], "use logging (or the CLI's stdout output):\n" + "\n".join(stray)


def test_only_a_few_modules_write_to_stdout_or_stderr_directly() -> None:
    users = set()
    for name, tree in _modules():
        for node in ast.walk(tree):
            streams = ("stdout", "stderr", "__stdout__", "__stderr__")
            is_sys = (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            )
            if is_sys and isinstance(node, ast.Attribute) and node.attr in streams:
                users.add(name)
    assert users <= set(STREAM_USERS), sorted(users - set(STREAM_USERS))
    assert len(_modules()) > 40  # the scan saw the package, not an empty directory
