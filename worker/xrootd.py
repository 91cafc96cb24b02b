"""Fetching ``root://`` URLs with XRootD's own client, ``xrdcp``.

HEP data lives on XRootD servers. A file declared with ``declare_xrootd`` is a URL file like
any other (cached once per node, shared peer to peer); only its first copy on a node comes
from the server, and that copy is made by ``xrdcp``, the client every grid site has, rather
than by Python bindings the worker image would need to carry. :func:`xrdcp` runs on the
fetcher's download thread, never on the worker's loop.

An X509 proxy is whatever ``xrdcp`` finds in the worker's own environment
(``$X509_USER_PROXY``, else ``/tmp/x509up_u<uid>``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from kubevine.task import XRD_KNOBS

SCHEMES = ("root://", "roots://", "xroot://", "xroots://")
STALL = 60.0  # seconds xrdcp may go without writing a byte before it is stopped
POLL = 0.5  # seconds between looks at the copy's progress
STDERR_KEPT = 2000  # characters of xrdcp's complaint passed on to the task


class XrdcpError(RuntimeError):
    """xrdcp is missing, failed, or stalled; the message says which, with what it said."""


def is_xrootd(url: str) -> bool:
    return url.startswith(SCHEMES)


def client_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment xrdcp runs with: the worker's, with XRootD's retry and timeout knobs
    short enough that a server that is down fails the fetch in seconds, not minutes (the
    worker's own settings of these variables win)."""
    env = dict(os.environ if base is None else base)
    for knob, value in XRD_KNOBS.items():
        env.setdefault(knob, value)
    return env


def xrdcp(url: str, dest: Path, stall: float = STALL) -> int:
    """Copy ``url`` to ``dest`` (a new file); its size. Raises :class:`XrdcpError`."""
    exe = shutil.which("xrdcp")
    if exe is None:
        raise XrdcpError(
            "xrdcp (XRootD's client) is not installed on this worker: install xrootd-client "
            "(Debian/Ubuntu) or xrootd-client (EL) to fetch root:// URLs"
        )
    err_path = dest.with_name(dest.name + ".stderr")
    with open(err_path, "w+b") as err:
        proc = subprocess.Popen(
            [exe, "--nopbar", "--force", url, str(dest)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=client_env(),
        )
        size, progressed, stalled = -1, time.monotonic(), False
        try:
            while True:
                try:
                    code = proc.wait(POLL)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now_size = dest.stat().st_size if dest.exists() else -1
                if now_size != size:
                    size, progressed = now_size, time.monotonic()
                elif time.monotonic() - progressed > stall:
                    stalled = True
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            err.seek(0)
            said = err.read().decode(errors="replace").strip()
            err_path.unlink(missing_ok=True)
    if stalled:
        raise XrdcpError(f"xrdcp {url}: no progress in {stall:.0f}s, stopped ({said[-STDERR_KEPT:]})")
    if code != 0:
        raise XrdcpError(f"xrdcp {url} failed (exit {code}): {said[-STDERR_KEPT:] or 'no message'}")
    return dest.stat().st_size
